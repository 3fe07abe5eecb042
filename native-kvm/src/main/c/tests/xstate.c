/*
 * xstate: a test guest for the vector and floating-point state that a fork, an
 * external fork and a capsule clone must carry. It fills every register of that state
 * that it can observe with known values, hands itself to the VMM, and checks each one.
 *
 * What exists is decided in the guest, with CPUID and XGETBV (what the guest can use,
 * not what the VMM said):
 *   sse     always: x87 control word and the 8 stack registers, MXCSR, XMM0-15
 *   avx     CPUID.1:ECX.AVX and OSXSAVE, CPUID.7:EBX.AVX2, XCR0 x87|SSE|AVX: YMM0-15
 *   avx512  CPUID.7:EBX.AVX512F and AVX512BW, XCR0 opmask|ZMM_Hi256|Hi16_ZMM: ZMM0-31, k0-7
 *   amx     CPUID.7:EDX.AMX-TILE and XCR0 tilecfg|tiledata: only reported, not filled
 *
 * Requests (the reply says "ok" or names the first register that differs):
 *   info      "tier=<sse|avx|avx512> amx=<0|1> xcr0=<hex>"
 *   fork N    fills the registers from a pattern, issues FORK for N copies from assembly
 *             with the registers live, and checks them after it. The parent replies
 *             "parent launched=<n> <check>"; each child sends "child index=<i> <check>"
 *             unsolicited and then serves requests.
 *   hold      replies "holding", fills the registers and blocks in RECV from assembly;
 *             the next request (any) ends the wait and gets "hold <check>". For snapshots, capsules and
 *             external forks of a guest blocked in a hypercall.
 *   spin      replies "spinning", then loops adding 1 to every 64-bit lane of every vector register and to every
 *             opmask register, and to a counter in R15, polling RECV without blocking every
 *             2^18 rounds; the next request ends the loop and gets
 *             "spin rounds=<n> <check>", the check being that every lane equals its
 *             pattern value plus the rounds counted. A copy made while it spins must
 *             answer the same way. x87 and MXCSR hold their pattern throughout.
 *   stop      "bye", exit 0
 */
#include <vmfork.h>

enum { TIER_SSE = 0, TIER_AVX = 1, TIER_AVX512 = 2 };

/* The layouts below are read and written by the assembly: keep the offsets in step. */
struct pattern {                 /* 64-byte aligned */
    uint16_t fcw;                /*   0 */
    uint16_t pad0;
    uint32_t mxcsr;              /*   4 */
    uint64_t pad1;
    uint8_t st[8][16];           /*  16: ST(i) as 80-bit values, 10 of 16 bytes used */
    uint8_t pad2[48];            /* 144 */
    uint64_t k[8];               /* 192 */
    uint64_t z[32][8];           /* 256: ZMMi lanes; YMMi and XMMi are their low lanes */
};
_Static_assert(__builtin_offsetof(struct pattern, st) == 16, "pattern.st");
_Static_assert(__builtin_offsetof(struct pattern, k) == 192, "pattern.k");
_Static_assert(__builtin_offsetof(struct pattern, z) == 256, "pattern.z");

struct dump {                    /* 64-byte aligned */
    uint8_t fx[512];             /*   0: FXSAVE64 image: FCW, FTW, MXCSR, ST0-7, XMM0-15 */
    uint64_t k[8];               /* 512 */
    uint64_t z[32][8];           /* 576 */
};
_Static_assert(__builtin_offsetof(struct dump, k) == 512, "dump.k");
_Static_assert(__builtin_offsetof(struct dump, z) == 576, "dump.z");

struct run {
    uint64_t tier;               /*  0 */
    uint64_t spin;               /*  8: 1 = spin loop, 0 = one hypercall */
    struct pattern *pat;         /* 16 */
    struct dump *dump;           /* 24 */
    uint64_t nr;                 /* 32: hypercall number (EAX) */
    uint64_t arg;                /* 40: its argument (RDI) */
    int64_t ret;                 /* 48: RAX after it */
    uint64_t rounds;             /* 56: R15 at the end */
    uint32_t saved_mxcsr;        /* 64 */
    uint16_t saved_fcw;          /* 68 */
};
_Static_assert(__builtin_offsetof(struct run, saved_fcw) == 68, "run.saved_fcw");

void xs_run(struct run *r);

/*
 * xs_run(r): load the pattern, then either one hypercall or the spin loop, then store
 * every register into the dump and restore the x87 control word and MXCSR the C ABI
 * wants. No C code runs between loading and storing, so nothing else touches the
 * registers but the VMM.
 */
