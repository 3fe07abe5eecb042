package io.vmfork.cluster.placement;

import io.vmfork.cluster.serialization.ClusterMessage;
import java.util.ArrayList;
import java.util.List;
import java.util.SplittableRandom;
import org.apache.pekko.actor.NoSerializationVerificationNeeded;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.PostStop;
import org.apache.pekko.actor.typed.javadsl.AbstractBehavior;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.javadsl.Receive;
import org.apache.pekko.actor.typed.javadsl.StashBuffer;
import org.apache.pekko.cluster.ClusterEvent;
import org.apache.pekko.cluster.Member;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.ddata.LWWMap;
import org.apache.pekko.cluster.ddata.SelfUniqueAddress;
import org.apache.pekko.cluster.ddata.typed.javadsl.DistributedData;
import org.apache.pekko.cluster.ddata.typed.javadsl.Replicator;
import org.apache.pekko.cluster.ddata.typed.javadsl.ReplicatorMessageAdapter;
import org.apache.pekko.cluster.sharding.typed.HashCodeMessageExtractor;
import org.apache.pekko.cluster.sharding.typed.ShardingEnvelope;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.cluster.sharding.typed.javadsl.Entity;
import org.apache.pekko.cluster.sharding.typed.javadsl.EntityTypeKey;
import org.apache.pekko.cluster.typed.Cluster;
import org.apache.pekko.cluster.typed.Subscribe;
import org.apache.pekko.cluster.typed.Unsubscribe;

/**
 * The placement service, the patent's {@code get_target_pf(vm_type)}: one cluster-sharded
 * entity per {@code vm_type} (entity id: the vm_type in decimal) that picks the host of
 * every new VM and of every copy of a fork, by the policy configured for its vm_type.
 *
 * <p>Protocol (placement proposes, the host disposes):
 * <ol>
 *   <li>A caller asks {@link PlaceCopies} or {@link PlaceVm}; the entity answers
 *       {@link Placed} with one {@link Slot} (host id, reservation id) per VM it could place,
 *       in order, or {@link NoCapacity} when no host has room for any.</li>
 *   <li>Each slot is a reservation: it counts against its host in this entity's view until
 *       that host's report lists the reservation id as settled, or until
 *       {@code vmfork.node.placement.reservation-timeout}. So a burst of requests spreads
 *       as the policy says instead of herding onto the host that looked emptiest.</li>
 *   <li>The caller asks the chosen host to take the VM, naming the reservation id. The host
 *       has the final word: it admits the VM only if it fits its capacity now (two entities,
 *       or a stale view, can propose the same last slot), and lists the reservation id,
 *       admitted or refused, in its next load reports ({@link AdmissionLedger} does both).</li>
 *   <li>A copy the host refuses may be placed again once; a second refusal fails that copy
 *       with "no capacity".</li>
 * </ol>
 *
 * <p>The load view ({@link LoadView}) is rebuilt from the replicated {@link LoadReports}
 * whenever the entity starts, so a rebalance or passivation loses only reservations
 * (which the hosts' admission makes safe). Cluster events keep it current: an unreachable
 * node's hosts stop being chosen at once, a removed node's are forgotten (and removed from
 * the replicated map), a node that comes up is chosen as soon as it has reported.
 */
public final class PlacementEntity extends AbstractBehavior<PlacementEntity.Command> {
    /** The sharded entity type; entity id = the vm_type in decimal. */
    public static final EntityTypeKey<Command> TYPE_KEY = EntityTypeKey.create(Command.class, "vmfork-placement");

    /** Starts sharding of the placement entities on this node (every node, same settings). */
    public static ActorRef<ShardingEnvelope<Command>> init(ActorSystem<?> system, PlacementSettings settings) {
        return ClusterSharding.get(system).init(
                Entity.of(TYPE_KEY, ctx -> create(Integer.parseInt(ctx.getEntityId()), settings))
                        .withMessageExtractor(new HashCodeMessageExtractor<>(settings.numberOfShards())));
    }

