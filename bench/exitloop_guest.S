/*
 * bench/exitloop_guest.S — the exit-loop guest for QEMU and kvmpy: a 32-bit multiboot ELF that
 * makes EXITS port writes to 0x7f0 (one KVM_EXIT_IO each, nobody owns the port), prints
 * EXITLOOP-DONE on COM1, then writes 0 to the debug-exit port 0xf4 (QEMU's isa-debug-exit:
 * process exit status (0 << 1) | 1 = 1). The loop is byte for byte the one bench/exitloop.c
 * runs. Built by bench/bench.mk:
 *     gcc -m32 -c -DEXITS=100000 exitloop_guest.S
 *     ld -m elf_i386 -N -Ttext=0x100000 -e _start exitloop_guest.o
 */
#ifndef EXITS
#define EXITS 100000
#endif
#if EXITS < 1
#error "EXITS must be at least 1"
#endif

#define MB_MAGIC 0x1badb002
#define MB_FLAGS 0		/* ELF kernel: the loader takes the addresses from the program headers */

	.text
	.code32
	.balign 4
multiboot_header:		/* first bytes of .text: well inside the file's first 8 KiB */
	.long MB_MAGIC
	.long MB_FLAGS
	.long -(MB_MAGIC + MB_FLAGS)

	.globl _start
_start:
	cli
	cld			/* multiboot leaves DF undefined; lodsb below counts up */
	mov	$0x7f0, %dx
	mov	$EXITS, %ecx
1:	out	%al, %dx
	dec	%ecx
	jnz	1b

	/* Say so on COM1 (a 16550 takes THR writes without set-up): proof the loop ran to the end. */
	mov	$0x3f8, %dx
	mov	$done_msg, %esi
2:	lodsb
	test	%al, %al
	jz	3f
	out	%al, %dx
	jmp	2b

3:	mov	$0xf4, %dx
	xor	%eax, %eax
	out	%eax, %dx	/* debug exit */
4:	hlt			/* no debug-exit device: stay halted */
	jmp	4b

done_msg:
	.asciz "EXITLOOP-DONE\r\n"

	.section .note.GNU-stack, "", @progbits
