/*
 * fork_floor: the floor under a local fork, in plain C (`vmfork bench fork` builds it
 * with gcc and prints its figure as fork.c_floor).
 *
 *   fork_floor [runs] [ram_mib] [touch_mib]
 *
 * Boots a parent the way the VMM boots a vmfork guest (guest RAM in a memfd, identity
 * page tables, 64-bit mode at CPL3 with IOPL 3, CPUID, XCR0), writes touch_mib of its RAM
 * and runs it to its first exit (a port-I/O `out`, as a hypercall is). Then, per run, does
 * what the VMM must do for a fork child, timed from the start of the capture to the
 * child's first exit:
 *
 *   capture the parent: KVM_GET_REGS, SREGS, XSAVE2 (or XSAVE), XCRS, MSRS (the VMM's
 *     list: the guest-visible MSRs KVM lists), VCPU_EVENTS, MP_STATE, KVM_GET_CLOCK;
 *   launch the child: KVM_CREATE_VM, a MAP_PRIVATE view of the parent's memfd,
 *     KVM_SET_USER_MEMORY_REGION, KVM_SET_CLOCK, KVM_CREATE_VCPU, mmap of kvm_run,
 *     KVM_SET_CPUID2, SREGS, REGS, XCRS, XSAVE, MSRS, VCPU_EVENTS, MP_STATE;
 *   KVM_RUN to the child's first exit: the guest stores to its stack (a copy-on-write
 *     fault, as a real child's first steps take one) and exits on `out`.
 *
 * Nothing is reused between runs; each child is torn down after its figure is taken (not
 * timed). Prints one JSON line: {"bench":"fork.c_floor","n":..,"p50_ms":..,"p99_ms":..}
 * with the capture and launch medians apart. Exits 1 with a message naming the failed
 * call on any error.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PML4 0x1000UL
#define PDPT 0x2000UL
#define PD_BASE 0x4000UL
#define CODE 0x400000UL
#define PORT 0x7f0 /* the hypercall port */
#define MIB (1UL << 20)
#define MAX_CPUID 256
#define MAX_MSRS 32

static void die(const char *what) {
    fprintf(stderr, "fork_floor: %s failed: %s\n", what, strerror(errno));
    exit(1);
}

static int xioctl(int fd, unsigned long req, void *arg, const char *what) {
    int r = ioctl(fd, req, arg);
    if (r < 0) {
        die(what);
    }
    return r;
}

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, int n, int p) {
    int i = (int)((p / 100.0) * n + 0.5) - 1;
    if (i < 0) i = 0;
    if (i >= n) i = n - 1;
    return v[i];
}

/* The guest-visible MSRs the VMM saves (io.vmfork.kvm.x86.Msr.GUEST_VISIBLE). */
static const uint32_t GUEST_VISIBLE[] = {
    0xc0000100, 0xc0000101, 0xc0000102, 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000103,
    0x174, 0x175, 0x176, 0x277, 0x1a0, 0x10,
};

struct msrs { struct kvm_msrs h; struct kvm_msr_entry e[MAX_MSRS]; };
struct cpuid { struct kvm_cpuid2 h; struct kvm_cpuid_entry2 e[MAX_CPUID]; };

/* What a capture holds: the parent's vCPU and clock. */
struct state {
    struct kvm_regs regs;
    struct kvm_sregs sregs;
    struct kvm_xcrs xcrs;
    struct msrs msrs;
    struct kvm_vcpu_events events;
    struct kvm_mp_state mp;
    struct kvm_clock_data clock;
    void *xsave;
};

static int kvm, xsave_size, xsave2, has_xcrs, run_size;
static struct cpuid cpuid;
static uint32_t msr_list[MAX_MSRS];
static int msr_count;

