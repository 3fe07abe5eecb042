package io.vmfork.vmm;

import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.x86.GuestLayout;
import java.security.SecureRandom;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One host's virtual machine monitor: the platform its guests run on (KVM or the process
 * platform, {@link io.vmfork.vmm.platform.Platform}), the VMs it runs and the host's limits. Thread-safe. Plain Java, no actors: the cluster's HostActor drives one.
 */
public final class Vmm implements AutoCloseable {
    private static final org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(Vmm.class);
    /** VM ids: the host id above bit 40, a sequence number below. */
    private static final int HOST_ID_SHIFT = 40;

    private final VmmSettings settings;
    /** Where guests run here: KVM or the process platform. */
    private final io.vmfork.vmm.platform.Platform guestPlatform;
    private final io.vmfork.vmm.platform.PlatformChoice platform;
    private final SecureRandom entropy = new SecureRandom();
    /**
     * Starts from the clock, so that a host that restarts does not hand out the ids of
     * VMs (and capsules) of its previous run again.
     */
    private final AtomicLong nextSeq = new AtomicLong(((System.currentTimeMillis() & ((1L << 28) - 1)) << 12) + 1);
    private final AtomicInteger live = new AtomicInteger();
    private final AtomicLong nextForkId = new AtomicLong(1);
    private final Map<Long, VirtualMachine> vms = new ConcurrentHashMap<>();
    private volatile boolean closed;
    private volatile io.vmfork.vmm.fork.CopyPlacement placement = io.vmfork.vmm.fork.CopyPlacement.LOCAL;

    private Vmm(VmmSettings settings, io.vmfork.vmm.platform.Platform guestPlatform,
            io.vmfork.vmm.platform.PlatformChoice platform) {
        this.settings = settings;
        this.guestPlatform = guestPlatform;
        this.platform = platform;
    }

    /**
     * Opens the VMM on the platform {@code vmfork.vmm.platform} names, or for "auto" on KVM
     * where the KVM device opens read-write and on the process platform otherwise. The
     * choice and its reason are logged and kept ({@link #platform()}).
     */
    public static Vmm open(VmmSettings settings) {
        if (settings.hostId() < 0 || settings.hostId() >= (1L << (63 - HOST_ID_SHIFT))) {
            throw new IllegalArgumentException("vmfork.host.id must be in [0, 2^23), got " + settings.hostId());
        }
        io.vmfork.vmm.platform.PlatformChoice choice = io.vmfork.vmm.platform.PlatformChoice.decide(settings.platform(),
                settings.kvmDevice());
        log.info("platform: {}", choice);
        io.vmfork.vmm.platform.Platform p = choice.isProcess()
                ? io.vmfork.vmm.platform.process.ProcessPlatform.open(settings)
                : io.vmfork.vmm.platform.kvm.KvmPlatform.open(settings);
        return new Vmm(settings, p, choice);
    }

    public static Vmm open() {
        return open(VmmSettings.load());
    }

    public VmmSettings settings() {
        return settings;
    }

    /**
     * Where the copies of every later fork on this host go (the cluster's placement
     * service). Without one, every copy is a local child.
     */
    public void useCopyPlacement(io.vmfork.vmm.fork.CopyPlacement p) {
        placement = java.util.Objects.requireNonNull(p, "placement");
    }

    /** Which platform guests run on here, and why it was chosen. */
    public io.vmfork.vmm.platform.PlatformChoice platform() {
        return platform;
    }

    /** Where guests run here. */
    io.vmfork.vmm.platform.Platform guestPlatform() {
        return guestPlatform;
    }

    /** The process platform, or null on KVM. For tests. */
    io.vmfork.vmm.platform.process.ProcessPlatform processPlatform() {
        return guestPlatform instanceof io.vmfork.vmm.platform.process.ProcessPlatform p ? p : null;
    }

    /** The KVM platform, or null on the process platform. For tests. */
    io.vmfork.vmm.platform.kvm.KvmPlatform kvmPlatform() {
        return guestPlatform instanceof io.vmfork.vmm.platform.kvm.KvmPlatform k ? k : null;
    }

    /** The pool of ready KVM VMs, or null (the process platform, or no pool). For tests. */
    io.vmfork.vmm.platform.kvm.VmPool pool() {
        var k = kvmPlatform();
        return k == null ? null : k.pool();
    }

