/* int13: the BIOS disk services on the boot disk, checked against the image from the host.
 *
 * Why: a boot loader sees the disk only through int 13h, so this is what every MBR, syslinux
 * and GRUB stage depends on. The program uses the CHS calls (AH=02 read, AH=03 write, AH=08
 * geometry) and the EDD calls (AH=41 check, AH=42 read, AH=43 write, AH=48 parameters), on
 * DL as the BIOS gave it, and prints what it read as checksums so that the test can compare
 * them with the image file; what it writes it reads back, and the test finds it on the file.
 *
 * Output on COM1, one record a line (numbers decimal unless 0x-prefixed):
 *   INT13 drive=0x80
 *   GEOM cyls=C heads=H spt=S drives=N            (AH=08)
 *   CHS READ lba=L n=N chs=C/H/S sum=0xXXXXXXXX    (AH=02, CHS from GEOM)
 *   EXT version=0xVV api=0xAAAA                    (AH=41)
 *   PARAMS size=N sectors=N bps=N                  (AH=48)
 *   LBA READ lba=L n=N sum=0x...                   (AH=42)
 *   BAD LBA lba=L status=0xSS                      (AH=42 past the end: must fail)
 *   CHS WRITE lba=L n=N chs=C/H/S sum=0x... readback OK
 *   LBA WRITE lba=L n=N sum=0x... readback OK
 *   INT13 OK
 * The checksum over bytes b: a = s = 0; for each b: a += b; s += a (32-bit, wrapping); s.
 * The written sectors hold pattern(j) = (5*j + 17*(j >> 9) + seed) & 0xFF for byte j of the
 * transfer, seed 0x77 for the CHS write and 0x21 for the LBA write. */

#include "bootsect.h"

#define READ_SEG 0x2000         /* reads land at 0x20000 (64 KiB available) */
#define PAT_SEG  0x3000         /* the pattern to write, at 0x30000 */
#define BACK_SEG 0x4000         /* what is read back, at 0x40000 */

#define CHS_WRITE_LBA 100
#define CHS_WRITE_N 2
#define CHS_WRITE_SEED 0x77
#define LBA_WRITE_LBA 6000
#define LBA_WRITE_N 8
#define LBA_WRITE_SEED 0x21

    .code16
    .text
    .globl main

/* CHS_READ lba, n: read with AH=02 into READ_SEG and print the checksum. */
.macro CHS_READ lba, n
    movl $\lba, io_lba
    movw $\n, io_count
    movw $READ_SEG, io_seg
    movb $0x02, io_cmd
    PRINT "CHS READ"
    call chs_io
    call print_read_sum
.endm

/* LBA_READ: read io_lba/io_count (set by the caller) with AH=42 and print the checksum. */
.macro LBA_READ
    movw $READ_SEG, io_seg
    movb $0x42, io_cmd
    PRINT "LBA READ"
    call ext_io
    call print_read_sum
.endm

main:
    PRINT "INT13 drive="
    mov boot_drive, %al
    call put_hex8
    call newline

    /* AH=08: the geometry every CHS call below is computed with */
    mov $0x08, %ah
    mov boot_drive, %dl
    xor %di, %di
    int $0x13
    jnc 1f
    mov %ah, io_status
    movb $0x08, io_cmd
    jmp io_failed
1:  push %ds
    pop %es                     /* AH=08 may point ES:DI at a floppy table */
    movzbw %dh, %ax
    inc %ax
    mov %ax, heads
    movzbw %cl, %ax
    and $0x3F, %ax
    mov %ax, spt
    movzbw %cl, %ax
    shl $2, %ax
    and $0x300, %ax
    mov %ch, %al
    inc %ax
    mov %ax, cyls
    mov %dl, %bl                /* number of hard disks */
    PRINT "GEOM cyls="
    movzwl cyls, %eax
    call put_dec
    PRINT " heads="
    movzwl heads, %eax
    call put_dec
    PRINT " spt="
    movzwl spt, %eax
    call put_dec
    PRINT " drives="
    movzbl %bl, %eax
    call put_dec
    call newline
    cmpw $0, spt
    jne 2f
    FAIL EXIT_FAIL, "AH=08 reported 0 sectors per track"
2:
    /* CHS reads: head 1 of cylinder 0, cylinder 1, the last cylinders */
    CHS_READ 64, 8
    CHS_READ 1134, 8
    CHS_READ 7938, 8

    /* AH=41: EDD present, with the DAP (fixed disk access) subset */
    mov $0x41, %ah
    mov $0x55AA, %bx
    mov boot_drive, %dl
    int $0x13
    jnc 3f
    FAIL EXIT_MISSING, "int 13h AH=41: no EDD extensions"
3:  cmp $0xAA55, %bx
    je 4f
    FAIL EXIT_FAIL, "int 13h AH=41 did not answer BX=AA55"
