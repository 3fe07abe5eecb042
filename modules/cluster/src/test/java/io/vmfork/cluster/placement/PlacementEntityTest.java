package io.vmfork.cluster.placement;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmfork.vmm.VmIdentity;
import io.vmfork.vmm.fork.CopyPlacement;
import io.vmfork.vmm.fork.CopyTarget;
import io.vmfork.vmm.hypercall.Hypercalls;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.sharding.typed.ShardingEnvelope;
import org.apache.pekko.cluster.typed.Cluster;
import org.apache.pekko.cluster.typed.Join;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The placement entity on a one-node cluster (serialize-messages on), with hosts that
 * report through the real replicated map. Each test has its own actor system, so its
 * hosts are its own.
 */
class PlacementEntityTest {
    private static final long MIB = 1L << 20;
    private static final int LEAST_LOADED = 1;
    private static final int SPREAD = 2;
    private static final int PACK = 3;
    private static final int LOCAL_FIRST = 4;

    private ActorTestKit testKit;
    private ActorRef<LoadReports.Command> reports;
    private String address;

    private static PlacementSettings settings(Duration reservationTimeout) {
        return new PlacementSettings(PlacementPolicy.LEAST_LOADED,
                Map.of(SPREAD, PlacementPolicy.SPREAD, PACK, PlacementPolicy.PACK, LOCAL_FIRST, PlacementPolicy.LOCAL_FIRST),
                Duration.ofSeconds(3), reservationTimeout, Duration.ofSeconds(1), Duration.ofSeconds(1), 8, 1000);
    }

    @BeforeEach
    void startOneNodeCluster() throws Exception {
        testKit = ActorTestKit.create();
        Cluster cluster = Cluster.get(testKit.system());
        cluster.manager().tell(Join.create(cluster.selfMember().address()));
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (cluster.selfMember().status() != MemberStatus.up()) {
            assertTrue(System.nanoTime() < deadline, "one-node cluster did not come up");
            Thread.sleep(20);
        }
        address = cluster.selfMember().address().toString();
        reports = testKit.spawn(LoadReports.publisher(Duration.ofSeconds(1)));
    }

    @AfterEach
    void stop() {
        testKit.shutdownTestKit();
    }

    private void host(long id, int vms, int slots, List<Long> settled, long sequence) {
        reports.tell(new LoadReports.Publish(new HostLoad(id, "h" + id, address, "process", sequence, vms,
                vms * 256 * MIB, vms, new Capacity(slots * 256 * MIB, slots, slots), settled)));
    }

    /**
     * Waits until this node's replica of the load reports holds {@code hosts} hosts, so that
     * an entity started now reads them all at once (an entity that starts between two
     * replicated reports sees one host, and retries of a wait that places VMs would fill it).
     */
    private void awaitReplicated(int hosts) {
        TestProbe<org.apache.pekko.cluster.ddata.typed.javadsl.Replicator.GetResponse<
                org.apache.pekko.cluster.ddata.LWWMap<Long, HostLoad>>> got = testKit.createTestProbe();
        var replicator = org.apache.pekko.cluster.ddata.typed.javadsl.DistributedData.get(testKit.system())
                .replicator();
        got.awaitAssert(Duration.ofSeconds(5), Duration.ofMillis(20), () -> {
            replicator.tell(new org.apache.pekko.cluster.ddata.typed.javadsl.Replicator.Get<>(LoadReports.KEY,
                    org.apache.pekko.cluster.ddata.typed.javadsl.Replicator.readLocal(), got.getRef()));
            var r = got.receiveMessage();
            assertTrue(r instanceof org.apache.pekko.cluster.ddata.typed.javadsl.Replicator.GetSuccess<
                    org.apache.pekko.cluster.ddata.LWWMap<Long, HostLoad>> ok
                    && ok.get(LoadReports.KEY).size() >= hosts, "replica: " + r);
            return null;
        });
    }

