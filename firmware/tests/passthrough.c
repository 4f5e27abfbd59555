/* passthrough: a VFIO-assigned PCI function driven the way a driver drives it.
 *
 * The function is the fake 82574L-like NIC of kvmpy/iommu/vfio_fake.py (make_fake_nic, 8086:10d3)
 * assigned with --passthrough through the fake VFIO backend (tests/kvm/test_passthrough_guest.py):
 * its BARs are KVM memslots over the backend's memory, its interrupts real eventfds bound to KVM
 * irqfds.  Nothing here knows it is a fake: on a host with an IOMMU the same steps would drive a
 * real 82574L's config space (though not its registers: the patterns below are the test's).
 *
 * Steps and markers:
 *   find 8086:10d3 on bus 0 -> "PT FOUND"
 *   config space: class, subsystem, capability list PM 0x40 -> MSI 0x50 -> MSI-X 0x70 ->
 *     PCIe 0xA0 (the device's), MSI-X table/PBA registers; a write to a device register (0xE0)
 *     reads back; INTERRUPT_LINE is kept by the VMM -> "CONFIG OK"
 *   BARs sized by the all-ones write (BAR0 128 KiB memory, BAR2 32 bytes I/O, BAR3 16 KiB
 *     memory, the others absent), programmed at BAR0_ADDR, BAR2_PORT, BAR3_ADDR, decoding on
 *     -> "BARS OK"
 *   BAR memory: BAR0 holds the test's pattern (seed=) everywhere; its upper half is then
 *     overwritten with the complement pattern for the test to check host-side; BAR3's mmapped
 *     pages (0x1000, 0x3000) likewise (seed3) -> "BAR MEM OK"
 *   trapped registers: BAR3 0x800 and BAR2 0x10 read what the test put there (TRAP_MAGIC,
 *     IO_MAGIC); BAR3 0x804 written -> "BAR TRAP OK"
 *   MSI (64-bit, per-vector mask): vector MSI_VECTOR to this CPU, then the doorbell (below);
 *     the interrupt arrives in hlt -> "MSI OK"; masked: the doorbell, the pending bit comes on,
 *     no interrupt; unmasked: it arrives, pending clear -> "MSI MASK OK"
 *   MSI-X through the trapped table: entry 2 (MSIX_VECTOR), function mask on while the table
 *     is written, the doorbell -> "MSIX OK"; entry 3 masked: the doorbell, its PBA bit comes on,
 *     no interrupt; unmasked: it arrives -> "MSIX MASK OK"
 *   INTx: PIRQ routed (PIIX3 PIRQRC) to IRQ 11, IOAPIC pin 11 level-triggered to INTX_VECTOR;
 *     two doorbells, two interrupts (the second needs the EOI to have resampled and unmasked
 *     the line) -> "INTX OK"
 *   decoding off -> "PASSTHROUGH OK", exit 0.
 *
 * Doorbell: a 32-bit write to BAR2 + 0 (an I/O BAR: every access reaches the device through
 * VFIO's pwrite) of DOORBELL | index << 8 | vector, with VFIO's interrupt index (0 INTx, 1 MSI,
 * 2 MSI-X): "raise this interrupt now".  The test answers from another thread with
 * FakeVfioBackend.fire, which signals the eventfd that KVM turns into the interrupt.
 *
 * cmdline: seed=N (BAR0 pattern), seed3=N (BAR3 pattern), nointx (skip INTx).
 * Exit: 0 pass, 1 a check failed, 2 no such device.  Waits are bounded by a LAPIC-timer watchdog. */
#include "fw.h"

