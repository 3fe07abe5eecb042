package io.vmfork.cli;

import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VirtualMachine.ForkRecord;
import io.vmfork.vmm.VirtualMachine.ForkResult;
import io.vmfork.vmm.VmExit;
import io.vmfork.vmm.VmListener;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.memory.GuestMemory;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * {@code vmfork bench fork}: what a local fork costs, measured on real VMs (KVM's or guest processes).
 *
 * <ul>
 * <li>fork.c_floor: the same work in plain C, built with gcc and run in the same run ({@link ForkFloor} on
 *     KVM, {@link ProcForkFloor} on the process platform).
 * <li>fork.local: from the FORK hypercall's exit in the parent to the child's first exit;
 *     {@code ratio} is its p50 over fork.c_floor's.
 * <li>fork.fanout_local: 64 children in one FORK, to the last child's first exit.
 * <li>fork.child_first_touch: a child's first read, and first write, of all its parent's 64 MiB.
 * <li>fork.parent_blocked: how long the FORK hypercall holds the parent, per parent size
 *     and state: first fork of a booted VM, fork after fork, after reading or after
 *     rewriting its whole heap.
 * <li>fork.parent_write_after_fork: the parent's first write per page after a fork that
 *     write-protected its pages, beside a child's first write to a plain copy-on-write page.
 * <li>fork.vs_cold: a warm-worker that answers its first request, by fork and by cold launch.
 * <li>fork.memory_per_child: host memory each of 64 children adds, reading and then writing.
 * <li>capsule.size: capsule bytes against touched bytes, encode and decode throughput ({@link CapsuleBench}).
 * </ul>
 *
 * Every child's announcement, replies and clean exit are checked, and every VM is stopped;
 * a broken fork fails the benchmark instead of printing a figure.
 */
final class ForkBench {
    private static final Duration VM_TIMEOUT = Duration.ofSeconds(60);
    private static final String FORKER = "forker";
    /** forker's own use of RAM besides the heap it touches: an 8 MiB buffer, 1 MiB stack, the low area. */
    private static final long FORKER_OVERHEAD_MIB = 64;
    private static final int SMALL_MIB = 64;
    private static final int LARGE_MIB = 1024;
    private static final int MEMORY_CHILDREN = 64;
    private static final int WRITE_MIB = 1;

    private final Vmm vmm;
    private final boolean json;
    private final int runs;
    private final Announcements announcements = new Announcements();

    private ForkBench(Vmm vmm, boolean json, int runs) {
        this.vmm = vmm;
        this.json = json;
        this.runs = runs;
    }

    static void run(Vmm vmm, int runs, boolean json) {
        ForkBench b = new ForkBench(vmm, json, runs);
        // The C floor of the platform the VMs run on: KVM's (a VM, a memory slot and a vCPU
        // per child) or the process platform's (a pooled process per child and per move).
        Map<String, Object> floor = vmm.platform().isProcess()
                ? ProcForkFloor.measure(runs, forkerRamMib(SMALL_MIB), SMALL_MIB)
                : ForkFloor.measure(runs, forkerRamMib(SMALL_MIB), SMALL_MIB);
        b.print(floor);
        double localP50 = b.local(floor);
        b.fanoutLocal(localP50);
        b.parentBlocked();
        b.parentWriteAfterFork();
        b.childFirstTouch();
        b.versusCold();
        b.memoryPerChild();
        try {
            b.print(CapsuleBench.run(vmm));
        } catch (Exception e) {
            throw new IllegalStateException("capsule.size failed: " + e, e);
        }
        b.announcements.checkNoStrays();
        if (!vmm.vms().isEmpty()) {
            throw new IllegalStateException("VMs left running after the fork benchmarks: " + vmm.vms());
        }
    }

    private void print(Map<String, Object> fields) {
        System.out.println(json ? Stats.json(fields) : Stats.text(fields));
        System.out.flush();
    }

    // ---- fork.local -------------------------------------------------------------------

    /**
     * fork.local: fork-hypercall exit to the child's first exit; and the parent's blocked
     * time. {@code ratio}: its p50 over the C floor's p50; {@code parent_blocked_ratio}, where
     * the floor measures the parent's blocked time too (the process platform's), the same
     * for the blocked time. Measured
     * after {@code warmup} forks (at least 600): the JIT compiles the fork path's methods
     * only after some hundreds of forks (measured: 691, 587, 475 us p50 over three
     * successive series of 300), and a host that forks is past that; the warm-up is printed.
     */
    private double local(Map<String, Object> floor) {
        int warmup = Math.max(600, runs);
        int n = runs;
        VirtualMachine parent = launchForker(SMALL_MIB);
        try {
            String sum = ask(parent, "sum");
            for (int i = 0; i < warmup; i++) {
                Forked f = forkOne(parent);
                expect(f.child(), "sum", sum);
                stopForker(f.child());
            }
            double[] toChild = new double[n];
            double[] blocked = new double[n];
            double[] captured = new double[n];
            double[] launched = new double[n];
            double[] childRun = new double[n];
            for (int i = 0; i < n; i++) {
                Forked f = forkOne(parent);
                ForkRecord r = f.record();
                toChild[i] = (f.child().firstExitNanos() - r.exitNanos()) / 1e6;
                blocked[i] = blockedMs(r);
                captured[i] = (r.capturedNanos() - r.exitNanos()) / 1e6;
                launched[i] = (r.launchedNanos() - r.capturedNanos()) / 1e6;
                childRun[i] = (f.child().firstExitNanos() - r.launchedNanos()) / 1e6;
                if (i % 10 == 0) {
                    expect(f.child(), "sum", sum); // the child sees the parent's memory
                }
                stopForker(f.child());
            }
            Stats b = new Stats(blocked);
            Stats c = new Stats(toChild);
            Map<String, Object> extra = new LinkedHashMap<>();
            extra.put("ratio", c.median() / (Double) floor.get("p50_ms"));
            extra.put("warmup_forks", warmup);
            extra.put("guest", FORKER);
            extra.put("memory_mib", SMALL_MIB);
            extra.put("ram_mib", forkerRamMib(SMALL_MIB));
            extra.put("parent_blocked_p50_ms", b.median());
            extra.put("parent_blocked_p99_ms", b.percentile(99));
            extra.put("parent_blocked_max_ms", b.max());
            // Where the time goes (p50s): FORK exit to the capture's end (pause, placement,
            // vCPU state, the dirty log and the copy), then the child's launch (its VM, its
            // process), then from its launch to its first exit (its vCPU thread's wake-up and
            // first run, beside the parent's resume).
            extra.put("capture_p50_ms", new Stats(captured).median());
            extra.put("child_launch_p50_ms", new Stats(launched).median());
            extra.put("child_first_run_p50_ms", new Stats(childRun).median());
            if (floor.get("parent_blocked_p50_ms") instanceof Double floorBlocked) {
                extra.put("parent_blocked_c_floor_p50_ms", floorBlocked);
                extra.put("parent_blocked_ratio", b.median() / floorBlocked);
            }
            print(c.fields("fork.local", extra));
            stopForker(parent);
            return c.median();
        } finally {
            stopParent(parent);
        }
    }

    // ---- fork.fanout_local --------------------------------------------------------------

    private static final int FANOUT_CHILDREN = 64;
    private static final long FANOUT_SPACING_MS = 500;


    /**
     * fork.fanout_local: one FORK hypercall of 64 children, from its exit to the last
     * child's first exit. {@code target_ms}: 64 × fork.local's p50 / 2 (this run's). The
     * first fan-out grows the VM pool and is not counted.
     */
    private void fanoutLocal(double localP50Ms) {
        int n = Math.max(5, runs / 20);
        VirtualMachine parent = launchForker(SMALL_MIB);
        try {
            double[] total = new double[n];
            double[] blocked = new double[n];
            for (int i = 0; i < 1 + n; i++) {
                // Fan-outs 0.5 s apart: the VM pool (grown to 64 by the first) refills between
                // them, as on a host whose fan-outs are not back to back.
                sleep(FANOUT_SPACING_MS);
                String reply = ask(parent, "fork " + FANOUT_CHILDREN);
                ForkRecord rec = parent.lastFork();
                List<Long> ids = parseParentReply(parent, reply, FANOUT_CHILDREN, rec);
                long last = 0;
                for (int c = 0; c < FANOUT_CHILDREN; c++) {
                    VirtualMachine child = rec.children().get(c);
                    awaitAnnouncement(parent, child, c, ids);
                    last = Math.max(last, child.firstExitNanos());
                }
                if (i > 0) {
                    total[i - 1] = (last - rec.exitNanos()) / 1e6;
                    blocked[i - 1] = blockedMs(rec);
                }
                for (VirtualMachine child : rec.children()) {
                    child.stop();
                    child.awaitTermination(VM_TIMEOUT);
                    announcements.forget(child);
                }
            }
            Stats t = new Stats(total);
            Map<String, Object> extra = new LinkedHashMap<>();
            extra.put("children", FANOUT_CHILDREN);
            extra.put("target_ms", FANOUT_CHILDREN * localP50Ms / 2);
            extra.put("per_child_ms", t.median() / FANOUT_CHILDREN);
            extra.put("spacing_ms", FANOUT_SPACING_MS);
            extra.put("parent_blocked_p50_ms", new Stats(blocked).median());
            extra.put("guest", FORKER);
            extra.put("memory_mib", SMALL_MIB);
            print(t.fields("fork.fanout_local", extra));
            stopForker(parent);
        } finally {
            stopParent(parent);
        }
    }

    // ---- fork.parent_blocked ----------------------------------------------------------

    /**
     * fork.parent_blocked: how long the FORK hypercall holds the parent, per parent size and
     * parent state: the first fork of a booted VM that has read its whole touched heap
     * (first_fork: each sample a new parent), a fork right after a fork (after_fork), after
     * reading the whole heap again (after_read), and after writing every page of it again
     * (after_rewrite: those pages are write-protected and copied after the parent resumes).
     * The 1 GiB parent's series take seconds per run for the reads and writes alone, so
     * they have fewer runs.
     */
    private void parentBlocked() {
        int n = Math.max(10, runs / 4);
        parentBlocked(SMALL_MIB, n, n, n);
        parentBlocked(LARGE_MIB, 5, n, Math.max(5, runs / 10));
    }

    private void parentBlocked(int mib, int firstRuns, int idleRuns, int busyRuns) {
        // The first fork of a booted VM turns its RAM file into the image: nothing is copied.
        double[] first = new double[firstRuns];
        double[] firstWork = new double[firstRuns];
        for (int i = 0; i < firstRuns; i++) {
            VirtualMachine parent = launchForker(mib);
            try {
                expectPrefix(parent, "readall " + mib, "read " + mib + " ");
                Forked f = forkOne(parent);
                first[i] = blockedMs(f.record());
                firstWork[i] = f.record().pageWorkNanos() / 1e6;
                stopForker(f.child());
                stopForker(parent);
            } finally {
                stopParent(parent);
            }
        }
        print(new Stats(first).fields("fork.parent_blocked", withFloor(sizeFields(mib, "first_fork", 0, mib), first,
                firstWork)));

        VirtualMachine parent = launchForker(mib);
        try {
            String readReply = ask(parent, "readall " + mib);
            if (!readReply.startsWith("read " + mib + " ")) {
                throw new IllegalStateException("forker answered 'readall " + mib + "' with '" + readReply + "'");
            }
            for (int i = 0; i < 5; i++) {
                stopForker(forkOne(parent).child());
            }
            // The first fork's old view of the RAM is unmapped in the background (about 0.1 s
            // at 1 GiB, holding the memory map lock): the series measure forks after it.
            sleep(1000);

            double[] idle = new double[idleRuns];
            double[] idleWork = new double[idleRuns];
            for (int i = 0; i < idleRuns; i++) {
                Forked f = forkOne(parent);
                idle[i] = blockedMs(f.record());
                idleWork[i] = f.record().pageWorkNanos() / 1e6;
                stopForker(f.child());
            }
            print(new Stats(idle).fields("fork.parent_blocked", withFloor(sizeFields(mib, "after_fork", 0, 0), idle,
                    idleWork)));

            // After a fork the parent's KVM mappings are write-protected or gone (dirty
            // logging), so its first access to each page exits again; the second readall
            // shows the same read without a fork.
            double[] read = new double[busyRuns];
            double[] readWork = new double[busyRuns];
            double[] readAfterFork = new double[busyRuns];
            double[] readSteady = new double[busyRuns];
            for (int i = 0; i < busyRuns; i++) {
                readAfterFork[i] = timed(parent, "readall " + mib, readReply);
                readSteady[i] = timed(parent, "readall " + mib, readReply);
                Forked f = forkOne(parent);
                read[i] = blockedMs(f.record());
                readWork[i] = f.record().pageWorkNanos() / 1e6;
                stopForker(f.child());
            }
            Map<String, Object> extra = withFloor(sizeFields(mib, "after_read", 0, mib), read, readWork);
            extra.put("read_after_fork_p50_ms", new Stats(readAfterFork).median());
            extra.put("read_steady_p50_ms", new Stats(readSteady).median());
            print(new Stats(read).fields("fork.parent_blocked", extra));

            double[] dirty = new double[busyRuns];
            double[] retouch = new double[busyRuns];
            double[] protect = new double[busyRuns];
            double[] dirtyWork = new double[busyRuns];
            double[] copy = new double[busyRuns];
            for (int i = 0; i < busyRuns; i++) {
                retouch[i] = timed(parent, "touch " + mib, "touched " + mib);
                Forked f = forkOne(parent);
                dirty[i] = blockedMs(f.record());
                protect[i] = parent.memory().freezer().lastProtectNanos() / 1e6;
                dirtyWork[i] = f.record().pageWorkNanos() / 1e6;
                stopForker(f.child()); // waits for the child, which starts once the copy is done
                io.vmfork.vmm.memory.MemoryFreezer.CopyStats c = parent.memory().freezer().lastCopy();
                copy[i] = c == null ? 0 : c.nanos() / 1e6;
            }
            extra = withFloor(sizeFields(mib, "after_rewrite", mib, 0), dirty, dirtyWork);
            extra.put("write_protect_p50_ms", new Stats(protect).median());
            extra.put("background_copy_p50_ms", new Stats(copy).median());
            extra.put("retouch_p50_ms", new Stats(retouch).median());
            print(new Stats(dirty).fields("fork.parent_blocked", extra));
            stopForker(parent);
        } finally {
            stopParent(parent);
        }
    }

    /**
     * The kernel's per-page work inside the pause (dirty log, write protection, slot swap:
     * ForkRecord#pageWorkNanos), its p50 and the pause's p50 over it: what is left above
     * the floor that grows with memory.
     */
    private static Map<String, Object> withFloor(Map<String, Object> m, double[] blocked, double[] work) {
        double w = new Stats(work).median();
        m.put("kernel_page_work_p50_ms", w);
        if (w > 0) {
            m.put("ratio_to_kernel_page_work", new Stats(blocked).median() / w);
        }
        return m;
    }

    // ---- fork.child_first_touch ---------------------------------------------------------

    private static final int CHILD_TOUCH_RUNS = 5;

    /**
     * fork.child_first_touch: a child's first read of all its parent's 64 MiB (each page
     * mapped from the image on first access), then the same read again (steady state); its
     * first write of every page (copy on write), then again. One child per fork, five forks.
     */
    private void childFirstTouch() {
        VirtualMachine parent = launchForker(SMALL_MIB);
        try {
            String read = ask(parent, "readall " + SMALL_MIB);
            if (!read.startsWith("read " + SMALL_MIB + " ")) {
                throw new IllegalStateException("forker answered 'readall' with '" + read + "'");
            }
            String touched = "touched " + SMALL_MIB;
            double[] readFirst = new double[CHILD_TOUCH_RUNS];
            double[] readAgain = new double[CHILD_TOUCH_RUNS];
            double[] writeFirst = new double[CHILD_TOUCH_RUNS];
            double[] writeAgain = new double[CHILD_TOUCH_RUNS];
            for (int i = 0; i < CHILD_TOUCH_RUNS; i++) {
                VirtualMachine child = forkOne(parent).child();
                readFirst[i] = timed(child, "readall " + SMALL_MIB, read);
                readAgain[i] = timed(child, "readall " + SMALL_MIB, read);
                writeFirst[i] = timed(child, "touch " + SMALL_MIB, touched);
                writeAgain[i] = timed(child, "touch " + SMALL_MIB, touched);
                stopForker(child);
            }
            Stats first = new Stats(readFirst);
            Map<String, Object> extra = new LinkedHashMap<>();
            extra.put("guest", FORKER);
            extra.put("memory_mib", SMALL_MIB);
            extra.put("read_again_p50_ms", new Stats(readAgain).median());
            extra.put("write_first_p50_ms", new Stats(writeFirst).median());
            extra.put("write_again_p50_ms", new Stats(writeAgain).median());
            extra.put("read_first_us_per_page", first.median() * 1000 / (SMALL_MIB * 256.0));
            extra.put("write_first_us_per_page", new Stats(writeFirst).median() * 1000 / (SMALL_MIB * 256.0));
            print(first.fields("fork.child_first_touch", extra));
            stopForker(parent);
        } finally {
            stopParent(parent);
        }
    }

    // ---- fork.parent_write_after_fork ---------------------------------------------------

    /**
     * fork.parent_write_after_fork: the parent's time per first write of a 4 KiB page right
     * after a fork that deferred its copy (it rewrote all its memory before), written from the
     * top page down so that it meets pages the background copy has not reached; beside the
     * same timed loop in the child, whose writes are first writes to plain copy-on-write
     * pages, in the same run.
     */
    private void parentWriteAfterFork() {
        int n = Math.max(10, runs / 10);
        int mib = SMALL_MIB;
        VirtualMachine parent = launchForker(mib);
        try {
            stopForker(forkOne(parent).child());
            double[] parentUs = new double[n];
            double[] cowUs = new double[n];
            double[] faults = new double[n];
            for (int i = 0; i < n; i++) {
                expect(parent, "touch " + mib, "touched " + mib);
                String r = ask(parent, "forkw " + mib);
                if (!r.startsWith("parent launched=1 ids=") || !r.contains(" errs=0 wpage_ns=")) {
                    throw new IllegalStateException("forker answered 'forkw " + mib + "' with '" + r + "'");
                }
                parentUs[i] = Long.parseLong(r.replaceAll(".*wpage_ns=([0-9]+).*", "$1")) / 1e3;
                VirtualMachine child = vmm.vm(Long.parseLong(r.replaceAll(".*ids=([0-9]+).*", "$1")));
                if (child == null) {
                    throw new IllegalStateException("the child of '" + r + "' is not alive");
                }
                awaitAnnouncementOf(child);
                String w = ask(child, "wtime " + mib);
                cowUs[i] = Long.parseLong(w.replaceAll("wpage_ns=([0-9]+)", "$1")) / 1e3;
                stopForker(child);
                io.vmfork.vmm.memory.MemoryFreezer.CopyStats c = parent.memory().freezer().lastCopy();
                faults[i] = c == null ? 0 : c.faults();
            }
            Stats p = new Stats(parentUs);
            Stats c = new Stats(cowUs);
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("name", "fork.parent_write_after_fork");
            m.put("unit", "us_per_page");
            m.put("n", n);
            m.put("p50", p.median());
            m.put("p99", p.percentile(99));
            m.put("plain_cow_p50", c.median());
            m.put("ratio", p.median() / c.median());
            m.put("faults_served_p50", new Stats(faults).median());
            m.put("memory_mib", mib);
            m.put("pages", mib << 8);
            print(m);
            stopForker(parent);
        } finally {
            stopParent(parent);
        }
    }

    private static Map<String, Object> sizeFields(int mib, String state, int dirtyMib, int readMib) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("guest", FORKER);
        m.put("memory_mib", mib);
        m.put("state", state);
        m.put("ram_mib", forkerRamMib(mib));
        m.put("dirty_mib", dirtyMib);
        m.put("read_mib", readMib);
        return m;
    }

    /** Milliseconds from sending {@code request} to its (checked) reply. */
    private static double timed(VirtualMachine vm, String request, String want) {
        long t0 = System.nanoTime();
        expect(vm, request, want);
        return (System.nanoTime() - t0) / 1e6;
    }

    // ---- fork.vs_cold -----------------------------------------------------------------

    /**
     * fork.vs_cold: from asking for a new warm-worker to its answer to "get 42", by forking
     * a ready one from outside and by launching one, interleaved.
     */
    private void versusCold() {
        int n = Math.max(5, runs / 40);
        ElfImage worker = Guests.shipped("warm-worker");
        long mem = 256L << 20;
        VirtualMachine parent = vmm.launch(VmSpec.of(worker, mem).withListener(announcements));
        try {
            parent.ready().get(VM_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
        } catch (InterruptedException | ExecutionException | TimeoutException e) {
            stopParent(parent);
            throw new IllegalStateException("warm-worker did not get ready: " + e, e);
        }
        try {
            String answer = ask(parent, "get 42");
            if (!answer.startsWith("42 ") || answer.endsWith("miss")) {
                throw new IllegalStateException("warm-worker answered 'get 42' with '" + answer + "'");
            }
            stopWorker(forkWorker(parent, answer)); // warm up the external fork path
            double[] fork = new double[n];
            double[] cold = new double[n];
            for (int i = 0; i < n; i++) {
                long t0 = System.nanoTime();
                VirtualMachine child = forkWorker(parent, answer);
                fork[i] = (System.nanoTime() - t0) / 1e6;
                stopWorker(child);

                t0 = System.nanoTime();
                VirtualMachine fresh = vmm.launch(VmSpec.of(worker, mem).withListener(announcements));
                expect(fresh, "get 42", answer);
                cold[i] = (System.nanoTime() - t0) / 1e6;
                stopWorker(fresh);
            }
            Stats f = new Stats(fork);
            Stats c = new Stats(cold);
            Map<String, Object> extra = new LinkedHashMap<>();
            extra.put("guest", "warm-worker");
            extra.put("ram_mib", mem >> 20);
            extra.put("fork_p50_ms", f.median());
            extra.put("cold_p50_ms", c.median());
            extra.put("cold_min_ms", c.min());
            extra.put("cold_max_ms", c.max());
            extra.put("ratio", c.median() / f.median());
            print(f.fields("fork.vs_cold", extra));
            stopWorker(parent);
        } finally {
            stopParent(parent);
        }
    }

    /** Forks a ready warm-worker from outside; returns the child once it has answered "get 42". */
    private VirtualMachine forkWorker(VirtualMachine parent, String answer) {
        ForkResult r = parent.fork(1, 0);
        if (!r.errors().isEmpty() || r.children().size() != 1) {
            for (VirtualMachine c : r.children()) {
                c.stop();
            }
            throw new IllegalStateException("fork of the warm-worker failed: " + r.children().size()
                    + " children, errors " + r.errors());
        }
        VirtualMachine child = r.children().get(0);
        expect(child, "get 42", answer);
        if (child.identity().parentId() != parent.id()) {
            throw new IllegalStateException(child + " has parent " + Long.toHexString(child.identity().parentId())
                    + ", not " + parent);
        }
        return child;
    }

    private void stopWorker(VirtualMachine vm) {
        expect(vm, "stop", "bye");
        expectExit(vm, vm.awaitTermination(VM_TIMEOUT));
    }

    // ---- fork.memory_per_child ----------------------------------------------------------

    /**
     * fork.memory_per_child: the host memory that 64 children of a parent with 64 MiB
     * touched add once each has read all of it, and then once each has written 1 MiB. Pss
     * counts a page shared by several mappings once; MemAvailable is host-wide, so noisy.
     * Also reported apart: the Pss of guest RAM mappings alone, and this process's page
     * tables (VmPTE, which Pss leaves out). The sample (p50/p99) is each child's delay from
     * the fork hypercall's exit to its first exit.
     */
    private void memoryPerChild() {
        VirtualMachine parent = launchForker(SMALL_MIB);
        List<VirtualMachine> children = new ArrayList<>();
        try {
            String sum = ask(parent, "sum");
            String read = ask(parent, "readall " + SMALL_MIB);
            if (!read.startsWith("read " + SMALL_MIB + " ")) {
                throw new IllegalStateException("forker answered 'readall' with '" + read + "'");
            }
            HostMemory before = HostMemory.sample();

            String reply = ask(parent, "fork " + MEMORY_CHILDREN);
            ForkRecord rec = parent.lastFork();
            List<Long> ids = parseParentReply(parent, reply, MEMORY_CHILDREN, rec);
            children.addAll(rec.children());
            double[] toChild = new double[MEMORY_CHILDREN];
            for (int i = 0; i < MEMORY_CHILDREN; i++) {
                VirtualMachine c = rec.children().get(i);
                awaitAnnouncement(parent, c, i, ids);
                toChild[i] = (c.firstExitNanos() - rec.exitNanos()) / 1e6;
            }
            // The parent maps its RAM afresh after a fork; reading it again keeps the
            // "before" and "after" pictures alike (the parent's pages mapped in both).
            expect(parent, "sum", sum);
            expect(parent, "readall " + SMALL_MIB, read);
            expectAll(children, "readall " + SMALL_MIB, read);
            HostMemory afterRead = HostMemory.sample();

            expectAll(children, "touch " + WRITE_MIB, "touched " + WRITE_MIB);
            HostMemory afterWrite = HostMemory.sample();

            for (VirtualMachine c : children) {
                expect(c, "sum", sum); // still the parent's buffer after the children's writes
            }
            Map<String, Object> extra = new LinkedHashMap<>();
            extra.put("guest", FORKER);
            extra.put("memory_mib", SMALL_MIB);
            extra.put("ram_mib", forkerRamMib(SMALL_MIB));
            extra.put("children", MEMORY_CHILDREN);
            extra.put("parent_blocked_ms", blockedMs(rec));
            extra.put("kib_per_child", perChild(before.ownedKib, afterRead.ownedKib));
            extra.put("kib_per_child_meminfo", perChild(afterRead.availableKib, before.availableKib));
            extra.put("kib_per_child_after_1mib_write", perChild(before.ownedKib, afterWrite.ownedKib));
            extra.put("kib_per_child_after_1mib_write_meminfo", perChild(afterWrite.availableKib, before.availableKib));
            extra.put("kib_per_child_pss_incl_file", perChild(before.pssKib, afterRead.pssKib));
            extra.put("guest_ram_kib_per_child", perChild(before.guestRamKib, afterRead.guestRamKib));
            extra.put("guest_ram_kib_per_child_after_1mib_write", perChild(before.guestRamKib, afterWrite.guestRamKib));
            extra.put("page_table_kib_per_child", perChild(before.pageTableKib, afterRead.pageTableKib));
            extra.put("pss_before_mib", before.pssKib / 1024.0);
            print(new Stats(toChild).fields("fork.memory_per_child", extra));
            for (VirtualMachine c : children) {
                stopForker(c);
            }
            stopForker(parent);
        } finally {
            stopParent(parent);
        }
    }

    private static double perChild(long fromKib, long toKib) {
        return (toKib - fromKib) / (double) MEMORY_CHILDREN;
    }

    /**
     * Memory figures of this process and the host. Pss_File is left out of {@code ownedKib}:
     * it is the JVM's and libc's code, whose share moves whenever another process on the
     * host maps or unmaps the same files, and a child maps no file. Guest RAM (memfd,
     * shmem) and copy-on-write copies of it (anonymous) are in Pss_Shmem and Pss_Anon.
     */
    private record HostMemory(long pssKib, long ownedKib, long guestRamKib, long pageTableKib, long availableKib) {
        static HostMemory sample() {
            settleJavaHeap();
            // Old views of guest RAM are unmapped in the background after a fork; let that finish.
            sleep(300);
            Map<String, Long> rollup = fields("/proc/self/smaps_rollup");
            return new HostMemory(get(rollup, "Pss", "smaps_rollup"),
                    get(rollup, "Pss_Anon", "smaps_rollup") + get(rollup, "Pss_Shmem", "smaps_rollup"),
                    guestRamPssKib(), get(fields("/proc/self/status"), "VmPTE", "status"),
                    get(fields("/proc/meminfo"), "MemAvailable", "meminfo"));
        }

        /**
         * Collects garbage (and frees the native memory of dead JNA buffers) without giving
         * heap back to the OS: pages the GC returned would come back as the heap is used
         * again, and would be charged to the children.
         */
        private static void settleJavaHeap() {
            com.sun.management.HotSpotDiagnosticMXBean hs = java.lang.management.ManagementFactory
                    .getPlatformMXBean(com.sun.management.HotSpotDiagnosticMXBean.class);
            String old = hs.getVMOption("MaxHeapFreeRatio").getValue();
            hs.setVMOption("MaxHeapFreeRatio", "100");
            try {
                System.gc();
            } finally {
                hs.setVMOption("MaxHeapFreeRatio", old);
            }
        }

        /** "Key: 123 kB" lines of a /proc file. */
        private static Map<String, Long> fields(String file) {
            Map<String, Long> m = new LinkedHashMap<>();
            for (String line : lines(file)) {
                int colon = line.indexOf(':');
                if (colon > 0) {
                    String[] v = line.substring(colon + 1).trim().split("\\s+");
                    if (v.length >= 1 && !v[0].isEmpty() && v[0].chars().allMatch(Character::isDigit)) {
                        m.put(line.substring(0, colon), Long.parseLong(v[0]));
                    }
                }
            }
            return m;
        }

        private static long get(Map<String, Long> m, String key, String file) {
            Long v = m.get(key);
            if (v == null) {
                throw new IllegalStateException("no " + key + " in /proc/.../" + file);
            }
            return v;
        }

        /** Pss of the mappings of guest RAM (the VMs' memfds and their runtime images). */
        private static long guestRamPssKib() {
            long sum = 0;
            boolean guest = false;
            for (String line : lines("/proc/self/smaps")) {
                if (!line.isEmpty() && Character.digit(line.charAt(0), 16) >= 0 && line.indexOf('-') > 0
                        && line.indexOf(' ') > line.indexOf('-')) {
                    guest = line.contains("/memfd:vmfork-");
                } else if (guest && line.startsWith("Pss:")) {
                    sum += Long.parseLong(line.substring(4).trim().split("\\s+")[0]);
                }
            }
            return sum;
        }

        private static List<String> lines(String file) {
            try {
                return Files.readAllLines(Path.of(file));
            } catch (IOException e) {
                throw new IllegalStateException("cannot read " + file + ": " + e, e);
            }
        }
    }

    // ---- forker ------------------------------------------------------------------------

    private static long forkerRamMib(int touchMib) {
        return touchMib + FORKER_OVERHEAD_MIB;
    }

    /** A forker with {@code touchMib} of its heap written, ready to fork. */
    private VirtualMachine launchForker(int touchMib) {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped(FORKER), forkerRamMib(touchMib) << 20)
                .withListener(announcements));
        try {
            expect(vm, "touch " + touchMib, "touched " + touchMib);
            return vm;
        } catch (RuntimeException e) {
            vm.stop();
            throw e;
        }
    }

    private record Forked(VirtualMachine child, ForkRecord record) {
    }

    /** "fork 1" on a forker: checks the parent's reply, the record and the child's announcement. */
    private Forked forkOne(VirtualMachine parent) {
        ForkRecord previous = parent.lastFork();
        String reply = ask(parent, "fork 1");
        ForkRecord rec = parent.lastFork();
        if (rec == previous) {
            throw new IllegalStateException(parent + " answered '" + reply + "' but recorded no new fork");
        }
        List<Long> ids = parseParentReply(parent, reply, 1, rec);
        VirtualMachine child = rec.children().get(0);
        awaitAnnouncement(parent, child, 0, ids);
        if (child.firstExitNanos() <= rec.exitNanos()) {
            throw new IllegalStateException(child + " has no first exit after the fork (" + child.firstExitNanos()
                    + " <= " + rec.exitNanos() + ")");
        }
        return new Forked(child, rec);
    }

    /** "parent launched=N ids=a,b,.. errs=0,0,..": every copy launched, ids as recorded. */
    private static List<Long> parseParentReply(VirtualMachine parent, String reply, int count, ForkRecord rec) {
        String[] parts = reply.split(" ");
        if (parts.length != 4 || !parts[0].equals("parent") || !parts[1].equals("launched=" + count)
                || !parts[2].startsWith("ids=") || !parts[3].startsWith("errs=")) {
            throw new IllegalStateException("fork of " + count + " on " + parent + " failed: '" + reply + "'");
        }
        for (String e : parts[3].substring(5).split(",")) {
            if (!e.equals("0")) {
                throw new IllegalStateException("fork of " + count + " on " + parent + " failed: '" + reply + "'");
            }
        }
        List<Long> ids = new ArrayList<>();
        for (String id : parts[2].substring(4).split(",")) {
            ids.add(Long.parseLong(id));
        }
        List<Long> recorded = rec.children().stream().map(VirtualMachine::id).toList();
        if (!ids.equals(recorded)) {
            throw new IllegalStateException(parent + " reports children " + ids + " but the VMM launched " + recorded);
        }
        return ids;
    }

    private void awaitAnnouncement(VirtualMachine parent, VirtualMachine child, int index, List<Long> ids) {
        String want = "child index=" + index + " id=" + ids.get(index) + " parent=" + parent.id() + " gen="
                + (parent.identity().forkGeneration() + 1) + " type=0";
        String got = announcements.await(child);
        if (!got.equals(want)) {
            throw new IllegalStateException(child + " announced '" + got + "', expected '" + want + "'");
        }
    }

    /** A forker child's announcement, whoever its parent: "child index=0 id=<its id> ...". */
    private void awaitAnnouncementOf(VirtualMachine child) {
        String got = announcements.await(child);
        if (!got.startsWith("child index=0 id=" + child.id() + " ")) {
            throw new IllegalStateException(child + " announced '" + got + "'");
        }
    }

    /** Ends a forker (or its child) the guest's way: "stop", "bye", exit code 0. */
    private void stopForker(VirtualMachine child) {
        expect(child, "stop", "bye");
        expectExit(child, child.awaitTermination(VM_TIMEOUT));
        announcements.forget(child);
    }

    /** Ends a parent and any children it still has; safe in a finally after a failure. */
    private void stopParent(VirtualMachine parent) {
        for (VirtualMachine c : parent.children()) {
            c.stop();
        }
        parent.stop();
        announcements.forget(parent);
    }

    // ---- message channel ---------------------------------------------------------------

    static String ask(VirtualMachine vm, String request) {
        return await(vm, request, vm.channel().request(request.getBytes(StandardCharsets.UTF_8)));
    }

    private static String await(VirtualMachine vm, String request, CompletableFuture<byte[]> reply) {
        try {
            return new String(reply.get(VM_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS), StandardCharsets.UTF_8);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted waiting for " + vm + " to answer '" + request + "'", e);
        } catch (ExecutionException e) {
            throw new IllegalStateException(vm + " did not answer '" + request + "': " + e.getCause().getMessage(), e);
        } catch (TimeoutException e) {
            throw new IllegalStateException(vm + " did not answer '" + request + "' within " + VM_TIMEOUT, e);
        }
    }

    private static void expect(VirtualMachine vm, String request, String want) {
        String got = ask(vm, request);
        if (!got.equals(want)) {
            throw new IllegalStateException(vm + " answered '" + request + "' with '" + got + "', expected '" + want
                    + "'");
        }
    }

    private static void expectPrefix(VirtualMachine vm, String request, String prefix) {
        String got = ask(vm, request);
        if (!got.startsWith(prefix)) {
            throw new IllegalStateException(vm + " answered '" + request + "' with '" + got + "', expected '" + prefix
                    + "...'");
        }
    }

    /** Sends {@code request} to every VM at once, then checks every reply. */
    private static void expectAll(List<VirtualMachine> vms, String request, String want) {
        List<CompletableFuture<byte[]>> replies = new ArrayList<>();
        for (VirtualMachine vm : vms) {
            replies.add(vm.channel().request(request.getBytes(StandardCharsets.UTF_8)));
        }
        for (int i = 0; i < vms.size(); i++) {
            String got = await(vms.get(i), request, replies.get(i));
            if (!got.equals(want)) {
                throw new IllegalStateException(vms.get(i) + " answered '" + request + "' with '" + got
                        + "', expected '" + want + "'");
            }
        }
    }

    private static void expectExit(VirtualMachine vm, VmExit exit) {
        if (exit.kind() != VmExit.Kind.EXITED || exit.exitCode() != 0) {
            throw new IllegalStateException(vm + " did not exit cleanly: " + exit.reason());
        }
    }

    private static double blockedMs(ForkRecord r) {
        return (r.resumedNanos() - r.exitNanos()) / 1e6;
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
    }

    /**
     * The unsolicited messages of every VM the benchmark starts: a forker child's first
     * message is its announcement, and nothing else may arrive unasked.
     */
    private static final class Announcements implements VmListener {
        private final Map<Long, CompletableFuture<String>> first = new ConcurrentHashMap<>();
        private final List<String> strays = new ArrayList<>();

        @Override
        public void onUnsolicitedMessage(VirtualMachine vm, byte[] message) {
            String text = new String(message, StandardCharsets.UTF_8);
            if (!future(vm.id()).complete(text)) {
                synchronized (strays) {
                    strays.add(vm + ": " + text);
                }
            }
        }

        private CompletableFuture<String> future(long id) {
            return first.computeIfAbsent(id, k -> new CompletableFuture<>());
        }

        String await(VirtualMachine vm) {
            try {
                return future(vm.id()).get(VM_TIMEOUT.toMillis(), TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted waiting for " + vm + " to announce itself", e);
            } catch (ExecutionException | TimeoutException e) {
                VmExit exit = vm.exit();
                throw new IllegalStateException(vm + " did not announce itself within " + VM_TIMEOUT
                        + (exit == null ? "" : " (it ended: " + exit.reason() + ")"), e);
            }
        }

        void forget(VirtualMachine vm) {
            first.remove(vm.id());
        }

        void checkNoStrays() {
            synchronized (strays) {
                if (!strays.isEmpty()) {
                    throw new IllegalStateException("unexpected unsolicited messages: " + strays);
                }
            }
        }
    }
}
