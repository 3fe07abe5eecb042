/*
 * vmfork guest SDK: the hypercall ABI, as documented in docs/hypercalls.md.
 *
 * A vmfork guest is a static, freestanding x86-64 ELF that the VMM starts at CPL3
 * in 64-bit mode with IOPL 3, paging on and guest memory identity mapped
 * (guest virtual address == guest physical address).
 *
 * Calling convention: EAX = hypercall number, RDI = argument (a scalar or the
 * guest-physical address of an argument block), then `out %eax, (%dx)` with
 * DX = VMF_HC_PORT. The instruction is exactly one byte (0xEF). On return RAX holds
 * the status: >= 0 on success (a count where the call says so), a negative VMF_E*
 * code on error. Every other register is preserved.
 */
#ifndef VMFORK_H
#define VMFORK_H

#include <stddef.h>
#include <stdint.h>

#define VMF_ABI_VERSION 1u
#define VMF_HC_PORT 0x7f0u
/* The type of the ELF note (owner "vmfork", descriptor VMF_ABI_VERSION) that start.S puts
   in every guest: what tells the VMM an SDK guest from a Linux program (docs/linux.md). */
#define VMF_NOTE_GUEST 1u

/* Guest-physical memory layout (identity mapped). */
#define VMF_BOOT_INFO_GPA 0x100000ull  /* struct vmf_boot_info, read-only           */
#define VMF_IMAGE_MIN_GPA 0x200000ull  /* lowest address an ELF segment may load at */
#define VMF_IMAGE_BASE    0x400000ull  /* where the SDK's linker script links        */

/* Hypercall numbers. Never renumbered; retired numbers stay reserved. */
#define VMF_HC_ABI_VERSION   0u  /* arg: none.            ret: VMF_ABI_VERSION           */
#define VMF_HC_CONSOLE_WRITE 1u  /* arg: vmf_buf*.        ret: bytes written             */
#define VMF_HC_EXIT          2u  /* arg: exit code (int32 in RDI). Does not return.      */
#define VMF_HC_IDENTITY      3u  /* arg: vmf_identity*.   ret: 0                         */
#define VMF_HC_ENTROPY       4u  /* arg: vmf_buf*.        ret: bytes filled              */
#define VMF_HC_CLOCK         5u  /* arg: vmf_clock*.      ret: 0                         */
#define VMF_HC_RECV          6u  /* arg: vmf_recv*.       ret: message length            */
#define VMF_HC_SEND          7u  /* arg: vmf_buf*.        ret: bytes sent                */
#define VMF_HC_READY         8u  /* arg: none.            ret: 0                         */
#define VMF_HC_FORK          9u  /* arg: vmf_fork*.       ret: copies launched or accepted (parent), 0 (child) */
#define VMF_HC_FORK_STATUS  10u  /* arg: vmf_fork_status*. ret: 0                        */
#define VMF_HC_VCPU_START   11u  /* arg: vmf_vcpu_start*. ret: 0                         */
#define VMF_HC_VCPU_STOP    12u  /* arg: none. Does not return on a secondary vCPU; VMF_EINVAL on vCPU 0 */
#define VMF_HC_VCPU_INDEX   13u  /* arg: none.            ret: the calling vCPU's index  */

/* Status codes (RAX). */
#define VMF_OK       0
#define VMF_EINVAL  (-1)  /* an argument is out of range                            */
#define VMF_EFAULT  (-2)  /* a pointer or length lies outside guest RAM              */
#define VMF_ENOSYS  (-3)  /* unknown hypercall number                                */
#define VMF_E2BIG   (-4)  /* buffer too small; the message stays queued              */
#define VMF_EAGAIN  (-5)  /* nothing to receive (VMF_RECV_NONBLOCK)                  */
#define VMF_ECLOSED (-6)  /* the application closed the message channel              */
#define VMF_ELIMIT  (-7)  /* a host limit was reached                                */
#define VMF_ENOMEM  (-8)  /* the host is out of memory for this request              */
#define VMF_EREMOTE (-9)  /* FORK copy placed on another host and not launched there  */
#define VMF_EINPROGRESS (-10) /* FORK copy accepted for launch on another host      */
#define VMF_ETRANSFER (-11)   /* remote copy: transfer failed or the target refused  */

#define VMF_CONSOLE_MAX  65536u  /* bytes per console write */
#define VMF_ENTROPY_MAX  4096u   /* bytes per entropy call  */

