package io.vmfork.multijvm;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.File;
import java.io.IOException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;

/**
 * One vmfork node as a JVM process of its own: {@code java -cp <this JVM's class path>
 * io.vmfork.multijvm.NodeMain <this JVM's pid> CONFIG}, which runs
 * {@code io.vmfork.cluster.node.VmforkNode CONFIG} and halts if this JVM dies; its output
 * goes to a log file. Every process started here is also in a JVM-wide registry that a
 * shutdown hook kills, so that none outlives the test run, whatever happens to the test.
 */
final class NodeProcess implements AutoCloseable {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final HttpClient HTTP = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(2)).build();
    private static final Set<Process> LIVE = ConcurrentHashMap.newKeySet();

    static {
        Runtime.getRuntime().addShutdownHook(new Thread(() -> LIVE.forEach(Process::destroyForcibly),
                "multi-jvm-node-killer"));
    }

    private final String name;
    private final long hostId;
    private final String hostname;
    private final int port;
    private final int httpPort;
    private final Path log;
    private final Process process;

    private NodeProcess(String name, long hostId, String hostname, int port, int httpPort, Path log,
                        Process process) {
        this.name = name;
        this.hostId = hostId;
        this.hostname = hostname;
        this.port = port;
        this.httpPort = httpPort;
        this.log = log;
        this.process = process;
    }

    /**
     * Starts the node configured by {@code config} (a file this JVM wrote), logging to
     * {@code log}.
     */
    static NodeProcess start(String name, long hostId, int port, int httpPort, Path config, Path log)
            throws IOException {
        return start(name, hostId, "127.0.0.1", port, httpPort, config, log, List.of());
    }

    /**
     * As {@link #start(String, long, int, int, Path, Path)}, for a node whose Artery and
     * status are at {@code hostname}, run through {@code prefix} (e.g. {@code ip netns exec
     * NS}, which execs the JVM: the process is still the node's own).
     */
    static NodeProcess start(String name, long hostId, String hostname, int port, int httpPort, Path config,
                             Path log, List<String> prefix) throws IOException {
        List<String> cmd = new ArrayList<>(prefix);
        cmd.add(Path.of(System.getProperty("java.home"), "bin", "java").toString());
        // Small and quick to start: the nodes share two cores with the test JVM.
        cmd.addAll(List.of("-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Xshare:auto",
                "-Dvmfork.log.level=INFO", "-cp", classPath(), NodeMain.class.getName(),
                Long.toString(ProcessHandle.current().pid()), config.toString()));
        Files.createDirectories(log.getParent());
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true)
                .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile())).start();
        LIVE.add(p);
        p.onExit().thenRun(() -> LIVE.remove(p));
        return new NodeProcess(name, hostId, hostname, port, httpPort, log, p);
    }

    // Surefire runs tests with the class path in java.class.path (useManifestOnlyJar=false);
    // surefire.test.class.path is the same, should the booter jar be in use after all.
    private static String classPath() {
        String cp = System.getProperty("surefire.test.class.path");
        if (cp == null || cp.isBlank()) {
            cp = System.getProperty("java.class.path");
        }
        if (!cp.contains("vmfork") && !cp.contains(File.separator + "classes")) {
            throw new IllegalStateException("the test class path does not hold the vmfork classes: " + cp);
        }
        return cp;
    }

    String name() {
        return name;
    }

    long hostId() {
        return hostId;
    }

    /** The node's Artery port. */
    int port() {
        return port;
    }

    int httpPort() {
        return httpPort;
    }

    /** {@code host:port} for other nodes' seed lists. */
    String hostPort() {
        return hostname + ":" + port;
    }

    /** The node's Pekko address, as cluster members and /status name it. */
    String address() {
        return "pekko://vmfork@" + hostname + ":" + port;
    }

    Path log() {
        return log;
    }

    /** The node's process, e.g. to find its guest processes among its descendants. */
    ProcessHandle handle() {
        return process.toHandle();
    }

    boolean isAlive() {
        return process.isAlive();
    }

    long pid() {
        return process.pid();
    }

    /** The node's {@code GET /status}, or empty when it does not answer (yet, or any more). */
    Optional<JsonNode> status() {
        return getJson("/status");
    }

    /** The JSON the node's status server answers to {@code GET path}, or empty when it does not answer. */
    Optional<JsonNode> getJson(String path) {
        try {
            HttpResponse<String> r = HTTP.send(HttpRequest.newBuilder(
                            URI.create("http://" + hostname + ":" + httpPort + path)).timeout(Duration.ofSeconds(3)).build(),
                    HttpResponse.BodyHandlers.ofString());
            return r.statusCode() == 200 ? Optional.of(JSON.readTree(r.body())) : Optional.empty();
        } catch (IOException e) {
            return Optional.empty();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return Optional.empty();
        }
    }

    /** SIGKILL: the node dies at once, leaving nothing behind and telling no one. */
    void kill() throws InterruptedException {
        process.destroyForcibly();
        process.waitFor(10, TimeUnit.SECONDS);
    }

    /** SIGTERM: the node leaves the cluster and stops (its coordinated shutdown). */
    void terminate() {
        process.destroy();
    }

    /** The exit code once the process has exited within {@code within}; empty if it has not. */
    Optional<Integer> awaitExit(Duration within) throws InterruptedException {
        return process.waitFor(within.toMillis(), TimeUnit.MILLISECONDS) ? Optional.of(process.exitValue())
                : Optional.empty();
    }

    /** The last lines of the node's log, for a failure message. */
    String tail() {
        try {
            List<String> lines = Files.readAllLines(log);
            return String.join("\n", lines.subList(Math.max(0, lines.size() - 30), lines.size()));
        } catch (IOException e) {
            return "(no log: " + e + ")";
        }
    }

    @Override
    public void close() throws InterruptedException {
        kill();
    }

    @Override
    public String toString() {
        return name + " (host " + hostId + " at " + hostname + ", pid " + process.pid() + ", port " + port + ", http " + httpPort + ")";
    }
}
