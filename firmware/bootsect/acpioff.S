/* acpioff: power the PC off the way an ACPI OS does, through the tables SeaBIOS installed.
 *
 * Finds the RSDP in the BIOS area (0xE0000-0xFFFFF, 16-byte steps), follows the RSDT to the
 * FADT ("FACP"), reads PM1a_CNT_BLK from it and the SLP_TYP of \_S5 from the DSDT (the bytes
 * after "_S5_" and a Package: PackageOp, PkgLength, NumElements, then the first element,
 * BytePrefix-encoded or a bare Zero/One), and writes SLP_TYP << 10 | SLP_EN to PM1a_CNT.
 * The tables live above 1 MiB, so they are read through FS in unreal mode. Output on COM1:
 *   ACPI RSDP at 0x........, RSDT 0x........, FADT 0x........, PM1a_CNT 0x...., S5 SLP_TYP 0x..
 *   ACPI POWEROFF
 * and then the machine must be off; if it is still running the program fails. */

#include "bootsect.h"

    .code16
    .text
    .globl main
main:
    cli
    call enter_unreal
    /* 1. the RSDP signature "RSD PTR " in 0xE0000-0xFFFFF */
    mov $0xE0000, %esi
1:  cmpl $0x20445352, %fs:(%esi)        /* "RSD " */
    jne 2f
    cmpl $0x20525450, %fs:4(%esi)       /* "PTR " */
    je 3f
2:  add $16, %esi
    cmp $0x100000, %esi
    jb 1b
    FAIL EXIT_MISSING, "no RSDP in the BIOS area"
3:  PRINT "ACPI RSDP at "
    mov %esi, %eax
    call put_hex32
    mov %fs:16(%esi), %ebx              /* RsdtAddress */
    PRINT ", RSDT "
    mov %ebx, %eax
    call put_hex32
    /* 2. the FADT among the RSDT's 32-bit entries */
    mov %fs:4(%ebx), %ecx               /* RSDT length */
    lea 36(%ebx), %edi
    add %ebx, %ecx
4:  cmp %ecx, %edi
    jae 9f
    mov %fs:(%edi), %edx
    cmpl $0x50434146, %fs:(%edx)        /* "FACP" */
    je 5f
    add $4, %edi
    jmp 4b
9:  FAIL EXIT_MISSING, "no FADT in the RSDT"
5:  PRINT ", FADT "
    mov %edx, %eax
    call put_hex32
    mov %fs:64(%edx), %eax              /* PM1a_CNT_BLK */
    mov %ax, pm1a_cnt
    PRINT ", PM1a_CNT "
    call put_hex16
    /* 3. SLP_TYP of \_S5 in the DSDT */
    mov %fs:40(%edx), %ebx              /* DSDT */
    mov %fs:4(%ebx), %ecx
    add %ebx, %ecx
6:  cmp %ecx, %ebx
    jae 8f
    cmpl $0x5F35535F, %fs:(%ebx)        /* "_S5_" */
    je 7f
    inc %ebx
    jmp 6b
8:  FAIL EXIT_MISSING, "no _S5_ in the DSDT"
7:  cmpb $0x12, %fs:4(%ebx)             /* PackageOp */
    jne 8b
    movzbl %fs:5(%ebx), %eax            /* PkgLength lead byte: bits 7-6 say how many follow */
    shr $6, %al
    add %eax, %ebx
    mov %fs:7(%ebx), %al                /* first element (after NumElements) */
    cmp $0x0A, %al                      /* BytePrefix */
    jne 10f
    mov %fs:8(%ebx), %al
10: and $7, %al
    mov %al, slp_typ
    PRINT ", S5 SLP_TYP "
    call put_hex8
    call newline
    /* 4. off */
    PRINTLN "ACPI POWEROFF"
    movzbw slp_typ, %ax
    shl $10, %ax
    or $(1 << 13), %ax
    mov pm1a_cnt, %dx
    out %ax, %dx
    FAIL EXIT_FAIL, "still running after the S5 request"

    .bss
pm1a_cnt: .word 0
slp_typ:  .byte 0
