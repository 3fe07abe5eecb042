/*
 * vmfork guest SDK runtime: hypercall wrappers, the few libc functions gcc may emit
 * calls to, and a small printf.
 *
 * Guests are linked with -nostdlib, so this file is all the library they have.
 * It must not depend on anything itself: every function here is self-contained.
 */
#include <stdarg.h>
#include <stdint.h>

#include "vmfork.h"

/*
 * The VMM (in Java) reads and writes these blocks at fixed offsets: pin their
 * layout so that a change to vmfork.h cannot silently break the ABI.
 */
_Static_assert(sizeof(struct vmf_boot_info) == 56, "vmf_boot_info layout");
_Static_assert(sizeof(struct vmf_buf) == 16, "vmf_buf layout");
_Static_assert(sizeof(struct vmf_identity) == 40, "vmf_identity layout");
_Static_assert(sizeof(struct vmf_clock) == 16, "vmf_clock layout");
_Static_assert(sizeof(struct vmf_recv) == 32, "vmf_recv layout");
_Static_assert(sizeof(struct vmf_fork) == 48, "vmf_fork layout");
_Static_assert(sizeof(struct vmf_fork_status) == 32, "vmf_fork_status layout");
_Static_assert(sizeof(struct vmf_vcpu_start) == 32, "vmf_vcpu_start layout");

/* Set by _start (start.S) before main runs. */
const struct vmf_boot_info *vmf_boot;

/* ---- hypercall wrappers ------------------------------------------------------ */

/*
 * Argument blocks live on the caller's stack: guest memory is identity mapped, so
 * a pointer is also the guest-physical address the VMM expects. The "memory"
 * clobber in vmf_hypercall() makes gcc store the block before the call and read
 * it back afterwards.
 */
static inline uint64_t gpa(const void *p)
{
    return (uint64_t)(uintptr_t)p;
}

int64_t vmf_console_write(const void *buf, size_t len)
{
    struct vmf_buf b = { .addr = gpa(buf), .len = len };

    return vmf_hypercall(VMF_HC_CONSOLE_WRITE, gpa(&b));
}

void vmf_exit(int code)
{
    /* The exit hypercall does not return; loop in case a VMM resumes us anyway. */
    for (;;)
        vmf_hypercall(VMF_HC_EXIT, (uint64_t)(int64_t)code);
}

int64_t vmf_identity(struct vmf_identity *out)
{
    return vmf_hypercall(VMF_HC_IDENTITY, gpa(out));
}

int64_t vmf_entropy(void *buf, size_t len)
{
    struct vmf_buf b = { .addr = gpa(buf), .len = len };

    return vmf_hypercall(VMF_HC_ENTROPY, gpa(&b));
}

int64_t vmf_clock(struct vmf_clock *out)
{
    return vmf_hypercall(VMF_HC_CLOCK, gpa(out));
}

int64_t vmf_recv(void *buf, size_t capacity, uint64_t flags, size_t *len_out)
{
    struct vmf_recv r = { .addr = gpa(buf), .capacity = capacity, .flags = flags };
    int64_t rc = vmf_hypercall(VMF_HC_RECV, gpa(&r));

    /* With VMF_E2BIG the VMM reports the queued message's length, so that the
     * caller can size a buffer for it. */
    if (len_out)
        *len_out = (rc >= 0 || rc == VMF_E2BIG) ? (size_t)r.len : 0;
    return rc;
}

int64_t vmf_send(const void *buf, size_t len)
{
    struct vmf_buf b = { .addr = gpa(buf), .len = len };

    return vmf_hypercall(VMF_HC_SEND, gpa(&b));
}

int64_t vmf_ready(void)
{
    return vmf_hypercall(VMF_HC_READY, 0);
}

int64_t vmf_fork(struct vmf_fork *f)
{
    return vmf_hypercall(VMF_HC_FORK, gpa(f));
}

int64_t vmf_fork_status(struct vmf_fork_status *s)
{
    return vmf_hypercall(VMF_HC_FORK_STATUS, gpa(s));
}

/* ---- several vCPUs ------------------------------------------------------------ */

/* start.S: where a vCPU started by vmf_vcpu_start begins; calls vmf__vcpu_main(frame). */
void vmf__vcpu_entry(void);

