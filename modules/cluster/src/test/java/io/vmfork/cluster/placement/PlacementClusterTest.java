package io.vmfork.cluster.placement;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.node.VmforkNode;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Props;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.apache.pekko.cluster.Member;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.ddata.LWWMap;
import org.apache.pekko.cluster.ddata.typed.javadsl.DistributedData;
import org.apache.pekko.cluster.ddata.typed.javadsl.Replicator;
import org.apache.pekko.cluster.typed.Cluster;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * Placement across real cluster members (several nodes in this JVM, on loopback, each
 * reporting its own host's load with its LoadReporter): an unreachable node stops being chosen at once, a
 * removed one is forgotten, a node that joins later receives VMs.
 */
class PlacementClusterTest {
    private static final int SPREAD = 2;
    private final List<VmforkNode> nodes = new ArrayList<>();

    // One at a time, the seed last: nodes that leave together wait for each other.
    @AfterEach
    void stopNodes() {
        for (int i = nodes.size() - 1; i >= 0; i--) {
            nodes.get(i).system().terminate();
            nodes.get(i).whenTerminated().toCompletableFuture().orTimeout(30, TimeUnit.SECONDS).join();
        }
    }

    private VmforkNode start(long hostId, String seed, String extra) {
        Config c = ConfigFactory.parseString("vmfork.host.id = " + hostId + "\nvmfork.host.name = h" + hostId
                        + "\nvmfork.node.placement.policies { " + SPREAD + " = spread }"
                        + (seed == null ? "" : "\nvmfork.node.seed-nodes = [\"" + seed + "\"]") + "\n" + extra)
                .withFallback(ConfigFactory.load()).resolve();
        VmforkNode n = VmforkNode.start(c);
        nodes.add(n);
        return n;
    }

    private static String hostPort(VmforkNode n) {
        return "127.0.0.1:" + n.system().address().getPort().get();
    }

    private static void await(String what, Duration within, BooleanSupplier condition) throws InterruptedException {
        long deadline = System.nanoTime() + within.toNanos();
        while (!condition.getAsBoolean()) {
            assertTrue(System.nanoTime() < deadline, what + " within " + within);
            Thread.sleep(50);
        }
    }

    private static int upMembers(VmforkNode n) {
        int up = 0;
        for (Member m : Cluster.get(n.system()).state().getMembers()) {
            up += m.status() == MemberStatus.up() ? 1 : 0;
        }
        return up;
    }

    private static Set<Long> hostsOf(PlacementEntity.Reply reply) {
        Set<Long> hosts = new HashSet<>();
        if (reply instanceof PlacementEntity.Placed p) {
            p.slots().forEach(s -> hosts.add(s.hostId()));
        }
        return hosts;
    }

    private static PlacementEntity.Reply place(ActorRef<PlacementEntity.Command> entity, TestProbe<PlacementEntity.Reply> probe,
                                               int count) {
        entity.tell(new PlacementEntity.PlaceCopies(SPREAD, count, Placer.NO_HOST, 0, 0, probe.getRef()));
        return probe.receiveMessage(Duration.ofSeconds(3));
    }

    @Test
    void unreachableIsNotChosenRemovedIsForgottenLateJoinerIsChosen() throws Exception {
        VmforkNode n1 = start(1, null, "");
        await("node 1 up", Duration.ofSeconds(15), () -> upMembers(n1) == 1);
        VmforkNode n2 = start(2, hostPort(n1), "");
        // Node 3 dies without leaving: its actor system stops without the cluster's goodbye.
        VmforkNode n3 = start(3, hostPort(n1), "pekko.coordinated-shutdown.run-by-actor-system-terminate = off");
        await("three members up", Duration.ofSeconds(20), () -> upMembers(n1) == 3);

        ActorRef<PlacementEntity.Command> entity = n1.system().systemActorOf(
                PlacementEntity.create(SPREAD, n1.settings().placement()), "placement-under-test", Props.empty());
        ActorTestKit kit = ActorTestKit.create(n1.system());
        TestProbe<PlacementEntity.Reply> probe = kit.createTestProbe();
        await("all three hosts chosen", Duration.ofSeconds(10), () -> hostsOf(place(entity, probe, 3)).size() == 3);

        n3.system().terminate();
        n3.whenTerminated().toCompletableFuture().get(20, TimeUnit.SECONDS);
        await("node 3 unreachable", Duration.ofSeconds(20),
                () -> !Cluster.get(n1.system()).state().getUnreachable().isEmpty());
        // At once: no copy goes to host 3 from now on (spread would have given it 2 of 6).
        Set<Long> hosts = hostsOf(place(entity, probe, 6));
        assertEquals(Set.of(1L, 2L), hosts);

        // The split brain resolver downs it, and it is removed: forgotten by the view and
        // removed from the replicated reports.
        await("node 3 removed", Duration.ofSeconds(30), () -> upMembers(n1) == 2
                && Cluster.get(n1.system()).state().getUnreachable().isEmpty());
        await("host 3's report removed", Duration.ofSeconds(10), () -> !reportedHosts(n1).contains(3L));
        assertEquals(Set.of(1L, 2L), hostsOf(place(entity, probe, 6)));

        // The sharded service answers from the survivors too (its entity may have lived on node 3).
        await("sharded placement answers", Duration.ofSeconds(30), () -> {
            try {
                return hostsOf(n2.placement().placeCopies(SPREAD, 4, Placer.NO_HOST, 0, 0)
                        .toCompletableFuture().get(5, TimeUnit.SECONDS)).equals(Set.of(1L, 2L));
            } catch (Exception e) {
                return false;
            }
        });

        // A node that joins later receives VMs.
        VmforkNode n4 = start(4, hostPort(n1), "");
        await("node 4 up", Duration.ofSeconds(20), () -> upMembers(n1) == 3);
        await("host 4 chosen", Duration.ofSeconds(10), () -> hostsOf(place(entity, probe, 6)).contains(4L));
        assertFalse(hostsOf(place(entity, probe, 9)).contains(3L));
        assertInstanceOf(PlacementEntity.Placed.class, place(entity, probe, 1));
        assertTrue(n4.shutdownReason().isEmpty());
    }

    private static Set<Long> reportedHosts(VmforkNode n) {
        try {
            Replicator.GetResponse<LWWMap<Long, HostLoad>> r = AskPattern.<Replicator.Command,
                    Replicator.GetResponse<LWWMap<Long, HostLoad>>>ask(
                    DistributedData.get(n.system()).replicator(),
                    replyTo -> new Replicator.Get<>(LoadReports.KEY, Replicator.readLocal(), replyTo),
                    Duration.ofSeconds(3), n.system().scheduler()).toCompletableFuture().get(5, TimeUnit.SECONDS);
            if (r instanceof Replicator.GetSuccess<LWWMap<Long, HostLoad>> ok) {
                return new HashSet<>(ok.get(LoadReports.KEY).getEntries().keySet());
            }
            return Set.of();
        } catch (Exception e) {
            throw new AssertionError(e);
        }
    }
}
