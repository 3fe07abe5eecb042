package io.vmfork.vmm.platform.kvm;

import io.vmfork.kvm.Kvm;
import io.vmfork.kvm.KvmException;
import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.KvmVm;
import io.vmfork.kvm.VcpuThreads;
import io.vmfork.kvm.x86.Cpuid;
import io.vmfork.os.Mapping;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.capsule.HostPlatform;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.platform.HostCaps;
import io.vmfork.vmm.platform.HostPlatforms;
import io.vmfork.vmm.platform.Machine;
import io.vmfork.vmm.platform.ParkedThread;
import io.vmfork.vmm.platform.Platform;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.VcpuState;
import io.vmfork.vmm.x86.CpuSetup;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * The KVM platform: each VM a KVM VM whose memory slot 0 is its guest RAM, each vCPU a KVM
 * vCPU ({@link KvmExecContext}), dirty tracking by KVM's dirty log. A pool of KVM VMs made
 * ahead of need ({@link VmPool}) is what every launch starts from.
 */
public final class KvmPlatform implements Platform {
    private static final AtomicBoolean SIGNAL_INSTALLED = new AtomicBoolean();
    /** XSAVE component 18, AMX tile data: enabled per process, on request. */
    private static final int XFEATURE_XTILEDATA = 18;

    private final VmmSettings settings;
    private final Kvm kvm;
    private final Cpuid cpuid;
    private final byte[] cpuidEntries;
    /** What a guest reads with cpuid here (CpuidProbe), in kvm_cpuid_entry2 layout. */
    private final byte[] observedCpuid;
    private final boolean cpuidIntercepted;
    private final HostCaps caps;
    /** KVM VMs made ahead of need, or null (vmfork.vmm.pool.size = 0). */
    private final VmPool pool;

    private KvmPlatform(VmmSettings settings, Kvm kvm) {
        this.settings = settings;
        this.kvm = kvm;
        this.cpuid = kvm.supportedCpuid();
        this.cpuidEntries = cpuid.entryBytes();
        this.observedCpuid = CpuidProbe.observed(kvm, cpuid, io.vmfork.vmm.capsule.CpuFeatures.observedLeaves());
        this.cpuidIntercepted = !java.util.Arrays.equals(withoutApicId(observedCpuid),
                withoutApicId(io.vmfork.vmm.capsule.CpuFeatures.hostObserved()));
        this.caps = hostCaps(kvm, cpuid);
        this.pool = settings.poolSize() > 0 ? VmPool.start(kvm, cpuid, settings.poolSize(), settings.poolMaxSize(),
                settings.poolShrinkAfter(), settings.poolRetryAfter(), settings.poolRefillAfter())
                : null;
    }

