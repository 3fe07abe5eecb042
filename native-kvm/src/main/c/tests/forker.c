/*
 * forker: a test guest for fork. It initialises a buffer whose contents a child must
 * see, then serves requests; "fork N [TYPE]" forks. Children announce themselves with an
 * unsolicited message and then serve requests like their parent.
 *
 *   fork N [TYPE]   parent replies "parent launched=<n> ids=<id,..> errs=<e,..>";
 *                   each child sends "child index=<i> id=<id> parent=<p> gen=<g> type=<t>"
 *   sum             "sum=<checksum of the initialised buffer>"
 *   write K V       buf[K] = V, "ok"       read K   "<buf[K]>"
 *   touch MIB       writes one word per page of MIB MiB of the heap, "touched <MIB>"
 *   readall MIB     reads one word per page of MIB MiB of the heap, "read <MIB> <sum>"
 *   forkloop        forks one copy at a time until the VMM refuses, "forked=<n> err=<e>"
 *                   (children go back to serving requests)
 *   forkstress N    forks one copy N times, checking every result: a child must see
 *                   status 0, role child, index 0 and its own id, and exits 0 (98 if
 *                   not); the parent must see 1 or an error and role parent (else it
 *                   exits 99). A copy made from outside meanwhile (its id is not the
 *                   parent's) checks the same and exits 0 after its first call.
 *                   The parent replies "stressed=<n> launched=<m>".
 *   rfork N [TYPE]  forks with VMF_FORK_REMOTE (copies placed on other hosts are accepted);
 *                   the parent replies "parent launched=<n> ids=<id,..> errs=<e,..>
 *                   now=<s,..> waited=<s:vm,..>": per copy FORK_STATUS of its ticket right
 *                   after the fork (not waiting) and then waiting up to 10 s ("-" for a
 *                   copy that is not remote); children announce themselves as with fork,
 *                   followed by " t=<CLOCK monotonic_ns read first thing after FORK>"
 *   born            "born=<t>": an rfork copy's t (0 in any other VM)
 *   hcloop N        makes N VCPU_INDEX hypercalls back to back, "looped <N>" (bench hypercall)
 *   fill MIB        rewrites the first MIB MiB of the heap with fresh pseudo-random words
 *                   (incompressible, different at every call), "filled <MIB>"
 *   forkw MIB       forks one copy; the parent at once adds 1 to one word per page of the
 *                   first MIB MiB of the heap, last page first, timed, and replies "parent launched=<n>
 *                   ids=<id> errs=<e> wpage_ns=<ns per page>": its first write to each page
 *                   after a fork (the child announces itself as with fork)
 *   wtime MIB       the same timed write without a fork, "wpage_ns=<ns per page>" (in a
 *                   child: its first write to pages it shares with its image)
 *   fstatus T MS    FORK_STATUS of ticket T, waiting up to MS ms: "status=<s> vm=<id>" or
 *                   "error=<rc>"; sent as a reply, or unsolicited in a copy that was made
 *                   while it waited (and re-issued the call)
 *   id, rand, stop  as warm-worker
 */
#include <vmfork.h>

#define BUF_WORDS (1u << 20) /* 8 MiB of initialised state */

static uint64_t *buf;
static uint64_t *heap;
static uint64_t heap_words;
static char req[4096];
static char out[4096];

static uint64_t checksum(void)
{
    uint64_t s = 0;
    for (uint32_t i = 0; i < BUF_WORDS; i++)
        s = s * 31 + buf[i];
    return s;
}

static void reply(const char *s)
{
    if (vmf_send(s, strlen(s)) < 0)
        vmf_exit(5);
}

static int parse_words(const char *s, size_t len, uint64_t *w, int max)
{
    int n = 0;
    size_t i = 0;
    while (i < len && n < max) {
        while (i < len && s[i] == ' ')
            i++;
        size_t j = i;
        while (j < len && s[j] != ' ')
            j++;
        if (j == i)
            break;
        int ok;
        w[n++] = vmf_parse_u64(s + i, j - i, &ok);
        if (!ok)
            return -1;
        i = j;
    }
    return n;
}

