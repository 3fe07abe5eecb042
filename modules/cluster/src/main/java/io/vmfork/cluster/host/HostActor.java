package io.vmfork.cluster.host;

import io.vmfork.cluster.api.ConsoleOutput;
import io.vmfork.cluster.api.ErrorCode;
import io.vmfork.cluster.api.VmEvent;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.api.VmOrigin;
import io.vmfork.cluster.placement.AdmissionLedger;
import io.vmfork.cluster.placement.LoadReporter;
import io.vmfork.cluster.placement.PlacementClient;
import io.vmfork.cluster.serialization.ClusterMessage;
import io.vmfork.cluster.transfer.TransferServer;
import io.vmfork.cluster.transfer.TransferSettings;
import io.vmfork.vmm.LaunchException;
import io.vmfork.vmm.MessageChannel;
import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmEndedException;
import io.vmfork.vmm.VmExit;
import io.vmfork.vmm.VmListener;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.guest.GuestImages;
import io.vmfork.vmm.guest.InvalidGuestImageException;
import java.net.InetAddress;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeoutException;
import java.util.function.Supplier;
import org.apache.pekko.actor.Address;
import org.apache.pekko.actor.NoSerializationVerificationNeeded;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.DispatcherSelector;
import org.apache.pekko.actor.typed.PostStop;
import org.apache.pekko.actor.typed.javadsl.AbstractBehavior;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.javadsl.Receive;
import org.apache.pekko.actor.typed.receptionist.Receptionist;
import org.apache.pekko.actor.typed.receptionist.ServiceKey;
import org.apache.pekko.cluster.ClusterEvent;
import org.apache.pekko.cluster.Member;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.typed.Cluster;

/**
 * The host: owns this host's {@link Vmm} and its VMs. One per node.
 *
 * <ul>
 *   <li>Every VMM call that can block (image read and launch, fork, stop, a channel
 *       request) runs on the dispatcher {@value #BLOCKING_DISPATCHER}, never on this actor's
 *       thread; its result comes back through {@code pipeToSelf}.</li>
 *   <li>Lifecycle events, which the VMM calls on vCPU threads, reach the actor as private
 *       messages. An event that overtakes its VM's launch result (a guest can be ready, or
 *       even end, before the launch call returns) waits until the VM is known.</li>
 *   <li>Admission: a launch is admitted through the node's {@link AdmissionLedger} (VM
 *       slots, guest memory, vCPUs) before the VMM is asked, so two placement decisions at
 *       once never over-commit the host; a fork's local copies are admitted by
 *       {@link HostCopyPlacement} while the parent is paused. What a VM was admitted for is
 *       released when it ends, and the {@link LoadReporter} is told at once.</li>
 *   <li>The Vmm's CopyPlacement is {@link HostCopyPlacement}: every fork asks placement
 *       where its copies go.</li>
 *   <li>It registers with the Receptionist under {@link #ALL_HOSTS} and
 *       {@link #serviceKey(long)} of its host id, which is how callers find it (a VM id
 *       names its host in bits 40 and up).</li>
 *   <li>When it stops (the actor system terminates), it closes the Vmm: every VM is
 *       stopped and its threads and memory released.</li>
 *   <li>When the cluster downs this node (the split brain resolver on the losing side of a
 *       partition, or a member's {@code Down}), it fences the host at once, before the node's
 *       coordinated shutdown: it stops taking launches, forks and offers, aborts the
 *       transfers coming in and closes the Vmm, so every VM of this host is stopped within
 *       moments of its own decision; the other side reports them LOST only a removal margin
 *       after it removed this node (docs/transfer.md, "Network partitions").</li>
 * </ul>
 */
public final class HostActor extends AbstractBehavior<HostActor.Command> {
    /** The dispatcher of the blocking VMM calls (reference.conf). */
    public static final String BLOCKING_DISPATCHER = "vmfork.node.host-dispatcher";

    /** Every HostActor of the cluster. */
    public static final ServiceKey<Command> ALL_HOSTS = ServiceKey.create(Command.class, "vmfork-hosts");

    /** The HostActor of host {@code hostId}. */
    public static ServiceKey<Command> serviceKey(long hostId) {
        return ServiceKey.create(Command.class, "vmfork-host-" + hostId);
    }

    /** Every message of the HostActor. */
    public interface Command {
    }

    /**
     * Boot a VM from a guest image: a shipped guest's name or the name of a file under
     * this host's {@code vmfork.node.images} directories ({@link GuestImages}; never a path
     * of the host outside them).
     *
     * @param memory        guest RAM in bytes; 0: the VMM's default
     * @param reservationId the placement's reservation, or {@link AdmissionLedger#NO_RESERVATION}
     */
    public record Launch(String image, int vmType, long memory, long reservationId, ActorRef<Reply> replyTo)
            implements Command, ClusterMessage {
        public Launch {
            if (image == null || image.isBlank() || vmType < 0 || memory < 0) {
                throw new IllegalArgumentException("invalid Launch: image '" + image + "', vm_type " + vmType
                        + ", " + memory + " bytes");
            }
        }
    }

    /** Fork a running VM from outside into {@code count} copies of {@code vmType} (-1: the parent's). */
    public record Fork(long vmId, int count, int vmType, ActorRef<Reply> replyTo) implements Command, ClusterMessage {
    }

    /** A request on a VM's message channel; the reply is the guest's answer. */
    public record Request(long vmId, byte[] payload, ActorRef<Reply> replyTo) implements Command, ClusterMessage {
        public Request {
            payload = payload.clone();
        }

        @Override
        public byte[] payload() {
            return payload.clone();
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof Request r && r.vmId == vmId && Arrays.equals(r.payload, payload)
                    && r.replyTo.equals(replyTo);
        }

        @Override
        public int hashCode() {
            return Long.hashCode(vmId) * 31 + Arrays.hashCode(payload);
        }
    }

    /** Stop a VM; the reply comes once it has released everything. */
    public record Stop(long vmId, ActorRef<Reply> replyTo) implements Command, ClusterMessage {
    }

    /** This host's VMs. */
    public record ListVms(ActorRef<Reply> replyTo) implements Command, ClusterMessage {
    }

    /**
     * Lifecycle events of this host's VMs go to {@code subscriber} (first a
     * {@link VmEvent.Kind#KNOWN} for each VM alive now) until it stops.
     */
    public record Subscribe(ActorRef<VmEvent> subscriber) implements Command, ClusterMessage {
    }

