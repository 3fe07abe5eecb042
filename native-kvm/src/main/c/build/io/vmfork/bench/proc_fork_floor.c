/*
 * proc_fork_floor: the floor under a local fork on the process platform (host/procvm.c),
 * in plain C (`vmfork bench fork` builds it against libvmforkhost.so and prints its
 * figure as fork.c_floor with "platform": "process").
 *
 *   gcc -O2 -pthread -o proc_fork_floor proc_fork_floor.c -L<dir> -lvmforkhost -Wl,-rpath,<dir>
 *   proc_fork_floor <path of vmfork-stub> [runs] [ram_mib] [touch_mib] [pages] [warmup]
 *
 * (<dir> holds libvmforkhost.so, linux-x86-64/ in the build output.) The state it forks
 * from is the bench's steady state, fork after fork: a one-vCPU parent whose RAM is
 * already private to its process, over a runtime image (a base memfd of ram_mib with
 * touch_mib written, plus overlay layers), that wrote `pages` pages since its last fork
 * (a run of them, then its stack) and stops on FORK: an `out` to the hypercall port, seen
 * as SIGSEGV SI_KERNEL. From that stop to the child's first exit it does, with procvm.c's
 * functions, what the Java path does (ForkPath.captureProcess, moveToNewProcess,
 * launchChildren, VirtualMachine.restoreProcess):
 *
 *   the hypercall: the byte at RIP (0xEF) and the fork block, read from the process
 *     (process_vm_readv), as the VMM reads them;
 *   capture: the registers are the stop's; the XSAVE area (PTRACE_GETREGSET NT_X86_XSTATE);
 *   scan: PAGEMAP_SCAN of /proc/<pid>/pagemap over all of RAM for the written pages;
 *   copy: the new layer memfd (made ahead, as the VMM makes the next one after a fork)
 *     mapped, every written run read into it (process_vm_readv), unmapped; the image's
 *     extents overlaid with the new runs;
 *   the parent's move: a pooled process (spawned ahead, untraced) launched with the
 *     image's extents mapped privately (one mmap per extent, in the stub), the old
 *     process SIGKILLed, the new thread seized, GO, its int3 stop, XSAVE set (the
 *     registers go with its resume);
 *   the child's launch: a pooled process whose main thread a parked thread seized ahead,
 *     LAUNCH with GO; the child's fork block written (process_vm_writev); the parked
 *     thread woken, which collects the int3 stop, sets the XSAVE area and the registers
 *     (RAX = 0, the child's result) and runs it to its first exit: its first instruction
 *     stores to its stack (a copy-on-write fault), then `out`;
 *   the parent's result written to its fork block (process_vm_writev): its resume.
 *
 * Left out, as the Java path has it outside the FORK-to-first-exit window or does not
 * need it for one child: spawning the pooled processes (clone into namespaces, exec,
 * reading /proc/<pid>/maps) and starting and seizing the pooled tracer thread; making
 * the next layer memfd; reaping the killed process (a reaper thread, after the resume);
 * closing layers no image uses; placement, the VM objects, the guest's own work between
 * forks. One process_vm_readv per written run, as the VMM does (one call with all runs
 * as iovecs would be cheaper; with the bench's few runs it makes no difference).
 *
 * Prints one JSON line: {"bench":"fork.c_floor","platform":"process","n":..,
 * "p50_ms":..,"p99_ms":.., the parts' p50/p99: capture (capture, scan, copy), move
 * (the parent's move), child (the child's launch to its first exit), parent_blocked
 * (FORK stop to the parent's resume), and the shape: written runs and pages, image
 * extents and files, "children_left":0}. Exits 1 with a message naming the failed step
 * on any error; kills and reaps every process it made, and checks that none is left.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* libvmforkhost.so (host/procvm.c) */
int vmfork_proc_spawn(int stub_fd, int *sock_out, int *ns_out);
int vmfork_proc_unmaps(int pid, long *ranges, int max);
int vmfork_proc_launch(int sock, const int *fds, int nfds, const long *extents, int nextents,
                       const long *unmaps, int nunmaps, int vcpus, int *tids_out, int go);
