/* serial_irq: COM1 driven the way Linux's 8250 driver drives it, with interrupts.
 *
 * Phase 1: IRQ4 through the IOAPIC (pin 4 after the MADT's overrides -> vector 0x34), the
 *          8259 fully masked.  A message is sent from the THRE interrupt handler, up to 16
 *          bytes (the FIFO) per THRE event; prints "THRE OK (ioapic ...)".
 * Phase 2: the same through the 8259 (IRQ4 -> vector 0x24, reaching the CPU through LAPIC
 *          LINT0 in ExtINT mode), the IOAPIC pin masked; prints "THRE OK (pic ...)".
 * Phase 3: receive: prints "RX READY", enables the RX interrupt (IER bit 0) and, sleeping in
 *          hlt between interrupts, echoes every received byte in upper case until '\n'; then
 *          prints "RX <count>" (count = bytes before the '\n', '\r' included if sent).
 *
 * cmdline: rx=ioapic (default) | rx=pic | rx=none (skip phase 3)
 * Success: "THRE OK" twice, "RX <n>", then "SERIAL_IRQ OK", exit 0.  Each transmit phase has a
 * watchdog (LAPIC timer, ~5 s); phase 3 waits for input as long as it takes. */
#include "fw.h"

#define COM          COM1_BASE
#define IRQ          4
#define VEC_IOAPIC   (IOAPIC_VECTOR_BASE + IRQ)
#define VEC_PIC      (PIC_VECTOR_BASE + IRQ)

static const char *volatile tx_buf;
static volatile u32 tx_len, tx_pos;
static volatile bool tx_done;
static volatile u32 thre_events, rx_events, irqs_ioapic, irqs_pic, bytes_by_irq;
static volatile u8 ier;

static volatile u8 rx_ring[256];
static volatile u32 rx_head, rx_tail;   /* head: written by the handler; tail: by main */

static volatile bool watchdog_fired;

static void set_ier(u8 v)
{
    ier = v;
    outb(COM + UART_IER, v);
}

static void uart_irq(struct intr_frame *f)
{
    if (f->vector == VEC_IOAPIC)
        irqs_ioapic++;
    else
        irqs_pic++;
    for (int loops = 0; loops < 32; loops++) {
        u8 iir = inb(COM + UART_IIR);
        if (iir & UART_IIR_NO_INT)
            break;
        switch (iir & UART_IIR_ID) {
        case UART_IIR_THRI:             /* reading IIR cleared it; refill the FIFO */
            thre_events++;
            if (tx_pos < tx_len) {
                u32 n = serial_has_fifo() ? 16 : 1;
                while (n-- && tx_pos < tx_len) {
                    outb(COM + UART_THR, (u8)tx_buf[tx_pos++]);
                    bytes_by_irq++;
                }
            } else {
                set_ier(ier & ~UART_IER_THRI);  /* nothing left: stop THRE interrupts */
                tx_done = true;
            }
            break;
        case UART_IIR_RDI:
        case UART_IIR_CTI:
            rx_events++;
            while (inb(COM + UART_LSR) & UART_LSR_DR) {
                u8 c = inb(COM + UART_RBR);
                if (rx_head - rx_tail < sizeof(rx_ring))
                    rx_ring[rx_head++ % sizeof(rx_ring)] = c;
            }
            break;
        case UART_IIR_RLSI:
            (void)inb(COM + UART_LSR);
            break;
        default:                        /* modem status */
            (void)inb(COM + UART_MSR);
            break;
        }
    }
    if (f->vector == VEC_IOAPIC)
        lapic_eoi();
    else
        pic_eoi(IRQ);
}

static void watchdog(struct intr_frame *f)
{
    (void)f;
    watchdog_fired = true;
    lapic_eoi();
}

/* Wait with hlt for *flag; false if the watchdog fired first. */
static bool wait_flag(volatile bool *flag, u32 ms)
{
    watchdog_fired = false;
    lapic_timer_oneshot_ms(ms);
    cli();
    while (!*flag && !watchdog_fired) {
        sti_hlt();
        cli();
    }
    sti();
    lapic_timer_stop();
    return *flag;
}

static void wait_tx_empty(void)
{
    for (int i = 0; i < 100000 && !(inb(COM + UART_LSR) & UART_LSR_TEMT); i++)
        cpu_relax();
}