static void announce_child_at(const struct vmf_fork *f, uint64_t t)
{
    struct vmf_identity id;
    vmf_identity(&id);
    size_t o = (size_t)vmf_snprintf(out, sizeof out, "child index=%u id=%lu parent=%lu gen=%lu type=%u", f->index,
                                    (unsigned long)f->vm_id, (unsigned long)id.parent_id,
                                    (unsigned long)id.fork_generation, id.vm_type);
    if (t)
        vmf_snprintf(out + o, sizeof out - o, " t=%lu", (unsigned long)t);
    reply(out);
}

static void announce_child(const struct vmf_fork *f)
{
    announce_child_at(f, 0);
}

static uint64_t ids[256];
static uint64_t born; /* an rfork copy's CLOCK reading right after FORK returned in it */
static int64_t errs[256];

/* Returns 1 in a child, 0 in the parent. */
static int do_fork(uint32_t count, uint32_t type, int64_t *ret)
{
    struct vmf_fork f = { .vm_type = type, .count = count, .ids = (uint64_t)(uintptr_t)ids,
                          .errors = (uint64_t)(uintptr_t)errs };
    *ret = vmf_fork(&f);
    if (*ret >= 0 && f.role == VMF_FORK_CHILD) {
        announce_child(&f);
        return 1;
    }
    return 0;
}

/*
 * Adds 1 to one word per page of the first MIB MiB of the heap, from the last page down
 * (after a fork, the VMM's background copy starts at the bottom: going down meets the
 * pages it has not reached yet); returns ns per page.
 */
__attribute__((noinline)) static uint64_t timed_write(uint64_t mib)
{
    struct vmf_clock a, b;
    uint64_t pages = mib << 8;
    vmf_clock(&a);
    for (uint64_t p = pages; p-- > 0;)
        heap[p * 512] += 1;
    vmf_clock(&b);
    return pages ? (b.monotonic_ns - a.monotonic_ns) / pages : 0;
}

/* FORK with VMF_FORK_REMOTE, then the FORK_STATUS of every remote copy (see "rfork"). */
__attribute__((noinline)) static void remote_fork(uint32_t count, uint32_t type)
{
    struct vmf_fork f = { .vm_type = type, .count = count, .flags = VMF_FORK_REMOTE,
                          .ids = (uint64_t)(uintptr_t)ids, .errors = (uint64_t)(uintptr_t)errs };
    int64_t ret = vmf_fork(&f);
    if (ret >= 0 && f.role == VMF_FORK_CHILD) {
        /* The copy's first act: read the host's clock (CLOCK_MONOTONIC, shared by every
           process of a machine), so that a benchmark can tell when it began to run. */
        struct vmf_clock c;
        vmf_clock(&c);
        born = c.monotonic_ns;
        announce_child_at(&f, c.monotonic_ns);
        return;
    }
    if (ret < 0) {
        vmf_snprintf(out, sizeof out, "parent error=%ld", (long)ret);
        reply(out);
        return;
    }
    size_t o = (size_t)vmf_snprintf(out, sizeof out, "parent launched=%ld ids=", (long)ret);
    for (uint32_t i = 0; i < count && o < sizeof out - 64; i++)
        o += (size_t)vmf_snprintf(out + o, sizeof out - o, "%s%lu", i ? "," : "", (unsigned long)ids[i]);
    o += (size_t)vmf_snprintf(out + o, sizeof out - o, " errs=");
    for (uint32_t i = 0; i < count && o < sizeof out - 64; i++)
        o += (size_t)vmf_snprintf(out + o, sizeof out - o, "%s%ld", i ? "," : "", (long)errs[i]);
    o += (size_t)vmf_snprintf(out + o, sizeof out - o, " now=");
    for (uint32_t i = 0; i < count && o < sizeof out - 64; i++) {
        struct vmf_fork_status st = { .ticket = ids[i], .wait_ns = 0 };
        if (errs[i] != VMF_EINPROGRESS) {
            o += (size_t)vmf_snprintf(out + o, sizeof out - o, "%s-", i ? "," : "");
            continue;
        }
        int64_t r = vmf_fork_status(&st);
        o += (size_t)vmf_snprintf(out + o, sizeof out - o, "%s%ld", i ? "," : "", (long)(r < 0 ? r : st.status));
    }
    o += (size_t)vmf_snprintf(out + o, sizeof out - o, " waited=");
    for (uint32_t i = 0; i < count && o < sizeof out - 64; i++) {
        struct vmf_fork_status st = { .ticket = ids[i], .wait_ns = VMF_FORK_STATUS_WAIT_MAX };
        if (errs[i] != VMF_EINPROGRESS) {
            o += (size_t)vmf_snprintf(out + o, sizeof out - o, "%s-", i ? "," : "");
            continue;
        }
        int64_t r = vmf_fork_status(&st);
        if (r < 0)
            o += (size_t)vmf_snprintf(out + o, sizeof out - o, "%serror%ld", i ? "," : "", (long)r);
        else
            o += (size_t)vmf_snprintf(out + o, sizeof out - o, "%s%ld:%lu", i ? "," : "", (long)st.status,
                                      (unsigned long)st.vm_id);
    }
    reply(out);
}

