/* ACPI: find the RSDP, walk the XSDT/RSDT, parse the MADT, FADT helpers and the DSDT's _S5. */
#include "fw.h"

struct madt_info madt;

bool acpi_checksum_ok(const void *p, u32 len)
{
    u8 sum = 0;
    for (u32 i = 0; i < len; i++)
        sum += ((const u8 *)p)[i];
    return sum == 0;
}

static struct acpi_rsdp *scan_rsdp(u32 start, u32 len)
{
    for (u32 a = start; a + 20 <= start + len; a += 16) {
        struct acpi_rsdp *r = (struct acpi_rsdp *)a;
        if (!memcmp(r->signature, "RSD PTR ", 8) && acpi_checksum_ok(r, 20))
            return r;
    }
    return NULL;
}

struct acpi_rsdp *acpi_find_rsdp(void)
{
    static struct acpi_rsdp *cached;
    if (cached)
        return cached;
    /* the first KiB of the EBDA (its segment is the word at 0x40E), then 0xE0000-0xFFFFF */
    u32 ebda = (u32)readw(0x40E) << 4;
    if (ebda >= 0x80000 && ebda < 0xA0000)
        cached = scan_rsdp(ebda, 1024);
    if (!cached)
        cached = scan_rsdp(0xE0000, 0x20000);
    return cached;
}

/* The root table: the XSDT when the RSDP has one we can reach (paging off: below 4 GiB). */
static struct acpi_header *root(u32 *entry_size)
{
    struct acpi_rsdp *r = acpi_find_rsdp();
    if (!r)
        return NULL;
    if (r->revision >= 2 && r->xsdt && (r->xsdt >> 32) == 0) {
        *entry_size = 8;
        return (struct acpi_header *)(u32)r->xsdt;
    }
    *entry_size = 4;
    return (struct acpi_header *)r->rsdt;
}

u32 acpi_table_count(void)
{
    u32 esz;
    struct acpi_header *h = root(&esz);
    if (!h || h->length < sizeof(*h))
        return 0;
    return (h->length - sizeof(*h)) / esz;
}

struct acpi_header *acpi_table(u32 i)
{
    u32 esz;
    struct acpi_header *h = root(&esz);
    if (!h || i >= acpi_table_count())
        return NULL;
    const u8 *e = (const u8 *)(h + 1) + i * esz;
    u32 lo = *(const u32 *)e;
    if (esz == 8 && *(const u32 *)(e + 4))
        return NULL;                    /* above 4 GiB: out of reach with paging off */
    return (struct acpi_header *)lo;
}

struct acpi_header *acpi_find_table(const char *sig)
{
    if (!memcmp(sig, "DSDT", 4))
        return acpi_dsdt();
    u32 n = acpi_table_count();
    for (u32 i = 0; i < n; i++) {
        struct acpi_header *t = acpi_table(i);
        if (t && !memcmp(t->signature, sig, 4))
            return t;
    }
    return NULL;
}

bool acpi_parse_madt(struct madt_info *out)
{
    memset(out, 0, sizeof(*out));
    out->lapic_addr = LAPIC_DEFAULT_BASE;
    out->ioapic_addr = IOAPIC_DEFAULT_BASE;
    struct acpi_header *t = acpi_find_table("APIC");
    if (!t)
        return false;
    const u8 *p = (const u8 *)t;
    out->lapic_addr = *(const u32 *)(p + 36);
    for (u32 off = 44; off + 2 <= t->length;) {
        u8 type = p[off], len = p[off + 1];
        if (len < 2 || off + len > t->length)
            break;
        const u8 *e = p + off;
        switch (type) {
        case 0:                         /* processor local APIC */
            if ((*(const u32 *)(e + 4) & 1) && out->ncpus < MAX_CPUS)
                out->apic_ids[out->ncpus++] = e[3];
            break;
        case 9:                         /* processor local x2APIC */
            if ((*(const u32 *)(e + 8) & 1) && out->ncpus < MAX_CPUS)
                out->apic_ids[out->ncpus++] = *(const u32 *)(e + 4);
            break;
        case 1:                         /* IOAPIC */
            if (!out->nioapics) {
                out->ioapic_id = e[2];
                out->ioapic_addr = *(const u32 *)(e + 4);
                out->ioapic_gsi_base = *(const u32 *)(e + 8);
            }
            out->nioapics++;
            break;
        case 2:                         /* interrupt source override */
            if (out->niso < ARRAY_SIZE(out->iso)) {
                out->iso[out->niso].irq = e[3];
                out->iso[out->niso].gsi = *(const u32 *)(e + 4);
                out->iso[out->niso].flags = *(const u16 *)(e + 8);
                out->niso++;
            }
            break;
        case 5:                         /* local APIC address override (64-bit) */
            if (!*(const u32 *)(e + 8))
                out->lapic_addr = *(const u32 *)(e + 4);
            break;
        }
        off += len;
    }
    if (out == &madt) {
        lapic_base = out->lapic_addr;
        ioapic_base = out->ioapic_addr;
    }
    return true;
}

