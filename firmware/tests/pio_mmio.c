/* pio_mmio: port and memory-mapped I/O of every size against the test harness's probe device.
 *
 * The probe sits at ports 0x700-0x70F and MMIO 0xD0000000-0xD0000FFF; it records every write
 * and answers a read of `size` bytes at `offset` (relative to its base) with the bytes
 * (offset + i + 0x40) & 0xFF, i = 0..size-1, little-endian.  Paging is off, so the MMIO
 * window is used at its physical address.
 *
 * Writes (in this order; the harness may check them):
 *   PIO:  outb 0x700=0x11, outw 0x702=0x2233, outl 0x704=0x44556677, outb 0x70F=0x88,
 *         outw 0x70A=0x99AA, outl 0x70C=0xBBCCDDEE
 *   MMIO: writeb +0x000=0x12, writew +0x002=0x3456, writel +0x004=0x789ABCDE,
 *         writeb +0xFFF=0xF1, writew +0x800=0xF2F3, writel +0xFFC=0xF4F5F6F7
 *   string: rep outsb of bytes 0..63 to 0x700, rep outsw of words 0x1000..0x100F to 0x702
 * Reads are checked against the formula; string reads: rep insb x32 from 0x704 (each 0x44),
 * rep insw x32 from 0x702 (each 0x4342).  An unowned port, 0x7F0, must read all-ones.
 *
 * Success: "PIO OK", "MMIO OK", "STRING OK", "UNOWNED OK", then "PIO_MMIO OK", exit 0. */
#include "fw.h"

#define PIO_BASE  0x700
#define MMIO_BASE 0xD0000000u
#define UNOWNED   0x7F0

static u32 expect(u32 offset, u32 size)
{
    u32 v = 0;
    for (u32 i = 0; i < size; i++)
        v |= ((offset + i + 0x40) & 0xFF) << (8 * i);
    return v;
}

static u32 errors;

static void check(const char *what, u32 offset, u32 size, u32 got)
{
    u32 want = expect(offset, size);
    bool ok = got == want;
    printf("  read%u %s+0x%03x = 0x%0*x %s\n", size * 8, what, offset, (int)size * 2, got,
           ok ? "ok" : "MISMATCH");
    if (!ok) {
        printf("    expected 0x%0*x\n", (int)size * 2, want);
        errors++;
    }
}

static void pio_part(void)
{
    puts("pio: writes");
    static const struct { u16 off; u8 size; u32 val; } w[] = {
        { 0x0, 1, 0x11 }, { 0x2, 2, 0x2233 }, { 0x4, 4, 0x44556677 },
        { 0xF, 1, 0x88 }, { 0xA, 2, 0x99AA }, { 0xC, 4, 0xBBCCDDEE },
    };
    for (u32 i = 0; i < ARRAY_SIZE(w); i++) {
        u16 port = PIO_BASE + w[i].off;
        printf("  out%c 0x%x <- 0x%0*x\n", "?bw?l"[w[i].size], port, w[i].size * 2, w[i].val);
        if (w[i].size == 1)
            outb(port, w[i].val);
        else if (w[i].size == 2)
            outw(port, w[i].val);
        else
            outl(port, w[i].val);
    }
    puts("pio: reads");
    u32 e0 = errors;
    check("port 0x700", 0x0, 1, inb(PIO_BASE + 0x0));
    check("port 0x700", 0x5, 1, inb(PIO_BASE + 0x5));
    check("port 0x700", 0xF, 1, inb(PIO_BASE + 0xF));
    check("port 0x700", 0x2, 2, inw(PIO_BASE + 0x2));
    check("port 0x700", 0xE, 2, inw(PIO_BASE + 0xE));
    check("port 0x700", 0x0, 4, inl(PIO_BASE + 0x0));
    check("port 0x700", 0x4, 4, inl(PIO_BASE + 0x4));
    check("port 0x700", 0xC, 4, inl(PIO_BASE + 0xC));
    if (errors != e0)
        fail("PIO reads do not match the probe's formula");
    puts("PIO OK");
}

