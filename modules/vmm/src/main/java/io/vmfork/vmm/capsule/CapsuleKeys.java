package io.vmfork.vmm.capsule;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.GeneralSecurityException;
import java.security.KeyFactory;
import java.security.KeyPair;
import java.security.KeyPairGenerator;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.PrivateKey;
import java.security.PublicKey;
import java.security.spec.PKCS8EncodedKeySpec;
import java.security.spec.X509EncodedKeySpec;
import java.util.Base64;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Capsule signing keys as PEM files, with the JDK alone: Ed25519, the private key as a
 * PKCS#8 "PRIVATE KEY" block and the public key as an X.509 SubjectPublicKeyInfo "PUBLIC
 * KEY" block (what {@code openssl genpkey -algorithm ed25519} and {@code openssl pkey
 * -pubout} write). A signing key file holds both blocks: the JDK cannot derive an Ed25519
 * public key from its private key, and the signature frame names its signer's public key.
 */
public final class CapsuleKeys {
    /** The JDK name of the key and signature algorithm. */
    static final String ALGORITHM = "Ed25519";
    /** Bytes of an Ed25519 signature (RFC 8032). */
    static final int SIGNATURE_BYTES = 64;
    /** Most bytes of a public key the signature frame may carry (an Ed25519 SubjectPublicKeyInfo is 44). */
    static final int MAX_PUBLIC_KEY_BYTES = 128;
    private static final String PRIVATE = "PRIVATE KEY";
    private static final String PUBLIC = "PUBLIC KEY";
    private static final Pattern BLOCK = Pattern.compile(
            "-----BEGIN ([A-Z0-9 ]+)-----\\s*([A-Za-z0-9+/=\\s]*?)\\s*-----END \\1-----");
    /** A key file is a few hundred bytes; a larger one is not a key. */
    private static final long MAX_KEY_FILE_BYTES = 64 << 10;

    private CapsuleKeys() {
    }

    /** A new Ed25519 key pair from the JDK's default SecureRandom. */
    public static KeyPair generate() {
        try {
            return KeyPairGenerator.getInstance(ALGORITHM).generateKeyPair();
        } catch (NoSuchAlgorithmException e) {
            throw new AssertionError("every JDK 15+ has " + ALGORITHM, e);
        }
    }

    /** The signing key file's text: the PKCS#8 private key, then the public key. */
    public static String signingKeyPem(KeyPair pair) {
        return pem(PRIVATE, pair.getPrivate().getEncoded()) + publicKeyPem(pair.getPublic());
    }

    /** A public key as a "PUBLIC KEY" PEM block. */
    public static String publicKeyPem(PublicKey key) {
        return pem(PUBLIC, key.getEncoded());
    }

    /** "SHA256:" and the unpadded base64 of the SHA-256 of the key's SubjectPublicKeyInfo, as OpenSSH prints keys. */
    public static String fingerprint(PublicKey key) {
        return fingerprint(key.getEncoded());
    }

    static String fingerprint(byte[] subjectPublicKeyInfo) {
        return "SHA256:" + Base64.getEncoder().withoutPadding()
                .encodeToString(CapsuleWriter.newDigest().digest(subjectPublicKeyInfo));
    }

    /**
     * The key pair in a signing key file, checked to be a pair (a probe signed with the
     * private key verifies with the public one).
     *
     * @throws IllegalArgumentException naming the file and what is wrong with it
     */
    public static KeyPair readSigningKey(Path file) throws IOException {
        String text = read(file);
        byte[] priv = block(text, PRIVATE, file);
        byte[] pub = block(text, PUBLIC, file);
        if (priv == null) {
            throw new IllegalArgumentException(file + " holds no PRIVATE KEY block: a capsule signing key file holds a"
                    + " PKCS#8 Ed25519 private key and its public key (vmfork capsule-key writes one)");
        }
        if (pub == null) {
            throw new IllegalArgumentException(file + " holds no PUBLIC KEY block after its private key (append it:"
                    + " openssl pkey -in KEY -pubout >> KEY)");
        }
        KeyPair pair;
        try {
            KeyFactory f = KeyFactory.getInstance(ALGORITHM);
            pair = new KeyPair(f.generatePublic(new X509EncodedKeySpec(pub)),
                    f.generatePrivate(new PKCS8EncodedKeySpec(priv)));
        } catch (GeneralSecurityException | RuntimeException e) {
            throw new IllegalArgumentException(file + " does not hold an Ed25519 key pair: " + e.getMessage(), e);
        }
        byte[] probe = "vmfork capsule key probe".getBytes(StandardCharsets.US_ASCII);
        if (!verify(pair.getPublic(), probe, sign(pair.getPrivate(), probe))) {
            throw new IllegalArgumentException(file + ": its PUBLIC KEY is not the public key of its PRIVATE KEY");
        }
        return pair;
    }