    /** The entity id of a vm_type. */
    public static String entityId(int vmType) {
        return Integer.toString(vmType);
    }

    /** Every message of the entity. */
    public interface Command {
    }

    /**
     * Hosts for {@code count} copies of a VM forked on {@code forkingHostId} (the
     * local-first policy prefers that host).
     */
    public record PlaceCopies(int vmType, int count, long forkingHostId, long memoryPerCopy, int vcpusPerCopy,
                              ActorRef<Reply> replyTo) implements Command, ClusterMessage {
        public PlaceCopies {
            if (vmType < 0 || count < 1 || memoryPerCopy < 0 || vcpusPerCopy < 0) {
                throw new IllegalArgumentException("invalid PlaceCopies: vm_type " + vmType + ", " + count
                        + " copies of " + memoryPerCopy + " bytes and " + vcpusPerCopy + " vCPUs");
            }
        }
    }

    /** The host of one new VM (it has no forking host). */
    public record PlaceVm(int vmType, long memory, int vcpus, ActorRef<Reply> replyTo)
            implements Command, ClusterMessage {
        public PlaceVm {
            if (vmType < 0 || memory < 0 || vcpus < 0) {
                throw new IllegalArgumentException("invalid PlaceVm: vm_type " + vmType + ", "
                        + memory + " bytes, " + vcpus + " vCPUs");
            }
        }
    }

    /** The answer to {@link PlaceCopies} and {@link PlaceVm}. */
    public sealed interface Reply extends ClusterMessage permits Placed, NoCapacity {
    }

    /** One VM's host, and the reservation it holds there until the host settles it. */
    public record Slot(long hostId, long reservationId) {
    }

    /**
     * The hosts of the VMs that could be placed, in order of the VMs asked for. Fewer
     * than asked when the cluster ran out of room; {@code shortfall} then says so (it is
     * empty otherwise).
     */
    public record Placed(int vmType, List<Slot> slots, String shortfall) implements Reply {
        public Placed {
            slots = List.copyOf(slots);
        }
    }

    /** No host has room for even one of the VMs asked for. */
    public record NoCapacity(int vmType, int requested, String reason) implements Reply {
    }

    private record LoadChanged(Replicator.SubscribeResponse<LWWMap<Long, HostLoad>> response)
            implements Command, NoSerializationVerificationNeeded {
    }

    private record MemberChanged(ClusterEvent.MemberEvent event)
            implements Command, NoSerializationVerificationNeeded {
    }

    private record ReachabilityChanged(ClusterEvent.ReachabilityEvent event)
            implements Command, NoSerializationVerificationNeeded {
    }

    private record LoadFetched(Replicator.GetResponse<LWWMap<Long, HostLoad>> response)
            implements Command, NoSerializationVerificationNeeded {
    }

    private record ForgetDone(Replicator.UpdateResponse<LWWMap<Long, HostLoad>> response)
            implements Command, NoSerializationVerificationNeeded {
    }

    /** The entity of {@code vmType}, with the policy configured for it. */
    public static Behavior<Command> create(int vmType, PlacementSettings settings) {
        return Behaviors.withStash(settings.startupStash(), stash -> Behaviors.setup(ctx ->
                DistributedData.withReplicatorMessageAdapter(
                        (ReplicatorMessageAdapter<Command, LWWMap<Long, HostLoad>> replicator) ->
                                new PlacementEntity(ctx, replicator, stash, vmType, settings))));
    }

    private final int vmType;
    private final PlacementPolicy policy;
    private final LoadView view;
    private final Placer placer = new Placer();
    private final SplittableRandom random = new SplittableRandom();
    private final ReplicatorMessageAdapter<Command, LWWMap<Long, HostLoad>> replicator;
    private final SelfUniqueAddress selfUniqueAddress;
    private final Replicator.WriteConsistency forgetConsistency;
    private final ActorRef<ClusterEvent.MemberEvent> memberAdapter;
    private final ActorRef<ClusterEvent.ReachabilityEvent> reachabilityAdapter;
    // Requests wait here until the entity has read the local replica of the reports (at
    // once, with ReadLocal): a fresh entity must not answer "no capacity" for want of a view.
    private final StashBuffer<Command> starting;
    private boolean loaded;

