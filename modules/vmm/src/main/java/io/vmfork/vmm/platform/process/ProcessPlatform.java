package io.vmfork.vmm.platform.process;

import com.sun.jna.Memory;
import io.vmfork.kvm.memory.Memfd;
import io.vmfork.kvm.sys.GuestProcesses;
import io.vmfork.kvm.sys.LibC;
import io.vmfork.kvm.sys.NativeCallException;
import java.io.IOException;
import java.io.InputStream;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

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
public final class ProcessPlatform implements AutoCloseable {
    /** The stub executable inside the native-kvm jar. */
    static final String STUB_RESOURCE = "/io/vmfork/platform/vmfork-stub";

    private final Memfd stub;
    private final ExecutorService spawner;
    private final int xstateSize;
    private volatile boolean closed;
    /**
     * Guest processes spawned ahead, waiting for their launch (vmfork.vmm.pool.size of
     * them): spawning (clone, six namespaces, a tmpfs root, exec) is the bulk of a cold
     * launch here, and a launch that finds one ready skips it. Refilled by the spawner
     * thread after each take.
     */
    private final java.util.concurrent.LinkedBlockingQueue<GuestProcess> ready =
            new java.util.concurrent.LinkedBlockingQueue<>();
    private final int poolSize;
    /** Deaths of guest processes that no tracer is waiting for. */
    private final GuestDeathWatch deaths;

    private ProcessPlatform(Memfd stub, int poolSize) {
        this.poolSize = poolSize;
        this.stub = stub;
        this.spawner = Executors.newSingleThreadExecutor(r -> {
            Thread t = new Thread(r, "vmfork-guest-spawner");
            t.setDaemon(true);
            return t;
        });
        this.xstateSize = GuestProcesses.xstateSize();
        this.deaths = new GuestDeathWatch();
    }

    /**
     * Opens the platform: loads the stub into an executable memfd (nothing is written to
     * disk) and checks that a guest process can be made and confined here, so that a host
     * that cannot (ptrace or seccomp refused) says so at start, not at the first launch.
     */
    public static ProcessPlatform open(int poolSize) {
        Memfd stub = loadStub();
        ProcessPlatform p;
        try {
            p = new ProcessPlatform(stub, poolSize);
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
        GuestProcess g = spawnNow();
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
    public void watch(GuestProcess process, int vcpus, java.util.function.Consumer<String> onDeath) {
        deaths.watch(process, process.tid(vcpus - 1), onDeath);
    }

    /** Guest processes spawned ahead and ready now. */
    public int readyCount() {
        return ready.size();
    }

    /** Waits until the pool of spawned guest processes is full again (it refills after each take); false on timeout. */
    public boolean awaitFull(java.time.Duration within) throws InterruptedException {
        long deadline = System.nanoTime() + within.toNanos();
        while (ready.size() < poolSize) {
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

    /** A new guest process, waiting for its launch: a ready one from the pool, else spawned now. */
    public GuestProcess spawn() {
        if (closed) {
            throw new ProcessPlatformException("the process platform is closed");
        }
        GuestProcess g = ready.poll();
        if (g != null) {
            refill();
            return g;
        }
        return spawnNow();
    }

    /** Tops the pool up to its size, on the spawner thread (whose death kills them all). */
    private void refill() {
        if (poolSize <= 0 || closed) {
            return;
        }
        try {
            spawner.execute(() -> {
                while (!closed && ready.size() < poolSize) {
                    try {
                        ready.add(new GuestProcess(GuestProcesses.spawn(stub.fd())));
                    } catch (RuntimeException e) {
                        return; // the next take tries again; a launch spawns inline meanwhile
                    }
                }
            });
        } catch (java.util.concurrent.RejectedExecutionException e) {
            // closing
        }
    }

    private GuestProcess spawnNow() {
        Future<GuestProcesses.Spawned> f = spawner.submit(() -> GuestProcesses.spawn(stub.fd()));
        try {
            return new GuestProcess(f.get());
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

    /** Stops the spawner thread: every guest process it made is killed by the kernel (PDEATHSIG). */
    @Override
    public void close() {
        closed = true;
        spawner.shutdownNow();
        try {
            spawner.awaitTermination(5, java.util.concurrent.TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        for (GuestProcess g = ready.poll(); g != null; g = ready.poll()) {
            g.kill();
            g.reapUntraced();
        }
        deaths.close();
        stub.close();
    }
}