4:  PRINT "EXT version="
    mov %ah, %al
    call put_hex8
    PRINT " api="
    mov %cx, %ax
    call put_hex16
    call newline
    test $1, %cx
    jnz 5f
    FAIL EXIT_MISSING, "int 13h AH=41: the DAP functions (42h-44h, 47h, 48h) are not supported"

    /* AH=48: drive parameters, for the disk's size */
5:  movw $0x1E, params
    mov $params, %si
    mov $0x48, %ah
    mov boot_drive, %dl
    int $0x13
    jnc 6f
    mov %ah, io_status
    movb $0x48, io_cmd
    jmp io_failed
6:  PRINT "PARAMS size="
    movzwl params, %eax
    call put_dec
    PRINT " sectors="
    mov params + 0x10, %eax
    mov %eax, total
    call put_dec
    PRINT " bps="
    movzwl params + 0x18, %eax
    call put_dec
    call newline
    cmpl $0, params + 0x14
    je 7f
    FAIL EXIT_FAIL, "AH=48 reports more than 2^32 sectors for a small disk"

    /* AH=42 reads: 32 KiB at once, and the disk's last sectors */
7:  movl $2048, io_lba
    movw $64, io_count
    LBA_READ
    mov total, %eax
    sub $4, %eax
    mov %eax, io_lba
    movw $4, io_count
    LBA_READ

    /* past the end: at the first LBA that does not exist, and far beyond it */
    mov total, %eax
    call bad_read
    mov total, %eax
    add $0x10000, %eax
    call bad_read

    /* AH=03 write, AH=02 read back */
    mov $CHS_WRITE_N * 512, %cx
    mov $CHS_WRITE_SEED, %dl
    call gen_pattern
    movl $CHS_WRITE_LBA, io_lba
    movw $CHS_WRITE_N, io_count
    movw $PAT_SEG, io_seg
    movb $0x03, io_cmd
    PRINT "CHS WRITE"
    call chs_io
    call clear_back
    movw $BACK_SEG, io_seg
    movb $0x02, io_cmd
    PRINT " read"
    call chs_io
    call check_back

    /* AH=43 write, AH=42 read back */
    mov $LBA_WRITE_N * 512, %cx
    mov $LBA_WRITE_SEED, %dl
    call gen_pattern
    movl $LBA_WRITE_LBA, io_lba
    movw $LBA_WRITE_N, io_count
    movw $PAT_SEG, io_seg
    movb $0x43, io_cmd
    PRINT "LBA WRITE"
    call ext_io
    call clear_back
    movw $BACK_SEG, io_seg
    movb $0x42, io_cmd
    PRINT " read"
    call ext_io
    call check_back

    PRINTLN "INT13 OK"
    ret

/* bad_read: AH=42 of one sector at LBA EAX must fail with CF set. */
bad_read:
    mov %eax, io_lba
    movw $1, io_count
    movw $READ_SEG, io_seg
    movb $0x42, io_cmd
    PRINT "BAD LBA"
    call ext_io_raw
    jc 1f
    call newline
    FAIL EXIT_FAIL, "int 13h AH=42 past the end of the disk succeeded"
1:  PRINT " status="
    mov io_status, %al
    call put_hex8
    call newline
    ret

/* lba_to_chs: EAX = LBA -> chs_c, chs_h, chs_s with the AH=08 geometry. */
lba_to_chs:
    push %eax
    push %ebx
    push %edx
    movzwl spt, %ebx
    xor %edx, %edx
    div %ebx
    inc %dx
    mov %dx, chs_s
    movzwl heads, %ebx
    xor %edx, %edx
    div %ebx
    mov %dx, chs_h
    mov %ax, chs_c
    pop %edx
    pop %ebx
    pop %eax
    ret

/* print_lba_n: " lba=L n=N" for io_lba, io_count. */
print_lba_n:
    push %eax
    PRINT " lba="
    mov io_lba, %eax
    call put_dec
    PRINT " n="
    movzwl io_count, %eax
    call put_dec
    pop %eax
    ret

/* chs_io: int 13h function io_cmd (02 or 03) on io_lba/io_count at io_seg:0000, addressed by
 * CHS; prints " lba=L n=N chs=C/H/S". Fails the program on an error or a short transfer. */
chs_io:
    call print_lba_n
    mov io_lba, %eax
    call lba_to_chs
    PRINT " chs="
    movzwl chs_c, %eax
    call put_dec
    PRINT "/"
    movzwl chs_h, %eax
    call put_dec
    PRINT "/"
    movzwl chs_s, %eax
    call put_dec
    mov chs_c, %ax
    mov %al, %ch
    shr $2, %ax
    and $0xC0, %al
    or chs_s, %al
    mov %al, %cl
    mov chs_h, %dh
    mov boot_drive, %dl
    mov io_cmd, %ah
    mov io_count, %al
    push %es
    mov io_seg, %bx
    mov %bx, %es
    xor %bx, %bx
    int $0x13
    pop %es
    mov %ah, io_status
    jc io_failed
    cmp io_count, %al
    je 1f
    mov %al, io_status
    call newline
    FAIL EXIT_FAIL, "the BIOS transferred fewer sectors than asked for (count in status)"
