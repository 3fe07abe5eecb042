/*
 * smp: a test guest for several vCPUs (docs/hypercalls.md, "Several vCPUs"). vCPU 0
 * serves requests; each secondary vCPU it starts runs worker(), which counts in its own
 * lane of shared memory as fast as it can:
 *
 *   n++; ring[i][n % RING] = n; lane_a[i] = n; lane_b[i] = n;
 *
 * with n in a register, lane_a and lane_b on two different pages and the ring on a third.
 * At the top of every turn it checks lane_a[i] == lane_b[i] == n (errors[i] counts
 * misses). So memory and the vCPU's registers must agree at every instruction boundary,
 * and a fork child must get both from the same instant: registers captured earlier than
 * memory, or pages of the parent's later writes in the child, show up as a miss, or as a
 * ring entry newer than n.
 *
 * Requests (one whole reply each):
 *   start K       starts vCPUs 1..K-1 that are not running, "started <mask>"
 *   probe I       VCPU_START of vCPU I with worker: "probe <rc>" (0: it was not running)
 *   fork          vCPU 0 counts its own lane for a while, reads every lane (pre), calls
 *                 FORK for one copy, reads them again (post) and waits until every
 *                 running lane has moved on by PROGRESS: "parent rc=<rc> id=<child>
 *                 pre=<l0,..> post=<l0,..> progress=<ok|stuck> errors=<n>". The child's
 *                 vCPU 0 waits until each running secondary has seen that it is in a
 *                 child (the fork block's role, which the VMM writes before the child
 *                 runs) at the top of its next turn, where it records its n (start) and
 *                 checks its ring: every entry <= n, and the entry of n itself == n. Then
 *                 it waits for progress, stops its secondaries, writes the marker (its
 *                 own id) and announces, unsolicited: "child id=<id> start=<l1,..>
 *                 pre=<l0,..> mine=<ok|bad> ring=<ok|bad> errors=<n> progress=<ok|stuck>"
 *                 (mine: vCPU 0's own lane is what it had counted to). Then it serves
 *                 requests like its parent.
 *   progress      waits until every running lane has moved on by PROGRESS, "progress ok"
 *                 or "progress stuck"
 *   stop          stops every running secondary (they return: VCPU_STOP), freezes the
 *                 lanes, writes the marker: "stopped <l0,..>"
 *   check         "check ok" if the marker is this VM's id and the lanes are as frozen,
 *                 else "check bad marker=<m> ..."
 *   errors        "errors=<n> running=<mask>"
 *   badstart      VCPU_START / VCPU_STOP / VCPU_INDEX misuse from vCPU 0, one result per
 *                 case (see the array below): "rc <r0> <r1> ..."
 *   info          "vcpus=<boot info vcpu_count> identity=<IDENTITY vcpu_count> index=<VCPU_INDEX>"
 *   hammer R      (send it, do not request it: the guest's SENDs are all unsolicited then)
 *                 starts every secondary, and every vCPU, 0 too, does R rounds of
 *                 CONSOLE_WRITE "h<i>.<k>\n", IDENTITY, ENTROPY, CLOCK, SEND "h<i>.<k>",
 *                 an atomic add, an increment under a CAS spin lock and a barrier of
 *                 all vCPUs (after which every vCPU's add of the round must be seen, and
 *                 which returns 1 in exactly one vCPU a round); vCPU 0 then sends
 *                 "hammer ok total=<n>" or "hammer bad ..."
 *   sfork         vCPU nvcpus-1 calls FORK (one copy) while vCPU 0 spins: in the parent
 *                 "sfork rc=<rc> role=p id=<child>", in the child (unsolicited)
 *                 "sfork rc=0 role=c id=<its id>"
 *   dfork         vCPUs 1 and 2 meet at a barrier and both call FORK (one copy each) at
 *                 once; vCPU 0 waits for both and answers "dfork <r1><r2> id=<vm>",
 *                 r = p or c, each VM (children unsolicited)
 *   recvers       (send it) starts every secondary in a loop of RECV, each message M
 *                 answered by SEND "r<i> M" (unsolicited), until it receives "quit";
 *                 vCPU 0 spins meanwhile, then sends "recvers done"
 *   regs I        starts vCPU I (not running) at an assembly entry that saves every
 *                 general register and RFLAGS as VCPU_START left them, then stops:
 *                 "regs rdi=.. rsi=.. rsp=.. arg=.. top=.. others=<OR of the other
 *                 GPRs> rflags=.."
 *   exit          exits 0 from vCPU 0 while the secondaries run
 *   wexit         a secondary calls EXIT(7) (the VM ends, every vCPU with it)
 *   sweep MIB     (before "start") lane 1 also writes its count n into the first word of
 *                 page n % P of a MIB MiB region after the stacks (P pages), before its
 *                 lane words: every page it sweeps is dirty again at every fork, so a fork
 *                 write-protects them and copies them while lane 1 goes on writing. A child
 *                 then checks at its start n that every page holds the last count written
 *                 there up to n, no older and no newer, and adds " sweep=<ok|bad <pages>>"
 *                 to its announcement: "sweeping <P>"
 */
