package io.vmfork.cluster.api;

import io.vmfork.cluster.host.HostActor;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import org.apache.pekko.actor.NoSerializationVerificationNeeded;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.javadsl.AbstractBehavior;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.javadsl.Receive;
import org.apache.pekko.actor.typed.receptionist.Receptionist;

/**
 * This node's view of every VM in the cluster, for lifecycle subscribers. It follows the
 * Receptionist's listing of {@link HostActor#ALL_HOSTS}: each host that appears is asked
 * for its VMs ({@link HostActor.ListVms}, which names its host id) and subscribed to
 * ({@link HostActor.Subscribe}); its events keep the view current and go on to this
 * node's subscribers. A host that leaves the listing (its node was removed from the
 * cluster: downed after it died or was cut off, or stopped) takes its VMs with it:
 * subscribers get a {@link VmEvent.Kind#LOST} event for each VM the view had on it, a
 * removal margin after the host left ({@link #removalMargin}), so that a node on the losing
 * side of a partition, which stops its VMs when it downs itself, has stopped them by then.
 * An unreachable host stays listed: its VMs are not lost while it may come back. A VM the view learns of
 * from a host's list (a host that appeared after the subscription) reaches subscribers as
 * {@link VmEvent.Kind#KNOWN}, and so does each VM the view knows already when a
 * subscriber is added (whenever the view learnt of it, the subscriber learns of it).
 * {@link GetVms} answers with the view's VMs at once. Local to its node.
 */
public final class ClusterView extends AbstractBehavior<ClusterView.Command> {
    /** What the view does. */
    public interface Command extends NoSerializationVerificationNeeded {
    }

    /** Lifecycle events of every VM in the cluster go to {@code subscriber} until it stops. */
    public record AddSubscriber(ActorRef<VmEvent> subscriber) implements Command {
    }

    /**
     * Every VM the view knows of now, sorted by id, to {@code replyTo}: what the hosts
     * listed and their events since (a VM's {@code ready} follows its READY event). Sent
     * right after an {@link AddSubscriber} from the same thread, the list and the events
     * that follow it leave nothing out.
     */
    public record GetVms(ActorRef<List<VmInfo>> replyTo) implements Command {
    }

    private record HostsChanged(Receptionist.Listing listing) implements Command {
    }

    private record HostListed(ActorRef<HostActor.Command> host, HostActor.Reply reply, Throwable failure)
            implements Command {
    }

    private record HostEvent(VmEvent event) implements Command {
    }

    private record SubscriberGone(ActorRef<VmEvent> subscriber) implements Command {
    }

    /** The removal margin after {@code hostId} left the listing: its VMs {@code vms} are lost. */
    private record HostLost(long hostId, Map<Long, VmInfo> vms) implements Command {
    }

    /** A view whose asks to hosts wait at most {@code askTimeout}. */
    public static Behavior<Command> create(Duration askTimeout) {
        return Behaviors.setup(ctx -> new ClusterView(ctx, askTimeout));
    }

    private final Duration askTimeout;
    private final ActorRef<VmEvent> eventAdapter;
    private final Map<ActorRef<HostActor.Command>, Long> hosts = new HashMap<>();
    private final Set<ActorRef<HostActor.Command>> listed = new HashSet<>();
    private final Map<Long, Map<Long, VmInfo>> vmsByHost = new HashMap<>();
    private final Set<ActorRef<VmEvent>> subscribers = new HashSet<>();
    /** The VMs of hosts that left the listing, until their removal margin has passed, by host id. */
    private final Map<Long, Map<Long, VmInfo>> departing = new HashMap<>();
    private final Duration removalMargin;

    private ClusterView(ActorContext<Command> ctx, Duration askTimeout) {
        super(ctx);
        this.askTimeout = askTimeout;
        this.removalMargin = removalMargin(ctx.getSystem().settings().config());
        this.eventAdapter = ctx.messageAdapter(VmEvent.class, HostEvent::new);
        ActorRef<Receptionist.Listing> listingAdapter = ctx.messageAdapter(Receptionist.Listing.class,
                HostsChanged::new);
        ctx.getSystem().receptionist().tell(Receptionist.subscribe(HostActor.ALL_HOSTS, listingAdapter));
    }

    @Override
    public Receive<Command> createReceive() {
        return newReceiveBuilder()
                .onMessage(AddSubscriber.class, this::onAddSubscriber)
                .onMessage(GetVms.class, this::onGetVms)
                .onMessage(HostsChanged.class, this::onHostsChanged)
                .onMessage(HostListed.class, this::onHostListed)
                .onMessage(HostEvent.class, this::onHostEvent)
                .onMessage(HostLost.class, this::onHostLost)
                .onMessage(SubscriberGone.class, m -> {
                    subscribers.remove(m.subscriber());
                    return this;
                })
                .build();
    }

    private Behavior<Command> onAddSubscriber(AddSubscriber m) {
        if (subscribers.add(m.subscriber())) {
            getContext().watchWith(m.subscriber(), new SubscriberGone(m.subscriber()));
            // What the view learnt before the subscriber came (a host listed between the
            // view's start and this message) is news to it too.
            vmsByHost.forEach((hostId, vms) -> vms.values().forEach(v ->
                    m.subscriber().tell(new VmEvent(VmEvent.Kind.KNOWN, v.vmId(), hostId, v, -1, ""))));
        }
        return this;
    }

