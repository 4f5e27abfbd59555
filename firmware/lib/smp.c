/* Application processor start-up: INIT-SIPI-SIPI (Intel SDM vol. 3, 9.4.4 "MP initialization
 * example") into the real-mode trampoline of entry.S. */
#include "fw.h"

extern char ap_tramp_start[], ap_tramp_end[];
static void (*volatile ap_entry_fn)(u32 apic_id);

void ap_start_c(void);

void ap_start_c(void)
{
    idt_load();
    lapic_enable(false);
    ap_entry_fn(lapic_id());
    halt_forever();
}

void smp_start_ap(u32 apic_id, void (*ap_main)(u32 apic_id))
{
    ap_entry_fn = ap_main;
    memcpy((void *)AP_TRAMPOLINE_ADDR, ap_tramp_start, ap_tramp_end - ap_tramp_start);
    barrier();
    lapic_write(LAPIC_ESR, 0);
    lapic_send_ipi(apic_id, ICR_INIT | ICR_ASSERT);
    pit_sleep_ms(10);
    for (int i = 0; i < 2; i++) {
        lapic_send_ipi(apic_id, ICR_STARTUP | ICR_ASSERT | (AP_TRAMPOLINE_ADDR >> 12));
        pit_sleep_ms(1);                /* >= 200 us */
    }
}
