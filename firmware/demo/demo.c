/* The kvmpy demo guest: what `make run` boots.
 *
 * Prints a banner and a report of the machine as a guest sees it: CPUs (MADT), memory map
 * (multiboot), command line, devices (COM ports, RTC, fw_cfg, ACPI tables, PCI).  Then:
 *   cmdline "batch": prints "demo: powering off" and powers off through ACPI (S5);
 *   otherwise: a prompt on COM1, input by RX interrupts (hlt in between, no polling), with
 *   backspace editing; commands: help, info, echo <text>, poweroff, reset.
 * Exit codes (only when the way out fails): EXIT_STOP_FAILED. */
#include "fw.h"

#define COM COM1_BASE

/* --- report -------------------------------------------------------------------------------- */
static void report_cpus(void)
{
    if (!acpi_parse_madt(&madt)) {
        puts("CPUs: no MADT found");
        return;
    }
    printf("CPUs: %u (APIC ids", madt.ncpus);
    for (u32 i = 0; i < madt.ncpus; i++)
        printf(" %u", madt.apic_ids[i]);
    printf("), LAPIC at 0x%08x, %u IOAPIC(s) (first at 0x%08x, id %u, GSI base %u)\n",
           madt.lapic_addr, madt.nioapics, madt.ioapic_addr, madt.ioapic_id, madt.ioapic_gsi_base);
    printf("      this CPU is APIC id %u\n", lapic_id());
}

static void report_memory(void)
{
    struct mb_mmap_entry *e = NULL;
    u64 total = 0;
    if (!mb_mmap_next(NULL)) {
        if (mbi && (mbi->flags & MBI_FLAG_MEM))
            printf("Memory: no map; %u KiB low, %u KiB high\n", mbi->mem_lower, mbi->mem_upper);
        else
            puts("Memory: no information from the boot loader");
        return;
    }
    puts("Memory map:");
    while ((e = mb_mmap_next(e))) {
        printf("  0x%016llx-0x%016llx  %s\n", e->addr, e->addr + e->len - 1, mmap_type_name(e->type));
        if (e->type == 1)
            total += e->len;
    }
    u32 rem;
    u64 mib = udiv64(total, 1 << 20, &rem);
    printf("  total RAM: %llu MiB\n", mib);
}

static void report_cmdline(void)
{
    printf("Command line: '%s'\n", mb_cmdline());
    if (mbi && (mbi->flags & MBI_FLAG_LOADER) && mbi->boot_loader_name)
        printf("Boot loader: %s\n", (const char *)mbi->boot_loader_name);
    u32 n = mb_module_count();
    for (u32 i = 0; i < n; i++) {
        struct mb_module *m = mb_module(i);
        printf("Module %u: 0x%08x-0x%08x '%s'\n", i, m->mod_start, m->mod_end,
               m->string ? (const char *)m->string : "");
    }
}

static bool uart_scratch_ok(u16 base)
{
    u8 old = inb(base + UART_SCR);
    outb(base + UART_SCR, 0x55);
    bool ok = inb(base + UART_SCR) == 0x55;
    outb(base + UART_SCR, 0xAA);
    ok = ok && inb(base + UART_SCR) == 0xAA;
    outb(base + UART_SCR, old);
    return ok;
}

static void report_devices(void)
{
    puts("Devices:");
    printf("  COM1 (0x3f8): %s\n", uart_scratch_ok(COM1_BASE) ? "16550 UART (scratch register works)" : "absent");
    printf("  COM2 (0x2f8): %s\n", uart_scratch_ok(COM2_BASE) ? "16550 UART (scratch register works)" : "absent");

    struct rtc_time t;
    if (rtc_read(&t))
        printf("  RTC: %04u-%02u-%02u %02u:%02u:%02u\n", t.year, t.month, t.day, t.hour, t.minute, t.second);
    else
        puts("  RTC: busy or absent");

    if (fwcfg_present()) {
        u32 id = fwcfg_id();
        u16 cpus = fwcfg_read_le16(FW_CFG_NB_CPUS);
        u64 ram = fwcfg_read_le64(FW_CFG_RAM_SIZE);
        printf("  fw_cfg: signature QEMU, %s, %u CPUs, %llu MiB RAM, %u files\n",
               id & FW_CFG_ID_DMA ? "DMA" : "no DMA", cpus, ram >> 20, fwcfg_file_count());
    } else {
        puts("  fw_cfg: absent");
    }

    struct acpi_rsdp *r = acpi_find_rsdp();
    if (r) {
        char oem[7];
        memcpy(oem, r->oem_id, 6);
        oem[6] = '\0';
        printf("  ACPI: RSDP at 0x%08x, revision %u, OEM '%s'\n", (u32)r, r->revision, oem);
        u32 n = acpi_table_count();
        for (u32 i = 0; i <= n; i++) {
            struct acpi_header *h = i < n ? acpi_table(i) : acpi_dsdt();
            if (!h)
                continue;
            char sig[5], id[7], tid[9];
            memcpy(sig, h->signature, 4), sig[4] = '\0';
            memcpy(id, h->oem_id, 6), id[6] = '\0';
            memcpy(tid, h->oem_table_id, 8), tid[8] = '\0';
            printf("    %s at 0x%08x, %5u bytes, rev %u, OEM '%s' '%s'%s\n", sig, (u32)h, h->length,
                   h->revision, id, tid, acpi_checksum_ok(h, h->length) ? "" : " (bad checksum)");
        }
    } else {
        puts("  ACPI: no RSDP");
    }

    if (pci_conf1_present()) {
        u32 id = pci_read32(0, 0, 0, 0);
        if ((id & 0xFFFF) != 0xFFFF)
            printf("  PCI: host bridge %04x:%04x at 00:00.0 (config mechanism #1)\n", id & 0xFFFF, id >> 16);
        else
            puts("  PCI: 0xCF8 answers but 00:00.0 is empty");
        for (u32 dev = 1; dev < 32; dev++) {
            u32 vd = pci_read32(0, dev, 0, 0);
            if ((vd & 0xFFFF) == 0xFFFF)
                continue;
            u32 cls = pci_read32(0, dev, 0, 8) >> 8;
            printf("    00:%02x.0 %04x:%04x class %06x\n", dev, vd & 0xFFFF, vd >> 16, cls);
        }
    } else {
        puts("  PCI: no host bridge at 0xCF8");
    }
}

