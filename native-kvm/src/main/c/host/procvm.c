/*
 * procvm: the native core of the process platform, where a guest's code runs natively in
 * a confined host process of its own (vmfork-stub, stub/stub.c) that the VMM traces with
 * ptrace, for hosts without /dev/kvm.
 *
 * The sequence, as the Java side drives it:
 *
 *   pid  = vmfork_proc_spawn(stub_fd, &sock, &ns)      the stub, in new namespaces
 *          vmfork_proc_unmaps(pid, ...)                what the stub must unmap
 *          vmfork_proc_launch(sock, fds, ..., tids)    guest RAM mapped, vCPU threads made
 *          vmfork_proc_seize(tids[i])                  each from its own tracer thread
 *          vmfork_proc_go(sock)                        seccomp on; every thread int3s
 *          vmfork_proc_run(tids[i], NULL, ...)         -> SIGNAL SIGTRAP (the int3)
 *          vmfork_proc_run(tids[i], regs, ...)         -> the guest runs to its next stop
 *
 * A hypercall (`out %eax,(%dx)` at CPL3 with IOPL 0) is a #GP, which the kernel turns
 * into SIGSEGV with si_code SI_KERNEL (0x80) and si_addr 0; the tracer sees it as a
 * signal-delivery stop, handles the call, advances RIP past the 0xEF byte and continues
 * with the signal suppressed. bench/proc_floor.c measures that round trip.
 *
 * Every ptrace request must come from the thread that seized the tracee (the kernel ties
 * a tracee to a tracer thread, not to a process); waitpid may come from any thread of the
 * process but run() always waits for its own tid.
 *
 * Functions return 0 (or a count) on success and -errno on failure unless stated.
 *
 * Measured on the development VM (Linux 6.18, 2 vCPUs, no /dev/kvm, as root):
 *   - spawn obtains all six namespaces (user, pid, net, ipc, uts, mount); the guest
 *     shows Seccomp 2, NoNewPrivs 1, CapEff/CapPrm 0, /proc/<pid>/fd empty, root = an
 *     empty read-only tmpfs, maps = guest RAM + the stub's two mappings + [vsyscall];
 *     with CLONE_NEWUSER refused (tested under a seccomp filter that fails such clones
 *     with EPERM) it falls back to the other five and the stub runs as uid 65534; with
 *     every namespace refused, no namespace and no chroot, uid 65534; with mount(2)
 *     refused (Docker's profile without CAP_SYS_ADMIN), the other five; all still
 *     Seccomp 2, NoNewPrivs 1, CapEff 0, and the probes below give the same stops
 *     (modules/cli's RefusalTest runs `vmfork run` under each of those filters);
 *   - finding the allowed namespaces one by one costs up to six probe spawns, once per
 *     process; ProcessPlatform.open's self-test (spawn, launch, seize, GO, the int3 stop)
 *     takes ~4.5 ms with the stub's loading;
 *   - guest page 0 cannot be mapped (mmap_min_addr 4096; the stub has left the initial
 *     user namespace): an extent at 0 fails the launch with -EPERM; RAM starts at 0x1000
 *     and a read of page 0 is SIGSEGV SEGV_MAPERR;
 *   - hypercall round trip (bench/proc_floor.c, 20,000 calls): p50 ~24 us, p99 ~46 us;
 *   - every `syscall` (and the vsyscall page, emulated by the kernel through the filter)
 *     gives SYSCALL with its number; int $0x80 gives SIGSEGV SI_KERNEL (this kernel has no
 *     IA-32 emulation: the gate is absent, so it never reaches the filter); sysenter
 *     SIGILL ILL_ILLOPN; in/out to any port, cli, hlt, mov %cr3, wrmsr SIGSEGV SI_KERNEL
 *     (the Java side tells `out` from those by the byte at RIP and DX); a jump into the
 *     stub's code runs it until its next system call, which traps like any other.
 *   - after a SIGKILL every tracer's run returns KILLED once and that wait has reaped
 *     its thread; nothing is left (the leader is reported after the other threads).
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/sched.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../stub/proto.h"

_Static_assert(sizeof(struct user_regs_struct) == 27 * sizeof(long), "user_regs_struct is not 27 longs");

/* ======================================================================== spawn */

#define NS_ALL (CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNS)
#define NOBODY 65534
#define SPAWN_STACK (64 * 1024)

/* What the child was doing when it failed: vmfork_proc_spawn_step() names it. */
enum {
    STEP_CLONE, STEP_FDS, STEP_ROOT, STEP_RLIMIT, STEP_NOBODY, STEP_PDEATHSIG, STEP_NO_NEW_PRIVS, STEP_EXEC,
    STEP_SOCKET, STEP_READY,
};
static const char *const step_names[] = {
    [STEP_CLONE] = "clone",
    [STEP_FDS] = "its fds (fcntl, dup3, close_range)",
    [STEP_ROOT] = "mount of its empty root",
    [STEP_RLIMIT] = "setrlimit(RLIMIT_CORE)",
    [STEP_NOBODY] = "setresuid to nobody",
    [STEP_PDEATHSIG] = "prctl(PR_SET_PDEATHSIG)",
    [STEP_NO_NEW_PRIVS] = "prctl(PR_SET_NO_NEW_PRIVS)",
    [STEP_EXEC] = "execveat of the stub",
    [STEP_SOCKET] = "its control socket",
    [STEP_READY] = "the stub's READY (its start after execveat)",
};

