/* dma_bench: N bus-master DMA transfers of one size, with or without VT-d translation, every
 * one checked: the guest half of bench/dma_bench.py (the cost of DMA translation).
 *
 * Modes (cmdline "mode=edu" or "mode=ide"):
 *   edu  copy `count` times RAM -> edu buffer -> RAM with QEMU's edu DMA test device
 *        (1234:11e8): two transfers of `size` bytes per copy (default 2048; at most 4092:
 *        QEMU 7.2's edu aborts the VM on a transfer that ends at its buffer's end), through a
 *        ring of 64 source and 64 destination pages.
 *   ide  `count` READ DMA commands of `size` bytes (a multiple of 4096, at most 128 KiB;
 *        default 64 KiB) from the PIIX3 IDE primary master (8086:7010), sequential LBAs
 *        wrapping at the disk's end, through a PRD table of one 4 KiB entry per page.
 *        The disk carries bench/dma_bench.py's pattern (tests/kvm/test_ide_program.py's):
 *        sector n = "KVMPYSEC", n as u64 LE, then bytes (n*13 + j) & 0xff for j = 16..511.
 *
 * Translation (cmdline "vtd=auto|on|off", default auto): with a VT-d unit (the ACPI DMAR's
 * first DRHD, else 0xFED90000 when its VER/CAP read neither 0 nor all-ones) the program
 * builds root, context and second-level tables that identity-map 0x400000-0x7FFFFF (every
 * DMA buffer, the PRD table) with 4 KiB pages for the device's requester-id, invalidates the
 * context cache and IOTLB and enables translation (GCMD.TE): every transfer is translated.
 * "vtd=on" fails (exit 2) without a unit; "vtd=off" never enables one.  "flush" adds a
 * domain-selective IOTLB invalidation (register-based, as Linux's strict mode flushes on
 * unmap) after every copy or command, so every transfer walks the tables again.
 *
 * Checks: every copy stamps the first and last word of its source; the copy must land them
 * in its destination page (a transfer that did nothing leaves an older stamp).  Every READ
 * DMA must leave each sector's magic and LBA in place, with bus-master and ATA status clean.
 * After the loop: every destination page equals its source over `size` bytes (a page no copy
 * reached keeps its fill) and keeps its fill beyond; the last IDE buffer carries the full pattern; no VT-d fault is pending; with
 * kvmpy's edu error extension (0xA0 not all-ones), no transfer failed.
 *
 * Output: "DMA_BENCH START ..." right before the first transfer, "DMA_BENCH END ..." right
 * after the last (the benchmark timestamps both lines from outside), then the checks and
 * "DMA_BENCH OK mode=... count=... size=... bytes=... vtd=on|off flush=0|1 polls=...".
 * Exit: 0 pass, 1 a check failed, 2 the machine lacks the device, the unit (vtd=on) or RAM.
 *
 * Waits: kvmpy's edu and IDE complete a transfer inside the write that starts it; QEMU's edu
 * runs each DMA 100 ms (virtual) later, so an edu wait sleeps in hlt on 1 ms LAPIC-timer
 * ticks; an IDE command is polled on the bus-master status, as SeaBIOS does ("polls" counts
 * the status reads).  Paging stays off: IOVAs, table addresses and pointers are physical. */
#include "fw.h"
#include "pcidev.h"

/* --- beyond pcidev.h ------------------------------------------------------------------------ */
#define EDU_BUF_MAX         4092u       /* see the top: QEMU 7.2 aborts at 4096 */
#define EDU_WAIT_MS         3000u

#define ATA_CMD             0x1F0
#define ATA_CTL             0x3F6
#define SECTOR              512u
#define ATA_POLLS           300000u     /* status reads before giving up: seconds */

#define VTD_DEFAULT_BASE    0xFED90000u
#define DOMAIN_ID           1
#define REG_POLLS           100000u

