/* insns: instructions a PVM-backed KVM's emulator gives up on, checked for their results.
 *
 * On VT-x/AMD-V these run natively; on a PVM host kvmpy completes them in userspace
 * (kvmpy/vcpu/pvm.py). Either way the program sees the architectural result:
 *   int3            -> the #BP handler runs with EIP just past the int3
 *   popcnt r, r/m   -> the count and ZF, register and memory forms, 16 and 32 bits
 *   fwait           -> no effect
 *   ldmxcsr/stmxcsr -> MXCSR round trip (CR4.OSFXSR set first, as an OS does)
 *   clac/stac       -> EFLAGS.AC cleared/set (only when CPUID says SMAP exists)
 *   iret            -> same-privilege return: EIP, CS and EFLAGS (IF, a flag bit) from the stack
 * Prints "INSNS OK" and exits 0. */
#include "fw.h"

static volatile u32 bp_hits, bp_eip;

static void on_bp(struct intr_frame *f)
{
    bp_hits++;
    bp_eip = f->eip;
}

static u32 eflags(void)
{
    u32 f;
    __asm__ volatile("pushfl; popl %0" : "=r"(f));
    return f;
}

int main(struct mb_info *info)
{
    (void)info;
    u32 a, b, c, d;
    idt_init();
    intr_register(3, on_bp);

    /* int3 */
    u32 after;
    __asm__ volatile("int3\n1: movl $1b, %0" : "=r"(after));
    if (bp_hits != 1 || bp_eip != after)
        fail("int3: handler ran %u times at eip 0x%x, expected once at 0x%x", bp_hits, bp_eip, after);
    puts("insns: int3 OK");

    /* popcnt: CPUID.1:ECX bit 23 */
    cpuid(1, 0, &a, &b, &c, &d);
    if (c & (1u << 23)) {
        u32 src = 0xF0F0F00F, dst = 0, zf;
        __asm__ volatile("popcnt %2, %0\n setz %b1" : "=r"(dst), "=q"(zf) : "r"(src) : "cc");
        if (dst != 16 || (zf & 1))
            fail("popcnt reg: got %u zf=%u, expected 16 zf=0", dst, zf & 1);
        static volatile u32 mem = 0;
        __asm__ volatile("popcnt %2, %0\n setz %b1" : "=r"(dst), "=q"(zf) : "m"(mem) : "cc");
        if (dst != 0 || !(zf & 1))
            fail("popcnt mem: got %u zf=%u, expected 0 zf=1", dst, zf & 1);
        u16 w = 0x8001, wdst = 0xFFFF;
        __asm__ volatile("popcntw %1, %0" : "=r"(wdst) : "r"(w) : "cc");
        if (wdst != 2)
            fail("popcnt 16-bit: got %u, expected 2", wdst);
        puts("insns: popcnt OK");
    } else {
        puts("insns: no popcnt on this CPU, skipped");
    }

    /* fwait */
    __asm__ volatile("fwait");
    puts("insns: fwait OK");

    /* ldmxcsr / stmxcsr need CR4.OSFXSR */
    if (d & (1u << 25)) {
        u32 cr4;
        __asm__ volatile("movl %%cr4, %0" : "=r"(cr4));
        __asm__ volatile("movl %0, %%cr4" : : "r"(cr4 | (1u << 9)));
        static volatile u32 in = 0x1F80 | 0x6000, out = 0;  /* round toward zero */
        __asm__ volatile("ldmxcsr %0" : : "m"(in));
        __asm__ volatile("stmxcsr %0" : "=m"(out));
        if ((out & 0xFFBF) != (in & 0xFFBF))
            fail("mxcsr: wrote 0x%x, read back 0x%x", in, out);
        puts("insns: ldmxcsr/stmxcsr OK");
    }

    /* clac / stac: CPUID.(7,0):EBX bit 20 */
    cpuid(0, 0, &a, &b, &c, &d);
    u32 smap = 0;
    if (a >= 7) {
        cpuid(7, 0, &a, &b, &c, &d);
        smap = b & (1u << 20);
    }
    if (smap) {
        __asm__ volatile("stac");
        u32 set = eflags() & (1u << 18);
        __asm__ volatile("clac");
        u32 clear = eflags() & (1u << 18);
        if (!set || clear)
            fail("stac/clac: AC was %s after stac and %s after clac", set ? "set" : "clear",
                 clear ? "set" : "clear");
        puts("insns: clac/stac OK");
    } else {
        puts("insns: no SMAP on this CPU, clac/stac skipped");
    }
    /* iret to the next instruction with CF set and the current CS, as an interrupt return does */
    u32 cs, flags_after;
    __asm__ volatile("movl %%cs, %0" : "=r"(cs));
    __asm__ volatile(
        "pushfl\n orl $1, (%%esp)\n"         /* EFLAGS with CF set */
        "pushl %1\n pushl $1f\n iret\n"
        "1: pushfl\n popl %0\n"
        : "=r"(flags_after) : "r"(cs) : "cc", "memory");
    if (!(flags_after & 1))
        fail("iret: CF from the stack was not loaded (eflags 0x%x)", flags_after);
    puts("insns: iret OK");

    puts("INSNS OK");
    return 0;
}
