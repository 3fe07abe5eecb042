package io.vmfork.cluster.serialization;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmfork.cluster.api.ConsoleOutput;
import io.vmfork.cluster.api.ErrorCode;
import io.vmfork.cluster.api.VmEvent;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.api.VmOrigin;
import io.vmfork.cluster.host.HostActor;
import io.vmfork.cluster.placement.Capacity;
import io.vmfork.cluster.placement.HostLoad;
import io.vmfork.cluster.placement.PlacementEntity;
import java.io.NotSerializableException;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.JUnit5TestKitBuilder;
import org.apache.pekko.actor.testkit.typed.javadsl.TestKitJUnit5Extension;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.actor.testkit.typed.annotations.JUnit5TestKit;
import org.apache.pekko.serialization.Serialization;
import org.apache.pekko.serialization.SerializationExtension;
import org.apache.pekko.serialization.Serializer;
import org.apache.pekko.serialization.Serializers;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;

/**
 * Every message registered in configuration goes through Pekko's serialization and back
 * unchanged. A package that adds messages adds samples here; the test fails for a
 * registered type without a sample.
 */
@ExtendWith(TestKitJUnit5Extension.class)
class ClusterSerializationTest {
    @JUnit5TestKit
    public ActorTestKit testKit = new JUnit5TestKitBuilder().build();

    private List<ClusterMessage> samples() {
        TestProbe<PlacementEntity.Reply> probe = testKit.createTestProbe();
        TestProbe<HostActor.Reply> host = testKit.createTestProbe();
        TestProbe<VmEvent> events = testKit.createTestProbe();
        TestProbe<ConsoleOutput> console = testKit.createTestProbe();
        Capacity cap = new Capacity(8L << 30, 8, 16);
        long vm = (3L << 40) | 17;
        VmInfo booted = new VmInfo(vm, 3, "RUNNING", 7, 0, 0, VmOrigin.BOOTED, "warm-worker", 256L << 20, true);
        VmInfo child = new VmInfo(vm + 1, 3, "CREATED", 7, vm, 1, VmOrigin.CHILD, "", 0, false);
        VmInfo clone = new VmInfo(vm + 2, 4, "EXITED", 0, vm, 2, VmOrigin.CLONE, "/tmp/x.elf", 8L << 20, false);
        List<ClusterMessage> hostMessages = List.of(
                booted, child, clone,
                new VmEvent(VmEvent.Kind.LAUNCHED, vm, 3, booted, -1, ""),
                new VmEvent(VmEvent.Kind.EXITED, vm, 3, null, 42, "guest exited with code 42"),
                new VmEvent(VmEvent.Kind.CLONE_FAILED, vm, 3, null, -1, "copy 2 on host 1: TRANSFER_FAILED: cut"),
                new VmEvent(VmEvent.Kind.LOST, vm + 1, 3, child, -1, "host 3 left the cluster"),
                new ConsoleOutput(vm, "hello\n".getBytes(java.nio.charset.StandardCharsets.UTF_8)),
                new ConsoleOutput(0, new byte[0]),
                new HostActor.Launch("hello", 7, 64L << 20, 123, host.getRef()),
                new HostActor.Launch("/x/y.elf", 0, 0, 0, host.getRef()),
                new HostActor.Fork(vm, 2, -1, host.getRef()),
                new HostActor.Request(vm, new byte[] {0, 1, (byte) 0xff}, host.getRef()),
                new HostActor.Request(vm, new byte[0], host.getRef()),
                new HostActor.Stop(vm, host.getRef()),
                new HostActor.ListVms(host.getRef()),
                new HostActor.Subscribe(events.getRef()),
                new HostActor.SubscribeConsole(vm, console.getRef(), host.getRef()),
                new HostActor.Launched(booted),
                new HostActor.Forked(vm, List.of(child), List.of("EREMOTE")),
                new HostActor.Forked(vm, List.of(), List.of()),
                new HostActor.OfferClones(9, 1, vm, 4, 0x300000, List.of(new HostActor.CloneSlot(0, 77),
                        new HostActor.CloneSlot(3, 0)), 64L << 20, 1, new byte[] {1, 2}, new byte[0], host.getRef()),
                new HostActor.ClonesAccepted(9, "127.0.0.1", 25600, new byte[] {9, 9}, true, List.of(0),
                        List.of(new HostActor.RefusedCopy(3, "HOST_FULL", "host 2 has no room"))),
                new HostActor.ClonesAccepted(10, "::1", 1, new byte[0], false, List.of(), List.of()),
                new HostActor.Response(vm, "ok".getBytes(java.nio.charset.StandardCharsets.UTF_8)),
                new HostActor.Stopped(vm, "stopped by the host"),
                new HostActor.VmList(3, List.of(booted, child)),
                new HostActor.VmList(0, List.of()),
                new HostActor.ConsoleSubscribed(vm, new byte[] {65}),
                new HostActor.Failure(ErrorCode.UNKNOWN_VM, "no VM 17 on host 3"));
        List<ClusterMessage> all = new java.util.ArrayList<>(hostMessages);
        all.addAll(placementSamples(probe, cap));
        return all;
    }

