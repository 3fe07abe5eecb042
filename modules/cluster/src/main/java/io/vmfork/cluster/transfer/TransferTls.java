package io.vmfork.cluster.transfer;

import io.vmfork.cluster.security.ClusterCredentials;
import io.vmfork.cluster.security.MemberTls;
import io.vmfork.cluster.security.RefusalLoggingSSLEngineProvider;
import io.vmfork.cluster.security.WatchedSSLEngine;
import java.net.InetSocketAddress;
import java.security.cert.Certificate;
import java.time.Duration;
import java.util.Arrays;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.SSLSession;
import org.apache.pekko.NotUsed;
import org.apache.pekko.stream.IgnoreCancel$;
import org.apache.pekko.stream.IgnoreComplete$;
import org.apache.pekko.stream.TLSClosing;
import org.apache.pekko.stream.TLSProtocol;
import org.apache.pekko.stream.javadsl.BidiFlow;
import org.apache.pekko.stream.javadsl.Flow;
import org.apache.pekko.stream.javadsl.TLS;
import org.apache.pekko.util.ByteString;

/**
 * TLS with mutual authentication for the transfer connection, from a member's credential
 * files ({@code vmfork.security}): the same key, certificate and CA as its Artery, and the
 * same rule: the peer must show a certificate issued by the cluster CA (the CA alone is
 * trusted) that shares a DNS subject name with this member's own (the cluster's name, which
 * {@code vmfork certs} puts in every certificate). TLSv1.2 only (see {@link #PROTOCOLS});
 * the server requires the client's certificate.
 *
 * <p>The context comes from {@link MemberTls}: the files are read again when it is older
 * than {@code cacheTtl}, so a rotated certificate is used for new connections from then on.
 *
 * <p>Cost: one RSA-2048 handshake per transfer (a few ms of CPU, once per capsule), then
 * AES-GCM on every byte (docs/transfer.md, "TLS", has the measured figures).
 */
public final class TransferTls {
    /**
     * TLSv1.2 alone for now: over TLSv1.3 with client authentication, Pekko 1.2's TLS stage
     * held a sender's lone OPEN frame until more bytes came (a source holding before its first
     * chunk never had its opening read; TransferTlsTest.theOpeningIsAdmittedBeforeAnyDataIsWritten
     * fails with "TLSv1.3" here). The JDK's TLSv1.2 suites are ECDHE with AES-GCM first.
     */
    private static final String[] PROTOCOLS = {"TLSv1.2"};
    private static final char[] NO_PASSWORD = new char[0];

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
        return e;
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
        // IgnoreCancel: the server closes its output first (the RESULT or ABORT frame, then
        // close_notify), then its input; the session ends with the output, after the last frame.
        return layer(peer, false, handshake, IgnoreCancel$.MODULE$).reversed();
    }

    /** The sending side's layer (top: application to network), for {@code join} with the TCP flow. */
    BidiFlow<ByteString, ByteString, ByteString, ByteString, NotUsed> client(InetSocketAddress to,
                                                                             Handshake handshake) {
        // IgnoreComplete, as Pekko's Tcp.outgoingConnectionWithTls: a sender that ended its
        // output still reads the result; the session ends when it stops reading.
        return layer(to, true, handshake, IgnoreComplete$.MODULE$);
    }

    private BidiFlow<ByteString, ByteString, ByteString, ByteString, NotUsed> layer(InetSocketAddress peer,
            boolean client, Handshake handshake, TLSClosing closing) {
        BidiFlow<ByteString, TLSProtocol.SslTlsOutbound, TLSProtocol.SslTlsInbound, ByteString, NotUsed> plain =
                BidiFlow.fromFlows(
                        Flow.of(ByteString.class).map(b -> (TLSProtocol.SslTlsOutbound) new TLSProtocol.SendBytes(b)),
                        Flow.of(TLSProtocol.SslTlsInbound.class)
                                .filter(i -> i instanceof TLSProtocol.SessionBytes)
                                .map(i -> ((TLSProtocol.SessionBytes) i).bytes()));
        return plain.atop(TLS.create(
                () -> new WatchedSSLEngine(engine(peer, client),
                        e -> handshake.refused("TLS handshake failed: " + RefusalLoggingSSLEngineProvider.reason(e))),
                session -> {
                    try {
                        verify(session);
                        handshake.verified = true;
                        handshake.established.complete(null);
                    } catch (NameMismatch e) {
                        handshake.refused("TLS refused: " + e.getMessage());
                        throw e;
                    }
                }, closing));
    }
}
