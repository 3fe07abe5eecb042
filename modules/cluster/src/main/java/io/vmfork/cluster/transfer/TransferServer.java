package io.vmfork.cluster.transfer;

import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.pekko.NotUsed;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.DispatcherSelector;
import org.apache.pekko.io.TcpSO;
import org.apache.pekko.japi.Pair;
import org.apache.pekko.stream.Attributes;
import org.apache.pekko.stream.KillSwitches;
import org.apache.pekko.stream.Materializer;
import org.apache.pekko.stream.SharedKillSwitch;
import org.apache.pekko.stream.javadsl.BidiFlow;
import org.apache.pekko.stream.javadsl.Flow;
import org.apache.pekko.stream.javadsl.Keep;
import org.apache.pekko.stream.javadsl.Sink;
import org.apache.pekko.stream.javadsl.Source;
import org.apache.pekko.stream.javadsl.StreamConverters;
import org.apache.pekko.stream.javadsl.Tcp;
import org.apache.pekko.util.ByteString;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The receiving end of capsule transfers: a Pekko Streams TCP server, one connection per
 * transfer. A connection's OPEN frame is read and admitted by the {@link Acceptor} inside
 * the stream ({@link OpenGate}), under {@code open-timeout}, before it takes a thread or a
 * buffer; an admitted one is handed to its {@link Receiver} on a thread of the configured
 * blocking dispatcher. Connections are capped in all and per peer address, admitted
 * transfers in all (package-info, "Limits"). package-info describes the protocol.
 */
public final class TransferServer implements AutoCloseable {
    private static final Logger LOG = LoggerFactory.getLogger(TransferServer.class);
    private static final int BACKLOG = 100;
    /** Pekko's TCP read buffer at which transfers reach their speed (docs/transfer.md). */
    private static final long RECOMMENDED_READ_BUFFER = 1 << 20;

    /** The target's side of one transfer. */
    @FunctionalInterface
    public interface Receiver {
        /**
         * Called on a blocking thread (the {@code vmfork.transfer.blocking-dispatcher}) for
         * each incoming transfer, with the sender's opening bytes. Reads the payload from
         * {@code in}: {@code in} returns -1 only after the sender's end-of-data frame arrived
         * with the right byte count; a connection that ends before it, a silent peer past the
         * idle timeout, a frame error or the sender's abort make read() throw a
         * {@link TransferException} saying what happened and after how many bytes. Returns
         * the result bytes sent back to the sender (at most max-frame). If it throws, or
         * returns before {@code in} ended, the sender's transfer fails with the exception's
         * message (sent back as an ABORT frame).
         */
        byte[] receive(byte[] opening, InputStream in) throws Exception;
    }

    /** Decides, from its opening and the connection's peer, whether a transfer may go on. */
    @FunctionalInterface
    public interface Acceptor {
        /**
         * Called on a stream thread once a connection's OPEN frame arrived: must be quick and
         * must not block (a map lookup, a comparison). Returns the transfer's Receiver, or
         * throws a {@link TransferException} whose message the sender gets in an ABORT
         * ("refused: " and the message). The peer is the connection's remote address.
         */
        Receiver accept(byte[] opening, InetSocketAddress peer) throws TransferException;

        /**
         * Whether a transfer is expected from {@code peer} now (an offer from a member at that
         * address waits for its capsule). Called on a stream thread for each new connection,
         * before its opening: quick, non-blocking. A connection from an expected peer is held
         * even when {@code max-connections} are open (its per-peer cap still applies), so that
         * a flood from elsewhere cannot keep a member's transfer out.
         */
        default boolean expects(InetAddress peer) {
            return false;
        }
    }

    private final TransferSettings settings;
    private final Acceptor acceptor;
    private final Materializer materializer;
    private final Executor blocking;
    private final SharedKillSwitch killSwitch = KillSwitches.shared("vmfork-transfer-server");
    private final AtomicBoolean closed = new AtomicBoolean();
    private final AtomicInteger active = new AtomicInteger();
    /** Transfers past their opening, running or waiting for a thread. */
    private final AtomicInteger receiving = new AtomicInteger();
    /** Connections held, in all and by peer address; guarded by this. */
    private int connections;
    private final Map<InetAddress, Integer> byPeer = new HashMap<>();
    private final RefusalLog refusals = new RefusalLog();
    private volatile Tcp.ServerBinding binding;

