package io.vmfork.cli;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.File;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * A cluster of vmfork nodes on this machine, each a JVM of its own: {@code java -cp <this
 * JVM's class path> io.vmfork.cluster.node.VmforkNode CONFIG}, on free loopback ports, with
 * configs generated in a temporary directory (deleted on close) and logs in another (kept
 * only when {@link #keepLogs} was called, e.g. after a failure). {@link #start} returns once
 * every node's {@code GET /status} shows all of them Up. {@link #close} kills every node
 * (SIGKILL); a shutdown hook does the same when this JVM exits first (Ctrl-C included).
 * A SIGKILL of this JVM itself leaves the nodes running: nothing can catch it.
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
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();

    /** One node JVM. */
    record Node(String name, long hostId, int port, int httpPort, Process process, Path log) {
        /** {@code host:port} for seed lists. */
        String hostPort() {
            return "127.0.0.1:" + port;
        }

        String address() {
            return "pekko://vmfork@127.0.0.1:" + port;
        }
    }

    private final Path configDir;
    private final Path logDir;
    private final List<Node> nodes = new ArrayList<>();
    private final Thread killer = new Thread(this::killAll, "vmfork-local-cluster-killer");
    private volatile boolean keepLogs;

    private LocalCluster() throws IOException {
        this.configDir = Files.createTempDirectory("vmfork-cluster-conf-");
        this.logDir = Files.createTempDirectory("vmfork-cluster-logs-");
        Runtime.getRuntime().addShutdownHook(killer);
    }

    /**
     * Starts {@code count} nodes with host ids {@code firstHostId}, {@code firstHostId + 1}, ...,
     * the first one forming the cluster, with {@code extraConfig} (HOCON) over
     * {@link #NODE_DEFAULTS}, and waits up to {@code within} until each node's status shows
     * all of them Up. On failure every node is killed and the logs are kept (the exception
     * names their directory).
     */
    static LocalCluster start(int count, long firstHostId, String extraConfig, Duration within) {
        LocalCluster c;
        try {
            c = new LocalCluster();
        } catch (IOException e) {
            throw new UncheckedIOException("cannot create the local cluster's temporary directories", e);
        }
        try {
            for (int i = 0; i < count; i++) {
                c.startNode("node-" + (i + 1), firstHostId + i, c.nodes.isEmpty() ? null : c.nodes.get(0), extraConfig);
            }
            c.awaitAllUp(within);
            return c;
        } catch (RuntimeException | Error e) {
            c.keepLogs();
            c.close();
            throw e;
        }
    }

    /** A free loopback port (free when this returns; a node binds it moments later). */
    static int freePort() {
        try (ServerSocket s = new ServerSocket(0)) {
            s.setReuseAddress(true);
            return s.getLocalPort();
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    private void startNode(String name, long hostId, Node seed, String extraConfig) {
        int port = freePort();
        int httpPort = freePort();
        String config = "vmfork.host { id = " + hostId + ", name = \"" + name + "\" }\n"
                + "vmfork.node { hostname = \"127.0.0.1\", port = " + port + ", status.http-port = " + httpPort
                + ", seed-nodes = [" + (seed == null ? "" : "\"" + seed.hostPort() + "\"") + "] }\n"
                + NODE_DEFAULTS + extraConfig + "\n";
        try {
            Path file = configDir.resolve(name + ".conf");
            Files.writeString(file, config);
            Path log = logDir.resolve(name + ".log");
            List<String> cmd = List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                    "-Xmx512m", "-XX:+UseSerialGC", "-cp", System.getProperty("java.class.path"),
                    "io.vmfork.cluster.node.VmforkNode", "--parent-pid",
                    Long.toString(ProcessHandle.current().pid()), file.toString());
            Process p = new ProcessBuilder(cmd).redirectErrorStream(true)
                    .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
            nodes.add(new Node(name, hostId, port, httpPort, p, log));
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start node " + name, e);
        }
    }

    private void awaitAllUp(Duration within) {
        long deadline = System.nanoTime() + within.toNanos();
        for (Node n : nodes) {
            while (upMembers(n) < nodes.size()) {
                if (!n.process().isAlive()) {
                    throw new IllegalStateException(n.name() + " exited with " + n.process().exitValue()
                            + " while starting; its log: " + n.log());
                }
                if (System.nanoTime() > deadline) {
                    throw new IllegalStateException(n.name() + " does not see all " + nodes.size()
                            + " nodes Up within " + within + "; logs in " + logDir);
                }
                sleep(100);
            }
        }
    }

    /** How many members a node's /status lists as Up; 0 when it does not answer (yet). */
    private static int upMembers(Node n) {
        try {
            HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(
                            URI.create("http://127.0.0.1:" + n.httpPort() + "/status")).timeout(Duration.ofSeconds(3))
                    .build(), HttpResponse.BodyHandlers.ofString());
            if (r.statusCode() != 200) {
                return 0;
            }
            int up = 0;
            for (JsonNode m : JSON.readTree(r.body()).path("cluster").path("members")) {
                if (m.path("status").asText().equals("Up")) {
                    up++;
                }
            }
            return up;
        } catch (IOException e) {
            return 0;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted waiting for the local cluster", e);
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

    private void killAll() {
        for (Node n : nodes) {
            n.process().destroyForcibly();
        }
        for (Node n : nodes) {
            try {
                n.process().waitFor(10, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** Kills every node, deletes the configs, and the logs unless they are kept. */
    @Override
    public void close() {
        killAll();
        try {
            Runtime.getRuntime().removeShutdownHook(killer);
        } catch (IllegalStateException e) {
            // Already shutting down: the hook runs (or ran) killAll too.
        }
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
