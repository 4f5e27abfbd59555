/* The 8259A master/slave pair: remap, mask, EOI. */
#include "fw.h"

#define PIC1_CMD  0x20
#define PIC1_DATA 0x21
#define PIC2_CMD  0xA0
#define PIC2_DATA 0xA1

static u8 mask1 = 0xFF, mask2 = 0xFF;

void pic_init(u8 master_base, u8 slave_base)
{
    outb(PIC1_CMD, 0x11);               /* ICW1: edge, cascade, ICW4 needed */
    outb(PIC2_CMD, 0x11);
    outb(PIC1_DATA, master_base);       /* ICW2: vector base */
    outb(PIC2_DATA, slave_base);
    outb(PIC1_DATA, 0x04);              /* ICW3: slave on IRQ2 */
    outb(PIC2_DATA, 0x02);              /*       slave identity 2 */
    outb(PIC1_DATA, 0x01);              /* ICW4: 8086 mode, normal EOI */
    outb(PIC2_DATA, 0x01);
    mask1 = 0xFF & ~(1u << 2);          /* keep the cascade line open */
    mask2 = 0xFF;
    outb(PIC1_DATA, mask1);
    outb(PIC2_DATA, mask2);
}

void pic_mask_all(void)
{
    mask1 = mask2 = 0xFF;
    outb(PIC1_DATA, 0xFF);
    outb(PIC2_DATA, 0xFF);
}

void pic_unmask(u8 irq)
{
    if (irq < 8) {
        mask1 &= ~(1u << irq);
        outb(PIC1_DATA, mask1);
    } else {
        mask2 &= ~(1u << (irq - 8));
        outb(PIC2_DATA, mask2);
        mask1 &= ~(1u << 2);
        outb(PIC1_DATA, mask1);
    }
}

void pic_mask(u8 irq)
{
    if (irq < 8) {
        mask1 |= 1u << irq;
        outb(PIC1_DATA, mask1);
    } else {
        mask2 |= 1u << (irq - 8);
        outb(PIC2_DATA, mask2);
    }
}

void pic_eoi(u8 irq)
{
    if (irq >= 8)
        outb(PIC2_CMD, 0x20);
    outb(PIC1_CMD, 0x20);
}

u16 pic_read_isr(void)
{
    outb(PIC1_CMD, 0x0B);               /* OCW3: read ISR */
    outb(PIC2_CMD, 0x0B);
    u16 isr = inb(PIC1_CMD) | (inb(PIC2_CMD) << 8);
    outb(PIC1_CMD, 0x0A);               /* back to IRR */
    outb(PIC2_CMD, 0x0A);
    return isr;
}