    private Behavior<Command> onGetVms(GetVms m) {
        List<VmInfo> all = new ArrayList<>();
        vmsByHost.values().forEach(vms -> all.addAll(vms.values()));
        departing.values().forEach(vms -> all.addAll(vms.values()));
        all.sort(Comparator.comparingLong(VmInfo::vmId));
        m.replyTo().tell(List.copyOf(all));
        return this;
    }

    private Behavior<Command> onHostsChanged(HostsChanged m) {
        // All instances, unreachable ones too: a host is gone only once its member is removed.
        Set<ActorRef<HostActor.Command>> now = m.listing().getAllServiceInstances(HostActor.ALL_HOSTS);
        for (ActorRef<HostActor.Command> h : now) {
            if (listed.add(h)) {
                askHost(h);
            }
        }
        for (ActorRef<HostActor.Command> h : new HashSet<>(listed)) {
            if (!now.contains(h)) {
                listed.remove(h);
                Long hostId = hosts.remove(h);
                if (hostId != null) {
                    Map<Long, VmInfo> lost = vmsByHost.remove(hostId);
                    if (lost != null && !lost.isEmpty()) {
                        departing.put(hostId, lost);
                        getContext().scheduleOnce(removalMargin, getContext().getSelf(), new HostLost(hostId, lost));
                    }
                }
            }
        }
        return this;
    }

    private Behavior<Command> onHostLost(HostLost m) {
        departing.remove(m.hostId(), m.vms());
        for (VmInfo vm : m.vms().values()) {
            publish(new VmEvent(VmEvent.Kind.LOST, vm.vmId(), m.hostId(), vm, -1,
                    "host " + m.hostId() + " left the cluster"));
        }
        return this;
    }

    /**
     * How long after a member's removal its VMs count as lost. Pekko's
     * {@code down-removal-margin} when set. Else, under the split brain resolver, its
     * {@code stable-after} plus the failure detector's {@code acceptable-heartbeat-pause}:
     * the losing side downs itself (and its HostActor stops its VMs) {@code stable-after}
     * after its own view of the partition settles, and it may see the partition later than
     * the winning side by up to about that pause (each side's detector judges its peers'
     * heartbeat histories; NetworkFaultTest measured the lone side 2 s behind, its last peer
     * marked unreachable 2 s after the first). Pekko's sharding waits {@code stable-after}
     * alone before it starts a removed member's entities elsewhere. Without a downing
     * provider, none.
     */
    static Duration removalMargin(com.typesafe.config.Config c) {
        String margin = "pekko.cluster.down-removal-margin";
        if (c.hasPath(margin) && !c.getString(margin).equals("off")) {
            return c.getDuration(margin);
        }
        String sbr = "pekko.cluster.split-brain-resolver.stable-after";
        String pause = "pekko.cluster.failure-detector.acceptable-heartbeat-pause";
        if (c.hasPath("pekko.cluster.downing-provider-class") && c.getString("pekko.cluster.downing-provider-class")
                .endsWith("SplitBrainResolverProvider") && c.hasPath(sbr)) {
            return c.getDuration(sbr).plus(c.hasPath(pause) ? c.getDuration(pause) : Duration.ZERO);
        }
        return Duration.ZERO;
    }

    private void askHost(ActorRef<HostActor.Command> h) {
        getContext().ask(HostActor.Reply.class, h, askTimeout, HostActor.ListVms::new,
                (reply, failure) -> new HostListed(h, reply, failure));
    }

    private Behavior<Command> onHostListed(HostListed m) {
        if (!listed.contains(m.host())) {
            return this;
        }
        if (!(m.reply() instanceof HostActor.VmList list)) {
            askHost(m.host()); // no answer yet: the host may still be starting; try again
            return this;
        }
        hosts.put(m.host(), list.hostId());
        Map<Long, VmInfo> vms = vmsByHost.computeIfAbsent(list.hostId(), k -> new LinkedHashMap<>());
        for (VmInfo v : list.vms()) {
            if (vms.put(v.vmId(), v) == null) {
                publish(new VmEvent(VmEvent.Kind.KNOWN, v.vmId(), list.hostId(), v, -1, ""));
            }
        }
        m.host().tell(new HostActor.Subscribe(eventAdapter));
        return this;
    }

    private Behavior<Command> onHostEvent(HostEvent m) {
        VmEvent e = m.event();
        Map<Long, VmInfo> vms = vmsByHost.computeIfAbsent(e.hostId(), k -> new LinkedHashMap<>());
        if (e.kind() == VmEvent.Kind.KNOWN) {
            // The host's answer to our subscription: news to subscribers only if the list missed it.
            if (vms.put(e.vmId(), e.vm()) == null) {
                publish(e);
            }
            return this;
        }
        switch (e.kind()) {
            case LAUNCHED, FORKED, KNOWN -> vms.put(e.vmId(), e.vm());
            case EXITED, CRASHED, STOPPED, LOST -> vms.remove(e.vmId());
            case READY -> vms.computeIfPresent(e.vmId(), (id, v) -> new VmInfo(v.vmId(), v.hostId(), v.state(),
                    v.vmType(), v.parentId(), v.forkGeneration(), v.origin(), v.image(), v.memory(), true));
        }
        publish(e);
        return this;
    }

    private void publish(VmEvent e) {
        for (ActorRef<VmEvent> s : subscribers) {
            s.tell(e);
        }
    }
}
