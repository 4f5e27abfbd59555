/* mmio_probe: look for platform devices the way a firmware or an OS probe does, by reading their
 * identification registers, and report what answered.  kvmpy's direct-boot machine has neither,
 * so both probes are MMIO accesses nobody owns (kvmpy reads them as zero), which is what
 * examples/first_unowned_mmio.py and the tracing tests look for.
 *
 *   HPET at 0xFED00000: General Capabilities and ID (offset 0x000): vendor id in bits 31:16,
 *                       revision in bits 7:0 (IA-PC HPET specification 1.0a, 2.3.4);
 *   TPM  at 0xFED40000: TPM_DID_VID_0 (offset 0xF00) (TCG PC Client TPM Interface spec).
 *
 * All zeros or all ones means absent.  Prints "HPET ..." and "TPM ..." lines, then
 * "MMIO_PROBE OK", exit 0. */
#include "fw.h"

#define HPET_BASE     0xFED00000u
#define TPM_BASE      0xFED40000u
#define TPM_DID_VID   0xF00u

static bool present(u32 v) { return v != 0 && v != 0xFFFFFFFFu; }

int main(struct mb_info *info)
{
    (void)info;
    u32 cap = readl(HPET_BASE);
    if (present(cap))
        printf("HPET at 0x%08x: vendor 0x%04x, revision %u\n", HPET_BASE, cap >> 16, cap & 0xFF);
    else
        printf("HPET at 0x%08x: absent (capabilities 0x%08x)\n", HPET_BASE, cap);
    u32 did_vid = readl(TPM_BASE + TPM_DID_VID);
    if (present(did_vid))
        printf("TPM at 0x%08x: vendor 0x%04x, device 0x%04x\n", TPM_BASE, did_vid & 0xFFFF, did_vid >> 16);
    else
        printf("TPM at 0x%08x: absent (DID_VID 0x%08x)\n", TPM_BASE, did_vid);
    puts("MMIO_PROBE OK");
    return EXIT_PASS;
}
