/* PCI configuration mechanism #1 (0xCF8 address, 0xCFC data). */
#include "fw.h"

static u32 conf_addr(u8 bus, u8 dev, u8 fn, u8 reg)
{
    return 0x80000000u | ((u32)bus << 16) | ((u32)(dev & 31) << 11) | ((u32)(fn & 7) << 8) | (reg & 0xFC);
}

u32 pci_read32(u8 bus, u8 dev, u8 fn, u8 reg)
{
    outl(PCI_CONF_ADDR, conf_addr(bus, dev, fn, reg));
    return inl(PCI_CONF_DATA);
}

u16 pci_read16(u8 bus, u8 dev, u8 fn, u8 reg)
{
    outl(PCI_CONF_ADDR, conf_addr(bus, dev, fn, reg));
    return inw(PCI_CONF_DATA + (reg & 2));
}

u8 pci_read8(u8 bus, u8 dev, u8 fn, u8 reg)
{
    outl(PCI_CONF_ADDR, conf_addr(bus, dev, fn, reg));
    return inb(PCI_CONF_DATA + (reg & 3));
}

void pci_write32(u8 bus, u8 dev, u8 fn, u8 reg, u32 v)
{
    outl(PCI_CONF_ADDR, conf_addr(bus, dev, fn, reg));
    outl(PCI_CONF_DATA, v);
}

void pci_write16(u8 bus, u8 dev, u8 fn, u8 reg, u16 v)
{
    outl(PCI_CONF_ADDR, conf_addr(bus, dev, fn, reg));
    outw(PCI_CONF_DATA + (reg & 2), v);
}

void pci_write8(u8 bus, u8 dev, u8 fn, u8 reg, u8 v)
{
    outl(PCI_CONF_ADDR, conf_addr(bus, dev, fn, reg));
    outb(PCI_CONF_DATA + (reg & 3), v);
}

bool pci_conf1_present(void)
{
    /* the probe Linux uses: the address register keeps a written enable bit */
    u32 old = inl(PCI_CONF_ADDR);
    outl(PCI_CONF_ADDR, 0x80000000u);
    bool ok = inl(PCI_CONF_ADDR) == 0x80000000u;
    outl(PCI_CONF_ADDR, old);
    return ok;
}