    private List<ClusterMessage> placementSamples(TestProbe<PlacementEntity.Reply> probe, Capacity cap) {
        return List.of(
                new HostLoad(3, "node-3", "pekko://vmfork@127.0.0.1:25523", "process", 42, 5, 3L << 30, 5, cap,
                        List.of(-7L, 99L, Long.MAX_VALUE)),
                new HostLoad(4, "node-4", "pekko://vmfork@127.0.0.1:25524", "kvm", 1, 0, 0, 0, cap, List.of()),
                new HostLoad(0, "", "", "", 0, 0, 0, 0, new Capacity(0, 0, 0), List.of()),
                new PlacementEntity.PlaceCopies(7, 32, 2, 256L << 20, 1, probe.getRef()),
                new PlacementEntity.PlaceCopies(0, 1, -1, 0, 0, probe.getRef()),
                new PlacementEntity.PlaceVm(9, 64L << 20, 2, probe.getRef()),
                new PlacementEntity.Placed(7, List.of(new PlacementEntity.Slot(1, 123), new PlacementEntity.Slot(2, -5)),
                        "no capacity for 1 of 3 VMs"),
                new PlacementEntity.Placed(7, List.of(), ""),
                new PlacementEntity.NoCapacity(7, 4, "no capacity: none of 3 reachable hosts has room"));
    }

    @Test
    void everyMessageRoundTripsThroughTheVmforkSerializer() throws Exception {
        Serialization serialization = SerializationExtension.get(testKit.system());
        for (ClusterMessage m : samples()) {
            Serializer serializer = serialization.findSerializerFor(m);
            assertInstanceOf(VmforkSerializer.class, serializer, m.getClass().getName());
            byte[] bytes = serialization.serialize(m).get();
            String manifest = Serializers.manifestFor(serializer, m);
            Object back = serialization.deserialize(bytes, serializer.identifier(), manifest).get();
            assertEquals(m, back);
        }
    }

    @Test
    void aHostLoadCarriesItsPlatformAsField10AndAnOlderWritersReportHasNone() throws Exception {
        Serialization serialization = SerializationExtension.get(testKit.system());
        HostLoad kvm = new HostLoad(2, "node-2", "pekko://vmfork@127.0.0.1:25522", "kvm", 7, 1, 64L << 20, 1,
                new Capacity(1L << 30, 4, 4), List.of(5L));
        Serializer serializer = serialization.findSerializerFor(kvm);
        byte[] bytes = serialization.serialize(kvm).get();
        io.vmfork.proto.placement.HostLoad wire = io.vmfork.proto.placement.HostLoad.parseFrom(bytes);
        assertEquals("kvm", wire.getPlatform());
        assertEquals("kvm", ((HostLoad) serialization.deserialize(bytes, serializer.identifier(),
                "placement.HostLoad").get()).platform());
        // A node of an older version writes no field 10: its report decodes, platform "".
        byte[] older = wire.toBuilder().clearPlatform().build().toByteArray();
        HostLoad back = (HostLoad) serialization.deserialize(older, serializer.identifier(), "placement.HostLoad").get();
        assertEquals(new HostLoad(2, "node-2", "pekko://vmfork@127.0.0.1:25522", "", 7, 1, 64L << 20, 1,
                new Capacity(1L << 30, 4, 4), List.of(5L)), back);
    }