#include <vmfork.h>

#define MAXV 8
#define RING 512
#define STACK_BYTES (64u << 10)
#define PROGRESS 1000u
#define WAIT_NS 20000000000ll /* 20 s */

struct lanes {
    uint64_t v[MAXV];
} __attribute__((aligned(4096)));

static struct lanes lane_a, lane_b;
static uint64_t ring[MAXV][RING] __attribute__((aligned(4096)));

/* Control words, on a page of their own. */
static struct {
    uint64_t run;            /* workers turn while it is 1                        */
    uint64_t running[MAXV];  /* set by vCPU 0 when it started the lane's vCPU      */
    uint64_t done[MAXV];     /* set by a worker as it returns                     */
    uint64_t errors[MAXV];   /* misses of the lane check                           */
    uint64_t recorded[MAXV]; /* a worker saw it is in a fork child (start, ring)  */
    uint64_t start[MAXV];
    uint64_t ring_bad[MAXV];
    uint64_t marker;         /* the id of the VM that last wrote it               */
    uint64_t frozen[MAXV];
} __attribute__((aligned(4096))) ctl;

static struct vmf_fork fb; /* the FORK block: secondaries read its role */
static uint64_t *sweep_buf;   /* lane 1's swept region ("sweep"), or none        */
static uint64_t sweep_pages;
static uint64_t sweep_bad;    /* pages a child found not as they were at its start */
static uint64_t fork_ids[1];
static int64_t fork_errs[1];
static uint32_t nvcpus;
static uint8_t *stacks;
static char req[512];
static char out[4096];

static void reply(const char *s)
{
    if (vmf_send(s, strlen(s)) < 0)
        vmf_exit(5);
}

static int64_t now_ns(void)
{
    struct vmf_clock c;
    vmf_clock(&c);
    return c.monotonic_ns;
}

/* One turn of lane i, n being the lane's count in a register. */
static inline uint64_t turn(uint32_t i, uint64_t n)
{
    if (vmf_atomic_load(&lane_a.v[i]) != n || vmf_atomic_load(&lane_b.v[i]) != n) {
        vmf_atomic_add(&ctl.errors[i], 1);
        n = vmf_atomic_load(&lane_a.v[i]);
    }
    n++;
    vmf_atomic_store(&ring[i][n % RING], n);
    if (i == 1 && sweep_pages)
        vmf_atomic_store(&sweep_buf[(n % sweep_pages) * 512], n);
    vmf_atomic_store(&lane_a.v[i], n);
    vmf_atomic_store(&lane_b.v[i], n);
    return n;
}

/* In a fork child, first thing at the top of a turn: where the lane starts, and its ring. */
static void record_start(uint32_t i, uint64_t n)
{
    uint64_t bad = 0;
    for (uint32_t k = 0; k < RING; k++)
        if (vmf_atomic_load(&ring[i][k]) > n)
            bad++;
    if (n > 0 && vmf_atomic_load(&ring[i][n % RING]) != n)
        bad++;
    if (i == 1 && sweep_pages) {
        /* Page p holds the largest m <= n with m % P == p (0 if none): the sweep up to n. */
        uint64_t wrong = 0;
        for (uint64_t p = 0; p < sweep_pages; p++) {
            uint64_t want = n >= p ? n - (n - p) % sweep_pages : 0;
            if (vmf_atomic_load(&sweep_buf[p * 512]) != want)
                wrong++;
        }
        sweep_bad = wrong;
    }
    ctl.start[i] = n;
    ctl.ring_bad[i] = bad;
    vmf_atomic_store(&ctl.recorded[i], 1);
}