#define NIC_ID          0x10D38086u
#define NIC_SUBSYS      0xA01F8086u
#define PCI_COMMAND     0x04
#define PCI_STATUS      0x06
#define PCI_CLASS_REV   0x08
#define PCI_BAR(n)      (0x10 + 4 * (n))
#define PCI_SUBSYSTEM   0x2C
#define PCI_CAP_PTR     0x34
#define PCI_INT_LINE    0x3C
#define PCI_INT_PIN     0x3D
#define PCI_CMD_IO      0x0001
#define PCI_CMD_MEMORY  0x0002
#define PCI_CMD_MASTER  0x0004
#define PCI_STATUS_CAP  0x0010
#define CAP_PM          0x01
#define CAP_MSI         0x05
#define CAP_PCIE        0x10
#define CAP_MSIX        0x11
#define DEV_REG         0xE0            /* device-specific config register: the device's */
#define DEV_REG_VALUE   0xCAFEF00Du

/* MSI capability, 64-bit with per-vector masking (PCI 3.0, 6.8.1) */
#define MSI_CTRL        2
#define MSI_ADDR_LO     4
#define MSI_ADDR_HI     8
#define MSI_DATA        0x0C
#define MSI_MASK        0x10
#define MSI_PENDING     0x14
#define MSI_CTRL_ENABLE 0x0001
#define MSI_CTRL_64BIT  0x0080
#define MSI_CTRL_PVM    0x0100
/* MSI-X (PCI 3.0, 6.8.2) */
#define MSIX_CTRL       2
#define MSIX_TABLE      4
#define MSIX_PBA        8
#define MSIX_ENABLE     0x8000
#define MSIX_FMASK      0x4000
#define MSIX_ENTRY(n)   ((n) * 16)
#define MSIX_VCTRL_MASK 0x1u

/* PIIX3 function 1.0: PIRQ route control A-D (82371SB 2.2.9) */
#define PIIX3_DEV       1
#define PIRQRC          0x60

#define BAR0_ADDR       0xE0000000u
#define BAR0_SIZE       0x20000u
#define BAR2_PORT       0xC000u
#define BAR2_SIZE       0x20u
#define BAR3_ADDR       0xE0020000u
#define BAR3_SIZE       0x4000u
#define PBA_OFF         0x2000u
#define TRAP_REG        0x800u          /* BAR3 page 0 past the table: trapped, forwarded */
#define TRAP_MAGIC      0x7EA9C0DEu
#define TRAP_WRITE      0x5EED1234u
#define IO_REG          0x10u
#define IO_MAGIC        0x10AD10ADu
#define DOORBELL        0xD0000000u
#define IDX_INTX        0
#define IDX_MSI         1
#define IDX_MSIX        2

#define MSI_VECTOR      0x61
#define MSIX_VECTOR     0x62
#define MSIX_MASKED_VEC 0x63
#define INTX_VECTOR     0x64
#define INTX_IRQ        11
#define WAIT_MS         5000
#define POLLS           2000000

static u8 dev;
static u32 bar0, bar3;
static u16 iobase;
static u32 seed, seed3;
static volatile bool watchdog_fired;
static volatile u32 irqs[256];

static u32 pattern(u32 s, u32 i) { return s ^ (i * 0x9E3779B1u); }
static u32 cfg32(u8 reg) { return pci_read32(0, dev, 0, reg); }
static u16 cfg16(u8 reg) { return pci_read16(0, dev, 0, reg); }
static u8 cfg8(u8 reg) { return pci_read8(0, dev, 0, reg); }

static void watchdog(struct intr_frame *f)
{
    (void)f;
    watchdog_fired = true;
    lapic_eoi();
}

static void counted(struct intr_frame *f)
{
    irqs[f->vector & 0xFF]++;
    lapic_eoi();
}

static void doorbell(u32 index, u32 vector)
{
    outl(iobase, DOORBELL | index << 8 | vector);
}

/* Sleep in hlt until `vector` has been taken `want` times (false: the watchdog fired first). */
static bool wait_irq(u8 vector, u32 want)
{
    watchdog_fired = false;
    lapic_timer_oneshot_ms(WAIT_MS);
    cli();
    while (irqs[vector] < want && !watchdog_fired) {
        sti_hlt();
        cli();
    }
    lapic_timer_stop();
    sti();
    return irqs[vector] >= want;
}