__asm__(
    ".text\n"
    ".globl xs_run\n"
    ".type xs_run, @function\n"
    "xs_run:\n"
    "  push %rbx\n push %r12\n push %r13\n push %r14\n push %r15\n"
    "  mov %rdi, %r12\n"
    "  mov 16(%r12), %r13\n"               /* pattern */
    "  mov 24(%r12), %r14\n"               /* dump */
    "  mov (%r12), %rbx\n"                 /* tier */
    "  xor %r15d, %r15d\n"
    "  stmxcsr 64(%r12)\n"
    "  fnstcw 68(%r12)\n"
    /* x87: ST(0) ends up holding st[0]. */
    "  fninit\n"
    "  fldcw 0(%r13)\n"
    "  .irp i,7,6,5,4,3,2,1,0\n"
    "  fldt 16+16*\\i(%r13)\n"
    "  .endr\n"
    "  ldmxcsr 4(%r13)\n"
    "  cmp $2, %rbx\n je 10f\n"
    "  cmp $1, %rbx\n je 11f\n"
    "  .irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
    "  movdqu 256+64*\\i(%r13), %xmm\\i\n"
    "  .endr\n"
    "  jmp 20f\n"
    "11:\n"
    "  .irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
    "  vmovdqu 256+64*\\i(%r13), %ymm\\i\n"
    "  .endr\n"
    "  jmp 20f\n"
    "10:\n"
    "  .irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
    "  vmovdqu64 256+64*\\i(%r13), %zmm\\i\n"
    "  .endr\n"
    "  .irp i,0,1,2,3,4,5,6,7\n"
    "  kmovq 192+8*\\i(%r13), %k\\i\n"
    "  .endr\n"
    "20:\n"
    "  cmpq $0, 8(%r12)\n jne 30f\n"
    /* One hypercall with every register live. */
    "  mov 32(%r12), %eax\n"
    "  mov 40(%r12), %rdi\n"
    "  mov $0x7f0, %edx\n"
    "  out %eax, (%dx)\n"
    "  mov %rax, 48(%r12)\n"
    "  jmp 40f\n"
    /* The spin loop: one round adds 1 to every lane, then to R15. */
    "30:\n"
    "  cmp $2, %rbx\n je 32f\n"
    "  cmp $1, %rbx\n je 31f\n"
    "33:\n"
    "  .irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
    "  paddq ones(%rip), %xmm\\i\n"
    "  .endr\n"
    "  inc %r15\n"
    "  test $0x3ffff, %r15d\n jnz 33b\n"
    "  call xs_poll\n"
    "  test %rax, %rax\n js 33b\n"
    "  jmp 40f\n"
    "31:\n"
    "  .irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
    "  vpaddq ones(%rip), %ymm\\i, %ymm\\i\n"
    "  .endr\n"
    "  inc %r15\n"
    "  test $0x3ffff, %r15d\n jnz 31b\n"
    "  call xs_poll\n"
    "  test %rax, %rax\n js 31b\n"
    "  jmp 40f\n"
    "32:\n"
    "  .irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
    "  vpaddq ones(%rip), %zmm\\i, %zmm\\i\n"
    "  .endr\n"
    "  .irp i,0,1,2,3,4,5,6,7\n"
    "  kmovq %k\\i, %rax\n inc %rax\n kmovq %rax, %k\\i\n"
    "  .endr\n"
    "  inc %r15\n"
    "  test $0x3ffff, %r15d\n jnz 32b\n"
    "  call xs_poll\n"
    "  test %rax, %rax\n js 32b\n"
    "40:\n"
    "  mov %r15, 56(%r12)\n"
    "  fxsave64 0(%r14)\n"
    "  cmp $2, %rbx\n je 41f\n"
    "  cmp $1, %rbx\n jne 49f\n"
    "  .irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n"
    "  vmovdqu %ymm\\i, 576+64*\\i(%r14)\n"
    "  .endr\n"
    "  jmp 48f\n"
    "41:\n"
    "  .irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n"
    "  vmovdqu64 %zmm\\i, 576+64*\\i(%r14)\n"
    "  .endr\n"
    "  .irp i,0,1,2,3,4,5,6,7\n"
    "  kmovq %k\\i, 512+8*\\i(%r14)\n"
    "  .endr\n"
    "48:\n"
    "  vzeroupper\n"
    "49:\n"
    "  fninit\n"
    "  fldcw 68(%r12)\n"
    "  ldmxcsr 64(%r12)\n"
    "  pop %r15\n pop %r14\n pop %r13\n pop %r12\n pop %rbx\n"
    "  ret\n"
    ".size xs_run, . - xs_run\n"
    /* RECV without blocking; touches RAX, RDX and RDI only (RDI holds no state here). */
    "xs_poll:\n"
    "  mov 32(%r12), %eax\n"
    "  mov 40(%r12), %rdi\n"
    "  mov $0x7f0, %edx\n"
    "  out %eax, (%dx)\n"
    "  ret\n"
    ".section .rodata\n"
    ".balign 64\n"
    "ones: .quad 1,1,1,1,1,1,1,1\n"
    ".text\n");

