/* Output helpers shared by the programs: numbers in hex and decimal, newlines. All of them
 * preserve every register (the programs keep values in registers across prints). */

#include "bootsect.h"

    .code16
    .text
    .globl put_hex8, put_hex16, put_hex32, put_dec, newline

/* put_hex32: EAX as 0x%08x. */
put_hex32:
    push %eax
    PRINT "0x"
    ror $16, %eax
    call .Lhex16
    ror $16, %eax
    call .Lhex16
    pop %eax
    ret

/* put_hex16: AX as 0x%04x. */
put_hex16:
    PRINT "0x"
    jmp .Lhex16

/* put_hex8: AL as 0x%02x. */
put_hex8:
    PRINT "0x"
    jmp .Lhex8

.Lhex16:
    xchg %al, %ah
    call .Lhex8
    xchg %al, %ah
    /* fall through */
.Lhex8:
    push %ax
    push %ax
    shr $4, %al
    call .Lnibble
    pop %ax
    call .Lnibble
    pop %ax
    ret

.Lnibble:
    push %ax
    and $0x0F, %al
    add $'0', %al
    cmp $'9', %al
    jbe 1f
    add $'a' - '9' - 1, %al
1:  call putc
    pop %ax
    ret

/* put_dec: EAX as an unsigned decimal number. */
put_dec:
    push %eax
    push %ecx
    push %edx
    push %bx
    mov $10, %ecx
    xor %bx, %bx
2:  xor %edx, %edx
    div %ecx
    push %dx
    inc %bx
    test %eax, %eax
    jnz 2b
3:  pop %ax
    add $'0', %al
    call putc
    dec %bx
    jnz 3b
    pop %bx
    pop %edx
    pop %ecx
    pop %eax
    ret

newline:
    push %ax
    mov $'\n', %al
    call putc
    pop %ax
    ret

/* enter_unreal: load FS with a flat 4 GiB data segment in protected mode and return to real
 * mode without reloading it, so FS keeps the 4 GiB limit (base 0). Interrupts must be off. */
    .globl enter_unreal
enter_unreal:
    push %eax
    push %bx
    lgdt unreal_gdt_ptr
    mov %cr0, %eax
    or $1, %al
    mov %eax, %cr0
    jmp 1f
1:  mov $0x08, %bx
    mov %bx, %fs
    and $0xFE, %al
    mov %eax, %cr0
    jmp 2f
2:  pop %bx
    pop %eax
    ret


    .section .rodata
    .balign 8
unreal_gdt:
    .quad 0
    .quad 0x00CF92000000FFFF    /* flat data: base 0, limit 4 GiB, writable */
unreal_gdt_end:
unreal_gdt_ptr:
    .word unreal_gdt_end - unreal_gdt - 1
    .long unreal_gdt
    .text
