package io.vmfork.vmm.capsule;

import io.vmfork.kvm.Kvm;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.state.VcpuState;
import java.util.EnumSet;
import java.util.Set;

/**
 * What a host can run, as far as a capsule is concerned.
 *
 * @param supportedCpuid KVM_GET_SUPPORTED_CPUID entries in the kvm_cpuid_entry2 layout
 *                       (40 bytes each: function, index, flags, eax, ebx, ecx, edx, pad[3])
 * @param maxMemoryBytes largest guest RAM this host gives a VM (vmfork.vmm.memory.max)
 * @param maxVcpus       most vCPUs this host gives a VM (vmfork.vmm.max-vcpus)
 * @param fpuFormats     the FPU state layouts this host can restore into a vCPU
 */
public record HostPlatform(long hostId, String hostName, int kvmApiVersion, byte[] supportedCpuid,
        long maxMemoryBytes, int maxVcpus, Set<VcpuState.FpuFormat> fpuFormats) {
    public HostPlatform {
        if (supportedCpuid.length % CapsuleFormat.CPUID_ENTRY_BYTES != 0) {
            throw new IllegalArgumentException("supported cpuid is " + supportedCpuid.length
                    + " bytes, not a multiple of " + CapsuleFormat.CPUID_ENTRY_BYTES);
        }
        supportedCpuid = supportedCpuid.clone();
        fpuFormats = Set.copyOf(fpuFormats);
    }

    /** This host: its KVM's answers and the VMM's limits. */
    public static HostPlatform of(Kvm kvm, VmmSettings settings) {
        io.vmfork.kvm.x86.Cpuid cpuid = kvm.supportedCpuid();
        Set<VcpuState.FpuFormat> fpu = EnumSet.of(VcpuState.FpuFormat.FXSAVE);
        // As Vmm's host capabilities: wherever KVM can set the XSAVE area, whatever its
        // supported CPUID says of XSAVE (PVM hosts leave it out; the guest uses it anyway).
        if (kvm.checkExtension(Kvm.CAP_XSAVE) > 0) {
            fpu.add(VcpuState.FpuFormat.XSAVE);
        }
        return new HostPlatform(settings.hostId(), settings.hostName(), kvm.apiVersion(), cpuid.entryBytes(),
                settings.maxMemory(), settings.maxVcpus(), fpu);
    }

    @Override
    public byte[] supportedCpuid() {
        return supportedCpuid.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof HostPlatform x && hostId == x.hostId && hostName.equals(x.hostName)
                && kvmApiVersion == x.kvmApiVersion && java.util.Arrays.equals(supportedCpuid, x.supportedCpuid)
                && maxMemoryBytes == x.maxMemoryBytes && maxVcpus == x.maxVcpus && fpuFormats.equals(x.fpuFormats);
    }

    @Override
    public int hashCode() {
        return Long.hashCode(hostId) * 31 + java.util.Arrays.hashCode(supportedCpuid);
    }

    @Override
    public String toString() {
        return "HostPlatform[" + hostId + " " + hostName + " kvm api " + kvmApiVersion + ", "
                + supportedCpuid.length / CapsuleFormat.CPUID_ENTRY_BYTES + " cpuid entries, max memory "
                + maxMemoryBytes + ", max vcpus " + maxVcpus + ", fpu " + fpuFormats + "]";
    }
}