static void step_find(void)
{
    bool found = false;
    for (u8 d = 0; d < 32 && !found; d++)
        if (pci_read32(0, d, 0, 0) == NIC_ID) {
            dev = d;
            found = true;
        }
    if (!found) {
        printf("FAIL: no 8086:10d3 function on PCI bus 0\n");
        exit(EXIT_BAD_SETUP);
    }
    printf("PT FOUND 00:%02x.0 8086:10d3\n", dev);
}

static void step_config(void)
{
    u32 cls = cfg32(PCI_CLASS_REV) >> 8, sub = cfg32(PCI_SUBSYSTEM);
    printf("config: class 0x%06x subsystem 0x%08x status 0x%04x pin %u\n", cls, sub,
           cfg16(PCI_STATUS), cfg8(PCI_INT_PIN));
    if (cls != 0x020000 || sub != NIC_SUBSYS)
        fail("class 0x%06x / subsystem 0x%08x are not the device's", cls, sub);
    if (!(cfg16(PCI_STATUS) & PCI_STATUS_CAP) || cfg8(PCI_INT_PIN) != 1)
        fail("status 0x%04x or interrupt pin %u", cfg16(PCI_STATUS), cfg8(PCI_INT_PIN));
    static const u8 want[][2] = {{0x40, CAP_PM}, {0x50, CAP_MSI}, {0x70, CAP_MSIX}, {0xA0, CAP_PCIE}};
    u8 p = cfg8(PCI_CAP_PTR);
    for (u32 i = 0; i < 4; i++) {
        if (p != want[i][0] || cfg8(p) != want[i][1])
            fail("capability %u: 0x%02x id 0x%02x, expected 0x%02x id 0x%02x", i, p, cfg8(p),
                 want[i][0], want[i][1]);
        printf("config: capability 0x%02x at 0x%02x\n", cfg8(p), p);
        p = cfg8(p + 1);
    }
    if (p != 0)
        fail("capability list does not end after PCIe (next 0x%02x)", p);
    u16 msi = cfg16(0x50 + MSI_CTRL);
    u16 msix = cfg16(0x70 + MSIX_CTRL);
    u32 table = cfg32(0x70 + MSIX_TABLE), pba = cfg32(0x70 + MSIX_PBA);
    printf("config: MSI control 0x%04x, MSI-X control 0x%04x table 0x%08x PBA 0x%08x\n", msi, msix,
           table, pba);
    if ((msi & (MSI_CTRL_64BIT | MSI_CTRL_PVM | 0xE)) != (MSI_CTRL_64BIT | MSI_CTRL_PVM | 0x4))
        fail("MSI control 0x%04x: expected 64-bit, per-vector mask, 4 vectors", msi);
    if ((msix & 0x7FF) != 4 || table != 0x3 || pba != (PBA_OFF | 3))
        fail("MSI-X: 5 entries, table at BAR3 + 0, PBA at BAR3 + 0x2000 expected");
    pci_write32(0, dev, 0, DEV_REG, DEV_REG_VALUE);
    u32 back = cfg32(DEV_REG);
    pci_write8(0, dev, 0, PCI_INT_LINE, 5);
    printf("config: device register 0x%02x reads 0x%08x, interrupt line %u\n", DEV_REG, back,
           cfg8(PCI_INT_LINE));
    if (back != DEV_REG_VALUE || cfg8(PCI_INT_LINE) != 5)
        fail("config writes do not read back");
    puts("CONFIG OK");
}

static u32 bar_size_mask(u32 n)
{
    u32 old = cfg32(PCI_BAR(n));
    pci_write32(0, dev, 0, PCI_BAR(n), 0xFFFFFFFFu);
    u32 v = cfg32(PCI_BAR(n));
    pci_write32(0, dev, 0, PCI_BAR(n), old);
    return v;
}