static void msr_indices(void) {
    struct { struct kvm_msr_list h; uint32_t i[1024]; } l = { .h.nmsrs = 1024 };
    xioctl(kvm, KVM_GET_MSR_INDEX_LIST, &l, "KVM_GET_MSR_INDEX_LIST");
    for (size_t g = 0; g < sizeof GUEST_VISIBLE / sizeof GUEST_VISIBLE[0]; g++) {
        for (uint32_t k = 0; k < l.h.nmsrs; k++) {
            if (l.i[k] == GUEST_VISIBLE[g]) {
                msr_list[msr_count++] = GUEST_VISIBLE[g];
                break;
            }
        }
    }
}

static void capture(int vm, int vcpu, struct state *s) {
    xioctl(vcpu, KVM_GET_REGS, &s->regs, "KVM_GET_REGS");
    xioctl(vcpu, KVM_GET_SREGS, &s->sregs, "KVM_GET_SREGS");
    xioctl(vcpu, xsave2 ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, s->xsave, "KVM_GET_XSAVE2");
    if (has_xcrs) {
        xioctl(vcpu, KVM_GET_XCRS, &s->xcrs, "KVM_GET_XCRS");
    }
    s->msrs.h.nmsrs = msr_count;
    for (int i = 0; i < msr_count; i++) {
        s->msrs.e[i].index = msr_list[i];
    }
    if (xioctl(vcpu, KVM_GET_MSRS, &s->msrs, "KVM_GET_MSRS") != msr_count) {
        errno = EINVAL;
        die("KVM_GET_MSRS (count)");
    }
    xioctl(vcpu, KVM_GET_VCPU_EVENTS, &s->events, "KVM_GET_VCPU_EVENTS");
    xioctl(vcpu, KVM_GET_MP_STATE, &s->mp, "KVM_GET_MP_STATE");
    xioctl(vm, KVM_GET_CLOCK, &s->clock, "KVM_GET_CLOCK");
}

struct vm { int fd, vcpu; struct kvm_run *run; void *ram; size_t size; };

static void new_vm(struct vm *v, int memfd, size_t size, int private_view) {
    v->size = size;
    v->fd = xioctl(kvm, KVM_CREATE_VM, 0, "KVM_CREATE_VM");
    v->ram = mmap(NULL, size, PROT_READ | PROT_WRITE, private_view ? MAP_PRIVATE : MAP_SHARED, memfd, 0);
    if (v->ram == MAP_FAILED) die("mmap of guest RAM");
    struct kvm_userspace_memory_region r = { .slot = 0, .guest_phys_addr = 0, .memory_size = size,
                                             .userspace_addr = (uint64_t)v->ram };
    xioctl(v->fd, KVM_SET_USER_MEMORY_REGION, &r, "KVM_SET_USER_MEMORY_REGION");
}

static void new_vcpu(struct vm *v) {
    v->vcpu = xioctl(v->fd, KVM_CREATE_VCPU, 0, "KVM_CREATE_VCPU");
    v->run = mmap(NULL, run_size, PROT_READ | PROT_WRITE, MAP_SHARED, v->vcpu, 0);
    if (v->run == MAP_FAILED) die("mmap of kvm_run");
    xioctl(v->vcpu, KVM_SET_CPUID2, &cpuid, "KVM_SET_CPUID2");
}

/* Ordering as the VMM's VcpuStates.restore: SREGS, REGS, XCRS, XSAVE, MSRS, events, MP state. */
static void restore(struct vm *v, struct state *s) {
    struct kvm_clock_data c = { .clock = s->clock.clock };
    xioctl(v->fd, KVM_SET_CLOCK, &c, "KVM_SET_CLOCK");
    new_vcpu(v);
    xioctl(v->vcpu, KVM_SET_SREGS, &s->sregs, "KVM_SET_SREGS");
    xioctl(v->vcpu, KVM_SET_REGS, &s->regs, "KVM_SET_REGS");
    if (has_xcrs) {
        xioctl(v->vcpu, KVM_SET_XCRS, &s->xcrs, "KVM_SET_XCRS");
    }
    xioctl(v->vcpu, KVM_SET_XSAVE, s->xsave, "KVM_SET_XSAVE");
    if (xioctl(v->vcpu, KVM_SET_MSRS, &s->msrs, "KVM_SET_MSRS") != msr_count) {
        errno = EINVAL;
        die("KVM_SET_MSRS (count)");
    }
    xioctl(v->vcpu, KVM_SET_VCPU_EVENTS, &s->events, "KVM_SET_VCPU_EVENTS");
    xioctl(v->vcpu, KVM_SET_MP_STATE, &s->mp, "KVM_SET_MP_STATE");
}