struct spawn_args {
    int sock, stub_fd, ns;
    pid_t ppid;
    int root;
    int probe;                  /* stop short of execveat: exit 0 (finding the namespaces allowed) */
    volatile int err;           /* set by the child when it fails before execveat */
    volatile int step;          /* and the STEP_ it failed at */
};

/*
 * The child of vmfork_proc_spawn. It shares the caller's memory (CLONE_VM|CLONE_VFORK,
 * as posix_spawn does; the calling thread is suspended until execveat or exit) and runs
 * in a multi-threaded JVM, so it does only system calls, through syscall(2) even where
 * glibc has a wrapper: glibc's set*id wrappers would broadcast to the JVM's threads.
 * (syscall() sets errno in the caller's TLS, which is suspended: harmless.)
 */
static int spawn_child(void *p)
{
    struct spawn_args *a = p;
    int step = STEP_FDS;

    /* Signals: the caller blocked all of them around clone; set every disposition back
       to default (an ignored signal would stay ignored across exec), then unblock. */
    struct { void *handler; unsigned long flags; void *restorer; uint64_t mask; } dfl = { SIG_DFL, 0, 0, 0 };
    for (int s = 1; s <= 64; s++)
        if (s != SIGKILL && s != SIGSTOP)
            syscall(SYS_rt_sigaction, s, &dfl, NULL, 8);
    uint64_t none = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, NULL, 8);

    /* fds: the socket becomes 3, the stub's fd 4 (close-on-exec), nothing else survives */
    int s = (int)syscall(SYS_fcntl, a->sock, F_DUPFD_CLOEXEC, 5);
    int e = (int)syscall(SYS_fcntl, a->stub_fd, F_DUPFD_CLOEXEC, 5);
    if (s < 0 || e < 0 || syscall(SYS_dup3, s, 3, 0) < 0 || syscall(SYS_dup3, e, 4, O_CLOEXEC) < 0)
        goto fail;
    if (syscall(SYS_close_range, 5, ~0U, 0) < 0)
        goto fail;
    syscall(SYS_close, 0);
    syscall(SYS_close, 1);
    syscall(SYS_close, 2);

    /* An empty, read-only root: a 4 KiB tmpfs mounted over an existing directory in the
       new mount namespace (after making every mount private, so nothing propagates out).
       Without a mount namespace the stub keeps the host's root: seccomp is the barrier,
       the chroot only depth. */
    step = STEP_ROOT;
    if (a->ns & CLONE_NEWNS) {
        if (syscall(SYS_mount, NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
            goto fail;
        static const char *const dirs[] = { "/mnt", "/tmp", "/dev", "/proc", "/" };
        const char *d = NULL;
        for (unsigned i = 0; i < sizeof dirs / sizeof dirs[0] && !d; i++)
            if (syscall(SYS_mount, "vmfork-empty", dirs[i], "tmpfs",
                        MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,nr_inodes=2,mode=0555") == 0)
                d = dirs[i];
        if (!d || syscall(SYS_chroot, d) < 0 || syscall(SYS_chdir, "/") < 0)
            goto fail;
    }

    step = STEP_RLIMIT;
    struct rlimit zero = { 0, 0 };
    if (syscall(SYS_setrlimit, RLIMIT_CORE, &zero) < 0)
        goto fail;

    /* Root without a user namespace: become nobody, so that execveat drops every
       capability. Before PR_SET_PDEATHSIG, which a change of euid clears. */
    step = STEP_NOBODY;
    if (!(a->ns & CLONE_NEWUSER) && a->root) {
        if (syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setresgid, NOBODY, NOBODY, NOBODY) < 0
            || syscall(SYS_setresuid, NOBODY, NOBODY, NOBODY) < 0)
            goto fail;
    }

    /* Die with the parent. The parent is the calling *thread*; and the race with its
       death before this prctl: without a PID namespace getppid tells; with one (getppid
       is 0) the stub's first recvmsg sees EOF once the VMM's end of the socket is gone,
       and exits. */
    step = STEP_PDEATHSIG;
    if (syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0)
        goto fail;
    if (!(a->ns & CLONE_NEWPID) && syscall(SYS_getppid) != a->ppid)
        syscall(SYS_exit_group, 1);
    step = STEP_NO_NEW_PRIVS;
    if (syscall(SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        goto fail;

    if (a->probe)
        syscall(SYS_exit_group, 0);
    step = STEP_EXEC;
    char *const argv[] = { "vmfork-stub", NULL };
    char *const envp[] = { NULL };
    syscall(SYS_execveat, 4, "", argv, envp, AT_EMPTY_PATH);
fail:
    a->err = errno ? errno : EINVAL;
    a->step = step;
    syscall(SYS_exit_group, 127);
    return 127;
}

/*
 * The namespaces a guest process gets: every one of user, PID, net, IPC, UTS and mount
 * that this host allows, found once per process (-1: not yet) and then asked for directly.
 * A refusal shows as clone failing (EPERM: no privilege, or a seccomp profile; EINVAL;
 * ENOSPC: user.max_*_namespaces is 0; EUSERS) or, for the mount namespace, as the mount
 * of the empty root failing inside it (EPERM in a container without CAP_SYS_ADMIN).
 * Which were refused, and how, is kept for vmfork_proc_spawn_note().
 */
static int ns_allowed = -1;
static char ns_note[512];
/* The step of this thread's last failed spawn (STEP_*), for vmfork_proc_spawn_step(). */
static __thread int failed_step = STEP_CLONE;

static int ns_refusal(int err, int step)
{
    return step == STEP_ROOT || (step == STEP_CLONE && (err == EPERM || err == EINVAL || err == ENOSPC || err == EUSERS));
}

/*
 * One clone of spawn_child with a.ns; returns the pid (its exit reaped if a.probe or if
 * it failed before execveat) or -errno, with a.step set on failure.
 */
static pid_t spawn_once(struct spawn_args *a, void *stack)
{
    sigset_t all, old;
    sigfillset(&all);
    a->err = 0;
    a->step = STEP_CLONE;
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid_t pid = clone(spawn_child, (char *)stack + SPAWN_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD | a->ns, a);
    int err = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0)
        return -err;
    if (a->err || a->probe) {   /* the child has exited (failed, or a probe that got as far as execveat) */
        while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
            ;
        return a->err ? -a->err : pid;
    }
    return pid;
}

/* The names of the errnos a refused namespace shows (glibc's strerrorname_np is 2.32+). */
static const char *errno_name(int e, char buf[24])
{
    switch (e) {
    case EPERM: return "EPERM";
    case EINVAL: return "EINVAL";
    case ENOSPC: return "ENOSPC";
    case EUSERS: return "EUSERS";
    case EACCES: return "EACCES";
    case ENOENT: return "ENOENT";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    default: snprintf(buf, 24, "errno %d", e); return buf;
    }
}

/*
 * Finds the namespaces this host allows one by one: each of user (first: without it an
 * unprivileged VMM gets none of the others), PID, net, IPC, UTS and mount is kept if a
 * probe spawn (every step but execveat) succeeds with it added to those kept so far.
 */
static int find_namespaces(struct spawn_args *a, void *stack)
{
    static const struct { int flag; const char *name; } each[] = {
        { CLONE_NEWUSER, "user" }, { CLONE_NEWPID, "pid" }, { CLONE_NEWNET, "net" },
        { CLONE_NEWIPC, "ipc" }, { CLONE_NEWUTS, "uts" }, { CLONE_NEWNS, "mount" },
    };
    int mask = 0;
    size_t used = 0;
    char err_buf[24];
    ns_note[0] = 0;
    a->probe = 1;
    for (unsigned i = 0; i < sizeof each / sizeof each[0]; i++) {
        a->ns = mask | each[i].flag;
        pid_t r = spawn_once(a, stack);
        if (r >= 0) {
            mask |= each[i].flag;
            continue;
        }
        if (used < sizeof ns_note)
            used += (size_t)snprintf(ns_note + used, sizeof ns_note - used, "%s%s (%s: %s)", used ? ", " : "",
                                     each[i].name, step_names[a->step], errno_name(-r, err_buf));
    }
    a->probe = 0;
    return mask;
}

/* Waits (5 s at most) for the stub's READY byte on sock: 0, or -ETIMEDOUT, -EPIPE (it
   ended first), -EPROTO (another byte). */
static int await_ready(int sock)
{
    struct pollfd p = { sock, POLLIN, 0 };
    int r;
    do
        r = poll(&p, 1, 5000);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return -errno;
    if (r == 0)
        return -ETIMEDOUT;
    char b = 0;
    ssize_t n;
    do
        n = recv(sock, &b, 1, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0)
        return -EPIPE;
    return b == STUB_READY ? 0 : -EPROTO;
}

/*
 * Starts vmfork-stub (stub_fd: the executable, opened by the caller; O_PATH or O_RDONLY,
 * close-on-exec is fine) as a new process, in every namespace the host allows (see
 * ns_allowed; ns_out says which: CLONE_NEW* bits). Returns the stub's host pid, and the
 * VMM's end of its control socket in *sock_out (close-on-exec, SO_PASSCRED on); or -errno,
 * with vmfork_proc_spawn_step() naming what failed. The guest process is a child of the
 * calling thread: PR_SET_PDEATHSIG fires when that thread exits, so spawn from a thread
 * that lives as long as the guest (or rely on PTRACE_O_EXITKILL once seized).
 */
int vmfork_proc_spawn(int stub_fd, int *sock_out, int *ns_out)
{
    failed_step = STEP_SOCKET;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
        return -errno;
    int one = 1;
    if (setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return -e;
    }
    void *stack = mmap(NULL, SPAWN_STACK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        return -e;
    }
    struct spawn_args a = { .sock = sv[1], .stub_fd = stub_fd, .ppid = getpid(), .root = geteuid() == 0 };
    int known = __atomic_load_n(&ns_allowed, __ATOMIC_ACQUIRE);
    a.ns = known >= 0 ? known : NS_ALL;
    pid_t pid = spawn_once(&a, stack);
    if (pid < 0 && known < 0 && ns_refusal(-pid, a.step)) {
        a.ns = find_namespaces(&a, stack);
        pid = spawn_once(&a, stack);
    }
    if (pid >= 0 && known < 0)
        __atomic_store_n(&ns_allowed, a.ns, __ATOMIC_RELEASE);
    munmap(stack, SPAWN_STACK);
    close(sv[1]);
    if (pid < 0) {
        failed_step = a.step;
        close(sv[0]);
        return pid;
    }
    /* READY: the stub runs its own code, its exec complete (proto.h): only now does
       /proc/<pid>/maps show all that vmfork_proc_unmaps must list. */
    int r = await_ready(sv[0]);
    if (r < 0) {
        failed_step = STEP_READY;
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
            ;
        close(sv[0]);
        return r;
    }
    *sock_out = sv[0];
    if (ns_out)
        *ns_out = a.ns;
    return pid;
}

/* What this thread's last failed vmfork_proc_spawn was doing (a step of spawn_child). */
const char *vmfork_proc_spawn_step(void)
{
    return step_names[failed_step];
}

/* The namespaces this host refused to guest processes and how ("user (clone: EPERM), ..."),
   "" when it allowed all, once the first spawn has found them. */
const char *vmfork_proc_spawn_note(void)
{
    return ns_note;
}

/*
 * What a freshly spawned stub must unmap before the guest runs: every mapping in
 * /proc/<pid>/maps outside the stub's own image [0x600000000000, stub end) except
 * [vsyscall] (which cannot be unmapped; a call into it ends in SIGSYS through the
 * filter). Fills ranges with (addr, len) pairs; returns the pair count, or -errno
 * (-ENOSPC beyond max). Call it before vmfork_proc_launch: later it would list guest RAM.
 */
int vmfork_proc_unmaps(int pid, long *ranges, int max)
{
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -errno;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx", &lo, &hi) != 2)
            continue;
        if (lo >= 0x600000000000UL && lo < 0x600100000000UL)   /* the stub (stub.ld) */
            continue;
        if (lo >= 0xffffffffff600000UL)                        /* [vsyscall] */
            continue;
        if (n == max) {
            fclose(f);
            return -ENOSPC;
        }
        ranges[2 * n] = (long)lo;
        ranges[2 * n + 1] = (long)(hi - lo);
        n++;
    }
    fclose(f);
    return n;
}

/* ======================================================================== launch, go */

int vmfork_proc_go(int sock);

static long ms_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000;
}

/* The host tid of the thread whose innermost (PID namespace) id is nstid, via NSpid. */
static int host_tid(pid_t pid, int nstid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = opendir(path);
    if (!d)
        return -errno;
    int found = -ESRCH;
    struct dirent *de;
    while (found < 0 && (de = readdir(d)) != NULL) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        char sp[320], line[256];
        snprintf(sp, sizeof sp, "/proc/%d/task/%s/status", pid, de->d_name);
        FILE *f = fopen(sp, "re");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f)) {
            if (strncmp(line, "NSpid:", 6) != 0)
                continue;
            char *last = strrchr(line, '\t');
            if (last && atoi(last + 1) == nstid)
                found = atoi(de->d_name);
            break;
        }
        fclose(f);
    }
    closedir(d);
    return found;
}