    /**
     * Console output of VM {@code vmId} goes to {@code subscriber} until the VM ends. The
     * reply carries the output kept so far; output written while the subscription is being
     * made may appear both there and in the first {@link ConsoleOutput} messages.
     */
    public record SubscribeConsole(long vmId, ActorRef<ConsoleOutput> subscriber, ActorRef<Reply> replyTo)
            implements Command, ClusterMessage {
    }

    /** One copy of a fork offered to a target host: its index and placement's reservation there. */
    public record CloneSlot(int index, long reservationId) {
    }

    /**
     * From a source host's HostActor: start clones of a fork's frozen image here. Taken only
     * from the member that holds {@code sourceHostId} (else a {@link Failure} INVALID). The
     * target admits what it can and answers {@link ClonesAccepted}; the capsule follows
     * over the transfer connection (io.vmfork.cluster.transfer). Protocol and states:
     * {@link CloneSource} (source) and {@link CloneTarget} (target).
     *
     * @param forkBlock GPA of the parent's fork block, 0 for a fork from outside
     * @param imageKey  the source's key for the image, under which the target may keep it
     * @param baseKey   an earlier image of the same parent the source sent this target, or empty
     */
    public record OfferClones(long transferId, long sourceHostId, long parentId, int vmType, long forkBlock,
                              List<CloneSlot> copies, long memory, int vcpus, byte[] imageKey, byte[] baseKey,
                              ActorRef<Reply> replyTo) implements Command, ClusterMessage {
        public OfferClones {
            copies = List.copyOf(copies);
            imageKey = imageKey.clone();
            baseKey = baseKey.clone();
        }

        @Override
        public byte[] imageKey() {
            return imageKey.clone();
        }

        @Override
        public byte[] baseKey() {
            return baseKey.clone();
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof OfferClones x && x.transferId == transferId && x.sourceHostId == sourceHostId
                    && x.parentId == parentId && x.vmType == vmType && x.forkBlock == forkBlock
                    && x.copies.equals(copies) && x.memory == memory && x.vcpus == vcpus
                    && Arrays.equals(x.imageKey, imageKey) && Arrays.equals(x.baseKey, baseKey)
                    && x.replyTo.equals(replyTo);
        }

        @Override
        public int hashCode() {
            return Long.hashCode(transferId) * 31 + Long.hashCode(parentId);
        }
    }

    /** Every reply of the HostActor. */
    public sealed interface Reply extends ClusterMessage
            permits Launched, Forked, Response, Stopped, VmList, ConsoleSubscribed, Failure, ClonesAccepted {
    }

    /** A copy the target refused: ErrorCode's name and why. */
    public record RefusedCopy(int index, String code, String reason) {
    }

    /**
     * The target admitted {@code accepted} copies and waits for their capsule at
     * {@code transferHost:transferPort}; the connection opens with {@code token} (single
     * use). {@code delta}: it still holds the offer's base image, so a delta capsule does.
     */
    public record ClonesAccepted(long transferId, String transferHost, int transferPort, byte[] token, boolean delta,
                                 List<Integer> accepted, List<RefusedCopy> refused) implements Reply {
        public ClonesAccepted {
            token = token.clone();
            accepted = List.copyOf(accepted);
            refused = List.copyOf(refused);
        }

        @Override
        public byte[] token() {
            return token.clone();
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof ClonesAccepted x && x.transferId == transferId && x.transferHost.equals(transferHost)
                    && x.transferPort == transferPort && Arrays.equals(x.token, token) && x.delta == delta
                    && x.accepted.equals(accepted) && x.refused.equals(refused);
        }

        @Override
        public int hashCode() {
            return Long.hashCode(transferId);
        }
    }

    /** The VM is launched. */
    public record Launched(VmInfo vm) implements Reply {
    }

    /** The copies a fork made, and per copy that failed its error (a VMF_E* name). */
    public record Forked(long parentId, List<VmInfo> children, List<String> errors) implements Reply {
        public Forked {
            children = List.copyOf(children);
            errors = List.copyOf(errors);
        }
    }

    /** The guest's answer to a {@link Request}. */
    public record Response(long vmId, byte[] payload) implements Reply {
        public Response {
            payload = payload.clone();
        }

        @Override
        public byte[] payload() {
            return payload.clone();
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof Response r && r.vmId == vmId && Arrays.equals(r.payload, payload);
        }

        @Override
        public int hashCode() {
            return Long.hashCode(vmId) * 31 + Arrays.hashCode(payload);
        }
    }

    /** The VM is stopped; {@code exit} says how it ended. */
    public record Stopped(long vmId, String exit) implements Reply {
    }

    /** The VMs of host {@code hostId}. */
    public record VmList(long hostId, List<VmInfo> vms) implements Reply {
        public VmList {
            vms = List.copyOf(vms);
        }
    }

    /** The console subscription is in force; {@code soFar} is the output kept until now. */
    public record ConsoleSubscribed(long vmId, byte[] soFar) implements Reply {
        public ConsoleSubscribed {
            soFar = soFar.clone();
        }

        @Override
        public byte[] soFar() {
            return soFar.clone();
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof ConsoleSubscribed c && c.vmId == vmId && Arrays.equals(c.soFar, soFar);
        }

        @Override
        public int hashCode() {
            return Long.hashCode(vmId) * 31 + Arrays.hashCode(soFar);
        }
    }

    /** The command failed. */
    public record Failure(ErrorCode code, String message) implements Reply {
        public Failure {
            if (code == null || message == null) {
                throw new IllegalArgumentException("a Failure needs a code and a message");
            }
        }
    }

    // ---- private messages: results of blocking calls and the VMM's events ----

    private record LaunchDone(Launch command, long memory, int vcpus, VirtualMachine vm, Throwable failure)
            implements Command, NoSerializationVerificationNeeded {
    }

    private record ForkDone(Fork command, VirtualMachine.ForkResult result, Throwable failure)
            implements Command, NoSerializationVerificationNeeded {
    }

    private record RequestDone(long vmId, ActorRef<Reply> replyTo, byte[] reply, Throwable failure)
            implements Command, NoSerializationVerificationNeeded {
    }

    private record StopDone(long vmId, ActorRef<Reply> replyTo, VmExit exit, Throwable failure)
            implements Command, NoSerializationVerificationNeeded {
    }

    private interface VmEventMessage extends Command, NoSerializationVerificationNeeded {
        long vmId();
    }

    private record VmReady(long vmId) implements VmEventMessage {
    }

    private record VmForked(long vmId, VirtualMachine parent, VirtualMachine child) implements VmEventMessage {
    }

    private record VmEnded(long vmId, VmExit exit) implements VmEventMessage {
    }

