package io.vmfork.cluster.transfer;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.util.List;
import java.util.NoSuchElementException;
import java.util.Objects;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.Executor;
import java.util.concurrent.RejectedExecutionException;
import org.apache.pekko.io.TcpSO;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.DispatcherSelector;
import org.apache.pekko.japi.Pair;
import org.apache.pekko.stream.KillSwitches;
import org.apache.pekko.stream.Materializer;
import org.apache.pekko.stream.StreamIdleTimeoutException;
import org.apache.pekko.stream.UniqueKillSwitch;
import org.apache.pekko.stream.javadsl.Flow;
import org.apache.pekko.stream.javadsl.Keep;
import org.apache.pekko.stream.javadsl.Sink;
import org.apache.pekko.stream.javadsl.Source;
import org.apache.pekko.stream.javadsl.StreamConverters;
import org.apache.pekko.stream.javadsl.Tcp;
import org.apache.pekko.util.ByteString;

/**
 * The sending end of a capsule transfer: one Pekko Streams TCP connection per transfer.
 * package-info describes the protocol.
 */
public final class TransferClient {
    /** Writes a transfer's payload. */
    @FunctionalInterface
    public interface IoWriter {
        void write(OutputStream out) throws IOException;
    }

    private TransferClient() {
    }

    /**
     * Connects to {@code to}, sends {@code opening}, then everything {@code writer} writes
     * (called on a thread of the blocking dispatcher; write() blocks under backpressure), then
     * the end-of-data frame, and completes with the Receiver's result bytes. Fails with
     * {@link TransferException} when the connection cannot be made, drops, goes idle past the
     * idle timeout, the receiver aborts (its message), or the peer closes without a result.
     * If writer throws, the receiver sees an abort (its read() throws) and the returned stage
     * fails with the writer's exception. When the transfer fails while the writer still runs,
     * its thread is interrupted and its writes throw.
     */
    public static CompletionStage<byte[]> send(ActorSystem<?> system, InetSocketAddress to, byte[] opening,
                                               IoWriter writer, TransferSettings settings) {
        return send(system, to, null, opening, writer, settings);
    }

    /**
     * As {@link #send(ActorSystem, InetSocketAddress, byte[], IoWriter, TransferSettings)}, from
     * the local address {@code from} (null: the one the kernel picks). A node sends from its
     * own cluster address, which is where the receiver expects its transfers to come from
     * (package-info, "Who may send").
     */
    public static CompletionStage<byte[]> send(ActorSystem<?> system, InetSocketAddress to, InetSocketAddress from,
                                               byte[] opening, IoWriter writer, TransferSettings settings) {
        Objects.requireNonNull(system, "system");
        Objects.requireNonNull(to, "to");
        Objects.requireNonNull(opening, "opening");
        Objects.requireNonNull(writer, "writer");
        Objects.requireNonNull(settings, "settings");
        if (opening.length + Frames.OPEN_PREFIX > Frames.MAX_OPEN) {
            return CompletableFuture.failedFuture(new TransferException("opening of " + opening.length
                    + " bytes exceeds the OPEN frame's maximum of " + (Frames.MAX_OPEN - Frames.OPEN_PREFIX)));
        }
        Executor blocking = Background.executor(
                system.dispatchers().lookup(DispatcherSelector.fromConfig(settings.blockingDispatcher())), settings.nice());
        ResponseDecoder decoder = new ResponseDecoder(settings.maxFrameBytes());
        TransferTls.Handshake handshake = new TransferTls.Handshake();
        Flow<ByteString, ByteString, CompletionStage<Tcp.OutgoingConnection>> tcp = Tcp.get(system).outgoingConnection(to,
                Optional.ofNullable(from), List.of(TcpSO.tcpNoDelay(true)), true,
                // A little past the receiver's own: a silent sender hears the receiver's ABORT
                // saying so; this notices a silent receiver.
                Optional.of(settings.connectTimeout()), Optional.of(settings.senderIdleTimeout()));
        Pair<Pair<Pair<OutputStream, UniqueKillSwitch>, CompletionStage<Tcp.OutgoingConnection>>,
                CompletionStage<ResponseDecoder.Frame>> m =
                StreamConverters.asOutputStream(settings.writeTimeout())
                        .viaMat(KillSwitches.single(), Keep.both())
                        .viaMat(settings.tls().isPresent() ? settings.tls().get().client(to, handshake).join(tcp, Keep.right())
                                : tcp, Keep.both())
                        .mapConcat(decoder::feed)
                        .toMat(Sink.head(), Keep.both())
                        .run(Materializer.matFromSystem(system));
        Sending s = new Sending(to, m.first().first().first(), m.first().first().second());
        m.second().whenComplete(s::onResponse);
        // The writer starts once connected: a connection that cannot be made never runs it.
        // Over TLS, once the session is established too: the OPEN frame then reaches the
        // receiver at once, as over plain TCP, however long the writer then takes (a failed
        // handshake fails the response side and never runs it).
        m.first().second().thenRun(() -> s.connected = true);
        CompletionStage<?> ready = settings.tls().isPresent()
                ? m.first().second().thenCombine(handshake.established, (c, v) -> c) : m.first().second();
        ready.thenRun(() -> {
            try {
                blocking.execute(() -> s.write(opening, writer, settings.dataFrameBytes()));
            } catch (RejectedExecutionException e) {
                s.fail(new TransferException("no blocking thread for the transfer to " + to + ": " + e.getMessage(), e));
            }
        });
        return s.result;
    }