    /** A ready KVM VM from the pool, or null. For tests. */
    io.vmfork.vmm.platform.kvm.VmPool.Entry takePooledVm(long memorySize) {
        var k = kvmPlatform();
        return k == null ? null : k.takePooledVm(memorySize);
    }

    /** The host's CPUID as KVM offers it, or null on the process platform. For tests. */
    io.vmfork.kvm.x86.Cpuid cpuid() {
        var k = kvmPlatform();
        return k == null ? null : k.cpuid();
    }

    io.vmfork.vmm.fork.CopyPlacement copyPlacement() {
        return placement;
    }

    /** A fork is about to launch {@code n} VMs here at once (the platform's pool grows for the next). */
    void expectLaunches(int n) {
        guestPlatform.expectLaunches(n);
    }

    /** The CPUID entries (kvm_cpuid_entry2 layout) a VM booted here runs with. */
    byte[] cpuidEntries() {
        return guestPlatform.cpuidEntries();
    }

    SecureRandom entropy() {
        return entropy;
    }

    /** Boots a new VM from a guest image. */
    public VirtualMachine launch(VmSpec spec) {
        long start = System.nanoTime();
        checkLaunch(settings, spec.memoryBytes(), spec.vcpus());
        reserveSlot();
        try {
            VmIdentity id = new VmIdentity(newVmId(), 0, settings.hostId(), 0, spec.vmType());
            return VirtualMachine.boot(this, spec, id, start);
        } catch (RuntimeException e) {
            releaseSlot();
            throw e;
        }
    }

    /**
     * Starts a clone of a captured VM on this host: a new VM id, the captured VM as its
     * parent, the next fork generation; its message channel gets the captured requests.
     */
    public VirtualMachine restore(MachineState state, RuntimeImage image, VmListener listener) {
        checkMemorySize(state.memorySize());
        if (state.vcpus().size() > settings.maxVcpus()) {
            throw new LaunchException("the captured VM has " + state.vcpus().size() + " vCPUs; this host allows "
                    + settings.maxVcpus());
        }
        reserveSlot();
        try {
            VmIdentity src = state.identity();
            VmIdentity id = new VmIdentity(newVmId(), src.vmId(), settings.hostId(), src.forkGeneration() + 1,
                    src.vmType());
            return VirtualMachine.restore(this, state, image, id, "clone of " + Long.toHexString(src.vmId()),
                    listener == null ? VmListener.NONE : listener, null, true, null);
        } catch (RuntimeException e) {
            releaseSlot();
            throw e;
        }
    }

    /**
     * Starts one remote copy of a fork made on another host (the patent's
     * {@code VM_clone(source, capsule)}, once the capsule is read): like a fork child, it
     * gets a new VM id of this host, the captured VM as its parent, the next fork
     * generation, {@code spec.vmType()}, fresh entropy and this host's clock; its message
     * channel starts empty; if {@code spec.forkBlock()} is not 0 its fork block says role
     * 1, {@code spec.copyIndex()} and its id before it runs. Its RAM is a copy-on-write view
     * of {@code image}, which it retains (the caller keeps its own reference); clones of one
     * image share it. Throws {@link LaunchException} (or
     * {@link io.vmfork.os.NativeCallException} when KVM refuses) and leaves nothing
     * behind.
     */
    public VirtualMachine launchClone(MachineState state, RuntimeImage image, io.vmfork.vmm.fork.CloneSpec spec) {
        java.util.Objects.requireNonNull(state, "state");
        java.util.Objects.requireNonNull(image, "image");
        java.util.Objects.requireNonNull(spec, "spec");
        checkMemorySize(state.memorySize());
        if (state.vcpus().size() > settings.maxVcpus()) {
            throw new LaunchException("the captured VM has " + state.vcpus().size() + " vCPUs; this host allows "
                    + settings.maxVcpus());
        }
        if (image.size() != state.memorySize()) {
            throw new LaunchException("the runtime image has " + image.size() + " bytes, the captured VM "
                    + state.memorySize());
        }
        long block = spec.forkBlock();
        if (block != 0 && (block < GuestLayout.IMAGE_MIN || block > state.memorySize() - io.vmfork.vmm.fork.ForkBlock.SIZE)) {
            throw new LaunchException(String.format("fork block 0x%x is not inside guest RAM at or above 0x%x", block,
                    GuestLayout.IMAGE_MIN));
        }
        reserveSlot();
        try {
            VmIdentity src = state.identity();
            VmIdentity id = new VmIdentity(newVmId(), src.vmId(), settings.hostId(), src.forkGeneration() + 1,
                    spec.vmType());
            return VirtualMachine.restore(this, state, image, id, "clone of " + Long.toHexString(src.vmId()),
                    spec.listener(), null, false, c -> {
                        if (block != 0) {
                            io.vmfork.vmm.fork.ForkBlock.writeChild(c.memory(), block, spec.copyIndex(), c.id());
                        }
                    });
        } catch (RuntimeException e) {
            releaseSlot();
            throw e;
        }
    }