1:  ret

/* ext_io_raw: int 13h function io_cmd (42 or 43) through a disk address packet; prints
 * " lba=L n=N"; returns the BIOS's CF, with its AH in io_status. */
ext_io_raw:
    call print_lba_n
    movb $0x10, dap
    movb $0, dap + 1
    mov io_count, %ax
    mov %ax, dap + 2
    movw $0, dap + 4
    mov io_seg, %ax
    mov %ax, dap + 6
    mov io_lba, %eax
    mov %eax, dap + 8
    movl $0, dap + 12
    mov $dap, %si
    mov io_cmd, %ah
    xor %al, %al                /* AH=43: write without verify */
    mov boot_drive, %dl
    int $0x13
    mov %ah, io_status
    ret

/* ext_io: ext_io_raw that fails the program on an error or a short transfer. */
ext_io:
    call ext_io_raw
    jc io_failed
    mov dap + 2, %ax
    cmp io_count, %ax
    je 1f
    mov %al, io_status
    call newline
    FAIL EXIT_FAIL, "the BIOS transferred fewer sectors than asked for (count in status)"
1:  ret

io_failed:
    call newline
    PRINT "FAIL: int 13h AH="
    mov io_cmd, %al
    call put_hex8
    PRINT " failed, status="
    mov io_status, %al
    call put_hex8
    call newline
    mov $EXIT_FAIL, %al
    jmp exit

/* print_read_sum: " sum=0x..." of io_count sectors at io_seg:0000, and a newline. */
print_read_sum:
    push %es
    mov io_seg, %ax
    mov %ax, %es
    mov io_count, %cx
    shl $9, %cx
    call sum_buffer
    pop %es
    PRINT " sum="
    call put_hex32
    call newline
    ret

/* sum_buffer: EAX = the checksum of CX bytes at ES:0000 (CX = 0 means 64 KiB). */
sum_buffer:
    push %ebx
    push %edx
    push %cx
    push %di
    xor %eax, %eax
    xor %ebx, %ebx
    xor %edx, %edx
    xor %di, %di
1:  mov %es:(%di), %bl
    add %ebx, %eax
    add %eax, %edx
    inc %di
    loop 1b
    mov %edx, %eax
    pop %di
    pop %cx
    pop %edx
    pop %ebx
    ret

/* gen_pattern: CX bytes of pattern(j) with seed DL at PAT_SEG:0000. */
gen_pattern:
    push %ax
    push %bx
    push %cx
    push %di
    push %es
    mov $PAT_SEG, %ax
    mov %ax, %es
    xor %di, %di
1:  mov %di, %ax
    shl $2, %ax
    add %di, %ax                /* 5*j */
    mov %di, %bx
    shr $9, %bx
    mov %bl, %bh
    shl $4, %bl
    add %bh, %bl                /* 17*(j >> 9) */
    add %bl, %al
    add %dl, %al
    stosb
    loop 1b
    pop %es
    pop %di
    pop %cx
    pop %bx
    pop %ax
    ret

/* clear_back: zero io_count sectors at BACK_SEG:0000 (so a read that did nothing shows). */
clear_back:
    push %es
    mov $BACK_SEG, %ax
    mov %ax, %es
    xor %di, %di
    mov io_count, %cx
    shl $9, %cx
    xor %al, %al
    rep stosb
    pop %es
    ret

/* check_back: io_count sectors at BACK_SEG equal PAT_SEG; prints " sum=0x... readback OK". */
check_back:
    push %es
    mov $PAT_SEG, %ax
    mov %ax, %es
    mov io_count, %cx
    shl $9, %cx
    call sum_buffer
    pop %es
    PRINT " sum="
    call put_hex32
    push %ds
    push %es
    mov $PAT_SEG, %ax
    mov %ax, %ds
    mov $BACK_SEG, %ax
    mov %ax, %es
    xor %si, %si
    xor %di, %di
    mov %cs:io_count, %cx
    shl $9, %cx
    repe cmpsb
    pop %es
    pop %ds
    je 1f
    call newline
    FAIL EXIT_FAIL, "the sectors read back differ from those written"
1:  PRINTLN " readback OK"
    ret

    .bss
io_cmd:    .byte 0
io_status: .byte 0
    .balign 4
io_lba:    .long 0
total:     .long 0
io_count:  .word 0
io_seg:    .word 0
heads:     .word 0
spt:       .word 0
cyls:      .word 0
chs_c:     .word 0
chs_h:     .word 0
chs_s:     .word 0
    .balign 16
dap:       .fill 16
params:    .fill 0x42
