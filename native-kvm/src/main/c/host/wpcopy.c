/*
 * Write-protect copy: how a fork freezes the pages a parent VM wrote since its previous
 * fork without pausing it for the copy (QEMU's background snapshot does the same).
 *
 * At the fork, with the VM paused, the VMM write-protects those pages in the parent's
 * private view through userfaultfd (UFFDIO_WRITEPROTECT) and lets the parent run again.
 * vmfork_wp_copy() then copies the pages into the new image layer (a memfd) in chunks and
 * lifts the protection from each chunk it has copied. When the parent writes a page that
 * is still protected, its thread (a vCPU inside KVM, or the VMM writing guest memory)
 * blocks in the kernel and the fault arrives here as a message; between chunks the loop
 * copies that page first, lifts its protection and so wakes the writer. A page therefore
 * reaches the layer before the parent can change it: the image holds exactly the memory
 * of the instant of the fork.
 *
 * This loop is C rather than Java through JNA because its cost per fault is what a
 * parent pays on its first write to each such page: a read of the message, a 4 KiB
 * pwrite and one ioctl, with nothing else in between.
 *
 * The protection never outlives the call: on every return path (done, stopped, failed)
 * every page it was given is writable again, so the parent is never left blocked.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096ull

/* A userfaultfd for write-protect faults (non-blocking, close-on-exec). Returns the fd or -errno. */
int vmfork_uffd_open(void)
{
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return -errno;
    struct uffdio_api api = {
        .api = UFFD_API,
        .features = UFFD_FEATURE_PAGEFAULT_FLAG_WP | UFFD_FEATURE_WP_HUGETLBFS_SHMEM,
    };
    if (ioctl(fd, UFFDIO_API, &api) != 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

/* An eventfd that vmfork_wp_copy() watches as its stop signal. Returns the fd or -errno. */
int vmfork_stop_fd(void)
{
    int fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    return fd < 0 ? -errno : fd;
}

/* Makes a stop fd readable. Returns 0 or -errno. */
int vmfork_stop_signal(int fd)
{
    uint64_t one = 1;
    return write(fd, &one, sizeof one) == sizeof one ? 0 : -errno;
}

/* Registers [addr, addr+len) for write-protect faults. Returns 0 or -errno. */
int vmfork_uffd_register_wp(int uffd, uint64_t addr, uint64_t len)
{
    struct uffdio_register r = {
        .range = { .start = addr, .len = len },
        .mode = UFFDIO_REGISTER_MODE_WP,
    };
    return ioctl(uffd, UFFDIO_REGISTER, &r) == 0 ? 0 : -errno;
}

/* Sets (wp != 0) or lifts write protection on [addr, addr+len); lifting wakes waiting writers. */
int vmfork_uffd_protect(int uffd, uint64_t addr, uint64_t len, int wp)
{
    struct uffdio_writeprotect w = {
        .range = { .start = addr, .len = len },
        .mode = wp ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
    };
    while (ioctl(uffd, UFFDIO_WRITEPROTECT, &w) != 0) {
        if (errno != EAGAIN)
            return -errno;
    }
    return 0;
}

/* Write-protects each run (pairs of offset, length from src). Returns 0 or -errno, with nothing protected. */
int vmfork_uffd_protect_runs(int uffd, uint64_t src, const int64_t *runs, int nruns)
{
    for (int i = 0; i < nruns; i++) {
        int rc = vmfork_uffd_protect(uffd, src + (uint64_t)runs[2 * i], (uint64_t)runs[2 * i + 1], 1);
        if (rc != 0) {
            for (int j = 0; j < i; j++)
                vmfork_uffd_protect(uffd, src + (uint64_t)runs[2 * j], (uint64_t)runs[2 * j + 1], 0);
            return rc;
        }
    }
    return 0;
}

static int pwrite_all(int fd, const char *p, uint64_t len, uint64_t off)
{
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (uint64_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

struct job {
    int uffd;
    const char *src;
    uint64_t span; /* bytes from src the runs may cover */
    int layer_fd;
    uint8_t *done; /* one byte a page of [src, src+span): copied and writable */
    int64_t faults;
    int64_t fault_pages_copied;
    int64_t max_fault_ns;
};

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Copies one page (if not yet done) and lifts its protection, waking its writer. */
static int serve_page(struct job *j, uint64_t page)
{
    uint64_t off = page * PAGE;
    if (!j->done[page]) {
        int rc = pwrite_all(j->layer_fd, j->src + off, PAGE, off);
        if (rc != 0)
            return rc;
        j->done[page] = 1;
        j->fault_pages_copied++;
    }
    return vmfork_uffd_protect(j->uffd, (uint64_t)(uintptr_t)(j->src + off), PAGE, 0);
}

/* Serves every fault message waiting on the uffd. Returns 0 or -errno. */
static int serve_faults(struct job *j)
{
    struct uffd_msg msgs[16];
    for (;;) {
        ssize_t n = read(j->uffd, msgs, sizeof msgs);
        if (n < 0) {
            if (errno == EAGAIN)
                return 0;
            if (errno == EINTR)
                continue;
            return -errno;
        }
        int64_t t0 = now_ns();
        for (size_t i = 0; i < (size_t)n / sizeof msgs[0]; i++) {
            if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
                continue;
            uint64_t addr = msgs[i].arg.pagefault.address & ~(PAGE - 1);
            uint64_t base = (uint64_t)(uintptr_t)j->src;
            j->faults++;
            if (addr >= base && addr - base < j->span) {
                int rc = serve_page(j, (addr - base) / PAGE);
                if (rc != 0)
                    return rc;
            } else {
                /* Not a page of this job: never leave its writer waiting. */
                vmfork_uffd_protect(j->uffd, addr, PAGE, 0);
            }
        }
        int64_t dt = now_ns() - t0;
        if (dt > j->max_fault_ns)
            j->max_fault_ns = dt;
    }
}

/*
 * Copies the runs (pairs of offset, length, page aligned, inside [0, span)) from src
 * into layer_fd at the same offsets, serving write-protect faults on uffd between chunks
 * of chunk_pages pages, and lifting the protection of each chunk once copied. Stops
 * early, with -ECANCELED, when stop_fd (an eventfd) becomes readable. Always lifts the
 * protection of every run before it returns. stats[0..3]: faults served, pages copied
 * for a fault, pages copied in all, longest fault batch in ns. Returns 0 or -errno.
 */
int vmfork_wp_copy(int uffd, int stop_fd, uint64_t src, uint64_t span, int layer_fd, const int64_t *runs,
                   int nruns, int chunk_pages, int64_t *stats)
{
    struct job j = { .uffd = uffd, .src = (const char *)(uintptr_t)src, .span = span, .layer_fd = layer_fd };
    int rc = 0;
    int64_t copied = 0;
    if (chunk_pages < 1)
        chunk_pages = 1;
    j.done = calloc(span / PAGE + 1, 1);
    if (j.done == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < nruns && rc == 0; i++) {
        uint64_t off = (uint64_t)runs[2 * i];
        uint64_t end = off + (uint64_t)runs[2 * i + 1];
        if (off % PAGE || end % PAGE || end > span || end < off) {
            rc = -EINVAL;
            break;
        }
        while (off < end) {
            struct pollfd p[2] = { { .fd = uffd, .events = POLLIN }, { .fd = stop_fd, .events = POLLIN } };
            if (poll(p, 2, 0) > 0) {
                if (p[1].revents) {
                    rc = -ECANCELED;
                    break;
                }
                if (p[0].revents && (rc = serve_faults(&j)) != 0)
                    break;
            }
            uint64_t chunk_end = off + (uint64_t)chunk_pages * PAGE;
            if (chunk_end > end)
                chunk_end = end;
            /* Copy the pages a fault has not already copied, in contiguous pieces. */
            for (uint64_t a = off; a < chunk_end && rc == 0;) {
                if (j.done[a / PAGE]) {
                    a += PAGE;
                    continue;
                }
                uint64_t b = a;
                while (b < chunk_end && !j.done[b / PAGE])
                    b += PAGE;
                rc = pwrite_all(layer_fd, j.src + a, b - a, a);
                for (uint64_t q = a; q < b; q += PAGE)
                    j.done[q / PAGE] = 1;
                copied += (int64_t)((b - a) / PAGE);
                a = b;
            }
            if (rc == 0)
                rc = vmfork_uffd_protect(uffd, src + off, chunk_end - off, 0);
            off = chunk_end;
        }
    }
    if (rc == 0)
        rc = serve_faults(&j); /* wake anyone who faulted just before the last lift */
out:
    if (rc != 0) {
        /* Whatever happened, the parent must be able to write again. */
        for (int i = 0; i < nruns; i++) {
            uint64_t off = (uint64_t)runs[2 * i];
            uint64_t len = (uint64_t)runs[2 * i + 1];
            if (off % PAGE == 0 && len % PAGE == 0 && off + len <= span && off + len >= off)
                vmfork_uffd_protect(uffd, src + off, len, 0);
        }
    }
    stats[0] = j.faults;
    stats[1] = j.fault_pages_copied;
    stats[2] = copied + j.fault_pages_copied;
    stats[3] = j.max_fault_ns;
    free(j.done);
    return rc;
}