/* --- memory (physical = IOVA: identity-mapped) ---------------------------------------------- */
#define ROOT_TABLE          0x200000u
#define CTX_TABLE           0x201000u
#define PT4                 0x202000u
#define PT3                 0x203000u
#define PT2                 0x204000u
#define PT1                 0x205000u   /* two pages: 0x400000-0x5FFFFF, 0x600000-0x7FFFFF */
#define MAP_START           0x400000u
#define MAP_END             0x800000u
#define SRC_RING            0x400000u   /* edu: 64 source pages */
#define DST_RING            0x440000u   /* edu: 64 destination pages */
#define RING_PAGES          64u
#define PRD_TABLE           0x480000u   /* ide */
#define IDE_BUF             0x500000u   /* ide: up to 128 KiB */
#define IDE_BUF_MAX         0x20000u
#define MEM_NEEDED          MAP_END
#define PAGE                4096u

static u32 vtd;                         /* unit base, 0 without translation */
static u64 cap, ecap;
static u32 iro, levels;
static u16 sid;                         /* the bus master's requester-id (bus 0) */
static u32 edu_base;
static bool edu_ext;
static u16 bm_base;
static bool flush;
static u32 polls;                       /* IDE status reads / edu timer sleeps in the loop */
static volatile bool tick;

static void timer_tick(struct intr_frame *f)
{
    (void)f;
    tick = true;
    lapic_eoi();
}

/* Sleep in hlt until the next ~1 ms LAPIC-timer tick. */
static void sleep_tick(void)
{
    tick = false;
    lapic_timer_oneshot_ms(1);
    cli();
    while (!tick) {
        sti_hlt();
        cli();
    }
}

static bool find_function(u32 id, u8 *dev_out, u8 *fn_out)
{
    for (u8 dev = 0; dev < 32; dev++)
        for (u8 fn = 0; fn < 8; fn++)
            if (pci_read32(0, dev, fn, 0) == id) {
                *dev_out = dev;
                *fn_out = fn;
                return true;
            }
    return false;
}

/* --- VT-d ------------------------------------------------------------------------------------ */
static u32 vr32(u32 off) { return readl(vtd + off); }
static void vw32(u32 off, u32 v) { writel(vtd + off, v); }
static u64 vr64(u32 off) { return readq_lohi(vtd + off); }
static void vw64(u32 off, u64 v) { writeq_lohi(vtd + off, v); }

/* The first DRHD's register base from the ACPI DMAR table, else the address kvmpy and QEMU's
 * q35 use. */
static u32 dmar_base(void)
{
    u64 base = acpi_dmar_drhd(0);
    if (base >> 32)
        fail("DRHD register base 0x%llx above 4 GiB", base);
    return base ? (u32)base : VTD_DEFAULT_BASE;
}

/* A unit answers when VER and CAP read neither all-ones nor all-zeros (unowned MMIO reads one
 * or the other). */
static bool vtd_probe(void)
{
    vtd = dmar_base();
    u32 ver = vr32(VER_REG);
    cap = vr64(CAP_REG);
    ecap = vr64(ECAP_REG);
    bool present = ver != 0xFFFFFFFFu && ver != 0 && cap != 0 && cap != ~0ull;
    printf("dma_bench: VT-d at 0x%08x: VER 0x%x CAP 0x%016llx ECAP 0x%016llx (%s)\n", vtd, ver, cap,
           ecap, present ? "present" : "absent");
    if (!present)
        vtd = 0;
    return present;
}

static void gsts_wait(u32 mask, u32 want, const char *what)
{
    for (u32 i = 0; i < REG_POLLS; i++)
        if ((vr32(GSTS_REG) & mask) == want)
            return;
    fail("%s: GSTS stays 0x%08x", what, vr32(GSTS_REG));
}

/* Register-based IOTLB invalidation (VT-d 6.5.1, 11.4.8): granularity 1 global, 2 domain. */
static void iotlb_inval(u32 gran)
{
    vw64(iro + 8, (u64)(IOTLB_HI_IVT | IOTLB_HI_IIRG(gran) | IOTLB_HI_DID(DOMAIN_ID)) << 32);
    u32 hi = 0;
    for (u32 i = 0; i < REG_POLLS; i++)
        if (!((hi = vr32(iro + 12)) & IOTLB_HI_IVT))
            break;
    if (hi & IOTLB_HI_IVT)
        fail("IOTLB_REG.IVT never clears");
    if (IOTLB_HI_IAIG(hi) == 0)
        fail("IOTLB invalidation (granularity %u) not done: high dword 0x%08x", gran, hi);
}

