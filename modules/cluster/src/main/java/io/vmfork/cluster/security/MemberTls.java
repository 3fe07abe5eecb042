package io.vmfork.cluster.security;

import java.security.GeneralSecurityException;
import java.security.KeyStore;
import java.security.PrivateKey;
import java.security.SecureRandom;
import java.security.cert.Certificate;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.util.HashSet;
import java.util.Objects;
import java.util.Optional;
import java.util.Set;
import javax.net.ssl.KeyManagerFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A member's TLS context from its credential files ({@code vmfork.security}), for the
 * connections it serves and makes besides Artery's (capsule transfers, the status server),
 * under Artery's rule: the one cluster CA is trusted, and a peer's certificate is accepted
 * only if it shares a DNS subject name with this member's own (the cluster's name, which
 * {@code vmfork certs} puts in every certificate), so that another cluster under the same CA
 * is refused.
 *
 * <p>The files are read again when the context is older than {@code cacheTtl} (Pekko's
 * {@code ssl-context-cache-ttl}, as for Artery): a rotated certificate is used for new
 * connections from then on. Files that cannot be read then keep the last good context,
 * with a warning.
 */
public final class MemberTls {
    private static final Logger LOG = LoggerFactory.getLogger(MemberTls.class);
    private static final char[] NO_PASSWORD = new char[0];

    private final ClusterCredentials.MemberFiles files;
    private final long cacheTtlNanos;
    private final String what;
    private Loaded loaded; // guarded by this

    private record Loaded(SSLContext context, Set<String> names, String subject, long atNanos) {
    }

    /**
     * Reads the files once now.
     *
     * @param what what uses the context, for messages ("transfer TLS", "status TLS")
     * @throws IllegalArgumentException naming the file when the set is unusable
     */
    public MemberTls(ClusterCredentials.MemberFiles files, Duration cacheTtl, String what) {
        this.files = Objects.requireNonNull(files, "files");
        this.cacheTtlNanos = Objects.requireNonNull(cacheTtl, "cacheTtl").toNanos();
        this.what = Objects.requireNonNull(what, "what");
        current();
    }

    public ClusterCredentials.MemberFiles files() {
        return files;
    }

    /** The context for a new connection: the files' as last read. */
    public SSLContext context() {
        return current().context();
    }

    /** The subject of this member's certificate, as last read. */
    public String subject() {
        return current().subject();
    }

    /**
     * Why a peer that showed {@code chain} (already verified against the CA by the
     * handshake) is refused, or empty when its certificate shares a name with this member's.
     */
    public Optional<String> mismatch(Certificate[] chain) {
        if (chain == null || chain.length == 0) {
            return Optional.of("it showed no certificate");
        }
        if (!(chain[0] instanceof X509Certificate c)) {
            return Optional.of("it showed no X.509 certificate");
        }
        Set<String> ours = current().names();
        for (String n : names(c)) {
            if (ours.contains(n)) {
                return Optional.empty();
            }
        }
        return Optional.of("its certificate (" + c.getSubjectX500Principal().getName()
                + ") shares no subject name with this member's: another cluster under the same CA");
    }

    private synchronized Loaded current() {
        long now = System.nanoTime();
        if (loaded == null || now - loaded.atNanos() >= cacheTtlNanos) {
            try {
                loaded = load(now);
            } catch (IllegalArgumentException | GeneralSecurityException | java.io.IOException e) {
                if (loaded == null) {
                    throw new IllegalArgumentException(what + ": " + e.getMessage(), e);
                }
                LOG.warn("{}: cannot read the credentials again, keeping the ones read before: {}", what,
                        e.getMessage());
                loaded = new Loaded(loaded.context(), loaded.names(), loaded.subject(), now);
            }
        }
        return loaded;
    }

    private Loaded load(long now) throws GeneralSecurityException, java.io.IOException {
        PrivateKey key = ClusterCredentials.readKey(files.keyFile());
        X509Certificate cert = ClusterCredentials.readCertificate(files.certFile());
        X509Certificate ca = ClusterCredentials.readCertificate(files.caCertFile());
        KeyStore keys = KeyStore.getInstance("PKCS12");
        keys.load(null, null);
        keys.setKeyEntry("member", key, NO_PASSWORD, new Certificate[] {cert, ca});
        KeyManagerFactory kmf = KeyManagerFactory.getInstance(KeyManagerFactory.getDefaultAlgorithm());
        kmf.init(keys, NO_PASSWORD);
        KeyStore trust = KeyStore.getInstance("PKCS12");
        trust.load(null, null);
        trust.setCertificateEntry("ca", ca);
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLContext context = SSLContext.getInstance("TLS");
        context.init(kmf.getKeyManagers(), tmf.getTrustManagers(), new SecureRandom());
        return new Loaded(context, names(cert), cert.getSubjectX500Principal().getName(), now);
    }

    private static Set<String> names(X509Certificate cert) {
        Set<String> names = new HashSet<>(ClusterCredentials.dnsNames(cert));
        for (String part : cert.getSubjectX500Principal().getName().split(",")) {
            if (part.startsWith("CN=")) {
                names.add(part.substring(3));
            }
        }
        return names;
    }
}