int vmfork_proc_go(int sock);
int vmfork_proc_seize(int tid);
int vmfork_proc_run(int tid, const long *regs_in, int deliver, long *regs_out, long *info);
int vmfork_xstate_size(void);
int vmfork_proc_get_xstate(int tid, void *buf, int len);
int vmfork_proc_set_xstate(int tid, const void *buf, int len);
long vmfork_proc_readv(int pid, long remote, void *local, long len);
long vmfork_proc_writev(int pid, long remote, const void *local, long len);
int vmfork_proc_scan_written(int pagemap_fd, long start, long end, long *ranges, int max);

#define MIB (1UL << 20)
#define PAGE 4096L
#define LOWEST 0x1000L           /* page 0 cannot be mapped (GuestProcess.LOWEST_MAPPED) */
#define CODE 0x400000L
#define BLOCK 0x500000L          /* the fork block */
#define WRITTEN (BLOCK + PAGE)   /* the parent writes from the page after its fork block */
#define PORT 0x7f0
#define RUN_SIGNAL 1
#define RUN_KILLED 4
#define MAX_RUNS 1024
#define MAX_EXTENTS 1024         /* STUB_MAX_EXTENTS */
#define MAX_LAYERS 240
#define PARENT_ID 1L

static void die(const char *what, long r)
{
    fprintf(stderr, "proc_fork_floor: %s failed: %s (%ld)\n", what, strerror((int)-r), r);
    exit(1);
}

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "proc_fork_floor: %s\n", what);
        exit(1);
    }
}

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile, as the Java side's Stats. */
static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    int rank = (int)((p / 100.0) * n + 0.999999);
    if (rank < 1)
        rank = 1;
    return v[rank > n ? n - 1 : rank - 1];
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---------------------------------------------------------------- the image */

/* RAM [start, end) comes from layers[layer] instead of the base (RuntimeImage's extents). */
struct extent { long start, end; int layer; };

static long ram;
static int base_fd;
static int layers[MAX_LAYERS];          /* memfds of overlay layers; -1 when closed */
static int nlayers;
static struct extent ext[MAX_EXTENTS];
static int next_count;

static int cmp_extent(const void *a, const void *b)
{
    const struct extent *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

/* The image with runs (start, end pairs, in order) now from layer: RuntimeImage.overlay. */
static void overlay(const long *runs, int nruns, int layer)
{
    static struct extent out[MAX_EXTENTS + MAX_RUNS];
    int n = 0, r = 0;
    for (int i = 0; i < next_count; i++) {
        long s = ext[i].start;
        while (r < nruns && runs[2 * r + 1] <= s)
            r++;
        for (int k = r; k < nruns && runs[2 * k] < ext[i].end && s < ext[i].end; k++) {
            if (runs[2 * k] > s)
                out[n++] = (struct extent){ s, runs[2 * k], ext[i].layer };
            if (runs[2 * k + 1] > s)
                s = runs[2 * k + 1];
        }
        if (s < ext[i].end)
            out[n++] = (struct extent){ s, ext[i].end, ext[i].layer };
    }
    for (int k = 0; k < nruns; k++)
        out[n++] = (struct extent){ runs[2 * k], runs[2 * k + 1], layer };
    qsort(out, (size_t)n, sizeof out[0], cmp_extent);
    check(n <= MAX_EXTENTS, "the image has more extents than a launch may map");
    memcpy(ext, out, (size_t)n * sizeof out[0]);
    next_count = n;
}

/* RuntimeImage.processMapping: the base over all of RAM, then one private extent each. */
static int mapping(int *fds, long *extents, int *nfds)
{
    int idx[MAX_LAYERS];
    for (int i = 0; i < nlayers; i++)
        idx[i] = -1;
    fds[0] = base_fd;
    *nfds = 1;
    long *e = extents;
    *e++ = LOWEST, *e++ = ram - LOWEST, *e++ = 0, *e++ = LOWEST, *e++ = 0;
    for (int i = 0; i < next_count; i++) {
        long from = ext[i].start > LOWEST ? ext[i].start : LOWEST;
        if (from >= ext[i].end)
            continue;
        int l = ext[i].layer;
        if (idx[l] < 0) {
            idx[l] = *nfds;
            fds[(*nfds)++] = layers[l];
        }
        *e++ = from, *e++ = ext[i].end - from, *e++ = idx[l], *e++ = from, *e++ = 0;
    }
    return (int)((e - extents) / 5);
}

/* Closes the layers no extent uses (the VMM's last image reference going): untimed. */
static void close_unused_layers(void)
{
    for (int l = 0; l < nlayers; l++) {
        int used = 0;
        for (int i = 0; i < next_count && !used; i++)
            used = ext[i].layer == l;
        if (!used && layers[l] >= 0) {
            close(layers[l]);
            layers[l] = -1;
        }
    }
}

static int new_layer(void)
{
    int l = -1;
    for (int i = 0; i < nlayers; i++)
        if (layers[i] < 0)
            l = i;
    if (l < 0) {
        check(nlayers < MAX_LAYERS, "too many layers");
        l = nlayers++;
    }
    int fd = memfd_create("proc_fork_floor layer", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, ram) != 0)
        die("memfd for a layer", -errno);
    layers[l] = fd;
    return l;
}

