package io.vmfork.cluster.serialization;

import com.google.protobuf.InvalidProtocolBufferException;

/**
 * How one {@link ClusterMessage} type maps to its Protobuf message, under a manifest that
 * never changes once released (it is what a receiver dispatches on).
 *
 * @param <T> the message type (a record of the cluster)
 */
public interface MessageCodec<T extends ClusterMessage> {
    /** The message type this codec encodes; exactly this class, not its subclasses. */
    Class<T> type();

    /** The stable manifest, such as {@code "placement.PlaceCopies"}. */
    String manifest();

    /** The message as the bytes of its Protobuf form. */
    byte[] encode(T message, Refs refs);

    /**
     * The message from the bytes of its Protobuf form.
     *
     * @throws InvalidProtocolBufferException if the bytes are not a valid message
     * @throws IllegalArgumentException if they are, but hold a value the type refuses
     */
    T decode(byte[] bytes, Refs refs) throws InvalidProtocolBufferException;
}
