package io.vmfork.vmm.capsule;

/**
 * A well-formed, digest-valid capsule that its reader was told to take only from a trusted
 * signer ({@link CapsuleReader#requireSignedBy}), and that is not signed by one: it carries
 * no signature, a signature by a key the reader does not trust, or a signature that does
 * not verify. Refused after the digest, before the reader returns, so before any VM is
 * made from it. The message is one line naming the reason and the key.
 */
public final class CapsuleSignatureException extends CapsuleException {
    /** Why the capsule was refused. */
    public enum Reason {
        /** The capsule carries no signature (header flag SIGNED clear). */
        UNSIGNED,
        /** Signed, but by a key that is not one of the trusted signers. */
        UNTRUSTED_SIGNER,
        /** Signed in the name of a trusted key, but the signature does not verify. */
        BAD_SIGNATURE
    }

    private final Reason reason;

    CapsuleSignatureException(Reason reason, String message) {
        super(message);
        this.reason = reason;
    }

    public Reason reason() {
        return reason;
    }
}
