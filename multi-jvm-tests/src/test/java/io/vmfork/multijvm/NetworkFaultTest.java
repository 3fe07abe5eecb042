package io.vmfork.multijvm;

import static io.vmfork.multijvm.ApiTesting.FORM;
import static io.vmfork.multijvm.ApiTesting.WAIT;
import static io.vmfork.multijvm.ApiTesting.ask;
import static io.vmfork.multijvm.ApiTesting.await;
import static io.vmfork.multijvm.ApiTesting.awaitPlaceable;
import static io.vmfork.multijvm.ApiTesting.subscribe;
import static io.vmfork.multijvm.TestCluster.awaitStatus;
import static io.vmfork.multijvm.TestCluster.exactlyUp;
import static io.vmfork.multijvm.TestCluster.members;
import static io.vmfork.multijvm.TestCluster.reported;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import io.vmfork.cluster.api.VmCluster;
import io.vmfork.cluster.api.VmEvent;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.api.VmOrigin;
import io.vmfork.cluster.host.HostActor;
import io.vmfork.cluster.placement.PlacementEntity;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * Network faults with real addresses: three node JVMs, each in a network namespace of its
 * own (10.77.0.1-3) on a bridge, the test JVM on the same bridge (10.77.0.100) as a member
 * without capacity, every member over Artery TLS with mutual authentication
 * ({@link NetworkNamespaces}). Node 3's link is cut while a remote clone streams to it and
 * while a fork's placement waits on a placement entity that lives on it; the majority
 * (nodes 1, 2 and the test JVM) downs it, it stops its VMs and exits, the application hears
 * its VMs LOST, the forks end with errors that name the cut, the parents run on, the source
 * frees what the transfer held; then the link comes back, node 3 is started again with the
 * same host id and address and takes a clone. No VM id is ever running on both sides.
 * Skipped, with the reason, without root or {@code ip netns}.
 */
@ExtendWith(MultiJvmExtension.class)
class NetworkFaultTest {
    private static final long MIB = 1L << 20;

    private static final String CONFIG = """
            vmfork.node.capacity { vm-slots = 12, vcpus = 64, guest-memory = 8 GiB }
            # A transfer whose peer went silent fails within seconds, not the default 30 s.
            vmfork.transfer.idle-timeout = 5s
            # The warm-up's placements do not count against the hosts for long.
            vmfork.node.placement.reservation-timeout = 1s
            """;

    /** Node 3 holds each capsule it receives this long half-way, so that the test cuts it mid-transfer. */
    private static final String HOLD_MID = """
            vmfork.transfer.test { hold-at = ["target-mid"], hold-for = 3s }
            """;

    /** VM types whose placement entities the test starts, to find one that lives on node 3 and one that does not. */
    private static final int FIRST_TYPE = 100;
    private static final int TYPES = 16;

    /** The cluster downs a cut node (failure detection, then the resolver's 2 s) and it exits, within this. */
    private static final Duration DOWNED = Duration.ofSeconds(40);

    @Test
    void aCutNodeIsDownedStopsItsVmsAndComesBackAsANewIncarnation(TestCluster cluster) throws Exception {
        Optional<String> unavailable = NetworkNamespaces.unavailableReason();
        Assumptions.assumeTrue(unavailable.isEmpty(), () -> "skipped: " + unavailable.orElse(""));
        long start = System.nanoTime();
        try (NetworkNamespaces net = NetworkNamespaces.create(3)) {
            try {
                run(cluster, net, start);
            } finally {
                cluster.close(); // the nodes first: a namespace goes only when its last process has
            }
        }
        System.out.println("multi-jvm: network faults: the whole test took " + ms(start) + " ms");
    }

