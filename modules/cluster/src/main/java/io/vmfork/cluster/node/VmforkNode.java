package io.vmfork.cluster.node;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigParseOptions;
import io.vmfork.cluster.api.VmCluster;
import io.vmfork.cluster.host.HostActor;
import io.vmfork.cluster.placement.AdmissionLedger;
import io.vmfork.cluster.placement.LoadReporter;
import io.vmfork.cluster.placement.LoadReports;
import io.vmfork.cluster.placement.PlacementClient;
import io.vmfork.cluster.placement.PlacementEntity;
import io.vmfork.cluster.security.MemberTls;
import io.vmfork.cluster.web.ClusterPage;
import io.vmfork.cluster.web.PageSettings;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.config.ConfigCheck;
import io.vmfork.vmm.guest.GuestImages;
import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import org.apache.pekko.Done;
import org.apache.pekko.actor.CoordinatedShutdown;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.Props;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.cluster.sharding.typed.ShardingEnvelope;
import org.apache.pekko.cluster.typed.Cluster;
import org.apache.pekko.cluster.typed.Join;

/**
 * One vmfork node: the Pekko cluster member of a host. {@link #start} checks the
 * configuration ({@link NodeSettings}), starts the actor system with Artery (over TLS with
 * the member's credentials, {@code vmfork.security}), the seed
 * nodes and the split brain resolver, joins the cluster, and starts the node's services:
 * the host-id guard (a second node with an id already in the cluster leaves at once),
 * this host's admission ledger and load reporter (so the host is chosen from the start,
 * with all of its capacity free; each report names the platform of this host's
 * {@link Vmm}, which is opened first), the placement entities' sharding, the
 * {@link HostActor} owning that {@link Vmm} (opened from the same configuration, closed
 * when the actor system terminates), the application API ({@link #cluster()}) and, on
 * {@code vmfork.node.status.http-port}, its status over HTTP ({@link NodeStatusServer}).
 */
public final class VmforkNode implements AutoCloseable {
    private final ActorSystem<Void> system;
    private final NodeSettings settings;
    private final ActorRef<ShardingEnvelope<PlacementEntity.Command>> placementRegion;
    private final ActorRef<LoadReports.Command> loadReports;
    private final AdmissionLedger admission;
    private final ActorRef<LoadReporter.Command> loadReporter;
    private final PlacementClient placement;
    private final Optional<NodeStatusServer> status;
    private final Vmm vmm;
    private final ActorRef<HostActor.Command> host;
    private final VmCluster cluster;
    private io.vmfork.cluster.host.CloneStats cloneStats = new io.vmfork.cluster.host.CloneStats();
    /** Completes when the node's coordinated shutdown begins, whatever began it. */
    private final CompletableFuture<Done> stopping = new CompletableFuture<>();

    private VmforkNode(ActorSystem<Void> system, NodeSettings settings,
                       ActorRef<ShardingEnvelope<PlacementEntity.Command>> placementRegion,
                       ActorRef<LoadReports.Command> loadReports, AdmissionLedger admission,
                       ActorRef<LoadReporter.Command> loadReporter, PlacementClient placement, Vmm vmm,
                       ActorRef<HostActor.Command> host, VmCluster cluster, Optional<NodeStatusServer> status) {
        this.system = system;
        this.settings = settings;
        this.placementRegion = placementRegion;
        this.loadReports = loadReports;
        this.admission = admission;
        this.loadReporter = loadReporter;
        this.placement = placement;
        this.status = status;
        this.vmm = vmm;
        this.host = host;
        this.cluster = cluster;
    }

    /** The application API's ask timeout, {@code vmfork.node.api.ask-timeout}. */
    static Duration apiTimeout(Config config) {
        String key = "vmfork.node.api.ask-timeout";
        try {
            Duration d = config.getDuration(key);
            if (d.isNegative() || d.isZero()) {
                throw new InvalidNodeConfigException(key, "must be a positive duration");
            }
            return d;
        } catch (com.typesafe.config.ConfigException.Missing e) {
            throw new InvalidNodeConfigException(key, "missing", e);
        } catch (com.typesafe.config.ConfigException e) {
            throw new InvalidNodeConfigException(key, e.getMessage(), e);
        }
    }

