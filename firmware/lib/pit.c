/* The 8254 PIT's channel 0 as a periodic tick on IRQ0 through the 8259.
 *
 * The PIC path is used because IRQ0 reaches PIC pin 0 under every KVM routing, while its
 * IOAPIC pin (0 or 2) depends on the VMM's routing and MADT override. */
#include "fw.h"

#define PIT_HZ 1193182u

volatile u32 pit_ticks;
u32 pit_hz;

static void pit_irq(struct intr_frame *f)
{
    (void)f;
    pit_ticks++;
    pic_eoi(0);
}

void pit_start(u32 hz)
{
    u32 div = PIT_HZ / hz;
    if (div > 0xFFFF)
        div = 0xFFFF;
    pit_hz = PIT_HZ / div;
    intr_register(PIC_VECTOR_BASE + 0, pit_irq);
    outb(0x43, 0x34);                   /* channel 0, lo/hi byte, mode 2 (rate generator) */
    outb(0x40, div & 0xFF);
    outb(0x40, div >> 8);
    pic_unmask(0);
    sti();
}

void pit_stop(void)
{
    pic_mask(0);
    outb(0x43, 0x30);                   /* channel 0, mode 0, no count written: stops */
}

u32 pit_ms_to_ticks(u32 ms)
{
    return (ms * pit_hz + 999) / 1000 + 1;      /* +1: the current tick is partial */
}

void pit_sleep_ms(u32 ms)
{
    u32 start = pit_ticks, n = pit_ms_to_ticks(ms);
    u32 flags = irq_save();
    while (pit_ticks - start < n) {
        sti_hlt();
        cli();
    }
    irq_restore(flags);
}

static volatile bool pit_watchdog_fired;

static void pit_watchdog(struct intr_frame *f)
{
    (void)f;
    pit_watchdog_fired = true;
    lapic_eoi();
}

bool pit_verify(u32 ms)
{
    u32 start = pit_ticks;
    pit_watchdog_fired = false;
    intr_register(TIMER_VECTOR, pit_watchdog);
    lapic_timer_oneshot_ms(ms);
    u32 flags = irq_save();
    while (pit_ticks - start < 2 && !pit_watchdog_fired) {
        sti_hlt();
        cli();
    }
    irq_restore(flags);
    lapic_timer_stop();
    intr_register(TIMER_VECTOR, NULL);
    return pit_ticks - start >= 2;
}