static void step_bars(void)
{
    static const u32 want[6] = {
        ~(BAR0_SIZE - 1), 0, ~(BAR2_SIZE - 1) | 1, ~(BAR3_SIZE - 1), 0, 0,
    };
    pci_write16(0, dev, 0, PCI_COMMAND, 0);
    for (u32 n = 0; n < 6; n++) {
        u32 v = bar_size_mask(n);
        printf("bars: BAR%u reads 0x%08x after all-ones\n", n, v);
        if (v != want[n])
            fail("BAR%u sizing 0x%08x, expected 0x%08x", n, v, want[n]);
    }
    pci_write32(0, dev, 0, PCI_BAR(0), BAR0_ADDR);
    pci_write32(0, dev, 0, PCI_BAR(2), BAR2_PORT);
    pci_write32(0, dev, 0, PCI_BAR(3), BAR3_ADDR);
    pci_write16(0, dev, 0, PCI_COMMAND, PCI_CMD_IO | PCI_CMD_MEMORY | PCI_CMD_MASTER);
    bar0 = cfg32(PCI_BAR(0)) & ~0xFu;
    iobase = (u16)(cfg32(PCI_BAR(2)) & ~0x3u);
    bar3 = cfg32(PCI_BAR(3)) & ~0xFu;
    printf("bars: BAR0 0x%08x BAR2 io 0x%04x BAR3 0x%08x command 0x%04x\n", bar0, iobase, bar3,
           cfg16(PCI_COMMAND));
    if (bar0 != BAR0_ADDR || iobase != BAR2_PORT || bar3 != BAR3_ADDR)
        fail("BAR addresses do not read back");
    puts("BARS OK");
}

/* Check [from, to) of a BAR against the pattern; returns the first bad offset or `to`. */
static u32 check(u32 base, u32 from, u32 to, u32 s)
{
    for (u32 off = from; off < to; off += 4)
        if (readl(base + off) != pattern(s, off / 4))
            return off;
    return to;
}

static void step_bar_memory(void)
{
    u32 bad = check(bar0, 0, BAR0_SIZE, seed);
    if (bad != BAR0_SIZE)
        fail("BAR0 + 0x%x reads 0x%08x, the test put 0x%08x there", bad, readl(bar0 + bad),
             pattern(seed, bad / 4));
    printf("bar mem: BAR0 holds the test's pattern (seed 0x%08x, %u KiB)\n", seed, BAR0_SIZE >> 10);
    for (u32 off = BAR0_SIZE / 2; off < BAR0_SIZE; off += 4)
        writel(bar0 + off, pattern(~seed, off / 4));
    if (check(bar0, BAR0_SIZE / 2, BAR0_SIZE, ~seed) != BAR0_SIZE || check(bar0, 0, BAR0_SIZE / 2, seed)
        != BAR0_SIZE / 2)
        fail("BAR0 does not keep what was written");
    for (u32 page = 0x1000; page < BAR3_SIZE; page += 0x2000) {
        bad = check(bar3, page, page + 0x1000, seed3);
        if (bad != page + 0x1000)
            fail("BAR3 + 0x%x reads 0x%08x, the test put 0x%08x there", bad, readl(bar3 + bad),
                 pattern(seed3, bad / 4));
    }
    for (u32 off = 0x3000; off < 0x4000; off += 4)
        writel(bar3 + off, pattern(~seed3, off / 4));
    printf("bar mem: BAR3 pages 0x1000 and 0x3000 hold the test's pattern (seed 0x%08x)\n", seed3);
    puts("BAR MEM OK");
}