    @Test
    void everyRegisteredTypeHasASample() {
        CodecRegistry registry = CodecRegistry.fromConfig(testKit.system().settings().config());
        Set<Class<?>> sampled = new HashSet<>();
        samples().forEach(m -> sampled.add(m.getClass()));
        for (MessageCodec<?> codec : registry.codecs()) {
            assertTrue(sampled.contains(codec.type()), "no serialization sample for " + codec.type().getName());
        }
    }

    @Test
    void manifestsAreStable() {
        CodecRegistry registry = CodecRegistry.fromConfig(testKit.system().settings().config());
        assertEquals("placement.HostLoad", registry.forType(HostLoad.class).manifest());
        assertEquals("placement.PlaceCopies", registry.forType(PlacementEntity.PlaceCopies.class).manifest());
        assertEquals("placement.PlaceVm", registry.forType(PlacementEntity.PlaceVm.class).manifest());
        assertEquals("placement.Placed", registry.forType(PlacementEntity.Placed.class).manifest());
        assertEquals("placement.NoCapacity", registry.forType(PlacementEntity.NoCapacity.class).manifest());
        assertEquals("host.Launch", registry.forType(HostActor.Launch.class).manifest());
        assertEquals("host.VmEvent", registry.forType(VmEvent.class).manifest());
        assertEquals("host.Failure", registry.forType(HostActor.Failure.class).manifest());
    }

    private record Unregistered(int x) implements ClusterMessage {
    }

    @Test
    void aMessageWithoutCodecIsRefusedClearly() throws Exception {
        VmforkSerializer serializer = (VmforkSerializer) SerializationExtension.get(testKit.system())
                .serializerFor(ClusterMessage.class);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class,
                () -> serializer.toBinary(new Unregistered(1)));
        assertTrue(e.getMessage().contains("no vmfork codec for"), e.getMessage());
        assertThrows(NotSerializableException.class, () -> serializer.fromBinary(new byte[0], "placement.Nope"));
        assertThrows(NotSerializableException.class,
                () -> serializer.fromBinary(new byte[] {(byte) 0xff, 1, 2}, "placement.HostLoad"));
    }

    @Test
    void aDecodedMessageIsCheckedLikeAConstructedOne() throws Exception {
        VmforkSerializer serializer = (VmforkSerializer) SerializationExtension.get(testKit.system())
                .serializerFor(ClusterMessage.class);
        byte[] zeroCopies = io.vmfork.proto.placement.PlaceCopies.newBuilder().setVmType(1).setCount(0)
                .build().toByteArray();
        assertThrows(NotSerializableException.class, () -> serializer.fromBinary(zeroCopies, "placement.PlaceCopies"));
    }

    @Test
    void twoCodecsCannotClaimOneManifest() {
        CodecProvider a = r -> r.add(HostLoad.class, "x.Same", io.vmfork.proto.placement.HostLoad.parser(),
                (m, refs) -> io.vmfork.proto.placement.HostLoad.getDefaultInstance(), (p, refs) -> null);
        CodecProvider b = r -> r.add(PlacementEntity.NoCapacity.class, "x.Same",
                io.vmfork.proto.placement.NoCapacity.parser(),
                (m, refs) -> io.vmfork.proto.placement.NoCapacity.getDefaultInstance(), (p, refs) -> null);
        IllegalStateException e = assertThrows(IllegalStateException.class, () -> CodecRegistry.of(a, b));
        assertTrue(e.getMessage().contains("x.Same"), e.getMessage());
    }
}
