package io.vmfork.cluster.placement;

import io.vmfork.cluster.serialization.CodecProvider;
import io.vmfork.cluster.serialization.CodecRegistry;
import io.vmfork.cluster.serialization.Refs;
import java.util.ArrayList;
import java.util.List;

/**
 * The wire form of the placement messages (proto/src/main/proto/vmfork/placement.proto),
 * under the manifests {@code placement.<Message>}, which never change.
 */
public final class PlacementCodecs implements CodecProvider {
    @Override
    public void register(CodecRegistry.Builder registry) {
        registry.add(HostLoad.class, "placement.HostLoad", io.vmfork.proto.placement.HostLoad.parser(),
                (m, refs) -> toProto(m), (p, refs) -> fromProto(p));
        registry.add(PlacementEntity.PlaceCopies.class, "placement.PlaceCopies",
                io.vmfork.proto.placement.PlaceCopies.parser(),
                (m, refs) -> io.vmfork.proto.placement.PlaceCopies.newBuilder()
                        .setVmType(m.vmType()).setCount(m.count()).setForkingHostId(m.forkingHostId())
                        .setMemoryPerCopy(m.memoryPerCopy()).setVcpusPerCopy(m.vcpusPerCopy())
                        .setReplyTo(refs.toWire(m.replyTo())).build(),
                (p, refs) -> new PlacementEntity.PlaceCopies(p.getVmType(), p.getCount(), p.getForkingHostId(),
                        p.getMemoryPerCopy(), p.getVcpusPerCopy(), refs.fromWire(p.getReplyTo())));
        registry.add(PlacementEntity.PlaceVm.class, "placement.PlaceVm", io.vmfork.proto.placement.PlaceVm.parser(),
                (m, refs) -> io.vmfork.proto.placement.PlaceVm.newBuilder()
                        .setVmType(m.vmType()).setMemory(m.memory()).setVcpus(m.vcpus())
                        .setReplyTo(refs.toWire(m.replyTo())).build(),
                (p, refs) -> new PlacementEntity.PlaceVm(p.getVmType(), p.getMemory(), p.getVcpus(),
                        refs.fromWire(p.getReplyTo())));
        registry.add(PlacementEntity.Placed.class, "placement.Placed", io.vmfork.proto.placement.Placed.parser(),
                (m, refs) -> {
                    io.vmfork.proto.placement.Placed.Builder b = io.vmfork.proto.placement.Placed.newBuilder()
                            .setVmType(m.vmType()).setShortfall(m.shortfall());
                    for (PlacementEntity.Slot s : m.slots()) {
                        b.addSlots(io.vmfork.proto.placement.Slot.newBuilder()
                                .setHostId(s.hostId()).setReservationId(s.reservationId()));
                    }
                    return b.build();
                },
                (p, refs) -> {
                    List<PlacementEntity.Slot> slots = new ArrayList<>(p.getSlotsCount());
                    for (io.vmfork.proto.placement.Slot s : p.getSlotsList()) {
                        slots.add(new PlacementEntity.Slot(s.getHostId(), s.getReservationId()));
                    }
                    return new PlacementEntity.Placed(p.getVmType(), slots, p.getShortfall());
                });
        registry.add(PlacementEntity.NoCapacity.class, "placement.NoCapacity",
                io.vmfork.proto.placement.NoCapacity.parser(),
                (m, refs) -> io.vmfork.proto.placement.NoCapacity.newBuilder()
                        .setVmType(m.vmType()).setRequested(m.requested()).setReason(m.reason()).build(),
                (p, refs) -> new PlacementEntity.NoCapacity(p.getVmType(), p.getRequested(), p.getReason()));
    }

    static io.vmfork.proto.placement.HostLoad toProto(HostLoad m) {
        return io.vmfork.proto.placement.HostLoad.newBuilder()
                .setHostId(m.hostId()).setHostName(m.hostName()).setAddress(m.address()).setPlatform(m.platform())
                .setSequence(m.sequence()).setVmCount(m.vmCount()).setMemoryUsed(m.memoryUsed())
                .setVcpusUsed(m.vcpusUsed())
                .setCapacity(io.vmfork.proto.placement.Capacity.newBuilder()
                        .setGuestMemory(m.capacity().guestMemory()).setVmSlots(m.capacity().vmSlots())
                        .setVcpus(m.capacity().vcpus()))
                .addAllSettledReservations(m.settledReservations())
                .build();
    }

    static HostLoad fromProto(io.vmfork.proto.placement.HostLoad p) {
        io.vmfork.proto.placement.Capacity c = p.getCapacity();
        return new HostLoad(p.getHostId(), p.getHostName(), p.getAddress(), p.getPlatform(), p.getSequence(),
                p.getVmCount(), p.getMemoryUsed(), p.getVcpusUsed(),
                new Capacity(c.getGuestMemory(), c.getVmSlots(), c.getVcpus()), p.getSettledReservationsList());
    }
}
