package io.vmfork.multijvm;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
import java.util.concurrent.TimeUnit;

/**
 * A star of network namespaces for tests of network faults: node {@code i} (1..n) lives in
 * namespace {@code vmfnf-n<i>} at 10.77.0.{@code i}/24, joined by a veth pair to a bridge in
 * namespace {@code vmfnf-br}; the test JVM itself (in the root namespace) is on the same
 * bridge at {@link #CLIENT_ADDRESS} through one more veth pair. {@link #cut} sets the
 * bridge's end of one node's pair down (the node's own end keeps its address and loses its
 * carrier: its packets go nowhere, with no error to either side, as in a pulled cable), so
 * that node is cut off from every other member; {@link #restore} sets it up again.
 *
 * <p>Everything made here is named with {@link #PREFIX}: {@link #close} and
 * {@link #removeLeftovers} (run before a topology is made, in case an earlier run was
 * killed) delete every namespace and root-namespace link of that name, and with a
 * namespace its links and its end of each pair go too. Needs root and {@code ip}
 * (iproute2): {@link #unavailableReason} says why not, for a test to skip visibly.
 */
final class NetworkNamespaces implements AutoCloseable {
    /** Every namespace and link made here starts with it (Linux caps a link's name at 15 characters). */
    static final String PREFIX = "vmfnf";
    /** The test JVM's address on the bridge. */
    static final String CLIENT_ADDRESS = "10.77.0.100";
    private static final String BRIDGE_NS = PREFIX + "-br";
    private static final String CLIENT_LINK = PREFIX + "0t";

    private final int nodes;

    private NetworkNamespaces(int nodes) {
        this.nodes = nodes;
    }

    /** Why this host cannot make the namespaces (not root, no {@code ip netns}), or empty when it can. */
    static Optional<String> unavailableReason() {
        if (!"root".equals(System.getProperty("user.name"))) {
            return Optional.of("network namespaces need root; this test JVM runs as " + System.getProperty("user.name"));
        }
        String probe = PREFIX + "-probe";
        try {
            run("ip", "netns", "add", probe);
            run("ip", "netns", "delete", probe);
            return Optional.empty();
        } catch (IOException e) {
            return Optional.of("`ip netns` does not work here: " + e.getMessage());
        }
    }

    /** Makes the star for {@code nodes} nodes and the test JVM (after removing any leftovers). */
    static NetworkNamespaces create(int nodes) throws IOException {
        removeLeftovers();
        NetworkNamespaces n = new NetworkNamespaces(nodes);
        try {
            run("ip", "netns", "add", BRIDGE_NS);
            run("ip", "-n", BRIDGE_NS, "link", "set", "lo", "up");
            run("ip", "-n", BRIDGE_NS, "link", "add", "br0", "type", "bridge");
            run("ip", "-n", BRIDGE_NS, "link", "set", "br0", "up");
            for (int i = 1; i <= nodes; i++) {
                String ns = namespace(i);
                String own = PREFIX + i + "n";
                run("ip", "netns", "add", ns);
                run("ip", "-n", ns, "link", "set", "lo", "up");
                run("ip", "link", "add", own, "type", "veth", "peer", "name", bridgeEnd(i));
                run("ip", "link", "set", own, "netns", ns);
                run("ip", "link", "set", bridgeEnd(i), "netns", BRIDGE_NS);
                run("ip", "-n", ns, "addr", "add", address(i) + "/24", "dev", own);
                run("ip", "-n", ns, "link", "set", own, "up");
                run("ip", "-n", BRIDGE_NS, "link", "set", bridgeEnd(i), "master", "br0");
                run("ip", "-n", BRIDGE_NS, "link", "set", bridgeEnd(i), "up");
            }
            run("ip", "link", "add", CLIENT_LINK, "type", "veth", "peer", "name", PREFIX + "0b");
            run("ip", "link", "set", PREFIX + "0b", "netns", BRIDGE_NS);
            run("ip", "addr", "add", CLIENT_ADDRESS + "/24", "dev", CLIENT_LINK);
            run("ip", "link", "set", CLIENT_LINK, "up");
            run("ip", "-n", BRIDGE_NS, "link", "set", PREFIX + "0b", "master", "br0");
            run("ip", "-n", BRIDGE_NS, "link", "set", PREFIX + "0b", "up");
            return n;
        } catch (IOException | RuntimeException e) {
            n.close();
            throw e;
        }
    }

