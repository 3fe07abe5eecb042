package io.vmfork.vmm;

import com.sun.jna.Memory;
import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.KvmVm;
import io.vmfork.kvm.sys.Errno;
import io.vmfork.kvm.sys.NativeCallException;
import io.vmfork.kvm.x86.Cpuid;
import io.vmfork.kvm.x86.KvmRegs;
import io.vmfork.vmm.fork.CopyTarget;
import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.hypercall.Hypercalls;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.state.DeviceState;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.VcpuState;
import io.vmfork.vmm.x86.CpuSetup;
import io.vmfork.vmm.x86.GuestLayout;
import io.vmfork.vmm.x86.PageTables;
import java.time.Duration;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.locks.ReentrantLock;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One running VM: its KVM VM, guest RAM, vCPU threads and device model (console, message
 * channel). Made by {@link Vmm#launch}. Every host resource it holds is released when it
 * ends, by whatever path; {@link #termination()} completes after that.
 */
public final class VirtualMachine {
    private static final Logger log = LoggerFactory.getLogger(VirtualMachine.class);

    private final Vmm vmm;
    private final VmIdentity identity;
    private final String imageName;
    private final GuestMemory memory;
    private final KvmVm kvmVm;
    private final List<Vcpu> vcpus = new ArrayList<>();
    private final RunControl control = new RunControl();
    private final MessageChannel channel;
    private final Console console;
    private final VmListener listener;
    private final HypercallDispatcher dispatcher = new HypercallDispatcher(this);
    private final CompletableFuture<VmExit> termination = new CompletableFuture<>();
    private final CompletableFuture<Long> ready = new CompletableFuture<>();
    private final AtomicBoolean ending = new AtomicBoolean();
    private final AtomicBoolean released = new AtomicBoolean();
    private final long launchStartNanos;
    private final VirtualMachine parent;
    private final Set<VirtualMachine> children = ConcurrentHashMap.newKeySet();
    private final ReentrantLock forkLock = new ReentrantLock();
    private final Cpuid cpuid;
    private volatile ForkRecord lastFork;
    private volatile long firstExitNanos;
    private volatile VmState state = VmState.CREATED;
    private volatile VmExit exit;
    private int vcpusFinished;

    private VirtualMachine(Vmm vmm, VmIdentity identity, String imageName, GuestMemory memory, KvmVm kvmVm,
            VmListener listener, long launchStartNanos, VirtualMachine parent, Cpuid cpuid) {
        this.vmm = vmm;
        this.parent = parent;
        this.cpuid = cpuid;
        this.identity = identity;
        this.imageName = imageName;
        this.memory = memory;
        this.kvmVm = kvmVm;
        this.listener = listener;
        this.launchStartNanos = launchStartNanos;
        VmmSettings s = vmm.settings();
        this.channel = new MessageChannel(control, s.maxMessageBytes(), s.maxQueuedRequests());
        this.console = new Console(s.consoleBufferBytes());
    }

    /**
     * Boots a guest image: RAM, image, page tables, boot info, KVM VM, vCPUs in 64-bit
     * mode at CPL3, then the vCPU threads. On failure everything made so far is released.
     */
    static VirtualMachine boot(Vmm vmm, VmSpec spec, VmIdentity identity, long launchStartNanos) {
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
        KvmVm kvmVm = null;
        VirtualMachine vm = null;
        try {
            for (ElfImage.Segment seg : image.segments()) {
                memory.write(seg.vaddr(), seg.data());
            }
            PageTables.build(memory);
            long heapStart = (image.endAddress() + GuestLayout.PAGE - 1) & ~(GuestLayout.PAGE - 1);
            writeBootInfo(memory, size, heapStart, heapEnd, stackTop);
            kvmVm = vmm.kvm().createVm();
            kvmVm.setUserMemoryRegion(0, 0, 0, size, memory.hostAddress());
            vm = new VirtualMachine(vmm, identity, image.name(), memory, kvmVm, spec.listener(), launchStartNanos, null,
                    vmm.cpuid());
            for (int i = 0; i < spec.vcpus(); i++) {
                KvmVcpu kv = kvmVm.createVcpu(i);
                vm.addVcpu(kv);
                CpuSetup.setCpuid(kv, vmm.cpuid());
                CpuSetup.setLongModeUser(kv, vmm.cpuid());
                CpuSetup.setEntry(kv, image.entry(), stackTop, GuestLayout.BOOT_INFO);
            }
            vmm.register(vm);
            vm.start();
            return vm;
        } catch (RuntimeException e) {
            releaseFailedLaunch(vm, kvmVm, memory);
            throw e;
        }
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
        long start = System.nanoTime();
        VmmSettings s = vmm.settings();
        GuestMemory memory = GuestMemory.fromImage("vmfork-" + Long.toHexString(identity.vmId()), image,
                s.maxImageExtents());
        KvmVm kvmVm = null;
        VirtualMachine vm = null;
        try {
            kvmVm = vmm.kvm().createVm();
            kvmVm.setUserMemoryRegion(0, KvmVm.MEM_LOG_DIRTY_PAGES, 0, memory.size(), memory.hostAddress());
            kvmVm.setClock(state.clockNs());
            Cpuid cpuid = Cpuid.fromEntryBytes(state.cpuidEntries());
            vm = new VirtualMachine(vmm, identity, imageName, memory, kvmVm, listener, start, parent, cpuid);
            for (VcpuState vs : state.vcpus()) {
                KvmVcpu kv = kvmVm.createVcpu(vs.index());
                vm.addVcpu(kv);
                kv.setCpuid(cpuid);
                VcpuStates.restore(kv, vs, vmm.caps());
            }
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
            if (beforeStart != null) {
                beforeStart.accept(vm);
            }
            vmm.register(vm);
            if (parent != null) {
                parent.children.add(vm);
            }
            vm.start();
            return vm;
        } catch (RuntimeException e) {
            releaseFailedLaunch(vm, kvmVm, memory);
            throw e;
        }
    }

    /** Releases what a launch that failed half-way had made: the VM if it exists, else its parts. */
    private static void releaseFailedLaunch(VirtualMachine vm, KvmVm kvmVm, GuestMemory memory) {
        if (vm != null) {
            vm.releaseUnstarted();
            return;
        }
        if (kvmVm != null) {
            kvmVm.close();
        }
        memory.close();
    }

    /** The boot info page as GuestModel defines it, the same bytes a capsule restore checks and rebuilds. */
    private static void writeBootInfo(GuestMemory m, long size, long heapStart, long heapEnd, long stackTop) {
        m.write(GuestLayout.BOOT_INFO, io.vmfork.vmm.x86.GuestModel.bootInfoPage(
                new io.vmfork.vmm.x86.GuestModel.BootInfo(size, heapStart, heapEnd, stackTop)));
    }

    private void addVcpu(KvmVcpu kv) {
        Vcpu v = new Vcpu(this, kv, control, dispatcher, vmm.settings().kickSignal());
        vcpus.add(v);
        control.register(v);
    }

    private void start() {
        state = VmState.RUNNING;
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

    /** True while every vCPU waits in RECV for a request: the guest is idle and its state is still. */
    public boolean awaitingRequest() {
        for (Vcpu v : vcpus) {
            if (!v.inRestartableHypercall) {
                return false;
            }
        }
        return !vcpus.isEmpty();
    }

    /** Timing of the last fork hypercall this VM made, or null. */
    public ForkRecord lastFork() {
        return lastFork;
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
            v.closeKvm();
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
        ending.set(true);
        for (Vcpu v : vcpus) {
            v.closeKvm();
        }
        exit = VmExit.crashed("launch failed");
        release();
    }

    private void release() {
        if (!released.compareAndSet(false, true)) {
            return;
        }
        try {
            kvmVm.close();
        } finally {
            try {
                memory.close();
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
    }

    // ---- device model, called by the dispatcher on vCPU threads ----------------------

    void noteExit(long nanos) {
        if (firstExitNanos == 0) {
            firstExitNanos = nanos;
        }
    }

    void consoleOutput(byte[] bytes) {
        console.append(bytes);
        listener.onConsole(this, bytes);
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

    /**
     * Whether the port-I/O exit at {@code rip} came from the one instruction a hypercall
     * is: `out %eax,(%dx)`, after which KVM leaves RIP past it. String I/O (`rep outsl`)
     * to the port exits with RIP still on the `outs` (once per element) and is not one.
     */
    boolean isHypercallInstruction(long rip) {
        if (rip < 1 || !memory.contains(rip - 1, 2) || memory.readByte(rip - 1) != Hypercalls.OUT_EAX_DX) {
            return false;
        }
        // RIP on an `outs` (prefixes, then 0x6e/0x6f) is string I/O whatever byte precedes it.
        for (long p = rip; p < rip + MAX_PREFIXES && memory.contains(p, 1); p++) {
            int b = memory.readByte(p) & 0xff;
            if (b == OUTS_BYTE || b == OUTS_DWORD) {
                return false;
            }
            if (!(b == 0x66 || b == 0x67 || b == 0xf2 || b == 0xf3 || (b >= 0x40 && b <= 0x4f))) {
                break;
            }
        }
        return true;
    }

    /** Whether guest memory at {@code gva} holds `syscall` (0f 05); guest virtual is guest physical. */
    boolean isSyscallInstruction(long gva) {
        return gva >= 0 && memory.contains(gva, 2) && memory.readByte(gva) == 0x0f && memory.readByte(gva + 1) == 0x05;
    }

    private static final int MAX_PREFIXES = 15;
    private static final int OUTS_BYTE = 0x6e;
    private static final int OUTS_DWORD = 0x6f;

    /** Hypercalls beyond the base set. */
    long extensionHypercall(Vcpu vcpu, int nr, long arg) {
        if (nr == Hypercalls.FORK) {
            return forkHypercall(vcpu, arg);
        }
        return Hypercalls.ENOSYS;
    }

    // ---- fork, snapshot --------------------------------------------------------------

    /** Timing of one fork hypercall: when the caller exited to the VMM and when it was let go. */
    public record ForkRecord(long exitNanos, long resumedNanos, List<VirtualMachine> children) {
    }

    /** The children an external fork launched, and per copy the error of those that failed. */
    public record ForkResult(List<VirtualMachine> children, List<String> errors, long pausedNanos) {
    }

    /** A captured VM: its machine state and a reference to its runtime image (release it). */
    public record Snapshot(MachineState state, RuntimeImage image) implements AutoCloseable {
        @Override
        public void close() {
            image.release();
        }
    }

    private static final int FORK_BLOCK_SIZE = 48;

    /**
     * FORK: blocks the calling VM (every vCPU), captures its runtime image, launches the
     * children, waits until each is launched, then lets the caller go with their ids. The
     * caller's thread is busy here, its registers stable (RIP already past the `out`).
     */
    private long forkHypercall(Vcpu caller, long block) {
        long exitNanos = caller.lastExitNanos;
        GuestMemory m = memory;
        if (!m.contains(block, FORK_BLOCK_SIZE) || block < GuestLayout.IMAGE_MIN) {
            return Hypercalls.EFAULT;
        }
        int vmType = m.readInt(block);
        long count = m.readInt(block + 4) & 0xffffffffL;
        long flags = m.readLong(block + 8);
        long ids = m.readLong(block + 16);
        long errors = m.readLong(block + 24);
        if (count < 1 || count > vmm.settings().forkMaxCount() || flags != 0) {
            return Hypercalls.EINVAL;
        }
        if (!m.contains(ids, count * 8) || ids < GuestLayout.IMAGE_MIN || !m.contains(errors, count * 8)
                || errors < GuestLayout.IMAGE_MIN) {
            return Hypercalls.EFAULT;
        }
        long[] childIds = new long[(int) count];
        long[] childErrors = new long[(int) count];
        // Ordering requirements: the caller counts as stable (and as restartable, so that a
        // capture by another fork rewinds it onto its `out`) from before it takes the fork
        // lock until its result is complete: fork block and ids written, RAX set. Only then
        // may an external fork capture it as a parent that has returned; and it leaves the
        // stable place only when no pause is in force (RunControl.leaveStable), so no capture
        // ever sees it half-way.
        caller.inRestartableHypercall = true;
        control.enterStable(caller);
        forkLock.lock();
        try {
            boolean paused;
            try {
                paused = control.pause(vmm.settings().forkPauseTimeout().toNanos());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                paused = false;
            }
            if (!paused) {
                return control.stopRequested() ? HypercallDispatcher.STOP_VCPU : Hypercalls.EAGAIN;
            }
            List<VirtualMachine> launched;
            try {
                long tPaused = System.nanoTime();
                Snapshot snap = capture(caller);
                long tCaptured = System.nanoTime();
                try {
                    launched = launchChildren(snap, (int) count, vmType, childIds, childErrors, caller, block);
                } finally {
                    snap.close();
                }
                if (log.isDebugEnabled()) {
                    log.debug("fork of {}: pause {} us, capture {} us, launch of {} {} us", this,
                            (tPaused - exitNanos) / 1000, (tCaptured - tPaused) / 1000, launched.size(),
                            (System.nanoTime() - tCaptured) / 1000);
                }
            } finally {
                control.resume();
            }
            for (int i = 0; i < count; i++) {
                m.writeLong(ids + 8L * i, childIds[i]);
                m.writeLong(errors + 8L * i, childErrors[i]);
            }
            m.writeInt(block + 32, Hypercalls.FORK_PARENT);
            m.writeInt(block + 36, 0);
            m.writeLong(block + 40, id());
            long result = launched.size();
            KvmRegs regs = caller.kvm.getRegs();
            regs.rax = result;
            caller.kvm.setRegs(regs);
            caller.inRestartableHypercall = false;
            lastFork = new ForkRecord(exitNanos, System.nanoTime(), launched);
            return result;
        } finally {
            caller.inRestartableHypercall = false;
            forkLock.unlock();
            control.leaveStable(caller);
        }
    }

    /**
     * Forks this VM from outside: its vCPUs are kicked out of KVM_RUN (not waited for),
     * its state captured, and {@code count} children started from it; then it resumes.
     * Children resume exactly where the parent was; a vCPU that was waiting in RECV
     * re-issues the call in the child.
     */
    public ForkResult fork(int count, int vmType) {
        if (count < 1 || count > vmm.settings().forkMaxCount()) {
            throw new IllegalArgumentException("fork count must be 1.." + vmm.settings().forkMaxCount() + ", got "
                    + count);
        }
        long[] childIds = new long[count];
        long[] childErrors = new long[count];
        forkLock.lock();
        try {
            long t0 = System.nanoTime();
            pauseOrThrow();
            long pausedFor;
            List<VirtualMachine> launched;
            try {
                try (Snapshot snap = capture(null)) {
                    launched = launchChildren(snap, count, vmType, childIds, childErrors, null, 0);
                }
            } finally {
                control.resume();
                pausedFor = System.nanoTime() - t0;
            }
            List<String> errs = new ArrayList<>();
            for (long e : childErrors) {
                if (e != 0) {
                    errs.add(Hypercalls.statusName(e));
                }
            }
            return new ForkResult(launched, errs, pausedFor);
        } finally {
            forkLock.unlock();
        }
    }

    /**
     * Captures this running VM without stopping it for longer than the capture: its
     * machine state and its runtime image, which the caller may encode while the VM runs
     * on. Close the snapshot to release the image.
     */
    public Snapshot snapshot() {
        forkLock.lock();
        try {
            pauseOrThrow();
            try {
                return capture(null);
            } finally {
                control.resume();
            }
        } finally {
            forkLock.unlock();
        }
    }

    private void pauseOrThrow() {
        boolean paused;
        try {
            paused = control.pause(vmm.settings().forkPauseTimeout().toNanos());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while pausing " + this, e);
        }
        if (!paused) {
            VmExit e = exit;
            if (e != null) {
                throw new VmEndedException(e);
            }
            throw new IllegalStateException("the vCPUs of " + this + " did not stop within "
                    + vmm.settings().forkPauseTimeout());
        }
    }

    /**
     * Freezes RAM into a runtime image and captures every vCPU and the device model. The
     * VM is paused; {@code caller}, if any, is the vCPU whose fork hypercall is being
     * served (captured as it is, RIP past the `out`). Any other vCPU waiting in a
     * restartable hypercall is captured with RIP back on its `out`, so that a copy
     * re-issues the call instead of seeing a result meant for the parent.
     */
    private Snapshot capture(Vcpu caller) {
        BitSet guestDirty = new BitSet();
        if (memory.isPrivate()) {
            long pages = memory.size() / GuestMemory.PAGE_SIZE;
            Memory bitmap = new Memory(((pages + 63) / 64) * 8);
            bitmap.clear();
            kvmVm.getDirtyLog(0, bitmap);
            guestDirty = GuestMemory.bitmapToPages(bitmap, pages);
        }
        GuestMemory.Freeze f = memory.freeze(guestDirty);
        try {
            if (f.viewChanged()) {
                // Ordering requirements: the new view is mapped before the slot moves to it,
                // and the old one is unmapped only after KVM has let go of it.
                kvmVm.setUserMemoryRegion(0, 0, 0, 0, 0);
                kvmVm.setUserMemoryRegion(0, KvmVm.MEM_LOG_DIRTY_PAGES, 0, memory.size(), memory.hostAddress());
                memory.retireOldView();
            }
            List<VcpuState> states = new ArrayList<>();
            for (Vcpu v : vcpus) {
                VcpuState st = VcpuStates.capture(v.kvm, vmm.caps());
                if (v != caller && v.inRestartableHypercall) {
                    long[] regs = st.regs();
                    long rip = regs[VcpuState.RIP];
                    if (memory.readByte(rip - 1) != Hypercalls.OUT_EAX_DX) {
                        throw new IllegalStateException(String.format(
                                "vCPU %d waits in a hypercall but rip-1 (0x%x) is not its out instruction", v.index(),
                                rip - 1));
                    }
                    regs[VcpuState.RIP] = rip - 1;
                    st = st.withRegs(regs);
                }
                states.add(st);
            }
            DeviceState devices = new DeviceState(console.bytesWritten(), channel.queuedRequests(), channel.isClosed(),
                    ready.isDone() && !ready.isCompletedExceptionally());
            MachineState ms = new MachineState(identity, memory.size(), cpuid.entryBytes(), kvmVm.getClock().clock,
                    states, devices);
            return new Snapshot(ms, f.image());
        } catch (RuntimeException e) {
            f.image().release();
            throw e;
        }
    }

    /**
     * Starts {@code count} children from a capture; per copy either its id or an error
     * code. A child of a fork hypercall gets RAX = 0 and its fork block filled in as a
     * child (role 1, its index, its id) before it runs.
     */
    private List<VirtualMachine> launchChildren(Snapshot snap, int count, int vmType, long[] ids, long[] errors,
            Vcpu caller, long block) {
        List<VirtualMachine> launched = new ArrayList<>();
        VmmSettings s = vmm.settings();
        List<CopyTarget> targets = placeCopies(vmType, count);
        for (int i = 0; i < count; i++) {
            CopyTarget target = targets.get(i);
            if (target instanceof CopyTarget.Refused r) {
                errors[i] = r.status();
                log.debug("fork of {} copy {}: placement refused it: {}", this, i, r.reason());
                continue;
            }
            if (target instanceof CopyTarget.Remote r) {
                errors[i] = Hypercalls.EREMOTE;
                log.debug("fork of {} copy {}: placed on host {}; remote clones are not available", this, i,
                        r.hostId());
                continue;
            }
            if (children.size() >= s.forkMaxChildrenPerVm()) {
                errors[i] = Hypercalls.ELIMIT;
                continue;
            }
            if (!vmm.tryReserveSlot()) {
                errors[i] = Hypercalls.ELIMIT;
                continue;
            }
            VmIdentity childId = new VmIdentity(vmm.newVmId(), id(), vmm.settings().hostId(),
                    identity.forkGeneration() + 1, vmType);
            MachineState state = snap.state();
            if (caller != null) {
                List<VcpuState> vs = new ArrayList<>();
                for (VcpuState v : state.vcpus()) {
                    if (v.index() == caller.index()) {
                        long[] regs = v.regs();
                        regs[VcpuState.RAX] = Hypercalls.OK;
                        v = v.withRegs(regs);
                    }
                    vs.add(v);
                }
                state = new MachineState(state.identity(), state.memorySize(), state.cpuidEntries(), state.clockNs(),
                        vs, state.devices());
            }
            final int index = i;
            try {
                VirtualMachine child = restore(vmm, state, snap.image(), childId, imageName, listener, this, false,
                        c -> {
                            if (caller != null) {
                                c.memory.writeInt(block + 32, 1);
                                c.memory.writeInt(block + 36, index);
                                c.memory.writeLong(block + 40, c.id());
                            }
                        });
                launched.add(child);
                ids[i] = child.id();
                listener.onForked(this, child);
            } catch (NativeCallException e) {
                vmm.releaseSlot();
                errors[i] = isOutOfMemory(e.errno()) ? Hypercalls.ENOMEM : Hypercalls.ELIMIT;
                log.warn("fork of {} copy {} failed: {}", this, i, e.getMessage());
            } catch (LaunchException e) {
                vmm.releaseSlot();
                errors[i] = Hypercalls.ELIMIT;
                log.debug("fork of {} copy {} refused: {}", this, i, e.getMessage());
            } catch (RuntimeException e) {
                vmm.releaseSlot();
                errors[i] = Hypercalls.ELIMIT;
                log.warn("fork of {} copy {} failed", this, i, e);
            }
        }
        return launched;
    }

    /**
     * Asks placement where each copy goes. A placement that breaks its contract (throws,
     * or answers the wrong number of targets) refuses every copy rather than the fork.
     */
    private List<CopyTarget> placeCopies(int vmType, int count) {
        try {
            List<CopyTarget> t = vmm.copyPlacement().place(identity, vmType, count);
            if (t != null && t.size() == count && t.stream().allMatch(java.util.Objects::nonNull)) {
                return t;
            }
            log.warn("fork of {}: placement answered {} targets for {} copies", this, t == null ? null : t.size(),
                    count);
        } catch (RuntimeException e) {
            log.warn("fork of {}: placement failed", this, e);
        }
        return java.util.Collections.nCopies(count, new CopyTarget.Refused(Hypercalls.ELIMIT, "placement failed"));
    }

    private static boolean isOutOfMemory(int errno) {
        return errno == Errno.ENOMEM || errno == Errno.ENOSPC || errno == Errno.EMFILE || errno == Errno.ENFILE;
    }

    @Override
    public String toString() {
        return "VM " + Long.toHexString(id()) + " (" + imageName + ", " + state + ")";
    }
}
