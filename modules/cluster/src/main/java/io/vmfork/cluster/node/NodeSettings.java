package io.vmfork.cluster.node;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigValue;
import com.typesafe.config.ConfigValueType;
import io.vmfork.cluster.placement.Capacity;
import io.vmfork.cluster.placement.PlacementPolicy;
import io.vmfork.cluster.placement.PlacementSettings;
import io.vmfork.cluster.security.SecuritySettings;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A node's settings: the {@code vmfork.node} subtree and the host's identity
 * ({@code vmfork.host.id}, {@code vmfork.host.name}). Defaults are in this module's
 * reference.conf, and docs/configuration.md describes every key. {@link #create} checks
 * everything and refuses a bad value with an {@link InvalidNodeConfigException} naming
 * its key, so that a node never starts half-configured.
 *
 * @param systemName     the actor system's name; the same on every node of a cluster
 * @param hostname       the address this node's Artery transport binds and announces
 * @param port           its port (0: any free port, for tests)
 * @param seedNodes      {@code host:port} of the seed nodes; empty: this node forms a
 *                       cluster of its own and others may join it
 * @param hostId         this host's id, unique in the cluster
 * @param hostName       this host's name, for logs and status
 * @param capacity       what this host offers to guests
 * @param placement      the placement service's settings
 * @param askTimeout     the default timeout of every ask between the node's actors
 * @param statusHttpPort the port of the node's status HTTP endpoint ({@link NodeStatusServer});
 *                       0: a free port (logged); -1: none
 * @param downing        the split brain resolver's settings
 * @param hostIdCheckInterval how often a node checks that no older member has its host id
 * @param security       how Artery is protected: TLS with this member's credentials, or
 *                       plain TCP on loopback or when {@code vmfork.security.insecure = on}
 */
public record NodeSettings(
        String systemName,
        String hostname,
        int port,
        List<String> seedNodes,
        long hostId,
        String hostName,
        Capacity capacity,
        PlacementSettings placement,
        Duration askTimeout,
        int statusHttpPort,
        Downing downing,
        Duration hostIdCheckInterval,
        SecuritySettings security) {

    /** Host ids are below 2^23: they form bits 40 and up of a VM id (see the VMM). */
    public static final long MAX_HOST_ID = (1L << 23) - 1;

    private static final Pattern HOST_PORT = Pattern.compile("^([^:/@\\s]+):(\\d{1,5})$");
    private static final Pattern SYSTEM_NAME = Pattern.compile("^[A-Za-z0-9][A-Za-z0-9_-]*$");
    private static final Set<String> DOWNING_STRATEGIES =
            Set.of("keep-majority", "keep-oldest", "static-quorum", "down-all");

    /**
     * How the split brain resolver downs unreachable members.
     *
     * @param strategy    Pekko's active strategy (keep-majority, keep-oldest, down-all,
     *                    static-quorum)
     * @param stableAfter how long membership must be stable before it decides
     * @param quorumSize  for static-quorum: the least number of members that may stay up
     */
    public record Downing(String strategy, Duration stableAfter, int quorumSize) {
    }

    public NodeSettings {
        seedNodes = List.copyOf(seedNodes);
    }

    /**
     * Reads and checks a node's settings.
     *
     * @throws InvalidNodeConfigException naming the first key that is missing, of the
     *                                    wrong type, or out of range
     */
    public static NodeSettings create(Config root) {
        try {
            Config n = root.getConfig("vmfork.node");
            Config h = root.getConfig("vmfork.host");

            String systemName = n.getString("system-name");
            check(SYSTEM_NAME.matcher(systemName).matches(), "vmfork.node.system-name",
                    "'" + systemName + "' is not an actor system name (letters, digits, '-', '_')");
            String hostname = n.getString("hostname");
            check(!hostname.isBlank(), "vmfork.node.hostname", "is empty");
            int port = n.getInt("port");
            check(port >= 0 && port <= 65535, "vmfork.node.port", port + " is not a port (0..65535)");

            List<String> seeds = n.getStringList("seed-nodes");
            for (int i = 0; i < seeds.size(); i++) {
                Matcher m = HOST_PORT.matcher(seeds.get(i));
                check(m.matches() && Integer.parseInt(m.group(2)) > 0 && Integer.parseInt(m.group(2)) <= 65535,
                        "vmfork.node.seed-nodes[" + i + "]", "'" + seeds.get(i) + "' is not host:port");
            }

            long hostId = h.getLong("id");
            check(hostId >= 0 && hostId <= MAX_HOST_ID, "vmfork.host.id",
                    hostId + " is out of range [0, " + (MAX_HOST_ID + 1) + ")");
            String hostName = h.getString("name");

            long memory = n.getBytes("capacity.guest-memory");
            check(memory > 0, "vmfork.node.capacity.guest-memory", "must be positive");
            int slots = n.getInt("capacity.vm-slots");
            check(slots > 0, "vmfork.node.capacity.vm-slots", "must be positive");
            int vcpus = n.getInt("capacity.vcpus");
            check(vcpus > 0, "vmfork.node.capacity.vcpus", "must be positive");

            Duration askTimeout = positive(n, "ask-timeout");
            int httpPort = n.getInt("status.http-port");
            check(httpPort >= -1 && httpPort <= 65535, "vmfork.node.status.http-port",
                    httpPort + " is not a port (0..65535), nor -1 (none)");

            String strategy = n.getString("downing.strategy");
            check(DOWNING_STRATEGIES.contains(strategy), "vmfork.node.downing.strategy",
                    "'" + strategy + "' is not one of " + DOWNING_STRATEGIES);
            Duration stableAfter = positive(n, "downing.stable-after");
            int quorum = n.getInt("downing.quorum-size");
            check(quorum > 0, "vmfork.node.downing.quorum-size", "must be positive");

            Duration hostIdCheck = positive(n, "host-id-check-interval");

            SecuritySettings security;
            try {
                security = SecuritySettings.create(root, hostname);
            } catch (SecuritySettings.Refused e) {
                throw new InvalidNodeConfigException(e.key(), e.getMessage(), e);
            }

            return new NodeSettings(systemName, hostname, port, seeds, hostId, hostName,
                    new Capacity(memory, slots, vcpus), placement(n.getConfig("placement")), askTimeout,
                    httpPort, new Downing(strategy, stableAfter, quorum), hostIdCheck, security);
        } catch (ConfigException.Missing e) {
            throw new InvalidNodeConfigException(keyOf(e), "missing", e);
        } catch (ConfigException e) {
            throw new InvalidNodeConfigException(keyOf(e), e.getMessage(), e);
        }
    }

    private static PlacementSettings placement(Config p) {
        String prefix = "vmfork.node.placement.";
        PlacementPolicy dflt = policy(p.getString("default-policy"), prefix + "default-policy");
        Map<Integer, PlacementPolicy> policies = new HashMap<>();
        for (Map.Entry<String, ConfigValue> e : p.getObject("policies").entrySet()) {
            String key = prefix + "policies." + e.getKey();
            int vmType;
            try {
                vmType = Integer.parseInt(e.getKey());
            } catch (NumberFormatException x) {
                throw new InvalidNodeConfigException(key, "'" + e.getKey() + "' is not a vm_type (a whole number)");
            }
            check(vmType >= 0, key, "a vm_type cannot be negative");
            check(e.getValue().valueType() == ConfigValueType.STRING, key, "must be a policy name");
            policies.put(vmType, policy((String) e.getValue().unwrapped(), key));
        }
        Duration ask = positive(p, "ask-timeout", prefix);
        Duration reservation = positive(p, "reservation-timeout", prefix);
        Duration report = positive(p, "load-report-interval", prefix);
        Duration write = positive(p, "load-write-timeout", prefix);
        int shards = p.getInt("number-of-shards");
        check(shards > 0, prefix + "number-of-shards", "must be positive");
        int stash = p.getInt("startup-stash");
        check(stash > 0, prefix + "startup-stash", "must be positive");
        return new PlacementSettings(dflt, policies, ask, reservation, report, write, shards, stash);
    }

    private static PlacementPolicy policy(String name, String key) {
        try {
            return PlacementPolicy.fromConfigName(name);
        } catch (IllegalArgumentException e) {
            throw new InvalidNodeConfigException(key, e.getMessage());
        }
    }

    private static Duration positive(Config c, String path) {
        return positive(c, path, "vmfork.node.");
    }

    private static Duration positive(Config c, String path, String prefix) {
        Duration d = c.getDuration(path);
        check(!d.isNegative() && !d.isZero(), prefix + path, "must be a positive duration");
        return d;
    }

    private static void check(boolean ok, String key, String problem) {
        if (!ok) {
            throw new InvalidNodeConfigException(key, problem);
        }
    }

    // Typesafe Config names the path relative to the subtree it was read from; its
    // message names the full path and the origin (file and line), which we keep.
    private static String keyOf(ConfigException e) {
        String msg = e.getMessage();
        Matcher m = Pattern.compile("(?:Configuration key|path|key) '?([A-Za-z0-9_.\\-\\[\\]\"]+)'?").matcher(msg);
        return m.find() ? m.group(1) : msg;
    }

    /** The Pekko address of a seed given as {@code host:port}. */
    public String seedAddress(String hostPort) {
        return "pekko://" + systemName + "@" + hostPort;
    }

    /**
     * What this node's settings mean for Pekko: its Artery address, transport and TLS
     * credentials ({@link SecuritySettings#pekkoConfig}), the cluster's seed nodes, the split
     * brain resolver, Pekko IO's TCP read buffer (1 MiB, for capsule transfers), and Pekko
     * Management's routes read-only. Put in front of the node's configuration, so these win
     * over the same {@code pekko.*} keys set elsewhere.
     */
    public Config pekkoConfig() {
        List<String> seeds = new ArrayList<>();
        for (String s : seedNodes) {
            seeds.add(seedAddress(s));
        }
        Map<String, Object> m = new HashMap<>();
        m.put("pekko.actor.provider", "cluster");
        m.put("pekko.actor.allow-java-serialization", "off");
        m.put("pekko.loggers", List.of("org.apache.pekko.event.slf4j.Slf4jLogger"));
        m.put("pekko.logging-filter", "org.apache.pekko.event.slf4j.Slf4jLoggingFilter");
        // Pekko prints to stdout itself while a system starts and stops (before and after its
        // loggers run): stdout is the vmfork command's output (JSON with --json), never logs.
        m.put("pekko.stdout-loglevel", "OFF");
        m.put("pekko.remote.artery.canonical.hostname", hostname);
        m.put("pekko.remote.artery.canonical.port", port);
        m.put("pekko.cluster.seed-nodes", seeds);
        // Pekko IO's TCP read buffer (capsule transfers, not Artery): at the default 128 KiB
        // a capsule moves 2-4 times slower than at 1 MiB (docs/transfer.md).
        m.put("pekko.io.tcp.direct-buffer-size", "1 MiB");
        m.put("pekko.cluster.downing-provider-class", "org.apache.pekko.cluster.sbr.SplitBrainResolverProvider");
        m.put("pekko.cluster.split-brain-resolver.active-strategy", downing.strategy());
        m.put("pekko.cluster.split-brain-resolver.stable-after", downing.stableAfter().toMillis() + "ms");
        m.put("pekko.cluster.split-brain-resolver.static-quorum.quorum-size", downing.quorumSize());
        // The status server serves Pekko Management's routes: read-only whatever a node's file
        // says (its cluster routes can otherwise make members leave or be downed over HTTP).
        m.put("pekko.management.http.route-providers-read-only", true);
        return ConfigFactory.parseMap(m, "vmfork.node settings").withFallback(security.pekkoConfig());
    }

    /** Says in {@code system}'s log how its Artery traffic is protected; a warning if not at all. */
    void logSecurity(org.apache.pekko.actor.typed.ActorSystem<?> system) {
        String line = "vmfork: " + security.describe(hostname);
        if (security.insecure()) {
            system.log().warn(line);
        } else {
            system.log().info(line);
        }
    }
}
