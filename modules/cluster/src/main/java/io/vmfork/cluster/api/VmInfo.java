package io.vmfork.cluster.api;

import io.vmfork.cluster.serialization.ClusterMessage;

/**
 * One VM as its host describes it.
 *
 * @param vmId           the VM's id (its host id in bits 40 and up)
 * @param hostId         the host it runs on
 * @param state          the VMM's state name (CREATED, RUNNING, PAUSED, EXITED, CRASHED, STOPPED)
 * @param vmType         its vm_type
 * @param parentId       the VM it was forked from, 0 for a booted VM
 * @param forkGeneration 0 for a booted VM, the parent's plus one for a copy
 * @param origin         booted, child or clone
 * @param image          the guest image's name
 * @param memory         guest RAM in bytes
 * @param ready          whether the guest said it is ready to serve
 */
public record VmInfo(long vmId, long hostId, String state, int vmType, long parentId, long forkGeneration,
                     VmOrigin origin, String image, long memory, boolean ready) implements ClusterMessage {
    public VmInfo {
        if (state == null || origin == null || image == null) {
            throw new IllegalArgumentException("VmInfo needs a state, an origin and an image name");
        }
    }

    /** The host a VM id belongs to: bits 40 and up (see the VMM's VM ids). */
    public static long hostOf(long vmId) {
        return vmId >>> 40;
    }
}
