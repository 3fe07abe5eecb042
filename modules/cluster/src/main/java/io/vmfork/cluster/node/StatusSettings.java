package io.vmfork.cluster.node;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Set;

/**
 * Who may use a node's status server ({@link NodeStatusServer}): the {@code bind},
 * {@code token}, {@code allowed-hosts}, {@code tls} and {@code client-certificate} keys of
 * {@code vmfork.node.status}.
 *
 * @param bind         the address the server binds: loopback unless configured otherwise
 * @param token        the bearer token every request but {@code /ready} and {@code /alive}
 *                     must carry ({@code Authorization: Bearer TOKEN}); empty: none
 * @param allowedHosts the names a request's {@code Host} header may give (without port,
 *                     lower case, IPv6 without brackets); any other is refused, so that a
 *                     page of another site cannot read the status through DNS rebinding
 * @param tls          HTTPS with this member's credentials ({@code vmfork.security}) instead
 *                     of plain HTTP
 * @param clientCertificate whether a client certificate issued by the cluster CA, sharing a
 *                     subject name with the node's ({@code vmfork certs --client NAME}), admits a
 *                     request as the token does; needs {@code tls}
 */
public record StatusSettings(String bind, String token, Set<String> allowedHosts, boolean tls,
                             boolean clientCertificate) {
    private static final String PATH = "vmfork.node.status";

    public StatusSettings {
        if (bind == null || bind.isBlank()) {
            throw new InvalidNodeConfigException(PATH + ".bind", "is empty");
        }
        if (token == null) {
            throw new InvalidNodeConfigException(PATH + ".token", "missing");
        }
        if (!token.isEmpty() && (token.length() < 16 || !token.chars().allMatch(c -> c > 0x20 && c < 0x7f))) {
            throw new InvalidNodeConfigException(PATH + ".token",
                    "must be empty (none) or at least 16 printable ASCII characters without spaces");
        }
        allowedHosts = Set.copyOf(allowedHosts);
        if (clientCertificate && !tls) {
            throw new InvalidNodeConfigException(PATH + ".client-certificate",
                    "is on, but vmfork.node.status.tls is off: client certificates need HTTPS");
        }
    }

    /** Reads {@code vmfork.node.status} of {@code config}. */
    public static StatusSettings create(Config config) {
        try {
            Config c = config.getConfig(PATH);
            String bind = c.getString("bind");
            List<String> configured = c.getStringList("allowed-hosts");
            Set<String> allowed = new LinkedHashSet<>();
            if (configured.isEmpty()) {
                allowed.add(hostName(bind));
                allowed.add("localhost");
                allowed.add("127.0.0.1");
                allowed.add("::1");
            } else {
                for (int i = 0; i < configured.size(); i++) {
                    String name = hostName(configured.get(i));
                    if (name.isEmpty() || name.contains(" ")) {
                        throw new InvalidNodeConfigException(PATH + ".allowed-hosts[" + i + "]",
                                "'" + configured.get(i) + "' is not a host name");
                    }
                    allowed.add(name);
                }
            }
            return new StatusSettings(bind, c.getString("token"), allowed, c.getBoolean("tls"),
                    c.getBoolean("client-certificate"));
        } catch (ConfigException.Missing e) {
            throw new InvalidNodeConfigException(PATH, "missing: " + e.getMessage(), e);
        } catch (ConfigException e) {
            throw new InvalidNodeConfigException(PATH, e.getMessage(), e);
        }
    }

    /** {@code name} as the Host check compares it: lower case, an IPv6 address without brackets. */
    public static String hostName(String name) {
        String n = name.trim().toLowerCase(Locale.ROOT);
        if (n.startsWith("[") && n.endsWith("]")) {
            n = n.substring(1, n.length() - 1);
        }
        return n;
    }

    /** Whether a request must carry a token. */
    public boolean tokenRequired() {
        return !token.isEmpty();
    }

    /**
     * Whether a request (but to {@code /ready} and {@code /alive}) must show a credential: the
     * token or, where {@link #clientCertificate}, a client certificate of the cluster.
     */
    public boolean credentialRequired() {
        return tokenRequired() || clientCertificate;
    }

    /**
     * Whether {@code presented} is the token, in time that does not depend on where they
     * differ (both are hashed first, so not on their lengths either).
     */
    public boolean tokenMatches(String presented) {
        if (!tokenRequired() || presented == null) {
            return false;
        }
        return MessageDigest.isEqual(sha256(token), sha256(presented));
    }

    private static byte[] sha256(String s) {
        try {
            return MessageDigest.getInstance("SHA-256").digest(s.getBytes(StandardCharsets.UTF_8));
        } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException("SHA-256 is missing from this JDK", e);
        }
    }

    @Override
    public String toString() {
        // Never the token itself: settings end up in logs.
        return "StatusSettings[bind=" + bind + ", token=" + (tokenRequired() ? "(set)" : "(none)")
                + ", allowedHosts=" + allowedHosts + ", tls=" + tls + ", clientCertificate=" + clientCertificate + "]";
    }
}