static void worker(void *arg)
{
    uint32_t i = (uint32_t)(uintptr_t)arg;
    if (vmf_vcpu_index() != i)
        vmf_atomic_add(&ctl.errors[i], 1000000);
    uint64_t n = vmf_atomic_load(&lane_a.v[i]);
    vmf_atomic_store(&lane_b.v[i], n);
    while (vmf_atomic_load(&ctl.run)) {
        if (__atomic_load_n(&fb.role, __ATOMIC_ACQUIRE) == VMF_FORK_CHILD && !vmf_atomic_load(&ctl.recorded[i]))
            record_start(i, n);
        n = turn(i, n);
    }
    vmf_atomic_store(&ctl.done[i], 1);
}

static void *stack_of(uint32_t i)
{
    return stacks + (uint64_t)i * STACK_BYTES;
}

static int64_t start_one(uint32_t i)
{
    vmf_atomic_store(&ctl.done[i], 0);
    int64_t rc = vmf_vcpu_start(i, worker, (void *)(uintptr_t)i, stack_of(i), STACK_BYTES);
    if (rc == 0)
        vmf_atomic_store(&ctl.running[i], 1);
    return rc;
}

static uint32_t running_mask(void)
{
    uint32_t m = 0;
    for (uint32_t i = 1; i < nvcpus; i++)
        if (vmf_atomic_load(&ctl.running[i]))
            m |= 1u << i;
    return m;
}

static uint64_t errors_sum(void)
{
    uint64_t e = 0;
    for (uint32_t i = 0; i < nvcpus; i++)
        e += vmf_atomic_load(&ctl.errors[i]);
    return e;
}

/* Waits until every running lane is at least `from[i] + PROGRESS`; 1 if all got there. */
static int await_progress(const uint64_t *from)
{
    int64_t deadline = now_ns() + WAIT_NS;
    for (;;) {
        int all = 1;
        for (uint32_t i = 1; i < nvcpus; i++)
            if (vmf_atomic_load(&ctl.running[i]) && vmf_atomic_load(&lane_a.v[i]) < from[i] + PROGRESS)
                all = 0;
        if (all)
            return 1;
        if (now_ns() > deadline)
            return 0;
        for (int k = 0; k < 1000; k++)
            vmf_cpu_relax();
    }
}

static int progress_now(void)
{
    uint64_t from[MAXV];
    for (uint32_t i = 0; i < nvcpus; i++)
        from[i] = vmf_atomic_load(&lane_a.v[i]);
    return await_progress(from);
}

static void stop_workers(void)
{
    vmf_atomic_store(&ctl.run, 0);
    for (uint32_t i = 1; i < nvcpus; i++) {
        if (!vmf_atomic_load(&ctl.running[i]))
            continue;
        while (!vmf_atomic_load(&ctl.done[i]))
            vmf_cpu_relax();
        vmf_atomic_store(&ctl.running[i], 0);
    }
    struct vmf_identity id;
    vmf_identity(&id);
    for (uint32_t i = 0; i < nvcpus; i++)
        ctl.frozen[i] = vmf_atomic_load(&lane_a.v[i]);
    vmf_atomic_store(&ctl.marker, id.vm_id);
}

static size_t put_list(size_t o, const char *name, const uint64_t *v, uint32_t from)
{
    o += (size_t)vmf_snprintf(out + o, sizeof out - o, " %s=", name);
    for (uint32_t i = from; i < nvcpus; i++)
        o += (size_t)vmf_snprintf(out + o, sizeof out - o, i > from ? ",%lu" : "%lu", (unsigned long)v[i]);
    return o;
}

