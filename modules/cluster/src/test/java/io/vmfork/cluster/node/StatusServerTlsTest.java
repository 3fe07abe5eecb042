package io.vmfork.cluster.node;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.security.ClusterCredentials;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.cert.Certificate;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The status server over TLS (issue 16, "The status server is safe to expose": optional TLS
 * and a bearer token or client certificate for everything but {@code /ready} and
 * {@code /alive}): a real node on loopback with credentials from a throwaway cluster CA,
 * asked over real TLS sockets. Plain HTTP is not served; without a credential only the
 * health checks answer; the token or a client certificate of the cluster admits a request;
 * a certificate of another CA fails the handshake, one of this CA for another cluster name
 * is not a credential.
 */
class StatusServerTlsTest {
    private static final String TOKEN = "t0ken-for-the-status-tls-test";

    @TempDir
    static Path dir;
    private static ClusterCredentials.MemberFiles node;
    private static ClusterCredentials.MemberFiles client;
    private static ClusterCredentials.MemberFiles otherCluster;
    private static ClusterCredentials.MemberFiles otherCa;
    private VmforkNode started;

    @BeforeAll
    static void credentials() {
        ClusterCredentials.Authority ca = ClusterCredentials.createAuthority(dir.resolve("alpha"), "alpha");
        node = ClusterCredentials.issue(ca, dir.resolve("alpha"), "node-1", ClusterCredentials.Role.NODE,
                Duration.ofDays(1));
        client = ClusterCredentials.issue(ca, dir.resolve("alpha"), "ops", ClusterCredentials.Role.CLIENT,
                Duration.ofDays(1));
        // The same CA's key signing for another cluster name: trusted by the handshake, but
        // no name in common with the node's.
        ClusterCredentials.Authority beta = new ClusterCredentials.Authority("beta", ca.certificate(), ca.key(),
                ca.certFile());
        otherCluster = ClusterCredentials.issue(beta, dir.resolve("beta"), "ops", ClusterCredentials.Role.CLIENT,
                Duration.ofDays(1));
        ClusterCredentials.Authority gamma = ClusterCredentials.createAuthority(dir.resolve("gamma"), "alpha");
        otherCa = ClusterCredentials.issue(gamma, dir.resolve("gamma"), "ops", ClusterCredentials.Role.CLIENT,
                Duration.ofDays(1));
    }

    @AfterEach
    void stop() {
        if (started != null) {
            started.system().terminate();
            started.whenTerminated().toCompletableFuture().orTimeout(30, TimeUnit.SECONDS).join();
        }
    }

    private static String credentials(ClusterCredentials.MemberFiles f) {
        return "vmfork.security { key-file = \"" + f.keyFile() + "\", cert-file = \"" + f.certFile()
                + "\", ca-cert-file = \"" + f.caCertFile() + "\" }\n";
    }

    private static com.typesafe.config.Config config(long hostId, String extra) {
        return ConfigFactory.parseString("vmfork.host { id = " + hostId + ", name = h" + hostId + " }\n"
                + "vmfork.node { fork-warm-up = off, status.http-port = 0 }\nvmfork.transfer.warm-up = off\n" + extra)
                .withFallback(ConfigFactory.load()).resolve();
    }

    private int start(long hostId, String status) {
        started = VmforkNode.start(config(hostId, credentials(node) + "vmfork.node.status { tls = on, " + status + " }"));
        return started.statusServer().orElseThrow().port();
    }

    /** A TLS context trusting the cluster CA, showing {@code as}'s certificate (none if null). */
    private static SSLContext context(ClusterCredentials.MemberFiles as) throws Exception {
        KeyManagerFactory kmf = null;
        if (as != null) {
            KeyStore keys = KeyStore.getInstance("PKCS12");
            keys.load(null, null);
            keys.setKeyEntry("me", ClusterCredentials.readKey(as.keyFile()), new char[0], new Certificate[] {
                ClusterCredentials.readCertificate(as.certFile()), ClusterCredentials.readCertificate(as.caCertFile())});
            kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(keys, new char[0]);
        }
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        trust.setCertificateEntry("ca", ClusterCredentials.readCertificate(node.caCertFile()));
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLContext c = SSLContext.getInstance("TLS");
        c.init(kmf == null ? null : kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        return c;
    }

    /** The status code of {@code GET path} over TLS as {@code as} (no certificate if null). */
    private static int get(int port, ClusterCredentials.MemberFiles as, String path, String token) throws Exception {
        try (SSLSocket s = (SSLSocket) context(as).getSocketFactory().createSocket()) {
            s.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 5000);
            s.setSoTimeout(10_000);
            s.startHandshake();
            return status(s, port, path, token);
        }
    }