    private record ConsoleBytes(long vmId, byte[] bytes) implements VmEventMessage {
    }

    private record CloneStarted(CloneTarget.Started started) implements Command, NoSerializationVerificationNeeded {
    }

    private record CloneOutcome(CloneSource.Outcome outcome) implements Command, NoSerializationVerificationNeeded {
    }

    private record TransferBound(TransferServer server, Throwable failure)
            implements Command, NoSerializationVerificationNeeded {
    }

    private record OfferExpired(byte[] token) implements Command, NoSerializationVerificationNeeded {
    }

    /** An offer whose sender was checked: the addresses its transfer may come from, or why it is refused. */
    private record OfferChecked(OfferClones offer, Set<InetAddress> senders, String refusal)
            implements Command, NoSerializationVerificationNeeded {
    }

    private record SubscriberGone(ActorRef<VmEvent> subscriber) implements Command, NoSerializationVerificationNeeded {
    }

    private record ConsoleSubscriberGone(ActorRef<ConsoleOutput> subscriber)
            implements Command, NoSerializationVerificationNeeded {
    }

    /** The cluster marked this node Down (an adapted {@code MemberDowned} of this member). */
    private enum SelfDowned implements Command, NoSerializationVerificationNeeded { INSTANCE }

    /** An adapted {@code MemberDowned} of another member. */
    private enum Ignored implements Command, NoSerializationVerificationNeeded { INSTANCE }

    /** Every VM of the fenced host is stopped: how long the Vmm's close took, or why it failed. */
    private record Fenced(int vms, long nanos, Throwable failure) implements Command, NoSerializationVerificationNeeded {
    }

    /**
     * Settings a HostActor needs besides its VMM.
     *
     * @param transfer        how capsules move (vmfork.transfer)
     * @param imageCacheBytes image data this host keeps of the clone capsules it received,
     *                        for later deltas (vmfork.transfer.image-cache)
     * @param images          the guest images a {@link Launch} may name (vmfork.node.images)
     * @param subscribers     how many subscriptions the host keeps (vmfork.node.subscribers)
     */
    public record Settings(long hostId, String hostName, Duration askTimeout, TransferSettings transfer,
                           long imageCacheBytes, GuestImages images, SubscriberLimits subscribers) {
        public Settings {
            if (images == null || subscribers == null) {
                throw new IllegalArgumentException("a host needs its guest images (GuestImages.shippedOnly() for none)"
                        + " and its subscriber limits");
            }
        }

        /** Defaults for the transfer and the subscribers: reference.conf's; the shipped guests only. */
        public Settings(long hostId, String hostName, Duration askTimeout) {
            this(hostId, hostName, askTimeout, TransferSettings.fromConfig(com.typesafe.config.ConfigFactory.load()),
                    com.typesafe.config.ConfigFactory.load().getBytes("vmfork.transfer.image-cache").longValue(),
                    GuestImages.shippedOnly(), SubscriberLimits.fromConfig(com.typesafe.config.ConfigFactory.load()));
        }
    }

    /**
     * How many subscriptions ({@link Subscribe}, and {@link SubscribeConsole} per VM) a host
     * keeps: in all, and from one member (its subscribers' address; this node's own count
     * as one member). More are refused, and so is a subscriber on an address that is not a
     * member of the cluster.
     *
     * @param total     subscriptions in all (vmfork.node.subscribers.max)
     * @param perMember subscriptions of one member (vmfork.node.subscribers.max-per-member)
     */
    public record SubscriberLimits(int total, int perMember) {
        public SubscriberLimits {
            if (total < 1 || perMember < 1) {
                throw new IllegalArgumentException("subscriber limits must be positive: " + total + ", " + perMember);
            }
        }

        /** {@code vmfork.node.subscribers} of {@code config}. */
        public static SubscriberLimits fromConfig(com.typesafe.config.Config config) {
            return new SubscriberLimits(config.getInt("vmfork.node.subscribers.max"),
                    config.getInt("vmfork.node.subscribers.max-per-member"));
        }
    }

    /**
     * The HostActor of a node: it owns (and closes when it stops) {@code vmm}, admits
     * through {@code ledger}, tells {@code reporter} of every change, and asks
     * {@code placement} where forks' copies go.
     */
    public static Behavior<Command> create(Vmm vmm, AdmissionLedger ledger, ActorRef<LoadReporter.Command> reporter,
                                           PlacementClient placement, Settings settings) {
        return create(vmm, ledger, reporter, placement, settings, new CloneStats());
    }

    /** As above; {@code stats} counts the host's remote clones (the status page shows it). */
    public static Behavior<Command> create(Vmm vmm, AdmissionLedger ledger, ActorRef<LoadReporter.Command> reporter,
                                           PlacementClient placement, Settings settings, CloneStats stats) {
        return Behaviors.setup(ctx -> new HostActor(ctx, vmm, ledger, reporter, placement, settings, stats));
    }

    /** What the host knows of one VM it runs. */
    private static final class Entry {
        final VirtualMachine vm;
        final VmOrigin origin;
        final long memory;
        final int vcpus;
        final boolean admittedHere;
        boolean ready;
        final Set<ActorRef<ConsoleOutput>> console = new HashSet<>();
        // The last request handed to the blocking dispatcher (see onRequest).
        CompletableFuture<Void> requests = CompletableFuture.completedFuture(null);

        Entry(VirtualMachine vm, VmOrigin origin, long memory, int vcpus, boolean admittedHere) {
            this.vm = vm;
            this.origin = origin;
            this.memory = memory;
            this.vcpus = vcpus;
            this.admittedHere = admittedHere;
        }
    }