/*
 * What vmf_vcpu_start leaves at the top of the new vCPU's stack, where its entry finds
 * it (RDI points to it): the function and its argument.
 */
struct vcpu_frame {
    void (*fn)(void *);
    void *arg;
};

__attribute__((noreturn, used)) void vmf__vcpu_main(struct vcpu_frame *frame);

void vmf__vcpu_main(struct vcpu_frame *frame)
{
    frame->fn(frame->arg);
    /* The VMM never returns from VCPU_STOP on a secondary vCPU; a later VCPU_START
     * begins it afresh. Loop in case a VMM resumes it anyway. */
    for (;;)
        vmf_hypercall(VMF_HC_VCPU_STOP, 0);
}

int64_t vmf_vcpu_start(uint32_t index, void (*fn)(void *), void *arg, void *stack, size_t stack_size)
{
    if (!fn || !stack || stack_size < 64)
        return VMF_EINVAL;
    uint64_t top = (gpa(stack) + stack_size) & ~15ull;
    top -= sizeof(struct vcpu_frame);
    struct vcpu_frame *frame = (struct vcpu_frame *)(uintptr_t)top;
    frame->fn = fn;
    frame->arg = arg;
    /* The frame stays above the new vCPU's RSP, so its first call does not overwrite it. */
    struct vmf_vcpu_start s = { .index = index, .entry = (uint64_t)(uintptr_t)vmf__vcpu_entry,
                                .stack_top = top, .arg = top };
    return vmf_hypercall(VMF_HC_VCPU_START, gpa(&s));
}

int64_t vmf_vcpu_stop(void)
{
    return vmf_hypercall(VMF_HC_VCPU_STOP, 0);
}

uint32_t vmf_vcpu_index(void)
{
    return (uint32_t)vmf_hypercall(VMF_HC_VCPU_INDEX, 0);
}

void vmf_barrier_init(struct vmf_barrier *b, uint32_t count)
{
    b->count = count;
    b->reserved = 0;
    __atomic_store_n(&b->sense, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&b->waiting, 0, __ATOMIC_RELEASE);
}

int vmf_barrier_wait(struct vmf_barrier *b)
{
    /* The sense is read before arriving: the last to arrive flips it, and everyone
     * else waits for it to differ from what they read. A vCPU that runs ahead to the
     * next round reads the flipped sense and finds `waiting` already reset, since the
     * reset is stored before the flip is released. */
    uint32_t sense = __atomic_load_n(&b->sense, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->waiting, 1, __ATOMIC_ACQ_REL) == b->count) {
        __atomic_store_n(&b->waiting, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->sense, sense ^ 1u, __ATOMIC_RELEASE);
        return 1;
    }
    while (__atomic_load_n(&b->sense, __ATOMIC_ACQUIRE) == sense)
        vmf_cpu_relax();
    return 0;
}

/* ---- memory and strings ------------------------------------------------------ */

/*
 * The copy and fill routines use the string instructions rather than C loops:
 * they are fast on every CPU with ERMS, and gcc can never turn them back into a
 * call to the very function being defined (its loop-idiom pass does that to C
 * loops, even with -ffreestanding). DF is clear on entry (SysV ABI; the VMM starts
 * guests with RFLAGS = 0x3002).
 */
void *memcpy(void *dst, const void *src, size_t n)
{
    void *d = dst;

    __asm__ volatile("rep movsb" : "+D"(d), "+S"(src), "+c"(n) : : "memory");
    return dst;
}

void *memmove(void *dst, const void *src, size_t n)
{
    /* Forwards unless dst starts inside [src, src + n). */
    if ((uintptr_t)dst - (uintptr_t)src >= n)
        return memcpy(dst, src, n);

    unsigned char *d = (unsigned char *)dst + n - 1;
    const unsigned char *s = (const unsigned char *)src + n - 1;

    __asm__ volatile("std\n\trep movsb\n\tcld" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
    return dst;
}

void *memset(void *dst, int c, size_t n)
{
    void *d = dst;

    __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
    return dst;
}

int memcmp(const void *a, const void *b, size_t n)
{
    const unsigned char *p = a, *q = b;

    for (size_t i = 0; i < n; i++) {
        if (p[i] != q[i])
            return p[i] < q[i] ? -1 : 1;
    }
    return 0;
}

size_t strlen(const char *s)
{
    size_t n = 0;

    while (s[n])
        n++;
    return n;
}

int strncmp(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];

        if (x != y)
            return x < y ? -1 : 1;
        if (x == 0)
            break;
    }
    return 0;
}

