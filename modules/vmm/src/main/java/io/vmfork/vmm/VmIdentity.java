package io.vmfork.vmm;

/** Who a VM is, as the IDENTITY hypercall tells the guest. */
public record VmIdentity(long vmId, long parentId, long hostId, long forkGeneration, int vmType) {
}