    /**
     * The public key in a file's "PUBLIC KEY" block (a signing key file's public half does too).
     *
     * @throws IllegalArgumentException naming the file and what is wrong with it
     */
    public static PublicKey readPublicKey(Path file) throws IOException {
        byte[] pub = block(read(file), PUBLIC, file);
        if (pub == null) {
            throw new IllegalArgumentException(file + " holds no PUBLIC KEY block (an X.509 SubjectPublicKeyInfo in"
                    + " PEM, as vmfork capsule-key writes to NAME.pub)");
        }
        try {
            return KeyFactory.getInstance(ALGORITHM).generatePublic(new X509EncodedKeySpec(pub));
        } catch (GeneralSecurityException | RuntimeException e) {
            throw new IllegalArgumentException(file + " does not hold an Ed25519 public key: " + e.getMessage(), e);
        }
    }

    static byte[] sign(PrivateKey key, byte[] message) {
        try {
            java.security.Signature s = java.security.Signature.getInstance(ALGORITHM);
            s.initSign(key);
            s.update(message);
            return s.sign();
        } catch (GeneralSecurityException e) {
            throw new IllegalStateException(ALGORITHM + " signing failed: " + e.getMessage(), e);
        }
    }

    static boolean verify(PublicKey key, byte[] message, byte[] signature) {
        try {
            java.security.Signature s = java.security.Signature.getInstance(ALGORITHM);
            s.initVerify(key);
            s.update(message);
            return s.verify(signature);
        } catch (GeneralSecurityException e) {
            // A malformed signature (e.g. a point off the curve) is a signature that does not verify.
            return false;
        }
    }

    /** The message a capsule's signature is over (capsule.proto, CapsuleSignature). */
    static byte[] signedMessage(byte[] digest, byte[] headerFrame) {
        byte[] context = CapsuleFormat.SIGNATURE_CONTEXT;
        byte[] m = new byte[context.length + digest.length + headerFrame.length];
        System.arraycopy(context, 0, m, 0, context.length);
        System.arraycopy(digest, 0, m, context.length, digest.length);
        System.arraycopy(headerFrame, 0, m, context.length + digest.length, headerFrame.length);
        return m;
    }

    static boolean sameKey(PublicKey key, byte[] subjectPublicKeyInfo) {
        return MessageDigest.isEqual(key.getEncoded(), subjectPublicKeyInfo);
    }

    private static String read(Path file) throws IOException {
        if (Files.size(file) > MAX_KEY_FILE_BYTES) {
            throw new IllegalArgumentException(file + " is over " + MAX_KEY_FILE_BYTES + " bytes: not a key file");
        }
        return Files.readString(file, StandardCharsets.ISO_8859_1);
    }

    /** The DER bytes of the first block of {@code type}, or null if there is none. */
    private static byte[] block(String text, String type, Path file) {
        Matcher m = BLOCK.matcher(text);
        while (m.find()) {
            if (m.group(1).equals(type)) {
                try {
                    return Base64.getMimeDecoder().decode(m.group(2));
                } catch (IllegalArgumentException e) {
                    throw new IllegalArgumentException(file + ": its " + type + " block is not base64", e);
                }
            }
        }
        return null;
    }

    private static String pem(String type, byte[] der) {
        String b64 = Base64.getMimeEncoder(64, "\n".getBytes(StandardCharsets.US_ASCII)).encodeToString(der);
        return "-----BEGIN " + type + "-----\n" + b64 + "\n-----END " + type + "-----\n";
    }
}
