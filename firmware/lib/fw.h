/* kvmpy guest runtime: everything a test or the demo guest may call.
 *
 * The program provides `int main(struct mb_info *mbi)`; its return value becomes the exit code
 * written to the debug-exit port (0 = pass).  Before main runs, the runtime has loaded its GDT
 * and IDT, initialised COM1 and parsed the multiboot information. */
#ifndef FW_H
#define FW_H

#include "io.h"

#define MAX_CPUS 16             /* matches entry.S */

/* --- layout (mirrors kvmpy/layout.py; the guest finds the rest through ACPI) ------------- */
#define COM1_BASE           0x3F8
#define COM2_BASE           0x2F8
#define DEBUG_EXIT_PORT     0xF4
#define FW_CFG_PORT_SEL     0x510
#define FW_CFG_PORT_DATA    0x511
#define FW_CFG_PORT_DMA     0x514
#define PCI_CONF_ADDR       0xCF8
#define PCI_CONF_DATA       0xCFC
#define RESET_CONTROL_PORT  0xCF9
#define I8042_DATA          0x60
#define I8042_CMD           0x64
#define CMOS_INDEX          0x70
#define CMOS_DATA           0x71
#define LAPIC_DEFAULT_BASE  0xFEE00000u
#define IOAPIC_DEFAULT_BASE 0xFEC00000u

/* Interrupt vectors used by the runtime. */
#define PIC_VECTOR_BASE     0x20        /* IRQ0-7 -> 0x20-0x27, IRQ8-15 -> 0x28-0x2F */
#define IOAPIC_VECTOR_BASE  0x30        /* ISA IRQ n routed through the IOAPIC -> 0x30 + n */
#define TIMER_VECTOR        0x40        /* LAPIC timer (watchdogs) */
#define IPI_VECTOR          0x50        /* wake-up IPI (smp) */
#define SPURIOUS_VECTOR     0xFF

/* --- exit codes ------------------------------------------------------------------------- */
#define EXIT_PASS           0
#define EXIT_FAIL           1           /* a check failed */
#define EXIT_BAD_SETUP      2           /* the machine lacks something the test needs */
#define EXIT_EXCEPTION      3           /* unexpected CPU exception */
#define EXIT_STOP_FAILED    4           /* stop_ways: the requested stop did not stop the VM */

/* --- string.c ----------------------------------------------------------------------------- */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
size_t strnlen(const char *s, size_t max);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strstr(const char *hay, const char *needle);
const void *memmem(const void *hay, size_t hlen, const void *needle, size_t nlen);
static inline int toupper(int c) { return (c >= 'a' && c <= 'z') ? c - 32 : c; }
static inline int isdigit(int c) { return c >= '0' && c <= '9'; }
static inline int isprint(int c) { return c >= 0x20 && c < 0x7F; }
/* decimal, or hex with 0x; *end (if given) points after the number */
u32 strtou32(const char *s, const char **end);
/* n / d and n % d for a 64-bit n without libgcc */
u64 udiv64(u64 n, u32 d, u32 *rem);

/* --- spinlock.c ------------------------------------------------------------------------- */
struct spinlock { volatile u32 locked; };
void spin_lock(struct spinlock *l);
void spin_unlock(struct spinlock *l);

/* --- serial.c: COM1, polled output ----------------------------------------------------- */
void serial_init(void);
void serial_putc(char c);                       /* raw, no locking, '\n' -> "\r\n" */
void serial_write(const char *s, size_t n);     /* raw, no locking */
bool serial_has_fifo(void);
#define UART_RBR 0      /* DLAB=0, read */
#define UART_THR 0      /* DLAB=0, write */
#define UART_IER 1
#define UART_IIR 2      /* read */
#define UART_FCR 2      /* write */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_MSR 6
#define UART_SCR 7
#define UART_DLL 0      /* DLAB=1 */
#define UART_DLM 1      /* DLAB=1 */
#define UART_IER_RDI   0x01
#define UART_IER_THRI  0x02
#define UART_IER_RLSI  0x04
#define UART_IIR_NO_INT 0x01
#define UART_IIR_ID    0x0E
#define UART_IIR_THRI  0x02
#define UART_IIR_RDI   0x04
#define UART_IIR_RLSI  0x06
#define UART_IIR_CTI   0x0C
#define UART_LSR_DR    0x01
#define UART_LSR_THRE  0x20
#define UART_LSR_TEMT  0x40
#define UART_MCR_DTR   0x01
#define UART_MCR_RTS   0x02
#define UART_MCR_OUT2  0x08