    /** Waits until the entity sees {@code hosts} hosts, by placing nothing-sized VMs... on a throwaway vm_type. */
    private void awaitHosts(ActorRef<PlacementEntity.Command> entity, int vmType, int hosts) throws Exception {
        TestProbe<PlacementEntity.Reply> probe = testKit.createTestProbe();
        probe.awaitAssert(Duration.ofSeconds(5), Duration.ofMillis(50), () -> {
            entity.tell(new PlacementEntity.PlaceCopies(vmType, hosts, Placer.NO_HOST, 0, 0, probe.getRef()));
            PlacementEntity.Reply r = probe.receiveMessage();
            assertTrue(r instanceof PlacementEntity.Placed p && p.slots().stream().map(PlacementEntity.Slot::hostId)
                    .distinct().count() == hosts, "entity sees: " + r);
            return null;
        });
    }

    private ActorRef<ShardingEnvelope<PlacementEntity.Command>> sharded(Duration reservationTimeout) {
        return PlacementEntity.init(testKit.system(), settings(reservationTimeout));
    }

    private static Map<Long, Integer> count(List<PlacementEntity.Slot> slots) {
        Map<Long, Integer> m = new HashMap<>();
        slots.forEach(s -> m.merge(s.hostId(), 1, Integer::sum));
        return m;
    }

    @Test
    void aBurstOf32OverThreeHostsOf8NeverOverCommitsAndSpreadsPerPolicy() throws Exception {
        host(1, 0, 8, List.of(), 1);
        host(2, 0, 8, List.of(), 1);
        host(3, 0, 8, List.of(), 1);
        awaitReplicated(3);
        ActorRef<ShardingEnvelope<PlacementEntity.Command>> region = sharded(Duration.ofSeconds(30));
        for (int vmType : new int[] {LEAST_LOADED, SPREAD, PACK, LOCAL_FIRST}) {
            // Wait on a separate entity (its reservations must not count here) until the hosts replicated.
            if (vmType == LEAST_LOADED) {
                ActorRef<PlacementEntity.Command> probeEntity = testKit.spawn(
                        PlacementEntity.create(99, settings(Duration.ofMillis(1))));
                awaitHosts(probeEntity, 99, 3);
                testKit.stop(probeEntity);
            }
            TestProbe<PlacementEntity.Reply> probe = testKit.createTestProbe();
            String id = PlacementEntity.entityId(vmType);
            for (int i = 0; i < 32; i++) {
                region.tell(new ShardingEnvelope<>(id, new PlacementEntity.PlaceCopies(vmType, 1, 2, 256 * MIB, 1,
                        probe.getRef())));
            }
            List<PlacementEntity.Slot> slots = new ArrayList<>();
            int none = 0;
            for (int i = 0; i < 32; i++) {
                PlacementEntity.Reply r = probe.receiveMessage(Duration.ofSeconds(5));
                if (r instanceof PlacementEntity.Placed p) {
                    assertEquals(1, p.slots().size());
                    slots.add(p.slots().get(0));
                } else {
                    PlacementEntity.NoCapacity n = assertInstanceOf(PlacementEntity.NoCapacity.class, r);
                    assertTrue(n.reason().startsWith("no capacity"), n.reason());
                    none++;
                }
            }
            assertEquals(8, none, "policy of vm_type " + vmType);
            assertEquals(Map.of(1L, 8, 2L, 8, 3L, 8), count(slots), "policy of vm_type " + vmType);
            List<Long> first3 = slots.subList(0, 3).stream().map(PlacementEntity.Slot::hostId).toList();
            switch (vmType) {
                case LEAST_LOADED, SPREAD -> assertEquals(List.of(1L, 2L, 3L), first3);
                case PACK -> assertEquals(List.of(1L, 1L, 1L), first3);
                case LOCAL_FIRST -> assertEquals(List.of(2L, 2L, 2L), first3);
                default -> throw new AssertionError();
            }
        }
    }