    private final Vmm vmm;
    private final AdmissionLedger ledger;
    private final ActorRef<LoadReporter.Command> reporter;
    private final Settings settings;
    private final Executor blocking;
    private final HostCopyPlacement copyPlacement;
    private final VmListener listener;
    private final Map<Long, Entry> vms = new HashMap<>();
    // Events that overtook their VM's launch (or fork) result, by VM id. Bounded: an
    // event of a VM that is already gone (none is expected) must not stay forever.
    private final Map<Long, List<VmEventMessage>> early = new java.util.LinkedHashMap<>() {
        @Override
        protected boolean removeEldestEntry(Map.Entry<Long, List<VmEventMessage>> eldest) {
            return size() > EARLY_EVENTS_KEPT;
        }
    };
    private static final int EARLY_EVENTS_KEPT = 1024;
    /** How long an offer waits for this node's receptionist to know its source host id. */
    private static final Duration OFFER_SENDER_WAIT = Duration.ofSeconds(2);
    private final Set<ActorRef<VmEvent>> subscribers = new HashSet<>();
    private final ImageCache imageCache;
    private final CloneTarget cloneTarget;
    private final CloneSource cloneSource;
    private TransferServer transferServer;
    /** Why this host takes no more work: the cluster downed its node (null while it is a member). */
    private String fenced;
    // Forks asked from outside whose remote copies are still under way, by fork id, and
    // outcomes that came before their fork's result (bounded like `early`).
    private final Map<Long, PendingFork> pendingForks = new HashMap<>();
    private final Map<Long, List<CloneSource.Outcome>> earlyOutcomes = new java.util.LinkedHashMap<>() {
        @Override
        protected boolean removeEldestEntry(Map.Entry<Long, List<CloneSource.Outcome>> eldest) {
            return size() > EARLY_EVENTS_KEPT;
        }
    };

    /** A fork from outside waiting for its remote copies' outcomes. */
    private static final class PendingFork {
        final Fork command;
        final List<VmInfo> children;
        final List<String> errors;
        final Set<Integer> outstanding;

        PendingFork(Fork command, List<VmInfo> children, List<String> errors, Set<Integer> outstanding) {
            this.command = command;
            this.children = children;
            this.errors = errors;
            this.outstanding = outstanding;
        }
    }

    private HostActor(ActorContext<Command> ctx, Vmm vmm, AdmissionLedger ledger,
                      ActorRef<LoadReporter.Command> reporter, PlacementClient placement, Settings settings,
                      CloneStats stats) {
        super(ctx);
        this.vmm = vmm;
        this.ledger = ledger;
        this.reporter = reporter;
        this.settings = settings;
        this.blocking = ctx.getSystem().dispatchers().lookup(DispatcherSelector.fromConfig(BLOCKING_DISPATCHER));
        ActorRef<Command> self = ctx.getSelf();
        this.imageCache = new ImageCache(settings.imageCacheBytes());
        stats.keptFrom(imageCache::usage);
        Failpoints failpoints = Failpoints.fromConfig(ctx.getSystem().settings().config());
        this.cloneTarget = new CloneTarget(vmm, ledger, settings.hostId(), imageCache, failpoints, stats);
        this.cloneSource = new CloneSource(ctx.getSystem(), vmm, settings.hostId(), settings.askTimeout(),
                settings.transfer(), o -> self.tell(new CloneOutcome(o)), failpoints, stats);
        this.copyPlacement = new HostCopyPlacement(vmm, ledger, reporter, placement, settings.hostId(),
                settings.askTimeout(), cloneSource::ship);
        vmm.useCopyPlacement(copyPlacement);
        this.listener = new VmListener() {
            @Override
            public void onConsole(VirtualMachine vm, byte[] bytes) {
                self.tell(new ConsoleBytes(vm.id(), bytes.clone()));
            }

            @Override
            public void onReady(VirtualMachine vm) {
                self.tell(new VmReady(vm.id()));
            }

            @Override
            public void onForked(VirtualMachine parent, VirtualMachine child) {
                copyPlacement.launched(parent.id());
                self.tell(new VmForked(child.id(), parent, child));
            }

            @Override
            public void onEnded(VirtualMachine vm, VmExit exit) {
                self.tell(new VmEnded(vm.id(), exit));
            }
        };
        cloneTarget.wire(listener, st -> self.tell(new CloneStarted(st)),
                () -> reporter.tell(LoadReporter.ReportNow.INSTANCE));
        ctx.pipeToSelf(TransferServer.bindAccepting(ctx.getSystem(), settings.transfer().host(),
                settings.transfer().port(), settings.transfer(), new TransferServer.Acceptor() {
                    @Override
                    public TransferServer.Receiver accept(byte[] opening, java.net.InetSocketAddress peer)
                            throws io.vmfork.cluster.transfer.TransferException {
                        return cloneTarget.accept(opening, peer);
                    }

                    @Override
                    public boolean expects(InetAddress peer) {
                        return cloneTarget.expects(peer);
                    }
                }), TransferBound::new);
        ctx.getSystem().receptionist().tell(Receptionist.register(ALL_HOSTS, ctx.getSelf()));
        ctx.getSystem().receptionist().tell(Receptionist.register(serviceKey(settings.hostId()), ctx.getSelf()));
        Cluster cluster = Cluster.get(ctx.getSystem());
        org.apache.pekko.cluster.UniqueAddress me = cluster.selfMember().uniqueAddress();
        cluster.subscriptions().tell(org.apache.pekko.cluster.typed.Subscribe.create(
                ctx.messageAdapter(ClusterEvent.MemberDowned.class, d ->
                        d.member().uniqueAddress().equals(me) ? SelfDowned.INSTANCE : Ignored.INSTANCE),
                ClusterEvent.MemberDowned.class));
    }


    @Override
    public Receive<Command> createReceive() {
        return newReceiveBuilder()
                .onMessage(Launch.class, this::onLaunch)
                .onMessage(Fork.class, this::onFork)
                .onMessage(Request.class, this::onRequest)
                .onMessage(Stop.class, this::onStop)
                .onMessage(ListVms.class, this::onListVms)
                .onMessage(Subscribe.class, this::onSubscribe)
                .onMessage(SubscribeConsole.class, this::onSubscribeConsole)
                .onMessage(LaunchDone.class, this::onLaunchDone)
                .onMessage(ForkDone.class, this::onForkDone)
                .onMessage(RequestDone.class, this::onRequestDone)
                .onMessage(StopDone.class, this::onStopDone)
                .onMessage(VmReady.class, this::onVmEvent)
                .onMessage(VmForked.class, this::onVmEvent)
                .onMessage(VmEnded.class, this::onVmEvent)
                .onMessage(ConsoleBytes.class, this::onVmEvent)
                .onMessage(OfferClones.class, this::onOfferClones)
                .onMessage(OfferChecked.class, this::onOfferChecked)
                .onMessage(OfferExpired.class, m -> {
                    cloneTarget.expire(m.token());
                    return this;
                })
                .onMessage(CloneStarted.class, this::onCloneStarted)
                .onMessage(CloneOutcome.class, this::onCloneOutcome)
                .onMessage(TransferBound.class, this::onTransferBound)
                .onMessage(SubscriberGone.class, m -> {
                    subscribers.remove(m.subscriber());
                    return this;
                })
                .onMessage(ConsoleSubscriberGone.class, m -> {
                    vms.values().forEach(e -> e.console.remove(m.subscriber()));
                    return this;
                })
                .onMessage(SelfDowned.class, m -> onSelfDowned())
                .onMessage(Fenced.class, this::onFenced)
                .onMessage(Ignored.class, m -> this)
                .onSignal(PostStop.class, s -> onPostStop())
                .build();
    }

