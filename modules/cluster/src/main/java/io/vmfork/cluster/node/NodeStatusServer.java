package io.vmfork.cluster.node;

import static org.apache.pekko.http.javadsl.server.Directives.complete;
import static org.apache.pekko.http.javadsl.server.Directives.concat;
import static org.apache.pekko.http.javadsl.server.Directives.extractRequest;
import static org.apache.pekko.http.javadsl.server.Directives.get;
import static org.apache.pekko.http.javadsl.server.Directives.onSuccess;
import static org.apache.pekko.http.javadsl.server.Directives.path;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.vmfork.cluster.placement.AdmissionLedger;
import io.vmfork.cluster.placement.Capacity;
import io.vmfork.cluster.placement.HostLoad;
import io.vmfork.cluster.placement.LoadReports;
import io.vmfork.cluster.security.MemberTls;
import io.vmfork.cluster.web.ClusterPage;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.util.HashMap;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.apache.pekko.cluster.ClusterEvent;
import org.apache.pekko.cluster.Member;
import org.apache.pekko.cluster.ddata.LWWMap;
import org.apache.pekko.cluster.ddata.typed.javadsl.DistributedData;
import org.apache.pekko.cluster.ddata.typed.javadsl.Replicator;
import org.apache.pekko.cluster.typed.Cluster;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLPeerUnverifiedException;
import org.apache.pekko.http.javadsl.ConnectionContext;
import org.apache.pekko.http.javadsl.Http;
import org.apache.pekko.http.javadsl.ServerBuilder;
import org.apache.pekko.http.javadsl.ServerBinding;
import org.apache.pekko.http.javadsl.model.ContentTypes;
import org.apache.pekko.http.javadsl.model.HttpEntities;
import org.apache.pekko.http.javadsl.model.HttpRequest;
import org.apache.pekko.http.javadsl.model.HttpResponse;
import org.apache.pekko.http.javadsl.model.AttributeKeys;
import org.apache.pekko.http.javadsl.model.SslSessionInfo;
import org.apache.pekko.http.javadsl.model.StatusCode;
import org.apache.pekko.http.javadsl.model.StatusCodes;
import org.apache.pekko.http.javadsl.model.headers.Host;
import org.apache.pekko.http.javadsl.model.headers.HttpChallenge;
import org.apache.pekko.http.javadsl.model.headers.WWWAuthenticate;
import org.apache.pekko.http.javadsl.server.Route;
import org.apache.pekko.http.javadsl.settings.ServerSettings;
import org.apache.pekko.management.javadsl.PekkoManagement;

/**
 * A node's status over HTTP, on {@code vmfork.node.status.http-port} at
 * {@code vmfork.node.status.bind} (loopback unless configured otherwise): the cluster page ({@link ClusterPage}: {@code GET /} the
 * page, {@code GET /page/*} its script and style, {@code GET /events} its live feed of
 * server-sent events, whose messages {@link ClusterPage} describes), Pekko Management's
 * routes (among them the cluster's, such as {@code GET /cluster/members}) and the
 * project's own {@code GET /status}, a JSON object that an operator can curl and the
 * multi-JVM tests use as a barrier:
 *
 * <pre>
 * { "host":    { "id", "name", "address", "status", "reachable" },
 *   "load":    this host's load as its admission ledger counts it now
 *              { "vms", "memory_used", "memory_free", "vcpus_used", "vcpus_free", "free_slots",
 *                "capacity": { "guest_memory", "vm_slots", "vcpus" } },
 *   (and in "host": "platform": { "name": "kvm" or "process", "reason" })
 *   "cluster": { "leader", "members": [ { "address", "status", "reachable", "roles",
 *                "host": the member's last replicated load report (with "host_id",
 *                "host_name", "address", "platform" ("kvm" or "process", "" from a node of
 *                an older version), "sequence" and the fields of "load"), or null } ],
 *                "unreported_hosts": reports of hosts that are not members (any more) },
 *   "vms":     this host's VMs, from the {@link StatusSource} (VmforkNode plugs in the
 *              VMM's list: id, state, image, vm_type, parent, fork_generation, made =
 *              booted, child or clone, ready), or "vms_error" when the source failed,
 *   "clones":  what this host's remote clones moved (io.vmfork.cluster.host.CloneStats):
 *              { "capsules_sent", "bytes_sent", "deltas_sent", "copies_failed",
 *                "capsules_received", "bytes_received", "deltas_received", "clones_started",
 *                "transfers_failed", "images_kept", "image_bytes_kept" } }
 * </pre>
 *
 * Memory is in bytes. Unbinds when the node shuts down.
 *
 * <p>Every request first passes {@link #refusal}: its {@code Host} header must name one of
 * {@link StatusSettings#allowedHosts} (else 421: a page of another site that rebinds its
 * name to this address reads nothing), and, with a {@code vmfork.node.status.token}, every
 * path but {@code /ready} and {@code /alive} needs {@code Authorization: Bearer TOKEN}
 * (else 401); with {@code client-certificate = on} a client certificate of the cluster
 * admits it as the token does. With {@code tls = on} the server speaks HTTPS only, with the
 * member's credentials ({@link MemberTls}). Pekko Management's routes are read-only whatever the configuration says
 * ({@link NodeSettings#pekkoConfig} pins it): a POST, PUT or DELETE on them is refused.
 */
