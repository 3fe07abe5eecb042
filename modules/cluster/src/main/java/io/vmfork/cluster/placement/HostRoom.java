package io.vmfork.cluster.placement;

/**
 * The room a host has left for placement: its report less what placement has reserved
 * there since. Only hosts that may be chosen (reachable members) have one.
 */
public record HostRoom(long hostId, int freeSlots, long freeMemory, int freeVcpus) {
    /** Whether one more VM of this size fits. */
    public boolean fits(long memory, int vcpus) {
        return freeSlots >= 1 && freeMemory >= memory && freeVcpus >= vcpus;
    }

    /** The room after one more VM of this size. */
    public HostRoom less(long memory, int vcpus) {
        return new HostRoom(hostId, freeSlots - 1, freeMemory - memory, freeVcpus - vcpus);
    }
}
