/*
 * refuse: runs a command the way a locked-down host or container runtime would, with
 * what the process platform needs refused by the kernel, and reports any process the
 * command leaves behind. For RefusalTest (the real vmfork CLI under each refusal).
 *
 *   refuse [WHAT]... -- COMMAND [ARG]...
 *
 * WHAT (any number):
 *   ptrace          ptrace(2) fails with EPERM (Yama ptrace_scope 3, a seccomp profile
 *                   without ptrace, a container without CAP_SYS_PTRACE)
 *   seccomp         seccomp(2) and prctl(PR_SET_SECCOMP) fail with EPERM (a profile that
 *                   forbids installing filters)
 *   userns          clone(2) and unshare(2) with CLONE_NEWUSER fail with EPERM
 *                   (user.max_user_namespaces 0, or a profile without user namespaces)
 *   namespaces      clone(2), unshare(2) with any CLONE_NEW* flag and setns(2) fail with EPERM
 *   mount           mount(2) fails with EPERM (Docker's default profile without CAP_SYS_ADMIN)
 *   memfd-noexec=N  vm.memfd_noexec is N (0, 1, 2) for the command: it runs in a PID
 *                   namespace of its own (the sysctl is per PID namespace), /proc remounted
 * Every refusal but memfd-noexec is a seccomp filter, installed in the command's process
 * before execve and inherited by everything it starts, exactly as a container runtime's
 * seccomp profile is; clone3(2) then fails with ENOSYS (a filter cannot see its flags),
 * as in Docker's profile, and glibc falls back to clone(2).
 *
 * This process stays outside the filter, as the runtime does: it becomes the child
 * subreaper (or the init of the PID namespace), runs the command, and once the command has
 * ended waits up to 3 s for every other process it started to end too. Any still alive is
 * named on stderr ("refuse: left behind: PID COMM") and killed, and refuse exits 125.
 * Otherwise it exits with the command's status (128 + N for a signal N).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NS_FLAGS (CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNS \
                  | CLONE_NEWCGROUP)
#define LEFT_BEHIND 125

static struct sock_filter prog[128];
static unsigned short len;

static void emit(struct sock_filter f)
{
    if (len == sizeof prog / sizeof prog[0]) {
        fprintf(stderr, "refuse: filter too long\n");
        exit(2);
    }
    prog[len++] = f;
}

#define ARG0_LO offsetof(struct seccomp_data, args[0])
#define ERRNO(e) (SECCOMP_RET_ERRNO | (e))

/* if nr: return ret */
static void refuse_call(long nr, unsigned ret)
{
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ret));
}

/* if nr and (arg0 & mask): return ret (the flags of clone and unshare are in the low word) */
static void refuse_flags(long nr, unsigned mask, unsigned ret)
{
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 3));
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG0_LO));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JSET | BPF_K, mask, 0, 1));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ret));
}

/* if nr and arg0 == value: return ret */
static void refuse_arg(long nr, unsigned value, unsigned ret)
{
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 3));
    emit((struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, ARG0_LO));
    emit((struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, value, 0, 1));
    emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, ret));
}

static void install_filter(void)
{
    struct sock_fprog fp = { len, prog };
    if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fp) != 0) {
        /* Without CAP_SYS_ADMIN a filter needs no_new_privs, as runtimes set it. */
        if (errno != EACCES || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fp) != 0) {
            perror("refuse: seccomp");
            exit(2);
        }
    }
}

static long ms_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000L + t.tv_nsec / 1000000;
}

static void name_of(pid_t pid, char *out, size_t n)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    FILE *f = fopen(path, "re");
    if (!f || !fgets(out, (int)n, f))
        snprintf(out, n, "?");
    if (f)
        fclose(f);
    out[strcspn(out, "\n")] = 0;
}

/* The children of this process now (it is their reaper), from /proc/<self>/task/<self>/children. */
static int children(pid_t *out, int max)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/task/%d/children", (int)getpid());
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    int n = 0;
    while (n < max && fscanf(f, "%d", &out[n]) == 1)
        n++;
    fclose(f);
    return n;
}

