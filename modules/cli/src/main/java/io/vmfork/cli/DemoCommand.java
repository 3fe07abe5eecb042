package io.vmfork.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.api.VmCluster;
import io.vmfork.cluster.api.VmEvent;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.api.VmOrigin;
import io.vmfork.cluster.host.HostActor;
import io.vmfork.cluster.node.ClusterClient;
import io.vmfork.cluster.security.ClusterCredentials;
import io.vmfork.cluster.node.InvalidNodeConfigException;
import io.vmfork.cluster.node.NodeSettings;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.config.ConfigCheck;
import java.io.IOException;
import java.io.InputStream;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Props;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code vmfork demo}: what vmfork is for, on a real cluster on this machine. Starts
 * {@code --nodes} node JVMs ({@link LocalCluster}: each {@code vmfork node} with a generated
 * config), joins them as a client member without capacity ({@link ClusterClient}, as an
 * application would), and through the application API: launches one {@code warm-worker}
 * where placement puts it and waits for its first answer (it builds its index first); forks
 * it into {@code --workers} copies, which the {@code spread} policy of the demo's vm_type
 * puts round-robin on every host (children on the parent's host, clones elsewhere), timing
 * each from the fork call to its first answer; sends a burst of {@code --requests} checked
 * requests over them ({@link DemoBurst}); prints a table; and stops every node it started
 * (also on failure and Ctrl-C), unless {@code --keep}.
 *
 * <p>Exit codes: 0 when every step worked and every reply was right; 64 on bad usage; 69
 * when this machine cannot run it ({@code /dev/kvm} missing or closed to this user, a node
 * that cannot start, e.g. because its port is in use); 78 when {@code --node-config} is
 * invalid; 70 when a step failed (a copy that was not made, a wrong reply, a worker that
 * ended during the burst: the table is printed first).
 */
final class DemoCommand {
    /** The vm_type of the demo's VMs; conf/demo.conf gives it the spread policy. */
    static final int VM_TYPE = 1;
    static final String GUEST = "warm-worker";
    static final long GUEST_MEMORY = 256L << 20;
    /** Tests only: after this many replies of the burst, stop the pool's last worker through the API. */
    static final String TEST_STOP_WORKER_AFTER = "vmfork.demo.test.stop-worker-after";
    /** conf/demo.conf, copied onto the class path by the build. */
    private static final String NODE_CONFIG_RESOURCE = "demo.conf";
    private static final Duration NODES_WITHIN = Duration.ofSeconds(90);
    private static final Duration STEP_TIMEOUT = Duration.ofSeconds(90);
    private static final int SAMPLE_KEYS = 8;
    private static final Pattern BIND_FAILED =
            Pattern.compile(":(\\d+)\\]? Address already in use");

    /** A step that failed: the exit code and the reason. */
    static final class DemoFailure extends RuntimeException {
        final int code;

        DemoFailure(int code, String message) {
            super(message);
            this.code = code;
        }
    }

    record Options(int workers, int requests, int nodes, int inFlight, boolean keep, int statusPort, Path nodeConfig) {
    }

    /** One row of the table: the cold VM or a worker. */
    record Row(VmInfo vm, double firstAnswerMs, DemoBurst.Lane lane) {
        String made() {
            return vm.origin() == VmOrigin.BOOTED ? "cold" : vm.origin() == VmOrigin.CHILD ? "child" : "clone";
        }
    }

    private final Options options;
    private final Progress progress = Progress.onStdout("vmfork demo ");
    private final Map<Long, VmEvent> ended = new ConcurrentHashMap<>();
    private final List<String> problems = new ArrayList<>();

    private DemoCommand(Options options) {
        this.options = options;
    }

    /** {@code vmfork demo}'s command line: every option checked, and --node-config read and checked, first. */
    @Command(name = "demo", header = "Run the main job on a local cluster of node JVMs: launch, fork, clone, a checked burst.", sortOptions = false,
            description = "The main job, on a real cluster on this machine: starts N nodes (each a `vmfork node` JVM on free "
                    + "loopback ports), launches one warm-worker where placement puts it, forks it into a pool of workers"
                    + " that placement spreads over the hosts (children on its host, clones on the others), sends a burst"
                    + " of requests over them checking every reply, prints a table and stops every node.",
            exitCodeListHeading = "%nExit codes:%n",
            exitCodeList = {"0:every step worked and every reply was right", "64:bad usage",
                "66:--node-config names a file that does not exist or cannot be read",
                "69:this host cannot run guests, or a node cannot start (its log's last lines are shown)",
                "70:a step failed or a worker ended during the burst (the table is printed first)",
                "78:--node-config or the configuration is invalid (file and line named)"})
    static final class Cli implements java.util.concurrent.Callable<Integer> {
        @Mixin
        HelpOption help;

        @Option(names = "--workers", paramLabel = "N", defaultValue = "12",
                description = "Copies of the warm-worker, 1..256 (one fork call). Default: ${DEFAULT-VALUE}.")
        int workers;

        @Option(names = "--requests", paramLabel = "N", defaultValue = "10000",
                description = "Requests of the burst, 0 or more. Default: ${DEFAULT-VALUE}.")
        int requests;

        @Option(names = "--nodes", paramLabel = "N", defaultValue = "3",
                description = "Node JVMs, 1..16. Default: ${DEFAULT-VALUE}.")
        int nodes;

        @Option(names = "--in-flight", paramLabel = "N", defaultValue = "4",
                description = "Requests in flight per worker, 1..64. Default: ${DEFAULT-VALUE}.")
        int inFlight;

        @Option(names = "--keep", description = "Leave the cluster running until Ctrl-C and print each node's page.")
        boolean keep;

        @Option(names = "--status-port", paramLabel = "PORT", defaultValue = "0",
                description = "Node i serves its page at PORT+i-1. Default: free ports.")
        int statusPort;

        @Option(names = "--node-config", paramLabel = "FILE",
                description = "HOCON added to every node's config after conf/demo.conf (placement policies,"
                        + " capacity, any node key).")
        Path nodeConfig;

        @Override
        public Integer call() {
            if (workers < 1 || workers > 256) {
                throw Failure.usage("--workers must be 1..256 (one fork call), got " + workers);
            }
            if (requests < 0) {
                throw Failure.usage("--requests must not be negative");
            }
            if (nodes < 1 || nodes > 16) {
                throw Failure.usage("--nodes must be 1..16, got " + nodes);
            }
            if (inFlight < 1 || inFlight > 64) {
                throw Failure.usage("--in-flight must be 1..64, got " + inFlight);
            }
            if (statusPort != 0 && (statusPort < 1 || statusPort + nodes - 1 > 65535)) {
                throw Failure.usage("--status-port must leave room for " + nodes + " ports below 65536");
            }
            CliConfig.load();
            if (nodeConfig != null) {
                checkNodeConfig(nodeConfig);
            }
            return new DemoCommand(new Options(workers, requests, nodes, inFlight, keep, statusPort, nodeConfig))
                    .run();
        }
    }

    /**
     * --node-config's file on its own, so that a problem is named by its own line: it
     * exists (66), is HOCON, and every key under vmfork in it is one that reference.conf
     * defines, with a value of the right type (78).
     */
    static void checkNodeConfig(Path file) {
        if (!Files.isRegularFile(file) || !Files.isReadable(file)) {
            throw Failure.noInput("--node-config " + file + ": " + (Files.exists(file) ? (Files.isRegularFile(file)
                    ? "permission denied" : "not a file") : "no such file"));
        }
        Config parsed;
        try {
            parsed = ConfigFactory.parseFile(file.toFile(),
                    com.typesafe.config.ConfigParseOptions.defaults().setAllowMissing(false));
        } catch (ConfigException e) {
            throw Failure.config("--node-config " + file + ": " + e.getMessage());
        }
        ConfigCheck.load(parsed, file.toString());
    }

    // ---- the whole run: checks, cluster, scenario, table, cleanup ------------------------------

    private int run() {
        long start = System.nanoTime();
        // Logging starts here, on one thread: started by two at once (the client's actor
        // system does), SLF4J prints a notice about replayed calls.
        org.slf4j.LoggerFactory.getLogger(DemoCommand.class);
        LocalCluster cluster = null;
        ClusterClient client = null;
        AtomicBoolean finished = new AtomicBoolean();
        Thread interrupted = new Thread(() -> {
            if (!finished.get()) {
                progress.clear();
                System.err.println("\nvmfork demo: interrupted: stopping every node it started");
            }
        }, "vmfork-demo-interrupted");
        Runtime.getRuntime().addShutdownHook(interrupted);
        try {
            String extraConfig = nodeConfigText();
            Config merged = checkedConfig(extraConfig);
            io.vmfork.vmm.platform.PlatformChoice platform = io.vmfork.vmm.platform.PlatformChoice.decide(
                    merged.getString("vmfork.vmm.platform"), merged.getString("vmfork.vmm.kvm-device"));
            if (!platform.isProcess()) {
                checkKvm(merged.getString("vmfork.vmm.kvm-device"));
            } else {
                checkProcessPlatform();
            }
            System.err.println("vmfork demo: platform " + platform);

            progress.step("starting " + options.nodes() + " nodes (vmfork node, one JVM each)");
            long t0 = System.nanoTime();
            // The client joins as soon as node 1 runs, while the others start.
            CompletableFuture<ClusterClient> joining = new CompletableFuture<>();
            try {
                cluster = LocalCluster.start(options.nodes(), 1, extraConfig, options.statusPort(), NODES_WITHIN,
                        progress::step, (c, first) -> startJoining(c, first, extraConfig, joining));
            } catch (LocalCluster.NodeStartException e) {
                joining.thenAccept(c -> c.system().terminate());
                throw new DemoFailure(Main.EX_UNAVAILABLE, explain(e));
            } catch (RuntimeException | Error e) {
                joining.thenAccept(c -> c.system().terminate());
                throw e;
            }
            progress.step("the demo joins the cluster as a client (it runs no VMs)");
            client = awaitClient(cluster, joining);
            double clusterSeconds = (System.nanoTime() - t0) / 1e9;

            Scenario s = scenario(cluster, client.cluster(), client);
            progress.clear();
            System.out.print(table(cluster, s, clusterSeconds, (System.nanoTime() - start) / 1e9));
            System.out.flush();
            int code = 0;
            if (!problems.isEmpty()) {
                System.err.println("vmfork demo: " + String.join("; ", problems));
                code = Main.EX_SOFTWARE;
            }
            if (options.keep()) {
                keep(cluster, s);
            }
            return code;
        } catch (DemoFailure f) {
            progress.clear();
            System.err.println("vmfork demo: " + f.getMessage());
            if (cluster != null) {
                cluster.keepLogs();
            }
            return f.code;
        } catch (RuntimeException e) {
            // ExitCodes prints it, after every node is stopped.
            progress.clear();
            if (cluster != null) {
                cluster.keepLogs();
            }
            throw e;
        } finally {
            finished.set(true);
            if (client != null) {
                client.system().terminate();
                try {
                    client.system().getWhenTerminated().toCompletableFuture().get(10, TimeUnit.SECONDS);
                } catch (Exception e) {
                    // The JVM's exit ends it anyway.
                }
            }
            if (cluster != null) {
                cluster.close();
            }
            try {
                Runtime.getRuntime().removeShutdownHook(interrupted);
            } catch (IllegalStateException e) {
                // Shutting down already.
            }
        }
    }

    /** The demo's node settings, then --node-config's file (HOCON text, appended to each node's config). */
    private String nodeConfigText() {
        String own;
        try (InputStream in = DemoCommand.class.getResourceAsStream(NODE_CONFIG_RESOURCE)) {
            if (in == null) {
                throw new IllegalStateException(NODE_CONFIG_RESOURCE + " is missing from the class path");
            }
            own = new String(in.readAllBytes(), StandardCharsets.UTF_8);
        } catch (IOException e) {
            throw new IllegalStateException("cannot read " + NODE_CONFIG_RESOURCE, e);
        }
        if (options.nodeConfig() == null) {
            return own;
        }
        try {
            return own + "\n# --node-config " + options.nodeConfig() + "\n" + Files.readString(options.nodeConfig());
        } catch (NoSuchFileException e) {
            throw new DemoFailure(ExitCodes.NOINPUT, "--node-config " + options.nodeConfig() + ": no such file");
        } catch (IOException e) {
            throw new DemoFailure(ExitCodes.NOINPUT, "--node-config " + options.nodeConfig() + ": cannot read it: " + e);
        }
    }

    /** A node's configuration as the first node gets it, checked as the node will check it. */
    private Config checkedConfig(String extraConfig) {
        try {
            Config c = ConfigFactory.parseString("vmfork.host { id = 1, name = \"node-1\" }\n"
                            + "vmfork.node { hostname = \"127.0.0.1\", port = 0, status.http-port = 0 }\n"
                            + LocalCluster.NODE_DEFAULTS + extraConfig)
                    .withFallback(ConfigFactory.load()).resolve();
            NodeSettings settings = NodeSettings.create(c);
            VmmSettings.create(c);
            if (settings.statusHttpPort() < 0) {
                throw new DemoFailure(Main.EX_CONFIG, "--node-config " + options.nodeConfig() + ": the demo needs each"
                        + " node's status (vmfork.node.status.http-port must not be -1)");
            }
            return c;
        } catch (ConfigException | InvalidNodeConfigException | IllegalArgumentException e) {
            throw new DemoFailure(Main.EX_CONFIG, (options.nodeConfig() == null ? "the demo's node settings"
                    : "--node-config " + options.nodeConfig()) + ": " + e.getMessage());
        }
    }

    /**
     * Fails before anything starts when the kvm platform is configured (vmfork.vmm.platform
     * or VMFORK_PLATFORM) and this machine has no KVM device this user may open.
     */
    static void checkKvm(String device) {
        String orProcess = "; or set vmfork.vmm.platform = auto to run the demo's VMs on the process platform."
                + " No node was started.";
        Path path = Path.of(device);
        if (!Files.exists(path)) {
            throw new DemoFailure(Main.EX_UNAVAILABLE, device + " does not exist: this machine offers no KVM, and the"
                    + " kvm platform is configured (load the kvm module of its CPU, or enable nested virtualisation for"
                    + " this VM)" + orProcess);
        }
        try (FileChannel c = FileChannel.open(path, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            // It opens: the nodes can open it too.
        } catch (AccessDeniedException e) {
            throw new DemoFailure(Main.EX_UNAVAILABLE, "cannot open " + device + ": permission denied (run as a"
                    + " user in its group, usually kvm)" + orProcess);
        } catch (IOException | UnsupportedOperationException e) {
            throw new DemoFailure(Main.EX_UNAVAILABLE, "cannot open " + device + ": " + e + orProcess);
        }
    }

    /**
     * Fails before anything starts when this host refuses what the process platform needs
     * (ptrace, seccomp filters, an executable memfd): the nodes would each fail the same way.
     */
    static void checkProcessPlatform() {
        try {
            io.vmfork.vmm.platform.process.ProcessPlatform.check();
        } catch (io.vmfork.vmm.platform.process.ProcessPlatformException e) {
            throw new DemoFailure(Main.EX_UNAVAILABLE, e.getMessage() + ". No node was started.");
        }
    }

    /** The node's failure, with the port it could not bind when that was why. */
    private String explain(LocalCluster.NodeStartException e) {
        String why = "";
        for (String line : e.logTail()) {
            Matcher m = BIND_FAILED.matcher(line);
            if (m.find()) {
                int port = Integer.parseInt(m.group(1));
                boolean asked = options.statusPort() != 0 && port >= options.statusPort()
                        && port < options.statusPort() + options.nodes();
                why = " because port " + port + " is in use" + (asked ? " (--status-port " + options.statusPort()
                        + " gives node i port " + options.statusPort() + "+i-1; pick others or leave it out: the"
                        + " nodes then pick free ports)" : "");
                break;
            }
        }
        return e.getMessage().replaceFirst(";", why + ";") + "\nNo node is left running.";
    }

    /** Starts joining the cluster of {@code seed} as a client member, on a thread of its own. */
    private static void startJoining(LocalCluster cluster, LocalCluster.Node seed, String extraConfig,
                                     CompletableFuture<ClusterClient> joining) {
        Config config = ConfigFactory.parseString("vmfork.node { hostname = \"127.0.0.1\", port = 0,"
                        + " status.http-port = -1, seed-nodes = [\"" + seed.hostPort() + "\"] }\n"
                        + "vmfork.host.name = \"demo-client\"\n"
                        + cluster.memberCredentials("demo-client", ClusterCredentials.Role.CLIENT)
                        // The demo stops its nodes itself; the JVM's exit must not wait to leave,
                        // nor log the connections its nodes' end cuts.
                        + "pekko.coordinated-shutdown.run-by-jvm-shutdown-hook = off\n"
                        + "pekko.loglevel = ERROR\n")
                .withFallback(ConfigFactory.parseString(LocalCluster.NODE_DEFAULTS + extraConfig))
                .withFallback(ConfigFactory.load()).resolve();
        Thread t = new Thread(() -> {
            try {
                joining.complete(ClusterClient.join(config));
            } catch (RuntimeException | Error e) {
                joining.completeExceptionally(e);
            }
        }, "vmfork-demo-join");
        t.setDaemon(true);
        t.start();
    }

    /** The client, once it is Up and placement knows every node's host. */
    private ClusterClient awaitClient(LocalCluster cluster, CompletableFuture<ClusterClient> joining) {
        ClusterClient client = await(joining, "the demo's client member");
        try {
            client.awaitHosts(cluster.nodes().stream().map(LocalCluster.Node::hostId).toList(), NODES_WITHIN);
            return client;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            client.system().terminate();
            throw new DemoFailure(Main.EX_SOFTWARE, "interrupted while joining the cluster");
        } catch (RuntimeException e) {
            client.system().terminate();
            throw new DemoFailure(Main.EX_SOFTWARE, "the demo's client could not join its cluster: " + e.getMessage());
        }
    }

    // ---- the scenario -----------------------------------------------------------------------

    /** What the scenario made and measured. */
    record Scenario(Row cold, List<Row> workers, List<String> failedCopies, DemoBurst burst, double burstSeconds,
                    Map<Long, JsonNode> clonesByHost) {
    }

    private Scenario scenario(LocalCluster cluster, VmCluster api, ClusterClient client) {
        Map<Long, CompletableFuture<Row>> firstAnswers = new ConcurrentHashMap<>();
        AtomicLong forkAsked = new AtomicLong();
        AtomicLong coldId = new AtomicLong(-1);
        ActorRef<VmEvent> events = client.system().systemActorOf(Behaviors.receive(VmEvent.class)
                .onAnyMessage(e -> {
                    switch (e.kind()) {
                        case FORKED -> {
                            if (e.vm() != null && e.vm().parentId() == coldId.get()) {
                                askFirst(api, e.vm(), forkAsked.get(), firstAnswers);
                            }
                        }
                        case EXITED, CRASHED, STOPPED, LOST -> ended.put(e.vmId(), e);
                        default -> { }
                    }
                    return Behaviors.same();
                }).build(), "vmfork-demo-events", Props.empty());
        api.subscribe(events);

        // 1. One cold launch, placed by the cluster; its first answer comes once its index is built.
        progress.step("cold launch of " + GUEST + " (it builds a 2-million-key index first)");
        long t0 = System.nanoTime();
        VmInfo cold = await(api.launch(GUEST, VM_TYPE, GUEST_MEMORY), "the cold launch of " + GUEST);
        coldId.set(cold.vmId());
        String id = text(await(api.request(cold.vmId(), bytes("id")), "the cold VM's first answer"));
        double coldMs = (System.nanoTime() - t0) / 1e6;
        checkIdentity(cold, id);
        for (int i = 0; i < SAMPLE_KEYS; i++) {
            long k = DemoBurst.keyOf(i * 7919);
            String got = text(await(api.request(cold.vmId(), bytes("get " + Long.toUnsignedString(k))),
                    "the cold VM's answer"));
            if (!got.equals(WarmWorkerReplies.expectedGet(k))) {
                throw new DemoFailure(Main.EX_SOFTWARE, "the cold VM answered 'get " + k + "' with '" + got
                        + "', not '" + WarmWorkerReplies.expectedGet(k) + "'");
            }
        }
        Row coldRow = new Row(cold, coldMs, null);
        progress.step(String.format("cold VM answering after %.0f ms on %s; forking %d workers", coldMs,
                nodeName(cluster, cold.hostId()), options.workers()));

        // 2. The pool: one fork call; each copy is asked as soon as it is known (its FORKED
        // event, or the fork's reply, whichever comes first).
        forkAsked.set(System.nanoTime());
        HostActor.Forked forked = await(api.fork(cold.vmId(), options.workers(), VM_TYPE), "the fork into workers",
                () -> progress.update(firstAnswers.size() + "/" + options.workers() + " made"));
        for (VmInfo c : forked.children()) {
            askFirst(api, c, forkAsked.get(), firstAnswers);
        }
        List<Row> workers = new ArrayList<>();
        for (VmInfo c : forked.children()) {
            workers.add(await(firstAnswers.get(c.vmId()), "worker " + c.vmId() + "'s first answer",
                    () -> progress.update(firstAnswers.values().stream().filter(CompletableFuture::isDone).count()
                            + "/" + forked.children().size() + " answering")));
        }
        if (!forked.errors().isEmpty()) {
            problems.add(forked.errors().size() + " of " + options.workers() + " copies were not made");
        }
        if (workers.isEmpty()) {
            throw new DemoFailure(Main.EX_SOFTWARE, "the fork made no worker: " + forked.errors());
        }
        workers.sort(Comparator.comparingLong((Row r) -> r.vm().hostId()).thenComparingLong(r -> r.vm().vmId()));

        // 3. The burst.
        List<DemoBurst.Lane> lanes = new ArrayList<>();
        List<Row> rows = new ArrayList<>();
        for (Row w : workers) {
            DemoBurst.Lane lane = new DemoBurst.Lane(w.vm().vmId());
            lanes.add(lane);
            rows.add(new Row(w.vm(), w.firstAnswerMs(), lane));
        }
        progress.step(String.format("%,d requests over %d workers, %d in flight each", options.requests(),
                lanes.size(), options.inFlight()));
        DemoBurst burst = new DemoBurst(api, lanes, options.requests(), options.inFlight(),
                testStopHook(api, lanes.get(lanes.size() - 1).vmId));
        long b0 = System.nanoTime();
        try {
            await(burst.start(), "the burst", () -> progress.update(String.format("%,d/%,d", burst.served(),
                    options.requests())));
        } catch (DemoFailure f) {
            problems.add(f.getMessage());
        }
        double burstSeconds = (System.nanoTime() - b0) / 1e9;
        awaitEndEvents(lanes);
        for (DemoBurst.Lane l : lanes) {
            if (l.failure != null) {
                problems.add("worker " + l.vmId + " ended during the burst (" + endOf(l) + ")");
            }
        }
        if (burst.wrong() > 0) {
            problems.add(burst.wrong() + " wrong replies, e.g. " + burst.wrongSamples());
        }

        // 4. What each host received as clone capsules.
        Map<Long, JsonNode> clones = new LinkedHashMap<>();
        for (LocalCluster.Node n : cluster.nodes()) {
            LocalCluster.status(n).ifPresent(st -> clones.put(n.hostId(), st.path("clones")));
        }
        return new Scenario(coldRow, rows, forked.errors(), burst, burstSeconds, clones);
    }

    private void askFirst(VmCluster api, VmInfo vm, long asked, Map<Long, CompletableFuture<Row>> firstAnswers) {
        CompletableFuture<Row> mine = new CompletableFuture<>();
        if (firstAnswers.putIfAbsent(vm.vmId(), mine) != null) {
            return;
        }
        api.request(vm.vmId(), bytes("id")).whenComplete((reply, failure) -> {
            long now = System.nanoTime();
            if (failure != null) {
                mine.completeExceptionally(failure);
                return;
            }
            try {
                checkIdentity(vm, text(reply));
                mine.complete(new Row(vm, (now - asked) / 1e6, null));
            } catch (DemoFailure f) {
                mine.completeExceptionally(f);
            }
        });
    }

    /** The guest's own idea of who it is must match what its host reported. */
    private static void checkIdentity(VmInfo vm, String reply) {
        WarmWorkerReplies.Identity id = WarmWorkerReplies.identity(reply);
        if (id == null || id.vmId() != vm.vmId() || id.parentId() != vm.parentId()
                || id.generation() != vm.forkGeneration() || id.hostId() != vm.hostId() || id.vmType() != vm.vmType()) {
            throw new DemoFailure(Main.EX_SOFTWARE, "VM " + vm.vmId() + " answered 'id' with '" + reply
                    + "', which does not match its host's report " + vm);
        }
    }

    private Runnable testStopHook(VmCluster api, long victim) {
        Integer after = Integer.getInteger(TEST_STOP_WORKER_AFTER);
        if (after == null) {
            return () -> { };
        }
        AtomicBoolean stopped = new AtomicBoolean();
        AtomicInteger replies = new AtomicInteger();
        return () -> {
            if (replies.incrementAndGet() >= after && stopped.compareAndSet(false, true)) {
                api.stop(victim);
            }
        };
    }

    /** A worker that failed a request is reported by its end event, which may trail the failure a little. */
    private void awaitEndEvents(List<DemoBurst.Lane> lanes) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(3);
        for (DemoBurst.Lane l : lanes) {
            while (l.failure != null && !ended.containsKey(l.vmId) && System.nanoTime() < deadline) {
                sleep(20);
            }
        }
    }

    /** How a worker ended, in a word or two (from its lifecycle event; else the failed request's error). */
    private String endOf(DemoBurst.Lane l) {
        VmEvent e = ended.get(l.vmId);
        if (e == null) {
            return "failed: " + l.failure;
        }
        return switch (e.kind()) {
            case CRASHED -> "crashed: " + e.detail();
            case EXITED -> "exited " + e.exitCode();
            case STOPPED -> "stopped";
            case LOST -> "lost with its host";
            default -> e.kind().name().toLowerCase();
        };
    }

    // ---- the table --------------------------------------------------------------------------

    private String table(LocalCluster cluster, Scenario s, double clusterSeconds, double totalSeconds) {
        StringBuilder b = new StringBuilder();
        String fmt = "%-7s %-14s %-7s %-6s %4s %16s %9s  %s%n";
        b.append('\n');
        b.append(String.format(fmt, "worker", "vm id", "host", "made", "gen", "ask->1st answer", "requests",
                "state"));
        Row c = s.cold();
        b.append(String.format(fmt, "cold", c.vm().vmId(), nodeName(cluster, c.vm().hostId()), c.made(),
                c.vm().forkGeneration(), ms(c.firstAnswerMs()), "-", "ok (the pool's parent)"));
        int i = 1;
        for (Row r : s.workers()) {
            String state = r.lane().failure == null ? "ok" : endOf(r.lane());
            b.append(String.format(fmt, "w" + i++, r.vm().vmId(), nodeName(cluster, r.vm().hostId()), r.made(),
                    r.vm().forkGeneration(), ms(r.firstAnswerMs()), String.format("%,d", r.lane().served.get()),
                    state));
        }
        for (String e : s.failedCopies()) {
            b.append("  copy not made: ").append(e).append('\n');
        }
        b.append('\n');
        double cold = c.firstAnswerMs();
        b.append(String.format("cold launch -> first answer %11s%n", ms(cold)));
        for (String made : List.of("child", "clone")) {
            double[] t = s.workers().stream().filter(r -> r.made().equals(made)).mapToDouble(Row::firstAnswerMs)
                    .toArray();
            if (t.length == 0) {
                b.append(String.format("%-26s %12s%n", made + ": none", "-"));
                continue;
            }
            double median = new Stats(t).median();
            b.append(String.format("%-26s %12s   cold launch / %s = %.1f%n", (made.equals("child") ? "fork (child)"
                    : "clone") + ", median of " + t.length, ms(median), made, cold / median));
        }
        DemoBurst burst = s.burst();
        b.append(String.format("requests: %,d of %,d served by %d workers in %.2f s (%,.0f/s), every reply checked:"
                        + " %,d wrong%n", burst.served(), options.requests(), s.workers().size(), s.burstSeconds(),
                s.burstSeconds() > 0 ? burst.served() / s.burstSeconds() : 0.0, burst.wrong()));
        List<String> received = new ArrayList<>();
        for (LocalCluster.Node n : cluster.nodes()) {
            JsonNode cl = s.clonesByHost().get(n.hostId());
            long capsules = cl == null ? 0 : cl.path("capsules_received").asLong();
            received.add(n.name() + " " + (cl == null || cl.isMissingNode() ? "?" : capsules == 0 ? "none"
                    : mib(cl.path("bytes_received").asLong()) + " (" + capsules + " capsule" + (capsules == 1 ? "" : "s")
                    + ")"));
        }
        b.append("capsules received: ").append(String.join(", ", received)).append('\n');
        b.append(String.format("cluster of %d node JVMs up and joined in %.1f s; the whole demo took %.1f s%n",
                cluster.nodes().size(), clusterSeconds, totalSeconds));
        return b.toString();
    }

    private static String ms(double v) {
        return v >= 100 ? String.format("%,.0f ms", v) : String.format("%.1f ms", v);
    }

    private static String mib(long bytes) {
        return bytes < (1 << 20) ? bytes + " B" : String.format("%.1f MiB", bytes / (double) (1 << 20));
    }

    private static String nodeName(LocalCluster cluster, long hostId) {
        return cluster.nodes().stream().filter(n -> n.hostId() == hostId).map(LocalCluster.Node::name).findFirst()
                .orElse("host " + hostId);
    }

    // ---- --keep -----------------------------------------------------------------------------

    private void keep(LocalCluster cluster, Scenario s) {
        System.out.println();
        System.out.println("The cluster keeps running (--keep) with its " + (1 + s.workers().size()) + " VMs:");
        for (LocalCluster.Node n : cluster.nodes()) {
            System.out.printf("  %-7s http://127.0.0.1:%d/   (pid %d; GET /status for JSON)%n", n.name(), n.httpPort(),
                    n.process().pid());
        }
        System.out.println("  node configs in " + cluster.configDir() + ", logs in " + cluster.logDir());
        System.out.println("Press Ctrl-C to stop it: every node and VM ends with this command.");
        System.out.flush();
        try {
            new CountDownLatch(1).await();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    // ---- helpers ----------------------------------------------------------------------------

    private <T> T await(CompletionStage<T> stage, String what) {
        return await(stage, what, () -> { });
    }

    /** Waits for {@code stage}, calling {@code tick} every 100 ms; a failure or timeout is a DemoFailure naming {@code what}. */
    private <T> T await(CompletionStage<T> stage, String what, Runnable tick) {
        CompletableFuture<T> f = stage.toCompletableFuture();
        long deadline = System.nanoTime() + STEP_TIMEOUT.toNanos();
        while (true) {
            try {
                return f.get(100, TimeUnit.MILLISECONDS);
            } catch (TimeoutException e) {
                if (System.nanoTime() > deadline) {
                    throw new DemoFailure(Main.EX_SOFTWARE, what + " did not complete within " + STEP_TIMEOUT);
                }
                tick.run();
            } catch (ExecutionException e) {
                Throwable cause = e.getCause() instanceof CompletionException ce
                        && ce.getCause() != null ? ce.getCause() : e.getCause();
                if (cause instanceof DemoFailure d) {
                    throw d;
                }
                throw new DemoFailure(Main.EX_SOFTWARE, what + " failed: " + cause.getMessage());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new DemoFailure(Main.EX_SOFTWARE, "interrupted waiting for " + what);
            }
        }
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String text(byte[] b) {
        return new String(b, StandardCharsets.UTF_8);
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
