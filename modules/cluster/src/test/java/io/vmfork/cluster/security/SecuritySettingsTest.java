package io.vmfork.cluster.security;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.node.InvalidNodeConfigException;
import io.vmfork.cluster.node.NodeSettings;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SecuritySettingsTest {
    @TempDir
    Path dir;

    private static Config with(String hocon) {
        return ConfigFactory.parseString(hocon).withFallback(ConfigFactory.defaultReference()).resolve();
    }

    private String credentials(String name) {
        ClusterCredentials.MemberFiles f = ClusterCredentials.issue(
                ClusterCredentials.loadOrCreateAuthority(dir, "vmfork"), dir, name, ClusterCredentials.Role.NODE,
                ClusterCredentials.MEMBER_VALIDITY);
        return "vmfork.security { key-file = \"" + f.keyFile() + "\", cert-file = \"" + f.certFile()
                + "\", ca-cert-file = \"" + f.caCertFile() + "\" }\n";
    }

    private static InvalidNodeConfigException refused(Config c) {
        return assertThrows(InvalidNodeConfigException.class, () -> NodeSettings.create(c));
    }

    @Test
    void credentialsTurnOnTlsWithTheRotatingEngine() {
        NodeSettings s = NodeSettings.create(with(credentials("node-1") + "vmfork.node.hostname = \"10.0.0.5\""));
        assertTrue(s.security().tls());
        Config p = s.pekkoConfig().withFallback(ConfigFactory.defaultReference()).resolve();
        assertEquals("tls-tcp", p.getString("pekko.remote.artery.transport"));
        assertEquals(RefusalLoggingSSLEngineProvider.class.getName(),
                p.getString("pekko.remote.artery.ssl.ssl-engine-provider"));
        assertEquals(dir.resolve("node-1.key").toString(),
                p.getString("pekko.remote.artery.ssl.rotating-keys-engine.key-file"));
        assertEquals(dir.resolve("node-1.crt").toString(),
                p.getString("pekko.remote.artery.ssl.rotating-keys-engine.cert-file"));
        assertEquals(dir.resolve("ca.crt").toString(),
                p.getString("pekko.remote.artery.ssl.rotating-keys-engine.ca-cert-file"));
        assertEquals("TLSv1.3", p.getString("pekko.remote.artery.ssl.rotating-keys-engine.protocol"));
        assertTrue(s.security().describe("10.0.0.5").contains("CN=node-1"));
        assertTrue(s.security().describe("10.0.0.5").contains("capsule transfers over TLS with the same credentials"),
                s.security().describe("10.0.0.5"));
        NodeSettings off = NodeSettings.create(with(credentials("node-1") + "vmfork.node.hostname = \"10.0.0.5\"\n"
                + "vmfork.transfer.tls = off"));
        assertTrue(off.security().describe("10.0.0.5").contains("capsule transfers over plain TCP (vmfork.transfer.tls = off)"),
                off.security().describe("10.0.0.5"));
    }

    @Test
    void theEnginesOtherKeysStayTheUsers() {
        Config user = with(credentials("node-1") + """
                pekko.remote.artery.ssl.rotating-keys-engine.ssl-context-cache-ttl = 30s
                """);
        Config full = NodeSettings.create(user).pekkoConfig().withFallback(user).resolve();
        assertEquals(30, full.getDuration("pekko.remote.artery.ssl.rotating-keys-engine.ssl-context-cache-ttl")
                .toSeconds());
    }

    @Test
    void withoutCredentialsOnlyLoopbackRunsPlainTcp() {
        for (String loopback : new String[] {"127.0.0.1", "localhost", "::1"}) {
            NodeSettings s = NodeSettings.create(with("vmfork.node.hostname = \"" + loopback + "\""));
            assertFalse(s.security().tls(), loopback);
            assertEquals("tcp", s.pekkoConfig().getString("pekko.remote.artery.transport"));
        }
        InvalidNodeConfigException e = refused(with("vmfork.node.hostname = \"10.0.0.5\""));
        assertEquals("vmfork.security", e.key());
        assertTrue(e.getMessage().contains("not loopback-only") && e.getMessage().contains("vmfork certs"),
                e.getMessage());
        // Bound to every address while announcing loopback: reachable from elsewhere.
        assertEquals("vmfork.security", refused(with("pekko.remote.artery.bind.hostname = \"0.0.0.0\"")).key());
        // On purpose, said loudly.
        NodeSettings insecure = NodeSettings.create(with("""
                vmfork.node.hostname = "10.0.0.5"
                vmfork.security.insecure = on
                """));
        assertFalse(insecure.security().tls());
        assertTrue(insecure.security().describe("10.0.0.5").startsWith("INSECURE"));
    }

    @Test
    void incompleteMissingOrContradictoryCredentialsAreRefused() {
        String full = credentials("node-1");
        assertEquals("vmfork.security.ca-cert-file", refused(with(full + "vmfork.security.ca-cert-file = \"\"")).key());
        assertEquals("vmfork.security.insecure", refused(with(full + "vmfork.security.insecure = on")).key());
        InvalidNodeConfigException e = refused(with(full + "vmfork.security.cert-file = \"" + dir.resolve("nope.crt")
                + "\""));
        assertTrue(e.getMessage().contains("nope.crt: no such file"), e.getMessage());
        // Another CA's certificate with this CA: refused at start, not at the first connection.
        ClusterCredentials.Authority other = ClusterCredentials.createAuthority(dir.resolve("other"), "vmfork");
        ClusterCredentials.MemberFiles foreign = ClusterCredentials.issue(other, dir.resolve("other"), "x",
                ClusterCredentials.Role.NODE, ClusterCredentials.MEMBER_VALIDITY);
        e = refused(with(full + "vmfork.security { key-file = \"" + foreign.keyFile() + "\", cert-file = \""
                + foreign.certFile() + "\" }"));
        assertTrue(e.getMessage().contains("is not signed by the CA"), e.getMessage());
    }
}
