package io.vmfork.cluster.transfer;

import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;

/**
 * The frames of the transfer protocol (package-info has the sequence and the states).
 * A frame is {@code u32 n} (big-endian: the bytes that follow, kind included), {@code u8
 * kind}, then {@code n - 1} payload bytes. A payload is at most the configured max-frame;
 * a longer length is refused before anything is allocated.
 */
final class Frames {
    /** "VMFT": the first four bytes of every OPEN payload. */
    static final int MAGIC = 0x564D4654;
    /** This protocol's version. A receiver accepts it and {@link #PREVIOUS_VERSION}. */
    static final short VERSION = 1;
    /** The version before this one (none has shipped yet, so the same). */
    static final short PREVIOUS_VERSION = 1;

    static final byte OPEN = 1;
    static final byte DATA = 2;
    static final byte END = 3;
    static final byte RESULT = 4;
    static final byte ABORT = 5;

    static final int HEADER = 5;
    static final int OPEN_PREFIX = 6;
    /** Room for an OPEN prefix and a useful ABORT reason. */
    static final int MIN_MAX_FRAME = 1024;
    /** So that {@code n} of a frame fits an int with room. */
    static final int MAX_MAX_FRAME = 1 << 30;
    /** Longest ABORT reason sent (bytes of UTF-8); longer ones are cut, and a receiver reads no longer one. */
    static final int MAX_REASON = 512;
    /**
     * Largest OPEN payload (the magic, the version and the opening): an opening carries ids
     * and a token, so a receiver never buffers more than this before it has admitted the
     * transfer, whatever max-frame says.
     */
    static final int MAX_OPEN = 1024;

    private Frames() {
    }

    static String kindName(int kind) {
        return switch (kind) {
            case OPEN -> "OPEN";
            case DATA -> "DATA";
            case END -> "END";
            case RESULT -> "RESULT";
            case ABORT -> "ABORT";
            default -> "unknown kind " + kind;
        };
    }

    static void putHeader(byte[] b, int off, int payload, byte kind) {
        int n = payload + 1;
        b[off] = (byte) (n >>> 24);
        b[off + 1] = (byte) (n >>> 16);
        b[off + 2] = (byte) (n >>> 8);
        b[off + 3] = (byte) n;
        b[off + 4] = kind;
    }

    /** One whole frame as bytes. */
    static byte[] frame(byte kind, byte[] payload) {
        byte[] f = new byte[HEADER + payload.length];
        putHeader(f, 0, payload.length, kind);
        System.arraycopy(payload, 0, f, HEADER, payload.length);
        return f;
    }

    static byte[] open(byte[] opening) {
        ByteBuffer b = ByteBuffer.allocate(OPEN_PREFIX + opening.length);
        b.putInt(MAGIC).putShort(VERSION).put(opening);
        return frame(OPEN, b.array());
    }

    static byte[] end(long total) {
        return frame(END, ByteBuffer.allocate(8).putLong(total).array());
    }

    static byte[] abort(String reason) {
        byte[] r = (reason == null ? "" : reason).getBytes(StandardCharsets.UTF_8);
        if (r.length > MAX_REASON) {
            byte[] cut = new byte[MAX_REASON];
            System.arraycopy(r, 0, cut, 0, MAX_REASON);
            r = cut;
        }
        return frame(ABORT, r);
    }

    static String reason(byte[] abortPayload) {
        return new String(abortPayload, StandardCharsets.UTF_8);
    }

    /** The payload length of a frame whose {@code n} is {@code n}, checked against the cap. */
    static int payloadLength(long n, int maxFrameBytes) throws TransferException {
        if (n < 1) {
            throw new TransferException("malformed frame: length " + n + " (a frame has at least its kind byte)");
        }
        if (n - 1 > maxFrameBytes) {
            throw new TransferException("frame of " + (n - 1) + " payload bytes exceeds the maximum of "
                    + maxFrameBytes + " (vmfork.transfer.max-frame)");
        }
        return (int) (n - 1);
    }

    /** Reads exactly {@code len} bytes or throws EOFException. */
    static void readFully(InputStream in, byte[] b, int off, int len) throws IOException {
        while (len > 0) {
            int r = in.read(b, off, len);
            if (r < 0) {
                throw new EOFException();
            }
            off += r;
            len -= r;
        }
    }

    static void write(OutputStream out, byte[] frame) throws IOException {
        out.write(frame);
    }
}
