/* fwcfg: QEMU's firmware configuration interface, through PIO and through DMA.
 *
 * Reads the signature and the ID (which must have the DMA bit), the RAM size and CPU count,
 * walks the file directory, reads `etc/kvmpy-test` (when present) through PIO and DMA and
 * compares length and byte sum, and checks that a DMA to an address outside RAM comes back
 * with the error bit.
 *
 * Success: "FWCFG OK", exit 0.  For the test file it prints
 *   "fwcfg: etc/kvmpy-test PIO len=<n> sum=0x<8 hex>" and the same line with DMA
 * (sum = the 32-bit sum of the file's bytes). */
#include "fw.h"

#define TEST_FILE "etc/kvmpy-test"
#define BAD_DMA_ADDR 0xF000000000ull    /* 960 GiB: far above any test machine's RAM */

static u8 buf[4096] __attribute__((aligned(16)));

static u32 sum_bytes(const u8 *p, u32 n, u32 sum)
{
    for (u32 i = 0; i < n; i++)
        sum += p[i];
    return sum;
}

static u32 read_pio(const struct fwcfg_file *f, u32 *len)
{
    u32 sum = 0, done = 0;
    fwcfg_select(f->select);
    while (done < f->size) {
        u32 n = f->size - done < sizeof(buf) ? f->size - done : sizeof(buf);
        fwcfg_read(buf, n);             /* rep insb: one string-I/O instruction per chunk */
        sum = sum_bytes(buf, n, sum);
        done += n;
    }
    *len = done;
    return sum;
}

static u32 read_dma(const struct fwcfg_file *f, u32 *len)
{
    u32 sum = 0, done = 0;
    while (done < f->size) {
        u32 n = f->size - done < sizeof(buf) ? f->size - done : sizeof(buf);
        /* the first request selects the item; the following ones continue where it stopped */
        u32 ctl = FW_CFG_DMA_CTL_READ;
        if (!done)
            ctl |= FW_CFG_DMA_CTL_SELECT | ((u32)f->select << 16);
        memset(buf, 0, n);
        u32 res = fwcfg_dma(ctl, n, (u32)buf);
        if (res != 0)
            fail("DMA read of %s at offset %u: control 0x%08x, expected 0", f->name, done, res);
        sum = sum_bytes(buf, n, sum);
        done += n;
    }
    *len = done;
    return sum;
}

int main(struct mb_info *info)
{
    (void)info;
    char sig[5] = { 0 };
    fwcfg_select(FW_CFG_SIGNATURE);
    fwcfg_read(sig, 4);
    printf("fwcfg: signature '%s'\n", sig);
    if (memcmp(sig, "QEMU", 4))
        fail("fw_cfg signature is not \"QEMU\"");

    u32 id = fwcfg_id();
    printf("fwcfg: id 0x%x (%s%s)\n", id, id & FW_CFG_ID_TRAD ? "traditional" : "",
           id & FW_CFG_ID_DMA ? " dma" : "");
    if (!(id & FW_CFG_ID_DMA))
        fail("fw_cfg ID lacks the DMA bit");

    u64 ram = fwcfg_read_le64(FW_CFG_RAM_SIZE);
    u16 cpus = fwcfg_read_le16(FW_CFG_NB_CPUS);
    printf("fwcfg: RAM %llu MiB (0x%llx bytes), CPUs %u\n", ram >> 20, ram, cpus);
    if (!ram || !cpus)
        fail("RAM size or CPU count is zero");

    u32 nfiles = fwcfg_file_count();
    printf("fwcfg: %u files\n", nfiles);
    struct fwcfg_file f, test = { 0 };
    bool have_test = false;
    for (u32 i = 0; i < nfiles; i++) {
        fwcfg_next_file(&f);
        printf("fwcfg:   0x%04x %8u %s\n", f.select, f.size, f.name);
        if (!strcmp(f.name, TEST_FILE)) {
            test = f;
            have_test = true;
        }
    }

    /* DMA of a known item: the signature */
    memset(buf, 0, 8);
    u32 res = fwcfg_dma(FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ | (FW_CFG_SIGNATURE << 16), 4, (u32)buf);
    printf("fwcfg: DMA read of the signature: control 0x%x, data '%s'\n", res, (char *)buf);
    if (res != 0 || memcmp(buf, "QEMU", 4))
        fail("DMA read of the signature failed");

    if (have_test) {
        u32 plen, dlen;
        u32 psum = read_pio(&test, &plen);
        printf("fwcfg: %s PIO len=%u sum=0x%08x\n", TEST_FILE, plen, psum);
        u32 dsum = read_dma(&test, &dlen);
        printf("fwcfg: %s DMA len=%u sum=0x%08x\n", TEST_FILE, dlen, dsum);
        if (plen != dlen || psum != dsum)
            fail("PIO and DMA reads of %s differ", TEST_FILE);
    } else {
        printf("fwcfg: %s not present, skipping the file comparison\n", TEST_FILE);
    }

    /* a DMA whose destination is not RAM: the device must report the error bit */
    if (ram >= BAD_DMA_ADDR)
        fail("RAM reaches 0x%llx; no address outside RAM to test with", BAD_DMA_ADDR);
    res = fwcfg_dma(FW_CFG_DMA_CTL_SELECT | FW_CFG_DMA_CTL_READ | (FW_CFG_SIGNATURE << 16), 4, BAD_DMA_ADDR);
    printf("fwcfg: DMA to 0x%llx (outside RAM): control 0x%x\n", BAD_DMA_ADDR, res);
    if (!(res & FW_CFG_DMA_CTL_ERROR))
        fail("DMA outside RAM did not set the error bit");

    puts("FWCFG OK");
    return EXIT_PASS;
}