    private TransferServer(ActorSystem<?> system, TransferSettings settings, Acceptor acceptor) {
        this.settings = settings;
        this.acceptor = acceptor;
        this.materializer = Materializer.matFromSystem(system);
        this.blocking = Background.executor(
                system.dispatchers().lookup(DispatcherSelector.fromConfig(settings.blockingDispatcher())), settings.nice());
    }

    /**
     * Binds host:port (0 = a free port) on the system's materializer, every transfer going
     * to {@code receiver} (any opening from any peer is accepted: tools and tests). Fails
     * with a {@link TransferException} when the address cannot be bound (e.g. the port is in use).
     */
    public static CompletionStage<TransferServer> bind(ActorSystem<?> system, String host, int port,
                                                       TransferSettings settings, Receiver receiver) {
        Objects.requireNonNull(receiver, "receiver");
        return bindAccepting(system, host, port, settings, (opening, peer) -> receiver);
    }

    /**
     * Binds host:port (0 = a free port) on the system's materializer; {@code acceptor}
     * admits each transfer from its opening. Fails with a {@link TransferException} when the
     * address cannot be bound (e.g. the port is in use).
     */
    public static CompletionStage<TransferServer> bindAccepting(ActorSystem<?> system, String host, int port,
                                                                TransferSettings settings, Acceptor acceptor) {
        Objects.requireNonNull(system, "system");
        Objects.requireNonNull(host, "host");
        Objects.requireNonNull(settings, "settings");
        Objects.requireNonNull(acceptor, "acceptor");
        TransferServer server = new TransferServer(system, settings, acceptor);
        long readBuffer = system.settings().config().getBytes("pekko.io.tcp.direct-buffer-size");
        if (readBuffer < RECOMMENDED_READ_BUFFER) {
            LOG.info("pekko.io.tcp.direct-buffer-size is {} bytes: capsule transfers run at about half speed below "
                    + "1 MiB (docs/transfer.md)", readBuffer);
        }
        return Tcp.get(system)
                // The Receiver's read timeout (the idle timeout) notices a silent sender first and
                // answers with an ABORT that says so; this one is the backstop for a Receiver
                // that stopped reading.
                .bind(host, port, BACKLOG, List.of(TcpSO.tcpNoDelay(true)), false, Optional.of(settings.receiverIdleTimeout()))
                .to(Sink.foreach(server::accept))
                .run(server.materializer)
                .handle((b, e) -> {
                    if (e != null) {
                        Throwable c = e instanceof java.util.concurrent.CompletionException && e.getCause() != null
                                ? e.getCause() : e;
                        throw new java.util.concurrent.CompletionException(new TransferException(
                                "cannot bind the transfer server to " + host + ":" + port + ": " + c.getMessage(), c));
                    }
                    server.binding = b;
                    LOG.info("transfer server at {}: {}", b.localAddress(), settings.tls()
                            .map(t -> "TLS with mutual authentication as " + t.subject() + ", CA "
                                    + t.files().caCertFile())
                            .orElse("plain TCP (no credentials)"));
                    return server;
                });
    }

    /** Binds {@code settings.host():settings.port()}. */
    public static CompletionStage<TransferServer> bind(ActorSystem<?> system, TransferSettings settings,
                                                       Receiver receiver) {
        return bind(system, settings.host(), settings.port(), settings, receiver);
    }

    public InetSocketAddress address() {
        return binding.localAddress();
    }

    /** Transfers whose Receiver is running now. */
    public int activeTransfers() {
        return active.get();
    }

    /** Connections the server holds now, in any state. */
    public synchronized int openConnections() {
        return connections;
    }