uint64_t vmf_parse_u64(const char *s, size_t len, int *ok)
{
    uint64_t v = 0;
    int good = len > 0;

    for (size_t i = 0; good && i < len; i++) {
        unsigned d = (unsigned)((unsigned char)s[i] - '0');

        if (d > 9 || v > (UINT64_MAX - d) / 10)
            good = 0;       /* not a digit, or v * 10 + d would overflow */
        else
            v = v * 10 + d;
    }
    if (ok)
        *ok = good;
    return good ? v : 0;
}

/* ---- formatted output -------------------------------------------------------- */

/*
 * Where formatted characters go: a caller's buffer (snprintf) or a bounce buffer
 * that is flushed to the console whenever it fills (printf).
 */
struct sink {
    char *buf;
    size_t cap;     /* characters buf can hold                         */
    size_t pos;     /* characters in buf                               */
    size_t total;   /* characters produced, whether stored or not      */
    int console;    /* flush to the console when full                  */
};

static void sink_flush(struct sink *s)
{
    size_t off = 0;

    while (off < s->pos) {
        int64_t n = vmf_console_write(s->buf + off, s->pos - off);

        if (n <= 0)
            break;  /* nowhere to report a console error; drop the output */
        off += (size_t)n;
    }
    s->pos = 0;
}

static void put(struct sink *s, char c)
{
    if (s->pos == s->cap && s->console)
        sink_flush(s);
    if (s->pos < s->cap)
        s->buf[s->pos++] = c;
    s->total++;
}

static void put_pad(struct sink *s, char c, int n)
{
    while (n-- > 0)
        put(s, c);
}

/* One conversion specification: %[-0][width][.precision][length]conv */
struct spec {
    int left;       /* '-': pad on the right                       */
    int zero;       /* '0': pad numbers with zeros                 */
    int width;      /* minimum field width, 0 if none              */
    int prec;       /* precision, -1 if none                       */
};

static void put_str(struct sink *s, const char *str, const struct spec *sp)
{
    int n = 0;

    if (!str)
        str = "(null)";
    /* The precision bounds how much of str is read: it need not be terminated. */
    while (str[n] && (sp->prec < 0 || n < sp->prec))
        n++;
    if (!sp->left)
        put_pad(s, ' ', sp->width - n);
    for (int i = 0; i < n; i++)
        put(s, str[i]);
    if (sp->left)
        put_pad(s, ' ', sp->width - n);
}

static void put_num(struct sink *s, uint64_t v, int negative, unsigned base, int upper,
                    const char *prefix, const struct spec *sp)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char tmp[20];   /* UINT64_MAX has 20 decimal digits */
    int n = 0;

    do {
        tmp[n++] = digits[v % base];
        v /= base;
    } while (v);
    /* As in C, an explicit precision of 0 prints nothing for the value 0. */
    if (sp->prec == 0 && n == 1 && tmp[0] == '0')
        n = 0;

    int prefix_len = (int)strlen(prefix) + (negative ? 1 : 0);
    int zeros = sp->prec > n ? sp->prec - n : 0;
    int pad = sp->width - prefix_len - zeros - n;

    if (sp->zero && !sp->left && sp->prec < 0) {
        zeros += pad > 0 ? pad : 0;
        pad = 0;
    }
    if (!sp->left)
        put_pad(s, ' ', pad);
    if (negative)
        put(s, '-');
    while (*prefix)
        put(s, *prefix++);
    put_pad(s, '0', zeros);
    while (n > 0)
        put(s, tmp[--n]);
    if (sp->left)
        put_pad(s, ' ', pad);
}

/* Reads a decimal field or '*' into *v; returns 0 if there is none. */
static int parse_field(const char **fmt, va_list *ap, int *v)
{
    if (**fmt == '*') {
        (*fmt)++;
        *v = va_arg(*ap, int);
        return 1;
    }
    if (**fmt < '0' || **fmt > '9')
        return 0;
    *v = 0;
    while (**fmt >= '0' && **fmt <= '9') {
        int d = *(*fmt)++ - '0';

        if (*v < 100000)    /* saturate rather than overflow */
            *v = *v * 10 + d;
    }
    return 1;
}