    /** How many subscriptions the HostActor keeps, {@code vmfork.node.subscribers}. */
    static HostActor.SubscriberLimits subscriberLimits(Config config) {
        String key = "vmfork.node.subscribers";
        try {
            return HostActor.SubscriberLimits.fromConfig(config);
        } catch (IllegalArgumentException e) {
            throw new InvalidNodeConfigException(key, e.getMessage());
        } catch (com.typesafe.config.ConfigException e) {
            throw new InvalidNodeConfigException(key, e.getMessage(), e);
        }
    }

    /**
     * The guest images a {@code Launch} may name, {@code vmfork.node.images}: the shipped
     * guests and the files under these directories (each an absolute path to a directory).
     */
    static GuestImages guestImages(Config config) {
        String key = "vmfork.node.images";
        try {
            List<String> dirs = config.getStringList(key);
            List<Path> paths = new ArrayList<>();
            for (int i = 0; i < dirs.size(); i++) {
                Path p;
                try {
                    p = Path.of(dirs.get(i));
                } catch (java.nio.file.InvalidPathException e) {
                    throw new InvalidNodeConfigException(key + "[" + i + "]", "'" + dirs.get(i) + "' is not a path");
                }
                if (!p.isAbsolute()) {
                    throw new InvalidNodeConfigException(key + "[" + i + "]", "'" + dirs.get(i)
                            + "' is not an absolute path");
                }
                if (!Files.isDirectory(p)) {
                    throw new InvalidNodeConfigException(key + "[" + i + "]", "'" + dirs.get(i)
                            + "' is not a directory");
                }
                paths.add(p);
            }
            return GuestImages.of(paths);
        } catch (com.typesafe.config.ConfigException.Missing e) {
            throw new InvalidNodeConfigException(key, "missing", e);
        } catch (com.typesafe.config.ConfigException e) {
            throw new InvalidNodeConfigException(key, e.getMessage(), e);
        }
    }

    /**
     * The status server's TLS context: with {@code vmfork.node.status.tls = on}, this member's
     * credentials, read now (a node without them, or with unreadable ones, does not start).
     */
    private static Optional<MemberTls> statusTls(Config config, NodeSettings settings, StatusSettings status) {
        if (!status.tls() || settings.statusHttpPort() < 0) {
            return Optional.empty();
        }
        var files = settings.security().credentials().orElseThrow(() -> new InvalidNodeConfigException(
                "vmfork.node.status.tls", "is on, but this member has no credentials: set vmfork.security.key-file,"
                        + " cert-file and ca-cert-file (vmfork certs creates them)"));
        String ttlPath = "pekko.remote.artery.ssl.rotating-keys-engine.ssl-context-cache-ttl";
        Duration ttl = config.hasPath(ttlPath) ? config.getDuration(ttlPath) : Duration.ofMinutes(5);
        try {
            return Optional.of(new MemberTls(files, ttl, "status TLS"));
        } catch (IllegalArgumentException e) {
            throw new InvalidNodeConfigException("vmfork.node.status.tls", e.getMessage(), e);
        }
    }

