/*
 * cpuview: a test guest that reports what it observes of its CPU at entry, for the test
 * of docs/hypercalls.md's "Initial state" table.
 *
 * The first thing main does is call observe(), in assembly, which records RFLAGS, the
 * segment selectors, FS and GS bases (where CPUID offers FSGSBASE) and the callee-saved
 * registers that neither _start nor main has touched yet. Then, for the request "state",
 * it replies with one line of space-separated key=value pairs (all numbers in hex):
 *
 *   rflags cs ss ds es fs gs   at entry (RFLAGS's arithmetic flags are _start's)
 *   fsbase gsbase              RDFSBASE/RDGSBASE, or "-" without CPUID FSGSBASE
 *   rbx rbp r12 r13 r14 r15    at entry (RBP is zeroed by _start)
 *   boot stack_top rsp         vmf_boot (RDI at entry), its stack_top, RSP inside main
 *   sse                        1: an SSE instruction ran (CR4.OSFXSR)
 *   osxsave ospke              CPUID.1:ECX[27] and CPUID.7.0:ECX[4], which mirror CR4
 *   xcr0                       XGETBV(0) where OSXSAVE says it works, else "-"
 *   c<leaf>.<sub>              "eax,ebx,ecx,edx" for leaves 0, 1, 7.0, 0xd.0, 0xd.1,
 *                              0x80000000 and 0x80000001
 *
 * "stop" replies "bye" and exits 0.
 */
#include <vmfork.h>

struct entry {
    uint64_t rflags;     /*  0 */
    uint64_t sel[6];     /*  8: cs ss ds es fs gs */
    uint64_t gpr[6];     /* 56: rbx rbp r12 r13 r14 r15 */
    uint64_t rsp;        /* 104 */
};

void observe(struct entry *e);

__asm__(
    ".text\n"
    ".globl observe\n"
    ".type observe, @function\n"
    "observe:\n"
    "  pushfq\n"
    "  popq 0(%rdi)\n"
    "  xor %eax, %eax\n"
    "  mov %cs, %ax\n mov %rax, 8(%rdi)\n"
    "  mov %ss, %ax\n mov %rax, 16(%rdi)\n"
    "  mov %ds, %ax\n mov %rax, 24(%rdi)\n"
    "  mov %es, %ax\n mov %rax, 32(%rdi)\n"
    "  mov %fs, %ax\n mov %rax, 40(%rdi)\n"
    "  mov %gs, %ax\n mov %rax, 48(%rdi)\n"
    "  mov %rbx, 56(%rdi)\n"
    "  mov %rbp, 64(%rdi)\n"
    "  mov %r12, 72(%rdi)\n"
    "  mov %r13, 80(%rdi)\n"
    "  mov %r14, 88(%rdi)\n"
    "  mov %r15, 96(%rdi)\n"
    "  mov %rsp, 104(%rdi)\n"
    "  ret\n"
    ".size observe, . - observe\n");

static struct entry at_entry;
static char req[256];
static char out[2048];

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static size_t leaf(size_t o, uint32_t fn, uint32_t sub)
{
    uint32_t r[4];
    cpuid(fn, sub, r);
    return o + (size_t)vmf_snprintf(out + o, sizeof out - o, " c%x.%x=%x,%x,%x,%x", fn, sub, r[0], r[1], r[2],
                                    r[3]);
}

static size_t report(void)
{
    static const char *const sel[6] = { "cs", "ss", "ds", "es", "fs", "gs" };
    static const char *const gpr[6] = { "rbx", "rbp", "r12", "r13", "r14", "r15" };
    uint32_t l1[4], l7[4];
    size_t o = (size_t)vmf_snprintf(out, sizeof out, "rflags=%lx", (unsigned long)at_entry.rflags);

    for (int i = 0; i < 6; i++)
        o += (size_t)vmf_snprintf(out + o, sizeof out - o, " %s=%lx", sel[i], (unsigned long)at_entry.sel[i]);
    for (int i = 0; i < 6; i++)
        o += (size_t)vmf_snprintf(out + o, sizeof out - o, " %s=%lx", gpr[i], (unsigned long)at_entry.gpr[i]);
    o += (size_t)vmf_snprintf(out + o, sizeof out - o, " boot=%lx stack_top=%lx rsp=%lx",
                              (unsigned long)(uintptr_t)vmf_boot, (unsigned long)vmf_boot->stack_top,
                              (unsigned long)at_entry.rsp);
    cpuid(1, 0, l1);
    cpuid(7, 0, l7);
    if (l7[1] & 1u) {
        uint64_t fsb, gsb;
        __asm__ volatile("rdfsbase %0\n rdgsbase %1" : "=r"(fsb), "=r"(gsb));
        o += (size_t)vmf_snprintf(out + o, sizeof out - o, " fsbase=%lx gsbase=%lx", (unsigned long)fsb,
                                  (unsigned long)gsb);
    } else {
        o += (size_t)vmf_snprintf(out + o, sizeof out - o, " fsbase=- gsbase=-");
    }
    /* An SSE instruction: without CR4.OSFXSR it would raise #UD and end the VM. */
    uint64_t x = 0x5555;
    __asm__ volatile("movq %0, %%xmm0\n paddq %%xmm0, %%xmm0\n movq %%xmm0, %0" : "+r"(x) : : "xmm0");
    o += (size_t)vmf_snprintf(out + o, sizeof out - o, " sse=%d", x == 0xaaaa);
    int osxsave = (l1[2] >> 27) & 1;
    o += (size_t)vmf_snprintf(out + o, sizeof out - o, " osxsave=%d ospke=%d", osxsave, (l7[2] >> 4) & 1);
    if (osxsave) {
        uint32_t lo, hi;
        __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
        o += (size_t)vmf_snprintf(out + o, sizeof out - o, " xcr0=%lx", ((unsigned long)hi << 32) | lo);
    } else {
        o += (size_t)vmf_snprintf(out + o, sizeof out - o, " xcr0=-");
    }
    o = leaf(o, 0, 0);
    o = leaf(o, 1, 0);
    o = leaf(o, 7, 0);
    o = leaf(o, 0xd, 0);
    o = leaf(o, 0xd, 1);
    o = leaf(o, 0x80000000u, 0);
    o = leaf(o, 0x80000001u, 0);
    return o;
}

int main(void)
{
    observe(&at_entry);
    vmf_ready();
    for (;;) {
        size_t len = 0;
        int64_t rc = vmf_recv(req, sizeof req - 1, 0, &len);
        if (rc == VMF_ECLOSED)
            return 0;
        if (rc < 0)
            return 4;
        req[len] = 0;
        if (len == 5 && strncmp(req, "state", 5) == 0) {
            report();
        } else if (len == 4 && strncmp(req, "stop", 4) == 0) {
            vmf_send("bye", 3);
            return 0;
        } else {
            vmf_snprintf(out, sizeof out, "error: unknown request");
        }
        if (vmf_send(out, strlen(out)) < 0)
            return 5;
    }
}