/* Runs argv with the filter, waits for it, then for whatever else it left; returns the exit code. */
static int supervise(char **argv)
{
    pid_t cmd = fork();
    if (cmd < 0) {
        perror("refuse: fork");
        return 2;
    }
    if (cmd == 0) {
        if (len > 0)
            install_filter();
        execvp(argv[0], argv);
        perror("refuse: execvp");
        _exit(127);
    }
    int code = 2, st;
    for (;;) {
        pid_t r = waitpid(-1, &st, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            break;
        if (r == cmd) {
            code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            break;
        }
    }
    /* What the command started must end with it (a guest process dies with its VMM's
       thread: PR_SET_PDEATHSIG), within a moment. */
    long deadline = ms_now() + 3000;
    for (;;) {
        while (waitpid(-1, &st, WNOHANG) > 0)
            ;
        pid_t left[64];
        int n = children(left, 64);
        if (n == 0)
            return code;
        if (ms_now() > deadline) {
            for (int i = 0; i < n; i++) {
                char comm[64];
                name_of(left[i], comm, sizeof comm);
                fprintf(stderr, "refuse: left behind: %d %s\n", (int)left[i], comm);
                kill(left[i], SIGKILL);
            }
            while (waitpid(-1, &st, 0) > 0)
                ;
            return LEFT_BEHIND;
        }
        usleep(10000);
    }
}

int main(int argc, char **argv)
{
    int i = 1, noexec = -1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        const char *w = argv[i];
        if (!strcmp(w, "ptrace")) {
            refuse_call(SYS_ptrace, ERRNO(EPERM));
        } else if (!strcmp(w, "seccomp")) {
            refuse_call(SYS_seccomp, ERRNO(EPERM));
            refuse_arg(SYS_prctl, PR_SET_SECCOMP, ERRNO(EPERM));
        } else if (!strcmp(w, "userns") || !strcmp(w, "namespaces")) {
            unsigned mask = !strcmp(w, "userns") ? CLONE_NEWUSER : NS_FLAGS;
            refuse_flags(SYS_clone, mask, ERRNO(EPERM));
            refuse_flags(SYS_unshare, mask, ERRNO(EPERM));
            refuse_call(SYS_clone3, ERRNO(ENOSYS));
            if (mask != CLONE_NEWUSER)
                refuse_call(SYS_setns, ERRNO(EPERM));
        } else if (!strcmp(w, "mount")) {
            refuse_call(SYS_mount, ERRNO(EPERM));
        } else if (!strncmp(w, "memfd-noexec=", 13)) {
            noexec = atoi(w + 13);
        } else {
            fprintf(stderr, "refuse: unknown refusal '%s'\n", w);
            return 2;
        }
    }
    if (i + 1 >= argc) {
        fprintf(stderr, "usage: refuse [ptrace|seccomp|userns|namespaces|mount|memfd-noexec=N]... -- COMMAND [ARG]...\n");
        return 2;
    }
    if (len > 0) {
        /* Other architectures' calls pass; then the refusals; then allow. */
        struct sock_filter head[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        unsigned short n = len;
        if (n + 4 > (int)(sizeof prog / sizeof prog[0])) {
            fprintf(stderr, "refuse: filter too long\n");
            return 2;
        }
        memmove(prog + 3, prog, n * sizeof prog[0]);
        memcpy(prog, head, sizeof head);
        len = n + 3;
        emit((struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW));
    }
    char **cmd = argv + i + 1;
    if (noexec < 0) {
        if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0) {
            perror("refuse: PR_SET_CHILD_SUBREAPER");
            return 2;
        }
        return supervise(cmd);
    }
    /* vm.memfd_noexec is per PID namespace: the command runs under an init of a new one. */
    if (unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) {
        perror("refuse: unshare(CLONE_NEWPID | CLONE_NEWNS) for memfd-noexec");
        return 2;
    }
    pid_t init = fork();
    if (init < 0) {
        perror("refuse: fork");
        return 2;
    }
    if (init == 0) {
        char v[16];
        snprintf(v, sizeof v, "%d\n", noexec);
        int fd;
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0
            || mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0
            || (fd = open("/proc/sys/vm/memfd_noexec", O_WRONLY | O_CLOEXEC)) < 0
            || write(fd, v, strlen(v)) != (ssize_t)strlen(v) || close(fd) != 0) {
            perror("refuse: setting vm.memfd_noexec in a new PID namespace");
            _exit(2);
        }
        _exit(supervise(cmd));
    }
    int st;
    while (waitpid(init, &st, 0) < 0)
        if (errno != EINTR)
            return 2;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}
