package io.vmfork.cluster.node;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.placement.LoadReporter;
import io.vmfork.cluster.placement.PlacementEntity;
import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.typed.Cluster;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** Nodes started by {@link VmforkNode#start}, several in this JVM on loopback ports. */
class VmforkNodeTest {
    private final List<VmforkNode> nodes = new ArrayList<>();

    // One at a time, the seed last: nodes that leave together wait for each other.
    @AfterEach
    void stopNodes() {
        for (int i = nodes.size() - 1; i >= 0; i--) {
            nodes.get(i).system().terminate();
            nodes.get(i).whenTerminated().toCompletableFuture().orTimeout(20, TimeUnit.SECONDS).join();
        }
    }

    private VmforkNode start(long hostId, String seed) {
        return start(hostId, seed, "");
    }

    private VmforkNode start(long hostId, String seed, String extra) {
        Config c = ConfigFactory.parseString("vmfork.host.id = " + hostId + "\nvmfork.host.name = h" + hostId
                + (seed == null ? "" : "\nvmfork.node.seed-nodes = [\"" + seed + "\"]") + "\n" + extra)
                .withFallback(ConfigFactory.load()).resolve();
        VmforkNode n = VmforkNode.start(c);
        nodes.add(n);
        return n;
    }

    private static String hostPort(VmforkNode n) {
        return "127.0.0.1:" + n.system().address().getPort().get();
    }

    private static void awaitUp(VmforkNode n, Duration within) throws InterruptedException {
        long deadline = System.nanoTime() + within.toNanos();
        while (Cluster.get(n.system()).selfMember().status() != MemberStatus.up()) {
            assertTrue(System.nanoTime() < deadline, "node did not become up within " + within);
            Thread.sleep(50);
        }
    }

    @Test
    void aNodeWithoutSeedsFormsAClusterAndPlacesOnItsHostWithinItsCapacity() throws Exception {
        VmforkNode n = start(11, null);
        awaitUp(n, Duration.ofSeconds(15));
        PlacementEntity.Reply reply = null;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (System.nanoTime() < deadline) {
            reply = n.placement().placeVm(1, 64L << 20, 1).toCompletableFuture().get(5, TimeUnit.SECONDS);
            if (reply instanceof PlacementEntity.Placed) {
                break;
            }
            Thread.sleep(100);
        }
        PlacementEntity.Placed placed = assertInstanceOf(PlacementEntity.Placed.class, reply);
        assertEquals(11, placed.slots().get(0).hostId());

        // The node reports its own load: its capacity (vmfork.node.capacity, 64 VM slots by
        // default) less what it admitted, and settles the reservations it admitted.
        long reservation = placed.slots().get(0).reservationId();
        assertTrue(n.admission().admit(reservation, 64L << 20, 1));
        n.loadReporter().tell(LoadReporter.ReportNow.INSTANCE);
        int slots = n.settings().capacity().vmSlots();
        PlacementEntity.Placed rest = assertInstanceOf(PlacementEntity.Placed.class,
                n.placement().placeCopies(1, slots + 5, -1, 64L << 20, 1).toCompletableFuture().get(5, TimeUnit.SECONDS));
        assertEquals(slots - 1, rest.slots().size());
        assertEquals("no capacity for 6 of " + (slots + 5) + " VMs", rest.shortfall());
    }

    @Test
    void aSecondNodeWithAHostIdAlreadyInTheClusterIsRefused() throws Exception {
        VmforkNode first = start(5, null);
        awaitUp(first, Duration.ofSeconds(15));
        VmforkNode other = start(6, hostPort(first));
        VmforkNode twin = start(5, hostPort(first));

        twin.whenTerminated().toCompletableFuture().get(30, TimeUnit.SECONDS);
        HostIdConflict reason = assertInstanceOf(HostIdConflict.class, twin.shutdownReason().orElseThrow());
        assertEquals(5, reason.hostId());
        assertEquals(first.system().address().toString(), reason.otherMember());

        awaitUp(other, Duration.ofSeconds(15));
        assertFalse(first.system().whenTerminated().isCompleted());
        assertEquals(MemberStatus.up(), Cluster.get(first.system()).selfMember().status());
        assertTrue(other.shutdownReason().isEmpty());
    }

    @Test
    void aHostRestartedAtItsAddressAfterACrashRejoinsWithItsId() throws Exception {
        VmforkNode first = start(8, null);
        awaitUp(first, Duration.ofSeconds(15));
        int port;
        try (java.net.ServerSocket free = new java.net.ServerSocket(0)) {
            port = free.getLocalPort();
        }
        // Dies without leaving: the cluster still has it as an up member.
        VmforkNode crashed = start(9, hostPort(first), "vmfork.node.port = " + port
                + "\npekko.coordinated-shutdown.run-by-actor-system-terminate = off");
        awaitUp(crashed, Duration.ofSeconds(15));
        crashed.system().terminate();
        crashed.whenTerminated().toCompletableFuture().get(20, TimeUnit.SECONDS);

        VmforkNode restarted = start(9, hostPort(first), "vmfork.node.port = " + port);
        awaitUp(restarted, Duration.ofSeconds(20));
        // A few checks of the guard later, it is still up.
        Thread.sleep(3 * restarted.settings().hostIdCheckInterval().toMillis());
        assertTrue(restarted.shutdownReason().isEmpty(), () -> "refused: " + restarted.shutdownReason());
        assertEquals(MemberStatus.up(), Cluster.get(restarted.system()).selfMember().status());
    }

    @Test
    void aMissingOrBadConfigFileIsRefusedNamingIt(@org.junit.jupiter.api.io.TempDir Path dir) throws Exception {
        File missing = dir.resolve("nope.conf").toFile();
        InvalidNodeConfigException e = assertThrows(InvalidNodeConfigException.class,
                () -> VmforkNode.loadConfig(missing));
        assertTrue(e.getMessage().contains("nope.conf"), e.getMessage());

        Path bad = dir.resolve("bad.conf");
        Files.writeString(bad, "vmfork.node.capacity.vm-slots = -3\n");
        e = assertThrows(InvalidNodeConfigException.class, () -> VmforkNode.start(VmforkNode.loadConfig(bad.toFile())));
        assertEquals("vmfork.node.capacity.vm-slots", e.key());
    }

    /** A typo in a node's file stops it at loadConfig, before a VMM or an actor system exists (ConfigCheck). */
    @Test
    void aTypoInANodesFileIsRefusedWithItsLine(@org.junit.jupiter.api.io.TempDir Path dir) throws Exception {
        Path typo = dir.resolve("typo.conf");
        Files.writeString(typo, "# a node\nvmfork.node.capacity.vm-slotz = 3\nvmfork.node.port = many\n");
        io.vmfork.vmm.config.InvalidConfigException e = assertThrows(io.vmfork.vmm.config.InvalidConfigException.class,
                () -> VmforkNode.loadConfig(typo.toFile()));
        assertEquals(java.util.List.of(typo + ":2: vmfork.node.capacity.vm-slotz: unknown key; did you mean vm-slots?",
                typo + ":3: vmfork.node.port: 'many' is not a whole number"), e.problems());
    }

    /**
     * The reference's substitutions see the node's file: a node at another address has its
     * transfer server there too (vmfork.transfer.host = ${vmfork.node.hostname}); with the
     * reference resolved on its own first, it was 127.0.0.1 whatever the file said
     * (NetworkFaultTest's nodes in their namespaces could not be reached).
     */
    @Test
    void theReferencesSubstitutionsSeeTheNodesFile(@org.junit.jupiter.api.io.TempDir Path dir) throws Exception {
        Path conf = dir.resolve("node.conf");
        Files.writeString(conf, "vmfork.node.hostname = \"10.77.0.3\"\n");
        com.typesafe.config.Config c = VmforkNode.loadConfig(conf.toFile());
        assertEquals("10.77.0.3", c.getString("vmfork.transfer.host"));
    }
}