/* Rewrites the first MIB MiB of the heap with fresh pseudo-random words (see "fill"). */
__attribute__((noinline)) static void fill(uint64_t mib)
{
    static uint64_t seed = 0x9e3779b97f4a7c15ull;
    struct vmf_clock c;
    vmf_clock(&c);
    uint64_t x = (seed += c.monotonic_ns) | 1;
    for (uint64_t i = 0; i < mib * (1u << 17); i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        heap[i] = x;
    }
    vmf_snprintf(out, sizeof out, "filled %lu", (unsigned long)mib);
    reply(out);
}

/* FORK_STATUS of one ticket (see "fstatus"). */
__attribute__((noinline)) static void fork_status(uint64_t ticket, uint64_t wait_ms)
{
    struct vmf_fork_status st = { .ticket = ticket, .wait_ns = wait_ms * 1000000u };
    int64_t r = vmf_fork_status(&st);
    if (r < 0)
        vmf_snprintf(out, sizeof out, "error=%ld", (long)r);
    else
        vmf_snprintf(out, sizeof out, "status=%ld vm=%lu", (long)st.status, (unsigned long)st.vm_id);
    reply(out);
}

/* FORK N times from the request loop, checking every result (see "forkstress"). */
/* Not inlined: main()'s code, and so what the snapshot tests capture of it, stays as it was. */
__attribute__((noinline)) static void fork_stress(uint64_t n)
{
    struct vmf_identity me;
    vmf_identity(&me);
    uint64_t launched = 0;
    for (uint64_t i = 0; i < n; i++) {
        struct vmf_fork f = { .vm_type = 0, .count = 1, .ids = (uint64_t)(uintptr_t)ids,
                              .errors = (uint64_t)(uintptr_t)errs };
        int64_t ret = vmf_fork(&f);
        struct vmf_identity now;
        vmf_identity(&now);
        if (f.role == VMF_FORK_CHILD) {
            int ok = ret == 0 && f.index == 0 && f.vm_id == now.vm_id && now.vm_id != me.vm_id;
            vmf_exit(ok ? 0 : 98);
        }
        /* vm_id is the caller's: the original's, or, in a copy made from outside that
           re-issued this FORK, the copy's own. */
        int ok = f.role == VMF_FORK_PARENT && (ret == 1 || ret < 0)
                 && (ret < 0 || f.vm_id == me.vm_id || f.vm_id == now.vm_id);
        if (!ok)
            vmf_exit(99);
        if (now.vm_id != me.vm_id)
            vmf_exit(0); /* a copy made from outside: checked, done */
        if (ret == 1)
            launched++;
    }
    vmf_snprintf(out, sizeof out, "stressed=%lu launched=%lu", (unsigned long)n, (unsigned long)launched);
    reply(out);
}

