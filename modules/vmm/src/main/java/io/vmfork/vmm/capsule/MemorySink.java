package io.vmfork.vmm.capsule;

import java.io.IOException;

/**
 * Where {@link CapsuleReader} puts guest RAM: a clone VM's fresh, zeroed memory (a memfd).
 * Only non-zero pages are written; everything else must read as zero afterwards.
 *
 * <p>The reader writes pages as it streams them, before it has seen the trailer digest,
 * so a sink may hold pages of a capsule that is then refused. The caller discards the
 * sink whenever {@link CapsuleReader#read} throws, and starts no VM on it.
 */
@FunctionalInterface
public interface MemorySink {
    /**
     * Copies {@code len} bytes of {@code bytes[off..]} to guest-physical {@code offset}.
     * The reader has checked that the range is page aligned and inside the header's
     * memory size; calls come in ascending, non-overlapping order, except that a read for
     * a restore writes the VMM's area below 0x200000 last.
     */
    void write(long offset, byte[] bytes, int off, int len) throws IOException;
}
