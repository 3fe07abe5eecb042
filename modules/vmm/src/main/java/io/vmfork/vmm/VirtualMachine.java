package io.vmfork.vmm;

import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.hypercall.Hypercalls;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.platform.ExecContext;
import io.vmfork.vmm.platform.Machine;
import io.vmfork.vmm.state.DeviceState;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.VcpuState;
import io.vmfork.vmm.x86.CpuSetup;
import io.vmfork.vmm.x86.GuestLayout;
import io.vmfork.vmm.x86.PageTables;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One running VM: its machine on the host's platform (guest RAM and vCPU contexts: a KVM VM,
 * or a confined guest process), its vCPU threads and its device model (console, message
 * channel). Made by {@link Vmm#launch}. Every host resource it holds is released when it
 * ends, by whatever path; {@link #termination()} completes after that.
 */
public final class VirtualMachine {
    private static final Logger log = LoggerFactory.getLogger(VirtualMachine.class);

    private final Vmm vmm;
    private final VmIdentity identity;
    private final String imageName;
    private final GuestMemory memory;
    /** The platform's half of the VM: its address space and vCPU contexts. */
    private final Machine machine;
    private final List<Vcpu> vcpus = new ArrayList<>();
    private final RunControl control = new RunControl();
    private final RemoteTickets remoteTickets = new RemoteTickets(control);
    private final MessageChannel channel;
    private final Console console;
    private final VmListener listener;
    private final HypercallDispatcher dispatcher = new HypercallDispatcher(this);
    private final ForkPath forkPath = new ForkPath(this);
    private final CompletableFuture<VmExit> termination = new CompletableFuture<>();
    private final CompletableFuture<Long> ready = new CompletableFuture<>();
    private final AtomicBoolean ending = new AtomicBoolean();
    private final AtomicBoolean released = new AtomicBoolean();
    private final long launchStartNanos;
    private final VirtualMachine parent;
    private final Set<VirtualMachine> children = ConcurrentHashMap.newKeySet();
    private volatile long firstExitNanos;
    /** The Linux personality of a Linux guest (docs/linux.md); null for an SDK guest. Set before the vCPUs start. */
    private volatile LinuxGuest linux;
    private volatile VmState state = VmState.CREATED;
    private volatile VmExit exit;
    private int vcpusFinished;

    /** One vCPU per context of the machine, each on the thread the machine has for it or a new one. */
    private VirtualMachine(Vmm vmm, VmIdentity identity, String imageName, Machine machine, VmListener listener,
            long launchStartNanos, VirtualMachine parent) {
        this.vmm = vmm;
        this.parent = parent;
        this.identity = identity;
        this.imageName = imageName;
        this.machine = machine;
        this.memory = machine.memory();
        this.listener = listener;
        this.launchStartNanos = launchStartNanos;
        VmmSettings s = vmm.settings();
        this.channel = new MessageChannel(control, s.maxMessageBytes(), s.maxQueuedRequests());
        this.console = new Console(s.consoleBufferBytes());
        for (ExecContext context : machine.contexts()) {
            Vcpu v = new Vcpu(this, context, control, dispatcher, machine.takeThread(context.index()));
            vcpus.add(v);
            control.register(v);
        }
    }

    /**
     * Boots a guest image: RAM, image, page tables, boot info, KVM VM, vCPUs in 64-bit
     * mode at CPL3, then the vCPU threads. On failure everything made so far is released.
     */
    static VirtualMachine boot(Vmm vmm, VmSpec spec, VmIdentity identity, long launchStartNanos) {
        if (spec.image().kind() == ElfImage.Kind.LINUX) {
            return bootLinux(vmm, spec, identity, launchStartNanos);
        }
        VmmSettings s = vmm.settings();
        long size = spec.memoryBytes();
        ElfImage image = spec.image();
        long stackTop = size;
        long heapEnd = size - s.stackSize();
        if (image.lowestAddress() < GuestLayout.IMAGE_MIN) {
            throw new LaunchException(String.format("guest image %s loads at 0x%x, below 0x%x where guest images start",
                    image.name(), image.lowestAddress(), GuestLayout.IMAGE_MIN));
        }
        if (image.endAddress() > heapEnd) {
            throw new LaunchException(String.format(
                    "guest image %s (up to 0x%x) does not fit in %d MiB of RAM with a %d KiB stack", image.name(),
                    image.endAddress(), size >> 20, s.stackSize() >> 10));
        }
        GuestMemory memory = GuestMemory.create("vmfork-" + Long.toHexString(identity.vmId()), size,
                s.maxImageExtents());
        Machine machine;
        try {
            for (ElfImage.Segment seg : image.segments()) {
                memory.write(seg.vaddr(), seg.data());
            }
            PageTables.build(memory);
            long heapStart = (image.endAddress() + GuestLayout.PAGE - 1) & ~(GuestLayout.PAGE - 1);
            writeBootInfo(memory, size, heapStart, heapEnd, stackTop, spec.vcpus());
            // Every vCPU gets the boot registers, so that a capture of one not yet started
            // is a state the guest model accepts; only vCPU 0 runs from them.
            machine = vmm.guestPlatform().boot(memory, spec.vcpus(),
                    CpuSetup.entryRegs(image.entry(), stackTop, GuestLayout.BOOT_INFO));
        } catch (RuntimeException e) {
            memory.close();
            throw e;
        }
        VirtualMachine vm = null;
        try {
            vm = new VirtualMachine(vmm, identity, image.name(), machine, spec.listener(), launchStartNanos, null);
            vm.vcpus.get(0).started = true;
            vmm.register(vm);
            vm.start();
            return vm;
        } catch (RuntimeException e) {
            releaseFailedLaunch(vm, machine);
            throw e;
        }
    }

    /**
     * Boots a Linux program (docs/linux.md, "Process start"): its segments, stack and
     * auxiliary vector in RAM, the page tables as for any guest, vCPU 0 at its entry with
     * RSP on argc. The process platform only in this version: on KVM a `syscall` needs the
     * VMM's own entry (MSR_LSTAR, EFER.SCE), designed in docs/linux.md and not built yet.
     */
    private static VirtualMachine bootLinux(Vmm vmm, VmSpec spec, VmIdentity identity, long launchStartNanos) {
        VmmSettings s = vmm.settings();
        ElfImage image = spec.image();
        if (!vmm.platform().isProcess()) {
            throw new LaunchException("Linux program " + image.name() + ": Linux programs run on the process platform"
                    + " only in this version (on KVM their system calls need the VMM's syscall entry, designed in"
                    + " docs/linux.md and not built yet); set vmfork.vmm.platform = process");
        }
        if (spec.vcpus() != 1) {
            throw new LaunchException("Linux program " + image.name() + ": runs on one vCPU in this version (its"
                    + " threads are not served yet), got " + spec.vcpus());
        }
        io.vmfork.vmm.linux.ProgramArgs args = spec.program() != null ? spec.program()
                : io.vmfork.vmm.linux.ProgramArgs.of(image.name());
        GuestMemory memory = GuestMemory.create("vmfork-" + Long.toHexString(identity.vmId()), spec.memoryBytes(),
                s.maxImageExtents());
        Machine machine;
        io.vmfork.vmm.linux.ProcessStart.Started started;
        try {
            byte[] random = new byte[16];
            vmm.entropy().nextBytes(random);
            try {
                started = io.vmfork.vmm.linux.ProcessStart.load(image, memory, s.stackSize(), args, random,
                        cpuidLeaf1Edx(vmm.cpuidEntries()));
            } catch (IllegalArgumentException e) {
                throw new LaunchException("Linux program " + e.getMessage());
            }
            PageTables.build(memory);
            machine = vmm.guestPlatform().boot(memory, 1, CpuSetup.entryRegs(started.entry(), started.stackPointer(), 0));
        } catch (RuntimeException e) {
            memory.close();
            throw e;
        }
        VirtualMachine vm = null;
        try {
            vm = new VirtualMachine(vmm, identity, image.name(), machine, spec.listener(), launchStartNanos, null);
            vm.linux = new LinuxGuest(vm, started.state());
            vm.vcpus.get(0).started = true;
            vmm.register(vm);
            vm.start();
            return vm;
        } catch (RuntimeException e) {
            releaseFailedLaunch(vm, machine);
            throw e;
        }
    }

    /** CPUID.1:EDX from kvm_cpuid_entry2 entries (function, index, flags, eax, ebx, ecx, edx, 3 reserved: 40 bytes): AT_HWCAP. */
    private static long cpuidLeaf1Edx(byte[] entries) {
        java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(entries).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (int at = 0; at + 40 <= entries.length; at += 40) {
            if (b.getInt(at) == 1) {
                return b.getInt(at + 24) & 0xffffffffL;
            }
        }
        return 0;
    }

    /**
     * Starts a VM from a captured machine state and a runtime image: a fork child or a
     * clone. Its RAM is a private copy-on-write view of the image; nothing is copied.
     * {@code beforeStart} may patch it (a fork child's result) before its vCPUs run. On
     * failure everything made so far is released.
     */
    static VirtualMachine restore(Vmm vmm, MachineState state, RuntimeImage image, VmIdentity identity,
            String imageName, VmListener listener, VirtualMachine parent, boolean withQueuedRequests,
            java.util.function.Consumer<VirtualMachine> beforeStart) {
        return restore(vmm, state, image, identity, imageName, listener, parent, withQueuedRequests, beforeStart,
                null);
    }

    /**
     * As above; with {@code hold}, the VM's vCPUs start only once it completes (a fan-out
     * starts its children together, after the last is launched, so that they do not take
     * the CPU from the launches).
     */
    static VirtualMachine restore(Vmm vmm, MachineState state, RuntimeImage image, VmIdentity identity,
            String imageName, VmListener listener, VirtualMachine parent, boolean withQueuedRequests,
            java.util.function.Consumer<VirtualMachine> beforeStart, CompletableFuture<Void> hold) {
        long start = System.nanoTime();
        if (state.vcpus().isEmpty() || !state.vcpus().get(0).started()) {
            throw new LaunchException("the captured VM has no running vCPU 0; a vmfork guest's vCPU 0 always runs");
        }
        Machine machine = vmm.guestPlatform().restore("vmfork-" + Long.toHexString(identity.vmId()), state, image);
        VirtualMachine vm = null;
        try {
            vm = new VirtualMachine(vmm, identity, imageName, machine, listener, start, parent);
            if (state.linux() != null) {
                vm.linux = new LinuxGuest(vm, state.linux().copy());
            }
            for (VcpuState vs : state.vcpus()) {
                vm.vcpus.get(vs.index()).started = vs.started();
            }
            return vm.finishRestore(state, image, parent, withQueuedRequests, beforeStart, hold, start);
        } catch (RuntimeException e) {
            releaseFailedLaunch(vm, machine);
            throw e;
        }
    }

    /**
     * The platform-independent end of a restore: the device model's state, then the start,
     * held back until {@code hold} and the image allow it.
     */
    private VirtualMachine finishRestore(MachineState state, RuntimeImage image, VirtualMachine parent,
            boolean withQueuedRequests, java.util.function.Consumer<VirtualMachine> beforeStart,
            CompletableFuture<Void> hold, long start) {
        VirtualMachine vm = this;
        DeviceState d = state.devices();
        if (withQueuedRequests) {
            for (byte[] r : d.queuedRequests()) {
                vm.channel.send(r);
            }
            if (d.channelClosed()) {
                vm.channel.close();
            }
        }
        if (d.ready()) {
            vm.ready.complete(start);
        }
        // The image's newest pages may still be being copied (a fork of a VM that wrote
        // much since its previous fork): then the child exists but must not touch its
        // memory, nor have it patched, before they are all there.
        CompletableFuture<Void> gate = image.isReady() ? hold
                : hold == null ? image.whenReady() : CompletableFuture.allOf(hold, image.whenReady());
        if (gate != null) {
            vm.started = new CompletableFuture<>();
            vmm.register(vm);
            if (parent != null) {
                parent.children.add(vm);
            }
            VirtualMachine child = vm;
            gate.whenComplete((ok, failure) -> child.startWhenReleased(failure, beforeStart));
            return vm;
        }
        if (beforeStart != null) {
            beforeStart.accept(vm);
        }
        vmm.register(vm);
        if (parent != null) {
            parent.children.add(vm);
        }
        vm.start();
        return vm;
    }

    /** Releases what a launch that failed half-way had made: the VM if it exists, else its machine. */
    private static void releaseFailedLaunch(VirtualMachine vm, Machine machine) {
        if (vm != null) {
            vm.releaseUnstarted();
        } else {
            machine.release();
        }
    }

    /** The boot info page as GuestModel defines it, the same bytes a capsule restore checks and rebuilds. */
    private static void writeBootInfo(GuestMemory m, long size, long heapStart, long heapEnd, long stackTop,
            int vcpus) {
        m.write(GuestLayout.BOOT_INFO, io.vmfork.vmm.x86.GuestModel.bootInfoPage(
                new io.vmfork.vmm.x86.GuestModel.BootInfo(size, heapStart, heapEnd, stackTop, vcpus)));
    }

    private void start() {
        state = VmState.RUNNING;
        // A guest the platform sees end outside a vCPU's run (killed from outside while
        // every vCPU waits in the VMM) ends the VM as crashed.
        machine.started(reason -> end(VmExit.crashed(reason)));
        for (Vcpu v : vcpus) {
            v.start();
        }
    }

    // ---- identity and parts ----------------------------------------------------------

    public long id() {
        return identity.vmId();
    }

    public VmIdentity identity() {
        return identity;
    }

    public String imageName() {
        return imageName;
    }

    public VmState state() {
        return state;
    }

    /** The VM this one was forked from, if it is a fork child on this host. */
    public VirtualMachine parent() {
        return parent;
    }

    /** Fork children of this VM that are still alive. */
    public List<VirtualMachine> children() {
        return List.copyOf(children);
    }

    /**
     * True while every started vCPU waits in RECV for a request (vCPUs the guest has not
     * started run nothing), or a Linux guest's in a read of stdin: the guest is idle and
     * its state is still.
     */
    public boolean awaitingRequest() {
        boolean any = false;
        for (Vcpu v : vcpus) {
            if (v.started) {
                if (!v.inRestartableHypercall || v.sleeping) {
                    return false;
                }
                any = true;
            }
        }
        return any;
    }

    /** Timing of the last fork hypercall this VM made, or null. */
    public ForkRecord lastFork() {
        return forkPath.lastFork();
    }

    public int vcpuCount() {
        return vcpus.size();
    }

    public MessageChannel channel() {
        return channel;
    }

    public Console console() {
        return console;
    }

    public GuestMemory memory() {
        return memory;
    }

    Vmm vmm() {
        return vmm;
    }

    RunControl control() {
        return control;
    }

    /** Completes with the exit once the VM has ended and released everything it held. */
    public CompletableFuture<VmExit> termination() {
        return termination;
    }

    /** Completes (with System.nanoTime()) when the guest says it is ready to serve. */
    public CompletableFuture<Long> ready() {
        return ready;
    }

    /** The exit, or null while the VM runs. */
    public VmExit exit() {
        return exit;
    }

    /** System.nanoTime() when launch was called. */
    public long launchStartNanos() {
        return launchStartNanos;
    }

    /** System.nanoTime() of the VM's first exit to the VMM (its first hypercall), 0 before. */
    public long firstExitNanos() {
        return firstExitNanos;
    }

    // ---- control ---------------------------------------------------------------------

    /** Stops the VM and waits until it has released its resources. */
    public VmExit stop() {
        end(VmExit.stopped("stopped by the host"));
        return awaitTermination(vmm.settings().stopTimeout());
    }

    public VmExit awaitTermination(Duration timeout) {
        try {
            return termination.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted waiting for VM " + Long.toHexString(id()) + " to end", e);
        } catch (TimeoutException e) {
            throw new IllegalStateException("VM " + Long.toHexString(id()) + " did not end within " + timeout, e);
        } catch (java.util.concurrent.ExecutionException e) {
            throw new IllegalStateException(e.getCause());
        }
    }

    /** Ends the VM with {@code why}; the first call wins. Safe from any thread. */
    void end(VmExit why) {
        if (!ending.compareAndSet(false, true)) {
            return;
        }
        exit = why;
        log.debug("VM {} ending: {}", Long.toHexString(id()), why);
        for (Vcpu v : control.requestStop()) {
            if (v.thread() != Thread.currentThread()) {
                v.kick();
            }
        }
        channel.fail(why);
    }

    /** Called by each vCPU thread as it leaves; the last one releases the VM. */
    void vcpuFinished(Vcpu v) {
        try {
            v.closeContext();
        } catch (RuntimeException e) {
            log.warn("closing vCPU {} of VM {}", v.index(), Long.toHexString(id()), e);
        }
        boolean last;
        synchronized (this) {
            last = ++vcpusFinished == vcpus.size();
        }
        if (last) {
            if (exit == null) {
                end(VmExit.crashed("every vCPU stopped without an exit"));
            }
            release();
        }
    }

    private void releaseUnstarted() {
        releaseUnstarted(VmExit.crashed("launch failed"));
    }

    private void releaseUnstarted(VmExit why) {
        ending.set(true);
        for (Vcpu v : vcpus) {
            v.abandonThread();
            v.closeContext();
        }
        exit = why;
        release();
    }

    /**
     * Completes when the VM's vCPUs have started: at once for most VMs; for a child whose
     * image was still being filled when it was launched, once the image is complete (or
     * exceptionally if it ended first).
     */
    CompletableFuture<Void> started() {
        return started;
    }

    private volatile CompletableFuture<Void> started = STARTED;
    private static final CompletableFuture<Void> STARTED = CompletableFuture.completedFuture(null);

    /**
     * The deferred start of a VM held back (its image being filled, or a fan-out's), on
     * the thread that released it.
     */
    private void startWhenReleased(Throwable failure, java.util.function.Consumer<VirtualMachine> beforeStart) {
        CompletableFuture<Void> gate = started;
        try {
            if (failure != null) {
                Throwable why = failure instanceof java.util.concurrent.CompletionException && failure.getCause() != null
                        ? failure.getCause() : failure;
                releaseUnstarted(VmExit.crashed("it could not start: " + why.getMessage()));
            } else if (ending.get()) {
                releaseUnstarted(exit != null ? exit : VmExit.stopped("stopped before it started"));
            } else {
                if (beforeStart != null) {
                    beforeStart.accept(this);
                }
                start(); // a stop asked for meanwhile: each vCPU sees it before its first KVM_RUN
            }
        } catch (RuntimeException e) {
            log.warn("starting VM {} after its image was complete", Long.toHexString(id()), e);
            if (!released.get()) {
                releaseUnstarted(VmExit.crashed("start failed: " + e.getMessage()));
            }
        } finally {
            if (exit != null && released.get()) {
                gate.completeExceptionally(new VmEndedException(exit));
            } else {
                gate.complete(null);
            }
        }
    }

    private void release() {
        if (!released.compareAndSet(false, true)) {
            return;
        }
        try {
            machine.release(); // guest RAM with it
        } finally {
            VmExit e = exit;
            state = switch (e.kind()) {
                case EXITED -> VmState.EXITED;
                case CRASHED -> VmState.CRASHED;
                case STOPPED -> VmState.STOPPED;
            };
            vmm.unregister(this);
            if (parent != null) {
                parent.children.remove(this);
            }
            if (!ready.isDone()) {
                ready.completeExceptionally(new VmEndedException(e));
            }
            try {
                listener.onEnded(this, e);
            } finally {
                termination.complete(e);
            }
        }
    }

    // ---- device model, called by the dispatcher on vCPU threads ----------------------

    void noteExit(long nanos) {
        if (firstExitNanos == 0) {
            firstExitNanos = nanos;
        }
    }

    /** Several vCPUs may write at once: each write is whole, and the buffer and the listener see one order. */
    void consoleOutput(byte[] bytes) {
        synchronized (console) {
            console.append(bytes);
            listener.onConsole(this, bytes);
        }
    }

    void guestMessage(byte[] message) {
        if (!channel.deliverReply(message)) {
            listener.onUnsolicitedMessage(this, message);
        }
    }

    void markReady() {
        if (ready.complete(System.nanoTime())) {
            listener.onReady(this);
        }
    }

    /** The Linux personality, or null for an SDK guest. */
    LinuxGuest linux() {
        return linux;
    }

    /** Whether the guest is a Linux program (docs/linux.md) rather than an SDK guest. */
    public boolean isLinux() {
        return linux != null;
    }

    /**
     * A copy of the Linux personality's state taken now, or null for an SDK guest; the fork
     * path takes it while the VM is paused.
     */
    io.vmfork.vmm.linux.LinuxState linuxStateCopy() {
        LinuxGuest l = linux;
        return l == null ? null : l.state().copy();
    }

    /**
     * The system calls a Linux guest made that are not served (each answered ENOSYS), by
     * name ("inotify_init1", or "system call N") with their counts; empty for an SDK guest.
     */
    public java.util.Map<String, Long> unservedSyscalls() {
        LinuxGuest l = linux;
        java.util.Map<String, Long> out = new java.util.TreeMap<>();
        if (l != null) {
            l.state().unservedCalls().forEach((nr, n) -> out.put(io.vmfork.vmm.linux.Syscalls.name(nr), n));
        }
        return out;
    }

    /** The host pid of this VM's guest process (the process platform), or -1 on KVM. For tests. */
    int guestPid() {
        return machine.guestPid();
    }

    /** The platform's half of this VM. */
    Machine machine() {
        return machine;
    }

    /**
     * Work on this VM's vCPU threads, for the platform while the VM is paused: each vCPU's
     * thread serves it where it waits (paused, or in a hypercall), the calling vCPU's
     * inline.
     */
    Machine.VcpuThreads vcpuThreads() {
        return new Machine.VcpuThreads() {
            @Override
            public <T> T runOn(int index, java.util.function.Supplier<T> work) {
                return control.runOn(vcpus.get(index), work::get);
            }

            @Override
            public void onEach(java.util.function.IntConsumer work) {
                onEachVcpu(work);
            }
        };
    }

    /** Runs {@code work} for every vCPU on that vCPU's own thread, all at once, and waits for them all. */
    private void onEachVcpu(java.util.function.IntConsumer work) {
        List<java.util.concurrent.Future<Void>> done = new ArrayList<>();
        int self = -1;
        for (int i = 0; i < vcpus.size(); i++) {
            int k = i;
            if (vcpus.get(i).thread() == Thread.currentThread()) {
                self = i;
            } else {
                done.add(control.post(vcpus.get(i), () -> {
                    work.accept(k);
                    return null;
                }));
            }
        }
        if (self >= 0) {
            work.accept(self);
        }
        for (java.util.concurrent.Future<Void> f : done) {
            try {
                f.get();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IllegalStateException("interrupted waiting for the vCPUs of " + this, e);
            } catch (java.util.concurrent.ExecutionException e) {
                throw e.getCause() instanceof RuntimeException r ? r : new IllegalStateException(e.getCause());
            }
        }
    }

    /** Hypercalls beyond the base set. */
    long extensionHypercall(Vcpu vcpu, int nr, long arg) {
        if (nr == Hypercalls.FORK) {
            return forkPath.hypercall(vcpu, arg);
        }
        return Hypercalls.ENOSYS;
    }

    // ---- fork, snapshot --------------------------------------------------------------

    /**
     * Timing of one fork hypercall (System.nanoTime()): when the caller exited to the VMM,
     * when its state and image were captured, when its local children were launched, and
     * when it was let go. {@code pageWorkNanos}: the part of the pause the kernel spent on
     * work that grows with the pages the parent touched or wrote: reading (and so
     * re-protecting) the dirty log, write-protecting pages whose copy is deferred, and
     * swapping the memory slot at a VM's first fork on KVM (KVM drops its mappings of every
     * touched page).
     */
    public record ForkRecord(long exitNanos, long resumedNanos, List<VirtualMachine> children, long pageWorkNanos,
            long capturedNanos, long launchedNanos) {
    }

    /**
     * What an external fork did: the children it launched here, the error of each copy that
     * failed, how long the VM was paused, and the copies accepted for other hosts, which
     * went to {@link io.vmfork.vmm.fork.CopyPlacement#ship} in the
     * {@link io.vmfork.vmm.fork.RemoteFork} numbered {@code forkId} (0 when there were none).
     */
    public record ForkResult(List<VirtualMachine> children, List<String> errors, long pausedNanos, long forkId,
            List<RemoteCopyRef> remote) {
        public ForkResult {
            children = List.copyOf(children);
            errors = List.copyOf(errors);
            remote = List.copyOf(remote);
        }

        /** A fork with no remote copies. */
        public ForkResult(List<VirtualMachine> children, List<String> errors, long pausedNanos) {
            this(children, errors, pausedNanos, 0, List.of());
        }
    }

    /** A copy of an external fork accepted for another host: its index, the host, its ticket in the RemoteFork. */
    public record RemoteCopyRef(int index, long hostId, long ticket) {
    }

    /** A captured VM: its machine state and a reference to its runtime image (release it). */
    public record Snapshot(MachineState state, RuntimeImage image) implements AutoCloseable {
        @Override
        public void close() {
            image.release();
        }
    }

    /**
     * Forks this VM from outside: its vCPUs are kicked out of KVM_RUN (not waited for),
     * its state captured, and {@code count} copies placed and started from it; then it
     * resumes. Children resume exactly where the parent was; a vCPU that was waiting in
     * RECV re-issues the call in the child.
     */
    public ForkResult fork(int count, int vmType) {
        return forkPath.fork(count, vmType, vmm.copyPlacement());
    }

    /**
     * As {@link #fork}, with every copy a child on this host, whatever the VMM's placement
     * ({@link io.vmfork.vmm.fork.CopyPlacement#LOCAL}): nothing is asked of the cluster
     * and nothing admitted there. For a VM the VMM's embedder keeps to itself (a node's
     * warm-up of its fork path).
     */
    public ForkResult forkHere(int count) {
        return forkPath.fork(count, identity.vmType(), io.vmfork.vmm.fork.CopyPlacement.LOCAL);
    }

    /**
     * Captures this running VM without stopping it for longer than the capture: its
     * machine state and its runtime image, which the caller may encode while the VM runs
     * on. Close the snapshot to release the image.
     */
    public Snapshot snapshot() {
        return forkPath.snapshot();
    }

    // ---- what the fork path reads of the VM ------------------------------------------

    List<Vcpu> vcpuList() {
        return vcpus;
    }

    VmListener listener() {
        return listener;
    }

    /** This VM's tickets for its remote copies (FORK_STATUS). */
    RemoteTickets remoteTickets() {
        return remoteTickets;
    }

    /** Live fork children, as the fork path adds them. */
    Set<VirtualMachine> childSet() {
        return children;
    }

    /** Whether a READY hypercall completed {@link #ready()}. */
    boolean isReady() {
        return ready.isDone() && !ready.isCompletedExceptionally();
    }

    @Override
    public String toString() {
        return "VM " + Long.toHexString(id()) + " (" + imageName + ", " + state + ")";
    }
}