static struct pattern pat __attribute__((aligned(64)));
static struct dump dmp __attribute__((aligned(64)));
static char req[4096];
static char out[512];
static int tier;

static int is(const char *word)
{
    return strncmp(req, word, strlen(word) + 1) == 0;
}

static int amx;
static uint64_t xcr0;

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void cpuid(uint32_t leaf, uint32_t sub, uint32_t r[4])
{
    __asm__ volatile("cpuid" : "=a"(r[0]), "=b"(r[1]), "=c"(r[2]), "=d"(r[3]) : "a"(leaf), "c"(sub));
}

static void probe(void)
{
    uint32_t l1[4], l7[4] = { 0 }, l0[4];
    cpuid(0, 0, l0);
    cpuid(1, 0, l1);
    if (l0[0] >= 7)
        cpuid(7, 0, l7);
    tier = TIER_SSE;
    if (!(l1[2] & (1u << 27)))          /* OSXSAVE: no XGETBV, no AVX */
        return;
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    xcr0 = ((uint64_t)hi << 32) | lo;
    if ((l1[2] & (1u << 28)) && (l7[1] & (1u << 5)) && (xcr0 & 7) == 7)
        tier = TIER_AVX;
    if (tier == TIER_AVX && (l7[1] & (1u << 16)) && (l7[1] & (1u << 30)) && (xcr0 & 0xe0) == 0xe0)
        tier = TIER_AVX512;
    amx = (l7[3] & (1u << 24)) && (xcr0 & 0x60000) == 0x60000;
}

static void make_pattern(uint64_t seed)
{
    uint64_t s = seed;
    pat.fcw = 0x0b7f;       /* all exceptions masked, round up, 64-bit precision */
    pat.mxcsr = 0xdf80;     /* all exceptions masked, round up, flush to zero */
    for (int i = 0; i < 8; i++) {
        uint64_t m = mix(&s) | (1ull << 63);  /* a normal number: integer bit set */
        uint16_t se = (uint16_t)(0x3fff + i * 3 - 10) | (uint16_t)((i & 1) << 15);
        memcpy(pat.st[i], &m, 8);
        memcpy(pat.st[i] + 8, &se, 2);
    }
    for (int i = 0; i < 8; i++)
        pat.k[i] = mix(&s);
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < 8; j++)
            pat.z[i][j] = mix(&s);
}

/* Writes "ok" or the first difference into out+o; returns 1 when all match. */
static int check(size_t o, uint64_t add)
{
    uint16_t fcw;
    uint32_t mxcsr;
    memcpy(&fcw, dmp.fx, 2);
    memcpy(&mxcsr, dmp.fx + 24, 4);
    const char *what = 0;
    int reg = -1, lane = -1;
    uint64_t got = 0, want = 0;
    if (fcw != pat.fcw) {
        what = "fcw", got = fcw, want = pat.fcw;
    } else if (mxcsr != pat.mxcsr) {
        what = "mxcsr", got = mxcsr, want = pat.mxcsr;
    } else if (dmp.fx[4] != 0xff) {
        what = "ftw", got = dmp.fx[4], want = 0xff;
    }
    for (int i = 0; !what && i < 8; i++)
        if (memcmp(dmp.fx + 32 + 16 * i, pat.st[i], 10) != 0) {
            uint64_t m;
            memcpy(&m, dmp.fx + 32 + 16 * i, 8);
            memcpy(&want, pat.st[i], 8);
            what = "st", reg = i, got = m;
        }
    for (int i = 0; !what && i < 16; i++)
        for (int j = 0; !what && j < 2; j++) {
            uint64_t x;
            memcpy(&x, dmp.fx + 160 + 16 * i + 8 * j, 8);
            if (x != pat.z[i][j] + add)
                what = "xmm", reg = i, lane = j, got = x, want = pat.z[i][j] + add;
        }
    for (int i = 0; !what && tier >= TIER_AVX && i < 16; i++)
        for (int j = 2; !what && j < 4; j++)
            if (dmp.z[i][j] != pat.z[i][j] + add)
                what = "ymm", reg = i, lane = j, got = dmp.z[i][j], want = pat.z[i][j] + add;
    for (int i = 0; !what && tier >= TIER_AVX512 && i < 32; i++)
        for (int j = 0; !what && j < 8; j++)
            if (dmp.z[i][j] != pat.z[i][j] + add)
                what = "zmm", reg = i, lane = j, got = dmp.z[i][j], want = pat.z[i][j] + add;
    for (int i = 0; !what && tier >= TIER_AVX512 && i < 8; i++)
        if (dmp.k[i] != pat.k[i] + add)
            what = "k", reg = i, got = dmp.k[i], want = pat.k[i] + add;
    if (!what) {
        vmf_snprintf(out + o, sizeof out - o, "ok");
        return 1;
    }
    vmf_snprintf(out + o, sizeof out - o, "bad %s%d lane %d: got %lx want %lx", what, reg, lane,
                 (unsigned long)got, (unsigned long)want);
    return 0;
}

