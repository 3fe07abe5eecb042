package io.vmfork.vmm.platform;

import java.io.IOException;
import java.io.RandomAccessFile;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * What this host offers to run guests on, found without touching any native code: whether
 * the KVM device opens for reading and writing. Tests use it to skip, visibly and counted,
 * what needs a platform the host lacks.
 */
public final class HostPlatforms {
    /** The KVM device vmfork opens unless configured otherwise. */
    public static final String DEFAULT_KVM_DEVICE = "/dev/kvm";

    /** The reason a KVM-only test gives when it is skipped. */
    public static final String KVM_ONLY = "KVM-only for now: this run's VMM is on the process platform"
            + " (no usable /dev/kvm, or vmfork.vmm.platform = process)";

    /** The reason a process-platform-only test gives when it is skipped. */
    public static final String PROCESS_ONLY = "process-platform-only: this run's VMM is on KVM";

    private HostPlatforms() {
    }

    /** Whether {@value #DEFAULT_KVM_DEVICE} opens for reading and writing. */
    public static boolean kvmUsable() {
        return kvmUnusableReason(DEFAULT_KVM_DEVICE) == null;
    }

    /**
     * Whether a VMM opened with this JVM's configuration runs on KVM: {@code
     * vmfork.vmm.platform} (system property, else the VMFORK_PLATFORM environment
     * variable, else "auto") is kvm, or auto with a usable {@value #DEFAULT_KVM_DEVICE}.
     */
    public static boolean vmmRunsOnKvm() {
        String configured = System.getProperty("vmfork.vmm.platform", System.getenv().getOrDefault("VMFORK_PLATFORM",
                "auto"));
        return switch (configured) {
            case "kvm" -> true;
            case "process" -> false;
            default -> kvmUsable();
        };
    }

    /** Whether a VMM opened with this JVM's configuration runs on the process platform: not {@link #vmmRunsOnKvm}. */
    public static boolean vmmRunsOnProcess() {
        return !vmmRunsOnKvm();
    }

    /** Why {@code device} cannot serve as the KVM device, or null when it opens read-write. */
    public static String kvmUnusableReason(String device) {
        Path p = Path.of(device);
        if (!Files.exists(p)) {
            return device + " does not exist";
        }
        try (RandomAccessFile f = new RandomAccessFile(device, "rw")) {
            return null;
        } catch (IOException e) {
            return device + " cannot be opened read-write: " + e.getMessage();
        }
    }
}
