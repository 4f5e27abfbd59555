/* IDT, interrupt dispatch and the exception reporter.
 *
 * Every vector has a stub in entry.S (isr_stubs + 16 * vector) that pushes the vector and an
 * error code and calls intr_dispatch().  Exceptions nobody registered for are reported on the
 * serial port (vector, name, error code, EIP) and end the program with EXIT_EXCEPTION. */
#include "fw.h"

struct idt_entry {
    u16 offset_lo;
    u16 selector;
    u8 zero;
    u8 type_attr;
    u16 offset_hi;
} __attribute__((packed));

struct desc_ptr {
    u16 limit;
    u32 base;
} __attribute__((packed));

extern char isr_stubs[];
static struct idt_entry idt[256] __attribute__((aligned(16)));
static intr_handler_t handlers[256];
volatile u32 intr_unexpected;

static const char *const exc_names[32] = {
    "#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow",
    "#BR bound range", "#UD invalid opcode", "#NM device not available", "#DF double fault",
    "coprocessor overrun", "#TS invalid TSS", "#NP segment not present", "#SS stack fault",
    "#GP general protection", "#PF page fault", "reserved 15", "#MF x87 error",
    "#AC alignment check", "#MC machine check", "#XM SIMD error", "#VE virtualization",
    "#CP control protection",
};

void idt_init(void)
{
    for (u32 v = 0; v < 256; v++) {
        u32 addr = (u32)isr_stubs + 16 * v;
        idt[v].offset_lo = addr & 0xFFFF;
        idt[v].selector = 0x08;
        idt[v].zero = 0;
        idt[v].type_attr = 0x8E;       /* present, DPL 0, 32-bit interrupt gate */
        idt[v].offset_hi = addr >> 16;
    }
    idt_load();
}

void idt_load(void)
{
    struct desc_ptr d = { sizeof(idt) - 1, (u32)idt };
    __asm__ __volatile__("lidt %0" :: "m"(d) : "memory");
}

void idt_load_empty(void)
{
    struct desc_ptr d = { 0, 0 };
    __asm__ __volatile__("lidt %0" :: "m"(d) : "memory");
}

void intr_register(u8 vector, intr_handler_t h)
{
    handlers[vector] = h;
}

static void report_exception(struct intr_frame *f)
{
    u32 cr0, cr2;
    __asm__ __volatile__("mov %%cr0, %0; mov %%cr2, %1" : "=r"(cr0), "=r"(cr2));
    printf_bust_lock();
    printf("\nEXCEPTION %u (%s) error=0x%x eip=0x%08x cs=0x%x eflags=0x%08x cpu=%u\n",
           f->vector, f->vector < 32 && exc_names[f->vector] ? exc_names[f->vector] : "?",
           f->error, f->eip, f->cs, f->eflags, lapic_id());
    printf("  eax=%08x ebx=%08x ecx=%08x edx=%08x esi=%08x edi=%08x ebp=%08x esp=%08x\n",
           f->eax, f->ebx, f->ecx, f->edx, f->esi, f->edi, f->ebp, f->esp_at_pusha + 20);
    printf("  cr0=%08x cr2=%08x\n", cr0, cr2);
    exit(EXIT_EXCEPTION);
}

void intr_dispatch(struct intr_frame *f)
{
    intr_handler_t h = handlers[f->vector];
    if (h) {
        h(f);
        return;
    }
    if (f->vector < 32)
        report_exception(f);
    intr_unexpected++;
    if (f->vector == SPURIOUS_VECTOR)
        return;                         /* LAPIC spurious: no EOI */
    printf("unexpected interrupt vector 0x%x\n", f->vector);
    if (f->vector >= PIC_VECTOR_BASE && f->vector < PIC_VECTOR_BASE + 16) {
        u8 irq = f->vector - PIC_VECTOR_BASE;
        u16 isr = pic_read_isr();
        if (isr & (1u << irq))          /* not a spurious IRQ7/IRQ15 */
            pic_eoi(irq);
    } else {
        lapic_eoi();
    }
}
