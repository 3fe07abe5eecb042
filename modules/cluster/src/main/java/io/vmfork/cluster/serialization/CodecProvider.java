package io.vmfork.cluster.serialization;

/**
 * A package's contribution to the {@link CodecRegistry}: the codecs of its messages. Each
 * provider is named, as a class with a public no-argument constructor, in the list
 * {@code vmfork.serialization.codec-providers} of reference.conf.
 */
public interface CodecProvider {
    /** Adds this package's codecs to {@code registry}. */
    void register(CodecRegistry.Builder registry);
}
