/* ide: the PIIX3 IDE controller driven directly, the way a driver (ata_piix, SeaBIOS) does.
 *
 * Needs: 8086:7010 on PCI bus 0; an ATA disk of at least 4096 sectors on the primary master;
 * an ATAPI CD-ROM with a medium on the secondary master (skipped with "nocd"); RAM up to
 * 5 MiB (the DMA buffers sit at 4 MiB).  Interrupts stay disabled in the CPU: the program
 * polls status and the bus-master INTERRUPT bit like SeaBIOS, and checks that IRQ 14 reached
 * the 8259 (IRR) once (skipped with "noirq").
 *
 * Steps and markers (each step prints details, then its marker):
 *   PCI: find the function, read BAR4 (size and program it when unassigned), enable I/O and
 *        bus mastering -> "PCI OK"
 *   SRST of the primary channel, ATA signature -> "RESET OK"
 *   IDENTIFY DEVICE: model, serial, LBA28/LBA48 sector counts, DMA modes; IRQ 14 seen -> "IDENTIFY OK"
 *   PIO: READ SECTORS (16-bit and 32-bit data port), WRITE SECTORS + read back, SET MULTIPLE +
 *        READ/WRITE MULTIPLE -> "PIO OK"
 *   LBA48: READ/WRITE SECTORS EXT and READ DMA EXT at the last sectors (above 2^28 on a big
 *        disk) -> "LBA48 OK"
 *   DMA: READ DMA EXT / WRITE DMA EXT through a PRD table whose entries cross page boundaries,
 *        one of them 64 KiB (count 0), compared with PIO -> "DMA OK"
 *   Errors: READ beyond the end -> ERR+IDNF (PIO and DMA), unknown command -> ERR+ABRT -> "ERRORS OK"
 *   FLUSH CACHE and FLUSH CACHE EXT -> "FLUSH OK"
 *   ATAPI: signature, IDENTIFY PACKET, TEST UNIT READY, INQUIRY, READ CAPACITY, READ(10) by PIO
 *        and by DMA, READ(10) beyond the end + REQUEST SENSE (5/21h) -> "ATAPI OK"
 *   then "IDE OK", exit 0.
 *
 * Data checks: when sector 0 of the disk starts with "KVMPYSEC", every sector read must carry
 * the pattern (bytes 0-7 "KVMPYSEC", 8-15 its LBA little-endian, byte j >= 16 = (lba*13 + j)
 * & 0xff); the same for CD blocks with "KVMPYBLK" and (lba*7 + j) & 0xff.  Checksums printed as
 * "sum=0x%08x" are FNV-1a over the bytes read.  Scratch writes go to LBAs 1024-1031, 1100-1231
 * and sectors-3 (the image is modified there).
 *
 * cmdline: nocd, noirq. */
#include "fw.h"
#include "pcidev.h"

/* beyond pcidev.h: the secondary channel, more of the task file, the commands used here */
#define PIIX_IDETIM_SEC     0x42
#define REG_DATA 0
#define REG_FEAT 1
#define REG_CMD  7
#define ER_ABRT 0x04
#define ER_IDNF 0x10

#define ATA_READ_SECTORS      0x20
#define ATA_READ_SECTORS_EXT  0x24
#define ATA_READ_DMA_EXT      0x25
#define ATA_WRITE_SECTORS     0x30
#define ATA_WRITE_SECTORS_EXT 0x34
#define ATA_WRITE_DMA_EXT     0x35
#define ATA_PACKET            0xA0
#define ATA_IDENTIFY_PACKET   0xA1
#define ATA_READ_MULTIPLE     0xC4
#define ATA_WRITE_MULTIPLE    0xC5
#define ATA_SET_MULTIPLE      0xC6
#define ATA_FLUSH_CACHE       0xE7
#define ATA_FLUSH_CACHE_EXT   0xEA

/* memory used for DMA (physical = virtual, paging off) */
#define PRD_TABLE  0x400000u
#define DMA_BUF    0x410000u            /* read regions 0x410E00.., 0x420000 (64K), 0x43EE00.. */
#define DMA_WBUF   0x450000u            /* the same layout for the write test, +0x40000 */
#define PIO_BUF    0x480000u            /* 132 sectors read by PIO for comparison */
#define MEM_NEEDED_KB (5u * 1024)

#define TIMEOUT    200000               /* status polls: a command here completes in a few */
#define SECTOR     512
#define CD_BLOCK   2048

struct prd { u32 addr; u32 ctl; };

static u16 cmd_base[2] = { 0x1F0, 0x170 };
static u16 ctl_base[2] = { 0x3F6, 0x376 };
static u16 bm_base;
static u8 pci_dev, pci_fn;
static bool patterned, cd_patterned;
static u8 sbuf[4 * CD_BLOCK] __attribute__((aligned(16)));