/* ---------------------------------------------------------------- pooled processes */

static int stub_fd;

struct pooled {
    int pid, sock, nun;
    long unmaps[128];
};

/* ProcessPlatform.make: spawned, what it must unmap read. */
static void spawn_pooled(struct pooled *p)
{
    int ns;
    p->pid = vmfork_proc_spawn(stub_fd, &p->sock, &ns);
    if (p->pid < 0)
        die("vmfork_proc_spawn", p->pid);
    p->nun = vmfork_proc_unmaps(p->pid, p->unmaps, 64);
    if (p->nun < 0)
        die("vmfork_proc_unmaps", p->nun);
}

/*
 * A pooled child process with its parked tracer thread (ProcessPlatform's ready pool and
 * ParkedThread): the thread seizes the main thread when the process is pooled, then
 * waits; woken, it runs vCPU 0 of the child to its first exit.
 */
struct child {
    struct pooled p;
    pthread_t thread;
    sem_t seized, go, done;
    const unsigned char *xstate;
    int xlen;
    struct user_regs_struct regs;   /* the capture, RAX = 0 */
    long first_rip;
    double t_first;
    const char *err;
    long rc;
};

static void *child_tracer(void *arg)
{
    struct child *c = arg;
    c->rc = vmfork_proc_seize(c->p.pid);
    sem_post(&c->seized);
    if (c->rc < 0) {
        c->err = "vmfork_proc_seize (child)";
        return NULL;
    }
    sem_wait(&c->go);
    struct user_regs_struct r;
    long info[6];
    int k = vmfork_proc_run(c->p.pid, NULL, 0, (long *)&r, info);
    if (k != RUN_SIGNAL || info[0] != SIGTRAP) {
        c->err = "the child's int3 stop";
        c->rc = k < 0 ? k : -EPROTO;
    } else if ((c->rc = vmfork_proc_set_xstate(c->p.pid, c->xstate, c->xlen)) < 0) {
        c->err = "PTRACE_SETREGSET NT_X86_XSTATE (child)";
    } else {
        /* the capture's registers on the stub's stop (its selectors and orig_rax) */
        struct user_regs_struct in = c->regs;
        in.orig_rax = r.orig_rax;
        in.cs = r.cs, in.ss = r.ss, in.ds = r.ds, in.es = r.es, in.fs = r.fs, in.gs = r.gs;
        k = vmfork_proc_run(c->p.pid, (long *)&in, 0, (long *)&r, info);
        c->t_first = now_ms();
        if (k != RUN_SIGNAL || info[0] != SIGSEGV || info[1] != 0x80 || (long)r.rip != c->first_rip) {
            c->err = "the child's first exit";
            c->rc = k < 0 ? k : -EPROTO;
        }
    }
    sem_wait(&c->done);     /* the parent's resume: kill and reap only after it */
    kill(c->p.pid, SIGKILL);
    k = vmfork_proc_run(c->p.pid, NULL, 0, NULL, info);
    if (k != RUN_KILLED && !c->err) {
        c->err = "the child's reaping";
        c->rc = k < 0 ? k : -EPROTO;
    }
    return NULL;
}

