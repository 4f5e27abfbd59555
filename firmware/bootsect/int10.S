/* int10: VGA and VBE mode switches through the BIOS, with the screen checked from the host.
 *
 * Why: boot loaders and DOS-era programs draw through int 10h and straight into video memory;
 * what they draw must be what kvmpy's VGA shows (text_screen, render, screenshots). Each
 * phase sets a mode through the BIOS, draws known text or pixels, and writes a marker byte to
 * the probe port 0x7F0, where the test (which registers a device there) captures the screen
 * at that moment. Phases and markers:
 *
 *   0x03  mode 3 (AX=0003): "KVMPY TELETYPE LINE 1" and "second line via int 10h AH=0E" on
 *         rows 0-1 (AH=0E teletype), "XXXXX" in attribute 0x4E at row 5 col 10 (AH=02 then
 *         AH=09), "KVMPY DIRECT B800" in attribute 0x1F at row 12 col 20 (stored at 0xB8000)
 *   0x12  mode 12h, 640x480 16 colours: rows 0-15 x 0-79 colour 15 and rows 16-31 x 0-79
 *         colour 4 (planar writes with the map mask), x 100-115 y 100 colour 2 (AH=0C)
 *   0x13  mode 13h, 320x200 256 colours: rows 0-15 x 0-63 colour 15, rows 16-31 x 0-63
 *         colour 4 (bytes at 0xA0000), x 100-115 y 100 colour 2 (AH=0C)
 *   0x4F  VBE (AX=4F00, 4F01, 4F02 with the LFB bit, 4F03): 800x600x32, else 640x480x32;
 *         through the LFB at PhysBasePtr (unreal mode): rows 0-31 x 0-63 0xFF0000, rows
 *         32-63 0x00FF00, rows 64-95 0x0000FF, row height/2 all white
 *   0x30  back in mode 3: "INT10 OK" through AH=0E on row 0
 *
 * COM1 gets one line per phase (MODE ..., VBE ..., LFB readback OK) and INT10 OK. */

#include "bootsect.h"

#define PROBE_PORT 0x7F0
#define VGA_SEG    0xA000
#define TEXT_SEG   0xB800

    .code16
    .text
    .globl main

/* MARK value: tell the host that the screen is ready for inspection. */
.macro MARK value
    PRINT "MARK "
    mov $\value, %al
    call put_hex8
    call newline
    mov $PROBE_PORT, %dx
    out %al, %dx
.endm

/* SET_MODE mode: int 10h AH=00, then AH=0F must report it; prints "MODE 0xMM cols=N". */
.macro SET_MODE mode
    mov $\mode, %ax
    int $0x10
    mov $\mode, %bl
    call check_mode
.endm

main:
    PRINTLN "INT10 start"

    /* --- mode 3: BIOS teletype, AH=09 with an attribute, direct stores at 0xB8000 --- */
    SET_MODE 0x03
    call newline
    mov $teletype_text, %si
    call bios_puts
    mov $0x02, %ah              /* cursor to row 5, column 10 */
    xor %bh, %bh
    mov $0x050A, %dx
    int $0x10
    mov $0x0958, %ax            /* 'X' ... */
    mov $0x004E, %bx            /* ... page 0, yellow on red */
    mov $5, %cx                 /* five times */
    int $0x10
    push %es
    mov $TEXT_SEG, %ax
    mov %ax, %es
    mov $(12 * 80 + 20) * 2, %di
    mov $direct_text, %si
    mov $0x1F, %ah
1:  lodsb
    test %al, %al
    jz 2f
    stosw
    jmp 1b
2:  pop %es
    MARK 0x03

    /* --- mode 12h: planar writes through the map mask, AH=0C/0D pixels --- */
    SET_MODE 0x12
    mov $0x0F, %bl              /* white: all four planes */
    xor %dx, %dx                /* first row */
    mov $80, %bp                /* bytes per row */
    call planar_band
    mov $0x04, %bl              /* red: plane 2 only */
    mov $16, %dx
    call planar_band
    call bios_pixels
    call newline
    MARK 0x12

    /* --- mode 13h: one byte per pixel at 0xA0000, AH=0C/0D pixels --- */
    SET_MODE 0x13
    push %es
    mov $VGA_SEG, %ax
    mov %ax, %es
    xor %di, %di
    mov $15, %al
    call packed_band
    mov $4, %al
    call packed_band
    pop %es
    call bios_pixels
    call newline
    MARK 0x13

    /* --- VBE: find a 32-bit LFB mode, set it, draw through the LFB --- */
    call vbe_mode
    MARK 0x4F

    /* --- back to text --- */
    SET_MODE 0x03
    call newline
    mov $ok_text, %si
    call bios_puts
    MARK 0x30
    PRINTLN "INT10 OK"
    ret