static void child_after_fork(uint64_t mine, const uint64_t *pre)
{
    uint64_t first[MAXV];
    for (uint32_t i = 0; i < nvcpus; i++)
        first[i] = vmf_atomic_load(&lane_a.v[i]);
    int mine_ok = vmf_atomic_load(&lane_a.v[0]) == mine && vmf_atomic_load(&lane_b.v[0]) == mine;
    int64_t deadline = now_ns() + WAIT_NS;
    int recorded = 1;
    for (uint32_t i = 1; i < nvcpus; i++) {
        while (vmf_atomic_load(&ctl.running[i]) && !vmf_atomic_load(&ctl.recorded[i])) {
            if (now_ns() > deadline) {
                recorded = 0;
                break;
            }
            vmf_cpu_relax();
        }
    }
    uint64_t ring_bad = 0;
    for (uint32_t i = 1; i < nvcpus; i++)
        ring_bad += ctl.ring_bad[i];
    uint64_t from[MAXV] = { 0 };
    for (uint32_t i = 1; i < nvcpus; i++)
        from[i] = ctl.start[i];
    int progressed = recorded && await_progress(from);
    uint64_t errors = errors_sum();
    stop_workers();
    struct vmf_identity id;
    vmf_identity(&id);
    size_t o = (size_t)vmf_snprintf(out, sizeof out, "child id=%lu", (unsigned long)id.vm_id);
    o = put_list(o, "start", ctl.start, 1);
    o = put_list(o, "pre", pre, 0);
    o = put_list(o, "first", first, 0);
    o += (size_t)vmf_snprintf(out + o, sizeof out - o, " mine=%s ring=%s errors=%lu progress=%s",
                               mine_ok ? "ok" : "bad", recorded && ring_bad == 0 ? "ok" : "bad", (unsigned long)errors,
                               progressed ? "ok" : "stuck");
    if (sweep_pages) {
        if (recorded && sweep_bad == 0)
            vmf_snprintf(out + o, sizeof out - o, " sweep=ok");
        else
            vmf_snprintf(out + o, sizeof out - o, " sweep=bad %lu", (unsigned long)sweep_bad);
    }
    reply(out);
}

/* Not inlined, so that `pre`, `mine` and the FORK call live in one frame. */
__attribute__((noinline)) static void do_fork(void)
{
    uint64_t n = vmf_atomic_load(&lane_a.v[0]);
    for (int k = 0; k < 100000; k++)
        n = turn(0, n);
    uint64_t mine = n;
    uint64_t pre[MAXV], post[MAXV];
    for (uint32_t i = 0; i < nvcpus; i++) {
        vmf_atomic_store(&ctl.recorded[i], 0);
        pre[i] = vmf_atomic_load(&lane_a.v[i]);
    }
    fb = (struct vmf_fork){ .count = 1, .ids = (uint64_t)(uintptr_t)fork_ids,
                            .errors = (uint64_t)(uintptr_t)fork_errs, .role = 0xffffffffu };
    int64_t rc = vmf_fork(&fb);
    if (rc >= 0 && fb.role == VMF_FORK_CHILD) {
        child_after_fork(mine, pre);
        return;
    }
    for (uint32_t i = 0; i < nvcpus; i++)
        post[i] = vmf_atomic_load(&lane_a.v[i]);
    int progressed = await_progress(post);
    size_t o = (size_t)vmf_snprintf(out, sizeof out, "parent rc=%ld id=%lu", (long)rc, (unsigned long)fork_ids[0]);
    o = put_list(o, "pre", pre, 0);
    o = put_list(o, "post", post, 0);
    vmf_snprintf(out + o, sizeof out - o, " progress=%s errors=%lu", progressed ? "ok" : "stuck",
                 (unsigned long)errors_sum());
    reply(out);
}

static void bad_start(void)
{
    uint64_t mem = vmf_boot->memory_size;
    uint64_t entry = (uint64_t)(uintptr_t)worker;
    uint64_t top = (uint64_t)(uintptr_t)stack_of(nvcpus - 1) + STACK_BYTES;
    struct vmf_vcpu_start cases[] = {
        { .index = 0, .entry = entry, .stack_top = top },                        /* vCPU 0: EINVAL       */
        { .index = nvcpus, .entry = entry, .stack_top = top },                   /* no such vCPU: EINVAL */
        { .index = 0xffffffffu, .entry = entry, .stack_top = top },              /* EINVAL               */
        { .index = 1, .flags = 1, .entry = entry, .stack_top = top },            /* flags: EINVAL        */
        { .index = 1, .entry = mem, .stack_top = top },                          /* entry: EFAULT        */
        { .index = 1, .entry = ~0ull, .stack_top = top },                        /* entry: EFAULT        */
        { .index = 1, .entry = entry, .stack_top = mem + 16 },                   /* stack: EFAULT        */
        { .index = 1, .entry = entry, .stack_top = VMF_IMAGE_MIN_GPA },          /* stack: EFAULT        */
        { .index = 1, .entry = entry, .stack_top = 8 },                          /* stack: EFAULT        */
        { .index = 1, .entry = entry, .stack_top = top - 8 },                    /* alignment: EINVAL    */
    };
    size_t o = (size_t)vmf_snprintf(out, sizeof out, "rc");
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        o += (size_t)vmf_snprintf(out + o, sizeof out - o, " %ld",
                                  (long)vmf_hypercall(VMF_HC_VCPU_START, (uint64_t)(uintptr_t)&cases[k]));
    /* The block itself outside RAM, or partly. */
    o += (size_t)vmf_snprintf(out + o, sizeof out - o, " %ld", (long)vmf_hypercall(VMF_HC_VCPU_START, mem - 16));
    /* A vCPU that runs (vCPU 1 after `start`): EINVAL, its registers untouched. */
    o += (size_t)vmf_snprintf(out + o, sizeof out - o, " %ld", (long)start_one(1));
    /* VCPU_STOP on vCPU 0: EINVAL; VCPU_INDEX on vCPU 0: 0. */
    o += (size_t)vmf_snprintf(out + o, sizeof out - o, " %ld", (long)vmf_vcpu_stop());
    vmf_snprintf(out + o, sizeof out - o, " %u", vmf_vcpu_index());
    reply(out);
}

