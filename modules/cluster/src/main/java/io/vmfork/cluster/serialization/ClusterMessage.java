package io.vmfork.cluster.serialization;

/**
 * Marker of every message that may cross the network between vmfork nodes (and of every
 * value replicated with Distributed Data). reference.conf binds it, once, to
 * {@link VmforkSerializer}; each implementing type must be registered in a
 * {@link CodecRegistry} with a stable manifest and its Protobuf mapping, or sending it fails.
 */
public interface ClusterMessage {
}