/*
 * Sends LAUNCH to the stub and waits (5 s at most) for its reply. extents: nextents x 5
 * longs {guest address, length, index into fds, file offset, shared 1 / private 0};
 * unmaps: nunmaps x 2 longs {address, length} (vmfork_proc_unmaps). On success fills
 * tids_out[vcpus] with the HOST tids of the guest's threads, index 0 the main thread
 * (tid == pid): the stub reports ids of its own PID namespace and this function maps
 * them through /proc/<pid>/task/<t>/status (NSpid), the pid coming from the reply's
 * SCM_CREDENTIALS (the main thread's is that pid: no lookup). With go set, GO follows
 * LAUNCH at once (the socket keeps the two messages apart), for a caller that already
 * traces every thread the stub will have (one vCPU, seized before the launch): the stub
 * then goes on from its reply to its int3 without waiting for another message, which
 * saves a wake-up of each side (~0.1-0.2 ms here). uffd_out (may be NULL): for private
 * RAM, the stub's userfaultfd of the guest's address space in asynchronous write-protect
 * mode (the caller owns and closes it; vmfork_proc_scan_written_wp uses it), else the
 * -errno of why there is none (-ENOENT: shared RAM, none asked). Errors: the stub's
 * -errno for a failed mmap/munmap/clone, -ETIMEDOUT, -EPROTO for a malformed reply,
 * -EPIPE if the stub has gone. The caller SIGKILLs the stub after any failure.
 */
