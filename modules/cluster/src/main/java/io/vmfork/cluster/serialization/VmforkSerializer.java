package io.vmfork.cluster.serialization;

import com.google.protobuf.InvalidProtocolBufferException;
import java.io.NotSerializableException;
import org.apache.pekko.actor.ExtendedActorSystem;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorRefResolver;
import org.apache.pekko.actor.typed.javadsl.Adapter;
import org.apache.pekko.serialization.SerializerWithStringManifest;

/**
 * The one Pekko serializer of vmfork's wire messages: every {@link ClusterMessage} goes
 * out as the Protobuf form its {@link MessageCodec} gives, under the codec's stable
 * manifest. Bound to {@link ClusterMessage} in reference.conf
 * ({@code pekko.actor.serialization-bindings}); its identifier is {@link #IDENTIFIER}.
 */
public final class VmforkSerializer extends SerializerWithStringManifest {
    /** Pekko's serializer id of this serializer; never change it (it is on the wire). */
    public static final int IDENTIFIER = 7_100_001;

    private final ExtendedActorSystem system;
    private final CodecRegistry registry;
    private volatile Refs refs;

    public VmforkSerializer(ExtendedActorSystem system) {
        this.system = system;
        this.registry = CodecRegistry.fromConfig(system.settings().config());
    }

    @Override
    public int identifier() {
        return IDENTIFIER;
    }

    @Override
    public String manifest(Object o) {
        return codecOf(o).manifest();
    }

    @Override
    @SuppressWarnings({"unchecked", "rawtypes"})
    public byte[] toBinary(Object o) {
        MessageCodec codec = codecOf(o);
        return codec.encode((ClusterMessage) o, refs());
    }

    @Override
    public Object fromBinary(byte[] bytes, String manifest) throws NotSerializableException {
        MessageCodec<?> codec = registry.forManifest(manifest);
        if (codec == null) {
            throw new NotSerializableException("no vmfork codec for manifest '" + manifest + "'");
        }
        try {
            return codec.decode(bytes, refs());
        } catch (InvalidProtocolBufferException | RuntimeException e) {
            NotSerializableException n = new NotSerializableException(
                    "cannot decode '" + manifest + "': " + e.getMessage());
            n.initCause(e);
            throw n;
        }
    }

    private MessageCodec<?> codecOf(Object o) {
        MessageCodec<?> codec = o instanceof ClusterMessage ? registry.forType(((ClusterMessage) o).getClass()) : null;
        if (codec == null) {
            throw new IllegalArgumentException("no vmfork codec for " + o.getClass().getName()
                    + ": register one in a CodecProvider listed in " + CodecRegistry.PROVIDERS_KEY);
        }
        return codec;
    }

    // The typed resolver needs the typed system, which does not exist yet while Pekko
    // creates its serializers: resolve it on first use.
    private Refs refs() {
        Refs r = refs;
        if (r == null) {
            ActorRefResolver resolver = ActorRefResolver.get(Adapter.toTyped(system));
            r = new Refs() {
                @Override
                public String toWire(ActorRef<?> ref) {
                    return resolver.toSerializationFormat(ref);
                }

                @Override
                public <T> ActorRef<T> fromWire(String wire) {
                    return resolver.resolveActorRef(wire);
                }
            };
            refs = r;
        }
        return r;
    }
}