    @Test
    void noHostsMeansNoCapacityClearly() {
        ActorRef<ShardingEnvelope<PlacementEntity.Command>> region = sharded(Duration.ofSeconds(5));
        TestProbe<PlacementEntity.Reply> probe = testKit.createTestProbe();
        region.tell(new ShardingEnvelope<>("5", new PlacementEntity.PlaceVm(5, 64 * MIB, 1, probe.getRef())));
        PlacementEntity.NoCapacity n = probe.expectMessageClass(PlacementEntity.NoCapacity.class);
        assertEquals(5, n.vmType());
        assertEquals(1, n.requested());
        assertEquals("no capacity: no reachable host has reported its load", n.reason());
    }

    @Test
    void aBatchTakesWhatFitsAndSaysWhatDidNot() throws Exception {
        host(1, 6, 8, List.of(), 1);
        ActorRef<PlacementEntity.Command> entity = testKit.spawn(PlacementEntity.create(LEAST_LOADED,
                settings(Duration.ofSeconds(30))));
        TestProbe<PlacementEntity.Reply> probe = testKit.createTestProbe();
        probe.awaitAssert(Duration.ofSeconds(5), Duration.ofMillis(50), () -> {
            entity.tell(new PlacementEntity.PlaceCopies(LEAST_LOADED, 5, 1, 256 * MIB, 1, probe.getRef()));
            PlacementEntity.Placed p = assertInstanceOf(PlacementEntity.Placed.class, probe.receiveMessage());
            assertEquals(2, p.slots().size());
            assertEquals("no capacity for 3 of 5 VMs", p.shortfall());
            return null;
        });
        entity.tell(new PlacementEntity.PlaceCopies(LEAST_LOADED, 1, 1, 256 * MIB, 1, probe.getRef()));
        PlacementEntity.NoCapacity n = probe.expectMessageClass(PlacementEntity.NoCapacity.class);
        assertEquals("no capacity: none of 1 reachable hosts has room for a VM of 268435456 bytes and 1 vCPUs",
                n.reason());
        // In the VMM's terms, seen from host 1: local copies, then refusals with VMF_ELIMIT.
        List<CopyTarget> targets = PlacementClient.toTargets(new PlacementEntity.Placed(1,
                List.of(new PlacementEntity.Slot(1, 5), new PlacementEntity.Slot(2, 6)), "no capacity for 1 of 3 VMs"),
                3, 1);
        assertEquals(List.of(CopyTarget.LOCAL, new CopyTarget.Remote(2),
                new CopyTarget.Refused(Hypercalls.ELIMIT, "no capacity for 1 of 3 VMs")), targets);
    }

    @Test
    void reservationsExpireOrAreSettledByANewerReport() throws Exception {
        host(1, 0, 3, List.of(), 1);
        ActorRef<PlacementEntity.Command> entity = testKit.spawn(PlacementEntity.create(LEAST_LOADED,
                settings(Duration.ofSeconds(2))));
        TestProbe<PlacementEntity.Reply> probe = testKit.createTestProbe();
        List<Long> reservations = new ArrayList<>();
        probe.awaitAssert(Duration.ofSeconds(5), Duration.ofMillis(50), () -> {
            entity.tell(new PlacementEntity.PlaceCopies(LEAST_LOADED, 3, 1, 256 * MIB, 1, probe.getRef()));
            PlacementEntity.Placed p = assertInstanceOf(PlacementEntity.Placed.class, probe.receiveMessage());
            p.slots().forEach(s -> reservations.add(s.reservationId()));
            return null;
        });
        assertEquals(3, reservations.size());
        entity.tell(new PlacementEntity.PlaceVm(LEAST_LOADED, 256 * MIB, 1, probe.getRef()));
        probe.expectMessageClass(PlacementEntity.NoCapacity.class);

        // The host admitted the first, refused the second: a newer report counts one VM and
        // settles both; the third still counts, so exactly one more fits.
        host(1, 1, 3, List.of(reservations.get(0), reservations.get(1)), 2);
        probe.awaitAssert(Duration.ofSeconds(5), Duration.ofMillis(50), () -> {
            entity.tell(new PlacementEntity.PlaceVm(LEAST_LOADED, 256 * MIB, 1, probe.getRef()));
            assertInstanceOf(PlacementEntity.Placed.class, probe.receiveMessage());
            return null;
        });
        entity.tell(new PlacementEntity.PlaceVm(LEAST_LOADED, 256 * MIB, 1, probe.getRef()));
        probe.expectMessageClass(PlacementEntity.NoCapacity.class);

        // Nothing settles the other two: after the reservation timeout they no longer count.
        probe.awaitAssert(Duration.ofSeconds(5), Duration.ofMillis(200), () -> {
            entity.tell(new PlacementEntity.PlaceCopies(LEAST_LOADED, 2, 1, 256 * MIB, 1, probe.getRef()));
            PlacementEntity.Placed p = assertInstanceOf(PlacementEntity.Placed.class, probe.receiveMessage());
            assertEquals(2, p.slots().size());
            return null;
        });
    }

