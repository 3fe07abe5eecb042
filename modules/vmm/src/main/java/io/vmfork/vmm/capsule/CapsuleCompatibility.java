package io.vmfork.vmm.capsule;

import io.vmfork.proto.CapsuleHeader;
import io.vmfork.vmm.arch.CpuState;
import java.util.ArrayList;
import java.util.List;

/**
 * The design's {@code compatible(source, capsule)}: whether this host can run the clone VM
 * a capsule describes, decided from the header alone so that a target refuses a capsule
 * before it reads its memory. Checks the KVM API version, the memory size and vCPU count
 * against the host's limits, the FPU state layout, the CPU vendor and every CPU feature
 * bit of {@link CpuFeatures#CHECKED} that the guest was started with; and, since format
 * version 2, every feature bit the guest could observe where it was captured (on PVM hosts
 * the host CPU's own CPUID, which a CPL3 guest reads natively) and every XCR0 state
 * component it may be using: a guest that found AVX-512 may use it, whatever KVM said.
 */
public final class CapsuleCompatibility {
    private CapsuleCompatibility() {
    }

    /** Returns normally if {@code host} can run the capsule; otherwise names every mismatch. */
    public static void check(CapsuleHeader header, HostPlatform host) {
        List<String> mismatches = mismatches(header, host);
        if (!mismatches.isEmpty()) {
            throw new CapsuleIncompatibleException(
                    header.getSourceHostName() + " (id " + header.getSourceHostId() + ")",
                    host.hostName() + " (id " + host.hostId() + ")", mismatches);
        }
    }

    /** Every requirement of the capsule that {@code host} does not meet; empty if it can run it. */
    public static List<String> mismatches(CapsuleHeader header, HostPlatform host) {
        List<String> out = new ArrayList<>();
        // A KVM API version belongs to KVM hosts: a capsule taken on the process platform
        // records 0, and a process-platform host has none to compare (what the guest could
        // observe of the CPU is what decides between the two platforms).
        if (header.getKvmApiVersion() != 0 && host.isKvm() && header.getKvmApiVersion() != host.kvmApiVersion()) {
            out.add("KVM API version " + Integer.toUnsignedString(header.getKvmApiVersion()) + ", host has "
                    + host.kvmApiVersion());
        }
        if (Long.compareUnsigned(header.getMemorySize(), host.maxMemoryBytes()) > 0) {
            out.add("memory size " + Long.toUnsignedString(header.getMemorySize()) + " bytes is over the host's maximum of "
                    + host.maxMemoryBytes());
        }
        if (Integer.compareUnsigned(header.getVcpuCount(), host.maxVcpus()) > 0) {
            out.add(Integer.toUnsignedString(header.getVcpuCount()) + " vCPUs is over the host's maximum of "
                    + host.maxVcpus());
        }
        CpuState.FpuFormat fpu = switch (header.getFpuFormat()) {
            case FPU_FORMAT_XSAVE -> CpuState.FpuFormat.XSAVE;
            case FPU_FORMAT_FXSAVE -> CpuState.FpuFormat.FXSAVE;
            default -> null;
        };
        if (fpu == null) {
            out.add("FPU format " + header.getFpuFormat() + " is unknown");
        } else if (!host.fpuFormats().contains(fpu)) {
            out.add("FPU format " + fpu + " cannot be restored on this host (it has " + host.fpuFormats() + ")");
        }
        byte[] needed = StateCodec.decodeCpuid(header.getRequiredCpuidList());
        byte[] offered = host.supportedCpuid();
        String vendor = CpuFeatures.vendor(needed);
        String hostVendor = CpuFeatures.vendor(offered);
        if (vendor != null && hostVendor != null && !vendor.equals(hostVendor)) {
            out.add("CPU vendor " + vendor + ", host has " + hostVendor);
        }
        List<String> features = CpuFeatures.missing(needed, offered);
        if (!features.isEmpty()) {
            out.add("CPU features missing on this host: " + String.join(", ", features));
        }
        if (header.getObservedCpuidCount() > 0) {
            List<String> observed = CpuFeatures.missing(StateCodec.decodeCpuid(header.getObservedCpuidList()),
                    host.observedCpuid());
            if (!observed.isEmpty()) {
                out.add("CPU features the guest could observe where it was captured, missing on this host: "
                        + String.join(", ", observed));
            }
            List<String> components = CpuFeatures.missingXcr0(header.getObservedXcr0(), host.observedXcr0());
            if (!components.isEmpty()) {
                out.add("XSAVE state components the guest may be using (XCR0 0x"
                        + Long.toHexString(header.getObservedXcr0()) + "), missing on this host (XCR0 0x"
                        + Long.toHexString(host.observedXcr0()) + "): " + String.join(", ", components));
            }
        }
        return out;
    }
}
