package io.vmfork.multijvm;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.api.VmCluster;
import io.vmfork.cluster.node.NodeSettings;
import io.vmfork.cluster.placement.HostLoad;
import io.vmfork.cluster.placement.LoadReports;
import io.vmfork.cluster.placement.PlacementClient;
import io.vmfork.cluster.placement.PlacementEntity;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.CoordinatedShutdown;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.ddata.LWWMap;
import org.apache.pekko.cluster.ddata.typed.javadsl.DistributedData;
import org.apache.pekko.cluster.ddata.typed.javadsl.Replicator;
import org.apache.pekko.cluster.typed.Cluster;

/**
 * The test JVM as a member of the cluster, with no capacity of its own: it starts the
 * placement entities' sharding (as every node does, so some entities may live here) and
 * asks placement through a {@link PlacementClient}, but publishes no load report, so it is
 * never chosen. Drives VMs on the nodes through the application API ({@link #cluster()}).
 * Leaves the cluster on {@link #close}.
 */
final class ClientMember implements AutoCloseable {
    /** A host id no test node uses; this member never claims it (no host-id guard runs here). */
    static final long CLIENT_HOST_ID = NodeSettings.MAX_HOST_ID;

    /** Timeout of every ask of the client's {@link VmCluster}. */
    static final Duration API_TIMEOUT = Duration.ofSeconds(30);

    private final ActorSystem<Void> system;
    private final PlacementClient placement;
    private final VmCluster cluster;

    private ClientMember(ActorSystem<Void> system, PlacementClient placement) {
        this.system = system;
        this.placement = placement;
        this.cluster = VmCluster.create(system, placement, API_TIMEOUT);
    }

    static ClientMember join(String seedHostPort, String hostname, int port, String extraConfig) {
        Config config = ConfigFactory.parseString("vmfork.host { id = " + CLIENT_HOST_ID + ", name = \"test-client\" }\n"
                        + "vmfork.node { hostname = \"" + hostname + "\", port = " + port + ", seed-nodes = [\"" + seedHostPort
                        + "\"] }\n" + extraConfig)
                .withFallback(ConfigFactory.load()).resolve();
        NodeSettings settings = NodeSettings.create(config);
        ActorSystem<Void> system = ActorSystem.create(Behaviors.empty(), settings.systemName(),
                settings.pekkoConfig().withFallback(config).resolve());
        PlacementEntity.init(system, settings.placement());
        return new ClientMember(system, PlacementClient.create(system, settings.placement(), CLIENT_HOST_ID));
    }

    PlacementClient placement() {
        return placement;
    }

    /**
     * The application API from this member: it has no HostActor of its own, so every call
     * goes to a node's host (found with the Receptionist) or to placement.
     */
    VmCluster cluster() {
        return cluster;
    }

    ActorSystem<Void> system() {
        return system;
    }

    /** Waits until this member is Up and its replica of the load reports holds {@code hosts} reports. */
    void awaitUpWithReports(int hosts, Duration within) throws InterruptedException {
        long deadline = System.nanoTime() + within.toNanos();
        while (Cluster.get(system).selfMember().status() != MemberStatus.up() || reports().size() < hosts) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("the test JVM's member is " + Cluster.get(system).selfMember().status()
                        + " with reports of hosts " + reports().keySet() + " after " + within);
            }
            Thread.sleep(100);
        }
    }

    /** Whether this member sees a member at {@code address} (any status). */
    boolean seesMember(String address) {
        for (org.apache.pekko.cluster.Member m : Cluster.get(system).state().getMembers()) {
            if (m.address().toString().equals(address)) {
                return true;
            }
        }
        return false;
    }

    /** Whether this member sees the member at {@code address} unreachable, or no such member. */
    boolean seesUnreachableOrGone(String address) {
        if (!seesMember(address)) {
            return true;
        }
        for (org.apache.pekko.cluster.Member m : Cluster.get(system).state().getUnreachable()) {
            if (m.address().toString().equals(address)) {
                return true;
            }
        }
        return false;
    }

    /** This member's local replica of the hosts' load reports. */
    Map<Long, HostLoad> reports() {
        Replicator.GetResponse<LWWMap<Long, HostLoad>> r = AskPattern.<Replicator.Command,
                        Replicator.GetResponse<LWWMap<Long, HostLoad>>>ask(DistributedData.get(system).replicator(),
                        replyTo -> new Replicator.Get<>(LoadReports.KEY, Replicator.readLocal(), replyTo),
                        Duration.ofSeconds(3), system.scheduler())
                .toCompletableFuture().join();
        return r instanceof Replicator.GetSuccess<LWWMap<Long, HostLoad>> ok
                ? Map.copyOf(ok.get(LoadReports.KEY).getEntries()) : Map.of();
    }

    @Override
    public void close() {
        CoordinatedShutdown.get(system).run(CoordinatedShutdown.unknownReason());
        try {
            system.getWhenTerminated().toCompletableFuture().get(15, TimeUnit.SECONDS);
        } catch (Exception e) {
            system.terminate();
        }
    }
}
