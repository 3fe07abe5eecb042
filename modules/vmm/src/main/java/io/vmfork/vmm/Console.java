package io.vmfork.vmm;

import java.nio.charset.StandardCharsets;

/** A VM's console: keeps the newest output in a bounded buffer, and forwards all of it. */
public final class Console {
    private final int capacity;
    /** Made at the first output: most fork children never write to the console. */
    private byte[] ring;
    private long written;

    Console(int capacity) {
        this.capacity = capacity;
    }

    synchronized void append(byte[] bytes) {
        if (ring == null) {
            ring = new byte[capacity];
        }
        for (byte b : bytes) {
            ring[(int) (written++ % ring.length)] = b;
        }
    }

    /** The newest output (at most the configured buffer), as UTF-8 text. */
    public synchronized String text() {
        if (ring == null) {
            return "";
        }
        int n = (int) Math.min(written, ring.length);
        byte[] out = new byte[n];
        long start = written - n;
        for (int i = 0; i < n; i++) {
            out[i] = ring[(int) ((start + i) % ring.length)];
        }
        return new String(out, StandardCharsets.UTF_8);
    }

    /** Every byte ever written, including what the buffer dropped. */
    public synchronized long bytesWritten() {
        return written;
    }
}
