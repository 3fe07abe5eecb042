package io.vmfork.cluster.placement;

import io.vmfork.cluster.serialization.ClusterMessage;
import java.util.List;

/**
 * One host's load as it reports it for placement, replicated to every node in the
 * Distributed Data map {@link LoadReports#KEY} under its host id.
 *
 * @param hostId              the host
 * @param hostName            its name, for logs and status
 * @param address             the Pekko address of its node, which cluster events name
 * @param platform            where its guests run, "kvm" or "process" (the node's
 *                            {@code Vmm.platform()}); "" when its node does not say (a
 *                            report of an older version)
 * @param sequence            increases with every report of this node; an older report is
 *                            ignored
 * @param vmCount             VMs alive on the host
 * @param memoryUsed          guest RAM those VMs have
 * @param vcpusUsed           vCPUs those VMs have
 * @param capacity            what the host offers in total
 * @param settledReservations reservation ids the host admitted or refused lately; each
 *                            stays listed for at least one report interval (the placement
 *                            entity then stops counting it, since this report covers it)
 */
public record HostLoad(
        long hostId,
        String hostName,
        String address,
        String platform,
        long sequence,
        int vmCount,
        long memoryUsed,
        int vcpusUsed,
        Capacity capacity,
        List<Long> settledReservations) implements ClusterMessage {

    public HostLoad {
        if (platform == null) {
            throw new IllegalArgumentException("a load report's platform is \"\" when unknown, never null");
        }
        settledReservations = List.copyOf(settledReservations);
    }

    /** VMs the host may still take. */
    public int freeSlots() {
        return Math.max(0, capacity.vmSlots() - vmCount);
    }

    /** Guest RAM the host may still give. */
    public long memoryFree() {
        return Math.max(0, capacity.guestMemory() - memoryUsed);
    }

    /** vCPUs the host may still give. */
    public int vcpusFree() {
        return Math.max(0, capacity.vcpus() - vcpusUsed);
    }
}
