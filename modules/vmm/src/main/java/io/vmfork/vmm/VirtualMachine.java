package io.vmfork.vmm;

import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.KvmVm;
import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.hypercall.Hypercalls;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.x86.CpuSetup;
import io.vmfork.vmm.x86.GuestLayout;
import io.vmfork.vmm.x86.PageTables;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
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
    private volatile long firstExitNanos;
    private volatile VmState state = VmState.CREATED;
    private volatile VmExit exit;
    private int vcpusFinished;

    private VirtualMachine(Vmm vmm, VmIdentity identity, String imageName, GuestMemory memory, KvmVm kvmVm,
            VmListener listener, long launchStartNanos) {
        this.vmm = vmm;
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
        GuestMemory memory = GuestMemory.create("vmfork-" + Long.toHexString(identity.vmId()), size);
        KvmVm kvmVm = null;
        VirtualMachine vm = null;
        try {
            for (ElfImage.Segment seg : image.segments()) {
                memory.write(seg.vaddr(), seg.data());
            }
            PageTables.build(memory);
            long heapStart = (image.endAddress() + GuestLayout.PAGE - 1) & ~(GuestLayout.PAGE - 1);
            writeBootInfo(memory, 0, size, heapStart, heapEnd, stackTop);
            kvmVm = vmm.kvm().createVm();
            kvmVm.setUserMemoryRegion(0, 0, 0, size, memory.hostAddress());
            vm = new VirtualMachine(vmm, identity, image.name(), memory, kvmVm, spec.listener(), launchStartNanos);
            for (int i = 0; i < spec.vcpus(); i++) {
                KvmVcpu kv = kvmVm.createVcpu(i);
                vm.addVcpu(kv);
                CpuSetup.setCpuid(kv, vmm.cpuid());
                CpuSetup.setLongModeUser(kv, vmm.cpuid());
                CpuSetup.setEntry(kv, image.entry(), stackTop, GuestLayout.BOOT_INFO);
            }
            vm.start();
            return vm;
        } catch (RuntimeException e) {
            if (vm != null) {
                vm.releaseUnstarted();
            } else {
                if (kvmVm != null) {
                    kvmVm.close();
                }
                memory.close();
            }
            throw e;
        }
    }

    private static void writeBootInfo(GuestMemory m, int vcpuIndex, long size, long heapStart, long heapEnd,
            long stackTop) {
        long b = GuestLayout.BOOT_INFO;
        m.writeLong(b, Hypercalls.BOOT_INFO_MAGIC);
        m.writeInt(b + 8, Hypercalls.ABI_VERSION);
        m.writeInt(b + 12, vcpuIndex);
        m.writeLong(b + 16, size);
        m.writeLong(b + 24, heapStart);
        m.writeLong(b + 32, heapEnd);
        m.writeLong(b + 40, stackTop);
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
            v.kvm.close();
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
            v.kvm.close();
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

    void noteExit() {
        if (firstExitNanos == 0) {
            firstExitNanos = System.nanoTime();
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

    /** Hypercalls beyond the base set; none yet. */
    long extensionHypercall(Vcpu vcpu, int nr, long arg) {
        return Hypercalls.ENOSYS;
    }

    @Override
    public String toString() {
        return "VM " + Long.toHexString(id()) + " (" + imageName + ", " + state + ")";
    }
}