static void run_to_out(struct vm *v, const char *who) {
    for (;;) {
        if (ioctl(v->vcpu, KVM_RUN, 0) < 0) {
            if (errno == EINTR) continue;
            die("KVM_RUN");
        }
        if (v->run->exit_reason == KVM_EXIT_IO && v->run->io.port == PORT) {
            return;
        }
        fprintf(stderr, "fork_floor: %s exited with reason %u instead of out to 0x%x\n", who,
                v->run->exit_reason, PORT);
        exit(1);
    }
}

static void free_vm(struct vm *v) {
    munmap(v->run, run_size);
    close(v->vcpu);
    close(v->fd);
    munmap(v->ram, v->size);
}

static void seg(struct kvm_segment *s, uint16_t sel, uint8_t type, uint8_t db, uint8_t l) {
    *s = (struct kvm_segment){ .base = 0, .limit = 0xffffffff, .selector = sel, .type = type, .present = 1,
                               .dpl = 3, .db = db, .s = 1, .l = l, .g = 1 };
}

/* The parent: 64-bit mode at CPL3 as io.vmfork.vmm.x86.CpuSetup sets it. */
static void boot(struct vm *p, size_t size) {
    new_vcpu(p);
    struct kvm_sregs s;
    xioctl(p->vcpu, KVM_GET_SREGS, &s, "KVM_GET_SREGS");
    int has_xsave = 0, fsgsbase = 0;
    uint64_t xcr0_supported = 0x3;
    for (uint32_t i = 0; i < cpuid.h.nent; i++) {
        struct kvm_cpuid_entry2 *e = &cpuid.e[i];
        if (e->function == 1) has_xsave = (e->ecx >> 26) & 1;
        if (e->function == 7 && e->index == 0) fsgsbase = e->ebx & 1;
        if (e->function == 0xd && e->index == 0) xcr0_supported = e->eax;
    }
    s.cr3 = PML4;
    s.cr0 = 1 | 2 | 0x10 | 0x20 | 0x10000 | 0x40000 | 0x80000000UL;
    s.cr4 = 0x20 | 0x200 | 0x400 | (has_xsave ? 0x40000 : 0) | (fsgsbase ? 0x10000 : 0);
    s.efer = 0x100 | 0x400;
    seg(&s.cs, 0x33, 11, 0, 1);
    seg(&s.ds, 0x2b, 3, 1, 0);
    s.es = s.fs = s.gs = s.ss = s.ds;
    xioctl(p->vcpu, KVM_SET_SREGS, &s, "KVM_SET_SREGS");
    if (has_xsave && has_xcrs) {
        struct kvm_xcrs x = { .nr_xcrs = 1 };
        x.xcrs[0].xcr = 0;
        x.xcrs[0].value = 0x7 & xcr0_supported;
        xioctl(p->vcpu, KVM_SET_XCRS, &x, "KVM_SET_XCRS");
    }
    struct kvm_regs r = { .rip = CODE, .rsp = size - 16, .rdx = PORT, .rflags = 0x3002 };
    xioctl(p->vcpu, KVM_SET_REGS, &r, "KVM_SET_REGS");
    run_to_out(p, "the parent");
}

