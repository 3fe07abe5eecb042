package io.vmfork.vmm;

import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.linux.ProgramArgs;

/**
 * What to launch: a guest image, its RAM, vCPUs and type. The vm type is carried on every
 * VM and its copies; the cluster's placement groups hosts by it. Of the {@code vcpus}
 * (1 to {@code vmfork.vmm.max-vcpus}), vCPU 0 runs the image from its entry; the others
 * run nothing until the guest starts them (docs/hypercalls.md, "Several vCPUs"). A Linux
 * program (docs/linux.md) is started with {@code program}'s argv and environment.
 */
public record VmSpec(ElfImage image, long memoryBytes, int vcpus, int vmType, VmListener listener,
        ProgramArgs program) {
    public VmSpec {
        if (image == null) {
            throw new IllegalArgumentException("a VM needs a guest image");
        }
        if (vcpus < 1) {
            throw new IllegalArgumentException("a VM needs at least one vCPU, got " + vcpus);
        }
        if (listener == null) {
            listener = VmListener.NONE;
        }
    }

    /** A spec without program arguments (an SDK guest; a Linux program then gets argv = {its name}, no environment). */
    public VmSpec(ElfImage image, long memoryBytes, int vcpus, int vmType, VmListener listener) {
        this(image, memoryBytes, vcpus, vmType, listener, null);
    }

    public static VmSpec of(ElfImage image, long memoryBytes) {
        return new VmSpec(image, memoryBytes, 1, 0, VmListener.NONE, null);
    }

    public VmSpec withListener(VmListener l) {
        return new VmSpec(image, memoryBytes, vcpus, vmType, l, program);
    }

    public VmSpec withVcpus(int n) {
        return new VmSpec(image, memoryBytes, n, vmType, listener, program);
    }

    public VmSpec withVmType(int type) {
        return new VmSpec(image, memoryBytes, vcpus, type, listener, program);
    }

    /** A Linux program's argv and environment (docs/linux.md); an SDK guest takes none. */
    public VmSpec withProgram(ProgramArgs args) {
        if (args != null && image.kind() != ElfImage.Kind.LINUX) {
            throw new IllegalArgumentException(image.name() + " is an SDK guest: it takes no argv or environment");
        }
        return new VmSpec(image, memoryBytes, vcpus, vmType, listener, args);
    }
}
