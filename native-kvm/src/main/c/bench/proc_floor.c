/*
 * proc_floor: the floor under a hypercall on the process platform (host/procvm.c), in
 * plain C: the round trip of a guest `out` through ptrace, with nothing of the VMM's own
 * work in it.
 *
 *   gcc -O2 -o proc_floor proc_floor.c -L<dir> -lvmforkhost -Wl,-rpath,<dir>
 *   proc_floor <path of vmfork-stub> [calls]
 *
 * (<dir> holds libvmforkhost.so, linux-x86-64/ in the build output.) Makes 64 MiB of
 * guest RAM in a memfd, writes a tiny guest at 0x400000 (a loop of `mov $5,%eax;
 * mov $0x7f0,%dx; out %eax,(%dx)`, calls times, then ud2), spawns and launches it (RAM
 * mapped shared from 0x1000: page 0 cannot be mapped, see below), seizes it, sends GO,
 * collects the int3 stop, sets RIP/RSP and runs it. Each `out` at CPL3 stops as SIGSEGV
 * (si_code SI_KERNEL); the loop checks the byte at RIP is 0xEF and DX the hypercall
 * port, advances RIP by one, sets RAX and runs again. A round trip is the time of one
 * vmfork_proc_run call (PTRACE_SETREGS, PTRACE_CONT, waitpid, PTRACE_GETREGS,
 * PTRACE_GETSIGINFO). Prints one machine-readable line:
 *
 *   hypercall.roundtrip p50_us=.. p99_us=.. n=..
 *
 * then checks that the ud2 ends as SIGILL and that a SIGKILL is reaped by one wait.
 * Exits 1 with a message naming the failed step on any error.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/user.h>
#include <time.h>
#include <unistd.h>

/* libvmforkhost.so (host/procvm.c) */
int vmfork_proc_spawn(int stub_fd, int *sock_out, int *ns_out);
int vmfork_proc_unmaps(int pid, long *ranges, int max);
int vmfork_proc_launch(int sock, const int *fds, int nfds, const long *extents, int nextents,
                       const long *unmaps, int nunmaps, int vcpus, int *tids_out, int go, int *uffd_out);
int vmfork_proc_go(int sock);
int vmfork_proc_seize(int tid);
int vmfork_proc_run(int tid, const long *regs_in, int deliver, long *regs_out, long *info);

#define RAM (64UL << 20)
#define CODE 0x400000UL
#define PORT 0x7f0

static void die(const char *what, long r)
{
    fprintf(stderr, "proc_floor: %s failed: %s (%ld)\n", what, strerror((int)-r), r);
    exit(1);
}

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: proc_floor <vmfork-stub> [calls]\n");
        return 2;
    }
    int calls = argc > 2 ? atoi(argv[2]) : 20000;
    int mem = memfd_create("proc_floor", MFD_CLOEXEC);
    if (mem < 0 || ftruncate(mem, RAM) != 0)
        die("memfd", -1);
    unsigned char *ram = mmap(NULL, RAM, PROT_READ | PROT_WRITE, MAP_SHARED, mem, 0);
    if (ram == MAP_FAILED)
        die("mmap", -1);
    unsigned char code[] = {
        0xb9, 0, 0, 0, 0,               /* mov $calls, %ecx */
        0xb8, 0x05, 0, 0, 0,            /* 1: mov $5, %eax */
        0x66, 0xba, 0xf0, 0x07,         /* mov $0x7f0, %dx */
        0xef,                           /* out %eax, (%dx) */
        0xff, 0xc9,                     /* dec %ecx */
        0x75, 0xf2,                     /* jnz 1b */
        0x0f, 0x0b,                     /* ud2 */
    };
    memcpy(code + 1, &calls, 4);
    memcpy(ram + CODE, code, sizeof code);

    int stub = open(argv[1], O_PATH | O_CLOEXEC);
    if (stub < 0)
        die("open stub", -1);
    int sock, ns;
    int pid = vmfork_proc_spawn(stub, &sock, &ns);
    if (pid < 0)
        die("vmfork_proc_spawn", pid);
    long unmaps[64];
    int nun = vmfork_proc_unmaps(pid, unmaps, 32);
    if (nun < 0)
        die("vmfork_proc_unmaps", nun);
    long ext[5] = { 0x1000, (long)RAM - 0x1000, 0, 0x1000, 1 };
    int tid;
    int r = vmfork_proc_launch(sock, &mem, 1, ext, 1, unmaps, nun, 1, &tid, 0, NULL);
    if (r < 0)
        die("vmfork_proc_launch", r);
    if ((r = vmfork_proc_seize(tid)) < 0)
        die("vmfork_proc_seize", r);
    if ((r = vmfork_proc_go(sock)) < 0)
        die("vmfork_proc_go", r);
    close(sock);

    struct user_regs_struct regs;
    long info[6];
    int k = vmfork_proc_run(tid, NULL, 0, (long *)&regs, info);
    if (k != 1 || info[0] != SIGTRAP)
        die("the int3 stop", k < 0 ? k : -1);
    regs.rip = CODE;
    regs.rsp = RAM;
    regs.eflags = 0x202;

    double *t = malloc(sizeof(double) * (size_t)calls);
    int n = 0;
    for (;;) {
        double t0 = now_us();
        k = vmfork_proc_run(tid, (long *)&regs, 0, (long *)&regs, info);
        double t1 = now_us();
        if (k == 1 && info[0] == SIGSEGV && info[1] == 0x80 && regs.rip < RAM
            && ram[regs.rip] == 0xef && (regs.rdx & 0xffff) == PORT) {
            if (n < calls)
                t[n++] = t1 - t0;
            regs.rip += 1;
            regs.rax = 0;
            continue;
        }
        if (k == 1 && info[0] == SIGILL && n == calls)
            break;
        fprintf(stderr, "proc_floor: unexpected stop kind %d signo %ld code %ld rip %llx after %d calls\n",
                k, info[0], info[1], regs.rip, n);
        kill(pid, SIGKILL);
        return 1;
    }
    kill(pid, SIGKILL);
    k = vmfork_proc_run(tid, NULL, 0, NULL, info);
    if (k != 4 || info[0] != SIGKILL)
        die("the SIGKILL", k < 0 ? k : -1);
    qsort(t, (size_t)n, sizeof *t, cmp);
    printf("hypercall.roundtrip p50_us=%.2f p99_us=%.2f n=%d ns=0x%x\n", t[n / 2], t[(int)(n * 0.99)], n, ns);
    return 0;
}