/* Passed in RDI to _start, read-only for the guest, at VMF_BOOT_INFO_GPA. */
#define VMF_BOOT_INFO_MAGIC 0x544f4f424b524f46ull /* "FORKBOOT" */
struct vmf_boot_info {
    uint64_t magic;
    uint32_t abi_version;
    uint32_t vcpu_index;
    uint64_t memory_size;   /* bytes of guest RAM, from GPA 0                 */
    uint64_t heap_start;    /* first free byte after the loaded image (4 KiB aligned) */
    uint64_t heap_end;      /* end of the heap == lowest byte of the stack    */
    uint64_t stack_top;     /* initial RSP                                    */
    uint32_t vcpu_count;    /* vCPUs of the VM, 1..vmfork.vmm.max-vcpus       */
    uint32_t reserved;      /* 0                                              */
};

struct vmf_buf {
    uint64_t addr;  /* GPA of the bytes */
    uint64_t len;
};

struct vmf_identity {
    uint64_t vm_id;            /* unique on its host cluster                 */
    uint64_t parent_id;        /* 0 for a VM that was not forked              */
    uint64_t host_id;          /* the host this VM runs on now                */
    uint64_t fork_generation;  /* 0 for a booted VM, +1 in every fork child   */
    uint32_t vm_type;
    uint32_t vcpu_count;
};

struct vmf_clock {
    int64_t monotonic_ns;  /* host CLOCK_MONOTONIC           */
    int64_t wall_ns;       /* host wall clock, since the Unix epoch */
};

#define VMF_RECV_NONBLOCK 1u
struct vmf_recv {
    uint64_t addr;      /* GPA of the buffer                                    */
    uint64_t capacity;  /* its size                                             */
    uint64_t flags;     /* VMF_RECV_*                                           */
    uint64_t len;       /* out: length of the message (also set with VMF_E2BIG) */
};

/*
 * FORK: the VMM stops every vCPU of the caller, freezes its memory into a runtime image
 * and starts `count` child VMs from it (copy-on-write, nothing copied), then lets the
 * caller go. Each child resumes from the same instruction with `role` = VMF_FORK_CHILD,
 * its `index` and its own `vm_id`, RAX = 0; its identity has parent_id = the caller and
 * fork_generation + 1. The caller (role VMF_FORK_PARENT) gets RAX = the number of copies
 * launched, and per copy the child's id (0 if it failed) and an error code (0 or VMF_E*).
 *
 * With VMF_FORK_REMOTE in `flags`, a copy the cluster places on another host is accepted
 * rather than failed with VMF_EREMOTE: errors[i] = VMF_EINPROGRESS, ids[i] = a ticket, and
 * it counts in the result; FORK_STATUS with the ticket tells later whether it started.
 */
#define VMF_FORK_PARENT 0u
#define VMF_FORK_CHILD  1u
#define VMF_FORK_REMOTE 1u
struct vmf_fork {
    uint32_t vm_type;   /* in: type of the copies (the cluster's placement uses it)     */
    uint32_t count;     /* in: copies wanted, 1..host limit                              */
    uint64_t flags;     /* in: VMF_FORK_REMOTE or 0                                      */
    uint64_t ids;       /* in: GPA of uint64_t[count]; out in the parent: children's ids */
    uint64_t errors;    /* in: GPA of int64_t[count]; out in the parent: 0 or VMF_E*     */
    uint32_t role;      /* out: VMF_FORK_PARENT or VMF_FORK_CHILD                        */
    uint32_t index;     /* out: in a child, its index in [0, count)                      */
    uint64_t vm_id;     /* out: the caller's own VM id after the call                    */
};

/*
 * FORK_STATUS: the outcome of a copy accepted for launch on another host, by the ticket
 * FORK gave the parent. Waits up to wait_ns (at most VMF_FORK_STATUS_WAIT_MAX) while the
 * copy is still in progress. Tickets are the parent's own: in any other VM, VMF_EINVAL.
 */
#define VMF_FORK_STATUS_WAIT_MAX 10000000000ull /* 10 s */
struct vmf_fork_status {
    uint64_t ticket;    /* in: ids[i] of a copy FORK answered VMF_EINPROGRESS for        */
    uint64_t wait_ns;   /* in: how long to wait while it is in progress; 0: do not wait  */
    int64_t status;     /* out: 0 started, VMF_EINPROGRESS, or why it failed (VMF_E*)    */
    uint64_t vm_id;     /* out: the clone's VM id once started, else 0                   */
};

/*
 * VCPU_START: secondary vCPU `index` (1 .. vcpu_count - 1, not running) begins at `entry`
 * at CPL3 with RSP = stack_top (16-byte aligned: the entry is jumped to, not called, as
 * _start is), RDI = arg, RSI = index, the other general registers 0. vCPU 0 starts at the
 * ELF entry; the others run nothing until started. vmf_vcpu_start() below wraps it.
 */
