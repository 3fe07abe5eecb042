package io.vmfork.cluster.serialization;

import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.MessageLite;
import com.google.protobuf.Parser;
import com.typesafe.config.Config;
import java.lang.reflect.InvocationTargetException;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.function.BiFunction;

/**
 * Every {@link ClusterMessage} type with its codec, by class and by manifest. Built once
 * from the providers that configuration names; a type or a manifest registered twice is
 * an error, so that two packages can never claim one manifest.
 */
public final class CodecRegistry {
    /** The configuration key that lists the {@link CodecProvider} classes. */
    public static final String PROVIDERS_KEY = "vmfork.serialization.codec-providers";

    private final Map<Class<?>, MessageCodec<?>> byType;
    private final Map<String, MessageCodec<?>> byManifest;

    private CodecRegistry(Map<Class<?>, MessageCodec<?>> byType, Map<String, MessageCodec<?>> byManifest) {
        this.byType = Map.copyOf(byType);
        this.byManifest = Map.copyOf(byManifest);
    }

    /** The registry of the providers listed under {@link #PROVIDERS_KEY}. */
    public static CodecRegistry fromConfig(Config config) {
        Builder builder = new Builder();
        for (String name : config.getStringList(PROVIDERS_KEY)) {
            builder.addProvider(instantiate(name));
        }
        return builder.build();
    }

    /** A registry of exactly these providers (tests). */
    public static CodecRegistry of(CodecProvider... providers) {
        Builder builder = new Builder();
        for (CodecProvider p : providers) {
            builder.addProvider(p);
        }
        return builder.build();
    }

    private static CodecProvider instantiate(String name) {
        try {
            Class<?> c = Class.forName(name);
            if (!CodecProvider.class.isAssignableFrom(c)) {
                throw new IllegalArgumentException(PROVIDERS_KEY + ": " + name + " is not a CodecProvider");
            }
            return (CodecProvider) c.getDeclaredConstructor().newInstance();
        } catch (ClassNotFoundException e) {
            throw new IllegalArgumentException(PROVIDERS_KEY + ": no class " + name, e);
        } catch (NoSuchMethodException | InstantiationException | IllegalAccessException
                 | InvocationTargetException e) {
            throw new IllegalArgumentException(
                    PROVIDERS_KEY + ": cannot create " + name + " (needs a public no-argument constructor)", e);
        }
    }

    /** The codec of exactly this class, or null. */
    @SuppressWarnings("unchecked")
    public <T extends ClusterMessage> MessageCodec<T> forType(Class<T> type) {
        return (MessageCodec<T>) byType.get(type);
    }

    /** The codec registered under {@code manifest}, or null. */
    public MessageCodec<?> forManifest(String manifest) {
        return byManifest.get(manifest);
    }

    /** Every registered codec (for the round-trip tests). */
    public Collection<MessageCodec<?>> codecs() {
        return List.copyOf(byType.values());
    }

    /** Collects codecs; refuses a type or manifest registered twice. */
    public static final class Builder {
        private final Map<Class<?>, MessageCodec<?>> byType = new HashMap<>();
        private final Map<String, MessageCodec<?>> byManifest = new HashMap<>();

        private Builder() {
        }

        Builder addProvider(CodecProvider provider) {
            provider.register(this);
            return this;
        }

        /** Adds one codec. */
        public Builder add(MessageCodec<?> codec) {
            if (byType.containsKey(codec.type())) {
                throw new IllegalStateException("two codecs for " + codec.type().getName());
            }
            if (byManifest.containsKey(codec.manifest())) {
                throw new IllegalStateException("manifest '" + codec.manifest() + "' is used by "
                        + byManifest.get(codec.manifest()).type().getName() + " and " + codec.type().getName());
            }
            byType.put(codec.type(), codec);
            byManifest.put(codec.manifest(), codec);
            return this;
        }

        /**
         * Adds a codec from its parts: the type, its manifest, the Protobuf parser, and the
         * two mappings.
         */
        public <T extends ClusterMessage, P extends MessageLite> Builder add(
                Class<T> type, String manifest, Parser<P> parser,
                BiFunction<T, Refs, P> toProto, BiFunction<P, Refs, T> fromProto) {
            return add(new MessageCodec<T>() {
                @Override
                public Class<T> type() {
                    return type;
                }

                @Override
                public String manifest() {
                    return manifest;
                }

                @Override
                public byte[] encode(T message, Refs refs) {
                    return toProto.apply(message, refs).toByteArray();
                }

                @Override
                public T decode(byte[] bytes, Refs refs) throws InvalidProtocolBufferException {
                    return fromProto.apply(parser.parseFrom(bytes), refs);
                }
            });
        }

        /** The registry. */
        public CodecRegistry build() {
            return new CodecRegistry(byType, byManifest);
        }
    }
}
