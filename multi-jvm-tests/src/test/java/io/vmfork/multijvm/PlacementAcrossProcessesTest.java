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
 * 8 VM slots; a node killed with SIGKILL is no longer chosen; a node that joins later is.
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

        // SIGKILL node 3: once the split brain resolver has removed it, it is never chosen.
        n3.kill();
        List<NodeProcess> two = List.of(n1, n2);
        awaitStatus(two, exactlyUp(two, 1).and(s -> !members(s).contains(n3.address())), DOWNED,
                "node-3 downed and removed");
        long deadline = System.nanoTime() + DOWNED.toNanos();
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
