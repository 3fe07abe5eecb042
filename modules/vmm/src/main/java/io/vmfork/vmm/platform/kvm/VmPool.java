package io.vmfork.vmm.platform.kvm;

import io.vmfork.kvm.Kvm;
import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.KvmVm;
import io.vmfork.kvm.x86.Cpuid;
import io.vmfork.os.Mapping;
import io.vmfork.vmm.platform.ParkedThread;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * KVM VMs made ahead of need: each an empty KVM VM with vCPU 0 created, its kvm_run
 * mapped and the host's CPUID ({@link KvmPlatform}) set, and a started thread parked to run that vCPU: what
 * every launch on this host starts with. A daemon
 * thread keeps {@code vmfork.vmm.pool.size} of them ready (more, up to {@code max-size},
 * after a fork made that many children at once: {@link #expect}; back to {@code size}
 * after {@code shrink-after} without such a fork) and makes a new one once no VM
 * was taken for {@code vmfork.vmm.pool.refill-after}; {@link #take} never waits for it (an empty pool answers null and the
 * launch creates its VM inline, as without a pool). {@link #close} stops the thread and
 * releases every VM, vCPU fd, mapping and parked thread the pool still holds.
 */
public final class VmPool implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(VmPool.class);

    /**
     * A pooled VM: the KVM VM, its vCPU 0 with the host's CPUID, and a parked thread to run
     * that vCPU; and, once the pool has seen a fork child or clone launched, memory slot 0
     * (dirty-logged) set over {@code reserved}, an empty address range of {@code slotSize}
     * bytes, the RAM size of the last such launch: a child of that size maps its view there
     * and saves setting the slot (a tenth of a millisecond). The taker owns all of it.
     */
    public record Entry(KvmVm vm, KvmVcpu vcpu0, ParkedThread thread, Mapping reserved, long slotSize) {
        public void close() {
            thread.cancel();
            try {
                vcpu0.close();
            } finally {
                try {
                    vm.close();
                } finally {
                    if (reserved != null) {
                        reserved.close();
                    }
                }
            }
        }
    }

    private final Kvm kvm;
    private final Cpuid cpuid;
    private final int size;
    private final int maxSize;
    private final long shrinkAfterNanos;
    /** How many the filler keeps ready now: size, or more after a fan-out. */
    private int target;
    /** System.nanoTime() of the last fan-out that raised or held the target. */
    private long lastDemand;
    private final Duration retryAfter;
    /** RAM size of the last fork child or clone launched: what new pooled VMs get their slot for. */
    private long slotSize;
    private final long refillAfterNanos;
    /** System.nanoTime() of the last take. */
    private long lastTake;
    private final ArrayDeque<Entry> ready = new ArrayDeque<>();
    private final Thread filler;
    private boolean closed;
    private long made;

    private VmPool(Kvm kvm, Cpuid cpuid, int size, int maxSize, Duration shrinkAfter, Duration retryAfter,
            Duration refillAfter) {
        this.kvm = kvm;
        this.cpuid = cpuid;
        this.size = size;
        this.maxSize = Math.max(size, maxSize);
        this.shrinkAfterNanos = shrinkAfter.toNanos();
        this.target = size;
        this.retryAfter = retryAfter;
        this.refillAfterNanos = refillAfter.toNanos();
        this.filler = new Thread(this::fill, "vmfork-vm-pool");
        this.filler.setDaemon(true);
    }

    /** A pool of {@code size} VMs, filling from now on; {@code size} must be at least 1. */
    public static VmPool start(Kvm kvm, Cpuid cpuid, int size, Duration retryAfter, Duration refillAfter) {
        return start(kvm, cpuid, size, size, Duration.ofMinutes(1), retryAfter, refillAfter);
    }

    /** As above, growing to up to {@code maxSize} after fan-outs, for {@code shrinkAfter}. */
    public static VmPool start(Kvm kvm, Cpuid cpuid, int size, int maxSize, Duration shrinkAfter, Duration retryAfter,
            Duration refillAfter) {
        if (size < 1) {
            throw new IllegalArgumentException("a VM pool holds at least 1 VM, got " + size);
        }
        VmPool p = new VmPool(kvm, cpuid, size, maxSize, shrinkAfter, retryAfter, refillAfter);
        p.filler.start();
        return p;
    }

    /**
     * A ready VM, or null if none is (the caller creates one inline). Never waits.
     * {@code memorySize}: the RAM of the fork child or clone it becomes (0 for a booted VM);
     * the VMs made from now on get their slot for that size.
     */
    public Entry take(long memorySize) {
        synchronized (this) {
            if (memorySize > 0) {
                slotSize = memorySize;
            }
            Entry e = closed ? null : ready.pollFirst();
            if (e != null) {
                taken++;
                lastTake = System.nanoTime();
                notifyAll(); // the filler makes its replacement, once launches are quiet
            }
            return e;
        }
    }

    /**
     * A fork is about to launch {@code n} VMs at once: from now on the filler keeps up to
     * that many ready (at most max-size), so that the next such fan-out finds them made.
     */
    public synchronized void expect(int n) {
        if (n > size && !closed) {
            lastDemand = System.nanoTime();
            if (n > target) {
                target = Math.min(maxSize, n);
                notifyAll();
            }
        }
    }

    /** How many VMs the pool keeps ready now. */
    public synchronized int target() {
        return target;
    }

    /** VMs ready now. */
    public synchronized int readyCount() {
        return ready.size();
    }

    /** Waits until the pool is full (tests count resources at a quiet point); false on timeout. */
    public synchronized boolean awaitFull(Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!closed && ready.size() < target) {
            long left = deadline - System.nanoTime();
            if (left <= 0) {
                return false;
            }
            TimeUnit.NANOSECONDS.timedWait(this, left);
        }
        return !closed;
    }

    private void fill() {
        try {
            while (true) {
                List<Entry> surplus = new ArrayList<>();
                synchronized (this) {
                    while (!closed) {
                        if (target > size && System.nanoTime() - lastDemand >= shrinkAfterNanos) {
                            target = size; // no fan-out for a while: give the extra VMs back
                        }
                        while (ready.size() > target) {
                            surplus.add(ready.pollLast());
                        }
                        if (!surplus.isEmpty()) {
                            break;
                        }
                        if (ready.size() >= target) {
                            if (target > size) {
                                TimeUnit.NANOSECONDS.timedWait(this,
                                        Math.max(1, shrinkAfterNanos - (System.nanoTime() - lastDemand)));
                            } else {
                                wait();
                            }
                            continue;
                        }
                        // Not while a launch runs: on a small host the refill would take the
                        // CPU from the child being launched (measured: its memory slot took
                        // 0.15-0.4 ms instead of 0.1 with an immediate refill beside it).
                        long quiet = System.nanoTime() - lastTake;
                        if (made > 0 && quiet < refillAfterNanos) {
                            TimeUnit.NANOSECONDS.timedWait(this, refillAfterNanos - quiet);
                            continue;
                        }
                        break;
                    }
                    if (closed) {
                        return;
                    }
                }
                if (!surplus.isEmpty()) {
                    for (Entry x : surplus) {
                        x.close();
                    }
                    continue;
                }
                Entry e;
                try {
                    e = make();
                } catch (RuntimeException ex) {
                    // Out of fds or memory, say: launches create inline meanwhile.
                    log.warn("VM pool: cannot make a VM ({}); retrying in {}", ex.getMessage(), retryAfter);
                    synchronized (this) {
                        if (!closed) {
                            TimeUnit.NANOSECONDS.timedWait(this, retryAfter.toNanos());
                        }
                    }
                    continue;
                }
                synchronized (this) {
                    if (closed) {
                        e.close();
                        return;
                    }
                    ready.addLast(e);
                    made++;
                    notifyAll();
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    private Entry make() {
        long size;
        synchronized (this) {
            size = slotSize;
        }
        KvmVm vm = kvm.createVm();
        KvmVcpu vcpu = null;
        Mapping reserved = null;
        try {
            vcpu = vm.createVcpu(0);
            vcpu.setCpuid(cpuid);
            if (size > 0) {
                reserved = Mapping.reserve(size, "vmfork-pooled-ram");
                vm.setUserMemoryRegion(0, KvmVm.MEM_LOG_DIRTY_PAGES, 0, size, reserved.address());
            }
            return new Entry(vm, vcpu, ParkedThread.start("vmfork-pooled-vcpu"), reserved, size);
        } catch (RuntimeException | Error e) { // a thread that cannot start is an OutOfMemoryError
            if (vcpu != null) {
                vcpu.close();
            }
            vm.close();
            if (reserved != null) {
                reserved.close();
            }
            throw e;
        }
    }

    /** Ready VMs whose memory slot is set over a reserved range of {@code size} bytes (tests). */
    public synchronized int withSlotFor(long size) {
        return (int) ready.stream().filter(e -> e.reserved() != null && e.slotSize() == size).count();
    }

    /** VMs taken since the start (tests). */
    public synchronized long taken() {
        return taken;
    }

    private long taken;

    /** VMs made since the start (tests). */
    public synchronized long made() {
        return made;
    }

    /**
     * Stops the filler (waiting for a VM it is making) and releases every ready VM. After
     * it, {@link #take} answers null.
     */
    @Override
    public void close() {
        synchronized (this) {
            closed = true;
            notifyAll();
        }
        boolean interrupted = false;
        while (filler.isAlive()) {
            try {
                filler.join();
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        synchronized (this) {
            for (Entry e : ready) {
                try {
                    e.close();
                } catch (RuntimeException ex) {
                    log.warn("VM pool: closing a pooled VM", ex);
                }
            }
            ready.clear();
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }
}
