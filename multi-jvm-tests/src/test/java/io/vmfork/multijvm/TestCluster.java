package io.vmfork.multijvm;

import com.fasterxml.jackson.databind.JsonNode;
import io.vmfork.cluster.security.ClusterCredentials;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Optional;
import java.util.Set;
import java.util.function.Predicate;
import java.util.stream.Collectors;
import org.junit.jupiter.api.extension.ExtensionContext;

/**
 * The node JVMs of one test, on loopback ports it picks (a {@link ServerSocket} bound to
 * port 0, then closed), with their configs and logs in
 * {@code target/multi-jvm-logs/<TestClass>.<test>/}. Every member has credentials of the
 * test's own cluster CA (in {@code certs/} there, created afresh for each test), so the
 * nodes talk over Artery TLS with mutual authentication as a deployed cluster does.
 * Closing it kills every node it started
 * with SIGKILL (and first stops the test JVM's own {@link ClientMember}, if any);
 * {@link MultiJvmExtension} closes it after each test, passed or failed, and
 * {@link NodeProcess}'s shutdown hook kills what is left should the test JVM itself die.
 */
final class TestCluster implements AutoCloseable, ExtensionContext.Store.CloseableResource {
    /** Pekko settings of every node of the tests: quick convergence and downing. */
    static final String NODE_DEFAULTS = """
            vmfork.node.downing.stable-after = 2s
            # Node JVMs on 2 cores, the process platform's guests among them: a placement
            # ask that meets a shard being moved after a node's death needs more than the
            # default 2 s.
            vmfork.node.placement.ask-timeout = 6s
            pekko {
              actor.serialize-messages = on
              cluster {
                jmx.enabled = off
                gossip-interval = 200ms
                leader-actions-interval = 200ms
                distributed-data.gossip-interval = 200ms
                distributed-data.notify-subscribers-interval = 50ms
              }
            }
            """;

    private final Path dir;
    private final Path certs;
    private final ClusterCredentials.Authority ca;
    private final List<NodeProcess> nodes = new ArrayList<>();
    private final List<ClientMember> clients = new ArrayList<>();

