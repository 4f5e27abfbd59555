/* hello: the smallest program: says which drive the BIOS booted it from, and passes.
 *
 * Why: tests that are about the BIOS rather than a service (boot order, the boot menu's choice
 * of drive) need a boot sector that proves it ran and from where. Output on COM1:
 *   HELLO drive=0xDD
 * then the debug-exit port with 0 (kvmpy's status 1). */

#include "bootsect.h"

    .code16
    .text
    .globl main
main:
    PRINT "HELLO drive="
    mov boot_drive, %al
    call put_hex8
    call newline
    ret
