/* QEMU's fw_cfg: selector 0x510 (16-bit), data 0x511 (8-bit), DMA address 0x514/0x518. */
#include "fw.h"

void fwcfg_select(u16 key)
{
    outw(FW_CFG_PORT_SEL, key);
}

void fwcfg_read(void *buf, u32 len)
{
    insb(FW_CFG_PORT_DATA, buf, len);
}

void fwcfg_skip(u32 len)
{
    u8 tmp[64];
    while (len) {
        u32 n = len < sizeof(tmp) ? len : sizeof(tmp);
        fwcfg_read(tmp, n);
        len -= n;
    }
}

bool fwcfg_present(void)
{
    char sig[4];
    fwcfg_select(FW_CFG_SIGNATURE);
    fwcfg_read(sig, 4);
    return !memcmp(sig, "QEMU", 4);
}

u32 fwcfg_read_le32(u16 key)
{
    u32 v;
    fwcfg_select(key);
    fwcfg_read(&v, 4);
    return v;
}

u16 fwcfg_read_le16(u16 key)
{
    u16 v;
    fwcfg_select(key);
    fwcfg_read(&v, 2);
    return v;
}

u64 fwcfg_read_le64(u16 key)
{
    u64 v;
    fwcfg_select(key);
    fwcfg_read(&v, 8);
    return v;
}

u32 fwcfg_id(void)
{
    return fwcfg_read_le32(FW_CFG_ID);
}

u32 fwcfg_file_count(void)
{
    u32 n;
    fwcfg_select(FW_CFG_FILE_DIR);
    fwcfg_read(&n, 4);
    return bswap32(n);
}

void fwcfg_next_file(struct fwcfg_file *f)
{
    struct {
        u32 size;
        u16 select;
        u16 reserved;
        char name[56];
    } __attribute__((packed)) raw;
    fwcfg_read(&raw, sizeof(raw));
    f->size = bswap32(raw.size);
    f->select = bswap16(raw.select);
    memcpy(f->name, raw.name, 56);
    f->name[56] = '\0';
}

bool fwcfg_find_file(const char *name, struct fwcfg_file *out)
{
    u32 n = fwcfg_file_count();
    for (u32 i = 0; i < n; i++) {
        fwcfg_next_file(out);
        if (!strcmp(out->name, name))
            return true;
    }
    return false;
}

static volatile struct {
    u32 control;
    u32 length;
    u32 address_hi;             /* be64 address, stored as two be32 halves */
    u32 address_lo;
} __attribute__((aligned(16))) dma_desc;

u32 fwcfg_dma(u32 control, u32 length, u64 address)
{
    dma_desc.control = bswap32(control);
    dma_desc.length = bswap32(length);
    dma_desc.address_hi = bswap32((u32)(address >> 32));
    dma_desc.address_lo = bswap32((u32)address);
    barrier();
    /* big-endian 64-bit register: the high half first, the low half's write starts it */
    outl(FW_CFG_PORT_DMA, bswap32(0));
    outl(FW_CFG_PORT_DMA + 4, bswap32((u32)&dma_desc));
    u32 c;
    for (u32 i = 0; i < 100000; i++) {
        c = bswap32(dma_desc.control);
        if (!(c & ~FW_CFG_DMA_CTL_ERROR))
            break;
        cpu_relax();
    }
    return c;
}
