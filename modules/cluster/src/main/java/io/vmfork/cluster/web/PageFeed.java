package io.vmfork.cluster.web;

import com.fasterxml.jackson.databind.node.ObjectNode;
import io.vmfork.cluster.api.VmCluster;
import io.vmfork.cluster.api.VmEvent;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.placement.HostLoad;
import io.vmfork.cluster.placement.LoadReports;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import org.apache.pekko.actor.NoSerializationVerificationNeeded;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.PostStop;
import org.apache.pekko.actor.typed.javadsl.AbstractBehavior;
import org.apache.pekko.actor.typed.javadsl.ActorContext;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.javadsl.Receive;
import org.apache.pekko.actor.typed.javadsl.TimerScheduler;
import org.apache.pekko.cluster.ClusterEvent;
import org.apache.pekko.cluster.ddata.LWWMap;
import org.apache.pekko.cluster.ddata.typed.javadsl.DistributedData;
import org.apache.pekko.cluster.ddata.typed.javadsl.Replicator;
import org.apache.pekko.cluster.typed.Cluster;
import org.apache.pekko.cluster.typed.Subscribe;
import org.apache.pekko.cluster.typed.Unsubscribe;
import org.apache.pekko.http.javadsl.model.sse.ServerSentEvent;
import org.apache.pekko.stream.BoundedSourceQueue;
import org.apache.pekko.stream.QueueOfferResult;

/**
 * One browser's feed of the cluster page: lives as long as its SSE response. It subscribes
 * to the VMs' lifecycle events ({@link VmCluster#subscribe}), to the load reports' DData
 * map and to cluster membership, takes the VMs this node knows of ({@link VmCluster#known}:
 * at once, a dead host that is not yet removed holds nothing up), and offers the browser a
 * {@code snapshot} and then every change to the bounded {@link BoundedSourceQueue} of its
 * response. Events that come before the list are held (as many as the buffer) and sent
 * after the snapshot: applying them again is harmless. Host changes are coalesced into at
 * most one {@code hosts} message per {@link PageSettings#hostsInterval()}. A browser that
 * does not keep up (the queue is full) has its feed failed: the connection closes, the
 * page shows it and reconnects for a new snapshot. A browser that went away is noticed at
 * the latest when the next message or heartbeat cannot be written; nothing runs once the
 * feed has stopped.
 */
final class PageFeed extends AbstractBehavior<PageFeed.Command> {
    /** What the feed does; local messages only. */
    interface Command extends NoSerializationVerificationNeeded {
    }

    /** The browser's response ended (it went away, or its feed was failed). */
    enum StreamDone implements Command {
        INSTANCE
    }

    private enum HostsTick implements Command {
        INSTANCE
    }

    private record Vm(VmEvent event) implements Command {
    }

    private record Listed(List<VmInfo> vms, Throwable failure) implements Command {
    }

    private record Loads(Replicator.SubscribeResponse<LWWMap<Long, HostLoad>> response) implements Command {
    }

    private record LoadsRead(Replicator.GetResponse<LWWMap<Long, HostLoad>> response) implements Command {
    }

    private record Members(ClusterEvent.ClusterDomainEvent event) implements Command {
    }

    static Behavior<Command> create(VmCluster cluster, long selfHostId, PageSettings settings,
                                    BoundedSourceQueue<ServerSentEvent> out) {
        return Behaviors.setup(ctx -> Behaviors.withTimers(timers ->
                new PageFeed(ctx, timers, cluster, selfHostId, settings, out)));
    }

    private final long selfHostId;
    private final PageSettings settings;
    private final BoundedSourceQueue<ServerSentEvent> out;
    private final ActorRef<Replicator.SubscribeResponse<LWWMap<Long, HostLoad>>> loadsAdapter;
    private final ActorRef<ClusterEvent.ClusterDomainEvent> membersAdapter;
    private final List<VmEvent> early = new ArrayList<>();
    private Map<Long, HostLoad> reports = Map.of();
    private boolean snapshotSent;
    private boolean hostsChanged;
    private String hostsSent = "";
    private boolean closed;

    private PageFeed(ActorContext<Command> ctx, TimerScheduler<Command> timers, VmCluster cluster, long selfHostId,
                     PageSettings settings, BoundedSourceQueue<ServerSentEvent> out) {
        super(ctx);
        this.selfHostId = selfHostId;
        this.settings = settings;
        this.out = out;
        // Subscribe before listing, so that nothing falls between the list and the events.
        cluster.subscribe(ctx.messageAdapter(VmEvent.class, Vm::new));
        ctx.pipeToSelf(cluster.known(), Listed::new);
        ActorRef<Replicator.Command> replicator = DistributedData.get(ctx.getSystem()).replicator();
        // (the adapters' classes are raw: Replicator's replies are generic in the data type)
        this.loadsAdapter = cast(ctx.messageAdapter(Replicator.SubscribeResponse.class, r -> new Loads(cast(r))));
        replicator.tell(new Replicator.Subscribe<>(LoadReports.KEY, loadsAdapter));
        ActorRef<Replicator.GetResponse<LWWMap<Long, HostLoad>>> getAdapter =
                cast(ctx.messageAdapter(Replicator.GetResponse.class, r -> new LoadsRead(cast(r))));
        replicator.tell(new Replicator.Get<>(LoadReports.KEY, Replicator.readLocal(), getAdapter));
        this.membersAdapter = ctx.messageAdapter(ClusterEvent.ClusterDomainEvent.class, Members::new);
        Cluster.get(ctx.getSystem()).subscriptions().tell(Subscribe.create(membersAdapter.narrow(),
                ClusterEvent.MemberEvent.class));
        Cluster.get(ctx.getSystem()).subscriptions().tell(Subscribe.create(membersAdapter.narrow(),
                ClusterEvent.ReachabilityEvent.class));
        timers.startTimerWithFixedDelay(HostsTick.INSTANCE, settings.hostsInterval());
    }

