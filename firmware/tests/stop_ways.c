/* stop_ways: stop the machine in the way the command line names.
 *
 *   poweroff  ACPI S5: SLP_TYP from the DSDT's \_S5 package, SLP_EN, into PM1a_CNT (FADT)
 *   reset     i8042 "pulse reset line" command: 0xFE to port 0x64
 *   cf9       reset control register: 0x06 to port 0xCF9
 *   triple    load an empty IDT and divide by zero: #DE -> #DF -> triple fault (shutdown)
 *   halt      cli; hlt forever (the VMM sees a halted vCPU that can never wake)
 *
 * Each prints "stop_ways: <way>" before doing it.  A way that does not stop the machine is
 * reported ("FAIL: ...") and the program exits with EXIT_STOP_FAILED (4) through the debug
 * port; an unknown or missing way exits with EXIT_BAD_SETUP (2). */
#include "fw.h"

static const char *const ways[] = { "poweroff", "reset", "cf9", "triple", "halt" };

static void settle(void)
{
    /* a VMM stops the vCPU at the write; give a slow one a few hundred instructions */
    for (int i = 0; i < 200; i++)
        cpu_relax();
}

int main(struct mb_info *info)
{
    (void)info;
    const char *way = NULL;
    for (u32 i = 0; i < ARRAY_SIZE(ways); i++)
        if (cmdline_has(ways[i]))
            way = ways[i];
    if (!way) {
        printf("stop_ways: no way on the command line '%s'; expected one of "
               "poweroff reset cf9 triple halt\n", mb_cmdline());
        return EXIT_BAD_SETUP;
    }
    printf("stop_ways: %s\n", way);

    if (!strcmp(way, "poweroff")) {
        u8 a = 0, b = 0;
        u32 port = acpi_pm1a_cnt();
        bool s5 = acpi_s5_slp_typ(&a, &b);
        printf("stop_ways: PM1a_CNT port 0x%x, _S5 %s SLP_TYPa %u\n", port, s5 ? "found" : "missing", a);
        int r = acpi_poweroff();
        printf("FAIL: ACPI poweroff returned %d\n", r);
    } else if (!strcmp(way, "reset")) {
        reset_i8042();
        settle();
        puts("FAIL: the i8042 reset did not stop the machine");
    } else if (!strcmp(way, "cf9")) {
        reset_cf9();
        settle();
        puts("FAIL: the 0xCF9 reset did not stop the machine");
    } else if (!strcmp(way, "triple")) {
        volatile u32 zero = 0;
        u32 dividend = 1, q;
        idt_load_empty();
        __asm__ __volatile__("divl %2" : "=a"(q) : "a"(dividend), "rm"(zero), "d"(0) : "cc");
        (void)q;
        idt_init();
        puts("FAIL: the division by zero did not triple-fault");
    } else {
        halt_forever();
    }
    exit(EXIT_STOP_FAILED);
}
