package io.vmfork.vmm.capsule;

import java.util.List;

/**
 * A well-formed capsule that this host cannot run: "capsule not supported on this host"
 * in the design's words. The message and {@link #mismatches()} name every requirement
 * the host does not meet, not only the first.
 */
public final class CapsuleIncompatibleException extends CapsuleException {
    private final List<String> mismatches;

    public CapsuleIncompatibleException(String sourceHost, String targetHost, List<String> mismatches) {
        super("capsule from host " + sourceHost + " is not supported on host " + targetHost + ": "
                + String.join("; ", mismatches));
        this.mismatches = List.copyOf(mismatches);
    }

    /** As above, caused by {@code cause} (a refusal by KVM itself). */
    public CapsuleIncompatibleException(String sourceHost, String targetHost, List<String> mismatches,
            Throwable cause) {
        this(sourceHost, targetHost, mismatches);
        initCause(cause);
    }

    /** One entry per unmet requirement, e.g. "CPU features missing: avx512f (CPUID.7.0:EBX[16])". */
    public List<String> mismatches() {
        return mismatches;
    }
}