    private static int status(Socket s, int port, String path, String token) throws IOException {
        OutputStream out = s.getOutputStream();
        out.write(("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1:" + port + "\r\n"
                + (token == null ? "" : "Authorization: Bearer " + token + "\r\n") + "Connection: close\r\n\r\n")
                .getBytes(StandardCharsets.US_ASCII));
        out.flush();
        String line = new BufferedReader(new InputStreamReader(s.getInputStream(), StandardCharsets.US_ASCII))
                .readLine();
        assertTrue(line != null && line.startsWith("HTTP/1.1 "), "no status line: " + line);
        return Integer.parseInt(line.substring(9, 12));
    }

    @Test
    void overTlsTheTokenOrAClientCertificateOfTheClusterAdmitsARequest() throws Exception {
        int port = start(71, "client-certificate = on, token = \"" + TOKEN + "\"");
        // Health checks need nothing but TLS.
        assertEquals(200, get(port, null, "/alive", null));
        // Without a credential: refused, for the status, the page and Management's routes.
        for (String path : new String[] {"/status", "/", "/cluster/members"}) {
            assertEquals(401, get(port, null, path, null), path);
            assertEquals(401, get(port, null, path, TOKEN + "x"), path);
        }
        assertEquals(200, get(port, null, "/status", TOKEN));
        assertEquals(200, get(port, client, "/status", null));
        assertEquals(200, get(port, client, "/cluster/members", null));
        // A certificate of this CA for another cluster: the handshake takes it, the check does not.
        assertEquals(401, get(port, otherCluster, "/status", null));
        assertEquals(200, get(port, otherCluster, "/status", TOKEN));
        // A certificate of another CA: no session at all.
        assertThrows(IOException.class, () -> get(port, otherCa, "/status", TOKEN));
    }

    @Test
    void withoutClientCertificatesACertificateIsNoCredential() throws Exception {
        int port = start(72, "token = \"" + TOKEN + "\"");
        assertEquals(401, get(port, client, "/status", null));
        assertEquals(200, get(port, client, "/status", TOKEN));
    }

    @Test
    void clientCertificatesAloneAreEnough() throws Exception {
        int port = start(73, "client-certificate = on");
        assertEquals(401, get(port, null, "/status", null));
        assertEquals(200, get(port, client, "/status", null));
        assertEquals(200, get(port, null, "/alive", null));
    }

    @Test
    void plainHttpIsNotServedOnATlsPort() throws Exception {
        int port = start(74, "");
        try (Socket s = new Socket()) {
            s.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 5000);
            s.setSoTimeout(10_000);
            OutputStream out = s.getOutputStream();
            out.write(("GET /status HTTP/1.1\r\nHost: 127.0.0.1:" + port + "\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
            out.flush();
            // The server answers with a TLS alert or closes: never an HTTP status line.
            byte[] first = new byte[5];
            int n;
            try {
                n = s.getInputStream().read(first);
            } catch (IOException e) {
                n = -1;
            }
            assertTrue(n <= 0 || !new String(first, 0, n, StandardCharsets.US_ASCII).startsWith("HTTP/"),
                    "plain HTTP was answered");
        }
        // With no credential required, TLS alone is enough.
        assertEquals(200, get(port, null, "/status", null));
    }

    @Test
    void tlsWithoutCredentialsOrClientCertificatesWithoutTlsAreRefusedNamingTheKey() {
        InvalidNodeConfigException noCredentials = assertThrows(InvalidNodeConfigException.class,
                () -> VmforkNode.start(config(75, "vmfork.node.status.tls = on")));
        assertTrue(noCredentials.getMessage().contains("vmfork.node.status.tls"), noCredentials.getMessage());
        assertTrue(noCredentials.getMessage().contains("vmfork certs"), noCredentials.getMessage());
        InvalidNodeConfigException noTls = assertThrows(InvalidNodeConfigException.class,
                () -> VmforkNode.start(config(76, credentials(node) + "vmfork.node.status.client-certificate = on")));
        assertTrue(noTls.getMessage().contains("vmfork.node.status.client-certificate"), noTls.getMessage());
    }
}
