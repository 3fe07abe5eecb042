package io.vmfork.multijvm;

import static io.vmfork.multijvm.TestCluster.awaitStatus;
import static io.vmfork.multijvm.TestCluster.exactlyUp;
import static io.vmfork.multijvm.TestCluster.members;
import static io.vmfork.multijvm.TestCluster.reported;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.Optional;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * Membership of nodes that are separate JVMs, seen through each node's {@code GET /status}:
 * forming, a late joiner, a node killed with SIGKILL, a duplicate host id.
 */
@ExtendWith(MultiJvmExtension.class)
class ClusterMembershipTest {
    // JVM start, join and first report on two shared cores.
    private static final Duration FORM = Duration.ofSeconds(60);
    // SIGKILL to removal: unreachable after the failure detector's 3 s pause, downed 2 s
    // (vmfork.node.downing.stable-after in the tests) after that, then removed by the leader.
    private static final Duration DOWNED = Duration.ofSeconds(30);

    @Test
    void threeNodesFormAClusterAndANodeThatJoinsLaterAppears(TestCluster cluster) throws Exception {
        NodeProcess n1 = cluster.start("node-1", 1, null, "");
        NodeProcess n2 = cluster.start("node-2", 2, n1, "");
        NodeProcess n3 = cluster.start("node-3", 3, n1, "");
        List<NodeProcess> three = List.of(n1, n2, n3);
        awaitStatus(three, exactlyUp(three, 0).and(reported(three)), FORM,
                "3 members Up, reachable, each host's load reported");

        NodeProcess n4 = cluster.start("node-4", 4, n2, "");
        List<NodeProcess> four = List.of(n1, n2, n3, n4);
        awaitStatus(four, exactlyUp(four, 0).and(reported(four)), FORM,
                "the late node-4 Up on every node, with its report");
        // Each node names itself and counts its own (empty) load.
        for (NodeProcess n : four) {
            var s = n.status().orElseThrow();
            assertEquals(n.hostId(), s.path("host").path("id").asLong());
            assertEquals(n.address(), s.path("host").path("address").asText());
            assertEquals(64, s.path("load").path("free_slots").asInt(), s.toString());
            assertTrue(s.path("vms").isArray());
        }
    }

    @Test
    void aNodeKilledWithSigkillIsDownedAndLeavesTheOthersStatus(TestCluster cluster) throws Exception {
        NodeProcess n1 = cluster.start("node-1", 1, null, "");
        NodeProcess n2 = cluster.start("node-2", 2, n1, "");
        NodeProcess n3 = cluster.start("node-3", 3, n1, "");
        List<NodeProcess> three = List.of(n1, n2, n3);
        awaitStatus(three, exactlyUp(three, 0).and(reported(three)), FORM, "3 members Up");

        n3.kill();
        List<NodeProcess> survivors = List.of(n1, n2);
        Duration took = awaitStatus(survivors,
                exactlyUp(survivors, 0).and(s -> !members(s).contains(n3.address())
                        && !TestCluster.reportedHosts(s).contains(3L)
                        && s.path("cluster").path("unreported_hosts").isEmpty()),
                DOWNED, "node-3 downed by the split brain resolver and removed, its report forgotten");
        System.out.println("multi-jvm: a node killed with SIGKILL left the others' status in " + took.toMillis() + " ms");
    }

    @Test
    void aSecondNodeWithATakenHostIdIsRefused(TestCluster cluster) throws Exception {
        NodeProcess n1 = cluster.start("node-1", 1, null, "");
        NodeProcess n2 = cluster.start("node-2", 2, n1, "");
        List<NodeProcess> two = List.of(n1, n2);
        awaitStatus(two, exactlyUp(two, 0).and(reported(two)), FORM, "2 members Up");

        NodeProcess dup = cluster.start("node-2-again", 2, n1, "");
        Optional<Integer> exit = dup.awaitExit(FORM);
        assertTrue(exit.isPresent(), "the node with a taken host id did not exit:\n" + dup.tail());
        assertEquals(78, exit.get(), "exit code of the refused node; its log:\n" + dup.tail());
        assertTrue(dup.tail().contains("host id 2 is already used by the cluster member " + n2.address()), dup.tail());
        // The older node keeps its id and the cluster goes on without the refused one.
        awaitStatus(two, exactlyUp(two, 0).and(s -> !members(s).contains(dup.address())), DOWNED,
                "the refused node gone, node-1 and node-2 Up");
        assertTrue(n2.isAlive());
    }
}
