package io.vmfork.vmm.capsule;

import java.util.Locale;

/**
 * Whether a capsule writer compresses memory chunks (LZ4 blocks, format version 3),
 * {@code vmfork.capsule.compression}. A reader takes every chunk either way.
 * docs/capsule.md has the measurements behind the default.
 */
public enum ChunkCompression {
    /** Chunks go as they are. */
    NONE,
    /** Every chunk is compressed, and sent compressed unless that makes it no smaller. */
    LZ4,
    /**
     * Every chunk is compressed, and sent compressed only where that saves at least
     * {@link #AUTO_MIN_SAVING} of it; after a run of chunks where it did not, the writer
     * stops trying for a while, so incompressible memory costs little CPU.
     */
    AUTO;

    /** Auto keeps a chunk compressed only if it saves at least 1/8 of its bytes. */
    public static final int AUTO_MIN_SAVING_SHIFT = 3;
    /** The same, as a fraction, for messages. */
    public static final String AUTO_MIN_SAVING = "1/8";

    /** "none", "lz4" or "auto" (any case). */
    public static ChunkCompression parse(String s) {
        try {
            return valueOf(s.trim().toUpperCase(Locale.ROOT));
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException("vmfork.capsule.compression must be none, lz4 or auto, not '" + s + "'",
                    e);
        }
    }
}