static void transmit_phase(const char *path)
{
    static char msg[128];
    snprintf(msg, sizeof(msg),
             "serial_irq: this line was written by the THRE interrupt handler (%s path)\r\n", path);
    u32 irq0 = irqs_ioapic + irqs_pic;
    thre_events = 0;
    bytes_by_irq = 0;
    tx_buf = msg;
    tx_len = strlen(msg);
    tx_pos = 0;
    tx_done = false;
    set_ier(UART_IER_THRI);             /* THR is empty: this raises the first THRE interrupt */
    bool ok = wait_flag(&tx_done, 5000);
    set_ier(0);
    wait_tx_empty();
    u32 irqs = irqs_ioapic + irqs_pic - irq0;
    if (!ok)
        fail("%s: no THRE completion (sent %u of %u bytes, %u interrupts, %u THRE events)",
             path, tx_pos, tx_len, irqs, thre_events);
    if (bytes_by_irq != tx_len)
        fail("%s: %u of %u bytes sent by the handler", path, bytes_by_irq, tx_len);
    printf("THRE OK (%s: %u bytes, %u interrupts, %u THRE events)\n", path, tx_len, irqs,
           thre_events);
}

static void receive_phase(const char *path)
{
    printf("serial_irq: receiving through the %s path; type a line\n", path);
    puts("RX READY");
    rx_head = rx_tail = 0;
    rx_events = 0;
    u32 count = 0;
    bool done = false;
    set_ier(UART_IER_RDI | UART_IER_RLSI);
    cli();
    while (!done) {
        while (rx_tail == rx_head) {
            sti_hlt();                  /* sleep until the next interrupt */
            cli();
        }
        while (rx_tail != rx_head && !done) {
            char c = rx_ring[rx_tail++ % sizeof(rx_ring)];
            if (c == '\n') {
                done = true;
                break;
            }
            count++;
            serial_putc((char)toupper((u8)c));  /* interrupts are off: no printf lock needed */
        }
    }
    sti();
    set_ier(0);
    printf("\nRX %u\n", count);
    printf("serial_irq: %u RX interrupt events\n", rx_events);
}

int main(struct mb_info *info)
{
    (void)info;
    char rx[16] = "ioapic";
    cmdline_get("rx", rx, sizeof(rx));
    if (strcmp(rx, "ioapic") && strcmp(rx, "pic") && strcmp(rx, "none"))
        fail("rx=%s: expected ioapic, pic or none", rx);

    if (!acpi_parse_madt(&madt))
        puts("serial_irq: no MADT; IOAPIC at its default address, no overrides");
    printf("serial_irq: UART %s FIFO\n", serial_has_fifo() ? "with a 16-byte" : "without a");
    pic_init(PIC_VECTOR_BASE, PIC_VECTOR_BASE + 8);
    lapic_enable(true);
    u32 bsp = lapic_id();
    intr_register(VEC_IOAPIC, uart_irq);
    intr_register(VEC_PIC, uart_irq);
    intr_register(TIMER_VECTOR, watchdog);
    set_ier(0);
    (void)inb(COM + UART_IIR);

    /* phase 1: IOAPIC */
    pic_mask_all();
    u32 pin = ioapic_route_isa(IRQ, VEC_IOAPIC, bsp);
    printf("serial_irq: phase 1: IRQ%u via IOAPIC pin %u -> vector 0x%x (CPU %u), 8259 masked\n",
           IRQ, pin, VEC_IOAPIC, bsp);
    sti();
    transmit_phase("ioapic");
    if (irqs_pic)
        fail("%u interrupts arrived through the masked 8259", irqs_pic);

    /* phase 2: 8259 through LINT0 (ExtINT) */
    ioapic_mask(pin);
    pic_unmask(IRQ);
    printf("serial_irq: phase 2: IRQ%u via the 8259 -> vector 0x%x, IOAPIC pin %u masked\n",
           IRQ, VEC_PIC, pin);
    u32 before = irqs_ioapic;
    transmit_phase("pic");
    if (irqs_ioapic != before)
        fail("%u interrupts arrived through the masked IOAPIC pin", irqs_ioapic - before);

    /* phase 3: receive */
    if (!strcmp(rx, "ioapic")) {
        pic_mask(IRQ);
        ioapic_unmask(pin);
        receive_phase("ioapic");
    } else if (!strcmp(rx, "pic")) {
        receive_phase("pic");
    }
    cli();
    pic_mask_all();
    ioapic_mask(pin);
    puts("SERIAL_IRQ OK");
    return EXIT_PASS;
}