static void pool_child(struct child *c)
{
    memset(c, 0, sizeof *c);
    spawn_pooled(&c->p);
    sem_init(&c->seized, 0, 0);
    sem_init(&c->go, 0, 0);
    sem_init(&c->done, 0, 0);
    int e = pthread_create(&c->thread, NULL, child_tracer, c);
    if (e)
        die("pthread_create", -e);
    sem_wait(&c->seized);
    if (c->err)
        die(c->err, c->rc);
}

/* ---------------------------------------------------------------- the guest */

/*
 * The parent, at CODE: writes `pages` pages from WRITTEN (one store each), then FORK;
 * after it (parent and child alike) a store to the stack (push) and `out` again, then
 * pop and round again.
 */
static long fork_out_rip, first_out_rip;

static void write_guest(unsigned char *mem, int pages)
{
    unsigned char code[64];
    int n = 0;
    code[n++] = 0xb9; memcpy(code + n, &pages, 4); n += 4;          /* mov $pages, %ecx */
    code[n++] = 0xbf; int w = (int)WRITTEN; memcpy(code + n, &w, 4); n += 4; /* mov $WRITTEN, %edi */
    int loop = n;
    code[n++] = 0x48; code[n++] = 0x89; code[n++] = 0x0f;            /* 1: mov %rcx, (%rdi) */
    code[n++] = 0x48; code[n++] = 0x81; code[n++] = 0xc7;            /* add $4096, %rdi */
    int pg = (int)PAGE; memcpy(code + n, &pg, 4); n += 4;
    code[n++] = 0xff; code[n++] = 0xc9;                              /* dec %ecx */
    code[n++] = 0x75; code[n] = (unsigned char)(loop - (n + 1)); n++; /* jnz 1b */
    code[n++] = 0xb8; code[n++] = 0x20; code[n++] = 0; code[n++] = 0; code[n++] = 0; /* mov $0x20, %eax */
    code[n++] = 0xbf; int b = (int)BLOCK; memcpy(code + n, &b, 4); n += 4; /* mov $BLOCK, %edi */
    code[n++] = 0x66; code[n++] = 0xba; code[n++] = PORT & 0xff; code[n++] = PORT >> 8; /* mov $PORT, %dx */
    fork_out_rip = CODE + n;
    code[n++] = 0xef;                                                /* out %eax, (%dx): FORK */
    code[n++] = 0x50;                                                /* push %rax: CoW */
    first_out_rip = CODE + n;
    code[n++] = 0xef;                                                /* out: first exit */
    code[n++] = 0x58;                                                /* pop %rax */
    code[n++] = 0xe9; int back = -(n + 4); memcpy(code + n, &back, 4); n += 4; /* jmp CODE */
    check(n <= (int)sizeof code, "guest code too long");
    memcpy(mem + CODE, code, (size_t)n);
    /* the fork block: vm type, count 1, flags 0, ids and errors after the result fields */
    int32_t hdr[2] = { 0, 1 };
    int64_t arr[3] = { 0, BLOCK + 48, BLOCK + 56 };
    memcpy(mem + BLOCK, hdr, sizeof hdr);
    memcpy(mem + BLOCK + 8, arr, sizeof arr);
}

