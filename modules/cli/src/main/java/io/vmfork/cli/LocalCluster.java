package io.vmfork.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import io.vmfork.cluster.security.ClusterCredentials;
import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import java.util.function.BiConsumer;
import java.util.function.Consumer;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;

/**
 * A cluster of vmfork nodes on this machine, each a JVM of its own started the way a real
 * deployment starts one, {@code vmfork node}: {@code java -cp <this JVM's class path>
 * io.vmfork.cli.Main node --parent-pid <this JVM> --config FILE}, with generated configs in
 * a temporary directory (deleted on close) and logs in another (kept only when
 * {@link #keepLogs} was called, e.g. after a failure). Every node binds ports of its own
 * choosing (port 0, unless a status port is asked for) and reports them in its start line
 * ({@link NodeCommand}), so that clusters started at the same time never collide; node 1
 * starts first and forms the cluster, the others join it. {@link #start} returns once every
 * node's {@code GET /status} shows all of them Up. {@link #close} kills every node
 * (SIGKILL); a shutdown hook does the same when this JVM exits first (Ctrl-C included),
 * and each node stops by itself once this JVM is gone, even after a SIGKILL of it
 * ({@code --parent-pid}). Each node's command line carries {@code -Dvmfork.local-cluster=PID}
 * (this JVM's pid), so that its processes can be told from others'.
 *
 * <p>Unless started with {@code tls} off (a benchmark's baseline), the cluster is secured
 * as a deployed one: a throw-away cluster CA in the config directory (deleted with it), a
 * certificate per node, and one per member that joins from this JVM
 * ({@link #memberCredentials}), so Artery runs over TLS with mutual authentication.
 */
final class LocalCluster implements AutoCloseable {
    /** Quick convergence and downing for a cluster that lives seconds. */
    static final String NODE_DEFAULTS = """
            vmfork.node.downing.stable-after = 2s
            pekko {
              loglevel = WARNING
              cluster {
                jmx.enabled = off
                gossip-interval = 200ms
                leader-actions-interval = 200ms
                distributed-data.gossip-interval = 200ms
                distributed-data.notify-subscribers-interval = 50ms
              }
            }
            """;
    /** The system property on every node's command line; its value is this JVM's pid. */
    static final String MARKER = "vmfork.local-cluster";
    /** Lines of a node's log shown when it did not start. */
    static final int LOG_TAIL = 12;
    private static final Pattern STARTED = Pattern.compile("vmfork node: host (\\d+) \\((.*)\\) at pekko://[^@]+@"
            + "([^:]+):(\\d+), seeds \\[.*?\\](?:, status at http://[^:]+:(\\d+)/status(?:, cluster page at \\S+)?)?");
    private static final Pattern STACK_FRAME = Pattern.compile("\\s+(at .*|\\.\\.\\. \\d+ more)");
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();

    /** One node JVM, with the ports it bound. */
    record Node(String name, long hostId, int port, int httpPort, Process process, Path config, Path log) {
        /** {@code host:port} for seed lists. */
        String hostPort() {
            return "127.0.0.1:" + port;
        }

        String address() {
            return "pekko://vmfork@127.0.0.1:" + port;
        }
    }

    /** A node that did not start: how it ended (or that it did not report in time) and its log's last lines. */
    static final class NodeStartException extends RuntimeException {
        private final String node;
        private final List<String> logTail;
        private final Path log;

        NodeStartException(String node, String what, List<String> logTail, Path log) {
            super(node + " " + what + "; the last lines of its log (" + log + "):\n  "
                    + String.join("\n  ", logTail));
            this.node = node;
            this.logTail = List.copyOf(logTail);
            this.log = log;
        }

        String node() {
            return node;
        }

        List<String> logTail() {
            return logTail;
        }

        Path log() {
            return log;
        }
    }

    /** A node process started but not yet reported. */
    private record Starting(String name, long hostId, Process process, Path config, Path log) {
    }

    private final Path configDir;
    private final Path logDir;
    /** The throw-away CA; empty: the nodes run Artery over plain TCP (loopback only). */
    private final Optional<ClusterCredentials.Authority> ca;
    private final List<Process> processes = new ArrayList<>();
    private final List<Node> nodes = new ArrayList<>();
    private final Thread killer = new Thread(this::shutdown, "vmfork-local-cluster-killer");
    private final java.util.concurrent.atomic.AtomicBoolean closed = new java.util.concurrent.atomic.AtomicBoolean();
    private volatile boolean keepLogs;

    private LocalCluster(boolean tls) throws IOException {
        this.configDir = Files.createTempDirectory("vmfork-cluster-conf-");
        this.logDir = Files.createTempDirectory("vmfork-cluster-logs-");
        Runtime.getRuntime().addShutdownHook(killer);
        this.ca = tls ? Optional.of(ClusterCredentials.createAuthority(configDir.resolve("certs"), "vmfork"))
                : Optional.empty();
    }

    /** {@link #start(int, long, String, int, Duration, Consumer, BiConsumer)} on free ports, without progress. */
    static LocalCluster start(int count, long firstHostId, String extraConfig, Duration within) {
        return start(count, firstHostId, extraConfig, 0, within, s -> { }, (c, n) -> { });
    }

