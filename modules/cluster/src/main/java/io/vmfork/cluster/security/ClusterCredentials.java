package io.vmfork.cluster.security;

import java.io.IOException;
import java.io.Reader;
import java.io.StringWriter;
import java.io.UncheckedIOException;
import java.math.BigInteger;
import java.nio.charset.StandardCharsets;
import java.nio.file.AtomicMoveNotSupportedException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.GeneralSecurityException;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.PrivateKey;
import java.security.SecureRandom;
import java.security.cert.X509Certificate;
import java.security.interfaces.RSAPrivateCrtKey;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Date;
import java.util.List;
import java.util.regex.Pattern;
import org.bouncycastle.asn1.pkcs.PrivateKeyInfo;
import org.bouncycastle.asn1.x500.X500Name;
import org.bouncycastle.asn1.x500.X500NameBuilder;
import org.bouncycastle.asn1.x500.style.BCStyle;
import org.bouncycastle.asn1.x509.BasicConstraints;
import org.bouncycastle.asn1.x509.ExtendedKeyUsage;
import org.bouncycastle.asn1.x509.Extension;
import org.bouncycastle.asn1.x509.GeneralName;
import org.bouncycastle.asn1.x509.GeneralNames;
import org.bouncycastle.asn1.x509.KeyPurposeId;
import org.bouncycastle.asn1.x509.KeyUsage;
import org.bouncycastle.cert.X509CertificateHolder;
import org.bouncycastle.cert.X509v3CertificateBuilder;
import org.bouncycastle.cert.jcajce.JcaX509CertificateConverter;
import org.bouncycastle.cert.jcajce.JcaX509ExtensionUtils;
import org.bouncycastle.cert.jcajce.JcaX509v3CertificateBuilder;
import org.bouncycastle.openssl.PEMKeyPair;
import org.bouncycastle.openssl.PEMParser;
import org.bouncycastle.openssl.jcajce.JcaPEMKeyConverter;
import org.bouncycastle.openssl.jcajce.JcaPEMWriter;
import org.bouncycastle.openssl.jcajce.JcaPKCS8Generator;
import org.bouncycastle.operator.OperatorCreationException;
import org.bouncycastle.operator.jcajce.JcaContentSignerBuilder;

/**
 * The credentials of a vmfork cluster: a cluster CA, and for every node and client a
 * certificate it signed and the certificate's key, as PEM files that Pekko's
 * {@code RotatingKeysSSLEngineProvider} reads ({@code key-file}: the key, unencrypted
 * PKCS#8; {@code cert-file}: the certificate; {@code ca-cert-file}: the CA's certificate).
 *
 * <p>Layout of a credentials directory: {@code ca.crt} and {@code ca.key} (the CA; keep
 * {@code ca.key} off the nodes), then {@code NAME.crt} and {@code NAME.key} per member.
 * Keys are written mode 0600; every file is written to a temporary file in the directory
 * and renamed over the old one, so that a node that reloads its credentials (rotation)
 * never reads half a file.
 *
 * <p>What Pekko's engine needs, and why each certificate looks as it does:
 * <ul>
 *   <li>RSA keys (its PEM reader knows no other algorithm), 2048 bits;</li>
 *   <li>the member's certificate issued by the root CA directly (no intermediate);</li>
 *   <li>a subject name shared by every member: after the handshake each side checks that
 *       the peer's certificate has a name (CN or DNS subject alternative name) in common
 *       with its own, so every certificate carries the cluster's name as a DNS name. A
 *       certificate of the same CA for another cluster name is refused too;</li>
 *   <li>both extended key usages, server and client: Artery connects in both directions,
 *       a client member accepts the nodes' connections as a node does.</li>
 * </ul>
 * Node and client certificates differ in their subject only ({@code OU=node} or
 * {@code OU=client}), so that logs and audits tell them apart.
 */
public final class ClusterCredentials {
    /** What a member is; its certificate's OU. */
    public enum Role {
        NODE("node"), CLIENT("client");

        private final String unit;

        Role(String unit) {
            this.unit = unit;
        }

        public String unit() {
            return unit;
        }
    }

    /**
     * A member's credential files.
     *
     * @param keyFile    its private key (PEM, PKCS#8, mode 0600)
     * @param certFile   its certificate (PEM)
     * @param caCertFile the cluster CA's certificate (PEM)
     */
    public record MemberFiles(Path keyFile, Path certFile, Path caCertFile) {
    }

    /** A cluster CA, loaded or created: signs member certificates. */
    public record Authority(String clusterName, X509Certificate certificate, PrivateKey key, Path certFile) {
    }

    public static final String CA_CERT = "ca.crt";
    public static final String CA_KEY = "ca.key";
    /** Default validity of a member's certificate. */
    public static final Duration MEMBER_VALIDITY = Duration.ofDays(365);
    /** Validity of a CA. */
    public static final Duration CA_VALIDITY = Duration.ofDays(3650);