    @SuppressWarnings("unchecked")
    private static <T> T cast(Object o) {
        return (T) o;
    }

    @Override
    public Receive<Command> createReceive() {
        return newReceiveBuilder()
                .onMessage(Vm.class, this::onVm)
                .onMessage(Listed.class, this::onListed)
                .onMessage(Loads.class, m -> {
                    if (m.response() instanceof Replicator.Changed<LWWMap<Long, HostLoad>> c) {
                        reports = Map.copyOf(c.get(LoadReports.KEY).getEntries());
                        hostsChanged = true;
                    }
                    return this;
                })
                .onMessage(LoadsRead.class, m -> {
                    if (m.response() instanceof Replicator.GetSuccess<LWWMap<Long, HostLoad>> ok && reports.isEmpty()) {
                        reports = Map.copyOf(ok.get(LoadReports.KEY).getEntries());
                        hostsChanged = true;
                    }
                    return this;
                })
                .onMessage(Members.class, m -> {
                    hostsChanged = true;
                    return this;
                })
                .onMessage(HostsTick.class, m -> onHostsTick())
                .onMessage(StreamDone.class, m -> {
                    closed = true;
                    return Behaviors.stopped();
                })
                .onSignal(PostStop.class, s -> onStop())
                .build();
    }

    private Behavior<Command> onVmEvent(VmEvent e) {
        if (!snapshotSent) {
            if (early.size() >= settings.buffer()) {
                return overflow("more than " + settings.buffer() + " events before the VM list came");
            }
            early.add(e);
            return this;
        }
        return send("vm", PageJson.event(e, System.currentTimeMillis()));
    }

    private Behavior<Command> onVm(Vm m) {
        return onVmEvent(m.event());
    }

    private Behavior<Command> onListed(Listed m) {
        if (m.failure() != null) {
            // The page shows the feed lost and reconnects for another try.
            out.fail(new IllegalStateException("cannot read the cluster's VMs: " + m.failure()));
            closed = true;
            return Behaviors.stopped();
        }
        ObjectNode hosts = PageJson.object();
        PageJson.putHosts(hosts, reports, Cluster.get(getContext().getSystem()).state(), selfHostId);
        hostsSent = PageJson.write(hosts);
        ObjectNode snapshot = PageJson.object();
        snapshot.put("self_host_id", selfHostId);
        snapshot.setAll(hosts);
        PageJson.putVms(snapshot, m.vms());
        snapshot.put("time", System.currentTimeMillis());
        hostsChanged = false;
        snapshotSent = true;
        Behavior<Command> next = send("snapshot", snapshot);
        for (VmEvent e : early) {
            if (next != this) {
                return next;
            }
            next = onVmEvent(e);
        }
        early.clear();
        return next;
    }

    private Behavior<Command> onHostsTick() {
        if (!snapshotSent || !hostsChanged) {
            return this;
        }
        hostsChanged = false;
        ObjectNode hosts = PageJson.object();
        PageJson.putHosts(hosts, reports, Cluster.get(getContext().getSystem()).state(), selfHostId);
        String json = PageJson.write(hosts);
        if (json.equals(hostsSent)) {
            return this; // a new report that changes nothing the page shows (its sequence number)
        }
        hostsSent = json;
        return send("hosts", hosts);
    }

    private Behavior<Command> send(String type, ObjectNode data) {
        QueueOfferResult r = out.offer(ServerSentEvent.create(PageJson.write(data), type));
        if (r == QueueOfferResult.enqueued()) {
            return this;
        }
        if (r == QueueOfferResult.dropped()) {
            return overflow("the browser is " + settings.buffer() + " messages behind");
        }
        closed = true; // the response is gone
        return Behaviors.stopped();
    }

    private Behavior<Command> overflow(String why) {
        getContext().getLog().info("cluster page: dropping a browser's feed ({}); it will resync", why);
        out.fail(new PageFeedOverflow(why));
        closed = true;
        return Behaviors.stopped();
    }

    private Behavior<Command> onStop() {
        DistributedData.get(getContext().getSystem()).replicator()
                .tell(new Replicator.Unsubscribe<>(LoadReports.KEY, loadsAdapter));
        Cluster.get(getContext().getSystem()).subscriptions().tell(new Unsubscribe(membersAdapter));
        if (!closed) {
            out.complete();
        }
        return this;
    }

    /** Why a browser's feed was closed: it fell too far behind. */
    static final class PageFeedOverflow extends RuntimeException {
        PageFeedOverflow(String why) {
            super("cluster page feed dropped: " + why);
        }
    }
}
