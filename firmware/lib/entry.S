/* Entry of every kvmpy guest program: multiboot v1 header, the 32-bit start-up code, the GDT,
 * the 256 interrupt stubs and the real-mode trampoline the application processors start in.
 *
 * Machine state at _start (multiboot spec 3.2): 32-bit protected mode, paging off, flat CS/DS,
 * EAX = 0x2BADB002, EBX = physical address of the multiboot information, ESP undefined,
 * interrupts disabled.  Nothing else can be trusted, so GDT and stack are ours at once. */

#define MB_MAGIC        0x1BADB002
#define MB_FLAGS        0x00000003      /* bit 0: modules page aligned, bit 1: memory info */

#define KERNEL_CS       0x08
#define KERNEL_DS       0x10

#define BSP_STACK_SIZE  16384
#define AP_STACK_SIZE   4096
#define MAX_CPUS        16

        .section .multiboot, "a"
        .balign 4
        .long MB_MAGIC
        .long MB_FLAGS
        .long -(MB_MAGIC + MB_FLAGS)

/* ---------------------------------------------------------------------------------------- */
        .section .text.entry, "ax"
        .code32
        .globl _start
_start:
        cli
        cld
        movl    %eax, %edi              /* multiboot magic */
        movl    %ebx, %esi              /* multiboot info */
        lgdtl   gdt_desc
        ljmpl   $KERNEL_CS, $1f
1:      movw    $KERNEL_DS, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    %ax, %fs
        movw    %ax, %gs
        movl    $bsp_stack_top, %esp
        xorl    %ebp, %ebp

        /* clear .bss (the stacks are outside it, in the NOLOAD .stack section) */
        movl    $__bss_start, %edx
        movl    $__bss_end, %ecx
        subl    %edx, %ecx
        shrl    $2, %ecx
        pushl   %edi
        movl    %edx, %edi
        xorl    %eax, %eax
        rep stosl
        popl    %edi

        pushl   %esi                    /* fw_start(magic, mbi) */
        pushl   %edi
        call    fw_start
        /* fw_start does not return; if it did, stop here */
2:      cli
        hlt
        jmp     2b

/* ---------------------------------------------------------------------------------------- */
/* The GDT: null, flat 4 GiB code (0x08), flat 4 GiB data (0x10). */
        .section .data
        .balign 16
        .globl gdt
gdt:
        .quad   0
        .quad   0x00CF9A000000FFFF      /* 0x08: code, base 0, limit 4 GiB, 32-bit, DPL 0 */
        .quad   0x00CF92000000FFFF      /* 0x10: data, base 0, limit 4 GiB, 32-bit, DPL 0 */
gdt_end:
        .balign 4
        .word   0
gdt_desc:
        .word   gdt_end - gdt - 1
        .long   gdt

/* ---------------------------------------------------------------------------------------- */
/* Interrupt stubs: one 16-byte slot per vector, so the stub of vector v is at
 * isr_stubs + 16 * v.  Vectors that push an error code (8, 10-14, 17, 21, 29, 30) do not push
 * the dummy 0.  The common path builds a struct intr_frame (see fw.h) and calls
 * intr_dispatch(frame). */
        .section .text
        .balign 16
        .globl isr_stubs
isr_stubs:
        .set    vec, 0
        .rept   256
        .balign 16
        .if (vec == 8) || ((vec >= 10) && (vec <= 14)) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
        .else
        pushl   $0
        .endif
        pushl   $vec
        jmp     isr_common
        .set    vec, vec + 1
        .endr

isr_common:
        pushal
        cld
        movl    %esp, %eax
        pushl   %eax
        call    intr_dispatch
        addl    $4, %esp
        /* Return without iret: KVM's instruction emulator, which runs all of our ring-0 code
         * on PVM hosts, does not implement iret in protected mode (emulation failure).  The
         * same-privilege return is done as popfl + ret: the error-code slot receives EFLAGS
         * with IF clear, and IF is set again by an sti right before the ret, whose interrupt
         * shadow covers the ret just as iret would.
         * Frame offsets: pushal 0-31, vector 32, error 36, eip 40, cs 44, eflags 48. */
        movl    48(%esp), %eax
        andl    $~0x200, %eax
        movl    %eax, 36(%esp)
        popal
        testl   $0x200, 16(%esp)        /* the interrupted code's IF */
        leal    4(%esp), %esp           /* drop the vector; lea leaves the flags alone */
        jnz     1f
        popfl
        ret     $8                      /* pop eip, then cs and eflags */
1:      popfl
        sti
        ret     $8

/* ---------------------------------------------------------------------------------------- */
/* Application processor start-up.  ap_tramp_start..ap_tramp_end is copied to a page below
 * 1 MiB (smp_boot_aps); the SIPI vector makes the AP start there in real mode with
 * CS = page >> 4, IP = 0.  It loads our GDT, enters protected mode and jumps to ap_entry32,
 * which takes the next AP stack and calls ap_start_c(). */
        .section .text
        .code16
        .globl ap_tramp_start, ap_tramp_end
ap_tramp_start:
        cli
        cld
        movw    %cs, %ax
        movw    %ax, %ds
        lgdtl   (ap_tramp_gdt_desc - ap_tramp_start)
        movl    %cr0, %eax
        orl     $1, %eax                /* CR0.PE */
        movl    %eax, %cr0
        ljmpl   $KERNEL_CS, $ap_entry32
        .balign 4
        .word   0
ap_tramp_gdt_desc:
        .word   gdt_end - gdt - 1
        .long   gdt
ap_tramp_end:

        .code32
ap_entry32:
        movw    $KERNEL_DS, %ax
        movw    %ax, %ds
        movw    %ax, %es
        movw    %ax, %ss
        movw    %ax, %fs
        movw    %ax, %gs
        movl    $1, %eax
        lock xaddl %eax, ap_stack_next  /* eax = this AP's stack slot */
        cmpl    $(MAX_CPUS - 1), %eax
        jae     3f                      /* more APs than stacks: park this one */
        incl    %eax
        shll    $12, %eax               /* AP_STACK_SIZE == 4096 */
        addl    $ap_stacks, %eax
        movl    %eax, %esp
        xorl    %ebp, %ebp
        call    ap_start_c
3:      cli
        hlt
        jmp     3b

        .section .data
        .balign 4
        .globl ap_stack_next
ap_stack_next:
        .long   0

/* ---------------------------------------------------------------------------------------- */
        .section .stack, "aw", @nobits
        .balign 16
        .globl bsp_stack_top
bsp_stack:
        .skip   BSP_STACK_SIZE
bsp_stack_top:
        .globl ap_stacks
ap_stacks:
        .skip   AP_STACK_SIZE * (MAX_CPUS - 1)

        .section .note.GNU-stack, "", @progbits
