package io.vmfork.cluster.transfer;

import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import org.apache.pekko.stream.Attributes;
import org.apache.pekko.stream.BidiShape;
import org.apache.pekko.stream.Inlet;
import org.apache.pekko.stream.Outlet;
import org.apache.pekko.stream.stage.AbstractInHandler;
import org.apache.pekko.stream.stage.AbstractOutHandler;
import org.apache.pekko.stream.stage.GraphStage;
import org.apache.pekko.stream.stage.GraphStageLogic;
import org.apache.pekko.stream.stage.TimerGraphStageLogic;
import org.apache.pekko.util.ByteString;

/**
 * The receiving server's first stage on a connection: reads the OPEN frame and has it
 * accepted (the token checked) inside the stream, under a deadline, before the connection
 * gets a thread or a buffer; only then does it pass the bytes on to the Receiver's stream
 * and the Receiver's answers back. One instance per connection.
 *
 * <pre>
 * OPENING --OPEN complete, admitted--> PASSING (bytes through both ways)
 *    |
 *    +--open-timeout passed, not an OPEN frame, an OPEN over {@link Frames#MAX_OPEN},
 *       bad magic or version, or the admission refused--> REFUSING: ABORT "refused: why"
 *       sent; a vmfork peer's bytes are read and dropped until it closes (at most
 *       open-timeout, so that a reset does not overtake the ABORT), anything else is
 *       closed at once
 * </pre>
 * While OPENING it holds at most one read of the connection plus the OPEN frame's bytes
 * (1 KiB); it asks for the next read only when it needs more bytes of the frame.
 */
final class OpenGate extends GraphStage<BidiShape<ByteString, ByteString, ByteString, ByteString>> {
    /** Admits a transfer from its opening, on a stream thread: quick and non-blocking. */
    @FunctionalInterface
    interface Admitter {
        /** The transfer's Receiver, or a TransferException whose message says why not. */
        TransferServer.Receiver admit(byte[] opening) throws TransferException;
    }

    /** A connection past its opening. */
    record Admitted(byte[] opening, TransferServer.Receiver receiver) {
    }

    private static final String OPEN_DEADLINE = "open-deadline";
    private static final String DRAIN_DEADLINE = "drain-deadline";

    private final Inlet<ByteString> fromNet = Inlet.create("OpenGate.fromNet");
    private final Outlet<ByteString> toReceiver = Outlet.create("OpenGate.toReceiver");
    private final Inlet<ByteString> fromReceiver = Inlet.create("OpenGate.fromReceiver");
    private final Outlet<ByteString> toNet = Outlet.create("OpenGate.toNet");
    private final BidiShape<ByteString, ByteString, ByteString, ByteString> shape =
            BidiShape.of(fromNet, toReceiver, fromReceiver, toNet);

    private final Duration openTimeout;
    private final Admitter admitter;
    private final CompletableFuture<Admitted> admitted;
    private final Runnable onStop;

    /**
     * @param admitted completed once the opening is admitted, or exceptionally with the
     *                 refusal (then the connection is closed by this stage)
     * @param onStop   run once when the stage stops, whatever the way
     */
    OpenGate(Duration openTimeout, Admitter admitter, CompletableFuture<Admitted> admitted, Runnable onStop) {
        this.openTimeout = openTimeout;
        this.admitter = admitter;
        this.admitted = admitted;
        this.onStop = onStop;
    }

    @Override
    public BidiShape<ByteString, ByteString, ByteString, ByteString> shape() {
        return shape;
    }