    /** Unbinds and aborts transfers in progress (their Receivers see a TransferException). */
    @Override
    public void close() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        try {
            binding.unbind().toCompletableFuture().get(settings.connectTimeout().toMillis(), TimeUnit.MILLISECONDS);
        } catch (Exception e) {
            LOG.warn("unbinding the transfer server at {}: {}", binding.localAddress(), e.toString());
        }
        killSwitch.abort(new TransferException("the transfer server at " + binding.localAddress() + " closed"));
    }

    /** Never throws: a failure here would stop the server accepting. */
    private void accept(Tcp.IncomingConnection conn) {
        try {
            handle(conn);
        } catch (RuntimeException e) {
            LOG.error("transfer from {}: cannot handle the connection", conn.remoteAddress(), e);
        }
    }

    private void handle(Tcp.IncomingConnection conn) {
        InetSocketAddress peer = conn.remoteAddress();
        InetAddress ip = peer.getAddress();
        String busy = closed.get() ? "the transfer server is closing" : reserveConnection(ip, acceptor.expects(ip));
        Optional<TransferTls> tls = settings.tls();
        if (busy != null) {
            refusals.refused(peer, busy);
            // Answered and closed at once: no thread, no buffer beyond the ABORT. Under TLS
            // closed without a word: no handshake (its CPU) is spent on a connection refused.
            conn.handleWith(tls.isPresent() ? Flow.fromSinkAndSource(Sink.cancelled(), Source.<ByteString>empty())
                    : Flow.fromSinkAndSource(Sink.ignore(),
                            Source.single(ByteString.fromArrayUnsafe(Frames.abort(busy)))), materializer);
            return;
        }
        CompletableFuture<OpenGate.Admitted> admitted = new CompletableFuture<>();
        TransferTls.Handshake handshake = new TransferTls.Handshake();
        // Ends this connection alone: a TLS session whose handshake never finished does not
        // close when the gate completes its output (the ABORT cannot be sent through it).
        SharedKillSwitch connection = KillSwitches.shared("vmfork-transfer-from-" + peer);
        OpenGate gate = new OpenGate(settings.limits().openTimeout(), opening -> admit(opening, peer), admitted,
                () -> releaseConnection(ip));
        Flow<ByteString, ByteString, Pair<InputStream, OutputStream>> io = Flow.fromSinkAndSourceMat(
                StreamConverters.asInputStream(settings.idleTimeout())
                        .addAttributes(Attributes.inputBuffer(1, settings.limits().receiveBuffer())),
                StreamConverters.asOutputStream(settings.writeTimeout()),
                Keep.both());
        Pair<InputStream, OutputStream> streams;
        try {
            // Under TLS the handshake runs below the gate, within its open-timeout: a peer
            // without a certificate of the cluster CA fails the stream before its OPEN is read.
            BidiFlow<ByteString, ByteString, ByteString, ByteString, NotUsed> layer = tls.isPresent()
                    ? tls.get().server(peer, handshake) : BidiFlow.identity();
            streams = conn.handleWith(Flow.of(ByteString.class).via(killSwitch.flow()).via(connection.flow())
                    .viaMat(layer.atop(BidiFlow.fromGraph(gate)).join(io, Keep.right()), Keep.right()),
                    materializer);
        } catch (RuntimeException e) {
            releaseConnection(ip);
            throw e;
        }
        admitted.whenComplete((a, e) -> {
            if (e != null) {
                refusals.refused(peer, handshake.refusal != null ? handshake.refusal : e.getMessage());
                if (tls.isPresent() && !handshake.verified) {
                    connection.abort(e);
                }
                return;
            }
            try {
                blocking.execute(() -> serve(peer, a, streams.first(), streams.second()));
            } catch (RejectedExecutionException r) {
                receiving.decrementAndGet();
                // The dispatcher is shutting down: this is a stream thread, so no blocking ABORT.
                LOG.warn("transfer from {} refused: no blocking thread ({})", peer, r.toString());
                closeQuietly(streams.first(), streams.second(), peer);
            }
        });
    }

    /** Takes a connection slot for {@code ip}, or says why there is none. */
    private synchronized String reserveConnection(InetAddress ip, boolean expected) {
        TransferSettings.Limits l = settings.limits();
        if (connections >= l.maxConnections() && !expected) {
            return "busy: " + connections + " connections open (vmfork.transfer.max-connections)";
        }
        int mine = byPeer.getOrDefault(ip, 0);
        if (mine >= l.maxConnectionsPerPeer()) {
            return "busy: " + mine + " connections open from " + ip.getHostAddress()
                    + " (vmfork.transfer.max-connections-per-peer)";
        }
        connections++;
        byPeer.put(ip, mine + 1);
        return null;
    }

    private synchronized void releaseConnection(InetAddress ip) {
        connections--;
        byPeer.computeIfPresent(ip, (k, n) -> n > 1 ? n - 1 : null);
    }

    /** On the connection's stream thread: a slot among the transfers received, then the Acceptor's word. */
    private Receiver admit(byte[] opening, InetSocketAddress peer) throws TransferException {
        if (closed.get()) {
            throw new TransferException("the transfer server is closing");
        }
        int max = settings.limits().maxReceiving();
        if (receiving.incrementAndGet() > max) {
            receiving.decrementAndGet();
            throw new TransferException("busy: " + max + " transfers being received (vmfork.transfer.max-receiving)");
        }
        try {
            Receiver r = acceptor.accept(opening, peer);
            if (r == null) {
                throw new TransferException("no receiver for the transfer");
            }
            return r;
        } catch (TransferException | RuntimeException e) {
            receiving.decrementAndGet();
            throw e;
        }
    }

    /** One admitted transfer, on a blocking thread. */
    private void serve(InetSocketAddress peer, OpenGate.Admitted admitted, InputStream raw, OutputStream out) {
        active.incrementAndGet();
        try {
            ReceiverInput in = new ReceiverInput(raw, settings.maxFrameBytes(), settings.idleTimeout());
            byte[] opening = admitted.opening();
            Receiver receiver = admitted.receiver();
            byte[] result;
            try {
                result = receiver.receive(opening, in);
                if (result == null) {
                    throw new TransferException("the receiver returned no result");
                }
                if (!in.ended()) {
                    throw new TransferException("the receiver returned after " + in.received()
                            + " data bytes, before the end of the data");
                }
                if (result.length > settings.maxFrameBytes()) {
                    throw new TransferException("the receiver's result of " + result.length
                            + " bytes exceeds vmfork.transfer.max-frame (" + settings.maxFrameBytes() + ")");
                }
            } catch (Exception e) {
                String reason = e.getMessage() == null ? e.getClass().getName() : e.getMessage();
                LOG.debug("transfer from {} failed after {} data bytes: {}", peer, in.received(), reason);
                reply(out, Frames.abort(reason), peer);
                drain(raw);
                return;
            }
            reply(out, Frames.frame(Frames.RESULT, result), peer);
        } catch (RuntimeException | Error e) {
            LOG.error("transfer from {}: unexpected failure", peer, e);
            reply(out, Frames.abort("internal error: " + e), peer);
        } finally {
            closeQuietly(raw, out, peer);
            active.decrementAndGet();
            receiving.decrementAndGet();
        }
    }

    /**
     * After an ABORT to a sender that may still be writing: reads and drops what it sends
     * until it closes (it does on reading the ABORT), the connection fails, or an idle
     * timeout passes. Closing at once would make this host's kernel answer the sender's
     * next bytes with a reset, which can reach the sender before the ABORT frame does.
     */
    private void drain(InputStream raw) {
        long deadline = System.nanoTime() + settings.idleTimeout().toNanos();
        byte[] sink = new byte[64 << 10];
        try {
            while (System.nanoTime() < deadline && raw.read(sink) >= 0) {
                // dropped
            }
        } catch (IOException e) {
            // the connection ended: nothing left to drain
        }
    }

    private static void reply(OutputStream out, byte[] frame, InetSocketAddress peer) {
        try {
            out.write(frame);
        } catch (IOException e) {
            LOG.debug("transfer from {}: cannot send the {} frame: {}", peer, Frames.kindName(frame[4]), e.toString());
        }
    }

    /**
     * Refusals before a transfer was admitted, logged at WARN at most once a second with the
     * number left out since (a flood of connections must not flood the log as well).
     */
    private static final class RefusalLog {
        private long lastNanos = System.nanoTime() - 2_000_000_000L;
        private long suppressed;

        void refused(InetSocketAddress peer, String why) {
            long skipped;
            synchronized (this) {
                long now = System.nanoTime();
                if (now - lastNanos < 1_000_000_000L) {
                    suppressed++;
                    LOG.debug("transfer connection from {} refused: {}", peer, why);
                    return;
                }
                lastNanos = now;
                skipped = suppressed;
                suppressed = 0;
            }
            LOG.warn("transfer connection from {} refused: {}{}", peer, why,
                    skipped == 0 ? "" : " (and " + skipped + " other refusals in the last second)");
        }
    }

    /** The output first: the last frame leaves, then the connection closes. */
    private static void closeQuietly(InputStream raw, OutputStream out, InetSocketAddress peer) {
        try {
            out.close();
        } catch (IOException | RuntimeException e) {
            LOG.debug("transfer from {}: closing the output: {}", peer, e.toString());
        }
        try {
            raw.close();
        } catch (IOException | RuntimeException e) {
            LOG.debug("transfer from {}: closing the input: {}", peer, e.toString());
        }
    }

}
