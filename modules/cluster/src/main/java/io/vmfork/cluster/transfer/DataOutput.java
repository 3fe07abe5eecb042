package io.vmfork.cluster.transfer;

import java.io.IOException;
import java.io.OutputStream;

/**
 * The sender's side of one transfer: what the IoWriter writes, cut into DATA frames of
 * {@code dataFrameBytes}, each written to the connection as one piece; {@link #finish} adds
 * the END frame with the total. close() by the writer does nothing: the end of data is
 * written only after the writer returned.
 */
final class DataOutput extends OutputStream {
    private final OutputStream raw;
    private final byte[] buf;
    private int pos = Frames.HEADER;
    private long total;
    private boolean finished;

    DataOutput(OutputStream raw, int dataFrameBytes) {
        this.raw = raw;
        this.buf = new byte[Frames.HEADER + dataFrameBytes];
    }

    long total() {
        return total;
    }

    @Override
    public void write(int b) throws IOException {
        ensureOpen();
        if (pos == buf.length) {
            flushFrame();
        }
        buf[pos++] = (byte) b;
        total++;
    }

    @Override
    public void write(byte[] b, int off, int len) throws IOException {
        java.util.Objects.checkFromIndexSize(off, len, b.length);
        ensureOpen();
        while (len > 0) {
            if (pos == buf.length) {
                flushFrame();
            }
            int n = Math.min(len, buf.length - pos);
            System.arraycopy(b, off, buf, pos, n);
            pos += n;
            off += n;
            len -= n;
            total += n;
        }
    }

    /** Sends what is buffered as a DATA frame. */
    @Override
    public void flush() throws IOException {
        ensureOpen();
        flushFrame();
    }

    void finish() throws IOException {
        ensureOpen();
        flushFrame();
        raw.write(Frames.end(total));
        finished = true;
    }

    private void flushFrame() throws IOException {
        if (pos > Frames.HEADER) {
            Frames.putHeader(buf, 0, pos - Frames.HEADER, Frames.DATA);
            raw.write(buf, 0, pos);
            pos = Frames.HEADER;
        }
    }

    private void ensureOpen() throws IOException {
        if (finished) {
            throw new IOException("the transfer's data has ended");
        }
    }

    @Override
    public void close() {
    }
}