/* --- FADT ---------------------------------------------------------------------------------- */
#define FADT_DSDT        40
#define FADT_PM1A_CNT    64
#define FADT_X_DSDT      140
#define FADT_X_PM1A_CNT  172

u32 acpi_pm1a_cnt(void)
{
    struct acpi_header *f = acpi_find_table("FACP");
    if (!f)
        return 0;
    const u8 *p = (const u8 *)f;
    u32 port = *(const u32 *)(p + FADT_PM1A_CNT);
    /* ACPI 2.0+: the generic address, when the legacy field is empty and it is I/O space */
    if (!port && f->length >= FADT_X_PM1A_CNT + 12 && p[FADT_X_PM1A_CNT] == 1)
        port = *(const u32 *)(p + FADT_X_PM1A_CNT + 4);
    return port;
}

struct acpi_header *acpi_dsdt(void)
{
    struct acpi_header *f = acpi_find_table("FACP");
    if (!f)
        return NULL;
    const u8 *p = (const u8 *)f;
    if (f->length >= FADT_X_DSDT + 8) {
        u32 lo = *(const u32 *)(p + FADT_X_DSDT), hi = *(const u32 *)(p + FADT_X_DSDT + 4);
        if (lo && !hi)
            return (struct acpi_header *)lo;
    }
    return (struct acpi_header *)*(const u32 *)(p + FADT_DSDT);
}

/* One AML integer of the _S5 package: ZeroOp, OneOp, OnesOp, BytePrefix n, or a raw byte
 * (some tables store it so). Returns the number of bytes used. */
static u32 aml_small_int(const u8 *p, u8 *out)
{
    switch (p[0]) {
    case 0x00: *out = 0; return 1;
    case 0x01: *out = 1; return 1;
    case 0xFF: *out = 0xFF; return 1;
    case 0x0A: *out = p[1]; return 2;               /* BytePrefix */
    case 0x0B: *out = p[1]; return 3;               /* WordPrefix */
    case 0x0C: *out = p[1]; return 5;               /* DWordPrefix */
    default: *out = p[0]; return 1;
    }
}

bool acpi_s5_slp_typ(u8 *typa, u8 *typb)
{
    struct acpi_header *d = acpi_dsdt();
    if (!d || memcmp(d->signature, "DSDT", 4))
        return false;
    const u8 *p = (const u8 *)d, *end = p + d->length;
    const u8 *s = (const u8 *)memmem(p + sizeof(*d), d->length - sizeof(*d), "_S5_", 4);
    while (s) {
        /* NameOp (0x08), optionally '\\', then "_S5_" PackageOp (0x12) PkgLength NumElements */
        bool named = s[-1] == 0x08 || (s[-1] == '\\' && s[-2] == 0x08);
        if (named && s + 8 <= end && s[4] == 0x12) {
            const u8 *q = s + 5;
            q += 1 + (q[0] >> 6);                   /* PkgLength: lead byte + 0-3 more */
            q += 1;                                 /* NumElements */
            q += aml_small_int(q, typa);
            aml_small_int(q, typb);
            return true;
        }
        u32 off = (u32)(s + 4 - p);
        s = (const u8 *)memmem(s + 4, d->length - off, "_S5_", 4);
    }
    return false;
}

u64 acpi_dmar_drhd(u8 *flags)
{
    struct acpi_header *t = acpi_find_table("DMAR");
    if (!t)
        return 0;
    const u8 *p = (const u8 *)t;
    for (u32 off = 48; off + 4 <= t->length;) {         /* remapping structures after the header */
        u16 type = *(const u16 *)(p + off), len = *(const u16 *)(p + off + 2);
        if (len < 4 || off + len > t->length)
            break;
        if (type == 0 && len >= 16) {                   /* DRHD */
            if (flags)
                *flags = p[off + 4];
            return *(const u64 *)(p + off + 8);
        }
        off += len;
    }
    return 0;
}
