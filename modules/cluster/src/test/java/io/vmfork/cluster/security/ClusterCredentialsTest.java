package io.vmfork.cluster.security;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.KeyStore;
import java.security.cert.CertPathValidator;
import java.security.cert.CertPathValidatorException;
import java.security.cert.CertificateFactory;
import java.security.cert.PKIXParameters;
import java.security.cert.TrustAnchor;
import java.security.cert.X509Certificate;
import java.time.Duration;
import java.util.List;
import java.util.Set;
import javax.net.ssl.TrustManagerFactory;
import javax.net.ssl.X509TrustManager;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class ClusterCredentialsTest {
    @TempDir
    Path dir;

    private static X509Certificate read(Path file) throws Exception {
        try (var in = Files.newInputStream(file)) {
            return (X509Certificate) CertificateFactory.getInstance("X.509").generateCertificate(in);
        }
    }

    private static void validate(X509Certificate leaf, X509Certificate ca) throws Exception {
        PKIXParameters p = new PKIXParameters(Set.of(new TrustAnchor(ca, null)));
        p.setRevocationEnabled(false);
        CertPathValidator.getInstance("PKIX").validate(
                CertificateFactory.getInstance("X.509").generateCertPath(List.of(leaf)), p);
    }

    @Test
    void aNodeCertificateChainsToItsCaAndCarriesTheClusterName() throws Exception {
        ClusterCredentials.Authority ca = ClusterCredentials.createAuthority(dir, "prod");
        ClusterCredentials.MemberFiles node = ClusterCredentials.issue(ca, dir, "node-1",
                ClusterCredentials.Role.NODE, Duration.ofDays(30));
        X509Certificate caCert = read(dir.resolve("ca.crt"));
        X509Certificate cert = read(node.certFile());

        validate(cert, caCert);
        assertEquals(dir.resolve("ca.crt"), node.caCertFile());
        assertEquals("CN=node-1,OU=node,O=vmfork", cert.getSubjectX500Principal().getName());
        assertEquals(caCert.getSubjectX500Principal(), cert.getIssuerX500Principal());
        assertEquals("CN=prod CA,OU=ca,O=vmfork", caCert.getSubjectX500Principal().getName());
        assertEquals(List.of("prod", "node-1"), ClusterCredentials.PemFiles.dnsNames(cert));
        // The CA may sign, members may not; members authenticate both as TLS server and client.
        assertEquals(0, caCert.getBasicConstraints());
        assertTrue(caCert.getKeyUsage()[5], "keyCertSign");
        assertEquals(-1, cert.getBasicConstraints());
        boolean[] ku = cert.getKeyUsage();
        assertTrue(ku[0] && ku[2], "digitalSignature and keyEncipherment");
        assertFalse(ku[5], "a member cannot sign certificates");
        assertEquals(List.of("1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"), cert.getExtendedKeyUsage());
        assertEquals("RSA", cert.getPublicKey().getAlgorithm());
        long days = Duration.between(cert.getNotBefore().toInstant(), cert.getNotAfter().toInstant()).toDays();
        assertTrue(days >= 30 && days <= 31, days + " days");
        ClusterCredentials.check(node);

        // The JDK's own trust manager (the one Pekko's engine builds) accepts it as client and server.
        KeyStore ks = KeyStore.getInstance(KeyStore.getDefaultType());
        ks.load(null, null);
        ks.setCertificateEntry("ca", caCert);
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(ks);
        X509TrustManager tm = (X509TrustManager) tmf.getTrustManagers()[0];
        tm.checkClientTrusted(new X509Certificate[] {cert}, "RSA");
        tm.checkServerTrusted(new X509Certificate[] {cert}, "RSA");
    }

    @Test
    void aClientCertificateIsTheSameButForItsUnit() throws Exception {
        ClusterCredentials.Authority ca = ClusterCredentials.createAuthority(dir, "vmfork");
        ClusterCredentials.MemberFiles client = ClusterCredentials.issue(ca, dir, "app",
                ClusterCredentials.Role.CLIENT, ClusterCredentials.MEMBER_VALIDITY);
        X509Certificate cert = read(client.certFile());
        assertEquals("CN=app,OU=client,O=vmfork", cert.getSubjectX500Principal().getName());
        assertEquals(List.of("vmfork", "app"), ClusterCredentials.PemFiles.dnsNames(cert));
        validate(cert, read(client.caCertFile()));
    }

    @Test
    void keysAreOwnerOnlyAndCertificatesReadable() throws Exception {
        ClusterCredentials.Authority ca = ClusterCredentials.createAuthority(dir, "vmfork");
        ClusterCredentials.MemberFiles node = ClusterCredentials.issue(ca, dir, "n", ClusterCredentials.Role.NODE,
                ClusterCredentials.MEMBER_VALIDITY);
        for (Path key : List.of(dir.resolve("ca.key"), node.keyFile())) {
            assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(key)), key.toString());
            assertTrue(Files.readString(key).startsWith("-----BEGIN PRIVATE KEY-----"), key + " is PKCS#8 PEM");
        }
        for (Path cert : List.of(dir.resolve("ca.crt"), node.certFile())) {
            assertEquals("rw-r--r--", PosixFilePermissions.toString(Files.getPosixFilePermissions(cert)), cert.toString());
        }
        try (var files = Files.list(dir)) {
            assertEquals(4, files.count(), "no temporary file left behind");
        }
    }

    @Test
    void anotherCasCertificateDoesNotVerify() throws Exception {
        ClusterCredentials.Authority ours = ClusterCredentials.createAuthority(dir.resolve("ours"), "vmfork");
        ClusterCredentials.Authority theirs = ClusterCredentials.createAuthority(dir.resolve("theirs"), "vmfork");
        ClusterCredentials.MemberFiles foreign = ClusterCredentials.issue(theirs, dir.resolve("theirs"), "intruder",
                ClusterCredentials.Role.NODE, ClusterCredentials.MEMBER_VALIDITY);
        X509Certificate cert = read(foreign.certFile());
        assertThrows(CertPathValidatorException.class, () -> validate(cert, ours.certificate()));
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ClusterCredentials.check(
                new ClusterCredentials.MemberFiles(foreign.keyFile(), foreign.certFile(), ours.certFile())));
        assertTrue(e.getMessage().contains("is not signed by the CA"), e.getMessage());
    }

    @Test
    void aLoadedAuthorityIssuesUnderTheSameCaAndRotationReplacesTheKey() throws Exception {
        ClusterCredentials.createAuthority(dir, "blue");
        ClusterCredentials.Authority loaded = ClusterCredentials.loadAuthority(dir);
        assertEquals("blue", loaded.clusterName());
        ClusterCredentials.MemberFiles first = ClusterCredentials.issue(loaded, dir, "node-1",
                ClusterCredentials.Role.NODE, ClusterCredentials.MEMBER_VALIDITY);
        X509Certificate before = read(first.certFile());
        String keyBefore = Files.readString(first.keyFile());
        ClusterCredentials.MemberFiles second = ClusterCredentials.issue(ClusterCredentials.loadAuthority(dir), dir,
                "node-1", ClusterCredentials.Role.NODE, ClusterCredentials.MEMBER_VALIDITY);
        X509Certificate after = read(second.certFile());
        assertNotEquals(before.getSerialNumber(), after.getSerialNumber());
        assertNotEquals(keyBefore, Files.readString(second.keyFile()));
        validate(after, read(dir.resolve("ca.crt")));
        ClusterCredentials.check(second);
        // A key that is not the certificate's is refused before a node uses it.
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ClusterCredentials.check(
                new ClusterCredentials.MemberFiles(dir.resolve("ca.key"), second.certFile(), second.caCertFile())));
        assertTrue(e.getMessage().contains("is not the key of"), e.getMessage());
    }

    @Test
    void anExpiredCertificateIsRefusedBeforeUse() throws Exception {
        ClusterCredentials.Authority ca = ClusterCredentials.createAuthority(dir, "vmfork");
        ClusterCredentials.MemberFiles node = ClusterCredentials.issue(ca, dir, "brief", ClusterCredentials.Role.NODE,
                Duration.ofSeconds(1));
        ClusterCredentials.check(node);
        Thread.sleep(1100);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> ClusterCredentials.check(node));
        assertTrue(e.getMessage().startsWith(node.certFile() + ": not valid now"), e.getMessage());
    }

    @Test
    void anExistingCaIsNeverReplacedAndNamesAreChecked() {
        ClusterCredentials.Authority ca = ClusterCredentials.createAuthority(dir, "vmfork");
        assertThrows(UncheckedIOException.class, () -> ClusterCredentials.createAuthority(dir, "vmfork"));
        assertEquals(ca.certificate(), ClusterCredentials.loadOrCreateAuthority(dir, "other").certificate());
        for (String bad : List.of("", "-x", "a b", "../etc", "x".repeat(64), "ca")) {
            assertThrows(IllegalArgumentException.class, () -> ClusterCredentials.issue(ca, dir, bad,
                    ClusterCredentials.Role.NODE, ClusterCredentials.MEMBER_VALIDITY), bad);
        }
    }
}
