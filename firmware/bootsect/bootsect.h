/* Shared definitions for kvmpy's real-mode boot-sector programs (see README.md).
 *
 * Each program provides `main` (entered with DS = ES = SS = 0, SP = 0x7C00, interrupts on, the
 * BIOS's boot drive in `boot_drive`) and reports on COM1; the verdict goes to the debug-exit
 * port. Everything here is plain GNU as syntax for .code16. */

#define COM1            0x3F8
#define DEBUG_EXIT_PORT 0xF4

/* Debug-exit codes (kvmpy's status is (code << 1) | 1): 0 pass, 1 a check failed, 2 the
 * machine lacks something (a BIOS service answered "unsupported"). */
#define EXIT_PASS    0
#define EXIT_FAIL    1
#define EXIT_MISSING 2

/* PRINT "text": write a string literal to COM1 (no newline). Clobbers nothing. */
.macro PRINT text
    .pushsection .rodata
.Lstr\@: .asciz "\text"
    .popsection
    push %si
    mov $.Lstr\@, %si
    call puts
    pop %si
.endm

/* PRINTLN "text": the same with a newline. */
.macro PRINTLN text
    PRINT "\text\n"
.endm

/* FAIL code "reason": print "FAIL: reason" and leave through the debug-exit port. */
.macro FAIL code, text
    PRINT "FAIL: \text\n"
    mov $\code, %al
    jmp exit
.endm
