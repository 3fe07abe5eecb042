package io.vmfork.vmm;

import io.vmfork.kvm.Kvm;
import io.vmfork.kvm.VcpuThreads;
import io.vmfork.kvm.x86.Cpuid;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.x86.GuestLayout;
import java.security.SecureRandom;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One host's virtual machine monitor: the /dev/kvm handle, the VMs it runs and the
 * host's limits. Thread-safe. Plain Java, no actors: the cluster's HostActor drives one.
 */
public final class Vmm implements AutoCloseable {
    private static final org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(Vmm.class);
    private static final AtomicBoolean SIGNAL_INSTALLED = new AtomicBoolean();
    /** VM ids: the host id above bit 40, a sequence number below. */
    private static final int HOST_ID_SHIFT = 40;

    private final VmmSettings settings;
    private final Kvm kvm;
    private final Cpuid cpuid;
    private final byte[] cpuidEntries;
    private final VcpuStates.HostCaps caps;
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
    /** KVM VMs made ahead of need, or null (vmfork.vmm.pool.size = 0). */
    private final VmPool pool;

    /** The process platform, or null when guests run on KVM. */
    private final io.vmfork.vmm.platform.process.ProcessPlatform processPlatform;
    private final io.vmfork.vmm.platform.PlatformChoice platform;

    /** A VMM on the process platform: no KVM, no pool of KVM VMs. */
    private Vmm(VmmSettings settings, io.vmfork.vmm.platform.process.ProcessPlatform processPlatform,
            io.vmfork.vmm.platform.PlatformChoice platform) {
        this.settings = settings;
        this.kvm = null;
        this.cpuid = null;
        // The CPUID a guest here runs with is the host CPU's own (cpuid is not intercepted).
        this.cpuidEntries = io.vmfork.vmm.capsule.CpuFeatures.hostObserved();
        // What a capsule may carry here: the XSAVE area (as KVM's 4 KiB region), XCR0, and the
        // MSRs a KVM capture lists (a process-platform vCPU keeps only the FS/GS bases of them).
        this.caps = new VcpuStates.HostCaps(true, io.vmfork.kvm.KvmVcpu.XSAVE_SIZE, false, true,
                io.vmfork.kvm.x86.Msr.GUEST_VISIBLE.clone());
        this.pool = null;
        this.processPlatform = processPlatform;
        this.platform = platform;
    }

    private Vmm(VmmSettings settings, Kvm kvm, io.vmfork.vmm.platform.PlatformChoice platform) {
        this.settings = settings;
        this.processPlatform = null;
        this.platform = platform;
        this.kvm = kvm;
        this.cpuid = kvm.supportedCpuid();
        this.cpuidEntries = cpuid.entryBytes();
        this.caps = hostCaps(kvm, cpuid);
        this.pool = settings.poolSize() > 0 ? VmPool.start(kvm, cpuid, settings.poolSize(), settings.poolMaxSize(),
                settings.poolShrinkAfter(), settings.poolRetryAfter(), settings.poolRefillAfter())
                : null;
    }

    /** XSAVE component 18, AMX tile data: enabled per process, on request. */
    private static final int XFEATURE_XTILEDATA = 18;

    /**
     * What vCPU state this host can save and restore: the XSAVE area or FXSAVE, XCRs, and
     * which MSRs.
     *
     * <p>The XSAVE area is carried wherever KVM can get and set it, whatever KVM's
     * supported CPUID says of XSAVE: on PVM hosts that list lacks XSAVE, yet the guest runs
     * at CPL3 with the host's XCR0 and uses AVX and AVX-512 registers, which KVM_GET_FPU
     * does not hold (issue 6). KVM_GET_XSAVE2 with KVM_CAP_XSAVE2's size covers components
     * beyond 4 KiB (AMX tile data, once this process has permission for it).
     */
    private static VcpuStates.HostCaps hostCaps(Kvm kvm, Cpuid cpuid) {
        boolean xsave = kvm.checkExtension(Kvm.CAP_XSAVE) > 0;
        int xsave2Size = kvm.checkExtension(Kvm.CAP_XSAVE2);
        int xsaveSize = Math.max(io.vmfork.kvm.KvmVcpu.XSAVE_SIZE, xsave2Size);
        boolean xcrs = kvm.checkExtension(Kvm.CAP_XCRS) > 0 && cpuid.hasXsave();
        int[] msrs = io.vmfork.vmm.x86.GuestModel.hostMsrs(kvm.msrIndexList());
        return new VcpuStates.HostCaps(xsave, xsaveSize, xsave2Size > 0, xcrs, msrs);
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
        if (choice.isProcess()) {
            return new Vmm(settings, io.vmfork.vmm.platform.process.ProcessPlatform.open(settings.poolSize(),
                    settings.poolRefillAfter()),
                    choice);
        }
        return openKvm(settings, choice);
    }

