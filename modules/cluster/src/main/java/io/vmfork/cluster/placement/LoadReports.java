package io.vmfork.cluster.placement;

import java.time.Duration;
import org.apache.pekko.actor.NoSerializationVerificationNeeded;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.cluster.ClusterEvent;
import org.apache.pekko.cluster.ddata.Key;
import org.apache.pekko.cluster.ddata.LWWMap;
import org.apache.pekko.cluster.ddata.LWWMapKey;
import org.apache.pekko.cluster.ddata.SelfUniqueAddress;
import org.apache.pekko.cluster.ddata.typed.javadsl.DistributedData;
import org.apache.pekko.cluster.ddata.typed.javadsl.Replicator;
import org.apache.pekko.cluster.ddata.typed.javadsl.ReplicatorMessageAdapter;
import org.apache.pekko.cluster.typed.Cluster;
import org.apache.pekko.cluster.typed.Subscribe;

/**
 * The hosts' load reports, replicated to every node with Distributed Data: an
 * {@link LWWMap} from host id to {@link HostLoad} under {@link #KEY}. A host publishes
 * through its node's {@link #publisher}; the placement entities subscribe to the map, so
 * their view survives their own restarts and rebalancing. Every node's publisher also
 * removes the report of a node that the cluster removed (downed or left), so that a dead
 * host disappears from the map, and from every node's status, even while no placement
 * entity runs to forget it.
 */
public final class LoadReports {
    /** The replicated map of every host's latest report. */
    public static final Key<LWWMap<Long, HostLoad>> KEY = LWWMapKey.create("vmfork-host-load");

    private LoadReports() {
    }

    /** What the publisher does; local messages only (sent on the host's own node). */
    public interface Command extends NoSerializationVerificationNeeded {
    }

    /** Replaces this host's report in the map (written to every reachable node). */
    public record Publish(HostLoad load) implements Command {
    }

    /** Removes a host's report (its node left the cluster). */
    public record Forget(long hostId) implements Command {
    }

    private record MemberRemoved(ClusterEvent.MemberRemoved event) implements Command {
    }

    private record WriteDone(Replicator.UpdateResponse<LWWMap<Long, HostLoad>> response) implements Command {
    }

    /**
     * A publisher of load reports, one per node. Each write goes to all reachable nodes
     * within {@code writeTimeout}; when some do not answer in time the local write stands
     * and gossip carries it on.
     */
    public static Behavior<Command> publisher(Duration writeTimeout) {
        return Behaviors.setup(ctx -> DistributedData.withReplicatorMessageAdapter(
                (ReplicatorMessageAdapter<Command, LWWMap<Long, HostLoad>> replicator) -> {
                    SelfUniqueAddress node = DistributedData.get(ctx.getSystem()).selfUniqueAddress();
                    Replicator.WriteConsistency all = new Replicator.WriteAll(writeTimeout);
                    Cluster.get(ctx.getSystem()).subscriptions().tell(Subscribe.create(
                            ctx.messageAdapter(ClusterEvent.MemberRemoved.class, MemberRemoved::new),
                            ClusterEvent.MemberRemoved.class));
                    return Behaviors.receive(Command.class)
                            .onMessage(Publish.class, p -> {
                                replicator.askUpdate(
                                        replyTo -> new Replicator.Update<>(KEY, LWWMap.empty(), all, replyTo,
                                                m -> m.put(node, p.load().hostId(), p.load())),
                                        WriteDone::new);
                                return Behaviors.same();
                            })
                            .onMessage(Forget.class, f -> {
                                replicator.askUpdate(
                                        replyTo -> new Replicator.Update<>(KEY, LWWMap.empty(), all, replyTo,
                                                m -> m.remove(node, f.hostId())),
                                        WriteDone::new);
                                return Behaviors.same();
                            })
                            .onMessage(MemberRemoved.class, r -> {
                                // Only a report from the removed address: a host that came
                                // back under the same id at a new address keeps its own.
                                String address = r.event().member().address().toString();
                                replicator.askUpdate(
                                        replyTo -> new Replicator.Update<>(KEY, LWWMap.empty(),
                                                Replicator.writeLocal(), replyTo,
                                                m -> removeAt(m, node, address)),
                                        WriteDone::new);
                                return Behaviors.same();
                            })
                            .onMessage(WriteDone.class, w -> Behaviors.same())
                            .build();
                }));
    }

    private static LWWMap<Long, HostLoad> removeAt(LWWMap<Long, HostLoad> map, SelfUniqueAddress node,
                                                   String address) {
        LWWMap<Long, HostLoad> left = map;
        for (java.util.Map.Entry<Long, HostLoad> e : map.getEntries().entrySet()) {
            if (e.getValue().address().equals(address)) {
                left = left.remove(node, e.getKey());
            }
        }
        return left;
    }
}