int main(int argc, char **argv) {
    int runs = argc > 1 ? atoi(argv[1]) : 200;
    size_t ram = (argc > 2 ? strtoul(argv[2], NULL, 10) : 128) * MIB;
    size_t touch = (argc > 3 ? strtoul(argv[3], NULL, 10) : 64) * MIB;
    if (runs < 1 || ram < 4 * MIB || ram > 1024 * MIB || ram % (2 * MIB) != 0 || touch > ram - 4 * MIB) {
        fprintf(stderr, "usage: fork_floor [runs>=1] [ram_mib: 4..1024, even] [touch_mib <= ram_mib-4]\n");
        return 2;
    }
    /* As the VMM: AMX tile data may be carried, if the host has it (a refusal is no error). */
    syscall(SYS_arch_prctl, 0x1025, 18UL);
    kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("open /dev/kvm");
    run_size = xioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0, "KVM_GET_VCPU_MMAP_SIZE");
    has_xcrs = ioctl(kvm, KVM_CHECK_EXTENSION, KVM_CAP_XCRS) > 0;
    cpuid.h.nent = MAX_CPUID;
    xioctl(kvm, KVM_GET_SUPPORTED_CPUID, &cpuid, "KVM_GET_SUPPORTED_CPUID");
    msr_indices();

    /* Guest RAM: page tables (2 MiB pages, user), the code, touch_mib written. */
    int memfd = memfd_create("vmfork-floor", MFD_CLOEXEC);
    if (memfd < 0) die("memfd_create");
    if (ftruncate(memfd, ram) < 0) die("ftruncate");
    struct vm parent;
    new_vm(&parent, memfd, ram, 0);
    uint64_t *m = parent.ram;
    m[PML4 / 8] = PDPT | 7 | 0x20;
    m[PDPT / 8] = PD_BASE | 7 | 0x20;
    for (uint64_t a = 0; a < ram; a += 2 * MIB) {
        m[(PD_BASE / 8) + a / (2 * MIB)] = a | 7 | 0x20 | 0x40 | 0x80;
    }
    /* loop: mov %rax,(%rsp); out %eax,(%dx); jmp loop */
    static const uint8_t code[] = { 0x48, 0x89, 0x04, 0x24, 0xef, 0xeb, 0xf9 };
    memcpy((uint8_t *)parent.ram + CODE, code, sizeof code);
    memset((uint8_t *)parent.ram + 2 * MIB + CODE, 0x5a, touch);
    xsave2 = ioctl(parent.fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
    xsave_size = xsave2 > (int)sizeof(struct kvm_xsave) ? xsave2 : (int)sizeof(struct kvm_xsave);
    boot(&parent, ram);

    struct state st;
    st.xsave = calloc(1, xsave_size);
    double *total = calloc(runs, sizeof(double)), *cap = calloc(runs, sizeof(double)),
           *launch = calloc(runs, sizeof(double));
    if (!st.xsave || !total || !cap || !launch) die("calloc");
    for (int i = 0; i < runs; i++) {
        struct vm child;
        double t0 = now_ms();
        capture(parent.fd, parent.vcpu, &st);
        double t1 = now_ms();
        new_vm(&child, memfd, ram, 1);
        restore(&child, &st);
        double t2 = now_ms();
        run_to_out(&child, "a child");
        double t3 = now_ms();
        total[i] = t3 - t0;
        cap[i] = t1 - t0;
        launch[i] = t2 - t1;
        free_vm(&child);
    }
    qsort(total, runs, sizeof(double), cmp);
    qsort(cap, runs, sizeof(double), cmp);
    qsort(launch, runs, sizeof(double), cmp);
    printf("{\"bench\": \"fork.c_floor\", \"n\": %d, \"p50_ms\": %.3f, \"p99_ms\": %.3f, \"min_ms\": %.3f, "
           "\"max_ms\": %.3f, \"capture_p50_ms\": %.3f, \"launch_p50_ms\": %.3f, \"ram_mib\": %zu, "
           "\"touched_mib\": %zu, \"xsave_bytes\": %d, \"msrs\": %d}\n",
           runs, pct(total, runs, 50), pct(total, runs, 99), total[0], total[runs - 1], pct(cap, runs, 50),
           pct(launch, runs, 50), ram / MIB, touch / MIB, xsave_size, msr_count);
    free_vm(&parent);
    close(memfd);
    close(kvm);
    free(st.xsave);
    free(total);
    free(cap);
    free(launch);
    return 0;
}
