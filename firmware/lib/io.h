/* Port I/O, MMIO and a few CPU instructions, as inline functions.
 *
 * Every access is a single instruction of exactly the named width (inline asm, so the compiler
 * can neither merge nor split MMIO accesses). */
#ifndef FW_IO_H
#define FW_IO_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed char s8;
typedef short s16;
typedef int s32;
typedef long long s64;
typedef unsigned int size_t;
typedef unsigned int uintptr_t;
typedef int bool;
#define true 1
#define false 0
#define NULL ((void *)0)

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define barrier() __asm__ __volatile__("" ::: "memory")

/* --- port I/O ---------------------------------------------------------------------------- */
static inline void outb(u16 port, u8 v) { __asm__ __volatile__("outb %0, %1" :: "a"(v), "Nd"(port) : "memory"); }
static inline void outw(u16 port, u16 v) { __asm__ __volatile__("outw %0, %1" :: "a"(v), "Nd"(port) : "memory"); }
static inline void outl(u16 port, u32 v) { __asm__ __volatile__("outl %0, %1" :: "a"(v), "Nd"(port) : "memory"); }

static inline u8 inb(u16 port)
{
    u8 v;
    __asm__ __volatile__("inb %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

static inline u16 inw(u16 port)
{
    u16 v;
    __asm__ __volatile__("inw %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

static inline u32 inl(u16 port)
{
    u32 v;
    __asm__ __volatile__("inl %1, %0" : "=a"(v) : "Nd"(port) : "memory");
    return v;
}

/* String I/O: one instruction (rep ins/outs) moves `count` items. */
static inline void insb(u16 port, void *buf, u32 count)
{
    __asm__ __volatile__("rep insb" : "+D"(buf), "+c"(count) : "d"(port) : "memory");
}
static inline void insw(u16 port, void *buf, u32 count)
{
    __asm__ __volatile__("rep insw" : "+D"(buf), "+c"(count) : "d"(port) : "memory");
}
static inline void insl(u16 port, void *buf, u32 count)
{
    __asm__ __volatile__("rep insl" : "+D"(buf), "+c"(count) : "d"(port) : "memory");
}
static inline void outsb(u16 port, const void *buf, u32 count)
{
    __asm__ __volatile__("rep outsb" : "+S"(buf), "+c"(count) : "d"(port) : "memory");
}
static inline void outsw(u16 port, const void *buf, u32 count)
{
    __asm__ __volatile__("rep outsw" : "+S"(buf), "+c"(count) : "d"(port) : "memory");
}
static inline void outsl(u16 port, const void *buf, u32 count)
{
    __asm__ __volatile__("rep outsl" : "+S"(buf), "+c"(count) : "d"(port) : "memory");
}

/* --- MMIO (paging is off: physical address == pointer) ---------------------------------- */
static inline u8 readb(u32 addr)
{
    u8 v;
    __asm__ __volatile__("movb (%1), %0" : "=q"(v) : "r"(addr) : "memory");
    return v;
}
static inline u16 readw(u32 addr)
{
    u16 v;
    __asm__ __volatile__("movw (%1), %0" : "=r"(v) : "r"(addr) : "memory");
    return v;
}
static inline u32 readl(u32 addr)
{
    u32 v;
    __asm__ __volatile__("movl (%1), %0" : "=r"(v) : "r"(addr) : "memory");
    return v;
}
static inline void writeb(u32 addr, u8 v) { __asm__ __volatile__("movb %0, (%1)" :: "q"(v), "r"(addr) : "memory"); }
static inline void writew(u32 addr, u16 v) { __asm__ __volatile__("movw %0, (%1)" :: "r"(v), "r"(addr) : "memory"); }
static inline void writel(u32 addr, u32 v) { __asm__ __volatile__("movl %0, (%1)" :: "r"(v), "r"(addr) : "memory"); }
/* A 64-bit register as two dwords, low first: a device that acts on a split 64-bit command
 * register (VT-d's CCMD, IOTLB) does so when its high half arrives. */
static inline u64 readq_lohi(u32 addr)
{
    u32 lo = readl(addr);
    return (u64)readl(addr + 4) << 32 | lo;
}
static inline void writeq_lohi(u32 addr, u64 v)
{
    writel(addr, (u32)v);
    writel(addr + 4, (u32)(v >> 32));
}

/* --- CPU ----------------------------------------------------------------------------------- */
static inline void cli(void) { __asm__ __volatile__("cli" ::: "memory"); }
static inline void sti(void) { __asm__ __volatile__("sti" ::: "memory"); }
static inline void hlt(void) { __asm__ __volatile__("hlt" ::: "memory"); }
/* sti takes effect after the next instruction, so no interrupt can slip in before the hlt */
static inline void sti_hlt(void) { __asm__ __volatile__("sti; hlt" ::: "memory"); }
static inline void cpu_relax(void) { __asm__ __volatile__("pause" ::: "memory"); }

static inline u32 read_eflags(void)
{
    u32 f;
    __asm__ __volatile__("pushfl; popl %0" : "=r"(f) :: "memory");
    return f;
}

static inline u32 irq_save(void)
{
    u32 f = read_eflags();
    cli();
    return f;
}

static inline void irq_restore(u32 flags)
{
    if (flags & 0x200)
        sti();
}

static inline void cpuid(u32 leaf, u32 sub, u32 *a, u32 *b, u32 *c, u32 *d)
{
    __asm__ __volatile__("cpuid" : "=a"(*a), "=b"(*b), "=c"(*c), "=d"(*d) : "a"(leaf), "c"(sub));
}

static inline u32 bswap32(u32 v) { return __builtin_bswap32(v); }
static inline u16 bswap16(u16 v) { return (u16)((v >> 8) | (v << 8)); }

/* Atomics (lock-prefixed; the emulator handles lock xadd/xchg/cmpxchg). */
static inline u32 atomic_inc_return(volatile u32 *p)
{
    u32 v = 1;
    __asm__ __volatile__("lock xaddl %0, %1" : "+r"(v), "+m"(*p) :: "memory");
    return v + 1;
}

static inline u32 xchg32(volatile u32 *p, u32 v)
{
    __asm__ __volatile__("xchgl %0, %1" : "+r"(v), "+m"(*p) :: "memory");
    return v;
}

#endif