static void zero_pages(u32 addr, u32 n)
{
    memset((void *)addr, 0, n * PAGE);
}

/* Root entry for bus 0, the context entry for `sid`, and 3- or 4-level tables mapping
 * MAP_START..MAP_END to themselves with 4 KiB pages; then the unit on. */
static void vtd_enable(void)
{
    u32 sagaw = (cap >> 8) & 0x1F;
    levels = (sagaw & 2) ? 3 : 4;               /* 39-bit 3-level, else 48-bit 4-level */
    if (!(sagaw & (1u << (levels - 2)))) {
        printf("FAIL: SAGAW 0x%x offers neither 3- nor 4-level tables\n", sagaw);
        exit(EXIT_BAD_SETUP);
    }
    iro = (u32)((ecap >> 8) & 0x3FF) * 16;
    if (iro == 0)
        fail("ECAP.IRO is 0");
    zero_pages(ROOT_TABLE, (PT1 - ROOT_TABLE) / PAGE + 2);
    u64 *root = (u64 *)ROOT_TABLE, *ctx = (u64 *)CTX_TABLE;
    root[0] = CTX_TABLE | 1;                                    /* P, context-table pointer */
    ctx[2 * sid] = (levels == 4 ? PT4 : PT3) | 1;               /* P, TT 0: translate */
    ctx[2 * sid + 1] = (u64)(levels - 2) | (u64)DOMAIN_ID << 8; /* AW, DID */
    ((u64 *)PT4)[0] = PT3 | PTE_R | PTE_W;
    ((u64 *)PT3)[0] = PT2 | PTE_R | PTE_W;
    u64 *pt1 = (u64 *)PT1;
    for (u32 a = MAP_START; a < MAP_END; a += 0x200000u)
        ((u64 *)PT2)[a >> 21] = (PT1 + ((a - MAP_START) >> 21) * PAGE) | PTE_R | PTE_W;
    for (u32 a = MAP_START; a < MAP_END; a += PAGE)
        pt1[(a - MAP_START) >> 12] = a | PTE_R | PTE_W;

    if (vr32(GSTS_REG) & GSTS_TES) {
        vw32(GCMD_REG, 0);
        gsts_wait(GSTS_TES, 0, "TE off");
    }
    vw32(FECTL_REG, FECTL_IM);
    vw64(RTADDR_REG, ROOT_TABLE);                               /* TTM 00: legacy tables */
    vw32(GCMD_REG, GCMD_SRTP);
    gsts_wait(GSTS_RTPS, GSTS_RTPS, "SRTP");
    vw64(CCMD_REG, (u64)(CCMD_HI_ICC | CCMD_HI_CIRG_GLOBAL) << 32);
    u32 i;
    for (i = 0; i < REG_POLLS && (vr32(CCMD_REG + 4) & CCMD_HI_ICC); i++)
        ;
    if (i == REG_POLLS)
        fail("CCMD.ICC never clears");
    iotlb_inval(1);
    vw32(GCMD_REG, GCMD_TE);
    gsts_wait(GSTS_TES, GSTS_TES, "TE");
    if (vr32(FSTS_REG) & (FSTS_PPF | FSTS_PFO))
        fail("faults pending before any DMA: FSTS 0x%08x", vr32(FSTS_REG));
    printf("dma_bench: translation on: %u-level tables, domain %u, requester %02x:%02x.%u, IOVA "
           "0x%x-0x%x identity-mapped with 4 KiB pages\n", levels, DOMAIN_ID, 0, sid >> 3, sid & 7,
           MAP_START, MAP_END - 1);
}

static void vtd_check_and_disable(void)
{
    u32 fsts = vr32(FSTS_REG);
    if (fsts & (FSTS_PPF | FSTS_PFO))
        fail("VT-d faults recorded during the benchmark: FSTS 0x%08x", fsts);
    vw32(GCMD_REG, 0);
    gsts_wait(GSTS_TES, 0, "TE off");
}