    /** A new fork id, unique in this VMM. */
    long newForkId() {
        return nextForkId.getAndIncrement();
    }

    /**
     * Starts a clone from a capsule: reads and verifies the whole capsule (compatibility
     * with this host first, then the guest model ({@link io.vmfork.vmm.x86.GuestModel}),
     * every chunk and the digest) before any VM exists; memory below 0x200000 is the VMM's
     * own, rebuilt rather than taken from the capsule. A bad or incompatible capsule throws
     * {@link io.vmfork.vmm.capsule.CapsuleException} and leaves nothing behind; so does a
     * state this host's KVM refuses after all (as {@link io.vmfork.vmm.capsule.CapsuleIncompatibleException}).
     */
    public VirtualMachine restoreCapsule(java.io.InputStream in, VmListener listener) throws java.io.IOException {
        return restoreCapsule(in, listener, io.vmfork.vmm.capsule.TrustedSigners.none());
    }

    /**
     * As {@link #restoreCapsule(java.io.InputStream, VmListener)}, taking only a capsule signed
     * by one of {@code signers} (none required if empty): any other is refused with
     * {@link io.vmfork.vmm.capsule.CapsuleSignatureException} once its digest is verified,
     * before any VM exists.
     */
    public VirtualMachine restoreCapsule(java.io.InputStream in, VmListener listener,
            io.vmfork.vmm.capsule.TrustedSigners signers) throws java.io.IOException {
        io.vmfork.vmm.capsule.CapsuleLimits limits = capsuleLimits();
        io.vmfork.vmm.capsule.HostPlatform host = hostPlatform();
        try (io.vmfork.vmm.capsule.ImageSink sink = io.vmfork.vmm.capsule.ImageSink.create("vmfork-capsule",
                settings.maxMemory(), limits.maxChunkBytes())) {
            io.vmfork.vmm.capsule.CapsuleContents c = io.vmfork.vmm.capsule.CapsuleReader.create(limits)
                    .requireSignedBy(signers).read(in, sink, host, guestRules());
            RuntimeImage image = sink.toImage(c.state().memorySize());
            try {
                return restore(c.state(), image, listener);
            } catch (io.vmfork.os.NativeCallException | io.vmfork.kvm.KvmException e) {
                // The last line of defence: the guest model should have refused whatever KVM refuses.
                throw new io.vmfork.vmm.capsule.CapsuleIncompatibleException(
                        c.header().getSourceHostName() + " (id " + c.header().getSourceHostId() + ")",
                        host.hostName() + " (id " + host.hostId() + ")",
                        List.of("this host's KVM refused the capsule's state: " + e.getMessage()), e);
            } finally {
                image.release();
            }
        }
    }

    /** What a restored guest must be on this host (its limits and the MSRs it saves). */
    public io.vmfork.vmm.x86.GuestModel.Rules guestRules() {
        io.vmfork.vmm.platform.HostCaps caps = guestPlatform.caps();
        return new io.vmfork.vmm.x86.GuestModel.Rules(settings.maxVcpus(), settings.minMemory(), settings.maxMemory(),
                settings.maxMessageBytes(), settings.maxQueuedRequests(), caps.msrIndices(), caps.xsaveSize(),
                !platform.isProcess());
    }