    // ---- commands ----

    private Behavior<Command> onLaunch(Launch m) {
        if (fenced != null) {
            m.replyTo().tell(new Failure(ErrorCode.HOST_GONE, fenced));
            return this;
        }
        long memory = m.memory() == 0 ? vmm.settings().defaultMemory() : m.memory();
        int vcpus = 1; // VmSpec.of below: the cluster launches one-vCPU VMs
        boolean admitted = ledger.admit(m.reservationId(), memory, vcpus);
        reporter.tell(LoadReporter.ReportNow.INSTANCE);
        if (!admitted) {
            HostLoadText load = HostLoadText.of(ledger, settings);
            m.replyTo().tell(new Failure(ErrorCode.HOST_FULL, "host " + settings.hostId() + " ("
                    + settings.hostName() + ") has no room for a VM of " + (memory >> 20) + " MiB and " + vcpus
                    + " vCPU: " + load));
            return this;
        }
        runBlocking(() -> vmm.launch(VmSpec.of(settings.images().resolve(m.image()), memory).withVmType(m.vmType())
                        .withListener(listener)),
                (vm, failure) -> new LaunchDone(m, memory, vcpus, vm, failure));
        return this;
    }

    private Behavior<Command> onLaunchDone(LaunchDone m) {
        Launch c = m.command();
        if (m.failure() != null) {
            ledger.release(m.memory(), m.vcpus());
            reporter.tell(LoadReporter.ReportNow.INSTANCE);
            Throwable f = m.failure();
            ErrorCode code = f instanceof InvalidGuestImageException ? ErrorCode.IMAGE_NOT_FOUND
                    : f instanceof IllegalArgumentException || f instanceof LaunchException ? ErrorCode.LAUNCH_FAILED
                    : ErrorCode.LAUNCH_FAILED;
            String what = code == ErrorCode.IMAGE_NOT_FOUND ? "host " + settings.hostId() + ": "
                    : "launch of '" + c.image() + "' on host " + settings.hostId() + ": ";
            c.replyTo().tell(new Failure(code, what + f.getMessage()));
            return this;
        }
        Entry e = new Entry(m.vm(), VmOrigin.BOOTED, m.memory(), m.vcpus(), true);
        vms.put(m.vm().id(), e);
        VmInfo info = info(e);
        c.replyTo().tell(new Launched(info));
        publish(new VmEvent(VmEvent.Kind.LAUNCHED, info.vmId(), settings.hostId(), info, -1, ""));
        replayEarly(m.vm().id());
        return this;
    }

    private Behavior<Command> onFork(Fork m) {
        if (fenced != null) {
            m.replyTo().tell(new Failure(ErrorCode.HOST_GONE, fenced));
            return this;
        }
        Entry e = live(m.vmId(), m.replyTo());
        if (e == null) {
            return this;
        }
        int max = vmm.settings().forkMaxCount();
        if (m.count() < 1 || m.count() > max) {
            m.replyTo().tell(new Failure(ErrorCode.INVALID, "fork count must be 1.." + max + ", got " + m.count()));
            return this;
        }
        int vmType = m.vmType() < 0 ? e.vm.identity().vmType() : m.vmType();
        runBlocking(() -> {
            try {
                return e.vm.fork(m.count(), vmType);
            } finally {
                copyPlacement.forkEnded(e.vm.id(), e.memory, e.vcpus);
            }
        }, (r, failure) -> new ForkDone(m, r, failure));
        return this;
    }

    private Behavior<Command> onForkDone(ForkDone m) {
        if (m.failure() != null) {
            m.command().replyTo().tell(failureOf(m.command().vmId(), m.failure()));
            return this;
        }
        List<VmInfo> children = new ArrayList<>();
        for (VirtualMachine c : m.result().children()) {
            Entry ce = vms.get(c.id());
            children.add(ce != null ? info(ce) : info(new Entry(c, VmOrigin.CHILD, 0, c.vcpuCount(), false)));
        }
        List<String> errors = new ArrayList<>(m.result().errors());
        Set<Integer> outstanding = new HashSet<>();
        for (var r : m.result().remote()) {
            outstanding.add(r.index());
        }
        if (outstanding.isEmpty()) {
            m.command().replyTo().tell(new Forked(m.command().vmId(), children, errors));
            return this;
        }
        // Remote copies: the reply waits for each one's outcome.
        long forkId = m.result().forkId();
        PendingFork p = new PendingFork(m.command(), children, errors, outstanding);
        pendingForks.put(forkId, p);
        List<CloneSource.Outcome> before = earlyOutcomes.remove(forkId);
        if (before != null) {
            before.forEach(o -> settle(forkId, p, o));
        }
        return this;
    }

    // ---- remote clones ----

    /**
     * An offer is taken only from the member that holds its {@code source_host_id}: the
     * receptionist's {@link #serviceKey(long)} of that id must be held by an actor on the
     * offer's sender's address (its replyTo's) and by none elsewhere. The token then goes to
     * that sender only, and its transfer is accepted only from the address its Artery
     * hostname resolves to (CloneTarget.accept).
     */
    private Behavior<Command> onOfferClones(OfferClones m) {
        if (fenced != null) {
            m.replyTo().tell(new Failure(ErrorCode.HOST_GONE, fenced));
            return this;
        }
        if (transferServer == null) {
            m.replyTo().tell(new Failure(ErrorCode.LAUNCH_FAILED, "host " + settings.hostId()
                    + " cannot receive clones: its transfer server is not bound"));
            return this;
        }
        Address from = memberOf(m.replyTo());
        Address self = getContext().getSystem().address();
        ServiceKey<Command> key = serviceKey(m.sourceHostId());
        long until = System.nanoTime() + OFFER_SENDER_WAIT.toNanos();
        getContext().pipeToSelf(holdersOf(key, until).thenApplyAsync(holders ->
                        checkSender(m, from, self, holders), blocking),
                (checked, err) -> checked != null ? checked : new OfferChecked(m, Set.of(),
                        "this host could not look up host id " + m.sourceHostId() + ": " + err));
        return this;
    }

