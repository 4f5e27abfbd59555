/* COM1 as a polled console, initialised the way a driver does it.
 *
 * 115200 8N1, FIFO enabled with a 1-byte receive trigger (so a model without the character
 * timeout interrupt still interrupts per byte), DTR|RTS|OUT2 (OUT2 gates the IRQ line on a
 * PC), all interrupts off.  Output waits for THRE; with a FIFO, one THRE wait is followed by
 * up to 16 bytes, which halves the number of port accesses per character. */
#include "fw.h"

#define COM COM1_BASE
#define THRE_SPINS 100000

static bool present;
static bool fifo;

bool serial_has_fifo(void) { return fifo; }

void serial_init(void)
{
    /* a missing UART floats the bus: LSR reads 0xFF */
    if (inb(COM + UART_LSR) == 0xFF) {
        present = false;
        return;
    }
    present = true;
    outb(COM + UART_IER, 0);
    outb(COM + UART_LCR, 0x80);             /* DLAB */
    outb(COM + UART_DLL, 1);                /* 115200 = 1843200 / 16 / 1 */
    outb(COM + UART_DLM, 0);
    outb(COM + UART_LCR, 0x03);             /* 8N1, DLAB off */
    outb(COM + UART_FCR, 0x07);             /* FIFO on, clear RX and TX, RX trigger 1 byte */
    fifo = (inb(COM + UART_IIR) & 0xC0) == 0xC0;
    outb(COM + UART_MCR, UART_MCR_DTR | UART_MCR_RTS | UART_MCR_OUT2);
    /* drop whatever is pending */
    (void)inb(COM + UART_LSR);
    (void)inb(COM + UART_MSR);
    (void)inb(COM + UART_IIR);
}

static void wait_thre(void)
{
    for (u32 i = 0; i < THRE_SPINS; i++)
        if (inb(COM + UART_LSR) & UART_LSR_THRE)
            return;
}

void serial_write(const char *s, size_t n)
{
    if (!present)
        return;
    u32 room = 0;
    bool cr_pending = false;
    while (n) {
        if (!room) {
            wait_thre();
            room = fifo ? 16 : 1;
        }
        if (*s == '\n' && !cr_pending) {
            outb(COM + UART_THR, '\r');
            cr_pending = true;
        } else {
            outb(COM + UART_THR, (u8)*s);
            s++, n--;
            cr_pending = false;
        }
        room--;
    }
}

void serial_putc(char c)
{
    serial_write(&c, 1);
}