int vmfork_proc_launch(int sock, const int *fds, int nfds, const long *extents, int nextents,
                       const long *unmaps, int nunmaps, int vcpus, int *tids_out, int go, int *uffd_out)
{
    if (uffd_out)
        *uffd_out = -ENOENT;
    if (nfds < 0 || nfds > STUB_MAX_FDS || nextents < 0 || nextents > STUB_MAX_EXTENTS
        || nunmaps < 0 || nunmaps > STUB_MAX_UNMAPS || vcpus < 1 || vcpus > STUB_MAX_VCPUS)
        return -EINVAL;
    size_t len = sizeof(struct stub_launch) + ((size_t)nextents * 5 + (size_t)nunmaps * 2) * sizeof(int64_t);
    unsigned char *buf = malloc(len);
    if (!buf)
        return -ENOMEM;
    struct stub_launch h = { STUB_LAUNCH_MAGIC, (uint32_t)vcpus, (uint32_t)nfds, (uint32_t)nextents, (uint32_t)nunmaps };
    memcpy(buf, &h, sizeof h);
    memcpy(buf + sizeof h, extents, (size_t)nextents * 5 * sizeof(int64_t));
    memcpy(buf + sizeof h + (size_t)nextents * 5 * sizeof(int64_t), unmaps, (size_t)nunmaps * 2 * sizeof(int64_t));

    union { struct cmsghdr h; char b[CMSG_SPACE(STUB_MAX_FDS * sizeof(int))]; } c;
    memset(&c, 0, sizeof c);
    struct iovec iov = { buf, len };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (nfds > 0) {
        m.msg_control = c.b;
        m.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *ch = CMSG_FIRSTHDR(&m);
        ch->cmsg_level = SOL_SOCKET;
        ch->cmsg_type = SCM_RIGHTS;
        ch->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(ch), fds, (size_t)nfds * sizeof(int));
    }
    ssize_t n;
    do
        n = sendmsg(sock, &m, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    int e = errno;
    free(buf);
    if (n < 0)
        return -e;
    if ((size_t)n != len)
        return -EPROTO;
    if (go && vmfork_proc_go(sock) != 0)
        return -EPIPE;

    long deadline = ms_now() + 5000;
    for (;;) {
        long left = deadline - ms_now();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = { sock, POLLIN, 0 };
        int r = poll(&p, 1, (int)left);
        if (r < 0 && errno != EINTR)
            return -errno;
        if (r > 0)
            break;
    }
    struct { struct stub_reply h; int32_t tids[STUB_MAX_VCPUS]; } rep;
    union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(STUB_MAX_FDS * sizeof(int))]; } rc;
    struct iovec riov = { &rep, sizeof rep };
    struct msghdr rm = { .msg_iov = &riov, .msg_iovlen = 1, .msg_control = rc.b, .msg_controllen = sizeof rc.b };
    do
        n = recvmsg(sock, &rm, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0)
        return -EPIPE;
    pid_t pid = 0;
    int uffd = -1;
    for (struct cmsghdr *ch = CMSG_FIRSTHDR(&rm); ch; ch = CMSG_NXTHDR(&rm, ch)) {
        if (ch->cmsg_level == SOL_SOCKET && ch->cmsg_type == SCM_CREDENTIALS) {
            struct ucred u;
            memcpy(&u, CMSG_DATA(ch), sizeof u);
            pid = u.pid;
        } else if (ch->cmsg_level == SOL_SOCKET && ch->cmsg_type == SCM_RIGHTS) {
            int k = (int)((ch->cmsg_len - CMSG_LEN(0)) / sizeof(int));   /* the userfaultfd, if any */
            for (int i = 0; i < k; i++) {
                int fd = ((int *)CMSG_DATA(ch))[i];
                if (uffd < 0 && k == 1)
                    uffd = fd;
                else
                    close(fd);
            }
        }
    }
    int st = 0;
    if ((size_t)n < sizeof rep.h || rep.h.magic != STUB_REPLY_MAGIC)
        st = -EPROTO;
    else if (rep.h.status != 0)
        st = rep.h.status < 0 ? rep.h.status : -EPROTO;
    else if (rep.h.ntids != vcpus || (size_t)n != sizeof rep.h + (size_t)vcpus * sizeof(int32_t) || pid <= 0
             || (uffd >= 0) != (rep.h.uffd_status == 0))
        st = -EPROTO;
    if (st == 0) {
        tids_out[0] = pid; /* the stub's main thread, the leader */
        for (int i = 1; i < vcpus && st == 0; i++) {
            int t = host_tid(pid, rep.tids[i]);
            if (t < 0)
                st = t;
            else
                tids_out[i] = t;
        }
    }
    if (st != 0 || !uffd_out) {
        if (uffd >= 0)
            close(uffd);
        return st;
    }
    *uffd_out = uffd >= 0 ? uffd : rep.h.uffd_status < 0 ? rep.h.uffd_status : -ENOENT;
    return 0;
}