    /**
     * The holders of {@code key} known to this node's receptionist; while there are none,
     * asks again every 200 ms until {@code until} (a member that just joined is known to the
     * receptionist a little after it can send).
     */
    private CompletionStage<Set<ActorRef<Command>>> holdersOf(ServiceKey<Command> key, long until) {
        var system = getContext().getSystem();
        return AskPattern.<Receptionist.Command, Receptionist.Listing>ask(system.receptionist(),
                r -> Receptionist.find(key, r), settings.askTimeout(), system.scheduler())
                .thenCompose(l -> {
                    Set<ActorRef<Command>> all = l.getAllServiceInstances(key);
                    if (!all.isEmpty() || System.nanoTime() > until) {
                        return CompletableFuture.completedFuture(all);
                    }
                    return CompletableFuture.supplyAsync(() -> null,
                                    CompletableFuture.delayedExecutor(200, java.util.concurrent.TimeUnit.MILLISECONDS))
                            .thenCompose(x -> holdersOf(key, until));
                });
    }

    /** Off the actor (it may resolve a host name): the offer's sender against the holders of its host id. */
    private static OfferChecked checkSender(OfferClones m, Address from, Address self, Set<ActorRef<Command>> holders) {
        long id = m.sourceHostId();
        if (holders.isEmpty()) {
            return new OfferChecked(m, Set.of(), "no member of the cluster holds host id " + id);
        }
        for (ActorRef<Command> h : holders) {
            Address at = h.path().address().hasGlobalScope() ? h.path().address() : self;
            if (!at.equals(from)) {
                return new OfferChecked(m, Set.of(), "host id " + id + " is held by the member at " + at
                        + ", and the offer came from " + from);
            }
        }
        String host = from.getHost().orElse("localhost");
        try {
            return new OfferChecked(m, Set.of(InetAddress.getAllByName(host)), null);
        } catch (java.net.UnknownHostException e) {
            return new OfferChecked(m, Set.of(), "the offering member's host name " + host + " does not resolve");
        }
    }

    private Behavior<Command> onOfferChecked(OfferChecked c) {
        OfferClones m = c.offer();
        if (c.refusal() != null) {
            getContext().getLog().warn("host {}: clone offer {} (source host id {}) refused: {}", settings.hostId(),
                    m.transferId(), m.sourceHostId(), c.refusal());
            m.replyTo().tell(new Failure(ErrorCode.INVALID, "host " + settings.hostId() + " refused the offer: "
                    + c.refusal()));
            return this;
        }
        if (transferServer == null) {
            m.replyTo().tell(new Failure(ErrorCode.LAUNCH_FAILED, "host " + settings.hostId()
                    + " cannot receive clones: its transfer server is not bound"));
            return this;
        }
        List<io.vmfork.proto.host.RefusedCopy> refused = new ArrayList<>();
        CloneTarget.Pending p = cloneTarget.offer(m, c.senders(), refused);
        List<RefusedCopy> no = refused.stream().map(r -> new RefusedCopy(r.getIndex(), r.getCode(), r.getReason()))
                .toList();
        var address = transferServer.address();
        if (p == null) {
            m.replyTo().tell(new ClonesAccepted(m.transferId(), address.getHostString(), address.getPort(),
                    new byte[0], false, List.of(), no));
            return this;
        }
        m.replyTo().tell(new ClonesAccepted(m.transferId(), address.getHostString(), address.getPort(), p.token(),
                p.base() != null, p.accepted(), no));
        getContext().scheduleOnce(settings.transfer().connectTimeout().plus(settings.transfer().idleTimeout()),
                getContext().getSelf(), new OfferExpired(p.token()));
        return this;
    }

    private Behavior<Command> onCloneStarted(CloneStarted m) {
        VirtualMachine vm = m.started().vm();
        Entry e = new Entry(vm, VmOrigin.CLONE, m.started().memory(), m.started().vcpus(), true);
        vms.put(vm.id(), e);
        VmInfo info = info(e);
        publish(new VmEvent(VmEvent.Kind.FORKED, vm.id(), settings.hostId(), info, -1, ""));
        replayEarly(vm.id());
        return this;
    }

    private Behavior<Command> onCloneOutcome(CloneOutcome m) {
        CloneSource.Outcome o = m.outcome();
        if (o.cloneVm() == null) {
            publish(new VmEvent(VmEvent.Kind.CLONE_FAILED, o.parentId(), settings.hostId(), null, -1,
                    "copy " + o.index() + " on host " + o.targetHostId() + ": " + o.code() + ": " + o.reason()));
        }
        PendingFork p = pendingForks.get(o.forkId());
        if (p != null) {
            settle(o.forkId(), p, o);
        } else if (o.external()) {
            earlyOutcomes.computeIfAbsent(o.forkId(), k -> new ArrayList<>()).add(o);
        }
        return this;
    }

    private void settle(long forkId, PendingFork p, CloneSource.Outcome o) {
        if (!p.outstanding.remove(o.index())) {
            return;
        }
        if (o.cloneVm() != null) {
            p.children.add(o.cloneVm());
        } else {
            p.errors.add(io.vmfork.vmm.hypercall.Hypercalls.statusName(CloneSource.statusOf(o.code())) + " (copy "
                    + o.index() + " on host " + o.targetHostId() + ": " + o.reason() + ")");
        }
        if (p.outstanding.isEmpty()) {
            pendingForks.remove(forkId);
            p.command.replyTo().tell(new Forked(p.command.vmId(), p.children, p.errors));
        }
    }

    private Behavior<Command> onTransferBound(TransferBound m) {
        if (m.failure() != null) {
            getContext().getLog().error("host {}: the clone transfer server could not bind {}:{}: {}",
                    settings.hostId(), settings.transfer().host(), settings.transfer().port(),
                    m.failure().toString());
            return this;
        }
        transferServer = m.server();
        getContext().getLog().info("host {} receives clone capsules at {}", settings.hostId(),
                transferServer.address());
        com.typesafe.config.Config config = getContext().getSystem().settings().config();
        boolean forks = config.getBoolean("vmfork.node.fork-warm-up");
        boolean capsules = config.getBoolean("vmfork.transfer.warm-up");
        if (forks || capsules) {
            blocking.execute(() -> {
                if (forks) {
                    ForkWarmup.run(vmm);
                }
                if (capsules) {
                    CapsuleWarmup.run(vmm);
                }
            });
        }
        return this;
    }

