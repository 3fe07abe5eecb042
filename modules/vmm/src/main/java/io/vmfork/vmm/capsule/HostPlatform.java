package io.vmfork.vmm.capsule;

import io.vmfork.kvm.Kvm;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.arch.CpuState;
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
 * @param observedCpuid  CPUID as a guest reads it on this host, same layout: asked of a real
 *                       vCPU on KVM hosts (where KVM intercepts cpuid, the CPUID the VMM set;
 *                       on PVM hosts without CPUID faulting, the host CPU's own), the host's on
 *                       the process platform
 * @param observedXcr0   XCR0 in force for such a program: the state components a guest may use
 */
public record HostPlatform(long hostId, String hostName, int kvmApiVersion, byte[] supportedCpuid,
        long maxMemoryBytes, int maxVcpus, Set<CpuState.FpuFormat> fpuFormats, byte[] observedCpuid,
        long observedXcr0) {
    public HostPlatform {
        if (supportedCpuid.length % CapsuleFormat.CPUID_ENTRY_BYTES != 0) {
            throw new IllegalArgumentException("supported cpuid is " + supportedCpuid.length
                    + " bytes, not a multiple of " + CapsuleFormat.CPUID_ENTRY_BYTES);
        }
        if (observedCpuid.length % CapsuleFormat.CPUID_ENTRY_BYTES != 0) {
            throw new IllegalArgumentException("observed cpuid is " + observedCpuid.length
                    + " bytes, not a multiple of " + CapsuleFormat.CPUID_ENTRY_BYTES);
        }
        supportedCpuid = supportedCpuid.clone();
        observedCpuid = observedCpuid.clone();
        fpuFormats = Set.copyOf(fpuFormats);
    }

    /** A host whose guests see exactly what KVM offers them (hardware virtualization), XCR0 x87|SSE|AVX. */
    public HostPlatform(long hostId, String hostName, int kvmApiVersion, byte[] supportedCpuid, long maxMemoryBytes,
            int maxVcpus, Set<CpuState.FpuFormat> fpuFormats) {
        this(hostId, hostName, kvmApiVersion, supportedCpuid, maxMemoryBytes, maxVcpus, fpuFormats, supportedCpuid,
                0x7);
    }

    /** The same host with other observed CPUID and XCR0, for tests and tools. */
    public HostPlatform withObserved(byte[] cpuid, long xcr0) {
        return new HostPlatform(hostId, hostName, kvmApiVersion, supportedCpuid, maxMemoryBytes, maxVcpus, fpuFormats,
                cpuid, xcr0);
    }

    /**
     * This host as a capsule sees it with {@code features} (named as {@link CpuFeatures}
     * names them, e.g. "avx512f" or "xsave state opmask") absent: cleared in the supported
     * and observed CPUID, and an XSAVE state component also in XCR0. A capsule whose guest
     * was started with, or could observe, one of them is then refused naming it.
     *
     * @throws IllegalArgumentException for a name CpuFeatures does not know
     */
    public HostPlatform hiding(java.util.List<String> features) {
        byte[] supported = supportedCpuid;
        byte[] observed = observedCpuid;
        long xcr0 = observedXcr0;
        CpuFeatures.Register components = CpuFeatures.registerOf("xsave state x87");
        for (String f : features) {
            CpuFeatures.Register r = CpuFeatures.registerOf(f);
            int bit = CpuFeatures.bitOf(f);
            supported = CpuFeatures.withBitCleared(supported, r.function(), r.index(), r.reg(), bit);
            observed = CpuFeatures.withBitCleared(observed, r.function(), r.index(), r.reg(), bit);
            if (r.equals(components)) {
                xcr0 &= ~(1L << bit);
            }
        }
        return new HostPlatform(hostId, hostName, kvmApiVersion, supported, maxMemoryBytes, maxVcpus, fpuFormats,
                observed, xcr0);
    }

    /**
     * This host: its KVM's answers, the CPUID its guests read ({@code observed}: the KVM
     * platform asks a vCPU, see {@code CpuidProbe}) and the VMM's limits, less the CPU
     * features {@code vmfork.capsule.hide-cpu-features} hides ({@link #hiding}).
     */
    public static HostPlatform of(Kvm kvm, VmmSettings settings, byte[] observed) {
        io.vmfork.kvm.x86.Cpuid cpuid = kvm.supportedCpuid();
        Set<CpuState.FpuFormat> fpu = EnumSet.of(CpuState.FpuFormat.FXSAVE);
        // As Vmm's host capabilities: wherever KVM can set the XSAVE area, whatever its
        // supported CPUID says of XSAVE (PVM hosts leave it out; the guest uses it anyway).
        if (kvm.checkExtension(Kvm.CAP_XSAVE) > 0) {
            fpu.add(CpuState.FpuFormat.XSAVE);
        }
        return new HostPlatform(settings.hostId(), settings.hostName(), kvm.apiVersion(), cpuid.entryBytes(),
                settings.maxMemory(), settings.maxVcpus(), fpu, observed,
                io.vmfork.os.HostHelper.hostXcr0()).hiding(settings.capsuleLimits().hiddenCpuFeatures());
    }

    /**
     * A process-platform host: its guests run at CPL3 on the host CPU and see its own CPUID
     * and XCR0, which is also what it offers; no KVM (API version 0); XSAVE areas only.
     */
    public static HostPlatform ofProcess(VmmSettings settings) {
        byte[] observed = CpuFeatures.hostObserved();
        return new HostPlatform(settings.hostId(), settings.hostName(), 0, observed, settings.maxMemory(),
                settings.maxVcpus(), EnumSet.of(CpuState.FpuFormat.XSAVE), observed,
                io.vmfork.os.HostHelper.hostXcr0()).hiding(settings.capsuleLimits().hiddenCpuFeatures());
    }

    /** Whether this host runs guests in KVM (a KVM API version), rather than on the process platform. */
    public boolean isKvm() {
        return kvmApiVersion != 0;
    }

    @Override
    public byte[] supportedCpuid() {
        return supportedCpuid.clone();
    }

    @Override
    public byte[] observedCpuid() {
        return observedCpuid.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof HostPlatform x && hostId == x.hostId && hostName.equals(x.hostName)
                && kvmApiVersion == x.kvmApiVersion && java.util.Arrays.equals(supportedCpuid, x.supportedCpuid)
                && maxMemoryBytes == x.maxMemoryBytes && maxVcpus == x.maxVcpus && fpuFormats.equals(x.fpuFormats)
                && java.util.Arrays.equals(observedCpuid, x.observedCpuid) && observedXcr0 == x.observedXcr0;
    }

    @Override
    public int hashCode() {
        return Long.hashCode(hostId) * 31 + java.util.Arrays.hashCode(supportedCpuid);
    }

    @Override
    public String toString() {
        return "HostPlatform[" + hostId + " " + hostName + " kvm api " + kvmApiVersion + ", "
                + supportedCpuid.length / CapsuleFormat.CPUID_ENTRY_BYTES + " cpuid entries, max memory "
                + maxMemoryBytes + ", max vcpus " + maxVcpus + ", fpu " + fpuFormats + ", xcr0 0x"
                + Long.toHexString(observedXcr0) + "]";
    }
}
