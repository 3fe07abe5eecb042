package io.vmfork.vmm.capsule;

import com.google.protobuf.ByteString;
import io.vmfork.proto.CapsuleSignature;
import io.vmfork.proto.SignatureAlgorithm;
import java.io.IOException;
import java.nio.file.Path;
import java.security.KeyPair;

/**
 * The key a writer signs capsules with ({@link CapsuleWriter#signedBy}): an Ed25519 key
 * pair. Signing costs one Ed25519 signature per capsule (well under a millisecond) over a
 * message of the digest and the header, never over the memory again.
 */
public final class CapsuleSigner {
    private final KeyPair pair;

    private CapsuleSigner(KeyPair pair) {
        this.pair = pair;
    }

    /** Signs with {@code pair}, an Ed25519 key pair. */
    public static CapsuleSigner of(KeyPair pair) {
        if (!CapsuleKeys.ALGORITHM.equals(pair.getPublic().getAlgorithm())
                && !"EdDSA".equals(pair.getPublic().getAlgorithm())) {
            throw new IllegalArgumentException("capsules are signed with Ed25519, not " + pair.getPublic().getAlgorithm());
        }
        return new CapsuleSigner(pair);
    }

    /** Signs with the key pair in a signing key file ({@link CapsuleKeys#readSigningKey}). */
    public static CapsuleSigner load(Path signingKeyFile) throws IOException {
        return of(CapsuleKeys.readSigningKey(signingKeyFile));
    }

    /** The fingerprint of the public key, as a reader names the signer. */
    public String fingerprint() {
        return CapsuleKeys.fingerprint(pair.getPublic());
    }

    /** The signature frame of a capsule with this digest and header frame. */
    CapsuleSignature sign(byte[] digest, byte[] headerFrame) {
        byte[] sig = CapsuleKeys.sign(pair.getPrivate(), CapsuleKeys.signedMessage(digest, headerFrame));
        return CapsuleSignature.newBuilder()
                .setAlgorithm(SignatureAlgorithm.SIGNATURE_ALGORITHM_ED25519)
                .setPublicKey(ByteString.copyFrom(pair.getPublic().getEncoded()))
                .setSignature(ByteString.copyFrom(sig))
                .build();
    }
}