    private Behavior<Command> onRequest(Request m) {
        Entry e = live(m.vmId(), m.replyTo());
        if (e == null) {
            return this;
        }
        byte[] payload = m.payload();
        VirtualMachine vm = e.vm;
        // Requests to one VM reach its channel in the order they came (the guest answers in
        // that order), one after the other on the blocking dispatcher.
        CompletableFuture<CompletableFuture<byte[]>> queued = e.requests.handleAsync((x, y) -> {
            if (vm.channel().isClosed()) {
                throw new VmEndedException(vm.exit() != null ? vm.exit() : VmExit.stopped("the VM is ending"));
            }
            return vm.channel().request(payload);
        }, blocking);
        e.requests = queued.handle((x, y) -> null);
        getContext().pipeToSelf(queued.thenCompose(reply -> reply.orTimeout(settings.askTimeout().toMillis(),
                        java.util.concurrent.TimeUnit.MILLISECONDS)),
                (reply, failure) -> new RequestDone(m.vmId(), m.replyTo(), reply, unwrap(failure)));
        return this;
    }

    private Behavior<Command> onRequestDone(RequestDone m) {
        m.replyTo().tell(m.failure() == null ? new Response(m.vmId(), m.reply()) : failureOf(m.vmId(), m.failure()));
        return this;
    }

    private Behavior<Command> onStop(Stop m) {
        Entry e = vms.get(m.vmId());
        if (e == null) {
            m.replyTo().tell(unknown(m.vmId()));
            return this;
        }
        runBlocking(() -> e.vm.stop(), (exit, failure) -> new StopDone(m.vmId(), m.replyTo(), exit, failure));
        return this;
    }

    private Behavior<Command> onStopDone(StopDone m) {
        m.replyTo().tell(m.failure() == null ? new Stopped(m.vmId(), m.exit().reason())
                : failureOf(m.vmId(), m.failure()));
        return this;
    }

    private Behavior<Command> onListVms(ListVms m) {
        List<VmInfo> list = new ArrayList<>();
        for (Entry e : vms.values()) {
            list.add(info(e));
        }
        m.replyTo().tell(new VmList(settings.hostId(), list));
        return this;
    }

    private Behavior<Command> onSubscribe(Subscribe m) {
        if (!subscribers.contains(m.subscriber())) {
            String refused = subscriberRefusal(m.subscriber());
            if (refused != null) {
                getContext().getLog().warn("host {}: refusing the lifecycle subscriber {}: {}", settings.hostId(),
                        m.subscriber().path(), refused);
                return this;
            }
            subscribers.add(m.subscriber());
            getContext().watchWith(m.subscriber(), new SubscriberGone(m.subscriber()));
        }
        for (Entry e : vms.values()) {
            VmInfo info = info(e);
            m.subscriber().tell(new VmEvent(VmEvent.Kind.KNOWN, info.vmId(), settings.hostId(), info, -1, ""));
        }
        return this;
    }

    private Behavior<Command> onSubscribeConsole(SubscribeConsole m) {
        Entry e = live(m.vmId(), m.replyTo());
        if (e == null) {
            return this;
        }
        if (!e.console.contains(m.subscriber())) {
            String refused = subscriberRefusal(m.subscriber());
            if (refused != null) {
                getContext().getLog().warn("host {}: refusing the console subscriber {} of VM {}: {}",
                        settings.hostId(), m.subscriber().path(), m.vmId(), refused);
                m.replyTo().tell(new Failure(ErrorCode.INVALID, "host " + settings.hostId()
                        + " refuses the console subscriber: " + refused));
                return this;
            }
            e.console.add(m.subscriber());
            getContext().watchWith(m.subscriber(), new ConsoleSubscriberGone(m.subscriber()));
        }
        m.replyTo().tell(new ConsoleSubscribed(m.vmId(),
                e.vm.console().text().getBytes(java.nio.charset.StandardCharsets.UTF_8)));
        return this;
    }

    // ---- the VMM's events ----

    private Behavior<Command> onVmEvent(VmEventMessage m) {
        if (m instanceof VmForked f) {
            // The child is known from now on; it was admitted by HostCopyPlacement.
            VirtualMachine child = f.child();
            Entry parent = vms.get(f.parent().id());
            long memory = parent != null ? parent.memory : child.memory().size();
            Entry ce = new Entry(child, VmOrigin.CHILD, memory, child.vcpuCount(), true);
            vms.put(child.id(), ce);
            VmInfo info = info(ce);
            publish(new VmEvent(VmEvent.Kind.FORKED, child.id(), settings.hostId(), info, -1, ""));
            replayEarly(child.id());
            return this;
        }
        Entry e = vms.get(m.vmId());
        if (e == null) {
            early.computeIfAbsent(m.vmId(), k -> new ArrayList<>()).add(m);
            return this;
        }
        if (m instanceof VmReady) {
            e.ready = true;
            publish(new VmEvent(VmEvent.Kind.READY, m.vmId(), settings.hostId(), null, -1, ""));
        } else if (m instanceof ConsoleBytes c) {
            for (ActorRef<ConsoleOutput> s : e.console) {
                s.tell(new ConsoleOutput(c.vmId(), c.bytes()));
            }
        } else if (m instanceof VmEnded end) {
            vms.remove(m.vmId());
            if (e.admittedHere) {
                ledger.release(e.memory, e.vcpus);
            }
            copyPlacement.parentEnded(m.vmId(), e.memory, e.vcpus);
            cloneSource.parentEnded(m.vmId());
            reporter.tell(LoadReporter.ReportNow.INSTANCE);
            VmExit x = end.exit();
            VmEvent.Kind kind = switch (x.kind()) {
                case EXITED -> VmEvent.Kind.EXITED;
                case CRASHED -> VmEvent.Kind.CRASHED;
                case STOPPED -> VmEvent.Kind.STOPPED;
            };
            publish(new VmEvent(kind, m.vmId(), settings.hostId(), null, x.exitCode(), x.reason()));
        }
        return this;
    }

    private void replayEarly(long vmId) {
        List<VmEventMessage> pending = early.remove(vmId);
        if (pending != null) {
            for (VmEventMessage p : pending) {
                onVmEvent(p);
            }
        }
    }

    /**
     * The fence. The other side of a partition decides about as soon (its own
     * {@code stable-after}; it may even have removed this node a second or two before) and
     * tells applications this host's VMs are LOST a removal margin later, so nothing here
     * waits for the coordinated shutdown that follows (which stops the VMs only when the
     * actor system terminates, after the cluster's own phases): every VM is stopped now, and
     * incoming transfers are aborted so their senders fail at once.
     */
    private Behavior<Command> onSelfDowned() {
        if (fenced != null) {
            return this;
        }
        fenced = "host " + settings.hostId() + " (" + settings.hostName() + ") was downed by the cluster";
        int running = vms.size();
        getContext().getLog().warn("vmfork: this node was downed by the cluster: stopping its {} VMs now and"
                + " taking no more work; the node shuts down next", running);
        if (transferServer != null) {
            transferServer.close();
            transferServer = null;
        }
        cloneTarget.expireAll();
        long start = System.nanoTime();
        getContext().pipeToSelf(CompletableFuture.runAsync(vmm::close, blocking),
                (ok, f) -> new Fenced(running, System.nanoTime() - start, unwrap(f)));
        return this;
    }