public final class NodeStatusServer {
    private static final ObjectMapper JSON = new ObjectMapper();

    private final ActorSystem<?> system;
    private final NodeSettings settings;
    private final AdmissionLedger admission;
    private final AtomicReference<StatusSource> vms = new AtomicReference<>(StatusSource.NONE);
    private final ServerBinding binding;
    private final ClusterPage page;
    private final StatusSettings access;

    private NodeStatusServer(ActorSystem<?> system, NodeSettings settings, StatusSettings access,
                             Optional<MemberTls> tls, AdmissionLedger admission, int port, ClusterPage page,
                             io.vmfork.vmm.platform.PlatformChoice platform) {
        this.platform = platform;
        this.system = system;
        this.settings = settings;
        this.access = access;
        this.admission = admission;
        this.page = page;
        Route routes = concat(
                path("status", () -> get(() -> onSuccess(statusJson(), json ->
                        complete(HttpEntities.create(ContentTypes.APPLICATION_JSON, json))))),
                page.routes(),
                PekkoManagement.get(system).getRoutes());
        Route guarded = extractRequest(request -> {
            HttpResponse refused = refusal(access, tls, request);
            return refused == null ? routes : complete(refused);
        });
        Duration timeout = settings.askTimeout();
        // The peer's address on each request: the cluster page caps feeds per client by it
        // (never by a header the client writes, such as X-Forwarded-For).
        // And its TLS session, whose client certificate may admit it.
        ServerSettings server = ServerSettings.create(system.classicSystem()).withRemoteAddressAttribute(true);
        server = server.withParserSettings(server.getParserSettings().withIncludeSslSessionAttribute(true));
        if (access.tls() && tls.isEmpty()) {
            throw new IllegalArgumentException("vmfork.node.status.tls is on, but no credentials were given");
        }
        ServerBuilder builder = Http.get(system).newServerAt(access.bind(), port).withSettings(server);
        if (access.tls()) {
            MemberTls t = tls.get();
            boolean want = access.clientCertificate();
            // A new engine from the context as last read for every connection: rotated files
            // are used from their next reading on.
            builder = builder.enableHttps(ConnectionContext.httpsServer(() -> {
                SSLEngine e = t.context().createSSLEngine();
                e.setUseClientMode(false);
                e.setWantClientAuth(want);
                return e;
            }));
        }
        try {
            this.binding = builder.bind(guarded)
                    .toCompletableFuture().get(timeout.toMillis(), TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while binding the status HTTP server", e);
        } catch (ExecutionException | TimeoutException e) {
            Throwable cause = e instanceof ExecutionException ? e.getCause() : e;
            throw new IllegalStateException("cannot serve status on " + access.bind() + ":" + port
                    + " (vmfork.node.status.bind, vmfork.node.status.http-port): " + cause, cause);
        }
        binding.addToCoordinatedShutdown(timeout, system);
    }

    // Pekko Management's health checks: a load balancer or an orchestrator asks them
    // without credentials.
    private static final Set<String> OPEN_PATHS = Set.of("/ready", "/alive");

    /**
     * Why {@code request} is refused, or null when it may go on: a {@code Host} that is not
     * one of the node's names (421), or a missing or wrong bearer token where one is
     * required (401).
     */
    static HttpResponse refusal(StatusSettings access, Optional<MemberTls> tls, HttpRequest request) {
        java.util.Optional<Host> host = request.getHeader(Host.class);
        String name = host.map(h -> StatusSettings.hostName(h.host().address())).orElse("");
        if (!access.allowedHosts().contains(name)) {
            return text(StatusCodes.MISDIRECTED_REQUEST, "this node does not serve its status under that host"
                    + " name (vmfork.node.status.allowed-hosts)");
        }
        if (access.credentialRequired() && !OPEN_PATHS.contains(request.getUri().path())) {
            if (access.clientCertificate() && tls.isPresent() && clusterCertificate(tls.get(), request)) {
                return null;
            }
            String presented = request.getHeader("Authorization")
                    .map(h -> h.value().trim())
                    .filter(v -> v.regionMatches(true, 0, "Bearer ", 0, 7))
                    .map(v -> v.substring(7).trim())
                    .orElse(null);
            if (!access.tokenMatches(presented)) {
                String needs = !access.clientCertificate() ? "its bearer token (Authorization: Bearer ...;"
                        + " vmfork.node.status.token)"
                        : !access.tokenRequired() ? "a client certificate of this cluster (vmfork certs --client NAME;"
                                + " vmfork.node.status.client-certificate)"
                                : "its bearer token (Authorization: Bearer ...; vmfork.node.status.token) or a"
                                        + " client certificate of this cluster (vmfork certs --client NAME)";
                return text(StatusCodes.UNAUTHORIZED, "this node's status needs " + needs)
                        .addHeader(WWWAuthenticate.create(HttpChallenge.create("Bearer", "vmfork")));
            }
        }
        return null;
    }

    /**
     * Whether {@code request} came over a TLS session whose client showed a certificate of
     * this cluster: issued by its CA (the handshake checked that) and sharing a subject name
     * with the node's own.
     */
    private static boolean clusterCertificate(MemberTls tls, HttpRequest request) {
        Optional<SslSessionInfo> info = request.getAttribute(AttributeKeys.sslSession);
        if (info.isEmpty()) {
            return false;
        }
        try {
            return tls.mismatch(info.get().getSession().getPeerCertificates()).isEmpty();
        } catch (SSLPeerUnverifiedException e) {
            return false;
        }
    }

    private static HttpResponse text(StatusCode code, String message) {
        return HttpResponse.create().withStatus(code)
                .withEntity(HttpEntities.create(ContentTypes.TEXT_PLAIN_UTF8, message + "\n"));
    }

    /**
     * Serves the status of this node on {@code port} (0: a free port; {@link #port()} says
     * which), before the call returns.
     *
     * @throws IllegalStateException if the port cannot be bound
     */
    static NodeStatusServer start(ActorSystem<?> system, NodeSettings settings, StatusSettings access,
                                  Optional<MemberTls> tls, AdmissionLedger admission, int port, ClusterPage page,
                                  io.vmfork.vmm.platform.PlatformChoice platform) {
        return new NodeStatusServer(system, settings, access, tls, admission, port, page, platform);
    }

    /** Where this host's guests run and why (vmfork.vmm.platform). */
    private final io.vmfork.vmm.platform.PlatformChoice platform;

    /** The cluster page it serves. */
    public ClusterPage page() {
        return page;
    }

    /** The port the server listens on. */
    public int port() {
        return binding.localAddress().getPort();
    }

    /** The address the server listens on. */
    public InetSocketAddress address() {
        return binding.localAddress();
    }

    /** Where the {@code "clones"} field comes from from now on (absent until set). */
    void cloneStatus(java.util.function.Supplier<com.fasterxml.jackson.databind.JsonNode> source) {
        clones.set(source);
    }

    private final java.util.concurrent.atomic.AtomicReference<java.util.function.Supplier<
            com.fasterxml.jackson.databind.JsonNode>> clones = new java.util.concurrent.atomic.AtomicReference<>();

    /** Where the {@code "vms"} field comes from from now on. */
    void vmStatus(StatusSource source) {
        if (source == null) {
            throw new IllegalArgumentException("no status source");
        }
        vms.set(source);
    }

    private CompletionStage<String> statusJson() {
        Duration timeout = settings.askTimeout();
        CompletableFuture<Map<Long, HostLoad>> reports = AskPattern.<Replicator.Command,
                        Replicator.GetResponse<LWWMap<Long, HostLoad>>>ask(
                        DistributedData.get(system).replicator(),
                        replyTo -> new Replicator.Get<>(LoadReports.KEY, Replicator.readLocal(), replyTo),
                        timeout, system.scheduler())
                .thenApply(r -> r instanceof Replicator.GetSuccess<LWWMap<Long, HostLoad>> ok
                        ? Map.copyOf(ok.get(LoadReports.KEY).getEntries())
                        : Map.<Long, HostLoad>of())
                .toCompletableFuture();
        CompletableFuture<JsonNode> vmList;
        try {
            vmList = vms.get().vms().toCompletableFuture().orTimeout(timeout.toMillis(), TimeUnit.MILLISECONDS);
        } catch (RuntimeException e) {
            vmList = CompletableFuture.failedFuture(e);
        }
        CompletableFuture<JsonNode> vmsOrError = vmList.handle((v, e) -> e == null ? v : errorOf(e));
        return reports.thenCombine(vmsOrError, this::render);
    }

    private static JsonNode errorOf(Throwable e) {
        ObjectNode error = JSON.createObjectNode();
        error.put("error", String.valueOf(e instanceof java.util.concurrent.CompletionException && e.getCause() != null
                ? e.getCause() : e));
        return error;
    }

    private String render(Map<Long, HostLoad> reports, JsonNode vmList) {
        ClusterEvent.CurrentClusterState state = Cluster.get(system).state();
        Set<Member> unreachable = state.getUnreachable();
        Member self = Cluster.get(system).selfMember();
        Map<String, HostLoad> byAddress = new HashMap<>();
        for (HostLoad r : reports.values()) {
            byAddress.put(r.address(), r);
        }

        ObjectNode root = JSON.createObjectNode();
        ObjectNode host = root.putObject("host");
        host.put("id", settings.hostId());
        host.put("name", settings.hostName());
        host.put("address", self.address().toString());
        host.put("status", self.status().toString());
        host.put("reachable", !unreachable.contains(self));
        ObjectNode p = host.putObject("platform");
        p.put("name", platform.name());
        p.put("reason", platform.reason());

        HostLoad mine = admission.current(settings.hostId(), settings.hostName(), self.address().toString(),
                platform.name());
        putLoad(root.putObject("load"), mine);

        ObjectNode cluster = root.putObject("cluster");
        Object leader = state.getLeader();
        if (leader == null) {
            cluster.putNull("leader");
        } else {
            cluster.put("leader", leader.toString());
        }
        ArrayNode members = cluster.putArray("members");
        for (Member m : state.getMembers()) {
            String address = m.address().toString();
            ObjectNode member = members.addObject();
            member.put("address", address);
            member.put("status", m.status().toString());
            member.put("reachable", !unreachable.contains(m));
            ArrayNode roles = member.putArray("roles");
            m.getRoles().stream().sorted().forEach(roles::add);
            HostLoad report = byAddress.remove(address);
            if (report == null) {
                member.putNull("host");
            } else {
                putReport(member.putObject("host"), report);
            }
        }
        ArrayNode unreported = cluster.putArray("unreported_hosts");
        byAddress.values().stream().sorted(java.util.Comparator.comparingLong(HostLoad::hostId))
                .forEach(r -> putReport(unreported.addObject(), r));

        var cloneSource = clones.get();
        if (cloneSource != null) {
            root.set("clones", cloneSource.get());
        }
        if (vmList.isArray()) {
            root.set("vms", vmList);
        } else {
            root.putArray("vms");
            root.set("vms_error", vmList.get("error"));
        }
        try {
            return JSON.writerWithDefaultPrettyPrinter().writeValueAsString(root);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot write the status as JSON", e);
        }
    }

    private static void putReport(ObjectNode o, HostLoad r) {
        o.put("host_id", r.hostId());
        o.put("host_name", r.hostName());
        o.put("address", r.address());
        o.put("platform", r.platform());
        o.put("sequence", r.sequence());
        putLoad(o, r);
    }

    private static void putLoad(ObjectNode o, HostLoad l) {
        o.put("vms", l.vmCount());
        o.put("memory_used", l.memoryUsed());
        o.put("memory_free", l.memoryFree());
        o.put("vcpus_used", l.vcpusUsed());
        o.put("vcpus_free", l.vcpusFree());
        o.put("free_slots", l.freeSlots());
        Capacity c = l.capacity();
        ObjectNode cap = o.putObject("capacity");
        cap.put("guest_memory", c.guestMemory());
        cap.put("vm_slots", c.vmSlots());
        cap.put("vcpus", c.vcpus());
    }
}