    /** Node {@code i}'s address. */
    static String address(int i) {
        return "10.77.0." + i;
    }

    /** Node {@code i}'s namespace. */
    static String namespace(int i) {
        return PREFIX + "-n" + i;
    }

    /** The command prefix that runs a program in node {@code i}'s namespace ({@code ip netns exec} execs it: same pid). */
    static List<String> exec(int i) {
        return List.of("ip", "netns", "exec", namespace(i));
    }

    /** Cuts node {@code i} off: the bridge's end of its link goes down. */
    void cut(int i) throws IOException {
        check(i);
        run("ip", "-n", BRIDGE_NS, "link", "set", bridgeEnd(i), "down");
    }

    /** Gives node {@code i} its link back. */
    void restore(int i) throws IOException {
        check(i);
        run("ip", "-n", BRIDGE_NS, "link", "set", bridgeEnd(i), "up");
    }

    private void check(int i) {
        if (i < 1 || i > nodes) {
            throw new IllegalArgumentException("node " + i + " is not one of 1.." + nodes);
        }
    }

    private static String bridgeEnd(int i) {
        return PREFIX + i + "b";
    }

    /**
     * Deletes every namespace and root-namespace link whose name starts with {@link #PREFIX},
     * and waits (at most 5 s) until the kernel has let the links go: it tears a deleted
     * namespace down in the background, and the root's end of a pair goes with it.
     */
    static void removeLeftovers() throws IOException {
        for (String line : run("ip", "netns", "list").split("\n")) {
            String name = line.trim().split("\\s+")[0];
            if (name.startsWith(PREFIX)) {
                run("ip", "netns", "delete", name);
            }
        }
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
        List<String> left = rootLinks();
        while (!left.isEmpty()) {
            for (String name : left) {
                try {
                    run("ip", "link", "delete", name);
                } catch (IOException gone) {
                    // its namespace's teardown took it meanwhile
                }
            }
            left = rootLinks();
            if (!left.isEmpty() && System.nanoTime() > deadline) {
                throw new IOException("links " + left + " are still there 5 s after their deletion");
            }
            try {
                Thread.sleep(100);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                throw new IOException("interrupted", e);
            }
        }
    }

    private static List<String> rootLinks() throws IOException {
        List<String> names = new ArrayList<>();
        for (String line : run("ip", "-o", "link", "show").split("\n")) {
            // "12: vmfnf0t@if11: <...> ..."
            String[] parts = line.split(":\\s+", 3);
            if (parts.length >= 2) {
                String name = parts[1].split("@")[0];
                if (name.startsWith(PREFIX)) {
                    names.add(name);
                }
            }
        }
        return names;
    }

    @Override
    public void close() throws IOException {
        removeLeftovers();
    }

    /** Runs a command, returning its output; throws with its output if it fails or takes over 10 s. */
    static String run(String... cmd) throws IOException {
        Process p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        try {
            if (!p.waitFor(10, TimeUnit.SECONDS)) {
                p.destroyForcibly();
                throw new IOException(String.join(" ", cmd) + ": no end within 10 s");
            }
        } catch (InterruptedException e) {
            p.destroyForcibly();
            Thread.currentThread().interrupt();
            throw new IOException(String.join(" ", cmd) + ": interrupted", e);
        }
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        if (p.exitValue() != 0) {
            throw new IOException(String.join(" ", cmd) + " exited " + p.exitValue() + ": " + out.strip());
        }
        return out;
    }

    /** The lines of {@code ip} commands a failure message may show: the topology as it is. */
    static List<String> describe() {
        List<String> out = new ArrayList<>();
        try {
            out.add(run("ip", "-n", BRIDGE_NS, "-br", "link"));
        } catch (IOException e) {
            out.add(e.getMessage());
        }
        return out;
    }
}