    /** As {@link #start(int, long, String, Duration)}, over TLS or, with {@code tls} off, plain TCP. */
    static LocalCluster start(boolean tls, int count, long firstHostId, String extraConfig, Duration within) {
        return start(tls, count, firstHostId, extraConfig, 0, within, s -> { }, (c, n) -> { });
    }

    /** Whether the nodes run Artery over TLS. */
    boolean tls() {
        return ca.isPresent();
    }

    /**
     * HOCON that gives a member of this cluster named {@code name} its own certificate of the
     * cluster's CA (issued now); empty when the cluster runs without TLS.
     */
    String memberCredentials(String name, ClusterCredentials.Role role) {
        if (ca.isEmpty()) {
            return "";
        }
        ClusterCredentials.MemberFiles f = ClusterCredentials.issue(ca.get(), configDir.resolve("certs"), name, role,
                Duration.ofDays(1));
        return "vmfork.security { key-file = \"" + f.keyFile() + "\", cert-file = \"" + f.certFile()
                + "\", ca-cert-file = \"" + f.caCertFile() + "\" }\n";
    }

    /**
     * Starts {@code count} nodes named node-1, node-2, ... with host ids {@code firstHostId},
     * {@code firstHostId + 1}, ..., the first one forming the cluster, with {@code extraConfig}
     * (HOCON) over {@link #NODE_DEFAULTS}, and waits up to {@code within} until each node's
     * status shows all of them Up. Node i serves its status at {@code firstStatusPort + i - 1},
     * or on a free port when {@code firstStatusPort} is 0. {@code progress} hears what
     * happens (a few words at a time); {@code firstUp} gets node 1 as soon as it runs (the
     * others start then), with the cluster, e.g. to join it meanwhile. On failure every node is killed
     * and the logs are kept.
     *
     * @throws NodeStartException when a node exits or does not report its start in time
     */
    static LocalCluster start(int count, long firstHostId, String extraConfig, int firstStatusPort, Duration within,
                              Consumer<String> progress, BiConsumer<LocalCluster, Node> firstUp) {
        return start(true, count, firstHostId, extraConfig, firstStatusPort, within, progress, firstUp);
    }

    private static LocalCluster start(boolean tls, int count, long firstHostId, String extraConfig, int firstStatusPort,
                                      Duration within, Consumer<String> progress, BiConsumer<LocalCluster, Node> firstUp) {
        LocalCluster c;
        try {
            c = new LocalCluster(tls);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create the local cluster's temporary directories", e);
        }
        try {
            long deadline = System.nanoTime() + within.toNanos();
            progress.accept("starting node-1");
            Node first = c.awaitStarted(c.startNode(1, firstHostId, statusPort(firstStatusPort, 1), null, extraConfig),
                    deadline, within);
            c.nodes.add(first);
            firstUp.accept(c, first);
            List<Starting> rest = new ArrayList<>();
            for (int i = 2; i <= count; i++) {
                rest.add(c.startNode(i, firstHostId + i - 1, statusPort(firstStatusPort, i), first, extraConfig));
            }
            if (!rest.isEmpty()) {
                progress.accept("node-1 up; starting " + String.join(", ", rest.stream().map(Starting::name).toList()));
            }
            for (Starting s : rest) {
                c.nodes.add(c.awaitStarted(s, deadline, within));
            }
            progress.accept("waiting until all " + count + " nodes see each other Up");
            c.awaitAllUp(deadline, within);
            return c;
        } catch (RuntimeException | Error e) {
            c.keepLogs();
            c.close();
            throw e;
        }
    }

    private static int statusPort(int first, int index) {
        return first == 0 ? 0 : first + index - 1;
    }

