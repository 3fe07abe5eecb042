package io.vmfork.cluster.serialization;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

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
        Capacity cap = new Capacity(8L << 30, 8, 16);
        return List.of(
                new HostLoad(3, "node-3", "pekko://vmfork@127.0.0.1:25523", 42, 5, 3L << 30, 5, cap,
                        List.of(-7L, 99L, Long.MAX_VALUE)),
                new HostLoad(0, "", "", 0, 0, 0, 0, new Capacity(0, 0, 0), List.of()),
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