/* check_mode: AH=0F must report mode BL; prints "MODE 0xMM cols=N" (no newline). */
check_mode:
    mov $0x0F, %ah
    int $0x10
    PRINT "MODE "
    and $0x7F, %al              /* bit 7: "memory not cleared" on some BIOSes */
    call put_hex8
    PRINT " cols="
    push %eax
    movzbl %ah, %eax
    call put_dec
    pop %eax
    cmp %bl, %al
    je 1f
    call newline
    FAIL EXIT_FAIL, "int 10h AH=0F reports another mode than AH=00 set"
1:  ret

/* bios_puts: the string at DS:SI through int 10h AH=0E (teletype, page 0). */
bios_puts:
    push %ax
    push %bx
    push %si
1:  lodsb
    test %al, %al
    jz 2f
    mov $0x0E, %ah
    mov $0x0007, %bx
    int $0x10
    jmp 1b
2:  pop %si
    pop %bx
    pop %ax
    ret

/* planar_band: mode 12h rows DX..DX+15, x 0-79 (10 bytes), colour BL through the map mask
 * (SR02); BP = bytes per row. */
planar_band:
    push %es
    push %dx
    mov $0x3C4, %dx
    mov $0x02, %al
    out %al, %dx
    inc %dx
    mov %bl, %al
    out %al, %dx
    pop %dx
    mov $VGA_SEG, %ax
    mov %ax, %es
    mov %dx, %ax
    mul %bp                     /* DX:AX = row * 80 (< 64 KiB) */
    mov %ax, %di
    mov $16, %si
1:  push %di
    mov $10, %cx
    mov $0xFF, %al
    rep stosb
    pop %di
    add %bp, %di
    dec %si
    jnz 1b
    mov $0x3C4, %dx             /* map mask back to all planes, as the BIOS expects */
    mov $0x02, %al
    out %al, %dx
    inc %dx
    mov $0x0F, %al
    out %al, %dx
    pop %es
    ret

/* packed_band: mode 13h, 16 rows of 64 pixels of colour AL from ES:DI (a row start); DI
 * ends at the row after them. */
packed_band:
    mov $16, %si
1:  push %di
    mov $64, %cx
    rep stosb
    pop %di
    add $320, %di
    dec %si
    jnz 1b
    ret

/* bios_pixels: x 100-115 at y 100 in colour 2 through AH=0C; AH=0D reads x 105 back;
 * prints " pixel=0xCC". */
bios_pixels:
    mov $100, %cx
1:  mov $0x0C02, %ax
    xor %bh, %bh
    mov $100, %dx
    push %cx
    int $0x10
    pop %cx
    inc %cx
    cmp $116, %cx
    jb 1b
    mov $0x0D, %ah
    xor %bh, %bh
    mov $105, %cx
    mov $100, %dx
    int $0x10
    PRINT " pixel="
    call put_hex8
    ret

/* vbe_mode: controller info, the mode list, set the mode with the LFB, draw. */
vbe_mode:
    movl $0x32454256, vbe_info  /* "VBE2": ask for the VBE 2.0+ fields */
    mov $vbe_info, %di
    mov $0x4F00, %ax
    int $0x10
    cmp $0x004F, %ax
    je 1f
    FAIL EXIT_MISSING, "VBE AX=4F00 failed: no VESA BIOS extensions"
1:  cmpl $0x41534556, vbe_info  /* "VESA" */
    je 2f
    FAIL EXIT_FAIL, "VBE AX=4F00 did not return the VESA signature"
2:  PRINT "VBE version="
    mov vbe_info + 4, %ax
    call put_hex16
    PRINT " memory="
    movzwl vbe_info + 0x12, %eax
    call put_dec
    PRINTLN "x64K"

    movw $800, want_x
    movw $600, want_y
    call find_mode
    jnc 3f
    movw $640, want_x
    movw $480, want_y
    call find_mode
    jnc 3f
    FAIL EXIT_MISSING, "VBE offers neither 800x600x32 nor 640x480x32 with a linear framebuffer"

3:  mov %cx, vbe_mode_nr
    mov %cx, %bx
    or $0x4000, %bx             /* use the linear framebuffer */
    mov $0x4F02, %ax
    int $0x10
    cmp $0x004F, %ax
    je 4f
    FAIL EXIT_FAIL, "VBE AX=4F02 could not set the mode"
4:  mov $0x4F03, %ax
    int $0x10
    mov %bx, vbe_current
    PRINT "VBE mode="
    mov vbe_mode_nr, %ax
    call put_hex16
    PRINT " "
    movzwl want_x, %eax
    call put_dec
    PRINT "x"
    movzwl want_y, %eax
    call put_dec
    PRINT "x32 lfb="
    mov mode_info + 0x28, %eax
    call put_hex32
    PRINT " pitch="
    movzwl mode_info + 0x10, %eax
    call put_dec
    PRINT " current="
    mov vbe_current, %ax
    call put_hex16
    call newline
    mov vbe_current, %ax
    and $0x3FFF, %ax
    cmp vbe_mode_nr, %ax
    je 5f
    FAIL EXIT_FAIL, "VBE AX=4F03 reports another mode than AX=4F02 set"