/* --- edu ------------------------------------------------------------------------------------- */
static u32 edu_r(u32 off) { return readl(edu_base + off); }
static void edu_w(u32 off, u32 v) { writel(edu_base + off, v); }

static void edu_setup(void)
{
    u8 dev, fn;
    if (!find_function(EDU_ID, &dev, &fn)) {
        printf("FAIL: no edu device (1234:11e8) on PCI bus 0\n");
        exit(EXIT_BAD_SETUP);
    }
    sid = (u16)(dev << 3 | fn);
    u32 bar = pci_read32(0, dev, fn, PCI_BAR0);
    if ((bar & ~0xFu) == 0) {                   /* no firmware ran: place BAR0 ourselves */
        pci_write32(0, dev, fn, PCI_BAR0, EDU_BAR_DEFAULT);
        bar = pci_read32(0, dev, fn, PCI_BAR0);
    }
    edu_base = bar & ~0xFu;
    u16 cmd = pci_read16(0, dev, fn, PCI_COMMAND);
    pci_write16(0, dev, fn, PCI_COMMAND, cmd | PCI_CMD_MEMORY | PCI_CMD_MASTER);
    edu_w(EDU_REG_LIVENESS, 0x12345678u);
    if ((edu_r(EDU_REG_ID) & 0xFFFF) != 0x00ED || edu_r(EDU_REG_LIVENESS) != ~0x12345678u)
        fail("edu at 00:%02x.%u (BAR0 0x%08x) does not answer", dev, fn, edu_base);
    edu_ext = edu_r(EDU_REG_DMA_ERRORS) != 0xFFFFFFFFu;
    printf("dma_bench: edu at 00:%02x.%u BAR0 0x%08x%s\n", dev, fn, edu_base,
           edu_ext ? " (kvmpy error extension)" : "");
}

static void edu_dma(u32 src, u32 dst, u32 count, u32 cmd)
{
    edu_w(EDU_REG_DMA_SRC, src);
    edu_w(EDU_REG_DMA_DST, dst);
    edu_w(EDU_REG_DMA_COUNT, count);
    edu_w(EDU_REG_DMA_CMD, cmd | EDU_DMA_RUN);
    u32 v = edu_r(EDU_REG_DMA_CMD);
    for (u32 ms = 0; (v & EDU_DMA_RUN) && ms < EDU_WAIT_MS; ms++) {
        sleep_tick();
        polls++;
        v = edu_r(EDU_REG_DMA_CMD);
    }
    if (v & EDU_DMA_RUN)
        fail("edu DMA 0x%x -> 0x%x (%u bytes) did not complete in %u ms", src, dst, count, EDU_WAIT_MS);
    if (edu_ext && (v & EDU_DMA_ERROR))
        fail("edu DMA 0x%x -> 0x%x (%u bytes) failed (cmd 0x%08x)", src, dst, count, v);
}

static u32 fill_word(u32 page, u32 i) { return (page * 0x01000193u) ^ (i * 0x9E3779B1u); }