    @Test
    void aRestartedEntityRebuildsItsViewFromTheReplicatedReports() throws Exception {
        host(1, 0, 4, List.of(), 1);
        host(2, 3, 4, List.of(), 1);
        awaitReplicated(2);
        ActorRef<PlacementEntity.Command> entity = testKit.spawn(PlacementEntity.create(PACK,
                settings(Duration.ofSeconds(30))));
        awaitHosts(entity, PACK, 2);
        testKit.stop(entity);

        // A fresh incarnation, with no state of its own: it knows both hosts at once, from
        // the replicated map (pack: host 2, the fullest with room, first).
        ActorRef<PlacementEntity.Command> again = testKit.spawn(PlacementEntity.create(PACK,
                settings(Duration.ofSeconds(30))));
        TestProbe<PlacementEntity.Reply> probe = testKit.createTestProbe();
        again.tell(new PlacementEntity.PlaceCopies(PACK, 3, Placer.NO_HOST, 256 * MIB, 1, probe.getRef()));
        PlacementEntity.Placed p = probe.expectMessageClass(PlacementEntity.Placed.class, Duration.ofSeconds(3));
        assertEquals(List.of(2L, 1L, 1L), p.slots().stream().map(PlacementEntity.Slot::hostId).toList());
    }

    @Test
    void theClientAnswersInTheVmmsTermsAndNeverFails() throws Exception {
        sharded(Duration.ofSeconds(5));
        host(1, 0, 2, List.of(), 1);
        host(2, 0, 2, List.of(), 1);
        PlacementClient client = PlacementClient.create(testKit.system(), settings(Duration.ofSeconds(5)), 1);
        VmIdentity parent = new VmIdentity((1L << 40) | 1, 0, 1, 0, LOCAL_FIRST);
        List<CopyTarget> targets = null;
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        do {
            targets = client.copyTargets(parent, LOCAL_FIRST, 5, 256 * MIB, 1).toCompletableFuture()
                    .get(5, TimeUnit.SECONDS);
        } while (targets.get(0) instanceof CopyTarget.Refused && System.nanoTime() < deadline);
        assertEquals(5, targets.size());
        assertEquals(List.of(CopyTarget.LOCAL, CopyTarget.LOCAL, new CopyTarget.Remote(2), new CopyTarget.Remote(2)),
                targets.subList(0, 4));
        CopyTarget.Refused refused = assertInstanceOf(CopyTarget.Refused.class, targets.get(4));
        assertEquals(Hypercalls.ELIMIT, refused.status());

        // The same through the VMM's interface (the reservations above still hold the room).
        CopyPlacement vmmView = client.asCopyPlacement(p -> 256 * MIB, p -> 1);
        List<CopyTarget> none = vmmView.place(parent, LOCAL_FIRST, 2);
        assertEquals(2, none.size());
        assertEquals(Hypercalls.ELIMIT, assertInstanceOf(CopyTarget.Refused.class, none.get(0)).status());

        // A placement that does not answer in time: every copy refused with VMF_EAGAIN, no exception.
        List<CopyTarget> late = PlacementClient.targetsOf(CompletableFuture.failedFuture(
                new TimeoutException("Ask timed out after [2000 ms]")), 3, 1).toCompletableFuture().get();
        assertEquals(3, late.size());
        CopyTarget.Refused eagain = assertInstanceOf(CopyTarget.Refused.class, late.get(0));
        assertEquals(Hypercalls.EAGAIN, eagain.status());
        assertTrue(eagain.reason().startsWith("placement did not answer"), eagain.reason());
    }