    /** Writes a snapshot as a capsule; the VM it came from may run meanwhile. */
    public io.vmfork.vmm.capsule.CapsuleStats writeCapsule(VirtualMachine.Snapshot snapshot, java.io.OutputStream out)
            throws java.io.IOException {
        // The header records what the guest could observe of this host's CPU.
        return io.vmfork.vmm.capsule.CapsuleWriter.create(capsuleLimits()).write(out, snapshot.state(),
                snapshot.image(), hostPlatform());
    }

    /** As {@link #writeCapsule(VirtualMachine.Snapshot, java.io.OutputStream)}, signed by {@code signer}. */
    public io.vmfork.vmm.capsule.CapsuleStats writeCapsule(VirtualMachine.Snapshot snapshot, java.io.OutputStream out,
            io.vmfork.vmm.capsule.CapsuleSigner signer) throws java.io.IOException {
        return io.vmfork.vmm.capsule.CapsuleWriter.create(capsuleLimits()).signedBy(signer).write(out,
                snapshot.state(), snapshot.image(), hostPlatform());
    }

    public io.vmfork.vmm.capsule.CapsuleLimits capsuleLimits() {
        return settings.capsuleLimits();
    }

    /** The VM with this id, if it is alive on this host. */
    public VirtualMachine vm(long id) {
        return vms.get(id);
    }

    /** Children launched at once by one fork from this many copies on (smaller forks use the forking thread alone). */
    private static final int PARALLEL_LAUNCH_FROM = 4;
    private final Object launchersLock = new Object();
    private java.util.concurrent.ExecutorService launchers; // guarded by launchersLock

    /**
     * Runs {@code worker} on the calling thread and, when {@code tasks} is large enough,
     * on up to {@code vmfork.vmm.fork.launch-threads} launch threads of this VMM at once (as
     * many as are free: a busy pool leaves the work to the caller); returns when every run
     * of it has returned. The worker takes its tasks itself.
     */
    void runParallel(Runnable worker, int tasks) {
        int helpers = tasks < PARALLEL_LAUNCH_FROM ? 0 : Math.min(settings.forkLaunchThreads(), tasks - 1);
        java.util.concurrent.ExecutorService ex = helpers == 0 ? null : launchers();
        if (ex == null) {
            worker.run();
            return;
        }
        List<java.util.concurrent.Future<?>> running = new java.util.ArrayList<>();
        try {
            for (int i = 0; i < helpers; i++) {
                running.add(ex.submit(worker));
            }
        } catch (java.util.concurrent.RejectedExecutionException e) {
            // closing: the forking thread does the rest alone
        }
        worker.run();
        for (java.util.concurrent.Future<?> f : running) {
            try {
                f.get();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                // the helpers finish their tasks anyway; the results they wrote stand
                break;
            } catch (java.util.concurrent.ExecutionException e) {
                throw new IllegalStateException("a launch thread failed", e.getCause());
            }
        }
    }

    private java.util.concurrent.ExecutorService launchers() {
        synchronized (launchersLock) {
            if (closed || settings.forkLaunchThreads() < 1) {
                return null;
            }
            if (launchers == null) {
                java.util.concurrent.atomic.AtomicInteger n = new java.util.concurrent.atomic.AtomicInteger();
                // No thread while no fan-out runs: one ends after a second idle.
                launchers = new java.util.concurrent.ThreadPoolExecutor(0, settings.forkLaunchThreads(), 1,
                        java.util.concurrent.TimeUnit.SECONDS, new java.util.concurrent.SynchronousQueue<>(), r -> {
                            Thread t = new Thread(r, "vmfork-fork-launch-" + n.incrementAndGet());
                            t.setDaemon(true);
                            return t;
                        });
            }
            return launchers;
        }
    }

