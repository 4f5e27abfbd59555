/* Ways out: debug-exit, ACPI S5, i8042 reset, 0xCF9 reset, halt. */
#include "fw.h"

void halt_forever(void)
{
    for (;;) {
        cli();
        hlt();
    }
}

void exit(int code)
{
    outl(DEBUG_EXIT_PORT, (u32)code);       /* the VMM ends with status (code << 1) | 1 */
    halt_forever();                         /* no debug-exit device: stop here */
}

int acpi_poweroff(void)
{
    u32 port = acpi_pm1a_cnt();
    if (!port)
        return -1;
    u8 typa = 0, typb = 0;
    if (!acpi_s5_slp_typ(&typa, &typb))
        return -2;
    /* as ACPI 7.4.2 asks: SLP_TYP first, then SLP_EN with it; keep the other bits */
    u16 v = inw(port) & ~(0x1C00 | 0x2000);
    v |= (u16)(typa & 7) << 10;
    outw(port, v);
    outw(port, v | 0x2000);
    /* a VMM stops the machine during the write; give a slow one a moment */
    for (int i = 0; i < 1000; i++)
        cpu_relax();
    return -3;
}

void reset_i8042(void)
{
    for (int i = 0; i < 10000 && (inb(I8042_CMD) & 0x02); i++)     /* input buffer full */
        cpu_relax();
    outb(I8042_CMD, 0xFE);                  /* pulse the reset line */
}

void reset_cf9(void)
{
    outb(RESET_CONTROL_PORT, 0x06);         /* full reset (bit 1) + do it now (bit 2) */
}
