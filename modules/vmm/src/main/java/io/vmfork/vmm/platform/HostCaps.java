package io.vmfork.vmm.platform;

/**
 * What vCPU state a platform saves and restores on this host, decided once per VMM: what a
 * capture holds and what a capsule may carry here.
 *
 * @param xsave      the whole XSAVE area is carried (on KVM: KVM_GET/SET_XSAVE exist)
 * @param xsaveSize  bytes of a vCPU's XSAVE area (4 KiB, or KVM_CAP_XSAVE2's size)
 * @param xsave2     KVM_GET_XSAVE2 exists (needed where the area exceeds 4 KiB); false off KVM
 * @param xcrs       XCR0 is carried
 * @param msrIndices the MSRs a capture lists
 */
public record HostCaps(boolean xsave, int xsaveSize, boolean xsave2, boolean xcrs, int[] msrIndices) {
    public HostCaps {
        msrIndices = msrIndices.clone();
    }

    @Override
    public int[] msrIndices() {
        return msrIndices.clone();
    }
}