    /**
     * Opens {@code vmfork.vmm.kvm-device}; a failure names what is missing and how to run
     * on the process platform instead.
     */
    public static KvmPlatform open(VmmSettings settings) {
        Kvm kvm;
        try {
            kvm = Kvm.open(settings.kvmDevice());
        } catch (KvmException e) {
            String why = HostPlatforms.kvmUnusableReason(settings.kvmDevice());
            throw new KvmException("the kvm platform is configured (vmfork.vmm.platform or"
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
            return new KvmPlatform(settings, kvm);
        } catch (RuntimeException e) {
            kvm.close();
            throw e;
        }
    }

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
    private static HostCaps hostCaps(Kvm kvm, Cpuid cpuid) {
        boolean xsave = kvm.checkExtension(Kvm.CAP_XSAVE) > 0;
        int xsave2Size = kvm.checkExtension(Kvm.CAP_XSAVE2);
        int xsaveSize = Math.max(KvmVcpu.XSAVE_SIZE, xsave2Size);
        boolean xcrs = kvm.checkExtension(Kvm.CAP_XCRS) > 0 && cpuid.hasXsave();
        int[] msrs = io.vmfork.vmm.x86.GuestModel.hostMsrs(kvm.msrIndexList());
        return new HostCaps(xsave, xsaveSize, xsave2Size > 0, xcrs, msrs);
    }

    @Override
    public String name() {
        return "kvm";
    }

    @Override
    public byte[] cpuidEntries() {
        return cpuidEntries.clone();
    }

    @Override
    public HostCaps caps() {
        return caps;
    }

    @Override
    public HostPlatform hostPlatform() {
        return HostPlatform.of(kvm, settings, observedCpuid);
    }

    /** {@code entries} (kvm_cpuid_entry2) with leaf 1's initial APIC id (EBX[31:24]) cleared: it names the CPU that asked. */
    private static byte[] withoutApicId(byte[] entries) {
        byte[] e = entries.clone();
        java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(e).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (int at = 0; at + 40 <= e.length; at += 40) {
            if (b.getInt(at) == 1) {
                e[at + 19] = 0;
            }
        }
        return e;
    }

    /**
     * Whether a guest's cpuid is answered by KVM from the CPUID the VMM set (hardware
     * virtualisation, PVM with CPUID faulting) rather than by the host CPU itself (PVM
     * without it): what the {@link CpuidProbe} found.
     */
    public boolean cpuidIntercepted() {
        return cpuidIntercepted;
    }

    /** The /dev/kvm handle. */
    public Kvm kvm() {
        return kvm;
    }

    /** The CPUID every VM booted here gets (and every pooled vCPU has); shared, never changed. */
    public Cpuid cpuid() {
        return cpuid;
    }

    /** The pool of ready KVM VMs, or null when there is none. */
    public VmPool pool() {
        return pool;
    }

    /**
     * A ready KVM VM from the pool, or null (no pool, or it is empty, or it is closing): the
     * caller then creates one inline. {@code memorySize}: the RAM of the VM it becomes if
     * that is a fork child or clone (its memory slot may be set already:
     * {@link VmPool.Entry#reserved}), 0 for a booted VM.
     */
    public VmPool.Entry takePooledVm(long memorySize) {
        VmPool p = pool;
        return p == null ? null : p.take(memorySize);
    }

    int settingsKickSignal() {
        return settings.kickSignal();
    }

    int pagesCopiedPaused() {
        return settings.pagesCopiedPaused();
    }

    @Override
    public void expectLaunches(int n) {
        VmPool p = pool;
        if (p != null) {
            p.expect(n);
        }
    }

    @Override
    public Machine boot(GuestMemory memory, int vcpus, long[] entryRegs) {
        KvmVm kvmVm = null;
        KvmVcpu spare = null;
        ParkedThread spareThread = null;
        List<KvmVcpu> made = new ArrayList<>();
        try {
            VmPool.Entry pooled = takePooledVm(0);
            if (pooled != null) {
                kvmVm = pooled.vm();
                spare = pooled.vcpu0(); // has the host's CPUID already
                spareThread = pooled.thread();
                if (pooled.reserved() != null) {
                    // A booted VM runs on its own RAM file, shared: not the pooled slot's range.
                    kvmVm.setUserMemoryRegion(0, 0, 0, 0, 0);
                    pooled.reserved().close();
                }
            } else {
                kvmVm = kvm.createVm();
            }
            kvmVm.setUserMemoryRegion(0, 0, 0, memory.size(), memory.hostAddress());
            for (int i = 0; i < vcpus; i++) {
                KvmVcpu kv;
                if (i == 0 && spare != null) {
                    kv = spare;
                    spare = null;
                    made.add(kv);
                } else {
                    kv = kvmVm.createVcpu(i);
                    made.add(kv);
                    CpuSetup.setCpuid(kv, cpuid);
                }
                CpuSetup.setLongModeUser(kv, cpuid);
                // Every vCPU gets the boot registers, so that a capture of one not yet
                // started is a state the guest model accepts; only vCPU 0 runs from them.
                kv.setRegsArray(entryRegs);
            }
            KvmMachine m = new KvmMachine(this, kvmVm, memory, made, spareThread, cpuid);
            spareThread = null;
            return m;
        } catch (RuntimeException e) {
            closeAll(made, spare, spareThread, kvmVm, null);
            throw e;
        }
    }

    @Override
    public Machine restore(String name, MachineState state, RuntimeImage image) {
        GuestMemory memory = null;
        KvmVm kvmVm = null;
        KvmVcpu spare = null;
        ParkedThread spareThread = null;
        Mapping reserved = null;
        List<KvmVcpu> made = new ArrayList<>();
        try {
            VmPool.Entry pooled = takePooledVm(image.size());
            if (pooled != null) {
                kvmVm = pooled.vm();
                spare = pooled.vcpu0();
                spareThread = pooled.thread();
                reserved = pooled.reserved();
                if (reserved != null && pooled.slotSize() != image.size()) {
                    // Made for another RAM size: its memory slot goes, and the range with it.
                    kvmVm.setUserMemoryRegion(0, 0, 0, 0, 0);
                    reserved.close();
                    reserved = null;
                }
            } else {
                kvmVm = kvm.createVm();
            }
            // A pooled VM of this size has its memory slot (dirty-logged) over a reserved
            // range already: the view is mapped into that range, and KVM needs no new slot.
            Mapping into = reserved;
            reserved = null; // the view owns it from here, also if mapping fails
            memory = GuestMemory.fromImage(name, image, settings.maxImageExtents(), into);
            if (into == null) {
                kvmVm.setUserMemoryRegion(0, KvmVm.MEM_LOG_DIRTY_PAGES, 0, memory.size(), memory.hostAddress());
            }
            kvmVm.setClock(state.clockNs());
            byte[] entries = state.cpuidEntries();
            // A fork child of a VM booted here has the host's CPUID: share this one (no copy).
            boolean hostCpuid = Arrays.equals(cpuidEntries, entries);
            Cpuid vmCpuid = hostCpuid ? cpuid : Cpuid.fromEntryBytes(entries);
            // A pooled vCPU has the host's CPUID; one captured elsewhere may differ, and
            // KVM_SET_CPUID2 may still change it, before the vCPU's first KVM_RUN.
            boolean spareHasCpuid = spare != null && hostCpuid;
            for (VcpuState vs : state.vcpus()) {
                if (vs.index() != made.size()) {
                    throw new io.vmfork.vmm.LaunchException("the captured vCPUs are not in index order 0..n-1: vCPU "
                            + vs.index() + " at position " + made.size());
                }
                KvmVcpu kv;
                boolean cpuidSet = false;
                if (vs.index() == 0 && spare != null) {
                    kv = spare;
                    spare = null;
                    cpuidSet = spareHasCpuid;
                } else {
                    kv = kvmVm.createVcpu(vs.index());
                }
                made.add(kv);
                if (!cpuidSet) {
                    kv.setCpuid(vmCpuid);
                }
                VcpuStates.restore(kv, vs, entries, caps);
            }
            if (spare != null) {
                // The captured VM has no vCPU 0 (a capsule the guest model would refuse): not used.
                spare.close();
                spare = null;
                spareThread.cancel();
                spareThread = null;
            }
            KvmMachine m = new KvmMachine(this, kvmVm, memory, made, spareThread, vmCpuid);
            spareThread = null;
            return m;
        } catch (RuntimeException e) {
            closeAll(made, spare, spareThread, kvmVm, memory);
            if (reserved != null) {
                reserved.close();
            }
            throw e;
        }
    }

    /** Releases what a boot or restore that failed half-way had made. */
    private static void closeAll(List<KvmVcpu> made, KvmVcpu spare, ParkedThread spareThread, KvmVm kvmVm,
            GuestMemory memory) {
        if (spareThread != null) {
            spareThread.cancel();
        }
        for (KvmVcpu v : made) {
            v.close();
        }
        if (spare != null) {
            spare.close();
        }
        if (kvmVm != null) {
            kvmVm.close();
        }
        if (memory != null) {
            memory.close();
        }
    }

    @Override
    public void closing() {
        if (pool != null) {
            pool.close();
        }
    }

    @Override
    public void close() {
        try {
            closing();
        } finally {
            kvm.close();
        }
    }
}