    private void stopLaunchers() {
        java.util.concurrent.ExecutorService ex;
        synchronized (launchersLock) {
            ex = launchers;
            launchers = null;
        }
        if (ex != null) {
            // Every launch has given its slot back by now (close waited for that).
            ex.shutdown();
            try {
                ex.awaitTermination(settings.stopTimeout().toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** Makes a launched VM known; refused once close() has begun (the caller releases it). */
    void register(VirtualMachine vm) {
        if (closed) {
            throw new LaunchException("the VMM is closed");
        }
        vms.put(vm.id(), vm);
    }

    /** Takes a VM slot for a fork child; false when the host is full. */
    boolean tryReserveSlot() {
        if (closed) {
            return false;
        }
        if (live.incrementAndGet() > settings.maxVms()) {
            live.decrementAndGet();
            return false;
        }
        return true;
    }

    /** Gives back a slot taken for a launch that failed before its VM was registered. */
    void releaseSlot() {
        live.decrementAndGet();
    }

    /** What this host offers a capsule: KVM API version, CPU features, limits. */
    public io.vmfork.vmm.capsule.HostPlatform hostPlatform() {
        return guestPlatform.hostPlatform();
    }

    io.vmfork.vmm.platform.HostCaps caps() {
        return guestPlatform.caps();
    }

    /**
     * What {@link #launch} refuses before anything exists, for callers that check a launch's
     * arguments before they open a VMM (the CLI): RAM size and range, the vCPU count.
     *
     * @throws LaunchException naming the limit and its key
     */
    public static void checkLaunch(VmmSettings settings, long memoryBytes, int vcpus) {
        checkMemorySize(settings, memoryBytes);
        if (vcpus > settings.maxVcpus()) {
            throw new LaunchException("a VM may have at most " + settings.maxVcpus() + " vCPUs (vmfork.vmm.max-vcpus), got "
                    + vcpus);
        }
    }

    void checkMemorySize(long bytes) {
        checkMemorySize(settings, bytes);
    }

    private static void checkMemorySize(VmmSettings settings, long bytes) {
        if (bytes % GuestLayout.LARGE_PAGE != 0) {
            throw new LaunchException("guest RAM must be a multiple of 2 MiB, got " + bytes + " bytes");
        }
        if (bytes < settings.minMemory() || bytes > settings.maxMemory() || bytes > GuestLayout.MAX_MEMORY) {
            throw new LaunchException("guest RAM of " + (bytes >> 20) + " MiB is outside the allowed range "
                    + (settings.minMemory() >> 20) + " MiB .. " + (Math.min(settings.maxMemory(), GuestLayout.MAX_MEMORY) >> 20)
                    + " MiB (vmfork.vmm.memory.min/max)");
        }
    }

    private void reserveSlot() {
        if (closed) {
            throw new LaunchException("the VMM is closed");
        }
        int n = live.incrementAndGet();
        if (n > settings.maxVms()) {
            live.decrementAndGet();
            throw new LaunchException("this host runs " + settings.maxVms() + " VMs already (vmfork.vmm.max-vms)");
        }
    }

    long newVmId() {
        return (settings.hostId() << HOST_ID_SHIFT) | (nextSeq.getAndIncrement() & ((1L << HOST_ID_SHIFT) - 1));
    }

    void unregister(VirtualMachine vm) {
        if (vms.remove(vm.id(), vm)) {
            live.decrementAndGet();
        }
    }

    /** VMs alive now. */
    public List<VirtualMachine> vms() {
        return List.copyOf(vms.values());
    }

    public int liveCount() {
        return live.get();
    }

    /**
     * Stops every VM, including those being launched or forked right now, waits until each
     * has released what it held, then closes the platform (/dev/kvm, the guest processes' spawner). After it begins, no launch, fork or
     * restore takes a slot, and one that had taken its slot before is stopped as it
     * registers.
     */
    @Override
    public void close() {
        closed = true;
        // First, so that it makes nothing more ahead; a launch now makes what it needs inline.
        guestPlatform.closing();
        long deadline = System.nanoTime() + 2 * settings.stopTimeout().toNanos();
        try {
            // A launch that reserved its slot before `closed` was set registers after it: go
            // on until every slot is given back, not just until the map looks empty.
            while (live.get() > 0 && System.nanoTime() < deadline) {
                List<VirtualMachine> running = vms();
                if (running.isEmpty()) {
                    Thread.sleep(1);
                    continue;
                }
                for (VirtualMachine vm : running) {
                    vm.end(VmExit.stopped("the VMM is closing"));
                }
                for (VirtualMachine vm : running) {
                    try {
                        vm.awaitTermination(settings.stopTimeout());
                    } catch (RuntimeException e) {
                        log.warn("{} did not end while the VMM closed: {}", vm, e.getMessage());
                    }
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } finally {
            if (live.get() > 0) {
                log.warn("closing the {} platform with {} VM slots still taken", platform.name(), live.get());
            }
            stopLaunchers();
            guestPlatform.close();
        }
    }
}