/* --- small helpers ------------------------------------------------------------------------ */
static u32 fnv1a(const void *p, u32 n)
{
    const u8 *b = p;
    u32 h = 0x811C9DC5u;
    for (u32 i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x01000193u;
    return h;
}

static bool same(const void *a, const void *b, u32 n)     /* n multiple of 4 */
{
    const u32 *x = a, *y = b;
    for (u32 i = 0; i < n / 4; i++)
        if (x[i] != y[i])
            return false;
    return true;
}

static void fill_pattern(u8 *p, u32 n, u32 seed)
{
    for (u32 i = 0; i < n; i++)
        p[i] = (u8)(seed + i * 7 + (i >> 9));
}

/* The disk/CD pattern described at the top: 1 = matches, 0 = no magic, -1 = wrong. */
static int check_block(const u8 *p, u32 size, u64 lba, const char *magic, u32 mul)
{
    if (memcmp(p, magic, 8))
        return 0;
    u64 got;
    memcpy(&got, p + 8, 8);
    if (got != lba)
        return -1;
    u8 base = (u8)(lba * mul);
    for (u32 j = 16; j < size; j++)
        if (p[j] != (u8)(base + j))
            return -1;
    return 1;
}

static void check_sectors(const char *what, const u8 *p, u64 lba, u32 n)
{
    if (!patterned)
        return;
    for (u32 i = 0; i < n; i++)
        if (check_block(p + i * SECTOR, SECTOR, lba + i, "KVMPYSEC", 13) != 1)
            fail("%s: sector %llu does not carry its pattern", what, lba + i);
}

/* --- PCI ------------------------------------------------------------------------------------ */
static void pci_setup(void)
{
    bool found = false;
    for (u8 dev = 0; dev < 32 && !found; dev++)
        for (u8 fn = 0; fn < 8 && !found; fn++)
            if (pci_read32(0, dev, fn, 0) == PIIX3_IDE_ID) {
                pci_dev = dev;
                pci_fn = fn;
                found = true;
            }
    if (!found) {
        printf("FAIL: no PIIX3 IDE (8086:7010) on PCI bus 0\n");
        exit(EXIT_BAD_SETUP);
    }
    u32 class = pci_read32(0, pci_dev, pci_fn, 0x08);
    printf("pci: 8086:7010 at 00:%02x.%u class 0x%06x\n", pci_dev, pci_fn, class >> 8);

    u32 bar = pci_read32(0, pci_dev, pci_fn, PCI_BAR4);
    if (!(bar & 1))
        fail("BAR4 0x%08x is not an I/O BAR", bar);
    if ((bar & ~3u) == 0) {
        pci_write32(0, pci_dev, pci_fn, PCI_BAR4, 0xFFFFFFFFu);
        u32 mask = pci_read32(0, pci_dev, pci_fn, PCI_BAR4) & 0xFFFCu;
        u32 size = (~mask + 1) & 0xFFFF;
        printf("pci: BAR4 unassigned (size %u); programming 0x%x\n", size, BAR4_DEFAULT);
        if (size != 16)
            fail("BAR4 decodes %u ports, expected 16", size);
        pci_write32(0, pci_dev, pci_fn, PCI_BAR4, BAR4_DEFAULT);
        bar = pci_read32(0, pci_dev, pci_fn, PCI_BAR4);
        if ((bar & ~3u) != BAR4_DEFAULT)
            fail("BAR4 reads 0x%08x after programming 0x%x", bar, BAR4_DEFAULT);
    }
    bm_base = bar & 0xFFFC;
    u16 cmd = pci_read16(0, pci_dev, pci_fn, PCI_COMMAND);
    pci_write16(0, pci_dev, pci_fn, PCI_COMMAND, cmd | PCI_CMD_IO | PCI_CMD_MASTER);
    for (u8 reg = PIIX_IDETIM_PRI; reg <= PIIX_IDETIM_SEC; reg += 2) {
        u16 t = pci_read16(0, pci_dev, pci_fn, reg);
        if (!(t & IDETIM_DECODE))
            pci_write16(0, pci_dev, pci_fn, reg, t | IDETIM_DECODE);
    }
    printf("pci: bus master base 0x%x, command 0x%04x\n", bm_base,
           pci_read16(0, pci_dev, pci_fn, PCI_COMMAND));
    puts("PCI OK");
}

/* --- ATA primitives ------------------------------------------------------------------------- */
static u8 altstatus(int ch) { return inb(ctl_base[ch]); }
static u8 status(int ch) { return inb(cmd_base[ch] + REG_STAT); }
static u8 error(int ch) { return inb(cmd_base[ch] + REG_ERR); }

static u8 wait_not_busy(int ch, const char *what)
{
    (void)altstatus(ch);                /* the 400 ns pause after a command */
    for (u32 i = 0; i < TIMEOUT; i++) {
        u8 st = altstatus(ch);
        if (!(st & ST_BSY))
            return st;
    }
    fail("%s: drive stays busy (status 0x%02x)", what, altstatus(ch));
}

static void select_dev(int ch, int dev)
{
    outb(cmd_base[ch] + REG_DEV, 0xA0 | (dev << 4));
    wait_not_busy(ch, "select");
}

static void taskfile(int ch, u64 lba, u32 count, bool ext, u8 feature)
{
    u16 b = cmd_base[ch];
    if (ext) {
        outb(b + REG_DEV, 0xA0 | DEV_LBA);
        outb(b + REG_FEAT, 0);
        outb(b + REG_NSECT, count >> 8);
        outb(b + REG_LBAL, lba >> 24);
        outb(b + REG_LBAM, lba >> 32);
        outb(b + REG_LBAH, lba >> 40);
    } else {
        outb(b + REG_DEV, 0xA0 | DEV_LBA | ((lba >> 24) & 0x0F));
    }
    outb(b + REG_FEAT, feature);
    outb(b + REG_NSECT, count);
    outb(b + REG_LBAL, lba);
    outb(b + REG_LBAM, lba >> 8);
    outb(b + REG_LBAH, lba >> 16);
}

/* A command without data: the final status (the interrupt is acknowledged by reading it). */
static u8 nodata(int ch, u8 opcode)
{
    outb(cmd_base[ch] + REG_CMD, opcode);
    wait_not_busy(ch, "command");
    return status(ch);
}

/* PIO data-in of `sectors` sectors in DRQ blocks of `block` sectors; 32-bit port if wide.
 * Returns 0, or the status with ERR. */
static u8 pio_in(int ch, u8 opcode, void *buf, u32 sectors, u32 block, bool wide)
{
    u8 *p = buf;
    outb(cmd_base[ch] + REG_CMD, opcode);
    while (sectors) {
        u8 st = wait_not_busy(ch, "pio in");
        if (st & ST_ERR)
            return status(ch);
        if (!(st & ST_DRQ))
            fail("pio in: no DRQ (status 0x%02x) with %u sectors left", st, sectors);
        (void)status(ch);               /* acknowledge the block's interrupt */
        u32 n = sectors < block ? sectors : block;
        if (wide)
            insl(cmd_base[ch], p, n * SECTOR / 4);
        else
            insw(cmd_base[ch], p, n * SECTOR / 2);
        p += n * SECTOR;
        sectors -= n;
    }
    u8 st = wait_not_busy(ch, "pio in end");
    if (st & (ST_DRQ | ST_ERR | ST_DF))
        fail("pio in: status 0x%02x after the last block", st);
    return 0;
}

static u8 pio_out(int ch, u8 opcode, const void *buf, u32 sectors, u32 block)
{
    const u8 *p = buf;
    outb(cmd_base[ch] + REG_CMD, opcode);
    while (sectors) {
        u8 st = wait_not_busy(ch, "pio out");
        if (st & ST_ERR)
            return status(ch);
        if (!(st & ST_DRQ))
            fail("pio out: no DRQ (status 0x%02x) with %u sectors left", st, sectors);
        u32 n = sectors < block ? sectors : block;
        outsw(cmd_base[ch], p, n * SECTOR / 2);
        p += n * SECTOR;
        sectors -= n;
        (void)status(ch);
    }
    u8 st = wait_not_busy(ch, "pio out end");
    st = status(ch);
    if (st & (ST_DRQ | ST_ERR | ST_DF))
        fail("pio out: status 0x%02x after the last block", st);
    return 0;
}

static void read_pio(const char *what, u64 lba, u32 n, void *buf, bool ext, bool wide)
{
    taskfile(0, lba, n, ext, 0);
    u8 st = pio_in(0, ext ? ATA_READ_SECTORS_EXT : ATA_READ_SECTORS, buf, n, 1, wide);
    if (st)
        fail("%s: READ SECTORS%s at %llu failed: status 0x%02x error 0x%02x", what, ext ? " EXT" : "",
             lba, st, error(0));
}

static void write_pio(const char *what, u64 lba, u32 n, const void *buf, bool ext)
{
    taskfile(0, lba, n, ext, 0);
    u8 st = pio_out(0, ext ? ATA_WRITE_SECTORS_EXT : ATA_WRITE_SECTORS, buf, n, 1);
    if (st)
        fail("%s: WRITE SECTORS%s at %llu failed: status 0x%02x error 0x%02x", what, ext ? " EXT" : "",
             lba, st, error(0));
}

/* --- bus master ----------------------------------------------------------------------------- */
static void bm_prepare(int ch, const struct prd *prds, u32 n, bool to_memory)
{
    struct prd *t = (struct prd *)(PRD_TABLE + ch * 0x100);
    for (u32 i = 0; i < n; i++) {
        t[i].addr = prds[i].addr;
        t[i].ctl = (prds[i].ctl & 0xFFFF) | (i == n - 1 ? PRD_EOT : 0);
    }
    u16 bm = bm_base + ch * 8;
    outl(bm + BM_PRD, (u32)t);
    u8 cmd = inb(bm + BM_CMD) & ~(BM_START | BM_TO_MEM);
    outb(bm + BM_CMD, cmd | (to_memory ? BM_TO_MEM : 0));
    outb(bm + BM_STATUS, BM_ERROR | BM_INTR);
}

/* START, poll INTERRUPT (as SeaBIOS does), clear START; returns the bus-master status. */
static u8 bm_run(int ch)
{
    u16 bm = bm_base + ch * 8;
    u8 cmd = inb(bm + BM_CMD);
    outb(bm + BM_CMD, cmd | BM_START);
    u8 st = 0;
    u32 i;
    for (i = 0; i < TIMEOUT; i++) {
        st = inb(bm + BM_STATUS);
        if (st & BM_INTR)
            break;
    }
    outb(bm + BM_CMD, cmd & ~BM_START);
    outb(bm + BM_STATUS, BM_ERROR | BM_INTR);
    if (i == TIMEOUT)
        fail("bus master: no INTERRUPT (status 0x%02x)", st);
    return st;
}

/* READ/WRITE DMA (EXT): returns (bus-master status << 8) | ATA status. */
static u16 dma_cmd(u8 opcode, u64 lba, u32 count, bool ext, const struct prd *prds, u32 n, bool to_memory)
{
    bm_prepare(0, prds, n, to_memory);
    taskfile(0, lba, count, ext, 0);
    outb(cmd_base[0] + REG_CMD, opcode);
    u8 bms = bm_run(0);
    wait_not_busy(0, "dma");
    return (u16)(bms << 8) | status(0);
}

static void expect_dma_ok(const char *what, u16 r)
{
    u8 bms = r >> 8, st = r & 0xFF;
    if ((bms & (BM_INTR | BM_ACTIVE | BM_ERROR)) != BM_INTR || (st & (ST_BSY | ST_DRQ | ST_ERR | ST_DF)))
        fail("%s: bus-master status 0x%02x, ATA status 0x%02x error 0x%02x", what, bms, st, error(0));
}

/* --- IRQ 14 through the 8259 ---------------------------------------------------------------- */
static u8 slave_irr(void)
{
    outb(0xA0, 0x0A);                   /* OCW3: read IRR */
    return inb(0xA0);
}

/* --- the steps ------------------------------------------------------------------------------ */
static u64 disk_sectors;

static void step_reset(void)
{
    outb(ctl_base[0], DC_NIEN | DC_SRST);
    for (volatile int i = 0; i < 100; i++)
        ;
    outb(ctl_base[0], DC_NIEN);
    wait_not_busy(0, "reset");
    select_dev(0, 0);                   /* QEMU does not select device 0 on SRST; be explicit */
    u8 st = altstatus(0);
    u8 sc = inb(cmd_base[0] + REG_NSECT), sn = inb(cmd_base[0] + REG_LBAL);
    u8 cl = inb(cmd_base[0] + REG_LBAM), chh = inb(cmd_base[0] + REG_LBAH);
    printf("reset: status 0x%02x error 0x%02x signature %02x %02x %02x %02x\n", st, error(0), sc, sn, cl, chh);
    if (sc != 1 || sn != 1 || cl != 0 || chh != 0)
        fail("primary master does not have the ATA signature");
    if (!(st & ST_DRDY))
        fail("ATA disk not ready after reset");
    outb(ctl_base[0], 0);               /* interrupts on (IF stays clear in the CPU) */
    puts("RESET OK");
}

static void step_identify(bool check_irq)
{
    u16 id[256];
    if (check_irq) {
        pic_init(PIC_VECTOR_BASE, PIC_VECTOR_BASE + 8);     /* all masked, edges forgotten */
        if (slave_irr() & 0x40)
            fail("IRQ 14 already pending after the 8259 was initialised");
    }
    outb(cmd_base[0] + REG_CMD, ATA_IDENTIFY);
    u8 st = wait_not_busy(0, "identify");
    if (!(st & ST_DRQ) || (st & ST_ERR))
        fail("IDENTIFY: status 0x%02x error 0x%02x", st, error(0));
    if (check_irq) {
        u8 irr = slave_irr();
        printf("identify: 8259 slave IRR 0x%02x\n", irr);
        if (!(irr & 0x40))
            fail("IDENTIFY raised no IRQ 14");
    }
    (void)status(0);
    insw(cmd_base[0], id, 256);
    st = wait_not_busy(0, "identify end");
    if (st & (ST_DRQ | ST_ERR))
        fail("IDENTIFY: status 0x%02x after the data", st);

    char model[41], serial[21];
    for (int i = 0; i < 20; i++) {
        model[2 * i] = id[27 + i] >> 8;
        model[2 * i + 1] = id[27 + i] & 0xFF;
    }
    for (int i = 0; i < 10; i++) {
        serial[2 * i] = id[10 + i] >> 8;
        serial[2 * i + 1] = id[10 + i] & 0xFF;
    }
    model[40] = serial[20] = 0;
    for (int i = 39; i >= 0 && model[i] == ' '; i--)
        model[i] = 0;
    for (int i = 19; i >= 0 && serial[i] == ' '; i--)
        serial[i] = 0;
    u32 lba28 = id[60] | ((u32)id[61] << 16);
    u64 lba48 = id[100] | ((u64)id[101] << 16) | ((u64)id[102] << 32) | ((u64)id[103] << 48);
    u8 sum = 0;
    for (int i = 0; i < 256; i++)
        sum += (id[i] & 0xFF) + (id[i] >> 8);
    printf("identify: model '%s' serial '%s' lba28 %u lba48 %llu (%llu MiB)\n", model, serial, lba28,
           lba48, lba48 >> 11);
    printf("identify: caps 0x%04x cmdsets 0x%04x/0x%04x enabled 0x%04x mwdma 0x%04x udma 0x%04x "
           "checksum %s\n", id[49], id[82], id[83], id[86], id[63], id[88],
           (id[255] & 0xFF) != 0xA5 ? "absent" : sum == 0 ? "ok" : "BAD");
    if (!model[0])
        fail("IDENTIFY: empty model string");
    for (int i = 0; model[i]; i++)
        if (!isprint(model[i]))
            fail("IDENTIFY: model string has byte 0x%02x", (u8)model[i]);
    if ((id[49] & 0x0300) != 0x0300)
        fail("IDENTIFY: LBA and DMA not both supported (word 49 = 0x%04x)", id[49]);
    if (!(id[83] & (1 << 10)) || !(id[86] & (1 << 10)))
        fail("IDENTIFY: 48-bit addressing not supported/enabled");
    if (!(id[83] & (1 << 12)) || !(id[83] & (1 << 13)))
        fail("IDENTIFY: FLUSH CACHE (EXT) not supported");
    if (!(id[63] & 0x07))
        fail("IDENTIFY: no multiword DMA mode");
    if (!lba48 || lba28 != (lba48 > 0x0FFFFFFF ? 0x0FFFFFFF : lba48))
        fail("IDENTIFY: LBA28 count %u does not match LBA48 count %llu", lba28, lba48);
    if ((id[255] & 0xFF) == 0xA5 && sum != 0)
        fail("IDENTIFY: integrity word checksum is wrong");
    if (lba48 < 4096) {
        printf("FAIL: the disk has %llu sectors; this test needs at least 4096\n", lba48);
        exit(EXIT_BAD_SETUP);
    }
    disk_sectors = lba48;
    puts("IDENTIFY OK");
}

static void step_pio(void)
{
    u8 *buf = (u8 *)PIO_BUF;
    read_pio("pio", 0, 1, buf, false, false);
    patterned = !memcmp(buf, "KVMPYSEC", 8);
    printf("pio: disk %s the test pattern\n", patterned ? "carries" : "does not carry");

    read_pio("pio", 1, 8, buf, false, false);
    check_sectors("pio read", buf, 1, 8);
    printf("pio: READ SECTORS lba 1 n 8 sum=0x%08x\n", fnv1a(buf, 8 * SECTOR));
    read_pio("pio32", 1, 8, buf + 8 * SECTOR, false, true);
    if (!same(buf, buf + 8 * SECTOR, 8 * SECTOR))
        fail("32-bit PIO read differs from 16-bit PIO read");

    u8 *w = buf + 16 * SECTOR;
    fill_pattern(w, 8 * SECTOR, 0x31);
    write_pio("pio write", 1024, 8, w, false);
    memset(buf, 0, 8 * SECTOR);
    read_pio("pio read-back", 1024, 8, buf, false, false);
    if (!same(buf, w, 8 * SECTOR))
        fail("PIO read-back of lba 1024 differs from what was written");
    printf("pio: WRITE SECTORS lba 1024 n 8 sum=0x%08x, read back equal\n", fnv1a(w, 8 * SECTOR));

    /* READ/WRITE MULTIPLE with 4-sector DRQ blocks */
    taskfile(0, 0, 4, false, 0);
    u8 st = nodata(0, ATA_SET_MULTIPLE);
    if (st & ST_ERR)
        fail("SET MULTIPLE MODE 4: status 0x%02x error 0x%02x", st, error(0));
    fill_pattern(w, 8 * SECTOR, 0x77);
    taskfile(0, 1024, 8, false, 0);
    if ((st = pio_out(0, ATA_WRITE_MULTIPLE, w, 8, 4)))
        fail("WRITE MULTIPLE: status 0x%02x error 0x%02x", st, error(0));
    memset(buf, 0, 8 * SECTOR);
    taskfile(0, 1024, 8, false, 0);
    if ((st = pio_in(0, ATA_READ_MULTIPLE, buf, 8, 4, false)))
        fail("READ MULTIPLE: status 0x%02x error 0x%02x", st, error(0));
    if (!same(buf, w, 8 * SECTOR))
        fail("READ MULTIPLE returned other data than WRITE MULTIPLE wrote");
    printf("pio: READ/WRITE MULTIPLE (4 sectors per block) sum=0x%08x\n", fnv1a(buf, 8 * SECTOR));
    puts("PIO OK");
}

static void step_lba48(void)
{
    u8 *buf = (u8 *)PIO_BUF;
    u64 last = disk_sectors - 1;
    printf("lba48: last sector %llu (%s 2^28)\n", last, last >= (1u << 28) ? "above" : "below");
    read_pio("lba48", last - 1, 2, buf, true, false);
    check_sectors("lba48 read", buf, last - 1, 2);
    printf("lba48: READ SECTORS EXT lba %llu n 2 sum=0x%08x\n", last - 1, fnv1a(buf, 2 * SECTOR));

    struct prd one = { DMA_BUF, 2 * SECTOR };
    memset((void *)DMA_BUF, 0xEE, 2 * SECTOR);
    expect_dma_ok("READ DMA EXT at the end", dma_cmd(ATA_READ_DMA_EXT, last - 1, 2, true, &one, 1, true));
    if (!same((void *)DMA_BUF, buf, 2 * SECTOR))
        fail("READ DMA EXT of the last sectors differs from PIO");

    u8 *w = buf + 4 * SECTOR;
    fill_pattern(w, SECTOR, 0x48);
    write_pio("lba48 write", last - 2, 1, w, true);
    read_pio("lba48 read-back", last - 2, 1, buf, true, false);
    if (!same(buf, w, SECTOR))
        fail("WRITE/READ SECTORS EXT at %llu do not round-trip", last - 2);
    printf("lba48: WRITE SECTORS EXT lba %llu read back equal\n", last - 2);
    puts("LBA48 OK");
}

/* PRD regions for the DMA tests: page-crossing, a 64 KiB one (count 0), page-crossing again;
 * none crosses a 64 KiB boundary, as the PIIX requires. */
static const struct prd dma_layout[3] = {
    { 0x10E00, 0x0400 },
    { 0x20000, 0x0000 },
    { 0x3EE00, 0x0400 },
};
#define DMA_SECTORS ((0x400 + 0x10000 + 0x400) / SECTOR)    /* 132 */

static u32 region_len(const struct prd *p) { return (p->ctl & 0xFFFF) ? (p->ctl & 0xFFFF) : 0x10000; }

static void step_dma(void)
{
    struct prd prds[3];
    u8 *pio = (u8 *)PIO_BUF;

    /* read: 132 sectors from lba 16 */
    for (int i = 0; i < 3; i++) {
        prds[i].addr = DMA_BUF - 0x10000 + dma_layout[i].addr;
        prds[i].ctl = dma_layout[i].ctl;
        memset((void *)prds[i].addr, 0xA5, region_len(&prds[i]));
    }
    printf("dma: PRD %08x+%x %08x+%x %08x+%x\n", prds[0].addr, region_len(&prds[0]), prds[1].addr,
           region_len(&prds[1]), prds[2].addr, region_len(&prds[2]));
    expect_dma_ok("READ DMA EXT", dma_cmd(ATA_READ_DMA_EXT, 16, DMA_SECTORS, true, prds, 3, true));
    read_pio("dma compare", 16, DMA_SECTORS, pio, false, false);
    u32 off = 0;
    for (int i = 0; i < 3; i++) {
        if (!same((void *)prds[i].addr, pio + off, region_len(&prds[i])))
            fail("READ DMA EXT region %d differs from PIO", i);
        off += region_len(&prds[i]);
    }
    check_sectors("dma read", pio, 16, DMA_SECTORS);
    printf("dma: READ DMA EXT lba 16 n %u sum=0x%08x\n", DMA_SECTORS, fnv1a(pio, DMA_SECTORS * SECTOR));

    /* the same with the 28-bit command */
    memset((void *)prds[1].addr, 0, 0x10000);
    expect_dma_ok("READ DMA", dma_cmd(ATA_READ_DMA, 16, DMA_SECTORS, false, prds, 3, true));
    if (!same((void *)prds[1].addr, pio + 0x400, 0x10000))
        fail("READ DMA 64 KiB region differs from PIO");

    /* write: 132 sectors to lba 1100, then read back by PIO */
    off = 0;
    for (int i = 0; i < 3; i++) {
        prds[i].addr = DMA_WBUF - 0x10000 + dma_layout[i].addr;
        fill_pattern((u8 *)prds[i].addr, region_len(&prds[i]), 0x90 + i);
    }
    expect_dma_ok("WRITE DMA EXT", dma_cmd(ATA_WRITE_DMA_EXT, 1100, DMA_SECTORS, true, prds, 3, false));
    read_pio("dma write read-back", 1100, DMA_SECTORS, pio, false, false);
    for (int i = 0; i < 3; i++) {
        if (!same((void *)prds[i].addr, pio + off, region_len(&prds[i])))
            fail("WRITE DMA EXT region %d did not reach the disk", i);
        off += region_len(&prds[i]);
    }
    printf("dma: WRITE DMA EXT lba 1100 n %u sum=0x%08x, read back equal\n", DMA_SECTORS,
           fnv1a(pio, DMA_SECTORS * SECTOR));
    puts("DMA OK");
}

static void step_errors(void)
{
    u8 st;
    taskfile(0, disk_sectors, 1, true, 0);
    st = pio_in(0, ATA_READ_SECTORS_EXT, (void *)PIO_BUF, 1, 1, false);
    printf("errors: READ SECTORS EXT at %llu: status 0x%02x error 0x%02x\n", disk_sectors, st, error(0));
    if (!(st & ST_ERR) || !(error(0) & (ER_IDNF | ER_ABRT)))
        fail("a read beyond the end did not fail with IDNF/ABRT");

    struct prd one = { DMA_BUF, 2 * SECTOR };     /* room for the whole request */
    u16 r = dma_cmd(ATA_READ_DMA_EXT, disk_sectors - 1, 2, true, &one, 1, true);
    printf("errors: READ DMA EXT across the end: bus master 0x%02x status 0x%02x error 0x%02x\n",
           r >> 8, r & 0xFF, error(0));
    if (!(r & ST_ERR) || !(error(0) & (ER_IDNF | ER_ABRT)))
        fail("a DMA read across the end did not fail with IDNF/ABRT");

    st = nodata(0, 0x8F);               /* no such command */
    printf("errors: command 0x8f: status 0x%02x error 0x%02x\n", st, error(0));
    if (!(st & ST_ERR) || !(error(0) & ER_ABRT))
        fail("an unknown command was not aborted");

    read_pio("after errors", 1, 1, (void *)PIO_BUF, false, false);    /* the drive still works */
    puts("ERRORS OK");
}

static void step_flush(void)
{
    u8 a = nodata(0, ATA_FLUSH_CACHE);
    u8 b = nodata(0, ATA_FLUSH_CACHE_EXT);
    printf("flush: FLUSH CACHE status 0x%02x, FLUSH CACHE EXT status 0x%02x\n", a, b);
    if ((a | b) & (ST_ERR | ST_DF | ST_DRQ) || !(a & b & ST_DRDY))
        fail("FLUSH CACHE failed");
    puts("FLUSH OK");
}

/* --- ATAPI ---------------------------------------------------------------------------------- */
/* One PACKET command by PIO (or DMA into prds); returns the final status, *got = bytes read. */
static u8 packet(const u8 *cdb, void *buf, u32 buflen, u16 limit, const struct prd *prds, u32 nprd, u32 *got)
{
    const int ch = 1;
    u16 b = cmd_base[ch];
    u8 *p = buf;
    u32 total = 0;
    if (prds)
        bm_prepare(ch, prds, nprd, true);
    select_dev(ch, 0);
    outb(b + REG_FEAT, prds ? 1 : 0);
    outb(b + REG_LBAM, limit & 0xFF);
    outb(b + REG_LBAH, limit >> 8);
    outb(b + REG_CMD, ATA_PACKET);
    u8 st = wait_not_busy(ch, "packet");
    if (st & ST_ERR)
        return status(ch);
    if (!(st & ST_DRQ) || (inb(b + REG_NSECT) & 3) != 1)
        fail("PACKET: not ready for the command (status 0x%02x reason 0x%02x)", st, inb(b + REG_NSECT));
    outsw(b, cdb, 6);
    if (prds) {
        u8 bms = bm_run(ch);
        st = wait_not_busy(ch, "packet dma");
        st = status(ch);
        if (!(st & ST_ERR) && (bms & (BM_ERROR | BM_ACTIVE)))
            fail("ATAPI DMA: bus-master status 0x%02x", bms);
        for (u32 i = 0; i < nprd; i++)
            total += region_len(&prds[i]);
        if (got)
            *got = st & ST_ERR ? 0 : total;
        return st;
    }
    for (;;) {
        st = wait_not_busy(ch, "packet data");
        u8 s2 = status(ch);
        if (st & ST_ERR)
            return s2;
        if (!(st & ST_DRQ))
            break;
        u32 n = inb(b + REG_LBAM) | (inb(b + REG_LBAH) << 8);
        if ((inb(b + REG_NSECT) & 3) != 2)
            fail("ATAPI data phase with interrupt reason 0x%02x", inb(b + REG_NSECT));
        if (!n || total + n > buflen)
            fail("ATAPI: %u more bytes do not fit (%u of %u)", n, total, buflen);
        insw(b, p + total, n / 2);
        if (n & 1) {
            u16 last = inw(b);
            p[total + n - 1] = last & 0xFF;
        }
        total += n;
    }
    if ((inb(b + REG_NSECT) & 3) != 3)
        fail("ATAPI completion with interrupt reason 0x%02x", inb(b + REG_NSECT));
    if (got)
        *got = total;
    return st;
}

static void request_sense(u8 *key, u8 *asc, u8 *ascq)
{
    u8 cdb[12] = { 0x03, 0, 0, 0, 18 };
    u8 sense[18];
    u32 n;
    memset(sense, 0, sizeof(sense));
    u8 st = packet(cdb, sense, sizeof(sense), 18, NULL, 0, &n);
    if (st & ST_ERR || n < 14 || (sense[0] & 0x7F) != 0x70)
        fail("REQUEST SENSE: status 0x%02x, %u bytes, response code 0x%02x", st, n, sense[0]);
    *key = sense[2] & 0x0F;
    *asc = sense[12];
    *ascq = sense[13];
}

static void check_cd_block(const char *what, const u8 *p, u32 lba)
{
    if (!cd_patterned)
        return;
    if (check_block(p, CD_BLOCK, lba, "KVMPYBLK", 7) != 1)
        fail("%s: CD block %u does not carry its pattern", what, lba);
}

static void step_atapi(void)
{
    const int ch = 1;
    u16 b = cmd_base[ch];
    outb(ctl_base[ch], DC_NIEN | DC_SRST);
    for (volatile int i = 0; i < 100; i++)
        ;
    outb(ctl_base[ch], 0);
    wait_not_busy(ch, "atapi reset");
    select_dev(ch, 0);
    u8 cl = inb(b + REG_LBAM), chh = inb(b + REG_LBAH);
    printf("atapi: signature %02x %02x\n", cl, chh);
    if (cl != 0x14 || chh != 0xEB)
        fail("secondary master does not have the ATAPI signature");

    u16 id[256];
    outb(b + REG_CMD, ATA_IDENTIFY_PACKET);
    u8 st = wait_not_busy(ch, "identify packet");
    if (!(st & ST_DRQ) || (st & ST_ERR))
        fail("IDENTIFY PACKET DEVICE: status 0x%02x", st);
    (void)status(ch);
    insw(b, id, 256);
    wait_not_busy(ch, "identify packet end");
    char model[41];
    for (int i = 0; i < 20; i++) {
        model[2 * i] = id[27 + i] >> 8;
        model[2 * i + 1] = id[27 + i] & 0xFF;
    }
    model[40] = 0;
    for (int i = 39; i >= 0 && model[i] == ' '; i--)
        model[i] = 0;
    printf("atapi: identify word0 0x%04x model '%s' dma 0x%04x\n", id[0], model, id[49]);
    if ((id[0] >> 14) != 2 || ((id[0] >> 8) & 0x1F) != 5)
        fail("IDENTIFY PACKET: word 0 0x%04x is not an ATAPI CD-ROM", id[0]);

    /* TEST UNIT READY until the drive is past its power-on/media-change conditions */
    u8 cdb[12], key = 0, asc = 0, ascq = 0;
    u32 n;
    int tries;
    for (tries = 0; tries < 5; tries++) {
        memset(cdb, 0, 12);
        st = packet(cdb, NULL, 0, 0, NULL, 0, &n);
        if (!(st & ST_ERR))
            break;
        request_sense(&key, &asc, &ascq);
        printf("atapi: TEST UNIT READY: sense %x/%02x/%02x\n", key, asc, ascq);
    }
    if (tries == 5)
        fail("the CD-ROM never became ready");
    puts("atapi: TEST UNIT READY ok");

    u8 inq[36];
    memset(cdb, 0, 12);
    cdb[0] = 0x12;
    cdb[4] = sizeof(inq);
    st = packet(cdb, inq, sizeof(inq), sizeof(inq), NULL, 0, &n);
    if (st & ST_ERR || n != sizeof(inq) || (inq[0] & 0x1F) != 5)
        fail("INQUIRY: status 0x%02x, %u bytes, type 0x%02x", st, n, inq[0]);
    char vendor[9], product[17];
    memcpy(vendor, inq + 8, 8);
    memcpy(product, inq + 16, 16);
    vendor[8] = product[16] = 0;
    printf("atapi: INQUIRY '%s' '%s'\n", vendor, product);

    u8 cap[8];
    memset(cdb, 0, 12);
    cdb[0] = 0x25;
    st = packet(cdb, cap, sizeof(cap), sizeof(cap), NULL, 0, &n);
    if (st & ST_ERR || n != 8)
        fail("READ CAPACITY: status 0x%02x, %u bytes", st, n);
    u32 last, bsize;
    memcpy(&last, cap, 4);
    memcpy(&bsize, cap + 4, 4);
    last = bswap32(last);
    bsize = bswap32(bsize);
    printf("atapi: READ CAPACITY last lba %u block size %u (%u KiB)\n", last, bsize, (last + 1) * 2);
    if (bsize != CD_BLOCK || last < 20)
        fail("READ CAPACITY: unexpected geometry");

    /* READ(10): block 16 (the ISO 9660 volume descriptor on a real ISO) by PIO */
    u32 lba = 16;
    memset(cdb, 0, 12);
    cdb[0] = 0x28;
    cdb[2] = lba >> 24; cdb[3] = lba >> 16; cdb[4] = lba >> 8; cdb[5] = lba;
    cdb[8] = 2;
    st = packet(cdb, sbuf, sizeof(sbuf), CD_BLOCK, NULL, 0, &n);
    if (st & ST_ERR || n != 2 * CD_BLOCK)
        fail("READ(10) lba %u: status 0x%02x, %u bytes", lba, st, n);
    cd_patterned = !memcmp(sbuf, "KVMPYBLK", 8);
    check_cd_block("READ(10)", sbuf, lba);
    check_cd_block("READ(10)", sbuf + CD_BLOCK, lba + 1);
    printf("atapi: READ(10) lba %u n 2 (PIO, %s) sum=0x%08x\n", lba,
           cd_patterned ? "pattern ok" : "no pattern", fnv1a(sbuf, 2 * CD_BLOCK));

    /* the same two blocks by DMA, into a region crossing a page boundary */
    struct prd cd_prd[2] = { { DMA_BUF + 0x0C00, 0x0800 }, { DMA_BUF + 0x8000, 0x0800 } };
    memset((void *)(DMA_BUF + 0x0C00), 0, 0x800);
    memset((void *)(DMA_BUF + 0x8000), 0, 0x800);
    st = packet(cdb, NULL, 0, CD_BLOCK, cd_prd, 2, &n);
    if (st & ST_ERR)
        fail("READ(10) by DMA: status 0x%02x error 0x%02x", st, error(ch));
    if (!same((void *)(DMA_BUF + 0x0C00), sbuf, 0x800) || !same((void *)(DMA_BUF + 0x8000), sbuf + 0x800, 0x800))
        fail("READ(10) by DMA differs from PIO");
    puts("atapi: READ(10) by DMA equal");

    /* beyond the end: CHECK CONDITION, then REQUEST SENSE says ILLEGAL REQUEST / LBA out of range */
    lba = last + 1;
    cdb[2] = lba >> 24; cdb[3] = lba >> 16; cdb[4] = lba >> 8; cdb[5] = lba;
    st = packet(cdb, sbuf, sizeof(sbuf), CD_BLOCK, NULL, 0, &n);
    u8 err = error(ch);
    request_sense(&key, &asc, &ascq);
    printf("atapi: READ(10) lba %u: status 0x%02x error 0x%02x sense %x/%02x/%02x\n", lba, st, err, key,
           asc, ascq);
    if (!(st & ST_ERR) || key != 5 || asc != 0x21 || (err >> 4) != 5)
        fail("READ(10) beyond the end did not report ILLEGAL REQUEST / LBA OUT OF RANGE");
    puts("ATAPI OK");
}

int main(struct mb_info *info)
{
    (void)info;
    if (mbi && (mbi->flags & MBI_FLAG_MEM) && mbi->mem_upper + 1024 < MEM_NEEDED_KB) {
        printf("FAIL: %u KiB of RAM, this test needs %u KiB\n", mbi->mem_upper + 1024, MEM_NEEDED_KB);
        return EXIT_BAD_SETUP;
    }
    pci_setup();
    step_reset();
    step_identify(!cmdline_has("noirq"));
    step_pio();
    step_lba48();
    step_dma();
    step_errors();
    step_flush();
    if (!cmdline_has("nocd"))
        step_atapi();
    else
        puts("atapi: skipped (nocd)");
    puts("IDE OK");
    return EXIT_PASS;
}
