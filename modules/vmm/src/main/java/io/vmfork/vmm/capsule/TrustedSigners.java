package io.vmfork.vmm.capsule;

import com.typesafe.config.Config;
import io.vmfork.proto.CapsuleSignature;
import java.io.IOException;
import java.nio.file.Path;
import java.security.PublicKey;
import java.util.ArrayList;
import java.util.List;

/**
 * The public keys a reader takes signed capsules from ({@link CapsuleReader#requireSignedBy}):
 * a capsule is accepted only with a signature that one of them verifies. Empty: no
 * signature is required (and none is checked).
 */
public final class TrustedSigners {
    /** The configuration key: a list of PEM public key files. */
    public static final String CONFIG_KEY = "vmfork.capsule.trusted-signers";
    private static final TrustedSigners NONE = new TrustedSigners(List.of());
    private final List<PublicKey> keys;

    private TrustedSigners(List<PublicKey> keys) {
        this.keys = List.copyOf(keys);
    }

    /** No signer required. */
    public static TrustedSigners none() {
        return NONE;
    }

    public static TrustedSigners of(List<PublicKey> keys) {
        for (PublicKey k : keys) {
            if (!CapsuleKeys.ALGORITHM.equals(k.getAlgorithm()) && !"EdDSA".equals(k.getAlgorithm())) {
                throw new IllegalArgumentException("capsules are signed with Ed25519, not " + k.getAlgorithm());
            }
        }
        return new TrustedSigners(keys);
    }

    /** The public keys in these PEM files ({@link CapsuleKeys#readPublicKey}). */
    public static TrustedSigners load(List<Path> publicKeyFiles) throws IOException {
        List<PublicKey> keys = new ArrayList<>();
        for (Path p : publicKeyFiles) {
            keys.add(CapsuleKeys.readPublicKey(p));
        }
        return of(keys);
    }

    /** The files listed at {@value #CONFIG_KEY} (relative paths from the working directory); none if unset. */
    public static TrustedSigners create(Config root) throws IOException {
        if (!root.hasPath(CONFIG_KEY)) {
            return NONE;
        }
        List<Path> files = new ArrayList<>();
        for (String s : root.getStringList(CONFIG_KEY)) {
            files.add(Path.of(s));
        }
        return load(files);
    }

    /** These keys and {@code other}'s. */
    public TrustedSigners and(TrustedSigners other) {
        List<PublicKey> all = new ArrayList<>(keys);
        all.addAll(other.keys);
        return new TrustedSigners(all);
    }

    public boolean isEmpty() {
        return keys.isEmpty();
    }

    public int size() {
        return keys.size();
    }

    /**
     * Refuses a capsule not signed by one of these keys; {@code signature} null for an
     * unsigned capsule, {@code digest} its verified SHA-256, {@code headerFrame} its header
     * frame as read.
     */
    void check(CapsuleSignature signature, byte[] digest, byte[] headerFrame, String source) {
        String trusted = keys.size() == 1 ? "its trusted signer " + CapsuleKeys.fingerprint(keys.get(0))
                : "one of its " + keys.size() + " trusted signers";
        if (signature == null) {
            throw new CapsuleSignatureException(CapsuleSignatureException.Reason.UNSIGNED,
                    "the capsule from " + source + " is not signed, and this host takes capsules signed by "
                            + trusted + " only");
        }
        byte[] spki = signature.getPublicKey().toByteArray();
        PublicKey key = null;
        for (PublicKey k : keys) {
            if (CapsuleKeys.sameKey(k, spki)) {
                key = k;
            }
        }
        String signer = CapsuleKeys.fingerprint(spki);
        if (key == null) {
            throw new CapsuleSignatureException(CapsuleSignatureException.Reason.UNTRUSTED_SIGNER,
                    "the capsule from " + source + " is signed by key " + signer + ", which is not " + trusted);
        }
        if (!CapsuleKeys.verify(key, CapsuleKeys.signedMessage(digest, headerFrame),
                signature.getSignature().toByteArray())) {
            throw new CapsuleSignatureException(CapsuleSignatureException.Reason.BAD_SIGNATURE,
                    "the capsule from " + source + " has a signature in the name of trusted key " + signer
                            + " that does not verify: it was changed after it was signed");
        }
    }
}