static void step_traps(void)
{
    u32 t = readl(bar3 + TRAP_REG), io = inl(iobase + IO_REG);
    printf("trap: BAR3 + 0x%x reads 0x%08x, BAR2 + 0x%x reads 0x%08x\n", TRAP_REG, t, IO_REG, io);
    if (t != TRAP_MAGIC || io != IO_MAGIC)
        fail("trapped registers: expected 0x%08x and 0x%08x", TRAP_MAGIC, IO_MAGIC);
    writel(bar3 + TRAP_REG + 4, TRAP_WRITE);
    if (readl(bar3 + TRAP_REG + 4) != TRAP_WRITE)
        fail("BAR3 + 0x%x does not read back", TRAP_REG + 4);
    puts("BAR TRAP OK");
}

static void step_msi(void)
{
    u8 c = 0x50;
    intr_register(MSI_VECTOR, counted);
    pci_write32(0, dev, 0, c + MSI_ADDR_LO, LAPIC_DEFAULT_BASE | lapic_id() << 12);
    pci_write32(0, dev, 0, c + MSI_ADDR_HI, 0);
    pci_write16(0, dev, 0, c + MSI_DATA, MSI_VECTOR);             /* fixed, edge */
    pci_write32(0, dev, 0, c + MSI_MASK, 0);
    pci_write16(0, dev, 0, c + MSI_CTRL, MSI_CTRL_ENABLE);         /* one vector (MME 0) */
    printf("msi: address 0x%08x data 0x%04x control 0x%04x\n", cfg32(c + MSI_ADDR_LO),
           cfg16(c + MSI_DATA), cfg16(c + MSI_CTRL));
    doorbell(IDX_MSI, 0);
    if (!wait_irq(MSI_VECTOR, 1))
        fail("no MSI (vector 0x%x) after the doorbell", MSI_VECTOR);
    printf("msi: vector 0x%x taken %u time(s)\n", MSI_VECTOR, irqs[MSI_VECTOR]);
    puts("MSI OK");

    pci_write32(0, dev, 0, c + MSI_MASK, 1);
    doorbell(IDX_MSI, 0);
    u32 n;
    for (n = 0; n < POLLS && !(cfg32(c + MSI_PENDING) & 1); n++)
        cpu_relax();
    if (!(cfg32(c + MSI_PENDING) & 1))
        fail("masked MSI: the pending bit never came on");
    if (irqs[MSI_VECTOR] != 1)
        fail("masked MSI was delivered");
    printf("msi: masked vector pending after %u polls, not delivered\n", n);
    pci_write32(0, dev, 0, c + MSI_MASK, 0);
    if (!wait_irq(MSI_VECTOR, 2))
        fail("unmasked MSI: the pending interrupt did not arrive");
    if (cfg32(c + MSI_PENDING) & 1)
        fail("MSI pending bit still set after delivery");
    puts("MSI MASK OK");
    pci_write16(0, dev, 0, c + MSI_CTRL, 0);
}

static void msix_entry(u32 n, u8 vector, bool masked)
{
    u32 e = bar3 + MSIX_ENTRY(n);
    writel(e + 0, LAPIC_DEFAULT_BASE | lapic_id() << 12);
    writel(e + 4, 0);
    writel(e + 8, vector);
    writel(e + 12, masked ? MSIX_VCTRL_MASK : 0);
}