static void bench_edu(u32 count, u32 size)
{
    if (size < 8 || size > EDU_BUF_MAX || size % 4)
        fail("size=%u: edu transfers take 8 to %u bytes, a multiple of 4", size, EDU_BUF_MAX);
    for (u32 k = 0; k < RING_PAGES; k++) {
        u32 *s = (u32 *)(SRC_RING + k * PAGE), *d = (u32 *)(DST_RING + k * PAGE);
        for (u32 i = 0; i < PAGE / 4; i++) {
            s[i] = fill_word(k, i);
            d[i] = ~fill_word(k, i);
        }
    }
    u32 last = size / 4 - 1;
    printf("DMA_BENCH START mode=edu count=%u size=%u vtd=%s flush=%u\n", count, size,
           vtd ? "on" : "off", flush);
    for (u32 n = 0; n < count; n++) {
        u32 k = n % RING_PAGES;
        u32 *s = (u32 *)(SRC_RING + k * PAGE), *d = (u32 *)(DST_RING + k * PAGE);
        u32 stamp = 0x5EED0000u ^ (n * 0x10001u);
        s[0] = stamp;
        s[last] = ~stamp;
        edu_dma((u32)s, EDU_BUF, size, 0);
        edu_dma(EDU_BUF, (u32)d, size, EDU_DMA_TO_RAM);
        if (d[0] != stamp || d[last] != ~stamp)
            fail("copy %u: page 0x%x holds 0x%08x..0x%08x, not the stamp 0x%08x..0x%08x", n, (u32)d,
                 d[0], d[last], stamp, ~stamp);
        if (flush)
            iotlb_inval(2);
    }
    printf("DMA_BENCH END mode=edu\n");
    /* Every ring page is checked whatever the count, so the checks cost the same in the
     * benchmark's count=N and count=2 runs: a page never copied to must hold its fill. */
    u32 used = count < RING_PAGES ? count : RING_PAGES;
    for (u32 k = 0; k < RING_PAGES; k++) {
        const u32 *s = (const u32 *)(SRC_RING + k * PAGE), *d = (const u32 *)(DST_RING + k * PAGE);
        for (u32 i = 0; i <= last; i++)
            if (d[i] != (k < used ? s[i] : ~fill_word(k, i)))
                fail("page 0x%x word %u: 0x%08x, source 0x%08x (%s)", (u32)d, i, d[i], s[i],
                     k < used ? "copied" : "never copied to");
        for (u32 i = last + 1; i < PAGE / 4; i++)
            if (d[i] != ~fill_word(k, i))
                fail("page 0x%x word %u changed beyond the %u bytes copied", (u32)d, i, size);
        for (u32 i = 1; i < last; i++)
            if (s[i] != fill_word(k, i))
                fail("source page 0x%x word %u changed", (u32)s, i);
    }
    if (edu_ext && edu_r(EDU_REG_DMA_ERRORS) != 0)
        fail("edu counts %u failed transfers", edu_r(EDU_REG_DMA_ERRORS));
    printf("dma_bench: %u destination pages equal their sources, %u untouched\n", used,
           RING_PAGES - used);
}

/* --- IDE ------------------------------------------------------------------------------------- */
static u8 altstatus(void) { return inb(ATA_CTL); }

static u8 wait_not_busy(const char *what)
{
    (void)altstatus();                          /* the 400 ns pause after a command */
    for (u32 i = 0; i < ATA_POLLS; i++) {
        u8 st = altstatus();
        if (!(st & ST_BSY))
            return st;
    }
    fail("%s: drive stays busy (status 0x%02x)", what, altstatus());
}

static void ide_setup(void)
{
    u8 dev, fn;
    if (!find_function(PIIX3_IDE_ID, &dev, &fn)) {
        printf("FAIL: no PIIX3 IDE (8086:7010) on PCI bus 0\n");
        exit(EXIT_BAD_SETUP);
    }
    sid = (u16)(dev << 3 | fn);
    u32 bar = pci_read32(0, dev, fn, PCI_BAR4);
    if ((bar & ~3u) == 0) {
        pci_write32(0, dev, fn, PCI_BAR4, BAR4_DEFAULT);
        bar = pci_read32(0, dev, fn, PCI_BAR4);
    }
    bm_base = bar & 0xFFFC;
    u16 cmd = pci_read16(0, dev, fn, PCI_COMMAND);
    pci_write16(0, dev, fn, PCI_COMMAND, cmd | PCI_CMD_IO | PCI_CMD_MASTER);
    u16 t = pci_read16(0, dev, fn, PIIX_IDETIM_PRI);
    if (!(t & IDETIM_DECODE))
        pci_write16(0, dev, fn, PIIX_IDETIM_PRI, t | IDETIM_DECODE);

    outb(ATA_CTL, DC_NIEN | DC_SRST);           /* software reset of the primary channel */
    for (volatile int i = 0; i < 100; i++)
        ;
    outb(ATA_CTL, DC_NIEN);
    wait_not_busy("reset");
    outb(ATA_CMD + REG_DEV, 0xA0);
    wait_not_busy("select");
    /* nIEN clear: the drive asserts INTRQ, which sets the bus-master INTERRUPT bit the loop
     * polls (SFF-8038i 3.2).  The 8259 keeps IRQ 14 masked and IF stays clear. */
    outb(ATA_CTL, 0);
    printf("dma_bench: PIIX3 IDE at 00:%02x.%u, bus master at 0x%x\n", dev, fn, bm_base);
}