static void reply(void)
{
    if (vmf_send(out, strlen(out)) < 0)
        vmf_exit(5);
}

static void run(struct run *r, int spin, uint32_t nr, uint64_t arg)
{
    memset(&dmp, 0, sizeof dmp);
    r->tier = (uint64_t)tier;
    r->spin = (uint64_t)spin;
    r->pat = &pat;
    r->dump = &dmp;
    r->nr = nr;
    r->arg = arg;
    xs_run(r);
}

int main(void)
{
    static uint64_t ids[64];
    static int64_t errs[64];
    static char held[64];
    struct run r;

    probe();
    vmf_ready();
    for (uint64_t round = 1;; round++) {
        size_t len = 0;
        int64_t rc = vmf_recv(req, sizeof req - 1, 0, &len);
        if (rc == VMF_ECLOSED)
            return 0;
        if (rc < 0)
            return 4;
        req[len] = 0;
        make_pattern(round * 0x100000001ull);
        if (is("info")) {
            vmf_snprintf(out, sizeof out, "tier=%s amx=%d xcr0=%lx",
                         tier == TIER_AVX512 ? "avx512" : tier == TIER_AVX ? "avx" : "sse", amx,
                         (unsigned long)xcr0);
        } else if (len > 5 && strncmp(req, "fork ", 5) == 0) {
            int ok;
            uint64_t n = vmf_parse_u64(req + 5, len - 5, &ok);
            if (!ok || n == 0 || n > 64) {
                vmf_snprintf(out, sizeof out, "error: bad count");
                reply();
                continue;
            }
            struct vmf_fork f = { .count = (uint32_t)n, .ids = (uint64_t)(uintptr_t)ids,
                                  .errors = (uint64_t)(uintptr_t)errs };
            run(&r, 0, VMF_HC_FORK, (uint64_t)(uintptr_t)&f);
            size_t o;
            if (r.ret >= 0 && f.role == VMF_FORK_CHILD)
                o = (size_t)vmf_snprintf(out, sizeof out, "child index=%u ", f.index);
            else
                o = (size_t)vmf_snprintf(out, sizeof out, "parent launched=%ld ", (long)r.ret);
            check(o, 0);
        } else if (is("hold")) {
            struct vmf_recv rv = { .addr = (uint64_t)(uintptr_t)held, .capacity = sizeof held };
            vmf_snprintf(out, sizeof out, "holding");
            reply();
            run(&r, 0, VMF_HC_RECV, (uint64_t)(uintptr_t)&rv);
            size_t o = (size_t)vmf_snprintf(out, sizeof out, "hold ");
            if (r.ret < 0)
                vmf_snprintf(out + o, sizeof out - o, "recv failed: %ld", (long)r.ret);
            else
                check(o, 0);
        } else if (is("spin")) {
            struct vmf_recv rv = { .addr = (uint64_t)(uintptr_t)held, .capacity = sizeof held,
                                   .flags = VMF_RECV_NONBLOCK };
            vmf_snprintf(out, sizeof out, "spinning");
            reply();
            run(&r, 1, VMF_HC_RECV, (uint64_t)(uintptr_t)&rv);
            size_t o = (size_t)vmf_snprintf(out, sizeof out, "spin rounds=%lu ", (unsigned long)r.rounds);
            check(o, r.rounds);
        } else if (is("stop")) {
            vmf_snprintf(out, sizeof out, "bye");
            reply();
            return 0;
        } else {
            vmf_snprintf(out, sizeof out, "error: unknown request");
        }
        reply();
    }
}