/* --- printf.c ------------------------------------------------------------------------------
 * %s %c %d %i %u %x %X %p %% with flags '-' '0', a width (or *), and the l/ll length modifiers
 * (ll: 64-bit).  printf takes a lock so lines from several CPUs do not interleave. */
int printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int vprintf(const char *fmt, __builtin_va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
int vsnprintf(char *buf, size_t size, const char *fmt, __builtin_va_list ap);
void puts(const char *s);                       /* s + "\n" */
/* Print "FAIL: <message>" and exit with EXIT_FAIL. */
void fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
void printf_bust_lock(void);                    /* for the exception path */

/* --- intr.c: GDT/IDT, exceptions, handlers ---------------------------------------------- */
struct intr_frame {
    u32 edi, esi, ebp, esp_at_pusha, ebx, edx, ecx, eax;
    u32 vector, error;
    u32 eip, cs, eflags;
};
typedef void (*intr_handler_t)(struct intr_frame *f);
void idt_init(void);                            /* BSP: build and load the IDT */
void idt_load(void);                            /* APs: load the already built IDT */
void idt_load_empty(void);                      /* limit 0: any exception then triple-faults */
void intr_register(u8 vector, intr_handler_t h);
extern volatile u32 intr_unexpected;            /* count of interrupts nobody handled */

/* --- pic.c: 8259A pair -------------------------------------------------------------------- */
void pic_init(u8 master_base, u8 slave_base);   /* ICW1-4, all lines masked */
void pic_mask_all(void);
void pic_unmask(u8 irq);
void pic_mask(u8 irq);
void pic_eoi(u8 irq);
u16 pic_read_isr(void);

/* --- apic.c: local APIC and IOAPIC -------------------------------------------------------- */
#define LAPIC_ID        0x020
#define LAPIC_VERSION   0x030
#define LAPIC_TPR       0x080
#define LAPIC_EOI       0x0B0
#define LAPIC_SVR       0x0F0
#define LAPIC_ESR       0x280
#define LAPIC_ICR_LO    0x300
#define LAPIC_ICR_HI    0x310
#define LAPIC_LVT_TIMER 0x320
#define LAPIC_LVT_LINT0 0x350
#define LAPIC_LVT_LINT1 0x360
#define LAPIC_LVT_ERROR 0x370
#define ICR_FIXED       0x00000000
#define ICR_NMI         0x00000400
#define ICR_INIT        0x00000500
#define ICR_STARTUP     0x00000600
#define ICR_BUSY        0x00001000
#define ICR_ASSERT      0x00004000
#define ICR_LEVEL       0x00008000
extern u32 lapic_base;
u32 lapic_read(u32 reg);
void lapic_write(u32 reg, u32 v);
u32 lapic_id(void);
void lapic_eoi(void);
/* software-enable (SVR), TPR 0, LINT0 ExtINT and LINT1 NMI on the BSP (masked on APs) */
void lapic_enable(bool bsp);
void lapic_send_ipi(u32 apic_id, u32 icr_lo);   /* waits for the previous IPI to be sent */
/* One-shot LAPIC timer at TIMER_VECTOR after about `ms` milliseconds, assuming KVM's 1 GHz
 * APIC bus (divide by 16 = 16 ns per count); only good as a watchdog. */
void lapic_timer_oneshot_ms(u32 ms);
void lapic_timer_stop(void);

#define IOREDTBL_MASKED     (1u << 16)
#define IOREDTBL_LEVEL      (1u << 15)
#define IOREDTBL_ACTIVE_LOW (1u << 13)
extern u32 ioapic_base;
u32 ioapic_read(u32 reg);
void ioapic_write(u32 reg, u32 v);
u32 ioapic_pins(void);                          /* number of redirection entries */
void ioapic_set_redir(u32 pin, u8 vector, u32 flags, u8 dest_apic);
void ioapic_mask(u32 pin);
void ioapic_unmask(u32 pin);
void ioapic_mask_all(void);
/* Route ISA IRQ `irq` (through the MADT's source overrides) to `vector` on CPU `dest`;
 * returns the IOAPIC pin used. */
u32 ioapic_route_isa(u8 irq, u8 vector, u8 dest_apic);

/* --- pit.c: the 8254's channel 0 as a tick source through the PIC ----------------------- */
extern volatile u32 pit_ticks;
extern u32 pit_hz;
/* Program channel 0 (rate generator) and take IRQ0 through the 8259 (PIC must be set up with
 * pic_init(PIC_VECTOR_BASE, ...)). Interrupts are left enabled. */
void pit_start(u32 hz);
void pit_stop(void);
/* Sleep with hlt for at least `ms` milliseconds (pit_start must have been called). */
void pit_sleep_ms(u32 ms);
u32 pit_ms_to_ticks(u32 ms);
/* After pit_start and lapic_enable: true if two ticks arrive before a LAPIC-timer watchdog of
 * about `ms` ms fires (so a machine without a working PIT/8259/LINT0 path fails, not hangs). */
bool pit_verify(u32 ms);

/* --- multiboot.c -------------------------------------------------------------------------- */
#define MB_BOOTLOADER_MAGIC 0x2BADB002
#define MBI_FLAG_MEM     (1u << 0)
#define MBI_FLAG_CMDLINE (1u << 2)
#define MBI_FLAG_MODS    (1u << 3)
#define MBI_FLAG_MMAP    (1u << 6)
#define MBI_FLAG_LOADER  (1u << 9)
struct mb_info {
    u32 flags;
    u32 mem_lower, mem_upper;
    u32 boot_device;
    u32 cmdline;
    u32 mods_count, mods_addr;
    u32 syms[4];
    u32 mmap_length, mmap_addr;
    u32 drives_length, drives_addr;
    u32 config_table;
    u32 boot_loader_name;
    u32 apm_table;
};
struct mb_mmap_entry {
    u32 size;                   /* of the rest of the entry: the next is at +size+4 */
    u64 addr;
    u64 len;
    u32 type;                   /* 1 available, 2 reserved, 3 ACPI reclaimable, 4 NVS, 5 bad */
} __attribute__((packed));
struct mb_module {
    u32 mod_start, mod_end;
    u32 string;
    u32 reserved;
};
extern struct mb_info *mbi;
extern u32 mb_magic;
const char *mb_cmdline(void);                   /* "" when there is none */
/* iterate: e = NULL; while ((e = mb_mmap_next(e))) ... */
struct mb_mmap_entry *mb_mmap_next(struct mb_mmap_entry *prev);
u32 mb_module_count(void);
struct mb_module *mb_module(u32 i);
const char *mmap_type_name(u32 type);
/* Command line: whitespace-separated words, "word" or "key=value". */
bool cmdline_has(const char *word);             /* the exact word, or key of a key=value */
/* value of key=value copied to buf (NUL-terminated); false when absent */
bool cmdline_get(const char *key, char *buf, size_t size);
u32 cmdline_get_u32(const char *key, u32 dflt);

/* --- acpi.c ------------------------------------------------------------------------------- */
struct acpi_rsdp {
    char signature[8];
    u8 checksum;
    char oem_id[6];
    u8 revision;
    u32 rsdt;
    u32 length;
    u64 xsdt;
    u8 ext_checksum;
    u8 reserved[3];
} __attribute__((packed));
struct acpi_header {
    char signature[4];
    u32 length;
    u8 revision;
    u8 checksum;
    char oem_id[6];
    char oem_table_id[8];
    u32 oem_revision;
    u32 creator_id;
    u32 creator_revision;
} __attribute__((packed));
struct madt_iso {
    u8 irq;
    u32 gsi;
    u16 flags;                  /* MPS INTI flags: polarity bits 1:0, trigger bits 3:2 */
};
struct madt_info {
    u32 lapic_addr;
    u32 ncpus;                  /* enabled processor entries (type 0 and 9) */
    u32 apic_ids[MAX_CPUS];
    u32 nioapics;
    u32 ioapic_addr;            /* the first IOAPIC */
    u8 ioapic_id;
    u32 ioapic_gsi_base;
    u32 niso;
    struct madt_iso iso[16];
};
bool acpi_checksum_ok(const void *p, u32 len);
struct acpi_rsdp *acpi_find_rsdp(void);
u32 acpi_table_count(void);
struct acpi_header *acpi_table(u32 i);          /* from the XSDT (or RSDT) */
struct acpi_header *acpi_find_table(const char *sig);   /* also finds "DSDT" via the FADT */
bool acpi_parse_madt(struct madt_info *out);
extern struct madt_info madt;                   /* filled by acpi_parse_madt(&madt) */
/* FADT helpers */
u32 acpi_pm1a_cnt(void);
struct acpi_header *acpi_dsdt(void);
bool acpi_s5_slp_typ(u8 *typa, u8 *typb);
/* DMAR (VT-d spec 8.3): the first DRHD's register base (its flags in *flags if given), or 0
 * without a DMAR table or DRHD */
u64 acpi_dmar_drhd(u8 *flags);

/* --- pci.c -------------------------------------------------------------------------------- */
u32 pci_read32(u8 bus, u8 dev, u8 fn, u8 reg);
u16 pci_read16(u8 bus, u8 dev, u8 fn, u8 reg);
u8 pci_read8(u8 bus, u8 dev, u8 fn, u8 reg);
void pci_write32(u8 bus, u8 dev, u8 fn, u8 reg, u32 v);
void pci_write16(u8 bus, u8 dev, u8 fn, u8 reg, u16 v);
void pci_write8(u8 bus, u8 dev, u8 fn, u8 reg, u8 v);
bool pci_conf1_present(void);                   /* 0xCF8 keeps what is written to it */

/* --- fwcfg.c ------------------------------------------------------------------------------ */
#define FW_CFG_SIGNATURE 0x0000
#define FW_CFG_ID        0x0001
#define FW_CFG_RAM_SIZE  0x0003
#define FW_CFG_NB_CPUS   0x0005
#define FW_CFG_FILE_DIR  0x0019
#define FW_CFG_ID_TRAD   0x1
#define FW_CFG_ID_DMA    0x2
#define FW_CFG_DMA_CTL_ERROR  0x01
#define FW_CFG_DMA_CTL_READ   0x02
#define FW_CFG_DMA_CTL_SKIP   0x04
#define FW_CFG_DMA_CTL_SELECT 0x08
#define FW_CFG_DMA_CTL_WRITE  0x10
struct fwcfg_file {             /* directory entry, converted to host order */
    u32 size;
    u16 select;
    char name[57];
};
bool fwcfg_present(void);                       /* signature "QEMU" */
u32 fwcfg_id(void);
void fwcfg_select(u16 key);
void fwcfg_read(void *buf, u32 len);            /* rep insb from the data port */
void fwcfg_skip(u32 len);
u32 fwcfg_read_le32(u16 key);
u64 fwcfg_read_le64(u16 key);
u16 fwcfg_read_le16(u16 key);
u32 fwcfg_file_count(void);                     /* selects the directory */
void fwcfg_next_file(struct fwcfg_file *f);     /* after fwcfg_file_count */
bool fwcfg_find_file(const char *name, struct fwcfg_file *out);
/* One DMA request; returns the control word as the device left it (0 = success). */
u32 fwcfg_dma(u32 control, u32 length, u64 address);

/* --- power.c ------------------------------------------------------------------------------ */
void exit(int code) __attribute__((noreturn));  /* debug-exit port: status (code << 1) | 1 */
int acpi_poweroff(void);                        /* returns only if it did not work (< 0) */
void reset_i8042(void);
void reset_cf9(void);
void halt_forever(void) __attribute__((noreturn));

/* --- smp.c -------------------------------------------------------------------------------- */
#define AP_TRAMPOLINE_ADDR 0x8000               /* below the multiboot info at 0x30000 */
/* Copy the trampoline and send INIT-SIPI-SIPI to `apic_id`; each AP runs ap_main(apic id)
 * on its own stack with the IDT loaded and its LAPIC enabled.  pit_start() must be running
 * (the 10 ms / 200 us waits use it). */
void smp_start_ap(u32 apic_id, void (*ap_main)(u32 apic_id));

/* --- rtc.c -------------------------------------------------------------------------------- */
struct rtc_time { u32 year, month, day, hour, minute, second; };
u8 cmos_read(u8 reg);
bool rtc_read(struct rtc_time *t);              /* false if the RTC stayed busy */

/* --- the program --------------------------------------------------------------------------- */
int main(struct mb_info *mbi);

#endif