    /**
     * Starts a node from {@code config} (a resolved configuration with the modules'
     * reference.conf behind it, as {@link #loadConfig} gives).
     *
     * @throws InvalidNodeConfigException naming the key at fault, before anything starts
     */
    public static VmforkNode start(Config config) {
        NodeSettings settings = NodeSettings.create(config);
        Duration apiTimeout = apiTimeout(config);
        GuestImages images = guestImages(config);
        VmmSettings vmmSettings;
        try {
            vmmSettings = VmmSettings.create(config);
        } catch (IllegalArgumentException | com.typesafe.config.ConfigException e) {
            // VmmSettings names the key in its message.
            throw new InvalidNodeConfigException("vmfork.vmm", e.getMessage(), e);
        }
        PageSettings pageSettings = PageSettings.create(config);
        StatusSettings statusSettings = StatusSettings.create(config);
        Optional<MemberTls> statusTls = statusTls(config, settings, statusSettings);
        Config full = settings.pekkoConfig().withFallback(config).resolve();
        // The VMM first: a host that cannot run guests (no /dev/kvm for platform = kvm, ptrace
        // or seccomp refused) fails here, before its node has joined the cluster and started
        // a thread. The HostActor owns it from then on and closes it when it stops.
        Vmm vmm = Vmm.open(vmmSettings);
        ActorSystem<Void> system;
        try {
            system = ActorSystem.create(Behaviors.empty(), settings.systemName(), full);
        } catch (RuntimeException | Error e) {
            vmm.close();
            throw e;
        }
        // The HostActor closes it when it stops; this covers a start that fails before or
        // while the HostActor starts (Vmm.close is idempotent). Opened before the load
        // reporter starts, too: every report names the platform the VMM chose.
        system.getWhenTerminated().thenRun(vmm::close);
        settings.logSecurity(system);
        try {
            if (settings.seedNodes().isEmpty()) {
                Cluster cluster = Cluster.get(system);
                cluster.manager().tell(Join.create(cluster.selfMember().address()));
            }
            ActorRef<LoadReports.Command> loadReports = system.systemActorOf(
                    LoadReports.publisher(settings.placement().loadWriteTimeout()), "load-reports", Props.empty());
            AdmissionLedger admission = new AdmissionLedger(settings.capacity(),
                    settings.placement().reservationTimeout(), System::nanoTime);
            ActorRef<LoadReporter.Command> reporter = system.systemActorOf(LoadReporter.create(admission,
                    settings.hostId(), settings.hostName(), system.address().toString(), vmm.platform().name(),
                    loadReports, settings.placement().loadReportInterval()), "load-reporter", Props.empty());
            ActorRef<ShardingEnvelope<PlacementEntity.Command>> region =
                    PlacementEntity.init(system, settings.placement());
            PlacementClient placement = PlacementClient.create(system, settings.placement(), settings.hostId());
            ActorRef<HostActor.Command> host;
            io.vmfork.cluster.host.CloneStats cloneStats = new io.vmfork.cluster.host.CloneStats();
            io.vmfork.cluster.transfer.TransferSettings transfer =
                    io.vmfork.cluster.transfer.TransferSettings.fromConfig(config);
            // A fresh JVM runs AES-GCM interpreted at first, and its first capsule pays for it
            // (reference.conf, vmfork.transfer.tls-warm-up: off by default, no gain shown yet).
            transfer.tls().ifPresent(t -> t.warmUpInBackground(config.getBytes("vmfork.transfer.tls-warm-up")));
            try {
                host = system.systemActorOf(HostActor.create(vmm, admission, reporter, placement,
                        new HostActor.Settings(settings.hostId(), settings.hostName(), apiTimeout,
                                transfer,
                                config.getBytes("vmfork.transfer.image-cache"), images,
                                subscriberLimits(config)), cloneStats), "host",
                        Props.empty());
            } catch (RuntimeException e) {
                vmm.close();
                throw e;
            }
            VmCluster cluster = VmCluster.create(system, placement, apiTimeout);
            Optional<NodeStatusServer> status = Optional.empty();
            if (settings.statusHttpPort() >= 0) {
                NodeStatusServer server = NodeStatusServer.start(system, settings, statusSettings, statusTls, admission,
                        settings.statusHttpPort(), ClusterPage.create(system, cluster, settings.hostId(), pageSettings),
                        vmm.platform());
                String at = (statusSettings.tls() ? "https://" : "http://") + server.address().getHostString() + ":"
                        + server.port();
                system.log().info("vmfork node: host {} serves its status at {}/status and the cluster"
                        + " page at {}/ ({})", settings.hostId(), at, at, statusSettings);
                status = Optional.of(server);
            }
            // Last: a conflict stops the node at once, which must not fail a start still under
            // way (the node would then exit as if it could not start, not with the conflict).
            system.systemActorOf(HostIdGuard.create(settings.hostId(), settings.hostIdCheckInterval()),
                    "host-id-guard", Props.empty());
            VmforkNode node = new VmforkNode(system, settings, region, loadReports, admission, reporter, placement, vmm,
                    host, cluster, status);
            CoordinatedShutdown.get(system).addTask(CoordinatedShutdown.PhaseBeforeServiceUnbind(), "vmfork-stopping",
                    () -> {
                        node.stopping.complete(Done.done());
                        return CompletableFuture.completedFuture(Done.done());
                    });
            node.vmStatus(HostStatus.of(vmm));
            if (status.isPresent()) {
                status.get().cloneStatus(cloneStats::toJson);
            }
            node.cloneStats = cloneStats;
            return node;
        } catch (RuntimeException e) {
            system.terminate();
            throw e;
        }
    }

