package io.vmfork.vmm;

import io.vmfork.kvm.Kvm;
import io.vmfork.kvm.x86.Cpuid;
import io.vmfork.kvm.sys.HostHelper;
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
    private static final AtomicBoolean SIGNAL_INSTALLED = new AtomicBoolean();
    /** VM ids: the host id in the top 24 bits, a sequence number below. */
    private static final int HOST_ID_SHIFT = 40;

    private final VmmSettings settings;
    private final Kvm kvm;
    private final Cpuid cpuid;
    private final SecureRandom entropy = new SecureRandom();
    private final AtomicLong nextSeq = new AtomicLong(1);
    private final AtomicInteger live = new AtomicInteger();
    private final Map<Long, VirtualMachine> vms = new ConcurrentHashMap<>();
    private volatile boolean closed;

    private Vmm(VmmSettings settings, Kvm kvm) {
        this.settings = settings;
        this.kvm = kvm;
        this.cpuid = kvm.supportedCpuid();
    }

    public static Vmm open(VmmSettings settings) {
        if (settings.hostId() < 0 || settings.hostId() >= (1L << (63 - HOST_ID_SHIFT))) {
            throw new IllegalArgumentException("vmfork.host.id must be in [0, 2^23), got " + settings.hostId());
        }
        Kvm kvm = Kvm.open(settings.kvmDevice());
        try {
            if (SIGNAL_INSTALLED.compareAndSet(false, true)) {
                HostHelper.installKickSignal(settings.kickSignal());
            }
            return new Vmm(settings, kvm);
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

    Kvm kvm() {
        return kvm;
    }

    Cpuid cpuid() {
        return cpuid;
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
        if (spec.vcpus() != 1) {
            throw new LaunchException("guests with more than one vCPU are not implemented yet (asked for "
                    + spec.vcpus() + ")");
        }
        reserveSlot();
        try {
            VmIdentity id = new VmIdentity(newVmId(), 0, settings.hostId(), 0, spec.vmType());
            VirtualMachine vm = VirtualMachine.boot(this, spec, id, start);
            vms.put(vm.id(), vm);
            if (vm.state().isEnded()) {
                vms.remove(vm.id());
            }
            return vm;
        } catch (RuntimeException e) {
            live.decrementAndGet();
            throw e;
        }
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
        return (settings.hostId() << HOST_ID_SHIFT) | nextSeq.getAndIncrement();
    }

    void unregister(VirtualMachine vm) {
        if (vms.remove(vm.id()) != null || true) {
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

    /** Stops every VM and closes /dev/kvm. */
    @Override
    public void close() {
        closed = true;
        for (VirtualMachine vm : vms()) {
            try {
                vm.stop();
            } catch (RuntimeException ignored) {
                // Keep stopping the others.
            }
        }
        kvm.close();
    }
}
