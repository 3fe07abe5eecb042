/**
 * The wire format of the cluster. Every message that crosses the network, and every value
 * replicated with Distributed Data, implements {@link
 * io.vmfork.cluster.serialization.ClusterMessage} and is Protobuf on the wire (schemas in
 * proto/src/main/proto/vmfork/). {@link io.vmfork.cluster.serialization.VmforkSerializer},
 * bound once to the marker in reference.conf, encodes it with the {@link
 * io.vmfork.cluster.serialization.MessageCodec} registered for its class under a stable
 * manifest. Each package with wire messages has one {@link
 * io.vmfork.cluster.serialization.CodecProvider}, listed in
 * {@code vmfork.serialization.codec-providers}. Java serialization stays off, and tests run
 * with {@code pekko.actor.serialize-messages = on}, so that a message without a codec fails
 * a test; messages that never leave their node implement Pekko's
 * {@code NoSerializationVerificationNeeded} instead.
 *
 * <p>Rules: a manifest never changes once released; a Protobuf field is never renumbered
 * or reused; an actor reference travels as the string of {@link
 * io.vmfork.cluster.serialization.Refs#toWire}; a decoded message is checked by its
 * record's constructor like one built in Java, and a bad one fails decoding.
 */
package io.vmfork.cluster.serialization;