struct vmf_vcpu_start {
    uint32_t index;      /* in: the vCPU to start                                         */
    uint32_t flags;      /* in: 0                                                         */
    uint64_t entry;      /* in: where it begins                                           */
    uint64_t stack_top;  /* in: its initial RSP; [stack_top - 16, stack_top) writable     */
    uint64_t arg;        /* in: its initial RDI                                           */
};

static inline int64_t vmf_hypercall(uint32_t nr, uint64_t arg)
{
    int64_t ret;
    __asm__ volatile("out %%eax, (%%dx)"
                     : "=a"(ret)
                     : "a"(nr), "d"((uint16_t)VMF_HC_PORT), "D"(arg)
                     : "memory");
    return ret;
}

/* Convenience wrappers (defined in the SDK runtime). */
int64_t vmf_console_write(const void *buf, size_t len);
__attribute__((noreturn)) void vmf_exit(int code);
int64_t vmf_identity(struct vmf_identity *out);
int64_t vmf_entropy(void *buf, size_t len);
int64_t vmf_clock(struct vmf_clock *out);
int64_t vmf_recv(void *buf, size_t capacity, uint64_t flags, size_t *len_out);
int64_t vmf_send(const void *buf, size_t len);
int64_t vmf_ready(void);
int64_t vmf_fork(struct vmf_fork *f);
int64_t vmf_fork_status(struct vmf_fork_status *s);

/*
 * Several vCPUs (docs/hypercalls.md, "Several vCPUs"). The VM has vmf_boot->vcpu_count
 * of them; main runs on vCPU 0. vmf_vcpu_start runs fn(arg) on secondary vCPU `index`
 * with the stack [stack, stack + stack_size) (memory the guest owns, e.g. from its heap;
 * at least 64 bytes); when fn returns, that vCPU stops (VCPU_STOP) and may be started
 * again. Returns 0 or a VMF_E* code. vmf_vcpu_stop stops the calling secondary vCPU at
 * once (it returns only on vCPU 0, with VMF_EINVAL: the VM ends when a vCPU calls EXIT).
 * There are no interrupts and no IPIs: vCPUs meet through memory, with the atomics and
 * the spin barrier below.
 */
int64_t vmf_vcpu_start(uint32_t index, void (*fn)(void *), void *arg, void *stack, size_t stack_size);
int64_t vmf_vcpu_stop(void);
uint32_t vmf_vcpu_index(void);  /* a hypercall: cache it rather than call it in a loop */

/* Atomics on 64-bit words shared between vCPUs (GCC builtins; lock-prefixed where needed). */
static inline uint64_t vmf_atomic_load(const volatile uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void vmf_atomic_store(volatile uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Adds v, returns the new value. */
static inline uint64_t vmf_atomic_add(volatile uint64_t *p, uint64_t v)
{
    return __atomic_add_fetch(p, v, __ATOMIC_SEQ_CST);
}

/* If *p == *expected, stores desired and returns 1; else copies *p to *expected and returns 0. */
static inline int vmf_atomic_cas(volatile uint64_t *p, uint64_t *expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

/* In a spin loop: `pause`, which spares the sibling hyperthread and the host. */
static inline void vmf_cpu_relax(void)
{
    __asm__ volatile("pause" ::: "memory");
}

/*
 * A sense-reversing spin barrier for `count` vCPUs, reusable: vmf_barrier_wait returns
 * once `count` callers have arrived, 1 in the last to arrive and 0 in the others. It
 * spins with `pause` (there is nothing to sleep on); a vCPU that never arrives keeps the
 * others spinning. Initialise with vmf_barrier_init before any vCPU uses it.
 */
struct vmf_barrier {
    uint32_t count;
    uint32_t waiting;
    uint32_t sense;
    uint32_t reserved;
};
void vmf_barrier_init(struct vmf_barrier *b, uint32_t count);
int vmf_barrier_wait(struct vmf_barrier *b);

/* A small freestanding runtime: what gcc may emit calls to, and console output. */
void *memcpy(void *dst, const void *src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
void *memset(void *dst, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strncmp(const char *a, const char *b, size_t n);
int vmf_snprintf(char *buf, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int vmf_printf(const char *fmt, ...)    /* to the console; %d %u %ld %lu %x %lx %s %c %% */
    __attribute__((format(printf, 1, 2)));
uint64_t vmf_parse_u64(const char *s, size_t len, int *ok);

/* The boot information the VMM passed to _start. */
extern const struct vmf_boot_info *vmf_boot;

/*
 * A guest's entry point: the SDK's _start calls it and exits with its result.
 * Host C code that includes this header for the ABI defines VMF_HOST_BUILD first.
 */
#ifndef VMF_HOST_BUILD
int main(void);
#endif

#endif