5:  call lfb_draw
    ret

/* find_mode: scan the controller's mode list for want_x x want_y, 32 bpp, direct colour,
 * supported, with a linear framebuffer. CF clear: CX = the mode, mode_info filled. */
find_mode:
    push %gs
    lgs vbe_info + 0x0E, %si    /* VideoModePtr */
1:  mov %gs:(%si), %cx
    cmp $0xFFFF, %cx
    je 3f
    add $2, %si
    push %si
    push %cx
    mov $mode_info, %di
    mov $0x4F01, %ax
    int $0x10
    pop %cx
    pop %si
    cmp $0x004F, %ax
    jne 1b
    mov mode_info, %ax          /* ModeAttributes: supported (0), LFB available (7) */
    and $0x81, %ax
    cmp $0x81, %ax
    jne 1b
    mov mode_info + 0x12, %ax
    cmp want_x, %ax
    jne 1b
    mov mode_info + 0x14, %ax
    cmp want_y, %ax
    jne 1b
    cmpb $32, mode_info + 0x19  /* BitsPerPixel */
    jne 1b
    cmpb $6, mode_info + 0x1B   /* MemoryModel: direct colour */
    jne 1b
    pop %gs
    clc
    ret
3:  pop %gs
    stc
    ret

/* lfb_draw: the bands and the white row through FS with a 4 GiB limit (unreal mode), then
 * read one pixel back. */
lfb_draw:
    cli
    xor %ax, %ax                /* catch a #GP (vector 13) instead of hanging on it */
    mov %ax, %es
    mov %es:13 * 4, %eax
    mov %eax, saved_vec13
    movw $gp_fault, %es:13 * 4
    movw $0, %es:13 * 4 + 2
    call enter_unreal

    mov $0x00FF0000, %eax       /* red */
    xor %bx, %bx
    call lfb_band
    mov $0x0000FF00, %eax       /* green */
    mov $32, %bx
    call lfb_band
    mov $0x000000FF, %eax       /* blue */
    mov $64, %bx
    call lfb_band
    mov want_y, %bx             /* the middle row, all white */
    shr $1, %bx
    call lfb_row_start
    movzwl want_x, %ecx
    mov $0x00FFFFFF, %eax
1:  mov %eax, %fs:(%edi)
    add $4, %edi
    dec %ecx
    jnz 1b
    mov mode_info + 0x28, %edi  /* read back the first pixel */
    mov %fs:(%edi), %eax
    mov %eax, lfb_first

    xor %ax, %ax
    mov %ax, %es
    mov saved_vec13, %eax
    mov %eax, %es:13 * 4
    sti
    cmpl $0x00FF0000, lfb_first
    je 2f
    PRINT "LFB first pixel="
    mov lfb_first, %eax
    call put_hex32
    call newline
    FAIL EXIT_FAIL, "the pixel written through the LFB did not read back"
2:  PRINTLN "LFB readback OK"
    ret

/* lfb_row_start: EDI = PhysBasePtr + BX * BytesPerScanLine. */
lfb_row_start:
    push %eax
    push %edx
    movzwl %bx, %eax
    movzwl mode_info + 0x10, %edx
    imul %edx, %eax
    add mode_info + 0x28, %eax
    mov %eax, %edi
    pop %edx
    pop %eax
    ret

/* lfb_band: rows BX..BX+31, x 0-63, in colour EAX. */
lfb_band:
    mov $32, %si
1:  call lfb_row_start
    mov $64, %cx
2:  mov %eax, %fs:(%edi)
    add $4, %edi
    dec %cx
    jnz 2b
    inc %bx
    dec %si
    jnz 1b
    ret

gp_fault:
    PRINTLN "FAIL: #GP while writing the LFB through unreal mode"
    mov $EXIT_FAIL, %al
    jmp exit

    .section .rodata
teletype_text:
    .asciz "KVMPY TELETYPE LINE 1\r\nsecond line via int 10h AH=0E\r\n"
direct_text:
    .asciz "KVMPY DIRECT B800"
ok_text:
    .asciz "INT10 OK\r\n"

    .bss
    .balign 4
saved_vec13: .long 0
lfb_first:   .long 0
want_x:      .word 0
want_y:      .word 0
vbe_mode_nr: .word 0
vbe_current: .word 0
    .balign 16
vbe_info:    .fill 512
mode_info:   .fill 256
