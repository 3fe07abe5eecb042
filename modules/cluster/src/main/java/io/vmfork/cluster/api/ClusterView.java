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
 * cluster, downed after it died, or stopped) takes its VMs with it: subscribers get a
 * {@link VmEvent.Kind#LOST} event for each VM the view had on it. A VM the view learns of
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

    private ClusterView(ActorContext<Command> ctx, Duration askTimeout) {
        super(ctx);
        this.askTimeout = askTimeout;
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
        all.sort(Comparator.comparingLong(VmInfo::vmId));
        m.replyTo().tell(List.copyOf(all));
        return this;
    }

    private Behavior<Command> onHostsChanged(HostsChanged m) {
        Set<ActorRef<HostActor.Command>> now = m.listing().getServiceInstances(HostActor.ALL_HOSTS);
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
                    if (lost != null) {
                        for (VmInfo vm : lost.values()) {
                            publish(new VmEvent(VmEvent.Kind.LOST, vm.vmId(), hostId, vm, -1,
                                    "host " + hostId + " left the cluster"));
                        }
                    }
                }
            }
        }
        return this;
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