    @Override
    public GraphStageLogic createLogic(Attributes attrs) {
        return new TimerGraphStageLogic(shape) {
            private enum State { OPENING, PASSING, REFUSING }

            private State state = State.OPENING;
            /** OPENING: the bytes of the OPEN frame so far; PASSING: bytes after it not yet passed on. */
            private ByteString pending = ByteString.emptyByteString();

            {
                setHandler(fromNet, new AbstractInHandler() {
                    @Override
                    public void onPush() {
                        ByteString b = grab(fromNet);
                        switch (state) {
                            case PASSING -> push(toReceiver, b);
                            case REFUSING -> pull(fromNet); // drained
                            case OPENING -> {
                                pending = pending.concat(b);
                                opening();
                            }
                            default -> throw new IllegalStateException(state.toString());
                        }
                    }

                    @Override
                    public void onUpstreamFinish() {
                        switch (state) {
                            case PASSING -> {
                                if (pending.isEmpty()) {
                                    complete(toReceiver);
                                } else {
                                    emit(toReceiver, pending, (org.apache.pekko.japi.function.Effect) () -> complete(toReceiver));
                                    pending = ByteString.emptyByteString();
                                }
                            }
                            case REFUSING -> completeStage();
                            default -> {
                                admitted.completeExceptionally(new TransferException(
                                        "the connection ended before the OPEN frame was complete"));
                                completeStage();
                            }
                        }
                    }

                    @Override
                    public void onUpstreamFailure(Throwable ex) {
                        admitted.completeExceptionally(ex);
                        failStage(ex);
                    }
                });
                setHandler(toReceiver, new AbstractOutHandler() {
                    @Override
                    public void onPull() {
                        if (state != State.PASSING) {
                            return; // OPENING pulls for itself
                        }
                        if (!pending.isEmpty()) {
                            ByteString p = pending;
                            pending = ByteString.emptyByteString();
                            push(toReceiver, p);
                        } else if (!hasBeenPulled(fromNet) && !isClosed(fromNet)) {
                            pull(fromNet);
                        }
                    }

                    @Override
                    public void onDownstreamFinish(Throwable cause) {
                        // The Receiver's stream closed: nothing reads the connection any more.
                        if (state != State.REFUSING && !isClosed(fromNet)) {
                            cancel(fromNet);
                        }
                    }
                });
                setHandler(fromReceiver, new AbstractInHandler() {
                    @Override
                    public void onPush() {
                        push(toNet, grab(fromReceiver));
                    }

                    @Override
                    public void onUpstreamFinish() {
                        // The server closed the connection's output: the connection ends.
                        if (state != State.REFUSING) {
                            completeStage();
                        }
                    }
                });
                setHandler(toNet, new AbstractOutHandler() {
                    @Override
                    public void onPull() {
                        if (!hasBeenPulled(fromReceiver) && !isClosed(fromReceiver)) {
                            pull(fromReceiver);
                        }
                    }
                });
            }

            @Override
            public void preStart() {
                scheduleOnce(OPEN_DEADLINE, openTimeout);
                pull(fromNet);
            }

            @Override
            public void postStop() {
                if (!admitted.isDone()) {
                    admitted.completeExceptionally(new TransferException("the connection ended before its opening"));
                }
                onStop.run();
            }

            @Override
            public void onTimer(Object key) {
                if (OPEN_DEADLINE.equals(key) && state == State.OPENING) {
                    refuse("no opening within " + openTimeout.toMillis() + " ms (vmfork.transfer.open-timeout)", false);
                } else if (DRAIN_DEADLINE.equals(key)) {
                    completeStage();
                }
            }

            /** OPENING, after more bytes came: admits a whole OPEN frame, or asks for more. */
            private void opening() {
                if (pending.size() < Frames.HEADER) {
                    pull(fromNet);
                    return;
                }
                long n = ((pending.apply(0) & 0xffL) << 24) | ((pending.apply(1) & 0xff) << 16)
                        | ((pending.apply(2) & 0xff) << 8) | (pending.apply(3) & 0xff);
                byte kind = pending.apply(4);
                if (kind != Frames.OPEN) {
                    refuse("protocol error: expected OPEN, got " + Frames.kindName(kind), false);
                    return;
                }
                if (n < 1 || n - 1 > Frames.MAX_OPEN) {
                    refuse("protocol error: an OPEN frame of " + (n - 1) + " bytes (at most " + Frames.MAX_OPEN + ")",
                            false);
                    return;
                }
                int len = (int) (n - 1);
                if (len < Frames.OPEN_PREFIX) {
                    refuse("protocol error: OPEN frame of " + len + " bytes is too short", false);
                    return;
                }
                if (pending.size() < Frames.HEADER + len) {
                    // Keep only the frame's bytes so far, not the read's whole buffer.
                    pending = pending.compact();
                    pull(fromNet);
                    return;
                }
                ByteBuffer p = pending.slice(Frames.HEADER, Frames.HEADER + len).asByteBuffer();
                int magic = p.getInt();
                short version = p.getShort();
                if (magic != Frames.MAGIC) {
                    refuse(String.format("protocol error: not a vmfork transfer (magic 0x%08x)", magic), false);
                    return;
                }
                if (version != Frames.VERSION && version != Frames.PREVIOUS_VERSION) {
                    refuse("unsupported transfer protocol version " + version + " (this host speaks "
                            + Frames.VERSION + " and " + Frames.PREVIOUS_VERSION + ")", true);
                    return;
                }
                byte[] opening = new byte[len - Frames.OPEN_PREFIX];
                p.get(opening);
                TransferServer.Receiver receiver;
                try {
                    receiver = admitter.admit(opening);
                } catch (TransferException e) {
                    refuse(e.getMessage(), true);
                    return;
                } catch (RuntimeException e) {
                    refuse("internal error: " + e, true);
                    return;
                }
                cancelTimer(OPEN_DEADLINE);
                state = State.PASSING;
                pending = pending.drop(Frames.HEADER + len);
                admitted.complete(new Admitted(opening, receiver));
                if (isAvailable(toReceiver)) {
                    if (!pending.isEmpty()) {
                        ByteString rest = pending;
                        pending = ByteString.emptyByteString();
                        push(toReceiver, rest);
                    } else {
                        pull(fromNet);
                    }
                }
            }

            /** ABORT with the reason; a vmfork peer is drained (see the class comment), others closed. */
            private void refuse(String reason, boolean vmforkPeer) {
                state = State.REFUSING;
                cancelTimer(OPEN_DEADLINE);
                pending = ByteString.emptyByteString();
                admitted.completeExceptionally(new TransferException(reason));
                complete(toReceiver);
                cancel(fromReceiver);
                emit(toNet, ByteString.fromArrayUnsafe(Frames.abort("refused: " + reason)),
                        (org.apache.pekko.japi.function.Effect) () -> {
                    if (vmforkPeer && !isClosed(fromNet)) {
                        scheduleOnce(DRAIN_DEADLINE, openTimeout);
                        if (!hasBeenPulled(fromNet)) {
                            pull(fromNet);
                        }
                    } else {
                        completeStage();
                    }
                });
            }
        };
    }
}
