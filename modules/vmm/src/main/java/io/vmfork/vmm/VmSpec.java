package io.vmfork.vmm;

import io.vmfork.vmm.guest.ElfImage;

/**
 * What to launch: a guest image, its RAM, vCPUs and type. The vm type is carried on every
 * VM and its copies; the cluster's placement groups hosts by it. Of the {@code vcpus}
 * (1 to {@code vmfork.vmm.max-vcpus}), vCPU 0 runs the image from its entry; the others
 * run nothing until the guest starts them (docs/hypercalls.md, "Several vCPUs").
 */
public record VmSpec(ElfImage image, long memoryBytes, int vcpus, int vmType, VmListener listener) {
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

    public static VmSpec of(ElfImage image, long memoryBytes) {
        return new VmSpec(image, memoryBytes, 1, 0, VmListener.NONE);
    }

    public VmSpec withListener(VmListener l) {
        return new VmSpec(image, memoryBytes, vcpus, vmType, l);
    }

    public VmSpec withVcpus(int n) {
        return new VmSpec(image, memoryBytes, n, vmType, listener);
    }

    public VmSpec withVmType(int type) {
        return new VmSpec(image, memoryBytes, vcpus, type, listener);
    }
}
