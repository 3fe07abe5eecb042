package io.vmfork.cluster.web;

import static org.apache.pekko.http.javadsl.server.Directives.complete;
import static org.apache.pekko.http.javadsl.server.Directives.completeOK;
import static org.apache.pekko.http.javadsl.server.Directives.concat;
import static org.apache.pekko.http.javadsl.server.Directives.extractRequest;
import static org.apache.pekko.http.javadsl.server.Directives.get;
import static org.apache.pekko.http.javadsl.server.Directives.getFromResource;
import static org.apache.pekko.http.javadsl.server.Directives.getFromResourceDirectory;
import static org.apache.pekko.http.javadsl.server.Directives.path;
import static org.apache.pekko.http.javadsl.server.Directives.pathPrefix;
import static org.apache.pekko.http.javadsl.server.Directives.pathSingleSlash;

import io.vmfork.cluster.api.VmCluster;
import java.time.Duration;
import java.util.UUID;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.pekko.Done;
import org.apache.pekko.NotUsed;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.Props;
import org.apache.pekko.http.javadsl.marshalling.sse.EventStreamMarshalling;
import org.apache.pekko.http.javadsl.model.AttributeKeys;
import org.apache.pekko.http.javadsl.model.ContentTypes;
import org.apache.pekko.http.javadsl.model.HttpRequest;
import org.apache.pekko.http.javadsl.model.RemoteAddress;
import org.apache.pekko.http.javadsl.model.StatusCodes;
import org.apache.pekko.http.javadsl.model.sse.ServerSentEvent;
import org.apache.pekko.http.javadsl.server.Route;
import org.apache.pekko.stream.javadsl.Source;

/**
 * The cluster page, served by every node on its status port (see
 * {@link io.vmfork.cluster.node.NodeStatusServer}):
 *
 * <ul>
 * <li>{@code GET /}: the page ({@code index.html}), and {@code GET /page/...} its script and
 *     style sheet, resources of this jar under {@code io/vmfork/cluster/web/} (no CDN, no
 *     build step);</li>
 * <li>{@code GET /events}: its live feed, server-sent events ({@code text/event-stream}),
 *     each {@code data} one JSON object:
 * <pre>
 * event: snapshot   on connect: { "self_host_id", "time", "hosts": [host], "members": [member],
 *                                 "vms": [vm] } (the VMs this node's view knows of)
 * event: hosts      a host's load or the membership changed (at most one per
 *                   vmfork.node.status.page.hosts-interval): { "hosts": [host], "members": [member] }
 * event: vm         a lifecycle event: { "kind": LAUNCHED | READY | FORKED | CLONE_FAILED | EXITED |
 *                   CRASHED | STOPPED | LOST | KNOWN (a VM of a host the node's view listed after
 *                   the snapshot), "vm_id", "host_id", "vm": vm or null, "exit_code", "detail",
 *                   "time" }
 *
 * host   = { "host_id", "host_name", "address", "platform" ("kvm" or "process", where the
 *            host's guests run; "" from a node of an older version), "self", "status" (up,
 *            joining, leaving, ..., removed), "reachable", "vms", "memory_used", "vcpus_used",
 *            "capacity": { "guest_memory", "vm_slots", "vcpus" } }   (memory in bytes)
 * member = { "address", "status", "reachable" }   a member that reports no load (a client)
 * vm     = { "id" (hex), "host_id", "state", "vm_type", "parent" (hex or null),
 *            "fork_generation", "origin": booted | child | clone, "image", "memory", "ready" }
 * </pre>
 *     plus pekko-http's SSE heartbeat (no event type: the page ignores it) after
 *     {@code heartbeat} of silence.</li>
 * </ul>
 *
 * <p>Bounds: each feed is a {@link PageFeed} actor that exists only while its browser is
 * connected (a node without a browser does nothing for the page); its queue holds
 * {@code buffer} messages, and a browser that falls further behind has its feed closed and
 * reconnects for a new snapshot; at most {@code max-browsers} feeds at once, more are
 * answered 503, and at most {@code max-browsers-per-client} to one client address (the
 * connection's peer, never a header), more answered 429 ({@link FeedPermits}: taken
 * atomically when the request comes, given back when the feed's response ends however it
 * ends, or after {@link #UNCLAIMED} if its response never started).
 */
public final class ClusterPage {
    private static final String WEB = "io/vmfork/cluster/web";