static u32 ide_identify(void)
{
    static u16 id[256];
    outb(ATA_CMD + REG_DEV, 0xA0);
    outb(ATA_CMD + REG_STAT, ATA_IDENTIFY);
    u8 st = wait_not_busy("IDENTIFY");
    if ((st & (ST_ERR | ST_DRQ)) != ST_DRQ) {               /* ATAPI aborts it; nothing: 0x7f/0 */
        printf("FAIL: no ATA disk on the primary master (IDENTIFY DEVICE: status 0x%02x error "
               "0x%02x)\n", st, inb(ATA_CMD + REG_ERR));
        exit(EXIT_BAD_SETUP);
    }
    insw(ATA_CMD, id, 256);
    wait_not_busy("IDENTIFY end");
    if (!(id[49] & (1u << 8)))
        fail("the disk does not offer DMA (IDENTIFY word 49 0x%04x)", id[49]);
    return id[60] | (u32)id[61] << 16;          /* LBA28 user-addressable sectors */
}

static bool sector_ok(const u8 *p, u32 lba)
{
    const u32 *w = (const u32 *)p;
    return w[0] == 0x504D564Bu && w[1] == 0x43455359u && w[2] == lba && w[3] == 0; /* "KVMPYSEC" */
}

static bool sector_full(const u8 *p, u32 lba)
{
    if (memcmp(p, "KVMPYSEC", 8) || *(const u32 *)(p + 8) != lba || *(const u32 *)(p + 12))
        return false;
    for (u32 j = 16; j < SECTOR; j++)
        if (p[j] != (u8)(lba * 13 + j))
            return false;
    return true;
}

static void bench_ide(u32 count, u32 size)
{
    if (size < PAGE || size > IDE_BUF_MAX || size % PAGE)
        fail("size=%u: READ DMA sizes are 4096 to %u bytes, a multiple of 4096", size, IDE_BUF_MAX);
    u32 spc = size / SECTOR;                    /* sectors per command; 256 is written as 0 */
    u32 disk = ide_identify();
    u32 span = disk / spc * spc;                /* LBAs the loop cycles through */
    if (span < 2 * spc) {
        printf("FAIL: the disk's %u sectors hold fewer than two %u-byte reads\n", disk, size);
        exit(EXIT_BAD_SETUP);
    }
    struct { u32 addr, ctl; } *prd = (void *)PRD_TABLE;
    for (u32 i = 0; i < size / PAGE; i++) {
        prd[i].addr = IDE_BUF + i * PAGE;
        prd[i].ctl = PAGE | (i == size / PAGE - 1 ? PRD_EOT : 0);
    }
    memset((void *)IDE_BUF, 0, size);
    outl(bm_base + BM_PRD, PRD_TABLE);
    printf("dma_bench: disk of %u sectors; reads cycle through LBAs 0-%u\n", disk, span - 1);
    printf("DMA_BENCH START mode=ide count=%u size=%u vtd=%s flush=%u\n", count, size,
           vtd ? "on" : "off", flush);
    u32 lba = 0;
    for (u32 n = 0; n < count; n++) {
        outb(bm_base + BM_CMD, BM_TO_MEM);      /* direction: device -> memory, stopped */
        outb(bm_base + BM_STATUS, BM_ERROR | BM_INTR);
        outb(ATA_CMD + REG_DEV, 0xA0 | DEV_LBA | ((lba >> 24) & 0x0F));
        outb(ATA_CMD + REG_NSECT, (u8)spc);
        outb(ATA_CMD + REG_LBAL, (u8)lba);
        outb(ATA_CMD + REG_LBAM, (u8)(lba >> 8));
        outb(ATA_CMD + REG_LBAH, (u8)(lba >> 16));
        outb(ATA_CMD + REG_STAT, ATA_READ_DMA);
        outb(bm_base + BM_CMD, BM_TO_MEM | BM_START);
        u8 bms = 0;
        u32 i;
        for (i = 0; i < ATA_POLLS; i++) {
            bms = inb(bm_base + BM_STATUS);
            if (bms & BM_INTR)
                break;
        }
        polls += i + 1;
        outb(bm_base + BM_CMD, BM_TO_MEM);      /* stop */
        outb(bm_base + BM_STATUS, BM_ERROR | BM_INTR);
        u8 st;                                  /* reading it acknowledges the drive's interrupt */
        for (i = 0; ((st = inb(ATA_CMD + REG_STAT)) & ST_BSY) && i < ATA_POLLS; i++)
            polls++;
        if ((bms & (BM_INTR | BM_ACTIVE | BM_ERROR)) != BM_INTR || (st & (ST_BSY | ST_DRQ | ST_ERR | ST_DF)))
            fail("READ DMA %u at LBA %u: bus-master status 0x%02x, ATA status 0x%02x error 0x%02x", n,
                 lba, bms, st, inb(ATA_CMD + REG_ERR));
        for (u32 s = 0; s < spc; s++)
            if (!sector_ok((const u8 *)(IDE_BUF + s * SECTOR), lba + s))
                fail("READ DMA %u: sector %u of the buffer does not hold LBA %u", n, s, lba + s);
        if (flush)
            iotlb_inval(2);
        lba += spc;
        if (lba >= span)
            lba = 0;
    }
    printf("DMA_BENCH END mode=ide\n");
    u32 first = lba >= spc ? lba - spc : span - spc;    /* the last command's LBA */
    for (u32 s = 0; s < spc; s++)
        if (!sector_full((const u8 *)(IDE_BUF + s * SECTOR), first + s))
            fail("the last read's sector %u (LBA %u) does not carry the full pattern", s, first + s);
    printf("dma_bench: the last read's %u sectors carry the disk pattern\n", spc);
}

