package io.vmfork.cluster.security;

import java.nio.ByteBuffer;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.util.function.BiFunction;
import java.util.List;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLEngineResult;
import javax.net.ssl.SSLException;
import javax.net.ssl.SSLParameters;
import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.SSLSession;
import org.apache.pekko.actor.ActorSystem;
import org.apache.pekko.event.Logging;
import org.apache.pekko.event.LoggingAdapter;
import org.apache.pekko.remote.artery.tcp.SSLEngineProvider;
import org.apache.pekko.remote.artery.tcp.ssl.RotatingKeysSSLEngineProvider;
import scala.Option;

/**
 * Pekko's {@link RotatingKeysSSLEngineProvider}, unchanged (it reads
 * {@code pekko.remote.artery.ssl.rotating-keys-engine}), with every refused connection
 * logged as a warning: Artery itself drops a connection whose handshake fails without a
 * word, so an intruder's attempts would go unseen.
 *
 * <p>An outbound connection's line names the peer's address. An inbound one's cannot: Pekko
 * 1.2's Artery creates the server's engine without the connection's remote address
 * ({@code Tcp.bindWithTls} hands the engine factory nothing), so its line says what was
 * refused: not TLS at all, a certificate of another CA (the JDK does not expose a
 * certificate it did not trust), a peer that does not trust ours, or, with the peer
 * certificate's subject and issuer, a certificate of this CA for another cluster's name.
 */
public final class RefusalLoggingSSLEngineProvider implements SSLEngineProvider {
    private final RotatingKeysSSLEngineProvider engines;
    private final LoggingAdapter log;

    public RefusalLoggingSSLEngineProvider(ActorSystem system) {
        this.engines = new RotatingKeysSSLEngineProvider(system);
        this.log = Logging.getLogger(system, RefusalLoggingSSLEngineProvider.class);
    }

    @Override
    public SSLEngine createServerSSLEngine(String hostname, int port) {
        return watched(engines.createServerSSLEngine(hostname, port), "inbound connection (peer address unknown)");
    }

    @Override
    public SSLEngine createClientSSLEngine(String hostname, int port) {
        return watched(engines.createClientSSLEngine(hostname, port),
                "outbound connection to " + hostname + ":" + port);
    }

    @Override
    public Option<Throwable> verifyClientSession(String hostname, SSLSession session) {
        return logged(engines.verifyClientSession(hostname, session), "outbound connection to " + hostname, session);
    }

    @Override
    public Option<Throwable> verifyServerSession(String hostname, SSLSession session) {
        return logged(engines.verifyServerSession(hostname, session), "inbound connection (peer address unknown)",
                session);
    }

    // The peer's certificate chains to our CA but shares no subject name with ours:
    // another cluster under the same CA.
    private Option<Throwable> logged(Option<Throwable> refusal, String what, SSLSession session) {
        if (refusal.isDefined()) {
            log.warning("vmfork: Artery TLS refused an {}: {} (peer certificate {})", what,
                    refusal.get().getMessage(), peer(session));
        }
        return refusal;
    }

    private static String peer(SSLSession session) {
        if (session == null) {
            return "none";
        }
        try {
            Certificate[] chain = session.getPeerCertificates();
            if (chain.length > 0 && chain[0] instanceof X509Certificate c) {
                return "subject " + c.getSubjectX500Principal().getName() + ", issuer "
                        + c.getIssuerX500Principal().getName();
            }
        } catch (SSLPeerUnverifiedException e) {
            // not shown, or not verified
        }
        return "none";
    }

    /** Why a TLS handshake failed, in words (also the transfer connection's refusals). */
    public static String reason(SSLException e) {
        String m = String.valueOf(e.getMessage());
        if (m.contains("nrecognized SSL message")) {
            return "not TLS (a plain TCP peer, e.g. a member without credentials)";
        }
        if (m.contains("PKIX path") || m.contains("unable to find valid certification path")) {
            return "its certificate is not issued by this cluster's CA (" + m + ")";
        }
        if (m.contains("Empty client certificate chain") || m.contains("certificate_required")) {
            return "it showed no certificate (" + m + ")";
        }
        if (m.contains("Received fatal alert: certificate_unknown") || m.contains("Received fatal alert: unknown_ca")
                || m.contains("Received fatal alert: bad_certificate")) {
            return "the peer does not accept this member's certificate: it does not trust this cluster's CA ("
                    + m + ")";
        }
        return m;
    }

    /** An engine that logs the failure of its handshake once, then fails as it would have. */
    private SSLEngine watched(SSLEngine engine, String what) {
        return new WatchedSSLEngine(engine, e -> log.warning("vmfork: Artery TLS refused an {}: {}", what, reason(e)));
    }
}