    /** One transfer in progress. */
    private static final class Sending {
        final CompletableFuture<byte[]> result = new CompletableFuture<>();
        private final InetSocketAddress to;
        private final OutputStream raw;
        private final UniqueKillSwitch killSwitch;
        volatile boolean connected;
        private volatile long sent;
        /** Set when a write to the connection failed: the stream's end says why, not the writer. */
        private volatile TransferException transportFailure;
        private Thread writerThread; // guarded by this

        Sending(InetSocketAddress to, OutputStream raw, UniqueKillSwitch killSwitch) {
            this.to = to;
            this.raw = new Guarded(raw, this);
            this.killSwitch = killSwitch;
        }

        /** On a blocking thread. */
        void write(byte[] opening, IoWriter writer, int dataFrameBytes) {
            synchronized (this) {
                if (result.isDone()) {
                    return;
                }
                writerThread = Thread.currentThread();
            }
            DataOutput data = new DataOutput(raw, dataFrameBytes);
            try {
                raw.write(Frames.open(opening));
                writer.write(new CountingView(data, this));
                data.finish();
                sent = data.total();
            } catch (Throwable e) {
                sent = data.total();
                TransferException transport = transportFailure;
                if (transport != null) {
                    // The connection failed under the writer (whatever it made of that): the
                    // response side completes the result with the connection's own failure.
                    killSwitch.abort(transport);
                } else if (result.completeExceptionally(e)) {
                    // The writer's own failure: tell the receiver, then let the connection end.
                    try {
                        raw.write(Frames.abort("the sender failed: " + (e.getMessage() == null ? e.toString() : e.getMessage())));
                        raw.close();
                    } catch (IOException | RuntimeException ignored) {
                        killSwitch.abort(e);
                    }
                }
                if (e instanceof Error err && !(e instanceof AssertionError)) {
                    throw err;
                }
            } finally {
                synchronized (this) {
                    writerThread = null;
                    Thread.interrupted(); // a pool thread: leave no interrupt behind
                }
            }
        }

        /** On a stream thread: the first frame back, or the stream's end. */
        void onResponse(ResponseDecoder.Frame frame, Throwable err) {
            if (err == null && frame.kind() == Frames.RESULT) {
                if (result.complete(frame.payload())) {
                    killSwitch.shutdown();
                } else {
                    killSwitch.abort(new TransferException("transfer already failed"));
                }
                return;
            }
            TransferException t;
            if (err == null && frame.kind() == Frames.ABORT) {
                t = new TransferException(Frames.reason(frame.payload()));
            } else if (err == null) {
                t = new TransferException("protocol error: the receiver at " + to + " answered with a "
                        + Frames.kindName(frame.kind()) + " frame");
            } else {
                t = describe(unwrap(err));
            }
            fail(t);
        }

        void fail(TransferException t) {
            result.completeExceptionally(t);
            killSwitch.abort(t);
            synchronized (this) {
                if (writerThread != null) {
                    writerThread.interrupt();
                }
            }
        }

        private TransferException describe(Throwable e) {
            if (e instanceof TransferException te) {
                return te;
            }
            if (!connected) {
                return new TransferException("cannot connect to " + to + ": " + ReceiverInput.describe(e), e);
            }
            if (e instanceof StreamIdleTimeoutException) {
                return new TransferException("the transfer to " + to + " was idle too long after " + sent()
                        + " data bytes sent (" + e.getMessage() + ")", e);
            }
            if (e instanceof NoSuchElementException) {
                return new TransferException("the receiver at " + to + " closed the connection without a result after "
                        + sent() + " data bytes sent");
            }
            return new TransferException("the connection to " + to + " failed after " + sent() + " data bytes sent: "
                    + ReceiverInput.describe(e), e);
        }

        long sent() {
            return sent;
        }

        private static Throwable unwrap(Throwable e) {
            return e instanceof CompletionException && e.getCause() != null ? e.getCause() : e;
        }
    }

    /** The connection's output: a write that fails marks the transfer's transport as failed. */
    private static final class Guarded extends OutputStream {
        private final OutputStream raw;
        private final Sending sending;

        Guarded(OutputStream raw, Sending sending) {
            this.raw = raw;
            this.sending = sending;
        }

        @Override
        public void write(int b) throws IOException {
            write(new byte[] {(byte) b}, 0, 1);
        }

        @Override
        public void write(byte[] b, int off, int len) throws IOException {
            try {
                raw.write(b, off, len);
            } catch (IOException e) {
                TransferException t = new TransferException("the connection to " + sending.to + " failed after "
                        + sending.sent() + " data bytes sent: " + ReceiverInput.describe(e), e);
                sending.transportFailure = t;
                throw t;
            }
        }

        @Override
        public void close() throws IOException {
            raw.close();
        }
    }

    /** What the writer sees: the data stream, counting as it goes. */
    private static final class CountingView extends OutputStream {
        private final DataOutput data;
        private final Sending sending;

        CountingView(DataOutput data, Sending sending) {
            this.data = data;
            this.sending = sending;
        }

        @Override
        public void write(int b) throws IOException {
            data.write(b);
            sending.sent = data.total();
        }

        @Override
        public void write(byte[] b, int off, int len) throws IOException {
            data.write(b, off, len);
            sending.sent = data.total();
        }

        @Override
        public void flush() throws IOException {
            data.flush();
        }

        @Override
        public void close() {
        }
    }
}