/* --- main ------------------------------------------------------------------------------------ */
int main(struct mb_info *mb)
{
    printf("dma_bench: cmdline '%s'\n", mb_cmdline());
    if (!mb || !(mb->flags & MBI_FLAG_MEM) || mb->mem_upper * 1024u + 0x100000u < MEM_NEEDED) {
        printf("FAIL: needs %u MiB of RAM\n", MEM_NEEDED >> 20);
        return EXIT_BAD_SETUP;
    }
    char mode[8] = "edu", want[8] = "auto";
    cmdline_get("mode", mode, sizeof(mode));
    cmdline_get("vtd", want, sizeof(want));
    bool ide = !strcmp(mode, "ide");
    if (!ide && strcmp(mode, "edu"))
        fail("mode=%s: edu or ide", mode);
    if (strcmp(want, "auto") && strcmp(want, "on") && strcmp(want, "off"))
        fail("vtd=%s: auto, on or off", want);
    u32 count = cmdline_get_u32("count", ide ? 100 : 1000);
    u32 size = cmdline_get_u32("size", ide ? 65536 : 2048);
    flush = cmdline_has("flush");

    pic_init(PIC_VECTOR_BASE, PIC_VECTOR_BASE + 8);     /* all masked */
    lapic_enable(true);
    intr_register(TIMER_VECTOR, timer_tick);

    if (ide)
        ide_setup();
    else
        edu_setup();
    bool found = strcmp(want, "off") && vtd_probe();
    if (!found && !strcmp(want, "on")) {
        printf("FAIL: vtd=on but no VT-d unit answers\n");
        return EXIT_BAD_SETUP;
    }
    if (flush && !found)
        fail("flush needs translation (a VT-d unit and vtd=auto|on)");
    if (found)
        vtd_enable();

    if (ide)
        bench_ide(count, size);
    else
        bench_edu(count, size);
    if (vtd)
        vtd_check_and_disable();
    if (intr_unexpected)
        fail("%u unexpected interrupt(s)", intr_unexpected);
    u64 bytes = (u64)count * size * (ide ? 1 : 2);
    printf("DMA_BENCH OK mode=%s count=%u size=%u bytes=%llu vtd=%s flush=%u polls=%u\n", mode, count,
           size, bytes, vtd ? "on" : "off", flush, polls);
    return EXIT_PASS;
}
