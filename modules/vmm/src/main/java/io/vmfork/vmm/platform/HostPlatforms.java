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
    public static final String KVM_ONLY = "KVM-only: /dev/kvm is absent or not usable on this host";

    private HostPlatforms() {
    }

    /** Whether {@value #DEFAULT_KVM_DEVICE} opens for reading and writing. */
    public static boolean kvmUsable() {
        return kvmUnusableReason(DEFAULT_KVM_DEVICE) == null;
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