/* Sends GO: the stub installs its seccomp filter and every thread stops at int3. Seize
   every thread first: an int3 nobody traces kills the process (SIGTRAP). */
int vmfork_proc_go(int sock)
{
    char g = STUB_GO;
    ssize_t n;
    do
        n = send(sock, &g, 1, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == 1 ? 0 : -errno;
}

/* ======================================================================== tracing */

/*
 * The threads this tracer thread has seized and not yet seen stop. A seized thread keeps
 * running (into GO's int3), so the first run for it must wait rather than PTRACE_CONT:
 * had the int3 stop already happened, a CONT would suppress the SIGTRAP and run the
 * stub's ud2 after it (seen in testing). Tracer state is per thread, like ptrace's own.
 */
#define MAX_FRESH 16
static __thread int fresh[MAX_FRESH];

static int take_fresh(int tid)
{
    for (int i = 0; i < MAX_FRESH; i++)
        if (fresh[i] == tid) {
            fresh[i] = 0;
            return 1;
        }
    return 0;
}

/* PTRACE_SEIZE tid from the calling thread, which becomes its tracer (and must make
   every later request for it). PTRACE_O_EXITKILL: the guest gets SIGKILL if this thread
   exits. The thread keeps running: its first stop is GO's int3, which the first
   vmfork_proc_run for tid waits for (with regs_in NULL it returns that stop). */
int vmfork_proc_seize(int tid)
{
    if (ptrace(PTRACE_SEIZE, tid, 0, (void *)(long)PTRACE_O_EXITKILL) != 0)
        return -errno;
    take_fresh(tid);
    for (int i = 0; i < MAX_FRESH; i++)
        if (fresh[i] == 0) {
            fresh[i] = tid;
            break;
        }
    return 0;
}

enum { RUN_SIGNAL = 1, RUN_SYSCALL = 2, RUN_EXITED = 3, RUN_KILLED = 4 };
#define INFO_LONGS 6

/*
 * Waits for tid's next interesting event. Group-stops and PTRACE_EVENT stops are
 * continued through. A signal-delivery stop returns SIGNAL (1) or, for seccomp's SIGSYS,
 * SYSCALL (2), with regs_out and info filled. An exit returns EXITED (3) or KILLED (4):
 * that waitpid has reaped the thread (the tracer is in the real parent's thread group,
 * so the leader is not handed back to a parent: one wait per thread, nothing left).
 */
static int wait_stop(int tid, long *regs_out, long *info)
{
    for (;;) {
        int st;
        pid_t r = waitpid(tid, &st, __WALL);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        memset(info, 0, INFO_LONGS * sizeof(long));
        if (WIFEXITED(st)) {
            info[0] = WEXITSTATUS(st);
            return RUN_EXITED;
        }
        if (WIFSIGNALED(st)) {
            info[0] = WTERMSIG(st);
            return RUN_KILLED;
        }
        if (!WIFSTOPPED(st))
            continue;
        if ((st >> 16) != 0) {          /* PTRACE_EVENT_STOP (group-stop) or another event */
            ptrace(PTRACE_CONT, tid, 0, 0);
            continue;
        }
        siginfo_t si;
        if (ptrace(PTRACE_GETSIGINFO, tid, 0, &si) != 0
            || (regs_out && ptrace(PTRACE_GETREGS, tid, 0, regs_out) != 0)) {
            if (errno == ESRCH)         /* killed meanwhile: its exit comes next */
                continue;
            return -errno;
        }
        info[0] = si.si_signo;
        info[1] = si.si_code;
        if (si.si_signo == SIGSYS && si.si_code == 1 /* SYS_SECCOMP */) {
            info[2] = (long)si.si_call_addr;
            info[3] = si.si_syscall;
            info[4] = (long)si.si_arch;
            info[5] = si.si_errno;      /* SECCOMP_RET_DATA: 0 x86-64, 1 other arch */
            return RUN_SYSCALL;
        }
        info[2] = (long)si.si_addr;
        return RUN_SIGNAL;
    }
}

/*
 * Runs a stopped guest thread to its next interesting stop: PTRACE_SETREGS(regs_in) if
 * not NULL (27 longs, struct user_regs_struct), PTRACE_CONT with the pending signal
 * suppressed (deliver is reserved, pass 0), then waits. Returns the kind (1 SIGNAL,
 * 2 SYSCALL, 3 EXITED, 4 KILLED) with regs_out (27 longs, may be NULL) and info
 * (6 longs): SIGNAL {signo, si_code, si_addr}; SYSCALL {SIGSYS, si_code, call address,
 * syscall number, audit arch, filter data}; EXITED {status}; KILLED {signal}.
 *
 * The first run after vmfork_proc_seize does not continue: it waits for the thread's
 * first stop (GO's int3) and, with regs_in NULL, returns it; with regs_in it sets them
 * there and continues. Likewise when the thread is not in a stop for another reason
 * (killed while stopped: SETREGS/CONT fail with ESRCH), run waits and returns its end.
 */
int vmfork_proc_run(int tid, const long *regs_in, int deliver, long *regs_out, long *info)
{
    (void)deliver;
    if (take_fresh(tid)) {
        int k = wait_stop(tid, regs_out, info);
        if (k < 0 || !regs_in || k == RUN_EXITED || k == RUN_KILLED)
            return k;
    }
    for (;;) {
        if ((regs_in && ptrace(PTRACE_SETREGS, tid, 0, regs_in) != 0)
            || ptrace(PTRACE_CONT, tid, 0, 0) != 0) {
            if (errno != ESRCH)
                return -errno;
            int k = wait_stop(tid, regs_out, info);
            if (k < 0 && k != -ECHILD)
                return k;
            if (k == -ECHILD)
                return -ESRCH;
            if (!regs_in || k == RUN_EXITED || k == RUN_KILLED)
                return k;
            continue;
        }
        return wait_stop(tid, regs_out, info);
    }
}

/*
 * Reaps the guest process pid when no tracer will: after its tracer thread exited
 * (PTRACE_O_EXITKILL killed it and detached it, so it is a plain zombie child of this
 * process again) or when it died before being seized (PR_SET_PDEATHSIG, a failed launch).
 * One waitpid(pid, __WALL) reaps it, from any thread. nohang: do not wait. Returns the
 * wait status (>= 0), -EAGAIN if nohang and it has not ended, or -errno (-ECHILD: already
 * reaped, e.g. by its tracer's run returning EXITED/KILLED for the main thread).
 */
int vmfork_proc_reap(int pid, int nohang)
{
    int st;
    for (;;) {
        pid_t r = waitpid(pid, &st, __WALL | (nohang ? WNOHANG : 0));
        if (r == pid)
            return st & 0x7fffffff;
        if (r == 0)
            return -EAGAIN;
        if (errno != EINTR)
            return -errno;
    }
}

/* Waits for tid's next interesting stop without continuing it (see run). */
int vmfork_proc_wait(int tid, long *regs_out, long *info)
{
    take_fresh(tid);
    return wait_stop(tid, regs_out, info);
}

int vmfork_proc_setregs(int tid, const long *regs)
{
    return ptrace(PTRACE_SETREGS, tid, 0, regs) == 0 ? 0 : -errno;
}

int vmfork_proc_getregs(int tid, long *regs)
{
    return ptrace(PTRACE_GETREGS, tid, 0, regs) == 0 ? 0 : -errno;
}

/* The user-ABI XSAVE area size for the XCR0 in force (CPUID 0xD.0 EBX), the size
   NT_X86_XSTATE reads and writes. 0 without XSAVE. */
int vmfork_xstate_size(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(0xd, 0, &a, &b, &c, &d))
        return 0;
    return (int)b;
}