int main(void)
{
    buf = (uint64_t *)(uintptr_t)vmf_boot->heap_start;
    heap = buf + BUF_WORDS;
    if ((uint64_t)(uintptr_t)heap > vmf_boot->heap_end)
        return 3;
    heap_words = (vmf_boot->heap_end - (uint64_t)(uintptr_t)heap) / 8;
    for (uint32_t i = 0; i < BUF_WORDS; i++)
        buf[i] = (uint64_t)i * 2654435761u + 1;
    vmf_printf("forker: ready, sum=%lu\n", (unsigned long)checksum());
    vmf_ready();

    for (;;) {
        size_t len = 0;
        int64_t r = vmf_recv(req, sizeof req - 1, 0, &len);
        if (r == VMF_ECLOSED)
            return 0;
        if (r < 0)
            return 4;
        req[len] = 0;
        uint64_t w[3];
        if (len >= 5 && strncmp(req, "fork ", 5) == 0) {
            int n = parse_words(req + 5, len - 5, w, 2);
            if (n < 1 || w[0] == 0 || w[0] > 256) {
                reply("error: bad count");
                continue;
            }
            int64_t ret;
            if (do_fork((uint32_t)w[0], n > 1 ? (uint32_t)w[1] : 0, &ret))
                continue;
            if (ret < 0) {
                vmf_snprintf(out, sizeof out, "parent error=%ld", (long)ret);
                reply(out);
                continue;
            }
            size_t o = (size_t)vmf_snprintf(out, sizeof out, "parent launched=%ld ids=", (long)ret);
            for (uint64_t i = 0; i < w[0] && o < sizeof out - 64; i++)
                o += (size_t)vmf_snprintf(out + o, sizeof out - o, "%s%lu", i ? "," : "", (unsigned long)ids[i]);
            o += (size_t)vmf_snprintf(out + o, sizeof out - o, " errs=");
            for (uint64_t i = 0; i < w[0] && o < sizeof out - 32; i++)
                o += (size_t)vmf_snprintf(out + o, sizeof out - o, "%s%ld", i ? "," : "", (long)errs[i]);
            reply(out);
        } else if (len > 6 && strncmp(req, "forkw ", 6) == 0) {
            if (parse_words(req + 6, len - 6, w, 1) != 1 || w[0] * (1u << 17) > heap_words) {
                reply("error: bad size");
                continue;
            }
            uint64_t mib = w[0];
            int64_t ret;
            if (do_fork(1, 0, &ret))
                continue;
            uint64_t ns = ret >= 0 ? timed_write(mib) : 0;
            vmf_snprintf(out, sizeof out, "parent launched=%ld ids=%lu errs=%ld wpage_ns=%lu", (long)ret,
                         (unsigned long)ids[0], (long)errs[0], (unsigned long)ns);
            reply(out);
        } else if (len > 6 && strncmp(req, "wtime ", 6) == 0) {
            if (parse_words(req + 6, len - 6, w, 1) != 1 || w[0] * (1u << 17) > heap_words) {
                reply("error: bad size");
                continue;
            }
            vmf_snprintf(out, sizeof out, "wpage_ns=%lu", (unsigned long)timed_write(w[0]));
            reply(out);
        } else if (len >= 6 && strncmp(req, "rfork ", 6) == 0) {
            int n = parse_words(req + 6, len - 6, w, 2);
            if (n < 1 || w[0] == 0 || w[0] > 256) {
                reply("error: bad count");
                continue;
            }
            remote_fork((uint32_t)w[0], n > 1 ? (uint32_t)w[1] : 0);
        } else if (len == 4 && strncmp(req, "born", 4) == 0) {
            vmf_snprintf(out, sizeof out, "born=%lu", (unsigned long)born);
            reply(out);
        } else if (len > 5 && strncmp(req, "fill ", 5) == 0) {
            if (parse_words(req + 5, len - 5, w, 1) != 1 || w[0] * (1u << 17) > heap_words) {
                reply("error: bad size");
                continue;
            }
            fill(w[0]);
        } else if (len > 8 && strncmp(req, "fstatus ", 8) == 0) {
            if (parse_words(req + 8, len - 8, w, 2) != 2) {
                reply("error: bad fstatus");
                continue;
            }
            fork_status(w[0], w[1]);
        } else if (len == 8 && strncmp(req, "forkloop", 8) == 0) {
            uint64_t forked = 0;
            int64_t ret = 0;
            for (;;) {
                if (do_fork(1, 0, &ret))
                    break; /* a child: back to serving */
                if (ret != 1) {
                    vmf_snprintf(out, sizeof out, "forked=%lu err=%ld", (unsigned long)forked,
                                 (long)(ret < 0 ? ret : errs[0]));
                    reply(out);
                    break;
                }
                forked++;
            }
        } else if (len > 11 && strncmp(req, "forkstress ", 11) == 0) {
            if (parse_words(req + 11, len - 11, w, 1) != 1) {
                reply("error: bad count");
                continue;
            }
            fork_stress(w[0]);
        } else if (len == 3 && strncmp(req, "sum", 3) == 0) {
            vmf_snprintf(out, sizeof out, "sum=%lu", (unsigned long)checksum());
            reply(out);
        } else if (len > 6 && strncmp(req, "write ", 6) == 0) {
            if (parse_words(req + 6, len - 6, w, 2) != 2 || w[0] >= BUF_WORDS) {
                reply("error: bad write");
                continue;
            }
            buf[w[0]] = w[1];
            reply("ok");
        } else if (len > 5 && strncmp(req, "read ", 5) == 0) {
            if (parse_words(req + 5, len - 5, w, 1) != 1 || w[0] >= BUF_WORDS) {
                reply("error: bad read");
                continue;
            }
            vmf_snprintf(out, sizeof out, "%lu", (unsigned long)buf[w[0]]);
            reply(out);
        } else if (len > 6 && strncmp(req, "touch ", 6) == 0) {
            if (parse_words(req + 6, len - 6, w, 1) != 1 || w[0] * (1u << 17) > heap_words) {
                reply("error: bad size");
                continue;
            }
            for (uint64_t i = 0; i < w[0] * (1u << 17); i += 512)
                heap[i] = i + 1;
            vmf_snprintf(out, sizeof out, "touched %lu", (unsigned long)w[0]);
            reply(out);
        } else if (len > 8 && strncmp(req, "readall ", 8) == 0) {
            if (parse_words(req + 8, len - 8, w, 1) != 1 || w[0] * (1u << 17) > heap_words) {
                reply("error: bad size");
                continue;
            }
            uint64_t x = 0;
            for (uint64_t i = 0; i < w[0] * (1u << 17); i += 512)
                x += heap[i];
            vmf_snprintf(out, sizeof out, "read %lu %lu", (unsigned long)w[0], (unsigned long)x);
            reply(out);
        } else if (len == 2 && strncmp(req, "id", 2) == 0) {
            struct vmf_identity id;
            vmf_identity(&id);
            vmf_snprintf(out, sizeof out, "vm=%lu parent=%lu gen=%lu host=%lu type=%u", (unsigned long)id.vm_id,
                         (unsigned long)id.parent_id, (unsigned long)id.fork_generation, (unsigned long)id.host_id,
                         id.vm_type);
            reply(out);
        } else if (len == 4 && strncmp(req, "rand", 4) == 0) {
            uint8_t b[8];
            vmf_entropy(b, sizeof b);
            size_t o = 0;
            for (int i = 0; i < 8; i++)
                o += (size_t)vmf_snprintf(out + o, sizeof out - o, "%02x", b[i]);
            reply(out);
        } else if (len > 7 && strncmp(req, "hcloop ", 7) == 0) {
            uint64_t w[1];
            if (parse_words(req + 7, len - 7, w, 1) != 1) {
                reply("error: hcloop N");
                continue;
            }
            for (uint64_t i = 0; i < w[0]; i++)
                vmf_hypercall(VMF_HC_VCPU_INDEX, 0);
            vmf_snprintf(out, sizeof out, "looped %lu", (unsigned long)w[0]);
            reply(out);
        } else if (len == 4 && strncmp(req, "stop", 4) == 0) {
            reply("bye");
            return 0;
        } else {
            reply("error: unknown request");
        }
    }
}