    private static Vmm openKvm(VmmSettings settings, io.vmfork.vmm.platform.PlatformChoice choice) {
        Kvm kvm;
        try {
            kvm = Kvm.open(settings.kvmDevice());
        } catch (io.vmfork.kvm.KvmException e) {
            String why = io.vmfork.vmm.platform.HostPlatforms.kvmUnusableReason(settings.kvmDevice());
            throw new io.vmfork.kvm.KvmException("the kvm platform is configured (vmfork.vmm.platform or"
                    + " VMFORK_PLATFORM = kvm) but " + (why != null ? why : e.getMessage()) + ": load the kvm module"
                    + " of this CPU (or enable nested virtualisation), give this user read-write access to it, or set"
                    + " vmfork.vmm.platform = auto to run guests on the process platform", e);
        }
        try {
            if (SIGNAL_INSTALLED.compareAndSet(false, true)) {
                VcpuThreads.installKickSignal(settings.kickSignal());
                // Before any vCPU of this process exists; false where there is no AMX.
                VcpuThreads.requestGuestXstate(XFEATURE_XTILEDATA);
            }
            return new Vmm(settings, kvm, choice);
        } catch (RuntimeException e) {
            kvm.close();
            throw e;
        }
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

    /** The process platform, or null on KVM. */
    io.vmfork.vmm.platform.process.ProcessPlatform processPlatform() {
        return processPlatform;
    }

    io.vmfork.vmm.fork.CopyPlacement copyPlacement() {
        return placement;
    }

    Kvm kvm() {
        return kvm;
    }

    /** The pool of ready KVM VMs, or null when there is none. */
    VmPool pool() {
        return pool;
    }

    /**
     * A ready KVM VM from the pool, or null (no pool, or it is empty, or the VMM is
     * closing): the caller then creates one inline. {@code memorySize}: the RAM of the VM
     * it becomes if that is a fork child or clone (its memory slot may be set already:
     * {@link VmPool.Entry#reserved}), 0 for a booted VM.
     */
    VmPool.Entry takePooledVm(long memorySize) {
        VmPool p = pool;
        return p == null ? null : p.take(memorySize);
    }

    /** A fork is about to launch {@code n} VMs here at once (the pool grows for the next). */
    void expectLaunches(int n) {
        VmPool p = pool;
        if (p != null) {
            p.expect(n);
        }
    }

    /** The CPUID every VM booted here gets (and every pooled vCPU has); shared, never changed. */
    Cpuid cpuid() {
        return cpuid;
    }

    /** The CPUID entries (kvm_cpuid_entry2 layout) a VM booted here runs with. */
    byte[] cpuidEntries() {
        return cpuidEntries.clone();
    }

    /** Whether {@code entries} (a captured VM's CPUID) is this host's {@link #cpuid()}. */
    boolean isHostCpuid(byte[] entries) {
        return java.util.Arrays.equals(cpuidEntries, entries);
    }

    SecureRandom entropy() {
        return entropy;
    }

    /** Boots a new VM from a guest image. */
    public VirtualMachine launch(VmSpec spec) {
        long start = System.nanoTime();
        checkMemorySize(spec.memoryBytes());
        if (spec.vcpus() > settings.maxVcpus()) {
            throw new LaunchException("a VM may have at most " + settings.maxVcpus() + " vCPUs (vmfork.vmm.max-vcpus), got "
                    + spec.vcpus());
        }
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
        if (block != 0 && (block < GuestLayout.IMAGE_MIN || block > state.memorySize() - FORK_BLOCK_SIZE)) {
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
                            c.memory().writeInt(block + 32, io.vmfork.vmm.hypercall.Hypercalls.FORK_CHILD);
                            c.memory().writeInt(block + 36, spec.copyIndex());
                            c.memory().writeLong(block + 40, c.id());
                        }
                    });
        } catch (RuntimeException e) {
            releaseSlot();
            throw e;
        }
    }

    /** Bytes of {@code struct vmf_fork}. */
    private static final int FORK_BLOCK_SIZE = 48;

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
        io.vmfork.vmm.capsule.CapsuleLimits limits = capsuleLimits();
        io.vmfork.vmm.capsule.HostPlatform host = hostPlatform();
        try (io.vmfork.vmm.capsule.ImageSink sink = io.vmfork.vmm.capsule.ImageSink.create("vmfork-capsule",
                settings.maxMemory(), limits.maxChunkBytes())) {
            io.vmfork.vmm.capsule.CapsuleContents c = io.vmfork.vmm.capsule.CapsuleReader.create(limits)
                    .read(in, sink, host, guestRules());
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
        return new io.vmfork.vmm.x86.GuestModel.Rules(settings.maxVcpus(), settings.minMemory(), settings.maxMemory(),
                settings.maxMessageBytes(), settings.maxQueuedRequests(), caps.msrIndices(), caps.xsaveSize(),
                processPlatform == null);
    }

    /** Writes a snapshot as a capsule; the VM it came from may run meanwhile. */
    public io.vmfork.vmm.capsule.CapsuleStats writeCapsule(VirtualMachine.Snapshot snapshot, java.io.OutputStream out)
            throws java.io.IOException {
        // The header records what the guest could observe of this host's CPU.
        return io.vmfork.vmm.capsule.CapsuleWriter.create(capsuleLimits()).write(out, snapshot.state(),
                snapshot.image(), hostPlatform());
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
        return kvm == null ? io.vmfork.vmm.capsule.HostPlatform.ofProcess(settings)
                : io.vmfork.vmm.capsule.HostPlatform.of(kvm, settings);
    }

    VcpuStates.HostCaps caps() {
        return caps;
    }

    void checkMemorySize(long bytes) {
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
     * has released what it held, then closes /dev/kvm. After it begins, no launch, fork or
     * restore takes a slot, and one that had taken its slot before is stopped as it
     * registers.
     */
    @Override
    public void close() {
        closed = true;
        if (pool != null) {
            // First, so that it makes no more VMs; a launch now creates its VM inline.
            pool.close();
        }
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
                log.warn("closing /dev/kvm with {} VM slots still taken", live.get());
            }
            stopLaunchers();
            if (kvm != null) {
                kvm.close();
            }
            if (processPlatform != null) {
                processPlatform.close();
            }
        }
    }
}