    private static final int RSA_BITS = 2048;
    private static final String SIGNATURE = "SHA256withRSA";
    private static final String ORGANISATION = "vmfork";
    /** A member or cluster name: a DNS label, so that it is a valid DNS subject name. */
    private static final Pattern NAME = Pattern.compile("^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$");
    private static final SecureRandom RANDOM = new SecureRandom();

    private ClusterCredentials() {
    }

    /**
     * Creates a new cluster CA in {@code dir} ({@code ca.crt}, {@code ca.key}).
     *
     * @throws FileAlreadyExistsException (unchecked, wrapped) if {@code dir} has a CA
     *                                    already: replacing it would lock every member out
     */
    public static Authority createAuthority(Path dir, String clusterName) {
        checkName(clusterName, "cluster name");
        Path certFile = dir.resolve(CA_CERT);
        Path keyFile = dir.resolve(CA_KEY);
        if (Files.exists(certFile) || Files.exists(keyFile)) {
            throw new UncheckedIOException(new FileAlreadyExistsException(certFile.toString(), null,
                    "a cluster CA exists already; remove it first to create a new one (every member's certificate"
                            + " must then be issued again)"));
        }
        try {
            Files.createDirectories(dir);
            KeyPair kp = rsaKeyPair();
            Instant now = Instant.now();
            X500Name subject = name(clusterName + " CA", "ca");
            X509v3CertificateBuilder b = new JcaX509v3CertificateBuilder(subject, serial(), notBefore(now),
                    Date.from(now.plus(CA_VALIDITY)), subject, kp.getPublic());
            JcaX509ExtensionUtils ext = new JcaX509ExtensionUtils();
            b.addExtension(Extension.basicConstraints, true, new BasicConstraints(0));
            b.addExtension(Extension.keyUsage, true, new KeyUsage(KeyUsage.keyCertSign | KeyUsage.cRLSign));
            b.addExtension(Extension.subjectKeyIdentifier, false, ext.createSubjectKeyIdentifier(kp.getPublic()));
            // The cluster's name, also as a DNS name: issue() reads it back from here.
            b.addExtension(Extension.subjectAlternativeName, false,
                    new GeneralNames(new GeneralName(GeneralName.dNSName, clusterName)));
            X509Certificate cert = sign(b, kp.getPrivate());
            writeKey(keyFile, kp.getPrivate());
            writePem(certFile, cert);
            return new Authority(clusterName, cert, kp.getPrivate(), certFile);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (GeneralSecurityException | OperatorCreationException e) {
            throw new IllegalStateException("cannot create the cluster CA: " + e.getMessage(), e);
        }
    }

    /** Loads the cluster CA of {@code dir} ({@code ca.crt}, {@code ca.key}). */
    public static Authority loadAuthority(Path dir) {
        Path certFile = dir.resolve(CA_CERT);
        X509Certificate cert = PemFiles.certificate(certFile);
        PrivateKey key = PemFiles.privateKey(dir.resolve(CA_KEY));
        String cluster = PemFiles.dnsNames(cert).stream().findFirst().orElseThrow(() ->
                new IllegalArgumentException(certFile + " is not a vmfork cluster CA (it names no cluster)"));
        try {
            // The key must be the certificate's: sign with it, verify with the certificate.
            java.security.Signature s = java.security.Signature.getInstance(SIGNATURE);
            s.initSign(key);
            s.update(new byte[] {1});
            byte[] sig = s.sign();
            s.initVerify(cert.getPublicKey());
            s.update(new byte[] {1});
            if (!s.verify(sig)) {
                throw new IllegalArgumentException(dir.resolve(CA_KEY) + " is not the key of " + certFile);
            }
        } catch (GeneralSecurityException e) {
            throw new IllegalArgumentException("cannot use the CA key " + dir.resolve(CA_KEY) + ": " + e.getMessage(), e);
        }
        return new Authority(cluster, cert, key, certFile);
    }

    /** The CA of {@code dir}: loaded if it has one, else created for {@code clusterName}. */
    public static Authority loadOrCreateAuthority(Path dir, String clusterName) {
        return Files.exists(dir.resolve(CA_CERT)) ? loadAuthority(dir) : createAuthority(dir, clusterName);
    }

    /**
     * Issues a member's certificate and key into {@code dir} ({@code NAME.crt},
     * {@code NAME.key}), replacing those of an earlier issue (rotation).
     */
    public static MemberFiles issue(Authority ca, Path dir, String name, Role role, Duration validity) {
        checkName(name, "member name");
        if (name.equals("ca")) {
            throw new IllegalArgumentException("'ca' is the CA's file name, not a member name");
        }
        if (validity.isNegative() || validity.isZero()) {
            throw new IllegalArgumentException("validity must be positive, got " + validity);
        }
        try {
            Files.createDirectories(dir);
            KeyPair kp = rsaKeyPair();
            Instant now = Instant.now();
            X500Name issuer = X500Name.getInstance(ca.certificate().getSubjectX500Principal().getEncoded());
            X509v3CertificateBuilder b = new JcaX509v3CertificateBuilder(issuer, serial(), notBefore(now),
                    Date.from(now.plus(validity)), name(name, role.unit()), kp.getPublic());
            JcaX509ExtensionUtils ext = new JcaX509ExtensionUtils();
            b.addExtension(Extension.basicConstraints, true, new BasicConstraints(false));
            b.addExtension(Extension.keyUsage, true,
                    new KeyUsage(KeyUsage.digitalSignature | KeyUsage.keyEncipherment));
            b.addExtension(Extension.extendedKeyUsage, false,
                    new ExtendedKeyUsage(new KeyPurposeId[] {KeyPurposeId.id_kp_serverAuth, KeyPurposeId.id_kp_clientAuth}));
            b.addExtension(Extension.subjectKeyIdentifier, false, ext.createSubjectKeyIdentifier(kp.getPublic()));
            b.addExtension(Extension.authorityKeyIdentifier, false, ext.createAuthorityKeyIdentifier(ca.certificate()));
            // The cluster's name is the name every member shares (Pekko's peer check); the
            // member's own name is its CN, as a DNS name too.
            b.addExtension(Extension.subjectAlternativeName, false, new GeneralNames(new GeneralName[] {
                new GeneralName(GeneralName.dNSName, ca.clusterName()),
                new GeneralName(GeneralName.dNSName, name)}));
            X509Certificate cert = sign(b, ca.key());
            Path keyFile = dir.resolve(name + ".key");
            Path certFile = dir.resolve(name + ".crt");
            writeKey(keyFile, kp.getPrivate());
            writePem(certFile, cert);
            Path caCert = dir.resolve(CA_CERT);
            if (!Files.exists(caCert)) {
                writePem(caCert, ca.certificate());
            }
            return new MemberFiles(keyFile, certFile, caCert);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        } catch (GeneralSecurityException | OperatorCreationException e) {
            throw new IllegalStateException("cannot issue a certificate for " + name + ": " + e.getMessage(), e);
        }
    }

    /**
     * Checks a member's credential files as its node will use them: each readable and
     * parsable, the key an RSA key and the certificate's, the certificate and the CA's valid
     * now, the certificate signed by the CA's.
     *
     * @throws IllegalArgumentException naming the file and what is wrong with it
     */
    public static X509Certificate check(MemberFiles files) {
        X509Certificate ca = PemFiles.certificate(files.caCertFile());
        X509Certificate cert = PemFiles.certificate(files.certFile());
        PrivateKey key = PemFiles.privateKey(files.keyFile());
        if (!(key instanceof RSAPrivateCrtKey rsa)) {
            throw new IllegalArgumentException(files.keyFile() + ": not an RSA key (Pekko's TLS reads RSA keys only)");
        }
        if (!(cert.getPublicKey() instanceof java.security.interfaces.RSAPublicKey pub)
                || !pub.getModulus().equals(rsa.getModulus())) {
            throw new IllegalArgumentException(files.keyFile() + " is not the key of " + files.certFile());
        }
        validNow(files.certFile(), cert);
        validNow(files.caCertFile(), ca);
        try {
            cert.verify(ca.getPublicKey());
        } catch (GeneralSecurityException e) {
            throw new IllegalArgumentException(files.certFile() + " is not signed by the CA of " + files.caCertFile());
        }
        return cert;
    }

    private static void validNow(Path file, X509Certificate cert) {
        try {
            cert.checkValidity();
        } catch (GeneralSecurityException e) {
            throw new IllegalArgumentException(file + ": not valid now (" + e.getMessage() + ")");
        }
    }

    private static KeyPair rsaKeyPair() throws GeneralSecurityException {
        KeyPairGenerator g = KeyPairGenerator.getInstance("RSA");
        g.initialize(RSA_BITS, RANDOM);
        return g.generateKeyPair();
    }

    private static X509Certificate sign(X509v3CertificateBuilder b, PrivateKey key)
            throws OperatorCreationException, GeneralSecurityException {
        X509CertificateHolder holder = b.build(new JcaContentSignerBuilder(SIGNATURE).build(key));
        return new JcaX509CertificateConverter().getCertificate(holder);
    }

    private static X500Name name(String cn, String unit) {
        return new X500NameBuilder(BCStyle.INSTANCE).addRDN(BCStyle.O, ORGANISATION).addRDN(BCStyle.OU, unit)
                .addRDN(BCStyle.CN, cn).build();
    }

    private static BigInteger serial() {
        return new BigInteger(127, RANDOM).add(BigInteger.ONE);
    }

    // A little in the past: a peer whose clock is a few seconds behind still accepts it.
    private static Date notBefore(Instant now) {
        return Date.from(now.minus(Duration.ofMinutes(5)));
    }

    private static void checkName(String name, String what) {
        if (name == null || !NAME.matcher(name).matches()) {
            throw new IllegalArgumentException("'" + name + "' is not a " + what
                    + " (letters, digits and '-', at most 63, not starting or ending with '-')");
        }
    }

    private static void writeKey(Path file, PrivateKey key) throws IOException {
        StringWriter s = new StringWriter();
        try (JcaPEMWriter w = new JcaPEMWriter(s)) {
            w.writeObject(new JcaPKCS8Generator(key, null));
        }
        replace(file, s.toString(), true);
    }

    private static void writePem(Path file, X509Certificate cert) throws IOException {
        StringWriter s = new StringWriter();
        try (JcaPEMWriter w = new JcaPEMWriter(s)) {
            w.writeObject(cert);
        }
        replace(file, s.toString(), false);
    }

    /** Writes {@code text} to a new file in {@code file}'s directory (0600 for a key), renamed over {@code file}. */
    private static void replace(Path file, String text, boolean secret) throws IOException {
        Path dir = file.toAbsolutePath().getParent();
        Path tmp = Files.createTempFile(dir, "." + file.getFileName(), ".tmp",
                PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString(secret ? "rw-------" : "rw-r--r--")));
        try {
            Files.writeString(tmp, text, StandardCharsets.US_ASCII);
            try {
                Files.move(tmp, file, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
            } catch (AtomicMoveNotSupportedException e) {
                Files.move(tmp, file, StandardCopyOption.REPLACE_EXISTING);
            }
        } finally {
            Files.deleteIfExists(tmp);
        }
    }

    /** A PEM private key (RSA, PKCS#1 or PKCS#8, unencrypted); IllegalArgumentException naming the file. */
    public static PrivateKey readKey(Path file) {
        return PemFiles.privateKey(file);
    }

    /** A PEM certificate; IllegalArgumentException naming the file. */
    public static X509Certificate readCertificate(Path file) {
        return PemFiles.certificate(file);
    }

    /** A certificate's DNS subject alternative names (every member's carries the cluster's name). */
    public static List<String> dnsNames(X509Certificate cert) {
        return PemFiles.dnsNames(cert);
    }

    /** Reading PEM files back. */
    static final class PemFiles {
        private PemFiles() {
        }

        static X509Certificate certificate(Path file) {
            Object o = read(file);
            if (!(o instanceof X509CertificateHolder h)) {
                throw new IllegalArgumentException(file + ": not a PEM certificate");
            }
            try {
                return new JcaX509CertificateConverter().getCertificate(h);
            } catch (GeneralSecurityException e) {
                throw new IllegalArgumentException(file + ": " + e.getMessage(), e);
            }
        }

        static PrivateKey privateKey(Path file) {
            Object o = read(file);
            try {
                JcaPEMKeyConverter c = new JcaPEMKeyConverter();
                if (o instanceof PrivateKeyInfo info) {
                    return c.getPrivateKey(info);
                }
                if (o instanceof PEMKeyPair pair) {
                    return c.getKeyPair(pair).getPrivate();
                }
            } catch (IOException e) {
                throw new IllegalArgumentException(file + ": " + e.getMessage(), e);
            }
            throw new IllegalArgumentException(file + ": not an unencrypted PEM private key");
        }

        static List<String> dnsNames(X509Certificate cert) {
            List<String> names = new ArrayList<>();
            try {
                if (cert.getSubjectAlternativeNames() != null) {
                    for (List<?> n : cert.getSubjectAlternativeNames()) {
                        if (n.size() == 2 && Integer.valueOf(GeneralName.dNSName).equals(n.get(0))) {
                            names.add((String) n.get(1));
                        }
                    }
                }
            } catch (java.security.cert.CertificateParsingException e) {
                throw new IllegalArgumentException("unreadable subject alternative names: " + e.getMessage(), e);
            }
            return names;
        }

        private static Object read(Path file) {
            if (!Files.isReadable(file)) {
                throw new IllegalArgumentException(file + ": " + (Files.exists(file) ? "not readable" : "no such file"));
            }
            try (Reader r = Files.newBufferedReader(file, StandardCharsets.US_ASCII); PEMParser p = new PEMParser(r)) {
                Object o = p.readObject();
                if (o == null) {
                    throw new IllegalArgumentException(file + ": no PEM object in it");
                }
                return o;
            } catch (IOException e) {
                throw new IllegalArgumentException(file + ": " + e.getMessage(), e);
            }
        }
    }
}
