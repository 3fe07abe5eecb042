package io.vmfork.cluster.transfer;

import com.typesafe.config.Config;
import java.time.Duration;

/**
 * The capsule transfer's settings, the {@code vmfork.transfer} subtree (defaults in the
 * cluster module's reference.conf, every key described in docs/configuration.md).
 *
 * @param connectTimeout     how long a {@link TransferClient} waits for the connection
 * @param idleTimeout        a transfer fails when nothing moved this long (package-info,
 *                           "Timeouts", has who notices what)
 * @param maxFrameBytes      the largest frame payload either side accepts (a longer length
 *                           is refused before anything is allocated); bounds the result bytes
 *                           too (an OPEN frame has its own cap, {@link Frames#MAX_OPEN})
 * @param dataFrameBytes     the payload of the DATA frames a sender writes (at most
 *                           {@code maxFrameBytes})
 * @param host               the address a node's {@link TransferServer} binds
 * @param port               its port; 0: a free one
 * @param nice              the nice value of those threads (0..19; 0 leaves them as they are), so that a
 *                          transfer's encoding and decoding yields the CPU to guests and actors
 * @param blockingDispatcher config path of the Pekko dispatcher whose threads run the
 *                           Receivers and the IoWriters (one thread per transfer and side)
 * @param limits             what a {@link TransferServer} holds for connections before and
 *                           after their opening (package-info, "Limits")
 * @param tls                TLS with mutual authentication from the member's credentials
 *                           ({@code vmfork.security}); empty: plain TCP (package-info, "TLS")
 */
