package io.vmfork.cluster.transfer;

import java.util.ArrayList;
import java.util.List;
import org.apache.pekko.util.ByteString;

/**
 * The sender's parser of what comes back: whole frames out of the connection's bytes,
 * each length checked against the cap before its payload is gathered. One per transfer.
 */
final class ResponseDecoder {
    /** A frame: its kind and payload. */
    record Frame(byte kind, byte[] payload) {
    }

    private final int maxFrameBytes;
    private ByteString pending = ByteString.emptyByteString();

    ResponseDecoder(int maxFrameBytes) {
        this.maxFrameBytes = maxFrameBytes;
    }

    List<Frame> feed(ByteString bytes) throws TransferException {
        pending = pending.concat(bytes);
        List<Frame> out = new ArrayList<>(1);
        while (pending.size() >= Frames.HEADER) {
            long n = ((pending.apply(0) & 0xffL) << 24) | ((pending.apply(1) & 0xff) << 16)
                    | ((pending.apply(2) & 0xff) << 8) | (pending.apply(3) & 0xff);
            int payload = Frames.payloadLength(n, maxFrameBytes);
            if (pending.size() < Frames.HEADER + payload) {
                break;
            }
            byte kind = pending.apply(4);
            out.add(new Frame(kind, pending.slice(Frames.HEADER, Frames.HEADER + payload).toArray()));
            pending = pending.drop(Frames.HEADER + payload);
        }
        return out;
    }
}
