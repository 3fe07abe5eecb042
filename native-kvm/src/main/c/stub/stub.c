/*
 * vmfork-stub: the guest process of the process platform (host/procvm.c).
 *
 * vmfork_proc_spawn() starts this program in fresh namespaces with nothing but fd 3 (its
 * end of the control socket), no environment, no capabilities and NO_NEW_PRIVS. It runs
 * without libc (raw system calls), linked at 0x600000000000 (stub.ld), and does, in order:
 *
 *   1. wait for one LAUNCH message (proto.h) on fd 3;
 *   2. map each guest RAM extent at its guest address (RWX, shared or private) from the
 *      memory fds that came with it: the first (the whole of RAM) with
 *      MAP_FIXED_NOREPLACE, each later one (an overlay layer of a runtime image) with
 *      MAP_FIXED over the first and inside it; close those fds, and unmap the
 *      ranges the VMM lists (the kernel's [stack], [vdso], [vvar]: the stub runs on
 *      stacks in its own .bss, so nothing it needs is outside [__stub_start, __stub_end));
 *   2b. for private RAM: make a userfaultfd of this address space (user-mode faults only,
 *      asynchronous write-protect: a write to a protected page is resolved by the kernel
 *      at once and leaves the page "written" for PAGEMAP_SCAN) and register extent 0 with
 *      it in write-protect mode; it goes to the VMM with the reply, which then reads and
 *      re-protects the pages the guest writes between two forks (procvm.c,
 *      vmfork_proc_scan_written_wp) without this process's help;
 *   3. create vcpus - 1 more threads, which wait in FUTEX_WAIT;
 *   4. reply with the status and the thread ids, and wait for GO; by then the VMM has
 *      PTRACE_SEIZEd every thread;
 *   5. on GO: wake the threads and wait until each has left its last system call; close
 *      fd 3; install the seccomp filter on all threads at once (TSYNC) that turns every
 *      system call into SIGSYS (SECCOMP_RET_TRAP; data 0 for x86-64, 1 for any other
 *      arch, i.e. int $0x80); let the threads go; every thread executes int3.
 *
 * The int3 is each thread's last own instruction: its SIGTRAP stop hands the thread to
 * its tracer, which sets the guest's registers and never lets it return here. From the
 * moment the filter is in, nothing in the process can make a system call: the threads
 * wait for the release by spinning on a flag (pause), not in futex.
 *
 * Any failure before GO ends the process (exit_group) after the reply says why; the VMM
 * SIGKILLs it anyway. A refused filter after GO ends it with STUB_EXIT_SECCOMP | errno.
 */
#include <stddef.h>
#include <stdint.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/seccomp.h>
#include <linux/signal.h>
#include <linux/ioctl.h>
#include <linux/userfaultfd.h>
#include <asm/unistd.h>

#include "proto.h"

/* -------- raw system calls (no libc) -------- */