/* PTRACE_GETREGSET NT_X86_XSTATE into buf; returns the byte count. */
int vmfork_proc_get_xstate(int tid, void *buf, int len)
{
    struct iovec v = { buf, (size_t)len };
    if (ptrace(PTRACE_GETREGSET, tid, (void *)NT_X86_XSTATE, &v) != 0)
        return -errno;
    return (int)v.iov_len;
}

int vmfork_proc_set_xstate(int tid, const void *buf, int len)
{
    struct iovec v = { (void *)buf, (size_t)len };
    return ptrace(PTRACE_SETREGSET, tid, (void *)NT_X86_XSTATE, &v) == 0 ? 0 : -errno;
}

/*
 * Interrupts a running guest thread: tgkill(pid, tid, SIGURG). SIGURG's default action is
 * to ignore, but a traced thread reports every signal but SIGKILL to its tracer (even
 * the PID namespace's init, which the stub's main thread is), so run returns SIGNAL with
 * signo SIGURG and the signal is then suppressed. A kick that lands while the thread is
 * already stopped is reported at the next run (returns at once): treat it as spurious.
 */
int vmfork_proc_kick(int pid, int tid)
{
    return syscall(SYS_tgkill, pid, tid, SIGURG) == 0 ? 0 : -errno;
}

