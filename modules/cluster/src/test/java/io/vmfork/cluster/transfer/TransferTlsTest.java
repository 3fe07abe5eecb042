package io.vmfork.cluster.transfer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.security.ClusterCredentials;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.KeyStore;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.Optional;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.security.cert.Certificate;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.SSLSocket;
import javax.net.ssl.TrustManagerFactory;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.typed.ActorSystem;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The transfer connection over TLS with mutual authentication (issue 16, "Transfers are
 * bound to authenticated peers"; package-info, "TLS"): a real TransferServer with a node's
 * credentials from a throwaway cluster CA. A member of the same CA transfers; a peer without
 * a certificate, with one of another CA, with one of this CA for another cluster name, or
 * speaking plain TCP is refused in the handshake: the Acceptor (the token check) is never
 * asked and the connection's slot is given back.
 */
class TransferTlsTest {
    private static final Duration OPEN_TIMEOUT = Duration.ofSeconds(2);
    private static final long BYTES = 24L << 20;

    @TempDir
    static Path dir;
    private static ActorTestKit kit;
    private static ActorSystem<Void> system;
    private static TransferSettings plain;
    private static ClusterCredentials.Authority ca;
    private static ClusterCredentials.MemberFiles node1;
    private static ClusterCredentials.MemberFiles node2;
    private TransferServer server;
    private final AtomicInteger accepted = new AtomicInteger();

    @BeforeAll
    static void credentials() {
        kit = ActorTestKit.create("TransferTlsTest", ConfigFactory.parseString("pekko.actor.provider = local")
                .withFallback(ConfigFactory.load()));
        system = kit.system();
        plain = TransferSettings.fromConfig(system.settings().config()).withIdleTimeout(Duration.ofSeconds(3))
                .withLimits(new TransferSettings.Limits(OPEN_TIMEOUT, 8, 8, 8, 4));
        ca = ClusterCredentials.createAuthority(dir, "alpha");
        node1 = ClusterCredentials.issue(ca, dir, "node-1", ClusterCredentials.Role.NODE, Duration.ofDays(1));
        node2 = ClusterCredentials.issue(ca, dir, "node-2", ClusterCredentials.Role.NODE, Duration.ofDays(1));
    }

    @AfterAll
    static void stopSystem() {
        kit.shutdownTestKit();
    }

    @BeforeEach
    void bind() throws Exception {
        server = TransferServer.bindAccepting(system, "127.0.0.1", 0, tls(node1), (opening, peer) -> {
            accepted.incrementAndGet();
            return (o, in) -> {
                MessageDigest md = MessageDigest.getInstance("SHA-256");
                byte[] buf = new byte[1 << 16];
                for (int n; (n = in.read(buf)) >= 0; ) {
                    md.update(buf, 0, n);
                }
                return md.digest();
            };
        }).toCompletableFuture().get(30, TimeUnit.SECONDS);
    }

    @AfterEach
    void close() {
        server.close();
    }

    private static TransferSettings tls(ClusterCredentials.MemberFiles files) {
        return plain.withTls(Optional.of(new TransferTls(files, Duration.ofSeconds(1))));
    }

    private byte[] send(TransferSettings s) throws Exception {
        return TransferClient.send(system, server.address(), new byte[] {1, 2, 3}, out -> TransferTest.writePattern(out,
                BYTES, null), s).toCompletableFuture().get(60, TimeUnit.SECONDS);
    }

    private static byte[] expectedDigest() throws Exception {
        MessageDigest md = MessageDigest.getInstance("SHA-256");
        TransferTest.writePattern(java.io.OutputStream.nullOutputStream(), BYTES, md);
        return md.digest();
    }

    /** The refused peer never reached the Acceptor, and its connection slot is free again. */
    private void assertRefusedBeforeTheOpening() throws InterruptedException {
        assertEquals(0, accepted.get(), "the Acceptor (the token check) was asked");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (server.openConnections() > 0 && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertEquals(0, server.openConnections());
    }

    @Test
    void aMemberOfTheSameCaTransfersOverTls() throws Exception {
        byte[] digest = send(tls(node2));
        assertArrayEquals(expectedDigest(), digest);
        assertEquals(1, accepted.get());
    }

    @Test
    void aPlainTcpSenderIsRefused() throws Exception {
        ExecutionException e = assertThrows(ExecutionException.class, () -> send(plain));
        assertTrue(e.getCause() instanceof TransferException, e.toString());
        assertRefusedBeforeTheOpening();
    }

    /** A JDK TLS client trusting this cluster's CA, showing {@code member}'s certificate (null: none). */
    private static SSLContext client(ClusterCredentials.MemberFiles member) throws Exception {
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        trust.setCertificateEntry("ca", ClusterCredentials.readCertificate(node1.caCertFile()));
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        KeyManagerFactory kmf = null;
        if (member != null) {
            KeyStore keys = KeyStore.getInstance("PKCS12");
            keys.load(null, null);
            keys.setKeyEntry("m", ClusterCredentials.readKey(member.keyFile()), new char[0],
                    new Certificate[] {ClusterCredentials.readCertificate(member.certFile())});
            kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
            kmf.init(keys, new char[0]);
        }
        SSLContext ctx = SSLContext.getInstance("TLSv1.3");
        ctx.init(kmf == null ? null : kmf.getKeyManagers(), tmf.getTrustManagers(), null);
        return ctx;
    }

    /**
     * Sends an OPEN frame from a JDK TLS client that trusts the server whatever its names, so
     * that its own side of the handshake completes: only the server's checks refuse it.
     */
    private void assertServerRefuses(ClusterCredentials.MemberFiles member) throws Exception {
        try (SSLSocket s = (SSLSocket) client(member).getSocketFactory().createSocket()) {
            s.connect(server.address(), 5000);
            s.setSoTimeout(10_000);
            assertThrows(IOException.class, () -> {
                s.getOutputStream().write(Frames.open(new byte[] {1, 2, 3}));
                s.getOutputStream().flush();
                if (s.getInputStream().read() < 0) {
                    throw new IOException("closed");
                }
            });
        }
        assertRefusedBeforeTheOpening();
    }

    @Test
    void aPeerWithoutACertificateIsRefusedBeforeItsOpeningIsRead() throws Exception {
        assertServerRefuses(null);
    }

    @Test
    void theJdkClientOfTheseTestsIsAcceptedWithAMembersCertificate() throws Exception {
        // The check that the refusals above are the server's: the same client with node-2's
        // certificate gets its OPEN admitted.
        try (SSLSocket s = (SSLSocket) client(node2).getSocketFactory().createSocket()) {
            s.connect(server.address(), 5000);
            s.setSoTimeout(10_000);
            s.getOutputStream().write(Frames.open(new byte[] {1, 2, 3}));
            s.getOutputStream().write(Frames.frame(Frames.END, new byte[8]));
            s.getOutputStream().flush();
            assertEquals(Frames.RESULT, TransferTest.readFrame(s.getInputStream()).kind());
        }
        assertEquals(1, accepted.get());
    }

    @Test
    void aCertificateOfAnotherCaIsRefused() throws Exception {
        Path other = Files.createDirectories(dir.resolve("other"));
        ClusterCredentials.Authority foreign = ClusterCredentials.createAuthority(other, "alpha");
        ClusterCredentials.MemberFiles f = ClusterCredentials.issue(foreign, other, "node-9",
                ClusterCredentials.Role.NODE, Duration.ofDays(1));
        // It trusts this cluster's CA, so only the server's check of its certificate refuses it.
        ExecutionException e = assertThrows(ExecutionException.class, () -> send(tls(
                new ClusterCredentials.MemberFiles(f.keyFile(), f.certFile(), node1.caCertFile()))));
        assertTrue(e.getCause() instanceof TransferException, e.toString());
        assertRefusedBeforeTheOpening();
    }

    @Test
    void aCertificateOfThisCaForAnotherClusterNameIsRefused() throws Exception {
        Path other = Files.createDirectories(dir.resolve("beta"));
        ClusterCredentials.Authority beta = new ClusterCredentials.Authority("beta", ca.certificate(), ca.key(),
                ca.certFile());
        assertServerRefuses(ClusterCredentials.issue(beta, other, "node-9", ClusterCredentials.Role.NODE,
                Duration.ofDays(1)));
    }

    @Test
    void aSilentConnectionIsClosedAtTheOpenDeadlineWithoutAHandshake() throws Exception {
        try (Socket s = new Socket()) {
            s.connect(server.address(), 5000);
            s.setSoTimeout(10_000);
            long t0 = System.nanoTime();
            InputStream in = s.getInputStream();
            // Nothing of it was read, so nothing of ours is sent but, at most, a TLS alert.
            int got = 0;
            try {
                while (in.read() >= 0) {
                    got++;
                }
            } catch (IOException reset) {
                // closed with a reset: as good
            }
            assertTrue(got <= 64, got + " bytes before the close");
            long ms = (System.nanoTime() - t0) / 1_000_000;
            assertTrue(ms >= OPEN_TIMEOUT.toMillis() - 100 && ms < OPEN_TIMEOUT.toMillis() + 3000, ms + " ms");
        }
        assertRefusedBeforeTheOpening();
    }

    @Test
    void aRenewedCertificateIsUsedWithoutARestart() throws Exception {
        // The server's context is cached 1 s: reissue node-1 (rotation) and a transfer still goes.
        ClusterCredentials.issue(ca, dir, "node-1", ClusterCredentials.Role.NODE, Duration.ofDays(2));
        Thread.sleep(1100);
        assertArrayEquals(expectedDigest(), send(tls(node2)));
    }


    @Test
    void aNodesTransfersUseItsSecurityCredentials() {
        com.typesafe.config.Config withFiles = ConfigFactory.parseMap(java.util.Map.of(
                "vmfork.security.key-file", node1.keyFile().toString(),
                "vmfork.security.cert-file", node1.certFile().toString(),
                "vmfork.security.ca-cert-file", node1.caCertFile().toString())).withFallback(system.settings().config());
        com.typesafe.config.Config on = ConfigFactory.parseString("vmfork.transfer.tls = on").withFallback(withFiles);
        TransferSettings s = TransferSettings.fromConfig(on);
        assertTrue(s.tls().isPresent());
        assertEquals(node1, s.tls().get().files());
        assertTrue(TransferSettings.fromConfig(withFiles).tls().isPresent(), "vmfork.transfer.tls is on by default");
        assertTrue(TransferSettings.fromConfig(ConfigFactory.parseString("vmfork.transfer.tls = off")
                .withFallback(withFiles)).tls().isEmpty(), "vmfork.transfer.tls off: plain TCP");
        assertTrue(TransferSettings.fromConfig(ConfigFactory.parseString("vmfork.transfer.tls = on")
                .withFallback(system.settings().config())).tls().isEmpty(), "no credentials: plain TCP");
    }

    @Test
    void theWarmUpRunsAHandshakeAndRecordsInMemory() throws Exception {
        // Its own client and server engines of one member's context: no peer, no socket.
        new TransferTls(node1, Duration.ofMinutes(1)).warmUp(1 << 20);
    }

    @Test
    void theOpeningIsAdmittedBeforeAnyDataIsWritten() throws Exception {
        // A source that holds before its first chunk (a failpoint, a slow capsule writer): its
        // OPEN frame must get through the TLS session on its own, not wait for more bytes.
        java.util.concurrent.CountDownLatch admitted = new java.util.concurrent.CountDownLatch(1);
        java.util.concurrent.CompletableFuture<byte[]> r = TransferClient.send(system, server.address(),
                new byte[] {1}, out -> {
                    try {
                        long until = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
                        while (accepted.get() == 0 && System.nanoTime() < until) {
                            Thread.sleep(20);
                        }
                        if (accepted.get() > 0) {
                            admitted.countDown();
                        }
                    } catch (InterruptedException e) {
                        throw new java.io.InterruptedIOException();
                    }
                }, tls(node2)).toCompletableFuture();
        r.get(30, TimeUnit.SECONDS);
        assertEquals(0, admitted.getCount(), "the opening was not admitted while the writer held");
    }
}
