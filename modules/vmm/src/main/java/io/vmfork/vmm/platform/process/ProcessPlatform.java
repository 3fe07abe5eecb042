package io.vmfork.vmm.platform.process;

import com.sun.jna.Memory;
import io.vmfork.os.LibC;
import io.vmfork.os.Memfd;
import io.vmfork.os.NativeCallException;
import io.vmfork.procvm.GuestProcesses;
import io.vmfork.vmm.platform.ParkedThread;
import java.io.IOException;
import java.io.InputStream;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.LinkedBlockingQueue;

/**
 * The process platform of one VMM: guests run natively, at CPL3, each in a confined host
 * process of its own (the stub executable, src/main/c/stub in native-kvm) that its vCPU
 * threads trace with ptrace. For hosts without /dev/kvm; docs/platforms.md says what its
 * isolation is and is not.
 *
 * <p>Every guest process is spawned by one thread of this object, which lives as long as
 * the VMM: a guest process has that thread as its parent and dies with it
 * (PR_SET_PDEATHSIG), so no guest outlives its VMM, even when the JVM is killed.
 */
public final class ProcessPlatform implements io.vmfork.vmm.platform.Platform {
    /** The stub executable inside the native-kvm jar. */
    static final String STUB_RESOURCE = "/io/vmfork/platform/vmfork-stub";

    private final Memfd stub;
    private final java.util.concurrent.ScheduledExecutorService spawner;
    private final int xstateSize;
    private volatile boolean closed;
    private final java.util.concurrent.atomic.AtomicBoolean closeOnce = new java.util.concurrent.atomic.AtomicBoolean();
    /**
     * Guest processes spawned ahead for launches, fork children and clones
     * (vmfork.vmm.pool.size of them), each with a parked thread that already traces its
     * main thread, which then runs vCPU 0. Spawning (clone, six namespaces, a tmpfs root,
     * exec: ~1 ms here) and starting a thread (0.3-0.5 ms from start to its first
     * instruction here) are the bulk of a cold launch, which skips both when it finds one
     * ready. Refilled by the spawner thread.
     */
    private final LinkedBlockingQueue<GuestProcess> ready = new LinkedBlockingQueue<>();
    /**
     * Guest processes spawned ahead for a VM that moves out of its own (the parent of a
     * fork, in its pause): its vCPU threads trace the new one, so none is traced ahead.
     */
    private final LinkedBlockingQueue<GuestProcess> forMoves = new LinkedBlockingQueue<>();
    private final int poolSize;
    private final int moveSize;
    private final long refillAfterNanos;
    /** When a pooled process was last taken (System.nanoTime). */
    private volatile long lastTake;
    /** Deaths of guest processes that no tracer is waiting for. */
    private final GuestDeathWatch deaths;

    /** The VMM's settings; null for a platform opened only to check the host ({@link #check}). */
    private final io.vmfork.vmm.VmmSettings settings;
    /** The CPUID a guest here runs with: the host CPU's own (cpuid is not intercepted). */
    private final byte[] cpuidEntries = io.vmfork.vmm.capsule.CpuFeatures.hostObserved();
    /**
     * What a capture holds here: the XSAVE area (as KVM's 4 KiB region), XCR0, and the MSRs
     * a KVM capture lists (a vCPU here keeps only the FS/GS bases of them), so that a
     * capsule moves between the platforms.
     */
    private final io.vmfork.vmm.platform.HostCaps caps = new io.vmfork.vmm.platform.HostCaps(true,
            io.vmfork.kvm.KvmVcpu.XSAVE_SIZE, false, true, io.vmfork.kvm.x86.Msr.GUEST_VISIBLE.clone());