/* ---- hammer: every hypercall from every vCPU at once ----------------------------- */

static struct vmf_barrier bar_all, bar_two;
static uint64_t hammer_rounds, hammer_total, hammer_locked, hammer_lock, hammer_bad, hammer_serial;
static uint64_t hammer_id;

static void hammer_vcpu(uint32_t i)
{
    char line[64];
    int64_t last = 0;
    for (uint64_t k = 0; k < hammer_rounds; k++) {
        int n = vmf_snprintf(line, sizeof line, "h%u.%lu\n", i, (unsigned long)k);
        if (vmf_console_write(line, (size_t)n) != n)
            vmf_atomic_add(&hammer_bad, 1);
        struct vmf_identity id;
        if (vmf_identity(&id) != 0 || id.vm_id != hammer_id || id.vcpu_count != nvcpus)
            vmf_atomic_add(&hammer_bad, 1);
        uint64_t r[2] = { 0, 0 };
        if (vmf_entropy(r, sizeof r) != sizeof r || (r[0] == 0 && r[1] == 0))
            vmf_atomic_add(&hammer_bad, 1);
        struct vmf_clock c;
        if (vmf_clock(&c) != 0 || c.monotonic_ns < last)
            vmf_atomic_add(&hammer_bad, 1);
        last = c.monotonic_ns;
        if (vmf_send(line, (size_t)n - 1) != n - 1)
            vmf_atomic_add(&hammer_bad, 1);
        vmf_atomic_add(&hammer_total, 1);
        uint64_t unlocked = 0;
        while (!vmf_atomic_cas(&hammer_lock, &unlocked, 1)) {
            unlocked = 0;
            vmf_cpu_relax();
        }
        hammer_locked = hammer_locked + 1; /* plain: the lock orders it */
        vmf_atomic_store(&hammer_lock, 0);
        if (vmf_barrier_wait(&bar_all))
            vmf_atomic_add(&hammer_serial, 1);
        /* Nobody leaves round k before every vCPU has counted it. */
        if (vmf_atomic_load(&hammer_total) < (k + 1) * nvcpus)
            vmf_atomic_add(&hammer_bad, 1);
    }
}

static void hammer_worker(void *arg)
{
    uint32_t i = (uint32_t)(uintptr_t)arg;
    hammer_vcpu(i);
    vmf_atomic_store(&ctl.done[i], 1);
}

static void hammer(uint64_t rounds)
{
    struct vmf_identity id;
    vmf_identity(&id);
    hammer_id = id.vm_id;
    hammer_rounds = rounds;
    hammer_total = hammer_locked = hammer_lock = hammer_bad = hammer_serial = 0;
    vmf_barrier_init(&bar_all, nvcpus);
    for (uint32_t i = 1; i < nvcpus; i++) {
        vmf_atomic_store(&ctl.done[i], 0);
        if (vmf_vcpu_start(i, hammer_worker, (void *)(uintptr_t)i, stack_of(i), STACK_BYTES) != 0)
            vmf_atomic_add(&hammer_bad, 1000);
    }
    hammer_vcpu(0);
    for (uint32_t i = 1; i < nvcpus; i++)
        while (!vmf_atomic_load(&ctl.done[i]))
            vmf_cpu_relax();
    uint64_t want = rounds * nvcpus;
    if (hammer_bad == 0 && hammer_total == want && hammer_locked == want && hammer_serial == rounds)
        vmf_snprintf(out, sizeof out, "hammer ok total=%lu", (unsigned long)want);
    else
        vmf_snprintf(out, sizeof out, "hammer bad=%lu total=%lu locked=%lu serial=%lu want=%lu",
                     (unsigned long)hammer_bad, (unsigned long)hammer_total, (unsigned long)hammer_locked,
                     (unsigned long)hammer_serial, (unsigned long)want);
    reply(out);
}

