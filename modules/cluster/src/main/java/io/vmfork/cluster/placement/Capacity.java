package io.vmfork.cluster.placement;

/**
 * What one host offers to guests: the guest RAM it lets VMs have in total, how many VMs
 * may live on it at once, and how many vCPUs they may have in total.
 */
public record Capacity(long guestMemory, int vmSlots, int vcpus) {
    public Capacity {
        if (guestMemory < 0 || vmSlots < 0 || vcpus < 0) {
            throw new IllegalArgumentException("capacity cannot be negative: " + guestMemory + " bytes, "
                    + vmSlots + " VM slots, " + vcpus + " vCPUs");
        }
    }
}