static void format(struct sink *s, const char *fmt, va_list *ap)
{
    while (*fmt) {
        if (*fmt != '%') {
            put(s, *fmt++);
            continue;
        }
        fmt++;

        struct spec sp = { .prec = -1 };

        for (;; fmt++) {
            if (*fmt == '-')
                sp.left = 1;
            else if (*fmt == '0')
                sp.zero = 1;
            else
                break;
        }
        if (parse_field(&fmt, ap, &sp.width) && sp.width < 0) {
            /* As in C, a negative '*' width means '-' and its magnitude. */
            sp.left = 1;
            sp.width = sp.width == INT32_MIN ? INT32_MAX : -sp.width;
        }
        if (*fmt == '.') {
            fmt++;
            /* "%.d" means precision 0; a negative '*' precision means none. */
            if (!parse_field(&fmt, ap, &sp.prec))
                sp.prec = 0;
            else if (sp.prec < 0)
                sp.prec = -1;
        }

        /* Length modifier: 0 = int, 1 = long, 2 = long long, -1 = short, -2 = char.
         * size_t and long long are both 64 bits here, like long. */
        int length = 0;

        for (;; fmt++) {
            if (*fmt == 'l' && length >= 0)
                length++;
            else if (*fmt == 'h' && length <= 0)
                length--;
            else if (*fmt == 'z' || *fmt == 'j' || *fmt == 't')
                length = 1;
            else
                break;
        }

        char conv = *fmt;

        if (conv == '\0')
            break;  /* a lone '%' at the end: print nothing more */
        fmt++;

        switch (conv) {
        case 'd':
        case 'i': {
            int64_t v;

            if (length >= 1)
                v = va_arg(*ap, int64_t);   /* long and long long are 64 bits */
            else if (length == -1)
                v = (short)va_arg(*ap, int);
            else if (length == -2)
                v = (signed char)va_arg(*ap, int);
            else
                v = va_arg(*ap, int);
            /* Negate in unsigned arithmetic so that INT64_MIN works. */
            put_num(s, v < 0 ? 0 - (uint64_t)v : (uint64_t)v, v < 0, 10, 0, "", &sp);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v;

            if (length >= 1)
                v = va_arg(*ap, uint64_t);
            else if (length == -1)
                v = (unsigned short)va_arg(*ap, unsigned int);
            else if (length == -2)
                v = (unsigned char)va_arg(*ap, unsigned int);
            else
                v = va_arg(*ap, unsigned int);
            put_num(s, v, 0, conv == 'u' ? 10 : 16, conv == 'X', "", &sp);
            break;
        }
        case 'p':
            put_num(s, (uint64_t)(uintptr_t)va_arg(*ap, void *), 0, 16, 0, "0x", &sp);
            break;
        case 's':
            put_str(s, va_arg(*ap, const char *), &sp);
            break;
        case 'c':
            if (!sp.left)
                put_pad(s, ' ', sp.width - 1);
            put(s, (char)va_arg(*ap, int));
            if (sp.left)
                put_pad(s, ' ', sp.width - 1);
            break;
        case '%':
            put(s, '%');
            break;
        default:
            /* Unknown conversion: print it as written so the mistake is visible. */
            put(s, '%');
            put(s, conv);
            break;
        }
    }
}

int vmf_snprintf(char *buf, size_t size, const char *fmt, ...)
{
    struct sink s = { .buf = buf, .cap = size ? size - 1 : 0 };
    va_list ap;

    va_start(ap, fmt);
    format(&s, fmt, &ap);
    va_end(ap);
    if (size)
        buf[s.pos] = '\0';
    /* Like C's snprintf: the length the whole output would have had. */
    return s.total > INT32_MAX ? INT32_MAX : (int)s.total;
}

int vmf_printf(const char *fmt, ...)
{
    char bounce[512];
    struct sink s = { .buf = bounce, .cap = sizeof(bounce), .console = 1 };
    va_list ap;

    va_start(ap, fmt);
    format(&s, fmt, &ap);
    va_end(ap);
    sink_flush(&s);
    return s.total > INT32_MAX ? INT32_MAX : (int)s.total;
}