/* ---- FORK from secondary vCPUs ------------------------------------------------------ */

static struct vmf_fork sfb[MAXV];
static uint64_t sf_ids[MAXV];
static int64_t sf_errs[MAXV];
static int64_t sf_rc[MAXV];

static void fork_worker(void *arg)
{
    uint32_t i = (uint32_t)(uintptr_t)arg;
    if (i == 1 || i == 2)
        vmf_barrier_wait(&bar_two);
    sfb[i] = (struct vmf_fork){ .count = 1, .ids = (uint64_t)(uintptr_t)&sf_ids[i],
                                .errors = (uint64_t)(uintptr_t)&sf_errs[i] };
    sf_rc[i] = vmf_fork(&sfb[i]);
    vmf_atomic_store(&ctl.done[i], 1);
}

static char role_of(uint32_t i)
{
    return sf_rc[i] >= 0 && sfb[i].role == VMF_FORK_CHILD ? 'c' : 'p';
}

static void secondary_forks(int two)
{
    uint32_t first = two ? 1 : nvcpus - 1, last = two ? 2 : nvcpus - 1;
    vmf_barrier_init(&bar_two, 2);
    for (uint32_t i = first; i <= last; i++) {
        vmf_atomic_store(&ctl.done[i], 0);
        if (vmf_vcpu_start(i, fork_worker, (void *)(uintptr_t)i, stack_of(i), STACK_BYTES) != 0) {
            reply("fork worker did not start");
            return;
        }
    }
    /* vCPU 0 keeps running through the fork(s); in a copy it resumes right here. */
    for (uint32_t i = first; i <= last; i++)
        while (!vmf_atomic_load(&ctl.done[i]))
            vmf_cpu_relax();
    struct vmf_identity id;
    vmf_identity(&id);
    if (two)
        vmf_snprintf(out, sizeof out, "dfork %c%c id=%lu", role_of(1), role_of(2), (unsigned long)id.vm_id);
    else
        vmf_snprintf(out, sizeof out, "sfork rc=%ld role=%c id=%lu", (long)sf_rc[last], role_of(last),
                     (unsigned long)(role_of(last) == 'p' ? sf_ids[last] : id.vm_id));
    reply(out);
}

/* ---- RECV on several vCPUs ---------------------------------------------------------- */

static void recv_worker(void *arg)
{
    uint32_t i = (uint32_t)(uintptr_t)arg;
    char buf[256];
    char msg[300];
    for (;;) {
        size_t len = 0;
        if (vmf_recv(buf, sizeof buf - 1, 0, &len) < 0)
            break;
        buf[len] = 0;
        if (len == 4 && strncmp(buf, "quit", 4) == 0)
            break;
        int n = vmf_snprintf(msg, sizeof msg, "r%u %s", i, buf);
        vmf_send(msg, (size_t)n);
    }
    vmf_atomic_store(&ctl.done[i], 1);
}

static void recvers(void)
{
    for (uint32_t i = 1; i < nvcpus; i++) {
        vmf_atomic_store(&ctl.done[i], 0);
        vmf_vcpu_start(i, recv_worker, (void *)(uintptr_t)i, stack_of(i), STACK_BYTES);
    }
    for (uint32_t i = 1; i < nvcpus; i++)
        while (!vmf_atomic_load(&ctl.done[i]))
            vmf_cpu_relax();
    reply("recvers done");
}

/* ---- the registers VCPU_START gives --------------------------------------------- */

/* rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rflags, as the vCPU began; then done = 1. */
uint64_t vmf_test_regs[18];
uint64_t vmf_test_regs_done;
void regs_entry(void);
__asm__(".text\n"
        ".globl regs_entry\n"
        "regs_entry:\n"
        "  movq %rax, vmf_test_regs+0(%rip)\n"
        "  movq %rbx, vmf_test_regs+8(%rip)\n"
        "  movq %rcx, vmf_test_regs+16(%rip)\n"
        "  movq %rdx, vmf_test_regs+24(%rip)\n"
        "  movq %rsi, vmf_test_regs+32(%rip)\n"
        "  movq %rdi, vmf_test_regs+40(%rip)\n"
        "  movq %rsp, vmf_test_regs+48(%rip)\n"
        "  movq %rbp, vmf_test_regs+56(%rip)\n"
        "  movq %r8, vmf_test_regs+64(%rip)\n"
        "  movq %r9, vmf_test_regs+72(%rip)\n"
        "  movq %r10, vmf_test_regs+80(%rip)\n"
        "  movq %r11, vmf_test_regs+88(%rip)\n"
        "  movq %r12, vmf_test_regs+96(%rip)\n"
        "  movq %r13, vmf_test_regs+104(%rip)\n"
        "  movq %r14, vmf_test_regs+112(%rip)\n"
        "  movq %r15, vmf_test_regs+120(%rip)\n"
        "  pushfq\n"
        "  popq vmf_test_regs+128(%rip)\n"
        "  movq $1, vmf_test_regs_done(%rip)\n"
        "  movl $12, %eax\n"          /* VMF_HC_VCPU_STOP */
        "  movw $0x7f0, %dx\n"
        "1: outl %eax, (%dx)\n"
        "  jmp 1b\n");

static void start_regs(uint32_t i)
{
    uint64_t top = (uint64_t)(uintptr_t)stack_of(i) + STACK_BYTES;
    uint64_t arg = 0x1234567890abcdefull;
    vmf_atomic_store(&vmf_test_regs_done, 0);
    /* Junk in this vCPU's registers that must not reach the started one. */
    __asm__ volatile("" ::: "rbx", "r12", "r13", "r14", "r15");
    struct vmf_vcpu_start st = { .index = i, .entry = (uint64_t)(uintptr_t)regs_entry, .stack_top = top,
                                 .arg = arg };
    int64_t rc = vmf_hypercall(VMF_HC_VCPU_START, (uint64_t)(uintptr_t)&st);
    if (rc != 0) {
        vmf_snprintf(out, sizeof out, "regs rc=%ld", (long)rc);
        reply(out);
        return;
    }
    while (!vmf_atomic_load(&vmf_test_regs_done))
        vmf_cpu_relax();
    uint64_t others = 0;
    for (int k = 0; k < 16; k++)
        if (k != 4 && k != 5 && k != 6)
            others |= vmf_test_regs[k];
    vmf_snprintf(out, sizeof out, "regs rdi=%lx rsi=%lu rsp=%lx arg=%lx top=%lx others=%lx rflags=%lx",
                 (unsigned long)vmf_test_regs[5], (unsigned long)vmf_test_regs[4], (unsigned long)vmf_test_regs[6],
                 (unsigned long)arg, (unsigned long)top, (unsigned long)others, (unsigned long)vmf_test_regs[16]);
    reply(out);
}

static void exit_worker(void *arg)
{
    (void)arg;
    vmf_exit(7);
}

