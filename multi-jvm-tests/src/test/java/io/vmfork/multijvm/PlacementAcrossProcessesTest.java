package io.vmfork.multijvm;

import static io.vmfork.multijvm.TestCluster.awaitStatus;
import static io.vmfork.multijvm.TestCluster.exactlyUp;
import static io.vmfork.multijvm.TestCluster.members;
import static io.vmfork.multijvm.TestCluster.reported;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmfork.cluster.placement.PlacementEntity;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * Placement with the hosts in three node JVMs and the test JVM as a member without
 * capacity that asks: bursts spread as each vm_type's policy says, never past a host's
 * 8 VM slots; a node killed with SIGKILL is no longer chosen once unreachable (before the
 * split brain resolver removes it) nor after; a node that joins later is chosen.
 *
 * <p>No HostActor admits these VMs yet, so nothing settles the reservations: each placed
 * VM counts against its host for the whole test ({@code reservation-timeout = 120s}), and
 * each vm_type has an entity (and a view) of its own.
 */
@ExtendWith(MultiJvmExtension.class)
class PlacementAcrossProcessesTest {
    private static final Duration FORM = Duration.ofSeconds(60);
    private static final Duration DOWNED = Duration.ofSeconds(30);
    private static final long MIB = 1L << 20;

    private static final String CONFIG = """
            vmfork.node.capacity { vm-slots = 8, vcpus = 64, guest-memory = 8 GiB }
            vmfork.node.placement {
              reservation-timeout = 120s
              ask-timeout = 10s
              policies { 2 = pack, 3 = spread, 5 = spread }
            }
            """;

