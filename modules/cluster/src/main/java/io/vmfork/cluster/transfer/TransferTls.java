package io.vmfork.cluster.transfer;

import io.vmfork.cluster.security.ClusterCredentials;
import io.vmfork.cluster.security.MemberTls;
import io.vmfork.cluster.security.RefusalLoggingSSLEngineProvider;
import java.net.InetSocketAddress;
import java.security.cert.Certificate;
import java.time.Duration;
import java.util.Arrays;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLSession;
import org.apache.pekko.NotUsed;
import org.apache.pekko.stream.javadsl.BidiFlow;
import org.apache.pekko.util.ByteString;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * TLS with mutual authentication for the transfer connection, from a member's credential
 * files ({@code vmfork.security}): the same key, certificate and CA as its Artery, and the
 * same rule: the peer must show a certificate issued by the cluster CA (the CA alone is
 * trusted) that shares a DNS subject name with this member's own (the cluster's name, which
 * {@code vmfork certs} puts in every certificate). TLSv1.3 or 1.2 (see {@link #PROTOCOLS}),
 * AES-GCM first; the server requires the client's certificate. The layer is
 * {@link EngineTls}, over the JDK's SSLEngine.
 *
 * <p>The context comes from {@link MemberTls}: the files are read again when it is older
 * than {@code cacheTtl}, so a rotated certificate is used for new connections from then on.
 *
 * <p>Cost: one RSA-2048 handshake per transfer (a few ms of CPU, once per capsule), then
 * AES-GCM on every byte (docs/transfer.md, "TLS", has the measured figures).
 */
public final class TransferTls {
    private static final Logger LOG = LoggerFactory.getLogger(TransferTls.class);
    /**
     * TLSv1.3 first: the JDK 17 SSLEngine wraps and unwraps AES-128-GCM records in about half
     * the time under TLSv1.3: 30 ms each way per 64 MiB against 60-77 ms under TLSv1.2 (1 MiB
     * elements, warmed, one run on the development machine, 2026-12-08). Pekko's TLS stage,
     * used before {@link EngineTls}, held a sender's lone OPEN frame under TLSv1.3 with client
     * authentication; EngineTls does not (TransferTlsTest.theOpeningIsAdmittedBeforeAnyDataIsWritten).
     * TLSv1.2 stays enabled.
     */
    private static final String[] PROTOCOLS = {"TLSv1.3", "TLSv1.2"};
    private static final char[] NO_PASSWORD = new char[0];
    /**
     * Tried first, in this order (the server's order decides): AES-128-GCM runs 10 AES rounds
     * to AES-256's 14, and the JDK's defaults put AES-256 first. ChaCha20-Poly1305 has no
     * intrinsic on JDK 17 (~300 ms per 64 MiB here against 25-40 ms for AES-GCM).
     */
    private static final String[] PREFERRED_SUITES = {
        "TLS_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"};

    private final MemberTls tls;

    /** Refused after the handshake: the peer's certificate shares no name with ours. */
    static final class NameMismatch extends RuntimeException {
        NameMismatch(String message) {
            super(message);
        }
    }

    /** One server connection's handshake, as far as it went: set on the stream's thread. */
    static final class Handshake {
        /** Why it failed, the first reason; null if it did not (yet). */
        volatile String refusal;
        /** The peer's certificate was checked and accepted. */
        volatile boolean verified;
        /** Completes when it is: the session is established. */
        final java.util.concurrent.CompletableFuture<Void> established = new java.util.concurrent.CompletableFuture<>();

        void refused(String why) {
            if (refusal == null) {
                refusal = why;
            }
        }
    }

    /** Reads the files once now: an unusable set fails here, naming the file. */
    public TransferTls(ClusterCredentials.MemberFiles files, Duration cacheTtl) {
        this.tls = new MemberTls(files, cacheTtl, "transfer TLS");
    }

    public ClusterCredentials.MemberFiles files() {
        return tls.files();
    }

    /** The subject of this member's certificate, as last read. */
    public String subject() {
        return tls.subject();
    }

    private SSLEngine engine(InetSocketAddress peer, boolean client) {
        SSLEngine e = tls.context().createSSLEngine(peer.getHostString(), peer.getPort());
        e.setUseClientMode(client);
        if (!client) {
            e.setNeedClientAuth(true);
        }
        e.setEnabledProtocols(Arrays.stream(PROTOCOLS)
                .filter(p -> Arrays.asList(e.getSupportedProtocols()).contains(p)).toArray(String[]::new));
        SSLParameters params = e.getSSLParameters();
        params.setCipherSuites(preferred(e.getEnabledCipherSuites()));
        params.setUseCipherSuitesOrder(true);
        e.setSSLParameters(params);
        return e;
    }

    /**
     * Runs this member's TLS record path once, in memory, on a daemon thread of its own: a
     * handshake between a client and a server engine of its context (TLSv1.3, the suite the
     * transfers negotiate), then {@code bytes} of records wrapped and unwrapped in 2 KiB
     * pieces, so that the JIT has compiled AES-GCM (its AES-CTR and GHASH intrinsics) before
     * the node's first capsule. Without it a fresh JVM's first 64 MiB took 846 ms to wrap and
     * unwrap against 169 ms the second time; after 16 MiB in 2 KiB pieces (523 ms of CPU, many
     * calls so that the methods reach the compile thresholds with few bytes) the first took
     * 292 ms (one run each, development machine, 2026-12-08). 0: nothing.
     */
    public void warmUpInBackground(long bytes) {
        if (bytes <= 0) {
            return;
        }
        Thread t = new Thread(() -> {
            long t0 = System.nanoTime();
            try {
                warmUp(bytes);
                LOG.debug("transfer TLS warmed up with {} bytes in {} ms", bytes, (System.nanoTime() - t0) / 1_000_000);
            } catch (javax.net.ssl.SSLException | RuntimeException e) {
                LOG.info("transfer TLS: the warm-up failed (the first transfer runs cold): {}", e.toString());
            }
        }, "vmfork-transfer-tls-warm-up");
        t.setDaemon(true);
        t.setPriority(Thread.MIN_PRIORITY);
        t.start();
    }

    /** The warm-up, on the calling thread. */
    void warmUp(long bytes) throws javax.net.ssl.SSLException {
        InetSocketAddress self = new InetSocketAddress(java.net.InetAddress.getLoopbackAddress(), 0);
        SSLEngine client = engine(self, true);
        SSLEngine server = engine(self, false);
        java.nio.ByteBuffer toServer = java.nio.ByteBuffer.allocate(1 << 17);
        java.nio.ByteBuffer toClient = java.nio.ByteBuffer.allocate(1 << 17);
        java.nio.ByteBuffer sink = java.nio.ByteBuffer.allocate(1 << 17);
        client.beginHandshake();
        server.beginHandshake();
        for (int i = 0; i < 100 && (handshaking(client) || handshaking(server)); i++) {
            step(client, toClient, toServer, sink);
            step(server, toServer, toClient, sink);
        }
        if (handshaking(client) || handshaking(server)) {
            throw new IllegalStateException("the handshake did not finish");
        }
        byte[] plain = new byte[2048];
        java.nio.ByteBuffer net = java.nio.ByteBuffer.allocate(client.getSession().getPacketBufferSize());
        java.nio.ByteBuffer out = java.nio.ByteBuffer.allocate(client.getSession().getApplicationBufferSize());
        for (long done = 0; done < bytes; done += plain.length) {
            net.clear();
            client.wrap(java.nio.ByteBuffer.wrap(plain), net);
            net.flip();
            out.clear();
            server.unwrap(net, out);
        }
    }

    private static boolean handshaking(SSLEngine e) {
        return e.getHandshakeStatus() != javax.net.ssl.SSLEngineResult.HandshakeStatus.NOT_HANDSHAKING;
    }

    private static void step(SSLEngine e, java.nio.ByteBuffer in, java.nio.ByteBuffer out, java.nio.ByteBuffer sink)
            throws javax.net.ssl.SSLException {
        switch (e.getHandshakeStatus()) {
            case NEED_TASK -> {
                for (Runnable task; (task = e.getDelegatedTask()) != null; ) {
                    task.run();
                }
            }
            case NEED_WRAP -> e.wrap(java.nio.ByteBuffer.allocate(0), out);
            case NEED_UNWRAP, NEED_UNWRAP_AGAIN -> {
                in.flip();
                sink.clear();
                e.unwrap(in, sink);
                in.compact();
            }
            default -> { }
        }
    }

    /** {@link #PREFERRED_SUITES} that are enabled, first, then the other enabled ones in the JDK's order. */
    private static String[] preferred(String[] enabled) {
        java.util.LinkedHashSet<String> order = new java.util.LinkedHashSet<>();
        java.util.List<String> on = Arrays.asList(enabled);
        for (String s : PREFERRED_SUITES) {
            if (on.contains(s)) {
                order.add(s);
            }
        }
        order.addAll(on);
        return order.toArray(String[]::new);
    }

    /** After the handshake: the peer's certificate (chained to the CA already) must share a name with ours. */
    private void verify(SSLSession session) {
        Certificate[] chain;
        try {
            chain = session.getPeerCertificates();
        } catch (SSLPeerUnverifiedException e) {
            chain = null;
        }
        tls.mismatch(chain).ifPresent(why -> {
            throw new NameMismatch(why);
        });
    }

    /**
     * The receiving side's layer, network below, plaintext above (top: network to
     * application); {@code handshake} records how its handshake went.
     */
    BidiFlow<ByteString, ByteString, ByteString, ByteString, NotUsed> server(InetSocketAddress peer,
                                                                             Handshake handshake) {
        // The server closes its output first (the RESULT or ABORT frame, then close_notify),
        // then its input; the session ends with the output, after the last frame.
        return layer(peer, false, handshake, EngineTls.Closing.SERVER).reversed();
    }

    /** The sending side's layer (top: application to network), for {@code join} with the TCP flow. */
    BidiFlow<ByteString, ByteString, ByteString, ByteString, NotUsed> client(InetSocketAddress to,
                                                                             Handshake handshake) {
        // A sender that ended its output still reads the result; the session ends when it
        // stops reading.
        return layer(to, true, handshake, EngineTls.Closing.CLIENT);
    }

    private BidiFlow<ByteString, ByteString, ByteString, ByteString, NotUsed> layer(InetSocketAddress peer,
            boolean client, Handshake handshake, EngineTls.Closing closing) {
        return BidiFlow.fromGraph(new EngineTls(() -> engine(peer, client),
                session -> {
                    try {
                        verify(session);
                        LOG.debug("transfer TLS with {}: {} {}", peer, session.getProtocol(), session.getCipherSuite());
                        handshake.verified = true;
                        handshake.established.complete(null);
                    } catch (NameMismatch e) {
                        handshake.refused("TLS refused: " + e.getMessage());
                        throw e;
                    }
                },
                e -> handshake.refused("TLS handshake failed: " + RefusalLoggingSSLEngineProvider.reason(e)),
                closing));
    }
}
