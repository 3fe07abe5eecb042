package io.vmfork.cluster.host;

import com.google.protobuf.ByteString;
import io.vmfork.cluster.api.ConsoleOutput;
import io.vmfork.cluster.api.ErrorCode;
import io.vmfork.cluster.api.VmEvent;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.api.VmOrigin;
import io.vmfork.cluster.serialization.CodecProvider;
import io.vmfork.cluster.serialization.CodecRegistry;
import java.util.ArrayList;
import java.util.List;

/**
 * The wire form of the HostActor's messages and the API's values
 * (proto/src/main/proto/vmfork/host.proto), under the manifests {@code host.<Message>},
 * which never change.
 */
public final class HostCodecs implements CodecProvider {
    @Override
    public void register(CodecRegistry.Builder r) {
        r.add(VmInfo.class, "host.VmInfo", io.vmfork.proto.host.VmInfo.parser(),
                (m, refs) -> toProto(m), (p, refs) -> fromProto(p));
        r.add(VmEvent.class, "host.VmEvent", io.vmfork.proto.host.VmEvent.parser(),
                (m, refs) -> {
                    var b = io.vmfork.proto.host.VmEvent.newBuilder().setKind(m.kind().name()).setVmId(m.vmId())
                            .setHostId(m.hostId()).setExitCode(m.exitCode()).setDetail(m.detail());
                    if (m.vm() != null) {
                        b.setVm(toProto(m.vm()));
                    }
                    return b.build();
                },
                (p, refs) -> new VmEvent(VmEvent.Kind.valueOf(p.getKind()), p.getVmId(), p.getHostId(),
                        p.hasVm() ? fromProto(p.getVm()) : null, p.getExitCode(), p.getDetail()));
        r.add(ConsoleOutput.class, "host.ConsoleOutput", io.vmfork.proto.host.ConsoleOutput.parser(),
                (m, refs) -> io.vmfork.proto.host.ConsoleOutput.newBuilder().setVmId(m.vmId())
                        .setBytes(ByteString.copyFrom(m.bytes())).build(),
                (p, refs) -> new ConsoleOutput(p.getVmId(), p.getBytes().toByteArray()));

        r.add(HostActor.Launch.class, "host.Launch", io.vmfork.proto.host.Launch.parser(),
                (m, refs) -> io.vmfork.proto.host.Launch.newBuilder().setImage(m.image()).setVmType(m.vmType())
                        .setMemory(m.memory()).setReservationId(m.reservationId())
                        .setReplyTo(refs.toWire(m.replyTo())).build(),
                (p, refs) -> new HostActor.Launch(p.getImage(), p.getVmType(), p.getMemory(), p.getReservationId(),
                        refs.fromWire(p.getReplyTo())));
        r.add(HostActor.Fork.class, "host.Fork", io.vmfork.proto.host.Fork.parser(),
                (m, refs) -> io.vmfork.proto.host.Fork.newBuilder().setVmId(m.vmId()).setCount(m.count())
                        .setVmType(m.vmType()).setReplyTo(refs.toWire(m.replyTo())).build(),
                (p, refs) -> new HostActor.Fork(p.getVmId(), p.getCount(), p.getVmType(),
                        refs.fromWire(p.getReplyTo())));
        r.add(HostActor.Request.class, "host.Request", io.vmfork.proto.host.Request.parser(),
                (m, refs) -> io.vmfork.proto.host.Request.newBuilder().setVmId(m.vmId())
                        .setPayload(ByteString.copyFrom(m.payload())).setReplyTo(refs.toWire(m.replyTo())).build(),
                (p, refs) -> new HostActor.Request(p.getVmId(), p.getPayload().toByteArray(),
                        refs.fromWire(p.getReplyTo())));
        r.add(HostActor.Stop.class, "host.Stop", io.vmfork.proto.host.Stop.parser(),
                (m, refs) -> io.vmfork.proto.host.Stop.newBuilder().setVmId(m.vmId())
                        .setReplyTo(refs.toWire(m.replyTo())).build(),
                (p, refs) -> new HostActor.Stop(p.getVmId(), refs.fromWire(p.getReplyTo())));
        r.add(HostActor.ListVms.class, "host.ListVms", io.vmfork.proto.host.ListVms.parser(),
                (m, refs) -> io.vmfork.proto.host.ListVms.newBuilder().setReplyTo(refs.toWire(m.replyTo())).build(),
                (p, refs) -> new HostActor.ListVms(refs.fromWire(p.getReplyTo())));
        r.add(HostActor.Subscribe.class, "host.Subscribe", io.vmfork.proto.host.Subscribe.parser(),
                (m, refs) -> io.vmfork.proto.host.Subscribe.newBuilder()
                        .setSubscriber(refs.toWire(m.subscriber())).build(),
                (p, refs) -> new HostActor.Subscribe(refs.fromWire(p.getSubscriber())));
        r.add(HostActor.SubscribeConsole.class, "host.SubscribeConsole",
                io.vmfork.proto.host.SubscribeConsole.parser(),
                (m, refs) -> io.vmfork.proto.host.SubscribeConsole.newBuilder().setVmId(m.vmId())
                        .setSubscriber(refs.toWire(m.subscriber())).setReplyTo(refs.toWire(m.replyTo())).build(),
                (p, refs) -> new HostActor.SubscribeConsole(p.getVmId(), refs.fromWire(p.getSubscriber()),
                        refs.fromWire(p.getReplyTo())));

        r.add(HostActor.Launched.class, "host.Launched", io.vmfork.proto.host.Launched.parser(),
                (m, refs) -> io.vmfork.proto.host.Launched.newBuilder().setVm(toProto(m.vm())).build(),
                (p, refs) -> new HostActor.Launched(fromProto(p.getVm())));
        r.add(HostActor.Forked.class, "host.Forked", io.vmfork.proto.host.Forked.parser(),
                (m, refs) -> {
                    var b = io.vmfork.proto.host.Forked.newBuilder().setParentId(m.parentId())
                            .addAllErrors(m.errors());
                    m.children().forEach(c -> b.addChildren(toProto(c)));
                    return b.build();
                },
                (p, refs) -> new HostActor.Forked(p.getParentId(), fromProto(p.getChildrenList()), p.getErrorsList()));
        r.add(HostActor.Response.class, "host.Response", io.vmfork.proto.host.Response.parser(),
                (m, refs) -> io.vmfork.proto.host.Response.newBuilder().setVmId(m.vmId())
                        .setPayload(ByteString.copyFrom(m.payload())).build(),
                (p, refs) -> new HostActor.Response(p.getVmId(), p.getPayload().toByteArray()));
        r.add(HostActor.Stopped.class, "host.Stopped", io.vmfork.proto.host.Stopped.parser(),
                (m, refs) -> io.vmfork.proto.host.Stopped.newBuilder().setVmId(m.vmId()).setExit(m.exit()).build(),
                (p, refs) -> new HostActor.Stopped(p.getVmId(), p.getExit()));
        r.add(HostActor.VmList.class, "host.VmList", io.vmfork.proto.host.VmList.parser(),
                (m, refs) -> {
                    var b = io.vmfork.proto.host.VmList.newBuilder().setHostId(m.hostId());
                    m.vms().forEach(v -> b.addVms(toProto(v)));
                    return b.build();
                },
                (p, refs) -> new HostActor.VmList(p.getHostId(), fromProto(p.getVmsList())));
        r.add(HostActor.ConsoleSubscribed.class, "host.ConsoleSubscribed",
                io.vmfork.proto.host.ConsoleSubscribed.parser(),
                (m, refs) -> io.vmfork.proto.host.ConsoleSubscribed.newBuilder().setVmId(m.vmId())
                        .setSoFar(ByteString.copyFrom(m.soFar())).build(),
                (p, refs) -> new HostActor.ConsoleSubscribed(p.getVmId(), p.getSoFar().toByteArray()));
        r.add(HostActor.OfferClones.class, "host.OfferClones", io.vmfork.proto.host.OfferClones.parser(),
                (m, refs) -> {
                    var b = io.vmfork.proto.host.OfferClones.newBuilder().setTransferId(m.transferId())
                            .setSourceHostId(m.sourceHostId()).setParentId(m.parentId()).setVmType(m.vmType())
                            .setForkBlock(m.forkBlock()).setMemory(m.memory()).setVcpus(m.vcpus())
                            .setImageKey(ByteString.copyFrom(m.imageKey()))
                            .setBaseKey(ByteString.copyFrom(m.baseKey())).setReplyTo(refs.toWire(m.replyTo()));
                    m.copies().forEach(c -> b.addCopies(io.vmfork.proto.host.CloneSlot.newBuilder()
                            .setIndex(c.index()).setReservationId(c.reservationId())));
                    return b.build();
                },
                (p, refs) -> new HostActor.OfferClones(p.getTransferId(), p.getSourceHostId(), p.getParentId(),
                        p.getVmType(), p.getForkBlock(), p.getCopiesList().stream()
                                .map(c -> new HostActor.CloneSlot(c.getIndex(), c.getReservationId())).toList(),
                        p.getMemory(), p.getVcpus(), p.getImageKey().toByteArray(), p.getBaseKey().toByteArray(),
                        refs.fromWire(p.getReplyTo())));
        r.add(HostActor.ClonesAccepted.class, "host.ClonesAccepted", io.vmfork.proto.host.ClonesAccepted.parser(),
                (m, refs) -> {
                    var b = io.vmfork.proto.host.ClonesAccepted.newBuilder().setTransferId(m.transferId())
                            .setTransferHost(m.transferHost()).setTransferPort(m.transferPort())
                            .setToken(ByteString.copyFrom(m.token())).setDelta(m.delta())
                            .addAllAccepted(m.accepted());
                    m.refused().forEach(x -> b.addRefused(io.vmfork.proto.host.RefusedCopy.newBuilder()
                            .setIndex(x.index()).setCode(x.code()).setReason(x.reason())));
                    return b.build();
                },
                (p, refs) -> new HostActor.ClonesAccepted(p.getTransferId(), p.getTransferHost(), p.getTransferPort(),
                        p.getToken().toByteArray(), p.getDelta(), p.getAcceptedList(), p.getRefusedList().stream()
                                .map(x -> new HostActor.RefusedCopy(x.getIndex(), x.getCode(), x.getReason()))
                                .toList()));
        r.add(HostActor.Failure.class, "host.Failure", io.vmfork.proto.host.Failure.parser(),
                (m, refs) -> io.vmfork.proto.host.Failure.newBuilder().setCode(m.code().name())
                        .setMessage(m.message()).build(),
                (p, refs) -> new HostActor.Failure(ErrorCode.valueOf(p.getCode()), p.getMessage()));
    }

    static io.vmfork.proto.host.VmInfo toProto(VmInfo m) {
        return io.vmfork.proto.host.VmInfo.newBuilder().setVmId(m.vmId()).setHostId(m.hostId()).setState(m.state())
                .setVmType(m.vmType()).setParentId(m.parentId()).setForkGeneration(m.forkGeneration())
                .setOrigin(m.origin().name()).setImage(m.image()).setMemory(m.memory()).setReady(m.ready()).build();
    }

    static VmInfo fromProto(io.vmfork.proto.host.VmInfo p) {
        return new VmInfo(p.getVmId(), p.getHostId(), p.getState(), p.getVmType(), p.getParentId(),
                p.getForkGeneration(), VmOrigin.valueOf(p.getOrigin()), p.getImage(), p.getMemory(), p.getReady());
    }

    static List<VmInfo> fromProto(List<io.vmfork.proto.host.VmInfo> ps) {
        List<VmInfo> out = new ArrayList<>(ps.size());
        ps.forEach(p -> out.add(fromProto(p)));
        return out;
    }
}
