package io.vmfork.vmm.platform.process;

import io.vmfork.os.Errno;
import io.vmfork.os.LibC;
import io.vmfork.procvm.GuestProcesses;
import io.vmfork.vmm.platform.ParkedThread;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * One guest process: the stub, spawned confined, given the guest's RAM and one thread per
 * vCPU, and then traced, each thread by its vCPU's own thread.
 *
 * <p>Ordering requirements: {@link #launch} (RAM mapped, threads made) before any vCPU
 * thread {@linkplain #seized seizes} its guest thread; every guest thread seized before
 * the stub is let go (an untraced stub thread that reaches the int3 would kill the
 * process); the stub confines itself (seccomp, every thread) before it stops for its
 * tracers, so that no guest instruction runs before the filter is in force.
 */
public final class GuestProcess {
    /**
     * Guest RAM starts here in the process: page 0 cannot be mapped (vm.mmap_min_addr is
     * 4096, and the stub has left the initial user namespace, where CAP_SYS_RAWIO would be
     * needed). A guest's access to page 0 faults; on KVM it reads zero.
     */
    public static final long LOWEST_MAPPED = 0x1000;

    private final int pid;
    private final int sock;
    private final int namespaces;
    /** What the stub must unmap ([stack], [vdso], [vvar]), read when it was spawned. */
    private final long[] unmaps;
    /**
     * A parked thread that traces the main thread (vCPU 0's) since the process was pooled,
     * or null. Whoever launches the process runs vCPU 0 on it ({@link #takeLeaderTracer})
     * or releases the process.
     */
    private ParkedThread leaderTracer;
    private boolean leaderTracedAhead;
    private int[] tids;
    private CountDownLatch toSeize;
    private final AtomicBoolean went = new AtomicBoolean();
    private final AtomicBoolean killed = new AtomicBoolean();
    private volatile boolean sockClosed;
    /**
     * The userfaultfd that tracks the guest's writes to private RAM (asynchronous
     * write-protect, made by the stub at launch), or a negative errno when there is none.
     * Closed with the process.
     */
    private volatile int writeTracker = -Errno.ENOENT;
    private static volatile boolean trackerRefusalLogged;
    private static final org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(GuestProcess.class);

    GuestProcess(GuestProcesses.Spawned s, long[] unmaps, ParkedThread leaderTracer) {
        this.pid = s.pid();
        this.sock = s.sock();
        this.namespaces = s.namespaces();
        this.unmaps = unmaps;
        this.leaderTracer = leaderTracer;
        this.leaderTracedAhead = leaderTracer != null;
    }

    /**
     * The parked thread that already traces the main thread, vCPU 0's, which must run on
     * it; null when the process has none (its vCPU 0 thread seizes it). Once only.
     */
    public synchronized ParkedThread takeLeaderTracer() {
        ParkedThread t = leaderTracer;
        leaderTracer = null;
        return t;
    }

    /** Whether vCPU {@code index}'s thread was seized before the launch, by the thread that runs it. */
    synchronized boolean tracedAhead(int index) {
        return index == 0 && leaderTracedAhead;
    }

    public int pid() {
        return pid;
    }

    /** The CLONE_NEW* flags of the namespaces the process got. */
    public int namespaces() {
        return namespaces;
    }

    /**
     * Maps guest RAM {@code [LOWEST_MAPPED, size)} from {@code memfd} (at the same
     * offsets), shared with the VMM or private to the guest, unmaps what the kernel put in
     * the process that the guest could use (vDSO, vvar, the initial stack) and makes one
     * thread per vCPU.
     */
    public synchronized void launch(int memfd, long size, boolean shared, int vcpus) {
        long[] extents = {LOWEST_MAPPED, size - LOWEST_MAPPED, 0, LOWEST_MAPPED, shared ? 1 : 0};
        launch(new int[] {memfd}, extents, vcpus);
    }

    /** As above, from extents (guest address, length, fd index, file offset, shared: five longs each). */
    public synchronized void launch(int[] fds, long[] extents, int vcpus) {
        // One vCPU traced already: GO goes with the launch, and the stub goes on from its
        // reply to its stop for the tracer without another round trip.
        boolean goNow = vcpus == 1 && leaderTracedAhead;
        GuestProcesses.Launched l = GuestProcesses.launch(sock, fds, extents, unmaps, vcpus, goNow);
        tids = l.tids();
        writeTracker = l.writeTracker();
        if (writeTracker < 0 && extents.length >= 5 && extents[4] == 0 && !trackerRefusalLogged) {
            trackerRefusalLogged = true;
            log.warn("guest processes' writes cannot be tracked here ({}): a VM moves to a new guest process at"
                    + " every fork instead", Errno.name(-writeTracker));
        }
        toSeize = new CountDownLatch(vcpus);
        if (goNow) {
            went.set(true);
            closeSocketLocked();
        }
    }

    /**
     * Whether the guest's writes are tracked in place (its private RAM registered with a
     * write-protect userfaultfd): a capture reads and re-protects them without moving the
     * VM to a new process.
     */
    public boolean tracksWrites() {
        return writeTracker >= 0;
    }

    /** The host tid of vCPU {@code index}'s thread. */
    public synchronized int tid(int index) {
        return tids[index];
    }

    /**
     * Called by each vCPU thread once it traces its guest thread; the last one lets the
     * stub confine itself and stop every thread for its tracer.
     */
    void seized() {
        CountDownLatch l;
        synchronized (this) {
            l = toSeize;
        }
        l.countDown();
        if (l.getCount() == 0 && went.compareAndSet(false, true)) {
            try {
                GuestProcesses.go(sock);
            } finally {
                closeSocket();
            }
        }
    }

    private synchronized void closeSocket() {
        closeSocketLocked();
    }

    private void closeSocketLocked() {
        if (!sockClosed) {
            sockClosed = true;
            LibC.closeQuietly(sock);
        }
    }

    /** Kills the process (SIGKILL; idempotent). Its tracers see every thread end. */
    public void kill() {
        if (killed.compareAndSet(false, true)) {
            LibC.sendSignal(pid, LibC.SIGKILL);
        }
        closeSocket();
    }

    public boolean isKilled() {
        return killed.get();
    }


    /**
     * After every vCPU thread has closed its context: kills the process if it still runs
     * and reaps it when no tracer did.
     */
    public void release() {
        ParkedThread t = takeLeaderTracer();
        if (t != null) {
            t.cancel(); // its end kills the process too (PTRACE_O_EXITKILL)
        }
        kill();
        reapAll();
        closeWriteTracker();
    }

    private synchronized void closeWriteTracker() {
        if (writeTracker >= 0) {
            LibC.closeQuietly(writeTracker);
            writeTracker = -Errno.ENOENT;
        }
    }

    /**
     * Reaps every thread of the killed process, the leader last (the kernel reports it only
     * once the others are reaped). Any thread of the VMM may do it: a wait covers the
     * tracees of every thread of the waiter's process, so no vCPU thread has to. In a PID
     * namespace the process's last thread waits, in the kernel, until every other is
     * reaped: a vCPU thread that waited for its own would wait for the others.
     */
    public synchronized void reapAll() {
        if (reaped) {
            return;
        }
        java.util.List<Integer> left = new java.util.ArrayList<>();
        if (tids != null) {
            for (int i = 1; i < tids.length; i++) {
                left.add(tids[i]);
            }
        }
        // The threads end in an order the kernel decides (in a PID namespace the last one
        // waits until every other is reaped), so each is reaped as it ends; the leader last.
        long deadline = System.nanoTime() + REAP_WITHIN_NANOS;
        while (!left.isEmpty() || !reaped) {
            boolean progress = left.removeIf(GuestProcesses::reapIfEnded);
            if (left.isEmpty() && GuestProcesses.reapIfEnded(pid)) {
                reaped = true;
                break;
            }
            if (!progress) {
                if (System.nanoTime() > deadline) {
                    throw new ProcessPlatformException("guest process " + pid + " did not end within "
                            + REAP_WITHIN_NANOS / 1_000_000 + " ms of SIGKILL (threads " + left + " left)");
                }
                java.util.concurrent.locks.LockSupport.parkNanos(REAP_POLL_NANOS);
            }
        }
    }

    private boolean reaped;
    /** A killed process's threads end within microseconds; this is a bound for a broken host, not a wait. */
    private static final long REAP_WITHIN_NANOS = 10_000_000_000L;
    private static final long REAP_POLL_NANOS = 50_000;

    /** Reaps the process when no tracer will (it was never seized, or its tracers are gone). */
    void reapUntraced() {
        GuestProcesses.reap(pid);
    }

    @Override
    public String toString() {
        return "guest process " + pid;
    }
}