/* ======================================================================== death watch */

/*
 * A guest process can die while no tracer waits for it: SIGKILLed from outside while each
 * of its threads is in a ptrace stop and its vCPU thread waits in the VMM (RECV). One
 * watcher thread per platform learns it from a pidfd per guest process in an epoll set.
 *
 * The pidfd is a thread's, PIDFD_THREAD (Linux 6.9): it is readable once that thread has
 * exited. A process pidfd, or the main thread's, is readable only once every other thread
 * is reaped, and a traced thread stays a zombie until its tracer waits, which a vCPU thread
 * in RECV does not (seen here: after SIGKILL the leader's PIDFD_THREAD pidfd stays
 * unreadable while a traced sibling is unreaped; the sibling's is readable). So the Java
 * side watches the process's last thread. Older kernels get the process pidfd (enough for
 * one-vCPU guests).
 */
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

int vmfork_proc_pidfd(int pid, int tid)
{
    int fd = (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
    if (fd < 0 && errno == EINVAL)
        fd = (int)syscall(SYS_pidfd_open, pid, 0);
    return fd < 0 ? -errno : fd;
}

/* An epoll set with an eventfd in it (key 0) to wake its waiter: returns the epoll fd and
   the eventfd in *wake_out, both close-on-exec, or -errno. */
int vmfork_watch_create(int *wake_out)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        return -errno;
    int ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    struct epoll_event e = { .events = EPOLLIN, .data.u64 = 0 };
    if (ev < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e) != 0) {
        int err = errno;
        if (ev >= 0)
            close(ev);
        close(ep);
        return -err;
    }
    *wake_out = ev;
    return ep;
}

/* Adds fd to the set under key (> 0), one-shot: it reports once. */
int vmfork_watch_add(int ep, int fd, long key)
{
    struct epoll_event e = { .events = EPOLLIN | EPOLLONESHOT, .data.u64 = (uint64_t)key };
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) == 0 ? 0 : -errno;
}

int vmfork_watch_wake(int wake)
{
    uint64_t one = 1;
    return write(wake, &one, sizeof one) == sizeof one || errno == EAGAIN ? 0 : -errno;
}

