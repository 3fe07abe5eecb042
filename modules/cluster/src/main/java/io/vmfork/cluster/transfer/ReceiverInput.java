package io.vmfork.cluster.transfer;

import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.nio.ByteBuffer;

/**
 * The receiver's side of one transfer after its OPEN frame (read and admitted by
 * {@link OpenGate}): gives the payload of the DATA frames as a stream that ends (-1) only after the END frame arrived and its byte count
 * matched. Anything else (the connection ending before END, a failure underneath, a frame of
 * the wrong kind or over the cap, the sender's ABORT) makes read throw a
 * {@link TransferException} saying what and after how many data bytes; the failure sticks.
 *
 * <p>States: DATA (inside or between DATA frames) → ENDED, or FAILED from either. It never
 * allocates by a frame's length: DATA is read into the caller's buffer, an END is 8 bytes
 * and an ABORT's reason is read only up to {@link Frames#MAX_REASON}.
 */
final class ReceiverInput extends InputStream {
    private enum State { DATA, ENDED, FAILED }

    private final InputStream raw;
    private final int maxFrameBytes;
    private final java.time.Duration idleTimeout;
    private final byte[] header = new byte[Frames.HEADER];
    private State state = State.DATA;
    private TransferException failure;
    private int leftInFrame;
    private long received;

    /**
     * {@code raw} is the connection's stream from Pekko's asInputStream with a read timeout of
     * {@code idleTimeout}: a read that waits that long for the sender is an idle timeout.
     */
    ReceiverInput(InputStream raw, int maxFrameBytes, java.time.Duration idleTimeout) {
        this.raw = raw;
        this.maxFrameBytes = maxFrameBytes;
        this.idleTimeout = idleTimeout;
    }

    long received() {
        return received;
    }

    boolean ended() {
        return state == State.ENDED;
    }

    @Override
    public int read() throws IOException {
        byte[] one = new byte[1];
        int r = read(one, 0, 1);
        return r < 0 ? -1 : one[0] & 0xff;
    }

    @Override
    public int read(byte[] b, int off, int len) throws IOException {
        java.util.Objects.checkFromIndexSize(off, len, b.length);
        switch (state) {
            case ENDED -> {
                return -1;
            }
            case FAILED -> throw failure;
            default -> {
            }
        }
        if (len == 0) {
            return 0;
        }
        try {
            while (leftInFrame == 0) {
                int kind = readHeader();
                if (kind == Frames.DATA) {
                    if (leftInFrame == 0) {
                        throw new TransferException("protocol error: empty DATA frame");
                    }
                } else if (kind == Frames.END) {
                    readEnd();
                    return -1;
                } else if (kind == Frames.ABORT) {
                    throw new TransferException("the sender aborted after " + received + " data bytes: " + readReason());
                } else {
                    throw new TransferException("protocol error: unexpected " + Frames.kindName(kind) + " frame after "
                            + received + " data bytes");
                }
            }
            int r = raw.read(b, off, Math.min(len, leftInFrame));
            if (r < 0) {
                throw new EOFException();
            }
            leftInFrame -= r;
            received += r;
            return r;
        } catch (IOException e) {
            throw fail(e, "after " + received + " data bytes, before the end-of-data frame");
        }
    }

    private void readEnd() throws IOException {
        if (leftInFrame != 8) {
            throw new TransferException("protocol error: END frame of " + leftInFrame + " bytes (expected 8)");
        }
        byte[] p = new byte[8];
        Frames.readFully(raw, p, 0, 8);
        leftInFrame = 0;
        long total = ByteBuffer.wrap(p).getLong();
        if (total != received) {
            throw new TransferException("truncated transfer: the end-of-data frame says " + total
                    + " data bytes, " + received + " arrived");
        }
        state = State.ENDED;
    }

    private String readReason() throws IOException {
        if (leftInFrame > Frames.MAX_REASON) {
            return "(a reason of " + leftInFrame + " bytes, over " + Frames.MAX_REASON + ", not read)";
        }
        byte[] p = new byte[leftInFrame];
        Frames.readFully(raw, p, 0, p.length);
        leftInFrame = 0;
        return Frames.reason(p);
    }

    /** Reads a frame header; leaves the payload length in leftInFrame, returns the kind. */
    private int readHeader() throws IOException {
        Frames.readFully(raw, header, 0, Frames.HEADER);
        long n = ((header[0] & 0xffL) << 24) | ((header[1] & 0xff) << 16) | ((header[2] & 0xff) << 8) | (header[3] & 0xff);
        leftInFrame = Frames.payloadLength(n, maxFrameBytes);
        return header[4];
    }

    private TransferException fail(IOException e, String where) {
        TransferException t;
        if (e instanceof TransferException te) {
            t = te;
        } else if (e instanceof EOFException) {
            t = new TransferException("the connection ended " + where);
        } else if (e.getCause() == null && String.valueOf(e.getMessage()).startsWith("Timeout on waiting")) {
            // Pekko's InputStreamAdapter: its read timeout passed without a byte.
            t = new TransferException("idle timeout: nothing from the sender for " + idleTimeout + " " + where, e);
        } else {
            t = new TransferException("the connection failed " + where + ": " + describe(e), e);
        }
        state = State.FAILED;
        failure = t;
        return t;
    }

    /** A failure underneath (Pekko wraps the stream's failure in an IOException). */
    static String describe(Throwable e) {
        Throwable c = e;
        while (c.getCause() != null && c.getCause() != c) {
            c = c.getCause();
        }
        if (c instanceof org.apache.pekko.stream.StreamIdleTimeoutException) {
            return "idle timeout (" + c.getMessage() + ")";
        }
        String m = c.getMessage();
        return m == null ? c.getClass().getSimpleName() : m;
    }

    @Override
    public void close() {
        // The server closes the connection; a Receiver closing its stream changes nothing.
    }
}
