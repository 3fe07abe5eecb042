package io.vmfork.vmm.capsule;

/**
 * A delta capsule is over a base image this host does not hold (evicted, never received,
 * or from another source): nothing was read past the header, and the source can send a
 * full capsule instead.
 */
public final class CapsuleBaseUnknownException extends CapsuleException {
    private final byte[] baseKey;

    CapsuleBaseUnknownException(byte[] baseKey, String message) {
        super(message);
        this.baseKey = baseKey.clone();
    }

    /** The key of the missing base image, as the capsule names it. */
    public byte[] baseKey() {
        return baseKey.clone();
    }
}