static void step_msix(void)
{
    u8 c = 0x70;
    intr_register(MSIX_VECTOR, counted);
    intr_register(MSIX_MASKED_VEC, counted);
    pci_write16(0, dev, 0, c + MSIX_CTRL, MSIX_ENABLE | MSIX_FMASK);
    for (u32 n = 0; n < 5; n++)
        if (!(readl(bar3 + MSIX_ENTRY(n) + 12) & MSIX_VCTRL_MASK))
            fail("MSI-X entry %u is not masked at reset", n);
    msix_entry(2, MSIX_VECTOR, false);
    msix_entry(3, MSIX_MASKED_VEC, true);
    pci_write16(0, dev, 0, c + MSIX_CTRL, MSIX_ENABLE);
    printf("msix: entry 2 address 0x%08x data 0x%08x control 0x%08x, MSI-X control 0x%04x\n",
           readl(bar3 + MSIX_ENTRY(2)), readl(bar3 + MSIX_ENTRY(2) + 8),
           readl(bar3 + MSIX_ENTRY(2) + 12), cfg16(c + MSIX_CTRL));
    doorbell(IDX_MSIX, 2);
    if (!wait_irq(MSIX_VECTOR, 1))
        fail("no MSI-X (entry 2, vector 0x%x) after the doorbell", MSIX_VECTOR);
    puts("MSIX OK");

    doorbell(IDX_MSIX, 3);
    u32 n;
    for (n = 0; n < POLLS && !(readl(bar3 + PBA_OFF) & (1u << 3)); n++)
        cpu_relax();
    u32 pba = readl(bar3 + PBA_OFF);
    if (!(pba & (1u << 3)))
        fail("masked MSI-X entry 3: its PBA bit never came on (PBA 0x%08x)", pba);
    if (irqs[MSIX_MASKED_VEC])
        fail("masked MSI-X entry 3 was delivered");
    printf("msix: PBA 0x%08x after %u polls, entry 3 not delivered\n", pba, n);
    writel(bar3 + MSIX_ENTRY(3) + 12, 0);
    if (!wait_irq(MSIX_MASKED_VEC, 1))
        fail("unmasked MSI-X entry 3: the pending interrupt did not arrive");
    if (readl(bar3 + PBA_OFF) & (1u << 3))
        fail("PBA bit 3 still set after delivery");
    puts("MSIX MASK OK");
    pci_write16(0, dev, 0, c + MSIX_CTRL, 0);
}

static void step_intx(void)
{
    /* the board's swizzle (PIRQ = (pin - 1 + slot - 1) mod 4): the DSDT's _PRT says the same */
    u32 pirq = (u32)(dev - 1) & 3;
    intr_register(INTX_VECTOR, counted);
    pci_write8(0, PIIX3_DEV, 0, PIRQRC + pirq, INTX_IRQ);
    ioapic_set_redir(INTX_IRQ, INTX_VECTOR, IOREDTBL_LEVEL, (u8)lapic_id());  /* active high, as the DSDT */
    printf("intx: PIRQ%c -> IRQ %u -> IOAPIC pin %u (level) -> vector 0x%x\n", 'A' + pirq, INTX_IRQ,
           INTX_IRQ, INTX_VECTOR);
    for (u32 round = 1; round <= 2; round++) {
        doorbell(IDX_INTX, 0);
        if (!wait_irq(INTX_VECTOR, round))
            fail("INTx round %u: no interrupt (IOAPIC RTE 0x%08x)", round,
                 ioapic_read(0x10 + 2 * INTX_IRQ));
        printf("intx: round %u taken\n", round);
    }
    ioapic_mask(INTX_IRQ);
    puts("INTX OK");
}

int main(struct mb_info *mb)
{
    (void)mb;
    printf("passthrough: cmdline '%s'\n", mb_cmdline());
    seed = cmdline_get_u32("seed", 0x12345678u);
    seed3 = cmdline_get_u32("seed3", 0x9ABCDEF0u);
    pic_init(PIC_VECTOR_BASE, PIC_VECTOR_BASE + 8);     /* all masked */
    lapic_enable(true);
    intr_register(TIMER_VECTOR, watchdog);
    sti();
    step_find();
    step_config();
    step_bars();
    step_bar_memory();
    step_traps();
    step_msi();
    step_msix();
    if (cmdline_has("nointx"))
        puts("intx: skipped (nointx)");
    else
        step_intx();
    pci_write16(0, dev, 0, PCI_COMMAND, 0);
    cli();
    if (intr_unexpected)
        fail("%u unexpected interrupt(s)", intr_unexpected);
    puts("PASSTHROUGH OK");
    return EXIT_PASS;
}
