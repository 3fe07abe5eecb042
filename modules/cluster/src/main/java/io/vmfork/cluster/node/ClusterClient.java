package io.vmfork.cluster.node;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.api.VmCluster;
import io.vmfork.cluster.placement.PlacementClient;
import io.vmfork.cluster.placement.PlacementEntity;
import java.time.Duration;
import java.util.Collection;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.CoordinatedShutdown;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.typed.Cluster;

/**
 * An application's member of a vmfork cluster that is not a host: it runs no VMs, has no
 * capacity and publishes no load report, so placement never chooses it. It starts the
 * placement entities' sharding as every member does (so some entities may live here,
 * reading the same replicated load reports) and drives the hosts' VMs through the
 * application API ({@link #cluster()}). {@link #close} leaves the cluster.
 *
 * <p>Its configuration is a node's ({@code vmfork.node.hostname}, {@code port},
 * {@code seed-nodes}, {@code placement}, which must match the hosts'; {@code vmfork.security}
 * with a client certificate of the cluster's CA, which the nodes require over TLS); its host
 * id is always {@link #CLIENT_HOST_ID}, which no host may use.
 */
public final class ClusterClient implements AutoCloseable {
    /** The host id of every client member; {@code vmfork.host.id} is ignored. */
    public static final long CLIENT_HOST_ID = NodeSettings.MAX_HOST_ID;

    private final ActorSystem<Void> system;
    private final VmCluster cluster;

    private ClusterClient(ActorSystem<Void> system, VmCluster cluster) {
        this.system = system;
        this.cluster = cluster;
    }

    /**
     * Starts the client's actor system and joins the cluster of {@code config}'s seed nodes
     * ({@code config} is resolved with the modules' reference.conf behind it).
     *
     * @throws InvalidNodeConfigException naming the key at fault, before anything starts
     */
    public static ClusterClient join(Config config) {
        Config root = ConfigFactory.parseString("vmfork.host.id = " + CLIENT_HOST_ID).withFallback(config).resolve();
        NodeSettings settings = NodeSettings.create(root);
        if (settings.seedNodes().isEmpty()) {
            throw new InvalidNodeConfigException("vmfork.node.seed-nodes", "a client needs a node of the cluster to join");
        }
        Duration timeout = VmforkNode.apiTimeout(root);
        ActorSystem<Void> system = ActorSystem.create(Behaviors.empty(), settings.systemName(),
                settings.pekkoConfig().withFallback(root).resolve());
        settings.logSecurity(system);
        try {
            PlacementEntity.init(system, settings.placement());
            PlacementClient placement = PlacementClient.create(system, settings.placement(), CLIENT_HOST_ID);
            return new ClusterClient(system, VmCluster.create(system, placement, timeout));
        } catch (RuntimeException | Error e) {
            system.terminate();
            throw e;
        }
    }

    /** The application API from this member: every call goes to a host or to placement. */
    public VmCluster cluster() {
        return cluster;
    }

    public ActorSystem<Void> system() {
        return system;
    }

    /**
     * Waits until this member is Up and placement, as this member sees it, can choose each
     * of {@code hostIds} ({@link VmCluster#placementKnowsHost}).
     *
     * @throws IllegalStateException naming what is missing after {@code within}
     */
    public void awaitHosts(Collection<Long> hostIds, Duration within) throws InterruptedException {
        long deadline = System.nanoTime() + within.toNanos();
        while (Cluster.get(system).selfMember().status() != MemberStatus.up()) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("this client is " + Cluster.get(system).selfMember().status()
                        + ", not Up, after " + within + ": are the seed nodes up, and does this client have a"
                        + " certificate of the cluster's CA (vmfork.security; the nodes log each connection they"
                        + " refuse)?");
            }
            Thread.sleep(50);
        }
        for (long h : hostIds) {
            while (!cluster.placementKnowsHost(h).toCompletableFuture().join()) {
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException("placement does not know host " + h + " after " + within);
                }
                Thread.sleep(50);
            }
        }
    }

    /** Leaves the cluster and stops the actor system (at most 15 s, then it terminates at once). */
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
