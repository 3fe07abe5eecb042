package io.vmfork.vmm.platform.process;

import io.vmfork.os.Processes;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.memory.MemoryFreezer;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.platform.ExecContext;
import io.vmfork.vmm.platform.Machine;
import io.vmfork.vmm.platform.ParkedThread;
import io.vmfork.vmm.state.MemorySource;
import io.vmfork.vmm.state.VcpuState;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A VM on the process platform: a confined guest process that maps guest RAM from address 0
 * (a booted VM's RAM file shared with the VMM, a restored VM's image privately), one thread
 * of it per vCPU, each traced by that vCPU's thread in the VMM ({@link ProcessExecContext}).
 * Dirty tracking is the kernel's own: the anonymous pages of the process's private mapping
 * are the pages it wrote ({@code PAGEMAP_SCAN}). A capture that changes the image moves the
 * VM to a new guest process that maps it.
 */
final class ProcessMachine implements Machine {
    private static final Logger log = LoggerFactory.getLogger(ProcessMachine.class);

    /** Reaps the guest processes that captures moved VMs out of (waitpid works from any thread of the VMM). */
    private static final ExecutorService REAPER = Executors.newSingleThreadExecutor(r -> {
        Thread t = new Thread(r, "vmfork-reaper");
        t.setDaemon(true);
        return t;
    });

    private final ProcessPlatform platform;
    private final GuestMemory memory;
    private final List<ProcessExecContext> contexts = new ArrayList<>();
    /** The guest process the VM runs in now; a capture moves the VM to a new one. */
    private volatile GuestProcess process;
    /** What the platform's death watch calls, once the VM has started. */
    private volatile Consumer<String> onDeath;
    /** The guest process a capture moved the VM out of, killed, to reap after the pause; null if none. */
    private GuestProcess retired;

    /** Takes ownership of the process and the memory; {@code memory} reaches the process's RAM already. */
    ProcessMachine(ProcessPlatform platform, GuestProcess process, GuestMemory memory, int vcpus) {
        this.platform = platform;
        this.process = process;
        this.memory = memory;
        for (int i = 0; i < vcpus; i++) {
            contexts.add(new ProcessExecContext(process, i, memory));
        }
    }

    ProcessExecContext context(int index) {
        return contexts.get(index);
    }

    @Override
    public GuestMemory memory() {
        return memory;
    }

    @Override
    public List<ExecContext> contexts() {
        return List.copyOf(contexts);
    }

    /** vCPU 0 runs on the thread that traces the process's main thread already, if it came with one (ptrace ties them). */
    @Override
    public ParkedThread takeThread(int index) {
        return index == 0 ? process.takeLeaderTracer() : null;
    }

    /**
     * A guest process killed from outside while no vCPU thread traces it in a wait (all in
     * the VMM, e.g. in RECV) ends the VM as crashed, as a tracer that sees the death does.
     */
    @Override
    public void started(Consumer<String> onDeath) {
        this.onDeath = onDeath;
        watch(process);
    }

    private void watch(GuestProcess p) {
        platform.watch(p, contexts.size(), reason -> {
            Consumer<String> d = onDeath;
            if (process == p && d != null) {
                d.accept(reason);
            }
        });
    }

    /**
     * Ordering requirements: every vCPU's state first, each read by its own thread
     * (ptrace), while the VM's RAM is still reachable through its process; then the runs
     * the process wrote since the last capture (this platform's dirty log: the pages its
     * write-protect userfaultfd found written, protected again in the same walk; or, where
     * the host gave no such userfaultfd, its anonymous pages, all written since it
     * started), copied into the image; then, at the first capture of a booted VM (its RAM
     * file becomes the image) or where writes are not tracked, the VM moves to a new
     * process that maps the image privately, every vCPU at once (the new process confines
     * itself only once all its threads are traced), before it resumes.
     */
    @Override
    public Capture capture(boolean[] started, BitSet resultPages, VcpuThreads threads) {
        long t0 = System.nanoTime();
        int xstate = platform.xstateSize();
        List<VcpuState> states = new ArrayList<>();
        for (ProcessExecContext c : contexts) {
            int i = c.index();
            states.add(threads.runOn(i, () -> ProcessStates.capture(c, xstate, started[i])));
        }
        GuestProcess old = process;
        List<MemorySource.Run> written = new ArrayList<>();
        boolean tracked = old.tracksWrites();
        if (memory.isPrivate()) {
            long[] r = tracked ? Processes.writtenRangesTracked(old.pid(), 0, memory.size())
                    : Processes.writtenRanges(old.pid(), 0, memory.size());
            for (int i = 0; i < r.length; i += 2) {
                written.add(new MemorySource.Run(r[i], r[i + 1] - r[i]));
            }
        }
        long tScanned = System.nanoTime();
        MemoryFreezer.Freeze f = memory.freezer().freezeProcess(written, tracked);
        try {
            if (f.viewChanged()) {
                moveToNewProcess(f.image(), states, old, threads);
            }
            return new Capture(states, f.image(), platform.cpuidEntries(), 0, tScanned - t0);
        } catch (RuntimeException e) {
            f.image().release();
            throw e;
        }
    }

    /**
     * The VM goes on from {@code image} in a new guest process: the old one is killed, and
     * each vCPU's thread (this one inline, the others as they wait paused) attaches to its
     * thread in the new process with the state it had.
     */
    private void moveToNewProcess(RuntimeImage image, List<VcpuState> states, GuestProcess old,
            VcpuThreads threads) {
        GuestProcess next = platform.spawnForMove();
        try {
            RuntimeImage.ProcessMapping plan = image.processMapping(GuestProcess.LOWEST_MAPPED);
            next.launch(plan.fds(), plan.extents(), states.size());
        } catch (RuntimeException e) {
            next.release();
            throw e;
        }
        old.kill();
        retired = old; // reaped once the VM runs again: its teardown is the kernel's, not the pause's
        // Two rounds, each vCPU on its own thread: all trace their new threads (the last
        // lets the new process confine itself and stop), then each takes up its state.
        threads.onEach(i -> contexts.get(i).beginMove(next));
        threads.onEach(i -> contexts.get(i).finishMove(states.get(i).cpu().fpu()));
        process = next;
        memory.attachProcess(next.pid());
        if (onDeath != null) {
            watch(next);
        }
    }

    /**
     * The memory's background work ({@link MemoryFreezer#resumed}) and reaping the process the
     * VM moved out of (its threads end as the kernel tears down its address space: tens of
     * ms at 1 GiB), off the caller's thread: a FORK's caller resumes its guest only after this.
     */
    @Override
    public void resumed() {
        memory.freezer().resumed();
        GuestProcess old;
        synchronized (this) {
            old = retired;
            retired = null;
        }
        if (old != null) {
            REAPER.execute(() -> {
                try {
                    old.release();
                } catch (RuntimeException e) {
                    log.warn("reaping {} after a capture", old, e);
                }
            });
        }
    }

    @Override
    public void release() {
        try {
            for (ProcessExecContext c : contexts) {
                c.close(); // closed already by the vCPU threads that ran them, unless the launch failed
            }
            GuestProcess p = process;
            platform.unwatch(p);
            p.release();
            GuestProcess r;
            synchronized (this) {
                r = retired;
                retired = null;
            }
            if (r != null) {
                r.release();
            }
        } finally {
            memory.close();
        }
    }

    @Override
    public int guestPid() {
        return process.pid();
    }
}
