package io.vmfork.cluster.security;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import java.net.InetAddress;
import java.net.UnknownHostException;
import java.nio.file.Path;
import java.security.cert.X509Certificate;
import java.util.HashMap;
import java.util.Map;
import java.util.Optional;

/**
 * How a member talks to the others: the {@code vmfork.security} subtree.
 *
 * <p>With credentials ({@code key-file}, {@code cert-file}, {@code ca-cert-file}, as
 * {@code vmfork certs} writes them) Artery runs over TLS with mutual authentication
 * ({@code transport = tls-tcp}, Pekko's {@code RotatingKeysSSLEngineProvider}, through
 * {@link RefusalLoggingSSLEngineProvider}, which logs the connections it refuses: it reloads
 * the files every {@code pekko.remote.artery.ssl.rotating-keys-engine.ssl-context-cache-ttl},
 * trusts the one CA, and accepts a peer only if its certificate has a subject name in common
 * with this member's own). Without them Artery runs over plain TCP, which a member accepts
 * only when it is reachable from this machine alone (its Artery address and bind address
 * loopback) or when {@code insecure = on} says so explicitly.
 *
 * @param credentials this member's credential files, checked; empty: plain TCP
 * @param insecure    {@code vmfork.security.insecure}: plain TCP off loopback, on purpose
 * @param subject     the subject of this member's certificate, for logs; empty without one
 */
public record SecuritySettings(Optional<ClusterCredentials.MemberFiles> credentials, boolean insecure,
                               Optional<String> subject, boolean transferTls) {

    /** Why a member's security settings are refused; names the key. */
    public static final class Refused extends RuntimeException {
        private final String key;

        Refused(String key, String problem) {
            super(problem);
            this.key = key;
        }

        public String key() {
            return key;
        }
    }

    /**
     * Reads {@code vmfork.security} of {@code root} for a member whose Artery address is
     * {@code hostname}.
     *
     * @throws Refused naming the key at fault: some credential files set but not all, a file
     *                 missing or unusable, credentials and {@code insecure = on} together, or
     *                 no credentials on an address reachable from other machines without
     *                 {@code insecure = on}
     */
    public static SecuritySettings create(Config root, String hostname) {
        Config s = root.getConfig("vmfork.security");
        String key = s.getString("key-file");
        String cert = s.getString("cert-file");
        String ca = s.getString("ca-cert-file");
        boolean insecure = s.getBoolean("insecure");
        int set = (key.isEmpty() ? 0 : 1) + (cert.isEmpty() ? 0 : 1) + (ca.isEmpty() ? 0 : 1);
        if (set == 3) {
            if (insecure) {
                throw new Refused("vmfork.security.insecure",
                        "is on, and credentials are set too: set one or the other");
            }
            ClusterCredentials.MemberFiles files = new ClusterCredentials.MemberFiles(
                    Path.of(key).toAbsolutePath(), Path.of(cert).toAbsolutePath(), Path.of(ca).toAbsolutePath());
            X509Certificate c;
            try {
                c = ClusterCredentials.check(files);
            } catch (IllegalArgumentException e) {
                throw new Refused("vmfork.security", e.getMessage() + " (vmfork certs creates credentials)");
            }
            return new SecuritySettings(Optional.of(files), false,
                    Optional.of(c.getSubjectX500Principal().getName()), transferTls(root));
        }
        if (set != 0) {
            String missing = key.isEmpty() ? "key-file" : cert.isEmpty() ? "cert-file" : "ca-cert-file";
            throw new Refused("vmfork.security." + missing,
                    "missing: key-file, cert-file and ca-cert-file go together (vmfork certs creates them)");
        }
        if (!insecure) {
            String bind = root.hasPath("pekko.remote.artery.bind.hostname")
                    ? root.getString("pekko.remote.artery.bind.hostname") : "";
            for (String address : bind.isEmpty() ? new String[] {hostname} : new String[] {hostname, bind}) {
                if (!loopback(address)) {
                    throw new Refused("vmfork.security", "no credentials, and Artery at " + address
                            + " is not loopback-only: set vmfork.security.key-file, cert-file and ca-cert-file"
                            + " (vmfork certs creates them), or vmfork.security.insecure = on to run without TLS");
                }
            }
        }
        return new SecuritySettings(Optional.empty(), insecure, Optional.empty(), false);
    }

    /** {@code vmfork.transfer.tls}: whether capsule transfers use the credentials too (on by default). */
    private static boolean transferTls(Config root) {
        return root.hasPath("vmfork.transfer.tls") && root.getBoolean("vmfork.transfer.tls");
    }

    /** Whether Artery runs over TLS. */
    public boolean tls() {
        return credentials.isPresent();
    }

    /**
     * The Pekko keys these settings set: the transport and, with credentials, the TLS engine
     * and its three files. The engine's other keys ({@code protocol},
     * {@code enabled-algorithms}, {@code ssl-context-cache-ttl}) stay the user's.
     */
    public Config pekkoConfig() {
        Map<String, Object> m = new HashMap<>();
        if (credentials.isPresent()) {
            ClusterCredentials.MemberFiles f = credentials.get();
            String engine = "pekko.remote.artery.ssl.rotating-keys-engine.";
            m.put("pekko.remote.artery.transport", "tls-tcp");
            // Pekko's RotatingKeysSSLEngineProvider, logging the connections it refuses.
            m.put("pekko.remote.artery.ssl.ssl-engine-provider", RefusalLoggingSSLEngineProvider.class.getName());
            m.put(engine + "key-file", f.keyFile().toString());
            m.put(engine + "cert-file", f.certFile().toString());
            m.put(engine + "ca-cert-file", f.caCertFile().toString());
        } else {
            m.put("pekko.remote.artery.transport", "tcp");
        }
        return ConfigFactory.parseMap(m, "vmfork.security settings");
    }

    /** One line for the member's log: what protects its Artery traffic and its capsule transfers. */
    public String describe(String hostname) {
        if (credentials.isPresent()) {
            return "Artery over TLS with mutual authentication as " + subject.orElse("?") + ", CA "
                    + credentials.get().caCertFile() + (transferTls ? "; capsule transfers over TLS with the same credentials"
                            : "; capsule transfers over plain TCP (vmfork.transfer.tls = off)");
        }
        return insecure
                ? "INSECURE: Artery over plain TCP at " + hostname + " (vmfork.security.insecure = on): anyone who"
                        + " reaches this port can join the cluster and control its VMs; capsule transfers over plain"
                        + " TCP too (clones' memory in clear)"
                : "Artery over plain TCP, loopback only (" + hostname + "): no credentials configured; capsule"
                        + " transfers over plain TCP too";
    }

    private static boolean loopback(String address) {
        try {
            for (InetAddress a : InetAddress.getAllByName(address)) {
                if (!a.isLoopbackAddress()) {
                    return false;
                }
            }
            return true;
        } catch (UnknownHostException e) {
            return false;
        }
    }
}