    /** A free loopback port (free when this returns; someone may bind it moments later). */
    static int freePort() {
        try (ServerSocket s = new ServerSocket(0)) {
            s.setReuseAddress(true);
            return s.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private Starting startNode(int index, long hostId, int statusPort, Node seed, String extraConfig) {
        String name = "node-" + index;
        String config = "vmfork.host { id = " + hostId + ", name = \"" + name + "\" }\n"
                + "vmfork.node { hostname = \"127.0.0.1\", port = 0, status.http-port = " + statusPort
                + ", seed-nodes = [" + (seed == null ? "" : "\"" + seed.hostPort() + "\"") + "] }\n"
                + memberCredentials(name, ClusterCredentials.Role.NODE) + NODE_DEFAULTS + extraConfig + "\n";
        try {
            Path file = configDir.resolve(name + ".conf");
            Files.writeString(file, config);
            Path log = logDir.resolve(name + ".log");
            String self = Long.toString(ProcessHandle.current().pid());
            List<String> cmd = List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                    "-Xmx512m", "-XX:+UseSerialGC", "-D" + MARKER + "=" + self, "-cp",
                    System.getProperty("java.class.path"), Main.class.getName(), "node", "--parent-pid", self,
                    "--config", file.toString());
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
            synchronized (processes) {
                processes.add(p);
            }
            return new Starting(name, hostId, p, file, log);
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start " + name, e);
        }
    }

    /** Waits for the node's start line and reads the ports it bound from it. */
    private Node awaitStarted(Starting s, long deadline, Duration within) {
        while (true) {
            Optional<Matcher> m = startLine(s.log());
            if (m.isPresent()) {
                String http = m.get().group(5);
                return new Node(s.name(), s.hostId(), Integer.parseInt(m.get().group(4)),
                        http == null ? -1 : Integer.parseInt(http), s.process(), s.config(), s.log());
            }
            if (!s.process().isAlive()) {
                throw new NodeStartException(s.name(), "did not start (exit " + s.process().exitValue() + ")",
                        logTail(s.log(), LOG_TAIL), s.log());
            }
            if (System.nanoTime() > deadline) {
                throw new NodeStartException(s.name(), "did not report its start within " + within,
                        logTail(s.log(), LOG_TAIL), s.log());
            }
            sleep(50);
        }
    }

    private static Optional<Matcher> startLine(Path log) {
        for (String line : readLines(log)) {
            Matcher m = STARTED.matcher(line);
            if (m.matches()) {
                return Optional.of(m);
            }
        }
        return Optional.empty();
    }

    /**
     * The last {@code n} lines of a node's log, without the logging framework's start-up
     * notices and the frames of stack traces (the exceptions' own lines stay).
     */
    static List<String> logTail(Path log, int n) {
        List<String> lines = readLines(log).stream().filter(l -> !l.isBlank() && !l.startsWith("SLF4J(")
                && !STACK_FRAME.matcher(l).matches()).toList();
        return lines.subList(Math.max(0, lines.size() - n), lines.size());
    }

    private static List<String> readLines(Path log) {
        try {
            return List.of(new String(Files.readAllBytes(log), StandardCharsets.UTF_8).split("\n"));
        } catch (IOException e) {
            return List.of();
        }
    }

    private void awaitAllUp(long deadline, Duration within) {
        for (Node n : nodes) {
            while (upMembers(n) < nodes.size()) {
                if (!n.process().isAlive()) {
                    throw new NodeStartException(n.name(), "exited with " + n.process().exitValue()
                            + " while the cluster formed", logTail(n.log(), LOG_TAIL), n.log());
                }
                if (System.nanoTime() > deadline) {
                    throw new NodeStartException(n.name(), "does not see all " + nodes.size() + " nodes Up within "
                            + within, logTail(n.log(), LOG_TAIL), n.log());
                }
                sleep(100);
            }
        }
    }

    /** How many members a node's /status lists as Up; 0 when it does not answer (yet). */
    private static int upMembers(Node n) {
        Optional<JsonNode> status = status(n);
        int up = 0;
        if (status.isPresent()) {
            for (JsonNode m : status.get().path("cluster").path("members")) {
                if (m.path("status").asText().equals("Up")) {
                    up++;
                }
            }
        }
        return up;
    }

    /** A node's {@code GET /status}, empty when it does not answer. */
    static Optional<JsonNode> status(Node n) {
        if (n.httpPort() < 0) {
            return Optional.empty();
        }
        try {
            HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(
                            URI.create("http://127.0.0.1:" + n.httpPort() + "/status")).timeout(Duration.ofSeconds(3))
                    .build(), HttpResponse.BodyHandlers.ofString());
            return r.statusCode() == 200 ? Optional.of(JSON.readTree(r.body())) : Optional.empty();
        } catch (IOException e) {
            return Optional.empty();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted asking " + n.name() + " for its status", e);
        }
    }

    List<Node> nodes() {
        return List.copyOf(nodes);
    }

    /** {@code host:port} of the first node, for a member that joins the cluster. */
    String seed() {
        return nodes.get(0).hostPort();
    }

    /** Keep the node logs when closing (after a failure): their directory is printed then. */
    void keepLogs() {
        keepLogs = true;
    }

    Path logDir() {
        return logDir;
    }

    Path configDir() {
        return configDir;
    }

    private void killAll() {
        List<Process> all;
        synchronized (processes) {
            all = List.copyOf(processes);
        }
        for (Process p : all) {
            p.destroyForcibly();
        }
        for (Process p : all) {
            try {
                p.waitFor(10, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** Kills every node, deletes the configs, and the logs unless they are kept. */
    @Override
    public void close() {
        shutdown();
        try {
            Runtime.getRuntime().removeShutdownHook(killer);
        } catch (IllegalStateException e) {
            // Already shutting down: the hook runs (or ran) shutdown too.
        }
    }

    /** What close does, once; also this JVM's shutdown hook (Ctrl-C). */
    private void shutdown() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        killAll();
        delete(configDir);
        if (keepLogs) {
            System.err.println("vmfork: the local cluster's node logs are in " + logDir);
        } else {
            delete(logDir);
        }
    }

    private static void delete(Path dir) {
        try (Stream<Path> s = Files.walk(dir)) {
            s.sorted(Comparator.reverseOrder()).map(Path::toFile).forEach(File::delete);
        } catch (IOException e) {
            System.err.println("vmfork: cannot delete " + dir + ": " + e);
        }
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted waiting for the local cluster", e);
        }
    }
}