    private PlacementEntity(ActorContext<Command> ctx,
                            ReplicatorMessageAdapter<Command, LWWMap<Long, HostLoad>> replicator,
                            StashBuffer<Command> starting, int vmType, PlacementSettings settings) {
        super(ctx);
        this.starting = starting;
        this.vmType = vmType;
        this.policy = settings.policyFor(vmType);
        this.view = new LoadView(settings.reservationTimeout(), System::nanoTime);
        this.replicator = replicator;
        this.selfUniqueAddress = DistributedData.get(ctx.getSystem()).selfUniqueAddress();
        this.forgetConsistency = Replicator.writeLocal();

        Cluster cluster = Cluster.get(ctx.getSystem());
        for (Member m : cluster.state().getMembers()) {
            if (m.status() == MemberStatus.up() || m.status() == MemberStatus.weaklyUp()) {
                view.memberUp(m.address().toString());
            }
        }
        for (Member m : cluster.state().getUnreachable()) {
            view.unreachable(m.address().toString());
        }
        memberAdapter = ctx.messageAdapter(ClusterEvent.MemberEvent.class, MemberChanged::new);
        reachabilityAdapter = ctx.messageAdapter(ClusterEvent.ReachabilityEvent.class, ReachabilityChanged::new);
        cluster.subscriptions().tell(Subscribe.create(memberAdapter, ClusterEvent.MemberEvent.class));
        cluster.subscriptions().tell(Subscribe.create(reachabilityAdapter, ClusterEvent.ReachabilityEvent.class));
        replicator.subscribe(LoadReports.KEY, LoadChanged::new);
        replicator.askGet(replyTo -> new Replicator.Get<>(LoadReports.KEY, Replicator.readLocal(), replyTo),
                LoadFetched::new);
        ctx.getLog().debug("placement of vm_type {} started, policy {}", vmType, policy.configName());
    }

    @Override
    public Receive<Command> createReceive() {
        return newReceiveBuilder()
                .onMessage(PlaceCopies.class, this::onPlaceCopies)
                .onMessage(PlaceVm.class, this::onPlaceVm)
                .onMessage(LoadFetched.class, this::onLoadFetched)
                .onMessage(LoadChanged.class, this::onLoadChanged)
                .onMessage(MemberChanged.class, this::onMemberChanged)
                .onMessage(ReachabilityChanged.class, this::onReachabilityChanged)
                .onMessage(ForgetDone.class, m -> this)
                .onSignal(PostStop.class, s -> onPostStop())
                .build();
    }

    private Behavior<Command> onPlaceCopies(PlaceCopies m) {
        if (!loaded) {
            return stashOrRefuse(m, m.replyTo(), m.count());
        }
        m.replyTo().tell(place(m.count(), m.forkingHostId(), m.memoryPerCopy(), m.vcpusPerCopy()));
        return this;
    }

    private Behavior<Command> onPlaceVm(PlaceVm m) {
        if (!loaded) {
            return stashOrRefuse(m, m.replyTo(), 1);
        }
        m.replyTo().tell(place(1, Placer.NO_HOST, m.memory(), m.vcpus()));
        return this;
    }

