package io.vmfork.cluster.placement;

import java.time.Duration;
import java.util.Map;

/**
 * The placement service's settings ({@code vmfork.node.placement}, read by
 * io.vmfork.cluster.node.NodeSettings, which checks them).
 *
 * @param defaultPolicy        for every {@code vm_type} without a policy of its own
 * @param policies             per {@code vm_type}
 * @param askTimeout           how long a caller waits for a placement decision
 * @param reservationTimeout   how long a placement counts against a host when no newer
 *                             report of that host settles it
 * @param loadReportInterval   how often a host publishes its load (besides on changes)
 * @param loadWriteTimeout     how long a host's load report waits for the other nodes'
 *                             replicas to acknowledge it
 * @param numberOfShards       shards of the placement entities (the same on every node)
 * @param startupStash         requests an entity keeps while it reads its view at start
 */
public record PlacementSettings(
        PlacementPolicy defaultPolicy,
        Map<Integer, PlacementPolicy> policies,
        Duration askTimeout,
        Duration reservationTimeout,
        Duration loadReportInterval,
        Duration loadWriteTimeout,
        int numberOfShards,
        int startupStash) {

    public PlacementSettings {
        policies = Map.copyOf(policies);
    }

    /** The policy of {@code vmType}: its own, else the default. */
    public PlacementPolicy policyFor(int vmType) {
        return policies.getOrDefault(vmType, defaultPolicy);
    }
}
