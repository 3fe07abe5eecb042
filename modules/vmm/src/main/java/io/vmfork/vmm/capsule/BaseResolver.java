package io.vmfork.vmm.capsule;

import io.vmfork.vmm.memory.RuntimeImage;

/**
 * How a reader of a delta capsule finds the image the delta is over: the receiver's
 * store of images it received earlier, keyed by the key their source chose
 * ({@link CapsuleWriter#writeDelta}'s {@code baseKey}).
 */
@FunctionalInterface
public interface BaseResolver {
    /**
     * The image held under {@code baseKey}, with a new reference ({@link RuntimeImage#retain})
     * that the reader gives to the caller with the result, or releases if the read fails;
     * null when this host holds no such image (the read then fails with
     * {@link CapsuleBaseUnknownException} before any memory is read).
     */
    RuntimeImage resolve(byte[] baseKey);
}
