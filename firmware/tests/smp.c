/* smp: start every application processor the MADT lists with INIT-SIPI-SIPI.
 *
 * Each AP leaves the real-mode trampoline (copied to 0x8000, below the multiboot info at
 * 0x30000), enters protected mode, prints "AP <apic id> up", increments a shared counter with
 * a locked instruction, sends the BSP a wake-up IPI and halts.  The BSP sleeps with hlt
 * between PIT ticks and IPIs until all APs are counted or the timeout passes.
 *
 * cmdline: timeout_ms=N (default 10000): how long the BSP waits for the APs.
 * Success: prints "CPUS <n>" with n = the MADT's CPU count, then "SMP OK", exit 0. */
#include "fw.h"

static volatile u32 ap_count;
static volatile u32 ap_up[MAX_CPUS];
static u32 bsp_id;

static void ipi_handler(struct intr_frame *f)
{
    (void)f;
    lapic_eoi();
}

static void ap_main(u32 apic_id)
{
    printf("AP %u up\n", apic_id);
    for (u32 i = 0; i < madt.ncpus; i++)
        if (madt.apic_ids[i] == apic_id)
            ap_up[i] = 1;
    atomic_inc_return(&ap_count);
    lapic_send_ipi(bsp_id, ICR_FIXED | ICR_ASSERT | IPI_VECTOR);
    /* halt_forever() follows in ap_start_c */
}

int main(struct mb_info *info)
{
    (void)info;
    u32 timeout_ms = cmdline_get_u32("timeout_ms", 10000);

    puts("smp: reading the MADT");
    if (!acpi_parse_madt(&madt))
        fail("no MADT (ACPI table \"APIC\") found");
    printf("smp: MADT lists %u CPUs, APIC ids:", madt.ncpus);
    for (u32 i = 0; i < madt.ncpus; i++)
        printf(" %u", madt.apic_ids[i]);
    printf("; LAPIC at 0x%08x\n", madt.lapic_addr);
    if (!madt.ncpus)
        fail("the MADT lists no enabled processor");

    pic_init(PIC_VECTOR_BASE, PIC_VECTOR_BASE + 8);
    lapic_enable(true);
    intr_register(IPI_VECTOR, ipi_handler);
    pit_start(100);
    if (!pit_verify(2000))
        fail("no PIT ticks: IRQ0 does not reach the CPU through the 8259 and LINT0 (ExtINT)");
    bsp_id = lapic_id();
    printf("smp: BSP is APIC id %u\n", bsp_id);

    u32 expected_aps = 0, start = pit_ticks;
    for (u32 i = 0; i < madt.ncpus; i++) {
        u32 id = madt.apic_ids[i];
        if (id == bsp_id) {
            ap_up[i] = 1;
            continue;
        }
        printf("smp: INIT-SIPI-SIPI to APIC id %u (trampoline at 0x%x)\n", id, AP_TRAMPOLINE_ADDR);
        smp_start_ap(id, ap_main);
        expected_aps++;
    }

    u32 limit = pit_ms_to_ticks(timeout_ms);
    cli();
    while (ap_count < expected_aps && pit_ticks - start < limit) {
        sti_hlt();
        cli();
    }
    sti();
    u32 waited_ms = (pit_ticks - start) * 1000 / pit_hz;
    pit_stop();

    u32 n = ap_count + 1;
    printf("CPUS %u\n", n);
    if (n != madt.ncpus) {
        printf("smp: missing after %u ms:", waited_ms);
        for (u32 i = 0; i < madt.ncpus; i++)
            if (!ap_up[i])
                printf(" %u", madt.apic_ids[i]);
        printf("\n");
        fail("%u of %u CPUs came up", n, madt.ncpus);
    }
    printf("smp: all %u CPUs up %u ms after the first INIT\n", n, waited_ms);
    puts("SMP OK");
    return EXIT_PASS;
}
