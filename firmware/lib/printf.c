/* A small printf: %s %c %d %i %u %x %X %p %%, flags '-' and '0', width (or *), l/ll. */
#include "fw.h"

struct sink {
    char *buf;          /* NULL: write to the serial port through `tmp` */
    size_t size, len;
    char tmp[64];
    size_t tlen;
};

static void sink_flush(struct sink *s)
{
    if (!s->buf && s->tlen) {
        serial_write(s->tmp, s->tlen);
        s->tlen = 0;
    }
}

static void sink_put(struct sink *s, char c)
{
    if (s->buf) {
        if (s->len + 1 < s->size)
            s->buf[s->len] = c;
    } else {
        if (s->tlen == sizeof(s->tmp))
            sink_flush(s);
        s->tmp[s->tlen++] = c;
    }
    s->len++;
}

static void put_padded(struct sink *s, const char *str, size_t n, int width, bool left, char pad)
{
    int fill = width > (int)n ? width - (int)n : 0;
    if (!left && pad == '0' && n && (*str == '-')) {
        sink_put(s, *str++);
        n--;
    }
    if (!left)
        while (fill-- > 0)
            sink_put(s, pad);
    while (n--)
        sink_put(s, *str++);
    if (left)
        while (fill-- > 0)
            sink_put(s, ' ');
}

static void format(struct sink *s, const char *fmt, __builtin_va_list ap)
{
    static const char digits_lc[] = "0123456789abcdef";
    static const char digits_uc[] = "0123456789ABCDEF";

    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            sink_put(s, *fmt);
            continue;
        }
        fmt++;
        bool left = false;
        char pad = ' ';
        int width = 0, lng = 0;
        for (;; fmt++) {
            if (*fmt == '-')
                left = true;
            else if (*fmt == '0')
                pad = '0';
            else
                break;
        }
        if (*fmt == '*') {
            width = __builtin_va_arg(ap, int);
            fmt++;
        }
        while (isdigit(*fmt))
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l') {
            lng++;
            fmt++;
        }
        char num[24];
        char *p = num + sizeof(num);
        u64 v;
        bool neg = false;
        u32 base = 10;
        const char *digits = digits_lc;
        switch (*fmt) {
        case 's': {
            const char *str = __builtin_va_arg(ap, const char *);
            if (!str)
                str = "(null)";
            put_padded(s, str, strlen(str), width, left, ' ');
            continue;
        }
        case 'c':
            num[0] = (char)__builtin_va_arg(ap, int);
            put_padded(s, num, 1, width, left, ' ');
            continue;
        case '%':
            sink_put(s, '%');
            continue;
        case 'd':
        case 'i': {
            s64 sv = lng >= 2 ? __builtin_va_arg(ap, s64) : (s64)__builtin_va_arg(ap, int);
            neg = sv < 0;
            v = neg ? (u64)-sv : (u64)sv;
            break;
        }
        case 'p':
            v = (u32)__builtin_va_arg(ap, void *);
            base = 16;
            sink_put(s, '0');
            sink_put(s, 'x');
            break;
        case 'X':
            digits = digits_uc;
            /* fall through */
        case 'x':
            base = 16;
            /* fall through */
        case 'u':
            v = lng >= 2 ? __builtin_va_arg(ap, u64) : (u64)__builtin_va_arg(ap, u32);
            break;
        case '\0':
            return;
        default:
            sink_put(s, '%');
            sink_put(s, *fmt);
            continue;
        }
        do {
            u32 r;
            if (base == 16) {
                r = (u32)v & 15;
                v >>= 4;
            } else {
                v = udiv64(v, 10, &r);
            }
            *--p = digits[r];
        } while (v);
        if (neg)
            *--p = '-';
        put_padded(s, p, num + sizeof(num) - p, width, left, pad);
    }
}

static struct spinlock print_lock;

int vprintf(const char *fmt, __builtin_va_list ap)
{
    struct sink s = { .buf = NULL };
    u32 flags = irq_save();
    spin_lock(&print_lock);
    format(&s, fmt, ap);
    sink_flush(&s);
    spin_unlock(&print_lock);
    irq_restore(flags);
    return (int)s.len;
}

int printf(const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    __builtin_va_end(ap);
    return n;
}

int vsnprintf(char *buf, size_t size, const char *fmt, __builtin_va_list ap)
{
    struct sink s = { .buf = buf, .size = size };
    format(&s, fmt, ap);
    if (size)
        buf[s.len < size ? s.len : size - 1] = '\0';
    return (int)s.len;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    __builtin_va_end(ap);
    return n;
}

void puts(const char *str)
{
    printf("%s\n", str);
}

void fail(const char *fmt, ...)
{
    __builtin_va_list ap;
    printf("FAIL: ");
    __builtin_va_start(ap, fmt);
    vprintf(fmt, ap);
    __builtin_va_end(ap);
    printf("\n");
    exit(EXIT_FAIL);
}

void printf_bust_lock(void)
{
    print_lock.locked = 0;
}
