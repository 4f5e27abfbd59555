/* pit: the 8254 timer and port 0x61 driven the way Linux and SeaBIOS drive them.
 *
 * Steps and markers:
 *   channel 0 in mode 2 at 1 kHz, ISA IRQ0 routed through the IOAPIC (the MADT's override
 *   puts it on pin 2), the 8259 masked: ticks arrive while the CPU sleeps in hlt, about as many
 *   as a LAPIC-timer window of 200 ms allows (50-150% of 200) -> "IOAPIC TICKS OK";
 *   the counter latch command and the read-back command (status + count) on channel 0: the
 *   status says mode 2, lo/hi access, binary; successive latched counts lie below the divisor
 *   and count down (modulo reload) -> "LATCH OK";
 *   channel 2 as Linux's PIT calibration uses it (arch/x86/kernel/tsc.c pit_calibrate_tsc):
 *   port 0x61 gate on with the speaker off, mode 0 with a 50 ms count, OUT2 (port 0x61 bit 5)
 *   low at first and high once the count has run out, with about 50 channel-0 ticks in between
 *   (25-100: KVM's in-kernel PIT re-injects ticks it could not deliver at once) -> "CHANNEL2 OK";
 *   port 0x61 bit 4 (the refresh toggle) changes while polled -> "REFRESH OK";
 *   the same 1 kHz tick through the 8259 and LINT0 (ExtINT), IOAPIC pin masked -> "PIC TICKS OK";
 *   then "PIT OK", exit 0.
 * Runs on KVM's in-kernel PIT (kvmpy's default) and on kvmpy's own (--irqchip split).
 * Exit: 0 pass, 1 a check failed, 2 no MADT/IOAPIC. */
#include "fw.h"

#define PIT_CH0       0x40
#define PIT_CH2       0x42
#define PIT_CMD       0x43
#define PORT61        0x61
#define P61_GATE2     0x01
#define P61_SPEAKER   0x02
#define P61_REFRESH   0x10
#define P61_OUT2      0x20
#define DIV_1KHZ      1193u                 /* 1193182 Hz / 1000 */
#define VEC_TICK      0x58

static volatile u32 ticks;
static volatile bool watchdog_fired;

static void tick_ioapic(struct intr_frame *f) { (void)f; ticks++; lapic_eoi(); }
static void tick_pic(struct intr_frame *f) { (void)f; ticks++; pic_eoi(0); }
static void watchdog(struct intr_frame *f) { (void)f; watchdog_fired = true; lapic_eoi(); }

static void ch0_periodic(u16 div)
{
    outb(PIT_CMD, 0x34);                    /* channel 0, lo/hi, mode 2, binary */
    outb(PIT_CH0, div & 0xFF);
    outb(PIT_CH0, div >> 8);
}

/* Ticks counted while sleeping in hlt through a LAPIC-timer window of `ms`. */
static u32 count_ticks(u32 ms)
{
    watchdog_fired = false;
    u32 start = ticks;
    lapic_timer_oneshot_ms(ms);
    cli();
    while (!watchdog_fired) {
        sti_hlt();
        cli();
    }
    return ticks - start;
}

static void expect_range(const char *what, u32 got, u32 lo, u32 hi)
{
    printf("pit: %s: %u (expected %u-%u)\n", what, got, lo, hi);
    if (got < lo || got > hi)
        fail("%s: %u outside %u-%u", what, got, lo, hi);
}

static u16 latch_ch0(void)
{
    outb(PIT_CMD, 0x00);                    /* counter latch, channel 0 */
    u16 lo = inb(PIT_CH0);
    return lo | (u16)inb(PIT_CH0) << 8;
}