    private Behavior<Command> onFenced(Fenced m) {
        if (m.failure() != null) {
            getContext().getLog().error("vmfork: this downed node could not stop its VMs", m.failure());
        } else {
            getContext().getLog().warn("vmfork: this downed node stopped its {} VMs in {} ms", m.vms(),
                    m.nanos() / 1_000_000);
        }
        return this;
    }

    private Behavior<Command> onPostStop() {
        // The actor system is terminating: no more transfers in or out, then stop every VM
        // and release the VMM.
        if (transferServer != null) {
            transferServer.close();
        }
        cloneTarget.expireAll();
        cloneSource.close();
        imageCache.close();
        vmm.close();
        return this;
    }

    // ---- helpers ----

    /**
     * Why a new subscriber may not be added, or null: its address is not this node's nor a
     * member's of the cluster (a reference may name any actor anywhere), or the host already
     * keeps as many subscriptions as {@link SubscriberLimits} allow, in all or from its member.
     */
    private String subscriberRefusal(ActorRef<?> subscriber) {
        Address at = memberOf(subscriber);
        if (at.hasGlobalScope() && !isMember(at)) {
            return "its address " + at + " is not a member of the cluster";
        }
        int all = subscribers.size();
        int fromIt = 0;
        for (ActorRef<VmEvent> s : subscribers) {
            fromIt += memberOf(s).equals(at) ? 1 : 0;
        }
        for (Entry e : vms.values()) {
            all += e.console.size();
            for (ActorRef<ConsoleOutput> s : e.console) {
                fromIt += memberOf(s).equals(at) ? 1 : 0;
            }
        }
        if (all >= settings.subscribers().total()) {
            return "this host already keeps " + all + " subscriptions (vmfork.node.subscribers.max)";
        }
        if (fromIt >= settings.subscribers().perMember()) {
            return "this host already keeps " + fromIt + " subscriptions of " + at
                    + " (vmfork.node.subscribers.max-per-member)";
        }
        return null;
    }

    /** The address of the member {@code ref} lives on; this node's own for a local one. */
    private Address memberOf(ActorRef<?> ref) {
        Address a = ref.path().address();
        return a.hasGlobalScope() ? a : getContext().getSystem().address();
    }

    private boolean isMember(Address a) {
        if (a.equals(getContext().getSystem().address())) {
            return true;
        }
        for (Member m : Cluster.get(getContext().getSystem()).state().getMembers()) {
            if (m.address().equals(a) && (m.status() == MemberStatus.up() || m.status() == MemberStatus.weaklyUp()
                    || m.status() == MemberStatus.joining() || m.status() == MemberStatus.leaving())) {
                return true;
            }
        }
        return false;
    }

    private void publish(VmEvent event) {
        for (ActorRef<VmEvent> s : subscribers) {
            s.tell(event);
        }
    }

    /** The entry of a VM that is alive here, or null after answering the caller why not. */
    private Entry live(long vmId, ActorRef<Reply> replyTo) {
        Entry e = vms.get(vmId);
        if (e == null) {
            replyTo.tell(unknown(vmId));
            return null;
        }
        if (e.vm.state().isEnded()) {
            replyTo.tell(new Failure(ErrorCode.VM_ENDED, "VM " + vmId + " has ended: " + e.vm.exit()));
            return null;
        }
        return e;
    }

    private Failure unknown(long vmId) {
        return new Failure(ErrorCode.UNKNOWN_VM, "no VM " + vmId + " on host " + settings.hostId()
                + " (it never existed or has ended)");
    }

    private Failure failureOf(long vmId, Throwable f) {
        if (f instanceof VmEndedException) {
            return new Failure(ErrorCode.VM_ENDED, "VM " + vmId + " ended: " + ((VmEndedException) f).exit());
        }
        if (f instanceof TimeoutException) {
            return new Failure(ErrorCode.TIMEOUT, "VM " + vmId + " did not answer within " + settings.askTimeout());
        }
        if (f instanceof MessageChannel.ChannelException || f instanceof IllegalArgumentException) {
            return new Failure(ErrorCode.INVALID, "VM " + vmId + ": " + f.getMessage());
        }
        return new Failure(ErrorCode.LAUNCH_FAILED, "VM " + vmId + ": " + f);
    }

    /** A clone just started on this host, as VmInfo describes it. */
    static VmInfo cloneInfo(VirtualMachine vm, long memory) {
        var id = vm.identity();
        return new VmInfo(id.vmId(), id.hostId(), vm.state().name(), id.vmType(), id.parentId(), id.forkGeneration(),
                VmOrigin.CLONE, vm.imageName() == null ? "" : vm.imageName(), memory, vm.ready().isDone());
    }

    private VmInfo info(Entry e) {
        var id = e.vm.identity();
        return new VmInfo(id.vmId(), id.hostId(), e.vm.state().name(), id.vmType(), id.parentId(),
                id.forkGeneration(), e.origin, e.vm.imageName() == null ? "" : e.vm.imageName(), e.memory, e.ready);
    }

    private <T> void runBlocking(Supplier<T> call, java.util.function.BiFunction<T, Throwable, Command> result) {
        getContext().pipeToSelf(CompletableFuture.supplyAsync(call, blocking), (v, f) -> result.apply(v, unwrap(f)));
    }

    private static Throwable unwrap(Throwable f) {
        while (f instanceof CompletionException && f.getCause() != null) {
            f = f.getCause();
        }
        return f;
    }

    /** A host's use against its capacity, for error messages. */
    private record HostLoadText(String text) {
        static HostLoadText of(AdmissionLedger ledger, Settings settings) {
            var r = ledger.report(settings.hostId(), settings.hostName(), "", "");
            return new HostLoadText(r.vmCount() + " of " + r.capacity().vmSlots() + " VM slots, "
                    + (r.memoryUsed() >> 20) + " of " + (r.capacity().guestMemory() >> 20) + " MiB, "
                    + r.vcpusUsed() + " of " + r.capacity().vcpus() + " vCPUs in use");
        }

        @Override
        public String toString() {
            return text;
        }
    }
}