    /**
     * The configuration of a node from a file: system properties' overrides, over the file,
     * over the modules' reference.conf; every key under vmfork in the file and the
     * properties checked against reference.conf ({@link ConfigCheck}), before anything starts.
     *
     * @throws InvalidNodeConfigException if the file is missing or not valid HOCON
     * @throws io.vmfork.vmm.config.InvalidConfigException naming each unknown key and wrong type, with its line
     */
    public static Config loadConfig(File file) {
        Config parsed;
        try {
            parsed = ConfigFactory.parseFile(file, ConfigParseOptions.defaults().setAllowMissing(false));
        } catch (com.typesafe.config.ConfigException e) {
            throw new InvalidNodeConfigException(file.getPath(), e.getMessage(), e);
        }
        return ConfigCheck.load(parsed, file.getPath());
    }

    public ActorSystem<Void> system() {
        return system;
    }

    public NodeSettings settings() {
        return settings;
    }

    /** This node's proxy of the placement entities' shard region. */
    public ActorRef<ShardingEnvelope<PlacementEntity.Command>> placementRegion() {
        return placementRegion;
    }

    /** This node's publisher of load reports (the {@link #loadReporter()} publishes through it). */
    public ActorRef<LoadReports.Command> loadReports() {
        return loadReports;
    }

    /**
     * This host's admission ledger (its capacity, from {@code vmfork.node.capacity}): the
     * HostActor admits every VM here before launching it and releases it when it is gone,
     * then tells {@link #loadReporter()} {@link LoadReporter.ReportNow}.
     */
    public AdmissionLedger admission() {
        return admission;
    }

    /** Publishes this host's load from {@link #admission()}, periodically and on demand. */
    public ActorRef<LoadReporter.Command> loadReporter() {
        return loadReporter;
    }

    /** This host's HostActor (it owns {@link #vmm()}). */
    public ActorRef<HostActor.Command> host() {
        return host;
    }

    /** This host's VMM, owned by {@link #host()}: read it (tests, status), never drive it. */
    public Vmm vmm() {
        return vmm;
    }

    /** What this host's remote clones moved (its status page's "clones"). */
    public io.vmfork.cluster.host.CloneStats cloneStats() {
        return cloneStats;
    }

    /** The application API on this node. */
    public VmCluster cluster() {
        return cluster;
    }

    /** Asks the placement service, from Java code that is not an actor. */
    public PlacementClient placement() {
        return placement;
    }

    /** The node's status HTTP server, unless {@code vmfork.node.status.http-port} is -1. */
    public Optional<NodeStatusServer> statusServer() {
        return status;
    }

    /**
     * Where this node's {@code GET /status} takes its {@code "vms"} list from: the VMM's
     * own list from the start; another source replaces it. Does nothing when the node
     * serves no status.
     */
    public void vmStatus(StatusSource source) {
        status.ifPresent(s -> s.vmStatus(source));
    }

    /**
     * The exit code of a node the cluster downed ({@code EX_TEMPFAIL}): it stopped its VMs,
     * and only a new start (a new incarnation) can join again, which a supervisor that
     * restarts on failure does.
     */
    public static final int EXIT_DOWNED = 75;

    /** What a downed node says as it exits. */
    public static final String DOWNED_MESSAGE = "this node was downed by the cluster (a partition's losing side,"
            + " or a member's Down): its VMs were stopped; start it again to rejoin as a new incarnation";

    /** Whether {@code reason} is the cluster's downing of this node. */
    public static boolean wasDowned(CoordinatedShutdown.Reason reason) {
        return reason == CoordinatedShutdown.clusterDowningReason();
    }

    /** Why the node stopped, once it has begun to: e.g. a {@link HostIdConflict}. */
    public Optional<CoordinatedShutdown.Reason> shutdownReason() {
        return CoordinatedShutdown.get(system).getShutdownReason();
    }

    /** Completes when the node has stopped. */
    public CompletionStage<Done> whenTerminated() {
        return system.getWhenTerminated();
    }