static void report(void)
{
    report_cpus();
    report_memory();
    report_cmdline();
    report_devices();
}

/* --- ways out ----------------------------------------------------------------------------- */
static void power_off(void)
{
    puts("demo: powering off");
    int r = acpi_poweroff();
    printf("demo: ACPI poweroff failed (%d)\n", r);
    exit(EXIT_STOP_FAILED);
}

/* --- interactive prompt ------------------------------------------------------------------- */
static volatile u8 rx_ring[256];
static volatile u32 rx_head, rx_tail;
static bool use_ioapic;

static void uart_irq(struct intr_frame *f)
{
    for (int loops = 0; loops < 32; loops++) {
        u8 iir = inb(COM + UART_IIR);
        if (iir & UART_IIR_NO_INT)
            break;
        if ((iir & UART_IIR_ID) == UART_IIR_RDI || (iir & UART_IIR_ID) == UART_IIR_CTI) {
            while (inb(COM + UART_LSR) & UART_LSR_DR) {
                u8 c = inb(COM + UART_RBR);
                if (rx_head - rx_tail < sizeof(rx_ring))
                    rx_ring[rx_head++ % sizeof(rx_ring)] = c;
            }
        } else {
            (void)inb(COM + UART_LSR);
            (void)inb(COM + UART_MSR);
        }
    }
    if (f->vector == IOAPIC_VECTOR_BASE + 4)
        lapic_eoi();
    else
        pic_eoi(4);
}

static void setup_rx_interrupts(void)
{
    pic_init(PIC_VECTOR_BASE, PIC_VECTOR_BASE + 8);
    lapic_enable(true);
    intr_register(IOAPIC_VECTOR_BASE + 4, uart_irq);
    intr_register(PIC_VECTOR_BASE + 4, uart_irq);
    use_ioapic = madt.nioapics > 0;
    if (use_ioapic)
        ioapic_route_isa(4, IOAPIC_VECTOR_BASE + 4, lapic_id());
    else
        pic_unmask(4);
    (void)inb(COM + UART_IIR);
    outb(COM + UART_IER, UART_IER_RDI);
    sti();
}

static char getc_sleep(void)
{
    cli();
    while (rx_tail == rx_head) {
        sti_hlt();
        cli();
    }
    char c = rx_ring[rx_tail++ % sizeof(rx_ring)];
    sti();
    return c;
}

static void help(void)
{
    puts("commands: help, info, echo <text>, poweroff, reset");
}

static void run_command(char *line)
{
    while (*line == ' ')
        line++;
    size_t n = strlen(line);
    while (n && line[n - 1] == ' ')
        line[--n] = '\0';
    if (!n)
        return;
    if (!strcmp(line, "help"))
        help();
    else if (!strcmp(line, "info"))
        report();
    else if (!strncmp(line, "echo", 4) && (line[4] == ' ' || !line[4]))
        printf("%s\n", line[4] ? line + 5 : "");
    else if (!strcmp(line, "poweroff"))
        power_off();
    else if (!strcmp(line, "reset")) {
        puts("demo: resetting");
        reset_i8042();
        reset_cf9();
        puts("demo: reset failed");
    } else
        printf("unknown command '%s' (try help)\n", line);
}

static void prompt_loop(void)
{
    static char line[128];
    size_t len = 0;
    char last = 0;
    setup_rx_interrupts();
    printf("demo: type 'help'; input arrives by interrupts (%s)\n", use_ioapic ? "IOAPIC" : "8259");
    printf("kvmpy> ");
    for (;;) {
        char c = getc_sleep();
        if (c == '\n' && last == '\r') {        /* CR LF: the CR ended the line already */
            last = c;
            continue;
        }
        last = c;
        if (c == '\r' || c == '\n') {
            printf("\n");
            line[len] = '\0';
            run_command(line);
            len = 0;
            printf("kvmpy> ");
        } else if (c == 0x7F || c == 0x08) {    /* DEL or BS */
            if (len) {
                len--;
                printf("\b \b");
            }
        } else if (c == 0x15) {                 /* ^U: kill the line */
            while (len) {
                len--;
                printf("\b \b");
            }
        } else if (isprint(c) && len + 1 < sizeof(line)) {
            line[len++] = c;
            printf("%c", c);
        }
    }
}

int main(struct mb_info *info)
{
    (void)info;
    puts("");
    puts("kvmpy demo guest");
    puts("================");
    report();
    if (cmdline_has("batch"))
        power_off();
    prompt_loop();
    return EXIT_PASS;
}
