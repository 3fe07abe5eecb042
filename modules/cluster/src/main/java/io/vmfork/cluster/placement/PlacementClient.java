package io.vmfork.cluster.placement;

import io.vmfork.vmm.VmIdentity;
import io.vmfork.vmm.fork.CopyPlacement;
import io.vmfork.vmm.fork.CopyTarget;
import io.vmfork.vmm.hypercall.Hypercalls;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletionStage;
import java.util.function.ToIntFunction;
import java.util.function.ToLongFunction;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;

/**
 * The placement service for Java code that is not an actor (the HostActor's
 * implementation of the VMM's io.vmfork.vmm.fork.CopyPlacement, the application API):
 * each call asks the placement entity of the vm_type, with
 * {@code vmfork.node.placement.ask-timeout}. Needs {@link PlacementEntity#init} on the node.
 */
public final class PlacementClient {
    private final ClusterSharding sharding;
    private final PlacementSettings settings;
    private final long localHostId;

    private PlacementClient(ClusterSharding sharding, PlacementSettings settings, long localHostId) {
        this.sharding = sharding;
        this.settings = settings;
        this.localHostId = localHostId;
    }

    /** A client on {@code system}, whose host is {@code localHostId}. */
    public static PlacementClient create(ActorSystem<?> system, PlacementSettings settings, long localHostId) {
        return new PlacementClient(ClusterSharding.get(system), settings, localHostId);
    }

    /**
     * Hosts for {@code count} copies of a VM of {@code vmType} forked on
     * {@code forkingHostId}. Fails with a TimeoutException when the entity does not
     * answer within the ask timeout.
     */
    public CompletionStage<PlacementEntity.Reply> placeCopies(int vmType, int count, long forkingHostId,
                                                              long memoryPerCopy, int vcpusPerCopy) {
        PlacementEntity.PlaceCopies probe = new PlacementEntity.PlaceCopies(vmType, count, forkingHostId,
                memoryPerCopy, vcpusPerCopy, null);
        return sharding.entityRefFor(PlacementEntity.TYPE_KEY, PlacementEntity.entityId(vmType))
                .ask(replyTo -> new PlacementEntity.PlaceCopies(probe.vmType(), probe.count(), probe.forkingHostId(),
                        probe.memoryPerCopy(), probe.vcpusPerCopy(), replyTo), settings.askTimeout());
    }

    /** The host of one new VM of {@code vmType}. */
    public CompletionStage<PlacementEntity.Reply> placeVm(int vmType, long memory, int vcpus) {
        PlacementEntity.PlaceVm probe = new PlacementEntity.PlaceVm(vmType, memory, vcpus, null);
        return sharding.entityRefFor(PlacementEntity.TYPE_KEY, PlacementEntity.entityId(vmType))
                .ask(replyTo -> new PlacementEntity.PlaceVm(probe.vmType(), probe.memory(), probe.vcpus(), replyTo),
                        settings.askTimeout());
    }

    /**
     * The targets of a fork's copies as the VMM's CopyPlacement gives them: copies placed
     * on this host are {@link CopyTarget#LOCAL}, on another host {@link CopyTarget.Remote},
     * and copies without room, or all of them when placement fails or times out,
     * {@link CopyTarget.Refused} ({@code VMF_ELIMIT} for no capacity, {@code VMF_EAGAIN}
     * for no answer). Never completes exceptionally; always {@code count} targets.
     */
    public CompletionStage<List<CopyTarget>> copyTargets(VmIdentity parent, int vmType, int count,
                                                         long memoryPerCopy, int vcpusPerCopy) {
        return targetsOf(placeCopies(vmType, count, parent.hostId(), memoryPerCopy, vcpusPerCopy), count,
                localHostId);
    }

    /**
     * A placement answer to come as {@code count} copy targets seen from host
     * {@code localHostId}; a failed answer (a timeout) refuses every copy with
     * {@code VMF_EAGAIN}.
     */
    static CompletionStage<List<CopyTarget>> targetsOf(CompletionStage<PlacementEntity.Reply> answer, int count,
                                                      long localHostId) {
        return answer.handle((reply, failure) -> failure != null
                ? Collections.nCopies(count, (CopyTarget) new CopyTarget.Refused(Hypercalls.EAGAIN,
                        "placement did not answer: " + failure))
                : toTargets(reply, count, localHostId));
    }

    /**
     * The VMM's {@link CopyPlacement} backed by this client: each FORK asks the placement
     * entity of its vm_type and waits for the answer on the forking vCPU's thread (the
     * parent is paused meanwhile), at most the ask timeout, as {@link #copyTargets} says.
     *
     * @param memoryOf the guest RAM of a copy of this parent
     * @param vcpusOf  the vCPUs of a copy of this parent
     */
    public CopyPlacement asCopyPlacement(ToLongFunction<VmIdentity> memoryOf, ToIntFunction<VmIdentity> vcpusOf) {
        return (parent, vmType, count) -> copyTargets(parent, vmType, count, memoryOf.applyAsLong(parent),
                vcpusOf.applyAsInt(parent)).toCompletableFuture().join();
    }

    /** A placement reply as {@code count} copy targets, seen from host {@code localHostId}. */
    public static List<CopyTarget> toTargets(PlacementEntity.Reply reply, int count, long localHostId) {
        List<CopyTarget> targets = new ArrayList<>(count);
        if (reply instanceof PlacementEntity.Placed placed) {
            for (PlacementEntity.Slot slot : placed.slots()) {
                targets.add(slot.hostId() == localHostId ? CopyTarget.LOCAL : new CopyTarget.Remote(slot.hostId()));
            }
            while (targets.size() < count) {
                targets.add(new CopyTarget.Refused(Hypercalls.ELIMIT, placed.shortfall()));
            }
        } else if (reply instanceof PlacementEntity.NoCapacity none) {
            targets.addAll(Collections.nCopies(count, new CopyTarget.Refused(Hypercalls.ELIMIT, none.reason())));
        }
        return targets;
    }
}