    private void run(TestCluster cluster, NetworkNamespaces net, long start) throws Exception {
        NodeProcess n1 = node(cluster, 1, "node-1", null, CONFIG);
        NodeProcess n2 = node(cluster, 2, "node-2", n1, CONFIG);
        NodeProcess n3 = node(cluster, 3, "node-3", n1, CONFIG + HOLD_MID);
        List<NodeProcess> three = List.of(n1, n2, n3);
        ClientMember client = cluster.joinAsClient(n1, NetworkNamespaces.CLIENT_ADDRESS, CONFIG);
        awaitStatus(three, exactlyUp(three, 1).and(reported(three)), FORM,
                "the nodes and the test JVM Up, the hosts' loads reported");
        client.awaitUpWithReports(3, FORM);
        for (NodeProcess n : three) {
            awaitPlaceable(client, n);
        }
        System.out.println("multi-jvm: network faults: 3 nodes in their namespaces and the test JVM up in "
                + ms(start) + " ms");
        VmCluster api = client.cluster();
        BlockingQueue<VmEvent> events = subscribe(client);
        List<VmEvent> seen = new ArrayList<>();

        // Placement entities for 16 VM types, spread by sharding over the four members: one
        // on node 3 (its placement is cut off with it), one elsewhere (the clone's).
        for (int t = FIRST_TYPE; t < FIRST_TYPE + TYPES; t++) {
            await(client.placement().placeVm(t, MIB, 1));
        }
        Set<String> shardsOn3 = shardsOf(n3);
        int onNode3 = -1;
        int elsewhere = -1;
        for (int t = FIRST_TYPE; t < FIRST_TYPE + TYPES; t++) {
            boolean on3 = shardsOn3.contains(shardOf(t));
            onNode3 = on3 && onNode3 < 0 ? t : onNode3;
            elsewhere = !on3 && elsewhere < 0 ? t : elsewhere;
        }
        assertTrue(onNode3 >= 0 && elsewhere >= 0, "types " + FIRST_TYPE + ".. over the members; node 3 holds shards "
                + shardsOn3);

        // A parent on node 1 with 16 MiB written, a VM on node 2 that will fork too, and a
        // smaller one on node 3, so that least-loaded puts the parent's clone on node 3.
        VmInfo parent = await(api.launchOn(1, "forker", 1, 64 * MIB));
        assertEquals("touched 16", ask(api, parent.vmId(), "touch 16"));
        String sum = ask(api, parent.vmId(), "sum");
        VmInfo onTwo = await(api.launchOn(2, "forker", 1, 64 * MIB));
        VmInfo onThree = await(api.launchOn(3, "forker", 1, 32 * MIB));
        assertEquals("ok", ask(api, onThree.vmId(), "write 3 33"));
        assertTrue(running(n3, onThree.vmId()), "node 3 runs its VM: " + onThree);
        Thread.sleep(1500); // the warm-up's reservations expire (reservation-timeout 1 s)
        RemoteClonesTest.Leaks sourceBefore = RemoteClonesTest.Leaks.of(n1);

        // (1) The link is cut while the clone's capsule is half-way to node 3.
        long mark = Files.size(n3.log());
        CompletableFuture<HostActor.Forked> cloneFork = api.fork(parent.vmId(), 1, elsewhere).toCompletableFuture();
        awaitLogLine(n3, mark, "vmfork failpoint target-mid reached", WAIT);
        net.cut(3);
        long cut = System.nanoTime();
        java.time.LocalTime cutClock = java.time.LocalTime.now();
        // (2) ... and a fork on node 2 asks the placement entity on node 3 where its copy goes.
        long placeStart = System.nanoTime();
        CompletableFuture<HostActor.Forked> placementFork = api.fork(onTwo.vmId(), 1, onNode3).toCompletableFuture();

        // The clone fails on the source, which frees what it held; its parent runs on.
        HostActor.Forked cloned = cloneFork.get(WAIT.toSeconds(), TimeUnit.SECONDS);
        long cloneFailedAfter = ms(cut);
        assertEquals(List.of(), cloned.children(), cloned.toString());
        assertEquals(1, cloned.errors().size(), cloned.toString());
        VmEvent cloneFailed = awaitEvent(events, seen, VmEvent.Kind.CLONE_FAILED, parent.vmId(), WAIT);
        assertTrue(cloneFailed.detail().contains("host 3"), cloneFailed.detail());
        assertEquals(sum, ask(api, parent.vmId(), "sum"));
        RemoteClonesTest.Leaks.awaitBack(n1, sourceBefore, WAIT);
        System.out.println("multi-jvm: network faults: clone cut mid-transfer, failed " + cloneFailedAfter
                + " ms after the cut: " + cloned.errors() + " / " + cloneFailed.detail());

        // The fork whose placement was cut off ends with its copy refused, its parent runs on.
        HostActor.Forked placed = placementFork.get(WAIT.toSeconds(), TimeUnit.SECONDS);
        long placementAfter = ms(placeStart);
        assertEquals(List.of(), placed.children(), placed.toString());
        assertEquals(1, placed.errors().size(), placed.toString());
        assertEquals("ok", ask(api, onTwo.vmId(), "write 1 1"));
        System.out.println("multi-jvm: network faults: fork with placement cut off answered in " + placementAfter
                + " ms: " + placed.errors());

        // (3) The majority downs and removes node 3; node 3 downs itself, stops its VMs and
        // exits; the application hears its VM LOST only once it is stopped. (The majority may
        // remove node 3 before node 3 has decided: each side's failure detector sees the cut
        // in its own time. The LOST event waits the removal margin for that.)
        long removedAt = -1;
        long lostAt = -1;
        VmEvent lost = null;
        long deadline = System.nanoTime() + DOWNED.toNanos();
        while (removedAt < 0 || lost == null || n3.isAlive()) {
            if (removedAt < 0) {
                Optional<JsonNode> s = n1.status();
                if (s.isPresent() && !members(s.get()).contains(n3.address())) {
                    removedAt = ms(cut);
                }
            }
            events.drainTo(seen);
            if (lost == null) {
                lost = seen.stream().filter(e -> e.kind() == VmEvent.Kind.LOST && e.vmId() == onThree.vmId())
                        .findFirst().orElse(null);
                if (lost != null) {
                    lostAt = ms(cut);
                    assertFalse(running(n3, onThree.vmId()), "node 3's VM " + onThree.vmId()
                            + " still runs when the application hears it LOST:\n" + n3.tail());
                }
            }
            if (System.nanoTime() > deadline) {
                threadDump(n3, cluster);
                fail("within " + DOWNED + ": node 3 " + (removedAt < 0 ? "not removed by the majority" : "removed")
                        + ", " + (lost == null ? "no LOST event" : "LOST") + ", node 3 " + (n3.isAlive() ? "alive"
                        : "exited") + "\nnode 1: " + n1.status().map(JsonNode::toString).orElse("(none)")
                        + "\nnode 3's log:\n" + n3.tail() + "\n" + NetworkNamespaces.describe());
            }
            Thread.sleep(50);
        }
        int exit = n3.awaitExit(Duration.ZERO).orElseThrow();
        long exitedAfter = ms(cut);
        assertTrue(lost.detail().contains("host 3"), lost.detail());
        List<NodeProcess> majority = List.of(n1, n2);
        awaitStatus(majority, exactlyUp(majority, 1), WAIT, "nodes 1, 2 and the test JVM Up without node 3");
        String log3 = Files.readString(n3.log());
        System.out.println("multi-jvm: network faults: link cut at " + cutClock + "; after the cut, node 3 removed by the majority at " + removedAt
                + " ms, its VM LOST for the application at " + lostAt + " ms, node 3 exited " + exit + " by "
                + exitedAfter + " ms; its log:\n" + log3.lines().filter(l -> l.contains("SplitBrainResolver")
                        || l.contains("vmfork:") || l.contains("UNREACHABLE") || l.contains("vmfork node:")
                        || l.contains("CloneTarget")).collect(Collectors.joining("\n")));
        assertEquals(75, exit, "node 3's exit code: downed");

        // The majority goes on: a fork of the placement entity's type, whose shard moved off
        // node 3, places a clone on node 1.
        HostActor.Forked after = await(api.fork(onTwo.vmId(), 1, onNode3));
        assertEquals(List.of(), after.errors(), after.toString());
        assertEquals(1, after.children().size(), after.toString());
        await(api.stop(after.children().get(0).vmId()));

        // (4) The link returns. The old incarnation is gone for good (a downed member cannot
        // rejoin); node 3 started again with the same host id and address joins and takes a clone.
        net.restore(3);
        NodeProcess again = node(cluster, 3, "node-3-again", n1, CONFIG);
        List<NodeProcess> healed = List.of(n1, n2, again);
        long rejoin = System.nanoTime();
        awaitStatus(healed, exactlyUp(healed, 1).and(reported(healed)), FORM, "node 3 back, all Up");
        awaitPlaceable(client, again);
        long rejoinedAfter = ms(rejoin);
        HostActor.Forked back = await(api.fork(parent.vmId(), 1, elsewhere));
        assertEquals(List.of(), back.errors(), back.toString());
        VmInfo clone = back.children().get(0);
        assertEquals(3, clone.hostId(), back.toString());
        assertEquals(VmOrigin.CLONE, clone.origin());
        assertEquals(sum, ask(api, clone.vmId(), "sum"));
        List<VmInfo> all = await(api.list());
        List<Long> ids = all.stream().map(VmInfo::vmId).toList();
        assertEquals(ids.size(), new HashSet<>(ids).size(), "a VM id twice: " + all);
        assertFalse(ids.contains(onThree.vmId()), "the old node 3's VM is listed again: " + all);
        System.out.println("multi-jvm: network faults: node 3 again Up and placeable " + rejoinedAfter
                + " ms after its start; the cluster's VMs " + ids);
        assertTrue(log3.contains("downed"), "node 3 says it was downed:\n" + n3.tail());
    }