    private ProcessPlatform(Memfd stub, int poolSize, Duration refillAfter, io.vmfork.vmm.VmmSettings settings) {
        this.settings = settings;
        this.poolSize = poolSize;
        this.moveSize = Math.min(poolSize, MOVE_POOL);
        this.refillAfterNanos = refillAfter.toNanos();
        this.stub = stub;
        this.spawner = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "vmfork-guest-spawner");
            t.setDaemon(true);
            return t;
        });
        this.xstateSize = GuestProcesses.xstateSize();
        this.deaths = new GuestDeathWatch();
    }

    /** Processes kept ready for moves: one a fork, two so that forks in a row find one. */
    private static final int MOVE_POOL = 2;

    /**
     * Opens the platform: loads the stub into an executable memfd (nothing is written to
     * disk) and checks that a guest process can be made and confined here, so that a host
     * that cannot (ptrace or seccomp refused) says so at start, not at the first launch.
     */
    public static ProcessPlatform open(io.vmfork.vmm.VmmSettings settings) {
        return open(settings.poolSize(), settings.poolRefillAfter(), settings);
    }

    /**
     * Opens a platform without a pool and closes it: throws what {@link #open} would on
     * this host (a {@link ProcessPlatformException} naming what the host refuses).
     */
    public static void check() {
        open(0, Duration.ZERO, null).close();
    }

    private static ProcessPlatform open(int poolSize, Duration refillAfter, io.vmfork.vmm.VmmSettings settings) {
        Memfd stub = loadStub();
        ProcessPlatform p;
        try {
            p = new ProcessPlatform(stub, poolSize, refillAfter, settings);
        } catch (RuntimeException | Error e) {
            stub.close();
            throw e;
        }
        try {
            p.selfTest();
            p.refill();
            return p;
        } catch (RuntimeException e) {
            p.close();
            throw e;
        }
    }

    private static Memfd loadStub() {
        byte[] bytes;
        try (InputStream in = ProcessPlatform.class.getResourceAsStream(STUB_RESOURCE)) {
            if (in == null) {
                throw new ProcessPlatformException("the guest stub " + STUB_RESOURCE
                        + " is not on the class path (native-kvm was built without it)");
            }
            bytes = in.readAllBytes();
        } catch (IOException e) {
            throw new ProcessPlatformException("reading the guest stub " + STUB_RESOURCE + ": " + e.getMessage());
        }
        Memfd fd;
        try {
            fd = Memfd.createExecutable("guest-stub", bytes.length);
        } catch (NativeCallException e) {
            throw HostRefusal.stubMemfd(e.errno(), e.getMessage());
        }
        try (Memory m = new Memory(bytes.length)) {
            m.write(0, bytes, 0, bytes.length);
            LibC.pwriteFully(fd.fd(), m, bytes.length, 0, "guest stub");
            return fd;
        } catch (RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    /**
     * Takes one guest process as far as a guest's first instruction and ends it: spawned
     * (clone, the namespaces, execveat of the stub), launched on one page of RAM, seized
     * by this thread (ptrace) and let go, so that its seccomp filter goes in and it stops
     * at its int3. What the host refuses is named now, at open, and not by the first VM.
     * The namespaces the host refuses are dropped, not failed on: logged here once.
     */
    private void selfTest() {
        GuestProcess g = spawnNow(false);
        try (Memfd ram = Memfd.create("vmfork-self-test", SELF_TEST_RAM)) {
            g.launch(ram.fd(), SELF_TEST_RAM, true, 1);
            int tid = g.tid(0);
            try {
                GuestProcesses.seize(tid);
            } catch (NativeCallException e) {
                throw HostRefusal.ptrace(e.errno());
            }
            g.seized(); // the last (only) tracer: GO
            long[] info = new long[GuestProcesses.INFO_WORDS];
            int kind = GuestProcesses.await(tid, null, info);
            if (kind == GuestProcesses.STOP_EXITED && (info[0] & STUB_EXIT_SECCOMP) != 0) {
                throw HostRefusal.seccomp((int) info[0] & 0x7f);
            }
            if (kind != GuestProcesses.STOP_SIGNAL || info[0] != SIGTRAP) {
                throw new ProcessPlatformException("a guest process did not reach its first stop: stop " + kind
                        + ", signal or status " + info[0] + " (expected SIGTRAP at the stub's int3)");
            }
        } catch (NativeCallException e) {
            throw new ProcessPlatformException("a guest process cannot be started on this host: " + e.getMessage()
                    + " (docs/platforms.md, \"Requirements\")");
        } finally {
            g.release();
        }
        String refused = GuestProcesses.refusedNamespaces();
        if (!refused.isEmpty()) {
            log.warn("process platform: {}", HostRefusal.namespacesNote(refused, g.namespaces()));
        }
    }

    private static final org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(ProcessPlatform.class);
    /** The self-test guest's RAM: [GuestProcess.LOWEST_MAPPED, 8 KiB), one page. */
    private static final long SELF_TEST_RAM = 0x2000;
    /** stub/proto.h: the stub's exit status when its seccomp filter is refused, with the errno in the low bits. */
    private static final int STUB_EXIT_SECCOMP = 0x80;
    private static final int SIGTRAP = 5;

    /**
     * Ends a VM whose guest process dies while none of its tracers waits for it (every vCPU
     * in the VMM, e.g. in RECV): {@code onDeath} gets the crash reason, unless the VMM
     * killed the process itself. Watched until the process ends. {@code vcpus}: its threads.
     */
    /** Stops watching {@code process}; its pidfds are closed when this returns. */
    public void unwatch(GuestProcess process) {
        deaths.unwatch(process);
    }

    public void watch(GuestProcess process, int vcpus, java.util.function.Consumer<String> onDeath) {
        int[] tids = new int[vcpus];
        for (int i = 0; i < vcpus; i++) {
            tids[i] = process.tid(i);
        }
        deaths.watch(process, tids, onDeath);
    }

    /** Guest processes spawned ahead and ready now, for launches and for moves. */
    public int readyCount() {
        return ready.size() + forMoves.size();
    }

    /** Waits until the pools of spawned guest processes are full again (they refill after each take); false on timeout. */
    public boolean awaitFull(Duration within) throws InterruptedException {
        long deadline = System.nanoTime() + within.toNanos();
        while (ready.size() < poolSize || forMoves.size() < moveSize) {
            if (System.nanoTime() > deadline) {
                return false;
            }
            Thread.sleep(1);
        }
        return true;
    }

    /** Bytes of a guest thread's XSAVE area here (CPUID 0xD). */
    public int xstateSize() {
        return xstateSize;
    }

    /**
     * A new guest process, waiting for its launch: a ready one from the pool (whose main
     * thread a parked thread traces already: {@link GuestProcess#takeLeaderTracer}), else
     * one spawned now.
     */
    public GuestProcess spawn() {
        return take(ready);
    }

    /** A new guest process for a VM that moves into it: none of its threads is traced yet. */
    public GuestProcess spawnForMove() {
        return take(forMoves);
    }

    private GuestProcess take(LinkedBlockingQueue<GuestProcess> pool) {
        if (closed) {
            throw new ProcessPlatformException("the process platform is closed");
        }
        GuestProcess g = pool.poll();
        lastTake = System.nanoTime();
        refill();
        // Spawned now: no tracer thread ahead (its start and seize would be serial on the
        // spawner thread); the vCPU's own new thread seizes the process, as for a move.
        return g != null ? g : spawnNow(false);
    }

    /**
     * Tops the pools up, on the spawner thread (whose death kills every guest process), once
     * no process was taken for vmfork.vmm.pool.refill-after: a spawn takes ~1 ms of CPU,
     * which a launch or a fork's children in progress would otherwise share.
     */
    private void refill() {
        if (poolSize <= 0 || closed) {
            return;
        }
        if (refilling.compareAndSet(false, true)) {
            refillLater(0);
        }
    }

    /**
     * One step of a refill, on the spawner thread: one process spawned, or the step put off
     * until no process was taken for refill-after. It never waits on that thread, so that a
     * launch's own spawn (the pool empty, in a fan-out) runs between two steps, not after a
     * whole refill.
     */
    private void refillStep() {
        if (closed) {
            refilling.set(false);
            return;
        }
        if (forMoves.size() >= moveSize && ready.size() >= poolSize) {
            refilling.set(false);
            // A take between the check and the reset found the refill under way: see again.
            if ((forMoves.size() < moveSize || ready.size() < poolSize) && refilling.compareAndSet(false, true)) {
                refillLater(0);
            }
            return;
        }
        long wait = lastTake + refillAfterNanos - System.nanoTime();
        if (wait > 0) {
            refillLater(wait);
            return;
        }
        try {
            if (forMoves.size() < moveSize) {
                forMoves.add(make(false));
            } else {
                ready.add(make(true));
            }
        } catch (RuntimeException e) {
            refilling.set(false); // the next take tries again; a launch spawns inline meanwhile
            return;
        }
        refillLater(0);
    }

    private void refillLater(long nanos) {
        try {
            spawner.schedule(this::refillStep, nanos, java.util.concurrent.TimeUnit.NANOSECONDS);
        } catch (java.util.concurrent.RejectedExecutionException e) {
            refilling.set(false); // closing
        }
    }

    /** Whether a refill is under way (a step run or scheduled on the spawner thread). */
    private final java.util.concurrent.atomic.AtomicBoolean refilling = new java.util.concurrent.atomic.AtomicBoolean();

    /**
     * Spawns a guest process (on the spawner thread), reads what it must unmap, and with
     * {@code traced} starts the parked thread that seizes its main thread.
     */
    private GuestProcess make(boolean traced) {
        GuestProcesses.Spawned s = GuestProcesses.spawn(stub.fd());
        try {
            long[] unmaps = GuestProcesses.unmaps(s.pid());
            ParkedThread tracer = traced
                    ? ParkedThread.startAfter("vmfork-pooled-vcpu", () -> GuestProcesses.seize(s.pid()))
                    : null;
            return new GuestProcess(s, unmaps, tracer);
        } catch (RuntimeException e) {
            LibC.sendSignal(s.pid(), LibC.SIGKILL);
            LibC.closeQuietly(s.sock());
            GuestProcesses.reap(s.pid());
            throw e;
        }
    }

    private GuestProcess spawnNow(boolean traced) {
        Future<GuestProcess> f = spawner.submit(() -> make(traced));
        try {
            return f.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new ProcessPlatformException("interrupted while spawning a guest process");
        } catch (ExecutionException e) {
            Throwable c = e.getCause();
            if (c instanceof GuestProcesses.SpawnException n) {
                throw HostRefusal.spawn(n.step(), n.errno());
            }
            if (c instanceof NativeCallException n) {
                throw new ProcessPlatformException("a guest process cannot be made on this host: " + n.getMessage()
                        + " (docs/platforms.md, \"Requirements\")");
            }
            throw new ProcessPlatformException("spawning a guest process: " + c);
        }
    }

    @Override
    public String name() {
        return "process";
    }

    @Override
    public byte[] cpuidEntries() {
        return cpuidEntries.clone();
    }

    @Override
    public io.vmfork.vmm.platform.HostCaps caps() {
        return caps;
    }

    @Override
    public io.vmfork.vmm.capsule.HostPlatform hostPlatform() {
        return io.vmfork.vmm.capsule.HostPlatform.ofProcess(settings);
    }

    /**
     * A guest process that maps the VM's RAM file shared (the VMM reads and writes the same
     * pages), one thread per vCPU, each with the boot registers (only vCPU 0 runs from
     * them). On failure the process is released, the memory left to the caller.
     */
    @Override
    public io.vmfork.vmm.platform.Machine boot(io.vmfork.vmm.memory.GuestMemory memory, int vcpus, long[] entryRegs) {
        GuestProcess p = spawn();
        try {
            p.launch(memory.sharedFileDescriptor(), memory.size(), true, vcpus);
            ProcessMachine m = new ProcessMachine(this, p, memory, vcpus);
            for (int i = 0; i < vcpus; i++) {
                m.context(i).setRegs(entryRegs);
            }
            return m;
        } catch (RuntimeException e) {
            p.release();
            throw e;
        }
    }

    /**
     * A guest process mapping the image privately (the VMM reaches its RAM through the
     * process), one thread per captured vCPU, each with its registers, FS/GS bases and XSAVE
     * area. Waits for the image to be complete first. On failure everything made is released.
     */
    @Override
    public io.vmfork.vmm.platform.Machine restore(String name, io.vmfork.vmm.state.MachineState state,
            io.vmfork.vmm.memory.RuntimeImage image) {
        io.vmfork.vmm.memory.GuestMemory memory = io.vmfork.vmm.memory.GuestMemory.forProcess(name, image,
                settings.maxImageExtents());
        GuestProcess p = null;
        try {
            image.awaitReady();
            p = spawn();
            io.vmfork.vmm.memory.RuntimeImage.ProcessMapping plan = image.processMapping(GuestProcess.LOWEST_MAPPED);
            p.launch(plan.fds(), plan.extents(), state.vcpus().size());
            memory.attachProcess(p.pid());
            ProcessMachine m = new ProcessMachine(this, p, memory, state.vcpus().size());
            for (int i = 0; i < state.vcpus().size(); i++) {
                io.vmfork.vmm.state.VcpuState vs = state.vcpus().get(i);
                if (vs.index() != i) {
                    throw new io.vmfork.vmm.LaunchException("the captured vCPUs are not in index order 0..n-1: vCPU "
                            + vs.index() + " at position " + i);
                }
                ProcessStates.restore(m.context(i), vs, xstateSize);
            }
            return m;
        } catch (RuntimeException e) {
            try {
                if (p != null) {
                    p.release();
                }
            } finally {
                memory.close();
            }
            throw e;
        }
    }

    /**
     * Stops the spawner thread: every guest process it made is killed by the kernel
     * (PDEATHSIG). Idempotent: a VMM may be closed by its owner and by a shutdown path.
     */
    @Override
    public void close() {
        if (closeOnce.getAndSet(true)) {
            return; // a second close would close fd numbers that are others' by then
        }
        closed = true;
        spawner.shutdownNow();
        try {
            spawner.awaitTermination(5, java.util.concurrent.TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        for (LinkedBlockingQueue<GuestProcess> pool : List.of(ready, forMoves)) {
            for (GuestProcess g = pool.poll(); g != null; g = pool.poll()) {
                g.release();
            }
        }
        deaths.close();
        stub.close();
    }
}