/* ---------------------------------------------------------------- main */

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: proc_fork_floor <vmfork-stub> [runs] [ram_mib] [touch_mib] [pages] [warmup]\n");
        return 2;
    }
    int runs = argc > 2 ? atoi(argv[2]) : 200;
    long ram_mib = argc > 3 ? atol(argv[3]) : 128;
    long touch_mib = argc > 4 ? atol(argv[4]) : 64;
    int pages = argc > 5 ? atoi(argv[5]) : 2;
    int warmup = argc > 6 ? atoi(argv[6]) : 20;
    ram = (long)(ram_mib * MIB);
    check(runs >= 1 && pages >= 1 && warmup >= 0 && touch_mib >= 0 && ram_mib >= 16
          && WRITTEN + (long)pages * PAGE <= ram - (long)MIB && touch_mib * (long)MIB <= ram - 8 * (long)MIB,
          "arguments out of range");
    int xlen = vmfork_xstate_size();
    check(xlen > 0, "no XSAVE on this CPU");
    unsigned char *xstate = malloc((size_t)xlen);

    /* The base: RAM with touch_mib written (from 8 MiB up) and the guest. */
    base_fd = memfd_create("proc_fork_floor base", MFD_CLOEXEC);
    if (base_fd < 0 || ftruncate(base_fd, ram) != 0)
        die("memfd", -errno);
    unsigned char *mem = mmap(NULL, (size_t)ram, PROT_READ | PROT_WRITE, MAP_SHARED, base_fd, 0);
    if (mem == MAP_FAILED)
        die("mmap", -errno);
    for (long off = 0; off < touch_mib * (long)MIB; off += PAGE)
        mem[8 * MIB + off] = 1;
    write_guest(mem, pages);
    munmap(mem, (size_t)ram);

    stub_fd = open(argv[1], O_PATH | O_CLOEXEC);
    if (stub_fd < 0)
        die("open stub", -errno);

    /* The parent, launched private over the base (as after its first fork). */
    struct pooled cur;
    spawn_pooled(&cur);
    int fds[MAX_LAYERS + 1];
    static long plan[5 * (MAX_EXTENTS + 1)];
    int nfds;
    int nplan = mapping(fds, plan, &nfds);
    int tid;
    int r = vmfork_proc_launch(cur.sock, fds, nfds, plan, nplan, cur.unmaps, cur.nun, 1, &tid, 0);
    if (r < 0)
        die("vmfork_proc_launch (parent)", r);
    if ((r = vmfork_proc_seize(cur.pid)) < 0 || (r = vmfork_proc_go(cur.sock)) < 0)
        die("seize/go (parent)", r);
    close(cur.sock);
    struct user_regs_struct regs;
    long info[6];
    int k = vmfork_proc_run(cur.pid, NULL, 0, (long *)&regs, info);
    if (k != RUN_SIGNAL || info[0] != SIGTRAP)
        die("the parent's int3 stop", k < 0 ? k : -EPROTO);
    regs.rip = CODE;
    regs.rsp = ram - 64;
    regs.eflags = 0x202;

    int total = warmup + runs;
    double *t_all = malloc(sizeof(double) * (size_t)runs), *t_cap = malloc(sizeof(double) * (size_t)runs),
           *t_move = malloc(sizeof(double) * (size_t)runs), *t_child = malloc(sizeof(double) * (size_t)runs),
           *t_blocked = malloc(sizeof(double) * (size_t)runs);
    static long written[2 * MAX_RUNS];
    int nwritten = 0, shape_extents = 0, shape_fds = 0;
    long shape_pages = 0;
    for (int it = 0; it < total; it++) {
        /* Ahead of the fork, untimed: the pools (a child process with its tracer, a
           process for the parent's move) and the next layer file. */
        struct child *c = malloc(sizeof *c);
        pool_child(c);
        struct pooled mv;
        spawn_pooled(&mv);
        int layer = new_layer();

        /* The parent runs to FORK: its first exit after the last fork (the push, `out`),
           then its writes and the FORK `out`. */
        k = vmfork_proc_run(cur.pid, (long *)&regs, 0, (long *)&regs, info);
        if (it > 0) {
            check(k == RUN_SIGNAL && info[0] == SIGSEGV && (long)regs.rip == first_out_rip,
                  "the parent's first exit after a fork");
            regs.rip += 1;
            k = vmfork_proc_run(cur.pid, (long *)&regs, 0, (long *)&regs, info);
        }
        double t0 = now_ms();
        check(k == RUN_SIGNAL && info[0] == SIGSEGV && info[1] == 0x80, "the FORK stop");

        /* The hypercall: its byte at RIP and its fork block, read from the process. */
        unsigned char op;
        int64_t blk[4];
        if (vmfork_proc_readv(cur.pid, (long)regs.rip, &op, 1) != 1 || op != 0xef || (regs.rdx & 0xffff) != PORT
            || (long)regs.rip != fork_out_rip)
            check(0, "the FORK stop is not the guest's `out`");
        if (vmfork_proc_readv(cur.pid, (long)regs.rdi, blk, sizeof blk) != sizeof blk || blk[0] >> 32 != 1)
            check(0, "the fork block");
        regs.rip += 1;

        /* 1. capture: registers (the stop's), the XSAVE area */
        int n = vmfork_proc_get_xstate(cur.pid, xstate, xlen);
        if (n != xlen)
            die("PTRACE_GETREGSET NT_X86_XSTATE", n < 0 ? n : -EPROTO);
        /* 2. scan the written pages */
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/pagemap", cur.pid);
        int pm = open(path, O_RDONLY | O_CLOEXEC);
        if (pm < 0)
            die("open pagemap", -errno);
        nwritten = vmfork_proc_scan_written(pm, 0, ram, written, MAX_RUNS);
        close(pm);
        if (nwritten < 0)
            die("vmfork_proc_scan_written", nwritten);
        /* 3. copy them into the new layer, and overlay the image */
        unsigned char *dst = mmap(NULL, (size_t)ram, PROT_READ | PROT_WRITE, MAP_SHARED, layers[layer], 0);
        if (dst == MAP_FAILED)
            die("mmap of the layer", -errno);
        shape_pages = 0;
        for (int i = 0; i < nwritten; i++) {
            long len = written[2 * i + 1] - written[2 * i];
            for (long done = 0; done < len;) {
                long got = vmfork_proc_readv(cur.pid, written[2 * i] + done, dst + written[2 * i] + done, len - done);
                if (got <= 0)
                    die("vmfork_proc_readv", got < 0 ? got : -EIO);
                done += got;
            }
            shape_pages += len / PAGE;
        }
        munmap(dst, (size_t)ram);
        overlay(written, nwritten, layer);
        double t1 = now_ms();

        /* 4. the parent's move: launch, the old process killed, seize, GO, int3 stop, XSAVE */
        nplan = mapping(fds, plan, &nfds);
        shape_extents = nplan;
        shape_fds = nfds;
        r = vmfork_proc_launch(mv.sock, fds, nfds, plan, nplan, mv.unmaps, mv.nun, 1, &tid, 0);
        if (r < 0)
            die("vmfork_proc_launch (move)", r);
        kill(cur.pid, SIGKILL);
        int old = cur.pid;
        if ((r = vmfork_proc_seize(mv.pid)) < 0)
            die("vmfork_proc_seize (move)", r);
        if ((r = vmfork_proc_go(mv.sock)) < 0)
            die("vmfork_proc_go (move)", r);
        close(mv.sock);
        struct user_regs_struct stop;
        k = vmfork_proc_run(mv.pid, NULL, 0, (long *)&stop, info);
        if (k != RUN_SIGNAL || info[0] != SIGTRAP)
            die("the moved parent's int3 stop", k < 0 ? k : -EPROTO);
        if ((r = vmfork_proc_set_xstate(mv.pid, xstate, xlen)) < 0)
            die("PTRACE_SETREGSET NT_X86_XSTATE (move)", r);
        struct user_regs_struct captured = regs;
        regs.orig_rax = stop.orig_rax;
        regs.cs = stop.cs, regs.ss = stop.ss, regs.ds = stop.ds, regs.es = stop.es, regs.fs = stop.fs, regs.gs = stop.gs;
        cur = mv;
        double t2 = now_ms();

        /* 5. the child: LAUNCH with GO, its fork block, its tracer woken */
        r = vmfork_proc_launch(c->p.sock, fds, nfds, plan, nplan, c->p.unmaps, c->p.nun, 1, &tid, 1);
        if (r < 0)
            die("vmfork_proc_launch (child)", r);
        close(c->p.sock);
        int64_t child_id = 2 + it;
        int32_t role[2] = { 1, 0 };
        unsigned char cb[16];
        memcpy(cb, role, 8);
        memcpy(cb + 8, &child_id, 8);
        if (vmfork_proc_writev(c->p.pid, BLOCK + 32, cb, sizeof cb) != sizeof cb)
            check(0, "the child's fork block");
        c->regs = captured;
        c->regs.rax = 0;
        c->xstate = xstate;
        c->xlen = xlen;
        c->first_rip = first_out_rip;
        sem_post(&c->go);

        /* 6. the parent's result: its fork block, RAX; then it may resume */
        int64_t pb[4];
        int32_t prole[2] = { 2, 0 };
        memcpy(pb, prole, 8);
        pb[1] = PARENT_ID;
        pb[2] = child_id;   /* ids[0] */
        pb[3] = 0;          /* errors[0] */
        if (vmfork_proc_writev(cur.pid, BLOCK + 32, pb, sizeof pb) != sizeof pb)
            check(0, "the parent's fork block");
        regs.rax = 1;
        double t3 = now_ms();

        sem_post(&c->done);
        pthread_join(c->thread, NULL);
        if (c->err)
            die(c->err, c->rc);
        /* Untimed: reap the process the parent left (the VMM's reaper thread does it). */
        int st;
        while (waitpid(old, &st, __WALL) < 0 && errno == EINTR)
            ;
        close_unused_layers();
        if (it >= warmup) {
            int i = it - warmup;
            t_all[i] = c->t_first - t0;
            t_cap[i] = t1 - t0;
            t_move[i] = t2 - t1;
            t_child[i] = c->t_first - t2;
            t_blocked[i] = t3 - t0;
        }
        sem_destroy(&c->seized);
        sem_destroy(&c->go);
        sem_destroy(&c->done);
        free(c);
    }

    kill(cur.pid, SIGKILL);
    k = vmfork_proc_run(cur.pid, NULL, 0, NULL, info);
    if (k != RUN_KILLED)
        die("the parent's end", k < 0 ? k : -EPROTO);
    /* Nothing left: every process this program made was its child, and all are reaped. */
    int left = 0, st;
    pid_t w;
    while ((w = waitpid(-1, &st, __WALL | WNOHANG)) != 0 && !(w < 0 && errno == ECHILD))
        left++;
    if (w == 0)
        left++;
    if (left)
        check(0, "guest processes were left behind");

    double all50 = median(t_all, runs), all99 = pct(t_all, runs, 99);
    double cap50 = median(t_cap, runs), cap99 = pct(t_cap, runs, 99);
    double mv50 = median(t_move, runs), mv99 = pct(t_move, runs, 99);
    double ch50 = median(t_child, runs), ch99 = pct(t_child, runs, 99);
    double bl50 = median(t_blocked, runs), bl99 = pct(t_blocked, runs, 99);
    printf("{\"bench\": \"fork.c_floor\", \"platform\": \"process\", \"n\": %d, \"p50_ms\": %.3f, \"p99_ms\": %.3f,"
           " \"capture_p50_ms\": %.3f, \"capture_p99_ms\": %.3f, \"move_p50_ms\": %.3f, \"move_p99_ms\": %.3f,"
           " \"child_p50_ms\": %.3f, \"child_p99_ms\": %.3f,"
           " \"parent_blocked_p50_ms\": %.3f, \"parent_blocked_p99_ms\": %.3f,"
           " \"ram_mib\": %ld, \"touch_mib\": %ld, \"written_runs\": %d, \"written_pages\": %ld,"
           " \"image_extents\": %d, \"image_files\": %d, \"warmup_forks\": %d, \"children_left\": %d}\n",
           runs, all50, all99, cap50, cap99, mv50, mv99, ch50, ch99, bl50, bl99, ram_mib, touch_mib, nwritten,
           shape_pages, shape_extents, shape_fds, warmup, left);
    return 0;
}