    /**
     * Whether VM {@code vmId} runs on node {@code n}: the node's JVM has a thread of one of
     * its vCPUs ({@code vcpu-<id in hex>-<index>}, as the kernel keeps it: 15 characters), or
     * on the process platform a guest process under the node.
     */
    private static boolean running(NodeProcess n, long vmId) throws java.io.IOException {
        if (!n.isAlive()) {
            return false;
        }
        String prefix = "vcpu-" + Long.toHexString(vmId);
        prefix = prefix.substring(0, Math.min(15, prefix.length()));
        try (var tasks = Files.list(java.nio.file.Path.of("/proc/" + n.pid() + "/task"))) {
            for (java.nio.file.Path t : tasks.toList()) {
                try {
                    if (Files.readString(t.resolve("comm")).strip().startsWith(prefix)) {
                        return true;
                    }
                } catch (java.io.IOException ended) {
                    // the thread ended meanwhile
                }
            }
        } catch (java.nio.file.NoSuchFileException exited) {
            return false;
        }
        return n.handle().descendants().anyMatch(ProcessHandle::isAlive);
    }

    /** The threads of a node that does not end as it should, into {@code <name>.threads} beside its log. */
    private static void threadDump(NodeProcess n, TestCluster cluster) {
        if (!n.isAlive()) {
            return;
        }
        try {
            Process p = new ProcessBuilder(java.nio.file.Path.of(System.getProperty("java.home"), "bin", "jcmd")
                    .toString(), Long.toString(n.pid()), "Thread.print").redirectErrorStream(true)
                    .redirectOutput(cluster.dir().resolve(n.name() + ".threads").toFile()).start();
            p.waitFor(20, TimeUnit.SECONDS);
        } catch (Exception e) {
            System.out.println("multi-jvm: no thread dump of " + n + ": " + e);
        }
    }