static void mmio_part(void)
{
    puts("mmio: writes");
    static const struct { u16 off; u8 size; u32 val; } w[] = {
        { 0x000, 1, 0x12 }, { 0x002, 2, 0x3456 }, { 0x004, 4, 0x789ABCDE },
        { 0xFFF, 1, 0xF1 }, { 0x800, 2, 0xF2F3 }, { 0xFFC, 4, 0xF4F5F6F7 },
    };
    for (u32 i = 0; i < ARRAY_SIZE(w); i++) {
        u32 addr = MMIO_BASE + w[i].off;
        printf("  write%u 0x%08x <- 0x%0*x\n", w[i].size * 8, addr, w[i].size * 2, w[i].val);
        if (w[i].size == 1)
            writeb(addr, w[i].val);
        else if (w[i].size == 2)
            writew(addr, w[i].val);
        else
            writel(addr, w[i].val);
    }
    puts("mmio: reads");
    u32 e0 = errors;
    check("0xd0000000", 0x000, 1, readb(MMIO_BASE + 0x000));
    check("0xd0000000", 0x001, 1, readb(MMIO_BASE + 0x001));
    check("0xd0000000", 0xFFF, 1, readb(MMIO_BASE + 0xFFF));
    check("0xd0000000", 0x010, 2, readw(MMIO_BASE + 0x010));
    check("0xd0000000", 0x7FE, 2, readw(MMIO_BASE + 0x7FE));
    check("0xd0000000", 0x000, 4, readl(MMIO_BASE + 0x000));
    check("0xd0000000", 0x100, 4, readl(MMIO_BASE + 0x100));
    check("0xd0000000", 0xFFC, 4, readl(MMIO_BASE + 0xFFC));
    if (errors != e0)
        fail("MMIO reads do not match the probe's formula");
    puts("MMIO OK");
}

static void string_part(void)
{
    static u8 bytes[64];
    static u16 words[32];
    for (u32 i = 0; i < 64; i++)
        bytes[i] = i;
    for (u32 i = 0; i < 16; i++)
        words[i] = 0x1000 + i;
    puts("string: rep outsb x64 (0..63) -> 0x700");
    outsb(PIO_BASE + 0, bytes, 64);
    puts("string: rep outsw x16 (0x1000..0x100f) -> 0x702");
    outsw(PIO_BASE + 2, words, 16);

    memset(bytes, 0, sizeof(bytes));
    memset(words, 0, sizeof(words));
    puts("string: rep insb x32 <- 0x704");
    insb(PIO_BASE + 4, bytes, 32);
    puts("string: rep insw x32 <- 0x702");
    insw(PIO_BASE + 2, words, 32);
    u32 bad = 0;
    for (u32 i = 0; i < 32; i++) {
        if (bytes[i] != 0x44) {
            if (bad++ < 4)
                printf("  insb[%u] = 0x%02x, expected 0x44\n", i, bytes[i]);
        }
        if (words[i] != 0x4342) {
            if (bad++ < 4)
                printf("  insw[%u] = 0x%04x, expected 0x4342\n", i, words[i]);
        }
    }
    for (u32 i = 32; i < 64; i++)
        if (bytes[i] != 0) {
            printf("  rep insb wrote past its count (byte %u = 0x%02x)\n", i, bytes[i]);
            bad++;
            break;
        }
    if (bad)
        fail("string I/O: %u wrong items", bad);
    puts("STRING OK");
}

static void unowned_part(void)
{
    u8 b = inb(UNOWNED);
    u16 w = inw(UNOWNED);
    u32 l = inl(UNOWNED);
    printf("unowned port 0x%x: inb 0x%02x inw 0x%04x inl 0x%08x\n", UNOWNED, b, w, l);
    if (b != 0xFF || w != 0xFFFF || l != 0xFFFFFFFF)
        fail("an unowned port must read all-ones");
    outb(UNOWNED, 0x5A);            /* writes nobody owns are dropped */
    puts("UNOWNED OK");
}

int main(struct mb_info *info)
{
    (void)info;
    pio_part();
    mmio_part();
    string_part();
    unowned_part();
    puts("PIO_MMIO OK");
    return EXIT_PASS;
}
