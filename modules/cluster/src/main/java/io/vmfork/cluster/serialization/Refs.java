package io.vmfork.cluster.serialization;

import org.apache.pekko.actor.typed.ActorRef;

/**
 * Turns actor references into the strings that go on the wire and back. Given to every
 * codec, since a message's {@code replyTo} is an actor reference.
 */
public interface Refs {
    /** The serialized form of {@code ref} (its full path with the node's address). */
    String toWire(ActorRef<?> ref);

    /** The reference a {@link #toWire} string names, on this or another node. */
    <T> ActorRef<T> fromWire(String wire);
}