    /** Node {@code i} in its namespace at its address. */
    private static NodeProcess node(TestCluster cluster, int i, String name, NodeProcess seed, String config) {
        return cluster.start(name, i, NetworkNamespaces.address(i), NetworkNamespaces.exec(i), seed, config);
    }

    /** The placement shards a node's region holds (Pekko Management's {@code /cluster/shards/NAME}). */
    private static Set<String> shardsOf(NodeProcess n) {
        JsonNode r = n.getJson("/cluster/shards/" + PlacementEntity.TYPE_KEY.name()).orElseThrow(
                () -> new AssertionError(n + " does not answer /cluster/shards"));
        Set<String> ids = new HashSet<>();
        for (JsonNode region : r.path("regions")) {
            ids.add(region.path("shardId").asText());
        }
        return ids;
    }

    /** The shard of a VM type's placement entity: Pekko's HashCodeMessageExtractor over its entity id. */
    private static String shardOf(int vmType) {
        int shards = com.typesafe.config.ConfigFactory.load().getInt("vmfork.node.placement.number-of-shards");
        return Integer.toString(Math.abs(PlacementEntity.entityId(vmType).hashCode() % shards));
    }

    private static long ms(long since) {
        return (System.nanoTime() - since) / 1_000_000;
    }

    private static void awaitLogLine(NodeProcess n, long from, String line, Duration within) throws Exception {
        long deadline = System.nanoTime() + within.toNanos();
        while (true) {
            byte[] all = Files.readAllBytes(n.log());
            if (new String(all, (int) Math.min(from, all.length), (int) Math.max(0, all.length - from),
                    StandardCharsets.UTF_8).contains(line)) {
                return;
            }
            if (System.nanoTime() > deadline) {
                fail(n + " never logged \"" + line + "\":\n" + n.tail());
            }
            Thread.sleep(20);
        }
    }

    /**
     * The first event of {@code kind} of {@code vmId}, among those already drained into
     * {@code seen} or still to come: every event is kept, so that waiting for one never loses another.
     */
    private static VmEvent awaitEvent(BlockingQueue<VmEvent> q, List<VmEvent> seen, VmEvent.Kind kind, long vmId,
                                      Duration within) throws InterruptedException {
        long deadline = System.nanoTime() + within.toNanos();
        while (true) {
            q.drainTo(seen);
            for (VmEvent e : seen) {
                if (e.kind() == kind && e.vmId() == vmId) {
                    return e;
                }
            }
            if (System.nanoTime() > deadline) {
                return fail("no " + kind + " event of VM " + vmId + " within " + within + "; got " + seen);
            }
            VmEvent e = q.poll(100, TimeUnit.MILLISECONDS);
            if (e != null) {
                seen.add(e);
            }
        }
    }
}
