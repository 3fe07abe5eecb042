package io.vmfork.vmm.capsule;

import io.vmfork.vmm.memory.RuntimeImage;

/**
 * A capsule read to its end and verified, with its finished runtime image: for a full
 * capsule the pages it carried, for a delta a layer over its base
 * ({@link CapsuleReader#readImage}). The holder owns one reference to {@code image};
 * close() releases it. For a delta, {@code contents().delta()} says which base and runs it
 * was built from, but holds no reference to the base: the new image holds what it needs.
 */
public record ReceivedCapsule(CapsuleContents contents, RuntimeImage image) implements AutoCloseable {
    @Override
    public void close() {
        image.release();
    }
}
