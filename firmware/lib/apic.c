/* Local APIC (xAPIC MMIO) and IOAPIC. */
#include "fw.h"

u32 lapic_base = LAPIC_DEFAULT_BASE;
u32 ioapic_base = IOAPIC_DEFAULT_BASE;

u32 lapic_read(u32 reg) { return readl(lapic_base + reg); }
void lapic_write(u32 reg, u32 v) { writel(lapic_base + reg, v); }
u32 lapic_id(void) { return lapic_read(LAPIC_ID) >> 24; }
void lapic_eoi(void) { lapic_write(LAPIC_EOI, 0); }

void lapic_enable(bool bsp)
{
    lapic_write(LAPIC_SVR, 0x100 | SPURIOUS_VECTOR);
    lapic_write(LAPIC_TPR, 0);
    if (bsp) {
        lapic_write(LAPIC_LVT_LINT0, 0x700);        /* ExtINT: the 8259 reaches this CPU */
        lapic_write(LAPIC_LVT_LINT1, 0x400);        /* NMI */
    } else {
        lapic_write(LAPIC_LVT_LINT0, 0x10000);
        lapic_write(LAPIC_LVT_LINT1, 0x10000);
    }
}

void lapic_send_ipi(u32 apic_id, u32 icr_lo)
{
    for (u32 i = 0; i < 100000 && (lapic_read(LAPIC_ICR_LO) & ICR_BUSY); i++)
        cpu_relax();
    lapic_write(LAPIC_ICR_HI, apic_id << 24);
    lapic_write(LAPIC_ICR_LO, icr_lo);              /* the low write sends it */
}

#define LAPIC_TIMER_INIT  0x380
#define LAPIC_TIMER_DIV   0x3E0

void lapic_timer_oneshot_ms(u32 ms)
{
    u32 count = ms > 68000 ? 0xFFFFFFFFu : ms * 62500;     /* 62500 x 16 ns = 1 ms */
    lapic_write(LAPIC_TIMER_DIV, 0x3);                      /* divide by 16 */
    lapic_write(LAPIC_LVT_TIMER, TIMER_VECTOR);             /* one-shot, unmasked */
    lapic_write(LAPIC_TIMER_INIT, count);
}

void lapic_timer_stop(void)
{
    lapic_write(LAPIC_LVT_TIMER, 0x10000 | TIMER_VECTOR);
    lapic_write(LAPIC_TIMER_INIT, 0);
}

u32 ioapic_read(u32 reg)
{
    writel(ioapic_base, reg);                       /* IOREGSEL */
    return readl(ioapic_base + 0x10);               /* IOWIN */
}

void ioapic_write(u32 reg, u32 v)
{
    writel(ioapic_base, reg);
    writel(ioapic_base + 0x10, v);
}

u32 ioapic_pins(void)
{
    return ((ioapic_read(0x01) >> 16) & 0xFF) + 1;
}

void ioapic_set_redir(u32 pin, u8 vector, u32 flags, u8 dest_apic)
{
    /* masked while the high half changes, then the low half sets vector and unmasks */
    ioapic_write(0x10 + 2 * pin, IOREDTBL_MASKED);
    ioapic_write(0x11 + 2 * pin, (u32)dest_apic << 24);
    ioapic_write(0x10 + 2 * pin, vector | flags);   /* fixed delivery, physical destination */
}

void ioapic_mask(u32 pin)
{
    ioapic_write(0x10 + 2 * pin, ioapic_read(0x10 + 2 * pin) | IOREDTBL_MASKED);
}

void ioapic_unmask(u32 pin)
{
    ioapic_write(0x10 + 2 * pin, ioapic_read(0x10 + 2 * pin) & ~IOREDTBL_MASKED);
}

void ioapic_mask_all(void)
{
    u32 n = ioapic_pins();
    for (u32 pin = 0; pin < n; pin++)
        ioapic_write(0x10 + 2 * pin, IOREDTBL_MASKED);
}

u32 ioapic_route_isa(u8 irq, u8 vector, u8 dest_apic)
{
    u32 gsi = irq, flags = 0;               /* ISA default: edge, active high */
    for (u32 i = 0; i < madt.niso; i++) {
        if (madt.iso[i].irq != irq)
            continue;
        gsi = madt.iso[i].gsi;
        u16 pol = madt.iso[i].flags & 3, trig = (madt.iso[i].flags >> 2) & 3;
        if (pol == 3)
            flags |= IOREDTBL_ACTIVE_LOW;
        if (trig == 3)
            flags |= IOREDTBL_LEVEL;
    }
    u32 pin = gsi - madt.ioapic_gsi_base;
    ioapic_set_redir(pin, vector, flags, dest_apic);
    return pin;
}
