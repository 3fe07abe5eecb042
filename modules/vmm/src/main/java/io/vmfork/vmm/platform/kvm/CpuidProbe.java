package io.vmfork.vmm.platform.kvm;

import io.vmfork.kvm.Kvm;
import io.vmfork.kvm.KvmException;
import io.vmfork.kvm.KvmRun;
import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.KvmVm;
import io.vmfork.kvm.x86.Cpuid;
import io.vmfork.kvm.x86.KvmRegs;
import io.vmfork.vmm.hypercall.Hypercalls;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.x86.CpuSetup;
import io.vmfork.vmm.x86.GuestLayout;
import io.vmfork.vmm.x86.PageTables;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.List;

/**
 * What a guest of this host sees when it executes {@code cpuid}, asked of a real vCPU: a
 * VM of 4 MiB set up as every guest is ({@link CpuSetup}: long mode at CPL3, the VMM's
 * CPUID) runs {@code cpuid} once per leaf and reports through a hypercall exit.
 *
 * <p>Why it is asked rather than assumed: where KVM intercepts {@code cpuid} (hardware
 * virtualisation, and PVM hosts that use CPUID faulting) a guest sees the CPUID the VMM set,
 * with OSXSAVE following its CR4; where it does not (PVM hosts without CPUID faulting: the
 * guest runs in host user mode) it sees the host CPU's own. Both kinds of PVM host were
 * met on the development machines. A capsule records what its guest could observe
 * (docs/capsule.md, "CPU features"), so the VMM must know which. About a millisecond, once
 * per VMM.
 */
final class CpuidProbe {
    /** cpuid; mov %edx,%esi; mov $PORT,%dx; out %eax,(%dx) */
    private static final byte[] CODE = {
        0x0f, (byte) 0xa2,
        (byte) 0x89, (byte) 0xd6,
        0x66, (byte) 0xba, (byte) (Hypercalls.PORT & 0xff), (byte) (Hypercalls.PORT >> 8),
        (byte) 0xef,
    };
    private static final long SIZE = 4L << 20;
    private static final int ENTRY_BYTES = 40;
    private static final int FLAG_SIGNIFICANT_INDEX = 1;

    private CpuidProbe() {
    }

    /**
     * The leaves {@code leaves} ({function, index}) as a guest of this host reads them, in
     * kvm_cpuid_entry2 layout (as {@code CpuFeatures.hostObserved} gives the host's).
     *
     * @throws KvmException if the probe VM cannot be made or does not reach its exit
     */
    static byte[] observed(Kvm kvm, Cpuid cpuid, List<List<Integer>> leaves) {
        ByteBuffer out = ByteBuffer.allocate(leaves.size() * ENTRY_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        try (GuestMemory memory = GuestMemory.create("vmfork-cpuid-probe", SIZE, 1);
             KvmVm vm = kvm.createVm()) {
            PageTables.build(memory);
            memory.write(GuestLayout.IMAGE_MIN, CODE);
            vm.setUserMemoryRegion(0, 0, 0, memory.size(), memory.hostAddress());
            try (KvmVcpu vcpu = vm.createVcpu(0)) {
                CpuSetup.setCpuid(vcpu, cpuid);
                CpuSetup.setLongModeUser(vcpu, cpuid);
                for (List<Integer> leaf : leaves) {
                    long[] regs = CpuSetup.entryRegs(GuestLayout.IMAGE_MIN, SIZE, 0);
                    KvmRegs r = new KvmRegs();
                    r.rip = regs[io.vmfork.vmm.arch.CpuState.RIP];
                    r.rsp = regs[io.vmfork.vmm.arch.CpuState.RSP];
                    r.rflags = regs[io.vmfork.vmm.arch.CpuState.RFLAGS];
                    r.rax = leaf.get(0);
                    r.rcx = leaf.get(1);
                    vcpu.setRegs(r);
                    int rc = vcpu.runOnce();
                    int exit = vcpu.run().exitReason();
                    if (rc != 0 || exit != KvmRun.EXIT_IO || vcpu.run().ioPort() != Hypercalls.PORT) {
                        throw new KvmException("the CPUID probe VM did not reach its exit (KVM_RUN " + rc
                                + ", exit reason " + exit + ")");
                    }
                    KvmRegs got = vcpu.getRegs();
                    boolean subleaves = leaf.get(0) == 7 || leaf.get(0) == 0xD;
                    out.putInt(leaf.get(0)).putInt(leaf.get(1)).putInt(subleaves ? FLAG_SIGNIFICANT_INDEX : 0);
                    out.putInt((int) got.rax).putInt((int) got.rbx).putInt((int) got.rcx).putInt((int) got.rsi);
                    out.putInt(0).putInt(0).putInt(0);
                }
            }
        }
        return out.array();
    }
}