int main(void)
{
    nvcpus = vmf_boot->vcpu_count;
    if (nvcpus == 0 || nvcpus > MAXV)
        return 3;
    stacks = (uint8_t *)(uintptr_t)vmf_boot->heap_start;
    if (vmf_boot->heap_start + (uint64_t)nvcpus * STACK_BYTES > vmf_boot->heap_end)
        return 4;
    struct vmf_identity id;
    vmf_identity(&id);
    ctl.marker = id.vm_id;
    vmf_ready();
    for (;;) {
        size_t len = 0;
        int64_t r = vmf_recv(req, sizeof req - 1, 0, &len);
        if (r == VMF_ECLOSED)
            return 0;
        if (r < 0)
            return 6;
        req[len] = 0;
        if (len > 6 && strncmp(req, "start ", 6) == 0) {
            int ok;
            uint64_t k = vmf_parse_u64(req + 6, len - 6, &ok);
            vmf_atomic_store(&ctl.run, 1);
            for (uint32_t i = 1; ok && i < k && i < nvcpus; i++)
                if (!vmf_atomic_load(&ctl.running[i]))
                    start_one(i);
            vmf_snprintf(out, sizeof out, "started %u", running_mask());
            reply(out);
        } else if (len > 6 && strncmp(req, "probe ", 6) == 0) {
            int ok;
            uint64_t i = vmf_parse_u64(req + 6, len - 6, &ok);
            vmf_atomic_store(&ctl.run, 1);
            vmf_snprintf(out, sizeof out, "probe %ld", (long)(ok && i < MAXV ? start_one((uint32_t)i) : -100));
            reply(out);
        } else if (len > 6 && strncmp(req, "sweep ", 6) == 0) {
            int ok;
            uint64_t mib = vmf_parse_u64(req + 6, len - 6, &ok);
            uint64_t at = vmf_boot->heap_start + (uint64_t)nvcpus * STACK_BYTES;
            if (!ok || running_mask() != 0 || at + (mib << 20) > vmf_boot->heap_end) {
                reply("error: sweep needs MIB that fit after the stacks, before start");
                continue;
            }
            sweep_buf = (uint64_t *)(uintptr_t)at;
            sweep_pages = mib << 8;
            vmf_snprintf(out, sizeof out, "sweeping %lu", (unsigned long)sweep_pages);
            reply(out);
        } else if (len == 4 && strncmp(req, "fork", 4) == 0) {
            do_fork();
        } else if (len == 8 && strncmp(req, "progress", 8) == 0) {
            reply(progress_now() ? "progress ok" : "progress stuck");
        } else if (len == 4 && strncmp(req, "stop", 4) == 0) {
            stop_workers();
            size_t o = (size_t)vmf_snprintf(out, sizeof out, "stopped");
            put_list(o, "lanes", ctl.frozen, 0);
            reply(out);
        } else if (len == 5 && strncmp(req, "check", 5) == 0) {
            vmf_identity(&id);
            int same = 1;
            for (uint32_t i = 0; i < nvcpus; i++)
                if (vmf_atomic_load(&lane_a.v[i]) != ctl.frozen[i] || vmf_atomic_load(&lane_b.v[i]) != ctl.frozen[i])
                    same = 0;
            if (ctl.marker == id.vm_id && same) {
                reply("check ok");
            } else {
                vmf_snprintf(out, sizeof out, "check bad marker=%lu id=%lu lanes=%s", (unsigned long)ctl.marker,
                             (unsigned long)id.vm_id, same ? "same" : "changed");
                reply(out);
            }
        } else if (len == 6 && strncmp(req, "errors", 6) == 0) {
            vmf_snprintf(out, sizeof out, "errors=%lu running=%u", (unsigned long)errors_sum(), running_mask());
            reply(out);
        } else if (len == 8 && strncmp(req, "badstart", 8) == 0) {
            bad_start();
        } else if (len == 4 && strncmp(req, "info", 4) == 0) {
            vmf_identity(&id);
            vmf_snprintf(out, sizeof out, "vcpus=%u identity=%u index=%u", vmf_boot->vcpu_count, id.vcpu_count,
                         vmf_vcpu_index());
            reply(out);
        } else if (len > 7 && strncmp(req, "hammer ", 7) == 0) {
            int ok;
            uint64_t rounds = vmf_parse_u64(req + 7, len - 7, &ok);
            hammer(ok ? rounds : 0);
        } else if (len == 5 && strncmp(req, "sfork", 5) == 0) {
            secondary_forks(0);
        } else if (len == 5 && strncmp(req, "dfork", 5) == 0) {
            secondary_forks(1);
        } else if (len == 7 && strncmp(req, "recvers", 7) == 0) {
            recvers();
        } else if (len > 5 && strncmp(req, "regs ", 5) == 0) {
            int ok;
            uint64_t i = vmf_parse_u64(req + 5, len - 5, &ok);
            if (ok && i > 0 && i < nvcpus)
                start_regs((uint32_t)i);
            else
                reply("regs bad index");
        } else if (len == 4 && strncmp(req, "exit", 4) == 0) {
            return 0;
        } else if (len == 5 && strncmp(req, "wexit", 5) == 0) {
            vmf_vcpu_start(nvcpus - 1, exit_worker, 0, stack_of(nvcpus - 1), STACK_BYTES);
            for (;;)
                vmf_cpu_relax();
        } else {
            reply("unknown request");
        }
    }
}