    private final ActorSystem<?> system;
    private final VmCluster cluster;
    private final long selfHostId;
    private final PageSettings settings;
    private final FeedPermits permits;

    /** A feed granted whose response has not started by then is given back. */
    static final Duration UNCLAIMED = Duration.ofSeconds(30);

    private ClusterPage(ActorSystem<?> system, VmCluster cluster, long selfHostId, PageSettings settings) {
        this.system = system;
        this.cluster = cluster;
        this.selfHostId = selfHostId;
        this.settings = settings;
        this.permits = new FeedPermits(settings.maxBrowsers(), settings.maxPerClient());
    }

    /** The page of the cluster that {@code cluster} (this node's API, on host {@code selfHostId}) sees. */
    public static ClusterPage create(ActorSystem<?> system, VmCluster cluster, long selfHostId,
                                     PageSettings settings) {
        if (cluster == null || settings == null) {
            throw new IllegalArgumentException("the cluster page needs the node's API and its settings");
        }
        return new ClusterPage(system, cluster, selfHostId, settings);
    }

    /** Feeds open now (browsers connected). */
    public int openFeeds() {
        return permits.inUse();
    }

    /** {@code GET /}, {@code GET /page/*} and {@code GET /events}. */
    public Route routes() {
        return concat(
                pathSingleSlash(() -> get(() -> getFromResource(WEB + "/index.html", ContentTypes.TEXT_HTML_UTF8))),
                pathPrefix("page", () -> get(() -> getFromResourceDirectory(WEB))),
                path("events", () -> get(() -> extractRequest(this::events))));
    }

    private Route events(HttpRequest request) {
        // The connection's peer (NodeStatusServer turns on the attribute); without it all
        // clients share one count, which errs on the side of refusing.
        Object client = request.getAttribute(AttributeKeys.remoteAddress)
                .flatMap(RemoteAddress::getAddress).<Object>map(a -> a).orElse("unknown");
        return switch (permits.acquire(client)) {
            case NODE_FULL -> complete(StatusCodes.SERVICE_UNAVAILABLE, "this node already feeds "
                    + settings.maxBrowsers() + " browsers (vmfork.node.status.page.max-browsers)");
            case CLIENT_FULL -> complete(StatusCodes.TOO_MANY_REQUESTS, "this client already has "
                    + settings.maxPerClient() + " feeds (vmfork.node.status.page.max-browsers-per-client)");
            case GRANTED -> completeOK(feed(new Permit(client)), EventStreamMarshalling.toEventStream());
        };
    }

    /** A granted feed: given back once, when its response ends or if it never starts. */
    private final class Permit {
        private static final int PENDING = 0;
        private static final int RUNNING = 1;
        private static final int RELEASED = 2;
        private final Object client;
        private final AtomicInteger state = new AtomicInteger(PENDING);

        Permit(Object client) {
            this.client = client;
            system.scheduler().scheduleOnce(UNCLAIMED, () -> {
                if (state.compareAndSet(PENDING, RELEASED)) {
                    permits.release(client);
                }
            }, system.executionContext());
        }

        boolean start() {
            return state.compareAndSet(PENDING, RUNNING);
        }

        void release() {
            if (state.getAndSet(RELEASED) != RELEASED) {
                permits.release(client);
            }
        }
    }

    /** One browser's feed: its actor starts when the response starts, and stops with it. */
    private Source<ServerSentEvent, NotUsed> feed(Permit permit) {
        return Source.<ServerSentEvent>queue(settings.buffer())
                .mapMaterializedValue(queue -> {
                    if (!permit.start()) {
                        queue.fail(new IllegalStateException("the feed's response started after "
                                + UNCLAIMED + ": its place was given back"));
                        return null;
                    }
                    return system.systemActorOf(PageFeed.create(cluster, selfHostId, settings, queue),
                            "cluster-page-feed-" + UUID.randomUUID(), Props.empty());
                })
                .watchTermination((ActorRef<PageFeed.Command> actor, CompletionStage<Done> done) -> {
                    done.whenComplete((d, e) -> {
                        permit.release();
                        if (actor != null) {
                            actor.tell(PageFeed.StreamDone.INSTANCE);
                        }
                    });
                    return NotUsed.getInstance();
                })
                .keepAlive(settings.heartbeat(), ServerSentEvent::heartbeat);
    }
}
