package io.vmfork.vmm.state;

import io.vmfork.vmm.VmIdentity;
import java.util.Arrays;
import java.util.List;

/**
 * The root state of a VM, composed of its components' states: who it is, the CPU
 * features it was started with, its memory size, the KVM clock, one state per vCPU and
 * the device model. Guest RAM travels beside it as a {@link MemorySource}.
 *
 * @param cpuidEntries the raw kvm_cpuid_entry2 array (40 bytes an entry) set on its vCPUs
 * @param clockNs      the KVM clock (KVM_GET_CLOCK) at capture
 * @param linux        a Linux guest's personality (docs/linux.md, "State"), null for an SDK guest; its own
 *                     copy, which a restore copies again. Not in capsules yet (the writer refuses it).
 */
public record MachineState(VmIdentity identity, long memorySize, byte[] cpuidEntries, long clockNs,
        List<VcpuState> vcpus, DeviceState devices, io.vmfork.vmm.linux.LinuxState linux) {
    public MachineState {
        cpuidEntries = cpuidEntries.clone();
        vcpus = List.copyOf(vcpus);
    }

    /** The state of an SDK guest. */
    public MachineState(VmIdentity identity, long memorySize, byte[] cpuidEntries, long clockNs,
            List<VcpuState> vcpus, DeviceState devices) {
        this(identity, memorySize, cpuidEntries, clockNs, vcpus, devices, null);
    }

    @Override
    public byte[] cpuidEntries() {
        return cpuidEntries.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof MachineState x && identity.equals(x.identity) && memorySize == x.memorySize
                && Arrays.equals(cpuidEntries, x.cpuidEntries) && clockNs == x.clockNs && vcpus.equals(x.vcpus)
                && devices.equals(x.devices) && java.util.Objects.equals(linux, x.linux);
    }

    @Override
    public int hashCode() {
        return identity.hashCode();
    }
}