    @Test
    void twoEntitiesRacingForTheSameHostsNeverOverCommitBecauseTheHostDecides() throws Exception {
        Map<Long, AdmissionLedger> ledgers = new HashMap<>();
        for (long h = 1; h <= 3; h++) {
            ledgers.put(h, new AdmissionLedger(new Capacity(8 * 256 * MIB, 8, 8), Duration.ofSeconds(30),
                    System::nanoTime));
            reports.tell(new LoadReports.Publish(ledgers.get(h).report(h, "h" + h, address, "process")));
        }
        awaitReplicated(3);
        ActorRef<PlacementEntity.Command> waiter = testKit.spawn(PlacementEntity.create(99, settings(Duration.ofMillis(1))));
        awaitHosts(waiter, 99, 3);
        // Two vm_types, two entities, each with its own view and reservations: together they
        // propose twice what the hosts can take.
        ActorRef<PlacementEntity.Command> a = testKit.spawn(PlacementEntity.create(LEAST_LOADED,
                settings(Duration.ofSeconds(30))));
        ActorRef<PlacementEntity.Command> b = testKit.spawn(PlacementEntity.create(PACK,
                settings(Duration.ofSeconds(30))));
        TestProbe<PlacementEntity.Reply> probe = testKit.createTestProbe();
        for (int i = 0; i < 32; i++) {
            a.tell(new PlacementEntity.PlaceVm(LEAST_LOADED, 256 * MIB, 1, probe.getRef()));
            b.tell(new PlacementEntity.PlaceVm(PACK, 256 * MIB, 1, probe.getRef()));
        }
        TestProbe<PlacementEntity.Reply> retry = testKit.createTestProbe();
        int admitted = 0;
        Map<Integer, Integer> proposed = new HashMap<>();
        int refused = 0;
        for (int i = 0; i < 64; i++) {
            PlacementEntity.Reply r = probe.receiveMessage(Duration.ofSeconds(5));
            if (!(r instanceof PlacementEntity.Placed p)) {
                continue;
            }
            proposed.merge(p.vmType(), 1, Integer::sum);
            PlacementEntity.Slot slot = p.slots().get(0);
            AdmissionLedger host = ledgers.get(slot.hostId());
            boolean ok = host.admit(slot.reservationId(), 256 * MIB, 1);
            reports.tell(new LoadReports.Publish(host.report(slot.hostId(), "h" + slot.hostId(), address,
                    "process")));
            if (!ok) {
                // Refused: placed again, once.
                refused++;
                ActorRef<PlacementEntity.Command> entity = p.vmType() == PACK ? b : a;
                entity.tell(new PlacementEntity.PlaceVm(p.vmType(), 256 * MIB, 1, retry.getRef()));
                PlacementEntity.Reply again = retry.receiveMessage(Duration.ofSeconds(5));
                ok = again instanceof PlacementEntity.Placed p2 && ledgers.get(p2.slots().get(0).hostId())
                        .admit(p2.slots().get(0).reservationId(), 256 * MIB, 1);
            }
            admitted += ok ? 1 : 0;
        }
        // Each entity alone never proposes past the hosts' room (24); together they propose
        // more, and the hosts admit exactly what they hold.
        assertTrue(proposed.get(LEAST_LOADED) <= 24 && proposed.get(PACK) <= 24, proposed.toString());
        assertTrue(refused > 0, "the hosts refused nothing: the entities did not race");
        assertEquals(24, admitted);
        for (AdmissionLedger l : ledgers.values()) {
            assertEquals(8, l.vmCount());
        }
    }
}