    TestCluster(String testName) {
        this.dir = Path.of(System.getProperty("vmfork.multijvm.logs", "target/multi-jvm-logs"), testName)
                .toAbsolutePath();
        this.certs = dir.resolve("certs");
        try {
            Files.createDirectories(dir);
            deleteTree(certs);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        this.ca = ClusterCredentials.createAuthority(certs, "vmfork");
    }

    /**
     * HOCON that gives a member {@code name} its own certificate of this test's CA
     * ({@code vmfork.security}), issued now.
     */
    String credentials(String name, ClusterCredentials.Role role) {
        return securityConfig(ClusterCredentials.issue(ca, certs, name, role, Duration.ofDays(1)));
    }

    /** The {@code vmfork.security} HOCON of {@code files}. */
    static String securityConfig(ClusterCredentials.MemberFiles files) {
        return "vmfork.security { key-file = \"" + files.keyFile() + "\", cert-file = \"" + files.certFile()
                + "\", ca-cert-file = \"" + files.caCertFile() + "\" }\n";
    }

    private static void deleteTree(Path p) throws IOException {
        if (!Files.exists(p)) {
            return;
        }
        try (var walk = Files.walk(p)) {
            for (Path f : walk.sorted(java.util.Comparator.reverseOrder()).toList()) {
                Files.delete(f);
            }
        }
    }

    /**
     * A free loopback port (free when this returns; nodes bind it moments later), below the
     * kernel's ephemeral range (net.ipv4.ip_local_port_range starts at 32768): a port the
     * kernel handed out (ServerSocket(0)) could be taken meanwhile by an outgoing
     * connection of the many the nodes make, and the node's bind then fails.
     */
    static int freePort() {
        java.util.concurrent.ThreadLocalRandom r = java.util.concurrent.ThreadLocalRandom.current();
        for (int attempt = 0; attempt < 1000; attempt++) {
            int port = r.nextInt(FIRST_PORT, EPHEMERAL_START);
            if (!HANDED_OUT.add(port)) {
                continue; // handed out before: its node may not have bound it yet
            }
            try (ServerSocket s = new ServerSocket()) {
                s.setReuseAddress(true);
                s.bind(new java.net.InetSocketAddress(java.net.InetAddress.getLoopbackAddress(), port));
                return s.getLocalPort();
            } catch (IOException e) {
                // taken: try another
            }
        }
        throw new UncheckedIOException(new IOException("no free loopback port in [" + FIRST_PORT + ", "
                + EPHEMERAL_START + ")"));
    }

    private static final int FIRST_PORT = 20000;
    /** Ports this JVM has handed out, never handed out twice (a node binds its port a moment later). */
    private static final java.util.Set<Integer> HANDED_OUT = java.util.concurrent.ConcurrentHashMap.newKeySet();
    private static final int EPHEMERAL_START = 32768;

    /**
     * Starts a node JVM: host {@code hostId}, named {@code name}, joining through
     * {@code seed} (null: it forms the cluster), with {@code extraConfig} (HOCON) over the
     * defaults.
     */
    NodeProcess start(String name, long hostId, NodeProcess seed, String extraConfig) {
        return start(name, hostId, seed, extraConfig, freePort());
    }

    /** As {@link #start(String, long, NodeProcess, String)}, with its status on {@code httpPort}. */
    NodeProcess start(String name, long hostId, NodeProcess seed, String extraConfig, int httpPort) {
        return start(name, hostId, "127.0.0.1", List.of(), seed, extraConfig, httpPort);
    }

    /**
     * As {@link #start(String, long, NodeProcess, String)}, for a node at {@code hostname}
     * (its Artery, its transfer server and its status all bind that address) started
     * through {@code prefix}, e.g. in a network namespace of its own
     * ({@link NetworkNamespaces#exec}).
     */
    NodeProcess start(String name, long hostId, String hostname, List<String> prefix, NodeProcess seed,
                      String extraConfig) {
        return start(name, hostId, hostname, prefix, seed, extraConfig, freePort());
    }

    private NodeProcess start(String name, long hostId, String hostname, List<String> prefix, NodeProcess seed,
                              String extraConfig, int httpPort) {
        int port = freePort();
        String config = "vmfork.host { id = " + hostId + ", name = \"" + name + "\" }\n"
                + "vmfork.node { hostname = \"" + hostname + "\", port = " + port + ", status.http-port = " + httpPort
                + ", status.bind = \"" + hostname + "\""
                + ", seed-nodes = [" + (seed == null ? "" : "\"" + seed.hostPort() + "\"") + "] }\n"
                + credentials(name, ClusterCredentials.Role.NODE) + NODE_DEFAULTS + extraConfig + "\n";
        try {
            Path file = dir.resolve(name + ".conf");
            Files.writeString(file, config);
            NodeProcess node = NodeProcess.start(name, hostId, hostname, port, httpPort, file,
                    dir.resolve(name + ".log"), prefix);
            nodes.add(node);
            return node;
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start node " + name, e);
        }
    }

    /** The test JVM joins the cluster through {@code seed} as a member without capacity. */
    ClientMember joinAsClient(NodeProcess seed, String extraConfig) {
        return joinAsClient(seed, "127.0.0.1", extraConfig);
    }

    /** As {@link #joinAsClient(NodeProcess, String)}, with the test JVM's Artery at {@code hostname}. */
    ClientMember joinAsClient(NodeProcess seed, String hostname, String extraConfig) {
        ClientMember client = ClientMember.join(seed.hostPort(), hostname, freePort(),
                credentials("test-client", ClusterCredentials.Role.CLIENT) + NODE_DEFAULTS + extraConfig);
        clients.add(client);
        return client;
    }

    /**
     * Waits until {@code condition} holds for the /status of every node in {@code of}, and
     * returns how long that took.
     *
     * @throws AssertionError after {@code within}, with the last status and log of a node
     *                        for which it did not hold
     */
    static Duration awaitStatus(List<NodeProcess> of, Predicate<JsonNode> condition, Duration within, String what)
            throws InterruptedException {
        long start = System.nanoTime();
        long deadline = start + within.toNanos();
        Set<NodeProcess> pending = new HashSet<>(of);
        while (true) {
            for (NodeProcess n : List.copyOf(pending)) {
                Optional<JsonNode> s = n.status();
                if (s.isPresent() && condition.test(s.get())) {
                    pending.remove(n);
                }
            }
            if (pending.isEmpty()) {
                return Duration.ofNanos(System.nanoTime() - start);
            }
            if (System.nanoTime() > deadline) {
                NodeProcess n = pending.iterator().next();
                throw new AssertionError("not within " + within + ": " + what + " on " + n + (n.isAlive() ? "" : " (exited)")
                        + "\nits status: " + n.status().map(JsonNode::toString).orElse("(none)")
                        + "\nits log:\n" + n.tail());
            }
            Thread.sleep(200);
        }
    }

    /** The addresses of the members that a status lists as Up. */
    static Set<String> upMembers(JsonNode status) {
        Set<String> up = new HashSet<>();
        for (JsonNode m : status.path("cluster").path("members")) {
            if (m.path("status").asText().equals("Up")) {
                up.add(m.path("address").asText());
            }
        }
        return up;
    }

    /** The addresses of all members a status lists, whatever their status. */
    static Set<String> members(JsonNode status) {
        Set<String> all = new HashSet<>();
        for (JsonNode m : status.path("cluster").path("members")) {
            all.add(m.path("address").asText());
        }
        return all;
    }

    /** The host ids of the members whose load report a status shows. */
    static Set<Long> reportedHosts(JsonNode status) {
        Set<Long> ids = new HashSet<>();
        for (JsonNode m : status.path("cluster").path("members")) {
            if (m.path("host").isObject()) {
                ids.add(m.path("host").path("host_id").asLong());
            }
        }
        return ids;
    }

    /** Whether a status shows exactly {@code nodes} (and {@code extra} other members) Up, each reachable. */
    static Predicate<JsonNode> exactlyUp(List<NodeProcess> nodes, int extra) {
        Set<String> want = nodes.stream().map(NodeProcess::address).collect(Collectors.toSet());
        return s -> {
            Set<String> up = upMembers(s);
            boolean reachable = true;
            for (JsonNode m : s.path("cluster").path("members")) {
                reachable &= m.path("reachable").asBoolean();
            }
            return reachable && up.containsAll(want) && up.size() == want.size() + extra
                    && members(s).size() == want.size() + extra;
        };
    }

    /** Whether a status shows the load reports of all of {@code nodes}' hosts. */
    static Predicate<JsonNode> reported(List<NodeProcess> nodes) {
        Set<Long> want = nodes.stream().map(NodeProcess::hostId).collect(Collectors.toSet());
        return s -> reportedHosts(s).containsAll(want);
    }

    Path dir() {
        return dir;
    }

    @Override
    public void close() {
        for (ClientMember c : clients) {
            c.close();
        }
        clients.clear();
        for (NodeProcess n : nodes) {
            try {
                n.kill();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        nodes.clear();
    }
}
