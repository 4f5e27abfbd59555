/* Stage 0: the 512-byte boot sector every program starts with.
 *
 * SeaBIOS (or any PC BIOS) loads sector 0 to 0x7C00 and jumps there with the boot drive in DL.
 * This code sets up flat real-mode segments and a stack below 0x7C00, loads the program's
 * further sectors (_extra_sectors, computed by bootsect.ld) to 0x7E00 with int 13h AH=02 from
 * cylinder 0, head 0, sector 2, clears .bss and calls main. The serial output routines live
 * here too, so that a failed load can still be reported. */

#include "bootsect.h"

    .code16
    .section .boot, "ax"
    .globl _start, putc, puts, exit, boot_drive

_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7C00, %sp
    ljmp $0, $1f                /* CS:IP = 0000:7Cxx, whatever 07C0:0000 style the BIOS used */
1:  sti
    cld
    mov %dl, boot_drive

    mov $_extra_sectors, %ax
    test %ax, %ax
    jz 3f
    mov $3, %di                 /* tries */
2:  mov $_extra_sectors, %ax
    mov $0x02, %ah              /* read sectors, AL = count */
    mov $0x0002, %cx            /* cylinder 0, sector 2 */
    xor %dh, %dh                /* head 0 */
    mov boot_drive, %dl
    mov $0x7E00, %bx            /* ES:BX = 0000:7E00 */
    int $0x13
    jnc 3f
    xor %ah, %ah                /* reset the drive and try again */
    mov boot_drive, %dl
    int $0x13
    dec %di
    jnz 2b
    mov $.Lload_failed, %si
    call puts
    mov $EXIT_MISSING, %al
    jmp exit

3:  mov $_bss_start, %di        /* zero .bss (ES = 0) */
    mov $_bss_end, %cx
    sub %di, %cx
    xor %al, %al
    rep stosb
    call main
    mov $EXIT_PASS, %al
    /* fall through */

/* exit: AL = code. Write it to the debug-exit port; if the machine has none, stop here. */
exit:
    out %al, $DEBUG_EXIT_PORT
    cli
4:  hlt
    jmp 4b

/* putc: AL to COM1, after waiting (boundedly) for the transmitter holding register. */
putc:
    push %ax
    push %cx
    push %dx
    mov %al, %ah
    mov $COM1 + 5, %dx          /* line status register */
    mov $0x1000, %cx
5:  in %dx, %al
    test $0x20, %al             /* THRE */
    jnz 6f
    loop 5b
6:  mov $COM1, %dx
    mov %ah, %al
    out %al, %dx
    pop %dx
    pop %cx
    pop %ax
    ret

/* puts: the NUL-terminated string at DS:SI to COM1. Preserves every register. */
puts:
    push %ax
    push %si
7:  lodsb
    test %al, %al
    jz 8f
    call putc
    jmp 7b
8:  pop %si
    pop %ax
    ret

.Lload_failed:
    .asciz "FAIL: int 13h AH=02 could not load the program's sectors\n"

boot_drive:
    .byte 0
