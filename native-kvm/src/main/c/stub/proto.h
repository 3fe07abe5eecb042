/*
 * The messages between the VMM (host/procvm.c) and vmfork-stub (stub/stub.c) over the
 * stub's fd 3, one end of an AF_UNIX SOCK_SEQPACKET socketpair. Both sides are built
 * from this tree at once, so there is no versioning beyond the magic numbers.
 *
 *   stub -> VMM  READY: one byte, STUB_READY, the stub's first message: its exec is
 *                complete, so /proc/<pid>/maps now shows all that the VMM must have it
 *                unmap. (The VMM's clone returns, CLONE_VFORK, once the exec has switched
 *                to the new address space, before the kernel maps the vDSO and the rest
 *                into it: maps read then miss them.)
 *   VMM -> stub  LAUNCH: struct stub_launch, then nextents extents of 5 int64 (guest
 *                address, length, index into the SCM_RIGHTS fds, file offset, shared 1 /
 *                private 0), then nunmaps ranges of 2 int64 (address, length); the memory
 *                fds ride along as SCM_RIGHTS.
 *   stub -> VMM  REPLY: struct stub_reply, then vcpus int32 thread ids as the stub sees
 *                them (ids in its own PID namespace; index 0 is the main thread). The VMM
 *                receives it with SO_PASSCRED, so the kernel adds the stub's host pid,
 *                from which procvm.c translates the ids through /proc/<pid>/task/<t>/status.
 *                When RAM is private (extent 0 not shared), the stub tracks the guest's
 *                writes for the VMM: a userfaultfd of its address space in asynchronous
 *                write-protect mode, registered over extent 0, rides along as SCM_RIGHTS
 *                (the stub keeps no copy); uffd_status says 0, or the -errno of the step
 *                that failed (the launch goes on without it).
 *   VMM -> stub  GO: one byte, STUB_GO.
 */
#ifndef VMFORK_STUB_PROTO_H
#define VMFORK_STUB_PROTO_H

#include <stdint.h>

#define STUB_LAUNCH_MAGIC 0x484e55414c465056ull /* "VPFLAUNH" */
#define STUB_REPLY_MAGIC 0x594c504552465056ull  /* "VPFREPLY" */
#define STUB_GO 'G'
#define STUB_READY 'R'

/* Linux 6.7's UFFD_FEATURE_WP_ASYNC; the build host's headers may predate it. */
#define STUB_UFFD_FEATURE_WP_ASYNC (1 << 15)

#define STUB_MAX_FDS 250        /* below the kernel's SCM_MAX_FD (253) */
#define STUB_MAX_EXTENTS 1024
#define STUB_MAX_UNMAPS 256
#define STUB_MAX_VCPUS 256

struct stub_launch {
    uint64_t magic;
    uint32_t vcpus;
    uint32_t nfds;
    uint32_t nextents;
    uint32_t nunmaps;
};

struct stub_reply {
    uint64_t magic;
    int32_t status;             /* 0, or -errno of the failed step */
    int32_t index;              /* the failed extent or unmap, or -1 */
    int32_t step;               /* STUB_STEP_*: what failed */
    int32_t ntids;
    int32_t uffd_status;        /* 0: a userfaultfd rides along; -errno: none (why); 1: not asked (shared RAM) */
    int32_t pad;
};

enum { STUB_STEP_OK, STUB_STEP_MESSAGE, STUB_STEP_MMAP, STUB_STEP_UNMAP, STUB_STEP_THREAD };

/* The stub's exit status when the kernel refuses its seccomp filter after GO (the socket is
   closed by then): this bit with the errno in the low seven bits. */
#define STUB_EXIT_SECCOMP 0x80

#define STUB_LAUNCH_MAX_BYTES (sizeof(struct stub_launch) \
    + STUB_MAX_EXTENTS * 5 * sizeof(int64_t) + STUB_MAX_UNMAPS * 2 * sizeof(int64_t))

#endif