    private Reply place(int count, long forkingHostId, long memory, int vcpus) {
        List<HostRoom> rooms = view.rooms();
        List<Long> hosts = placer.place(policy, rooms, count, forkingHostId, memory, vcpus);
        if (hosts.isEmpty()) {
            return new NoCapacity(vmType, count, rooms.isEmpty()
                    ? "no capacity: no reachable host has reported its load"
                    : "no capacity: none of " + rooms.size() + " reachable hosts has room for a VM of "
                            + memory + " bytes and " + vcpus + " vCPUs");
        }
        List<Slot> slots = new ArrayList<>(hosts.size());
        for (long host : hosts) {
            long id = random.nextLong();
            view.reserve(host, id, memory, vcpus);
            slots.add(new Slot(host, id));
        }
        String shortfall = hosts.size() == count ? ""
                : "no capacity for " + (count - hosts.size()) + " of " + count + " VMs";
        return new Placed(vmType, slots, shortfall);
    }

    private Behavior<Command> stashOrRefuse(Command m, ActorRef<Reply> replyTo, int count) {
        if (starting.isFull()) {
            replyTo.tell(new NoCapacity(vmType, count, "no capacity: placement of vm_type " + vmType
                    + " is starting and has too many requests waiting"));
        } else {
            starting.stash(m);
        }
        return this;
    }

    private Behavior<Command> onLoadFetched(LoadFetched m) {
        if (m.response() instanceof Replicator.GetSuccess<LWWMap<Long, HostLoad>> ok) {
            view.reports(ok.get(LoadReports.KEY).getEntries());
        }
        if (loaded) {
            return this;
        }
        loaded = true;
        return starting.unstashAll(this);
    }

    private Behavior<Command> onLoadChanged(LoadChanged m) {
        if (m.response() instanceof Replicator.Changed<LWWMap<Long, HostLoad>> changed) {
            view.reports(changed.get(LoadReports.KEY).getEntries());
        } else if (m.response() instanceof Replicator.Deleted<LWWMap<Long, HostLoad>>) {
            view.reports(java.util.Map.of());
        }
        return this;
    }

    private Behavior<Command> onMemberChanged(MemberChanged m) {
        ClusterEvent.MemberEvent e = m.event();
        String address = e.member().address().toString();
        if (e instanceof ClusterEvent.MemberUp || e instanceof ClusterEvent.MemberWeaklyUp) {
            view.memberUp(address);
        } else if (e instanceof ClusterEvent.MemberRemoved) {
            forget(address);
        } else if (e instanceof ClusterEvent.MemberLeft || e instanceof ClusterEvent.MemberExited
                || e instanceof ClusterEvent.MemberDowned || e instanceof ClusterEvent.MemberPreparingForShutdown
                || e instanceof ClusterEvent.MemberReadyForShutdown) {
            view.memberLeaving(address);
        }
        return this;
    }

    // A removed node's reports go from the view and from the replicated map. The update
    // checks the address, so that the report of a node that came back under the same
    // host id (a new address) is kept.
    private void forget(String address) {
        List<Long> hosts = view.hostsAt(address);
        view.memberRemoved(address);
        for (long host : hosts) {
            replicator.askUpdate(
                    replyTo -> new Replicator.Update<>(LoadReports.KEY, LWWMap.empty(), forgetConsistency, replyTo,
                            map -> {
                                HostLoad held = map.getEntries().get(host);
                                return held != null && held.address().equals(address)
                                        ? map.remove(selfUniqueAddress, host) : map;
                            }),
                    ForgetDone::new);
        }
        if (!hosts.isEmpty()) {
            getContext().getLog().info("placement of vm_type {}: forgot host(s) {} of removed node {}",
                    vmType, hosts, address);
        }
    }

    private Behavior<Command> onReachabilityChanged(ReachabilityChanged m) {
        String address = m.event().member().address().toString();
        if (m.event() instanceof ClusterEvent.UnreachableMember) {
            view.unreachable(address);
        } else if (m.event() instanceof ClusterEvent.ReachableMember) {
            view.reachable(address);
        }
        return this;
    }

    private Behavior<Command> onPostStop() {
        Cluster cluster = Cluster.get(getContext().getSystem());
        cluster.subscriptions().tell(new Unsubscribe<>(memberAdapter));
        cluster.subscriptions().tell(new Unsubscribe<>(reachabilityAdapter));
        return this;
    }
}