public record TransferSettings(
        Duration connectTimeout,
        Duration idleTimeout,
        int maxFrameBytes,
        int dataFrameBytes,
        String host,
        int port,
        String blockingDispatcher,
        int nice,
        Limits limits,
        java.util.Optional<TransferTls> tls) {

    /** The configuration path of the subtree {@link #fromConfig} reads. */
    public static final String PATH = "vmfork.transfer";

    public TransferSettings {
        if (host == null || host.isBlank()) {
            throw new IllegalArgumentException(PATH + ".host must not be empty");
        }
        if (port < 0 || port > 65535) {
            throw new IllegalArgumentException(PATH + ".port must be in 0..65535, got " + port);
        }
        requirePositive(connectTimeout, "connect-timeout");
        requirePositive(idleTimeout, "idle-timeout");
        if (maxFrameBytes < Frames.MIN_MAX_FRAME || maxFrameBytes > Frames.MAX_MAX_FRAME) {
            throw new IllegalArgumentException(PATH + ".max-frame must be in " + Frames.MIN_MAX_FRAME + ".."
                    + Frames.MAX_MAX_FRAME + " bytes, got " + maxFrameBytes);
        }
        if (dataFrameBytes < 1 || dataFrameBytes > maxFrameBytes) {
            throw new IllegalArgumentException(PATH + ".data-frame must be in 1..max-frame (" + maxFrameBytes
                    + " bytes), got " + dataFrameBytes);
        }
        if (blockingDispatcher == null || blockingDispatcher.isBlank()) {
            throw new IllegalArgumentException(PATH + ".blocking-dispatcher must name a dispatcher");
        }
        if (nice < 0 || nice > 19) {
            throw new IllegalArgumentException(PATH + ".nice must be in 0..19, got " + nice);
        }
        if (limits == null) {
            throw new IllegalArgumentException(PATH + " limits must be given");
        }
        if (tls == null) {
            throw new IllegalArgumentException(PATH + " tls must be given (empty: plain TCP)");
        }
    }

    /** Settings over plain TCP. */
    public TransferSettings(Duration connectTimeout, Duration idleTimeout, int maxFrameBytes, int dataFrameBytes,
                            String host, int port, String blockingDispatcher, int nice, Limits limits) {
        this(connectTimeout, idleTimeout, maxFrameBytes, dataFrameBytes, host, port, blockingDispatcher, nice, limits,
                java.util.Optional.empty());
    }

    /**
     * What a transfer server holds for connections (package-info, "Limits").
     *
     * @param openTimeout           a connection's OPEN frame must have arrived and been accepted
     *                              (its token checked) this long after the connection was made
     * @param maxConnections        connections the server holds at once, in any state; more are
     *                              answered ABORT "busy" and closed at once
     * @param maxConnectionsPerPeer the same for the connections from one IP address
     * @param maxReceiving          transfers past their opening at once, running on a thread of the
     *                              blocking dispatcher or waiting for one (the bounded queue); more
     *                              are answered ABORT "busy"
     * @param receiveBuffer         chunks of the connection (each at most
     *                              {@code pekko.io.tcp.direct-buffer-size}) buffered for a Receiver
     *                              that has not read them yet
     */
    public record Limits(Duration openTimeout, int maxConnections, int maxConnectionsPerPeer, int maxReceiving,
                         int receiveBuffer) {
        public Limits {
            requirePositive(openTimeout, "open-timeout");
            if (maxConnections < 1) {
                throw new IllegalArgumentException(PATH + ".max-connections must be >= 1, got " + maxConnections);
            }
            if (maxConnectionsPerPeer < 1 || maxConnectionsPerPeer > maxConnections) {
                throw new IllegalArgumentException(PATH + ".max-connections-per-peer must be in 1..max-connections ("
                        + maxConnections + "), got " + maxConnectionsPerPeer);
            }
            if (maxReceiving < 1 || maxReceiving > maxConnections) {
                throw new IllegalArgumentException(PATH + ".max-receiving must be in 1..max-connections ("
                        + maxConnections + "), got " + maxReceiving);
            }
            if (receiveBuffer < 1 || receiveBuffer > 64) {
                throw new IllegalArgumentException(PATH + ".receive-buffer must be in 1..64 chunks, got "
                        + receiveBuffer);
            }
        }
    }

    /** Reads {@code vmfork.transfer} of the actor system's configuration. */
    public static TransferSettings create(org.apache.pekko.actor.typed.ActorSystem<?> system) {
        return fromConfig(system.settings().config());
    }

    /**
     * Reads {@code vmfork.transfer} of {@code config} (a whole configuration, e.g. the actor
     * system's), and {@code vmfork.security}: with {@code vmfork.transfer.tls = on} and its
     * three credential files set, transfers run over TLS with them, the files read again every
     * {@code pekko.remote.artery.ssl.rotating-keys-engine.ssl-context-cache-ttl} as Artery's.
     */
    public static TransferSettings fromConfig(Config config) {
        Config c = config.getConfig(PATH);
        long maxFrame = c.getBytes("max-frame");
        long dataFrame = c.getBytes("data-frame");
        return new TransferSettings(
                c.getDuration("connect-timeout"),
                c.getDuration("idle-timeout"),
                (int) Math.min(maxFrame, Integer.MAX_VALUE),
                (int) Math.min(dataFrame, Integer.MAX_VALUE),
                c.getString("host"),
                c.getInt("port"),
                PATH + ".blocking-dispatcher",
                c.getInt("nice"),
                new Limits(c.getDuration("open-timeout"), c.getInt("max-connections"),
                        c.getInt("max-connections-per-peer"), c.getInt("max-receiving"), c.getInt("receive-buffer")),
                tls(config));
    }

    private static java.util.Optional<TransferTls> tls(Config config) {
        if (!config.getBoolean(PATH + ".tls") || !config.hasPath("vmfork.security")) {
            return java.util.Optional.empty();
        }
        Config s = config.getConfig("vmfork.security");
        String key = s.getString("key-file");
        String cert = s.getString("cert-file");
        String ca = s.getString("ca-cert-file");
        if (key.isEmpty() || cert.isEmpty() || ca.isEmpty()) {
            return java.util.Optional.empty();
        }
        String ttlPath = "pekko.remote.artery.ssl.rotating-keys-engine.ssl-context-cache-ttl";
        Duration ttl = config.hasPath(ttlPath) ? config.getDuration(ttlPath) : Duration.ofMinutes(5);
        return java.util.Optional.of(new TransferTls(new io.vmfork.cluster.security.ClusterCredentials.MemberFiles(
                java.nio.file.Path.of(key).toAbsolutePath(), java.nio.file.Path.of(cert).toAbsolutePath(),
                java.nio.file.Path.of(ca).toAbsolutePath()), ttl));
    }

    /** A copy over TLS with {@code t}, or plain TCP (empty). */
    public TransferSettings withTls(java.util.Optional<TransferTls> t) {
        return new TransferSettings(connectTimeout, idleTimeout, maxFrameBytes, dataFrameBytes, host, port,
                blockingDispatcher, nice, limits, t);
    }

    /** A copy with another idle timeout. */
    public TransferSettings withIdleTimeout(Duration d) {
        return new TransferSettings(connectTimeout, d, maxFrameBytes, dataFrameBytes, host, port, blockingDispatcher, nice,
                limits, tls);
    }

    /** A copy with other frame limits. */
    public TransferSettings withFrames(int maxFrame, int dataFrame) {
        return new TransferSettings(connectTimeout, idleTimeout, maxFrame, dataFrame, host, port, blockingDispatcher, nice,
                limits, tls);
    }

    /** A copy with other server limits. */
    public TransferSettings withLimits(Limits l) {
        return new TransferSettings(connectTimeout, idleTimeout, maxFrameBytes, dataFrameBytes, host, port,
                blockingDispatcher, nice, l, tls);
    }

    /*
     * Who notices what, in order, so that the side that notices says why:
     *   idle-timeout      the receiver's read: a silent sender (the receiver ABORTs, "idle timeout")
     *   idle-timeout + 1s the sender's connection: a receiver that stopped reading
     *   idle-timeout + 2s the receiver's connection: a backstop (its Receiver not reading)
     *   idle-timeout + 3s a sender's write blocked under backpressure
     */

    /** The sender's connection idle timeout. */
    Duration senderIdleTimeout() {
        return idleTimeout.plusSeconds(1);
    }

    /** The receiver's connection idle timeout (its Receiver's reads time out first). */
    Duration receiverIdleTimeout() {
        return idleTimeout.plusSeconds(2);
    }

    /** How long a sender's write may block under backpressure. */
    Duration writeTimeout() {
        return idleTimeout.plusSeconds(3);
    }

    private static void requirePositive(Duration d, String key) {
        if (d == null || d.isNegative() || d.isZero()) {
            throw new IllegalArgumentException(PATH + "." + key + " must be > 0, got " + d);
        }
    }
}