/* Waits for keys that reported (at most max, timeout_ms -1 for ever); key 0 is the eventfd,
   which this drains. Returns the count, 0 on timeout or EINTR, or -errno. */
int vmfork_watch_wait(int ep, int wake, long *keys, int max, int timeout_ms)
{
    struct epoll_event ev[64];
    int n = epoll_wait(ep, ev, max < 64 ? max : 64, timeout_ms);
    if (n < 0)
        return errno == EINTR ? 0 : -errno;
    for (int i = 0; i < n; i++) {
        keys[i] = (long)ev[i].data.u64;
        if (keys[i] == 0) {
            uint64_t v;
            if (read(wake, &v, sizeof v) < 0 && errno != EAGAIN)
                return -errno;
        }
    }
    return n;
}

/* ======================================================================== memory */

long vmfork_proc_readv(int pid, long remote, void *local, long len)
{
    struct iovec l = { local, (size_t)len }, r = { (void *)remote, (size_t)len };
    ssize_t n = process_vm_readv(pid, &l, 1, &r, 1, 0);
    return n < 0 ? -errno : n;
}

long vmfork_proc_writev(int pid, long remote, const void *local, long len)
{
    struct iovec l = { (void *)local, (size_t)len }, r = { (void *)remote, (size_t)len };
    ssize_t n = process_vm_writev(pid, &l, 1, &r, 1, 0);
    return n < 0 ? -errno : n;
}

/* PAGEMAP_SCAN (Linux 6.7); the build host's headers may predate it. */
#ifndef PAGEMAP_SCAN
#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_PFNZERO (1 << 5)
struct page_region { uint64_t start, end, categories; };
struct pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
#endif

#ifndef PM_SCAN_WP_MATCHING
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)
#endif

/*
 * One PAGEMAP_SCAN walk of [start, end) for the pages of a MAP_PRIVATE view of a file that
 * the guest wrote: present, not file pages (copy-on-write made them anonymous), not the
 * zero page, and with `written` also without the write-protect bit. Fills ranges with
 * (start, end) pairs, adjacent pages merged. Past max pairs: -ENOSPC, or with `stretch`
 * the last pair grows over the rest (a superset: never a page left out).
 */
static int scan_pages(int pagemap_fd, long start, long end, long *ranges, int max, uint64_t flags, int written,
                      int stretch)
{
    struct page_region vec[256];
    int n = 0;
    uint64_t at = (uint64_t)start;
    if (max < 1)
        return -EINVAL;
    while (at < (uint64_t)end) {
        struct pm_scan_arg a = {
            .size = sizeof a,
            .flags = flags,
            .start = at,
            .end = (uint64_t)end,
            .vec = (uint64_t)(uintptr_t)vec,
            .vec_len = sizeof vec / sizeof vec[0],
            .category_mask = PAGE_IS_PRESENT | PAGE_IS_FILE | PAGE_IS_PFNZERO | (written ? PAGE_IS_WRITTEN : 0),
            .category_inverted = PAGE_IS_FILE | PAGE_IS_PFNZERO,
            .return_mask = PAGE_IS_PRESENT,
        };
        int r = ioctl(pagemap_fd, PAGEMAP_SCAN, &a);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        for (int i = 0; i < r; i++) {
            if (n > 0 && ((uint64_t)ranges[2 * n - 1] == vec[i].start || (stretch && n == max))) {
                ranges[2 * n - 1] = (long)vec[i].end;
                continue;
            }
            if (n == max)
                return -ENOSPC;
            ranges[2 * n] = (long)vec[i].start;
            ranges[2 * n + 1] = (long)vec[i].end;
            n++;
        }
        if (a.walk_end <= at)
            return -EPROTO;
        at = a.walk_end;
    }
    return n;
}

/*
 * The pages of [start, end) that the guest wrote since its process started: its anonymous
 * pages (pagemap_fd: /proc/<pid>/pagemap). Returns the pair count or -errno (-ENOSPC if
 * more than max). Swapped-out anonymous pages are not listed (no swap here).
 */
int vmfork_proc_scan_written(int pagemap_fd, long start, long end, long *ranges, int max)
{
    return scan_pages(pagemap_fd, start, end, ranges, max, 0, 0, 0);
}

/*
 * The pages of [start, end) the guest wrote since the last call (or since its launch): in
 * a process whose RAM is registered with its asynchronous write-protect userfaultfd
 * (vmfork_proc_launch's uffd_out), the present anonymous pages without the write-protect
 * bit; each is write-protected again by the same walk (PM_SCAN_WP_MATCHING), so that the
 * next call sees only later writes, without moving the guest to a new process. The guest
 * must not run meanwhile (the VMM calls it paused). Pages never touched stay unprotected
 * holes: a write to one makes an anonymous page without the bit, seen next time.
 *
 * Never loses a page: when more runs than max are found, the last run is stretched over
 * the rest (pages it covers that were not written hold what the image holds already).
 * Returns the number of runs (start, end pairs) in ranges, or -errno (-EPERM: the range is
 * not registered for asynchronous write-protect).
 */
int vmfork_proc_scan_written_wp(int pagemap_fd, long start, long end, long *ranges, int max)
{
    return scan_pages(pagemap_fd, start, end, ranges, max, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, 1, 1);
}