    @Test
    void burstsSpreadByPolicyNeverOverCommitAndFollowMembership(TestCluster cluster) throws Exception {
        NodeProcess n1 = cluster.start("node-1", 1, null, CONFIG);
        NodeProcess n2 = cluster.start("node-2", 2, n1, CONFIG);
        NodeProcess n3 = cluster.start("node-3", 3, n1, CONFIG);
        List<NodeProcess> three = List.of(n1, n2, n3);
        ClientMember client = cluster.joinAsClient(n1, CONFIG);
        awaitStatus(three, exactlyUp(three, 1).and(reported(three)), FORM,
                "3 nodes and the test JVM Up, the 3 hosts' loads reported");
        client.awaitUpWithReports(3, FORM);

        // least-loaded (the default): 32 at once over 3 hosts of 8 slots: 8 each, 8 refused.
        Burst leastLoaded = burst(client, 1, 32);
        assertEquals(Map.of(1L, 8, 2L, 8, 3L, 8), leastLoaded.perHost, leastLoaded.toString());
        assertEquals(8, leastLoaded.refused, leastLoaded.toString());

        // pack: fill host 1 first, then host 2.
        Burst pack = burst(client, 2, 10);
        assertEquals(Map.of(1L, 8, 2L, 2), pack.perHost, pack.toString());
        assertEquals(0, pack.refused);

        // spread: round-robin.
        Burst spread = burst(client, 3, 9);
        assertEquals(Map.of(1L, 3, 2L, 3, 3L, 3), spread.perHost, spread.toString());

        long deadline;
        // Entities of vm_types 10..17, each with one VM on host 1 and one on host 2: host 3,
        // the least loaded, is the next choice of each while it is reachable.
        for (int t = 10; t < 18; t++) {
            Burst warm = burst(client, t, 2);
            assertEquals(Map.of(1L, 1, 2L, 1), warm.perHost, "vm_type " + t + ": " + warm);
        }

        // SIGKILL node 3: once unreachable it is no longer chosen, before it is removed.
        n3.kill();
        List<NodeProcess> two = List.of(n1, n2);
        awaitStatus(two, s -> unreachableOrGone(s, n3.address()), DOWNED, "node-3 unreachable");
        deadline = System.nanoTime() + DOWNED.toNanos();
        while (!client.seesUnreachableOrGone(n3.address())) {
            assertTrue(System.nanoTime() < deadline, "the test JVM still sees node-3 reachable");
            Thread.sleep(50);
        }
        boolean stillMember = client.seesMember(n3.address());
        List<CompletableFuture<PlacementEntity.Reply>> asks = new ArrayList<>();
        for (int t = 10; t < 18; t++) {
            asks.add(client.placement().placeVm(t, 256 * MIB, 1).toCompletableFuture());
        }
        Map<Long, Integer> whileUnreachable = new TreeMap<>();
        int answered = 0;
        for (CompletableFuture<PlacementEntity.Reply> ask : asks) {
            try {
                PlacementEntity.Reply reply = ask.get(30, TimeUnit.SECONDS);
                PlacementEntity.Placed placed = assertInstanceOf(PlacementEntity.Placed.class, reply);
                whileUnreachable.merge(placed.slots().get(0).hostId(), 1, Integer::sum);
                answered++;
            } catch (java.util.concurrent.ExecutionException e) {
                // The entity lived on node 3: its asks time out until sharding moves it.
                assertInstanceOf(java.util.concurrent.TimeoutException.class, e.getCause(), e.toString());
            }
        }
        System.out.println("multi-jvm: placements right after node-3 became unreachable (still a member: "
                + stillMember + "): " + whileUnreachable + ", " + (8 - answered) + " entities were on node-3");
        assertTrue(answered >= 1, "no placement entity answered");
        assertFalse(whileUnreachable.containsKey(3L), "an unreachable host was chosen: " + whileUnreachable);

        // Once the split brain resolver has removed it, it is never chosen.
        awaitStatus(two, exactlyUp(two, 1).and(s -> !members(s).contains(n3.address())), DOWNED,
                "node-3 downed and removed");
        deadline = System.nanoTime() + DOWNED.toNanos();
        while (client.seesMember(n3.address())) {
            assertTrue(System.nanoTime() < deadline, "the test JVM still sees node-3");
            Thread.sleep(100);
        }
        Burst afterKill = burst(client, 4, 20);
        assertEquals(Map.of(1L, 8, 2L, 8), afterKill.perHost, afterKill.toString());
        assertEquals(4, afterKill.refused, afterKill.toString());

        // A node that joins later is chosen as soon as it has reported.
        NodeProcess n4 = cluster.start("node-4", 4, n1, CONFIG);
        List<NodeProcess> withLate = List.of(n1, n2, n4);
        awaitStatus(withLate, exactlyUp(withLate, 1).and(reported(withLate)), FORM, "node-4 Up and reported");
        client.awaitUpWithReports(3, FORM);
        Burst late = burst(client, 5, 6);
        assertEquals(Map.of(1L, 2, 2L, 2, 4L, 2), late.perHost, late.toString());
        assertFalse(late.perHost.containsKey(3L));
    }

    private static boolean unreachableOrGone(com.fasterxml.jackson.databind.JsonNode status, String address) {
        for (com.fasterxml.jackson.databind.JsonNode m : status.path("cluster").path("members")) {
            if (m.path("address").asText().equals(address)) {
                return !m.path("reachable").asBoolean();
            }
        }
        return true;
    }

    /** What a burst of concurrent placeVm asks got: VMs per host, and how many were refused. */
    private record Burst(Map<Long, Integer> perHost, int refused, List<String> reasons) {
    }

    private static Burst burst(ClientMember client, int vmType, int count) throws Exception {
        List<CompletableFuture<PlacementEntity.Reply>> asks = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            asks.add(client.placement().placeVm(vmType, 256 * MIB, 1).toCompletableFuture());
        }
        Map<Long, Integer> perHost = new TreeMap<>();
        int refused = 0;
        List<String> reasons = new ArrayList<>();
        for (CompletableFuture<PlacementEntity.Reply> ask : asks) {
            PlacementEntity.Reply reply = ask.get(30, TimeUnit.SECONDS);
            if (reply instanceof PlacementEntity.Placed placed) {
                assertEquals(1, placed.slots().size(), placed.toString());
                perHost.merge(placed.slots().get(0).hostId(), 1, Integer::sum);
            } else {
                PlacementEntity.NoCapacity none = assertInstanceOf(PlacementEntity.NoCapacity.class, reply);
                refused++;
                reasons.add(none.reason());
            }
        }
        return new Burst(perHost, refused, reasons);
    }
}