static void step_latch(void)
{
    outb(PIT_CMD, 0xE2);                    /* read-back: latch count and status, channel 0 */
    u8 status = inb(PIT_CH0);
    u16 lo = inb(PIT_CH0);
    u16 count = lo | (u16)inb(PIT_CH0) << 8;
    printf("pit: read-back status 0x%02x count %u\n", status, count);
    if ((status & 0x3F) != 0x34)
        fail("read-back status 0x%02x: expected mode 2, lo/hi, binary (0x34 in bits 5:0)", status);
    if (count == 0 || count > DIV_1KHZ)
        fail("read-back count %u outside 1-%u", count, DIV_1KHZ);
    u32 downs = 0;
    u16 prev = latch_ch0();
    for (u32 i = 0; i < 200; i++) {
        u16 c = latch_ch0();
        if (c == 0 || c > DIV_1KHZ)
            fail("latched count %u outside 1-%u", c, DIV_1KHZ);
        if (c < prev)
            downs++;
        prev = c;
    }
    printf("pit: 200 latched counts, %u lower than the one before\n", downs);
    if (downs < 100)
        fail("the latched count does not count down (%u of 200)", downs);
    puts("LATCH OK");
}

static void step_channel2(void)
{
    u32 latch = 1193182u / 20;              /* 50 ms, as pit_calibrate_tsc's CAL_MS */
    outb(PORT61, (inb(PORT61) & ~P61_SPEAKER) | P61_GATE2);
    outb(PIT_CMD, 0xB0);                    /* channel 2, lo/hi, mode 0, binary */
    outb(PIT_CH2, latch & 0xFF);
    outb(PIT_CH2, latch >> 8);
    u8 first = inb(PORT61);
    u32 start = ticks;
    watchdog_fired = false;
    lapic_timer_oneshot_ms(2000);
    u32 polls = 0;
    sti();
    while (!(inb(PORT61) & P61_OUT2) && !watchdog_fired)
        polls++;
    cli();
    lapic_timer_stop();
    u32 elapsed = ticks - start;
    printf("pit: channel 2: OUT2 %u at start, high after %u polls of port 0x61\n",
           (first & P61_OUT2) ? 1 : 0, polls);
    if (first & P61_OUT2)
        fail("OUT2 high right after the count was written (mode 0 starts low)");
    if (watchdog_fired)
        fail("OUT2 never went high");
    expect_range("channel-0 ticks during the 50 ms count", elapsed, 25, 100);
    outb(PORT61, inb(PORT61) & ~(P61_GATE2 | P61_SPEAKER));
    puts("CHANNEL2 OK");
}

static void step_refresh(void)
{
    u8 first = inb(PORT61) & P61_REFRESH;
    u32 i;
    for (i = 0; i < 100000 && (inb(PORT61) & P61_REFRESH) == first; i++)
        cpu_relax();
    printf("pit: refresh toggle changed after %u reads\n", i);
    if (i == 100000)
        fail("port 0x61 bit 4 does not toggle");
    puts("REFRESH OK");
}

int main(struct mb_info *mb)
{
    (void)mb;
    if (!acpi_parse_madt(&madt)) {
        printf("FAIL: no MADT\n");
        return EXIT_BAD_SETUP;
    }
    pic_init(PIC_VECTOR_BASE, PIC_VECTOR_BASE + 8);
    lapic_enable(true);
    u32 bsp = lapic_id();
    intr_register(TIMER_VECTOR, watchdog);
    intr_register(VEC_TICK, tick_ioapic);
    intr_register(PIC_VECTOR_BASE + 0, tick_pic);

    ch0_periodic(DIV_1KHZ);
    u32 pin = ioapic_route_isa(0, VEC_TICK, bsp);
    printf("pit: IRQ0 via IOAPIC pin %u -> vector 0x%x, 8259 masked\n", pin, VEC_TICK);
    expect_range("IOAPIC ticks in 200 ms", count_ticks(200), 100, 300);
    puts("IOAPIC TICKS OK");

    step_latch();
    step_channel2();
    step_refresh();

    ioapic_mask(pin);
    pic_unmask(0);
    expect_range("8259 ticks in 200 ms", count_ticks(200), 100, 300);
    pic_mask(0);
    puts("PIC TICKS OK");
    outb(PIT_CMD, 0x30);                    /* channel 0 stopped: mode 0, no count */
    puts("PIT OK");
    return EXIT_PASS;
}