static inline long sys6(long n, long a, long b, long c, long d, long e, long f)
{
    register long r10 __asm__("r10") = d;
    register long r8 __asm__("r8") = e;
    register long r9 __asm__("r9") = f;
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#define sys3(n, a, b, c) sys6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)

__attribute__((noreturn)) static void die(int code)
{
    for (;;)
        sys3(__NR_exit_group, code, 0, 0);
}

/* The few libc-like bits gcc may call on its own even in freestanding code. */
void *memset(void *d, int c, size_t n);
void *memcpy(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n)
{
    unsigned char *p = d;
    while (n--)
        *p++ = (unsigned char)c;
    return d;
}
void *memcpy(void *d, const void *s, size_t n)
{
    unsigned char *p = d;
    const unsigned char *q = s;
    while (n--)
        *p++ = *q++;
    return d;
}

/* -------- kernel ABI bits not worth a libc header -------- */

#define PROT_RWX 7
#define MAP_SHARED 0x01
#define MAP_PRIVATE 0x02
#define MAP_FIXED 0x10
#define MAP_FIXED_NOREPLACE 0x100000
#define PR_SET_PDEATHSIG 1
#define PR_SET_NO_NEW_PRIVS 38
#define SOL_SOCKET 1
#define SCM_RIGHTS 1
#define CLONE_THREAD_FLAGS 0x00050f00 /* VM|FS|FILES|SIGHAND|THREAD|SYSVSEM */
#define CTL_FD 3
#define EINVAL 22
#define EPROTO 71

struct iovec_k { void *base; size_t len; };
struct msghdr_k {
    void *name; int namelen; struct iovec_k *iov; size_t iovlen;
    void *control; size_t controllen; unsigned flags;
};
struct cmsghdr_k { size_t len; int level; int type; };

extern char __stub_start[], __stub_end[];
extern long stub_clone_thread(unsigned long flags, void *stack_top, void (*fn)(long), long arg);

/* -------- state -------- */

#define MAIN_STACK (64 * 1024)
#define THREAD_STACK (16 * 1024) /* a thread only waits, then executes int3 */

/* start.S sets RSP to the end of this (its size is repeated there) */
extern char stub_main_stack[MAIN_STACK];
__attribute__((aligned(16))) char stub_main_stack[MAIN_STACK];
__attribute__((aligned(16))) static char thread_stacks[STUB_MAX_VCPUS][THREAD_STACK];

static union {
    struct stub_launch h;
    unsigned char bytes[STUB_LAUNCH_MAX_BYTES];
} msg;
static union {
    struct cmsghdr_k h;
    unsigned char bytes[sizeof(struct cmsghdr_k) + STUB_MAX_FDS * sizeof(int)];
} cmsg;
static struct {
    struct stub_reply h;
    int32_t tids[STUB_MAX_VCPUS];
} reply;

static volatile int go_flag;      /* futex word: GO has come */
static volatile int awake;        /* threads that have left FUTEX_WAIT for good */
static volatile int armed;        /* the filter is in: execute int3 */

/* -------- the threads -------- */

static void vcpu_thread(long index)
{
    (void)index;
    while (!go_flag)
        sys6(__NR_futex, (long)&go_flag, FUTEX_WAIT | FUTEX_PRIVATE_FLAG, 0, 0, 0, 0);
    __atomic_fetch_add(&awake, 1, __ATOMIC_SEQ_CST);
    /* No system call from here on: the filter goes in while we spin. */
    while (!__atomic_load_n(&armed, __ATOMIC_ACQUIRE))
        __asm__ volatile("pause");
    for (;;)
        __asm__ volatile("int3\n\tud2");
}

/* -------- main -------- */

/* The write tracker for the VMM (step 2b), -1 when there is none. */
static int uffd = -1;
static int uffd_status = 1;

static void send_reply(int status, int index, int step, int ntids)
{
    reply.h.magic = STUB_REPLY_MAGIC;
    reply.h.status = status;
    reply.h.index = index;
    reply.h.step = step;
    reply.h.ntids = ntids;
    reply.h.uffd_status = uffd_status;
    struct iovec_k iov = { &reply, sizeof reply.h + (size_t)ntids * sizeof(int32_t) };
    struct msghdr_k m = { 0, 0, &iov, 1, 0, 0, 0 };
    union {
        struct cmsghdr_k h;
        unsigned char bytes[sizeof(struct cmsghdr_k) + 8];
    } c;
    if (status == 0 && uffd >= 0) {
        c.h.len = sizeof(struct cmsghdr_k) + sizeof(int);
        c.h.level = SOL_SOCKET;
        c.h.type = SCM_RIGHTS;
        memcpy(c.bytes + sizeof(struct cmsghdr_k), &uffd, sizeof(int));
        m.control = &c;
        m.controllen = sizeof c;
    }
    sys3(__NR_sendmsg, CTL_FD, &m, 0);
    if (uffd >= 0) {
        sys3(__NR_close, uffd, 0, 0);   /* the guest holds no fd of its own */
        uffd = -1;
    }
}

/*
 * Step 2b: a userfaultfd over [start, start + len) in asynchronous write-protect mode.
 * Sets uffd, or uffd_status to the -errno of the failed step; never fails the launch.
 */
static void track_writes(uint64_t start, uint64_t len)
{
    long fd = sys3(__NR_userfaultfd, 02000000 /* O_CLOEXEC */ | UFFD_USER_MODE_ONLY, 0, 0);
    if (fd < 0) {
        uffd_status = (int)fd;
        return;
    }
    struct uffdio_api api = { .api = UFFD_API, .features = STUB_UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_HUGETLBFS_SHMEM };
    long r = sys3(__NR_ioctl, fd, UFFDIO_API, &api);
    if (r == 0) {
        struct uffdio_register reg = { .range = { start, len }, .mode = UFFDIO_REGISTER_MODE_WP };
        r = sys3(__NR_ioctl, fd, UFFDIO_REGISTER, &reg);
    }
    if (r != 0) {
        sys3(__NR_close, fd, 0, 0);
        uffd_status = (int)r;
        return;
    }
    uffd = (int)fd;
    uffd_status = 0;
}

static void fail(int status, int index, int step)
{
    send_reply(status, index, step, 0);
    die(2);
}

void stub_main(void);
void stub_main(void)
{
    /* spawn set it too; this costs nothing and covers a spawn that could not. */
    sys3(__NR_prctl, PR_SET_PDEATHSIG, 9, 0);
    sys3(__NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0);

    /* 0. READY: the exec is done (proto.h) */
    char ready = STUB_READY;
    if (sys3(__NR_write, CTL_FD, (long)&ready, 1) != 1)
        die(1);

    /* 1. LAUNCH (an EOF here means the VMM has gone: exit quietly) */
    struct iovec_k iov = { &msg, sizeof msg };
    struct msghdr_k m = { 0, 0, &iov, 1, &cmsg, sizeof cmsg, 0 };
    long n = sys3(__NR_recvmsg, CTL_FD, &m, 0);
    if (n <= 0)
        die(1);
    int fds[STUB_MAX_FDS];
    int nfds = 0;
    if (m.controllen >= sizeof(struct cmsghdr_k) && cmsg.h.level == SOL_SOCKET && cmsg.h.type == SCM_RIGHTS) {
        nfds = (int)((cmsg.h.len - sizeof(struct cmsghdr_k)) / sizeof(int));
        memcpy(fds, cmsg.bytes + sizeof(struct cmsghdr_k), (size_t)nfds * sizeof(int));
    }
    struct stub_launch *h = &msg.h;
    if ((size_t)n < sizeof *h || h->magic != STUB_LAUNCH_MAGIC || (m.flags & 0x8 /* MSG_CTRUNC */)
        || h->vcpus < 1 || h->vcpus > STUB_MAX_VCPUS || h->nfds != (uint32_t)nfds
        || h->nextents > STUB_MAX_EXTENTS || h->nunmaps > STUB_MAX_UNMAPS
        || (size_t)n != sizeof *h + (h->nextents * 5 + h->nunmaps * 2) * sizeof(int64_t))
        fail(-EPROTO, -1, STUB_STEP_MESSAGE);
    const int64_t *ext = (const int64_t *)(h + 1);
    const int64_t *unm = ext + 5 * h->nextents;

    /* 2. guest RAM, then away with everything else */
    for (uint32_t i = 0; i < h->nextents; i++) {
        const int64_t *e = ext + 5 * i;
        if (e[2] < 0 || e[2] >= nfds)
            fail(-EINVAL, (int)i, STUB_STEP_MMAP);
        /* Later extents replace part of the first, and must lie inside it: nothing the
           VMM sends can map over the stub. */
        if (i > 0 && (e[0] < ext[0] || e[1] <= 0 || e[0] + e[1] > ext[0] + ext[1]))
            fail(-EINVAL, (int)i, STUB_STEP_MMAP);
        long flags = (e[4] ? MAP_SHARED : MAP_PRIVATE) | (i == 0 ? MAP_FIXED_NOREPLACE : MAP_FIXED);
        long r = sys6(__NR_mmap, e[0], e[1], PROT_RWX, flags, fds[e[2]], e[3]);
        if (r != e[0])
            fail(r < 0 && r > -4096 ? (int)r : -EINVAL, (int)i, STUB_STEP_MMAP);
    }
    for (int i = 0; i < nfds; i++)
        sys3(__NR_close, fds[i], 0, 0);
    for (uint32_t i = 0; i < h->nunmaps; i++) {
        uint64_t a = (uint64_t)unm[2 * i], len = (uint64_t)unm[2 * i + 1];
        if (a < (uint64_t)__stub_end && a + len > (uint64_t)__stub_start)
            fail(-EINVAL, (int)i, STUB_STEP_UNMAP);
        long r = sys3(__NR_munmap, a, len, 0);
        if (r != 0)
            fail((int)r, (int)i, STUB_STEP_UNMAP);
    }

    /* 2b. the guest's writes, tracked for the VMM */
    if (h->nextents > 0 && ext[4] == 0)
        track_writes((uint64_t)ext[0], (uint64_t)ext[1]);

    /* 3. the other vCPUs' threads */
    int vcpus = (int)h->vcpus;
    reply.tids[0] = (int32_t)sys3(__NR_gettid, 0, 0, 0);
    for (int i = 1; i < vcpus; i++) {
        long t = stub_clone_thread(CLONE_THREAD_FLAGS, thread_stacks[i] + THREAD_STACK, vcpu_thread, i);
        if (t < 0)
            fail((int)t, i, STUB_STEP_THREAD);
        reply.tids[i] = (int32_t)t;
    }

    /* 4. reply, wait for GO */
    send_reply(0, -1, STUB_STEP_OK, vcpus);
    char go = 0;
    struct iovec_k giov = { &go, 1 };
    struct msghdr_k gm = { 0, 0, &giov, 1, 0, 0, 0 };
    if (sys3(__NR_recvmsg, CTL_FD, &gm, 0) != 1 || go != STUB_GO)
        die(3);

    /* 5. the last system calls */
    go_flag = 1;
    sys6(__NR_futex, (long)&go_flag, FUTEX_WAKE | FUTEX_PRIVATE_FLAG, 0x7fffffff, 0, 0, 0);
    while (__atomic_load_n(&awake, __ATOMIC_SEQ_CST) != vcpus - 1)
        sys3(__NR_sched_yield, 0, 0, 0);
    sys3(__NR_close, CTL_FD, 0, 0);

    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP | 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP | 1),
    };
    struct sock_fprog prog = { sizeof filter / sizeof filter[0], filter };
    long r = sys3(__NR_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
    if (r != 0)   /* -errno, or a thread id for a TSYNC conflict (none here: no thread has a filter of its own) */
        die(STUB_EXIT_SECCOMP | (r < 0 && r > -128 ? (int)-r : 0x7f));

    __atomic_store_n(&armed, 1, __ATOMIC_RELEASE);
    for (;;)
        __asm__ volatile("int3\n\tud2");
}