    /**
     * Waits until the node has stopped, or until its coordinated shutdown, once begun (on
     * SIGTERM, when the cluster downs it, on a host-id conflict), has run all its phases,
     * each within its own timeout. Then a process may exit, as Pekko's
     * {@code coordinated-shutdown.exit-jvm} would: a node cut off by a partition may never
     * see its actor system finish terminating (its last phase timed out after 10 s in
     * NetworkFaultTest, with the peers out of reach), and it must not linger. Its VMs are
     * stopped by then (the HostActor's fence, or its stop).
     *
     * @return why the node stopped
     */
    public Optional<CoordinatedShutdown.Reason> awaitStopped() throws InterruptedException {
        CompletableFuture<?> terminated = system.getWhenTerminated().toCompletableFuture();
        CompletableFuture<?> phasesRun = stopping.thenCompose(begun ->
                CoordinatedShutdown.get(system).runAll(CoordinatedShutdown.unknownReason())).toCompletableFuture();
        try {
            CompletableFuture.anyOf(terminated, phasesRun).get();
        } catch (java.util.concurrent.ExecutionException e) {
            // a phase failed: the shutdown has ended all the same
        }
        if (!terminated.isDone()) {
            system.log().warn("vmfork node: the shutdown's phases have run but the actor system has not"
                    + " terminated: stopping anyway");
        }
        return shutdownReason();
    }

    /** Leaves the cluster and stops the node, waiting up to {@code timeout}. */
    public void stop(Duration timeout) {
        CoordinatedShutdown.get(system).run(CoordinatedShutdown.unknownReason());
        try {
            system.getWhenTerminated().toCompletableFuture().get(timeout.toMillis(), java.util.concurrent.TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException e) {
            throw new IllegalStateException("node did not stop within " + timeout, e);
        }
    }

    @Override
    public void close() {
        stop(settings.askTimeout().multipliedBy(4));
    }

    /**
     * Starts a node from the configuration file named by the only argument, until it stops;
     * exits as {@code vmfork node} does: 0 when it stopped (e.g. on SIGTERM, after leaving
     * the cluster), 78 when the file is invalid or the cluster already has a node with its
     * host id, 75 when the cluster downed it, 69 when it cannot start (e.g. a port in use),
     * 64 on a usage error. The
     * multi-JVM tests start nodes this way.
     */
    /**
     * {@code VmforkNode [--parent-pid PID] CONFIG_FILE}. With {@code --parent-pid}, the node
     * stops (shutting down as on SIGTERM) once that process is gone, even if it was killed
     * with SIGKILL: a node started by a tool (bench, demo) never outlives it.
     */
    public static void main(String[] args) throws Exception {
        if (args.length == 3 && args[0].equals("--parent-pid")) {
            watchParent(args[1]);
            args = new String[] {args[2]};
        }
        if (args.length != 1) {
            System.err.println("usage: VmforkNode [--parent-pid PID] CONFIG_FILE");
            System.exit(64);
        }
        VmforkNode node;
        try {
            node = start(loadConfig(new File(args[0])));
        } catch (InvalidNodeConfigException | io.vmfork.vmm.config.InvalidConfigException e) {
            System.err.println("vmfork node: " + args[0] + ": " + e.getMessage());
            System.exit(78);
            return;
        } catch (RuntimeException e) {
            System.err.println("vmfork node: cannot start: " + e);
            System.exit(69);
            return;
        }
        Optional<CoordinatedShutdown.Reason> reason = node.awaitStopped();
        if (reason.isPresent() && reason.get() instanceof HostIdConflict conflict) {
            System.err.println("vmfork node: " + conflict);
            System.exit(78);
        }
        if (reason.isPresent() && wasDowned(reason.get())) {
            System.err.println("vmfork node: " + DOWNED_MESSAGE);
            System.exit(EXIT_DOWNED);
        }
        System.exit(0);
    }

    private static void watchParent(String pidText) {
        long pid;
        try {
            pid = Long.parseLong(pidText);
        } catch (NumberFormatException e) {
            System.err.println("vmfork node: --parent-pid takes a process id, got '" + pidText + "'");
            System.exit(64);
            return;
        }
        Runnable gone = () -> {
            System.err.println("vmfork node: parent process " + pid + " is gone: stopping");
            System.exit(0);
        };
        ProcessHandle.of(pid).ifPresentOrElse(p -> p.onExit().thenRun(gone), gone);
    }
}
