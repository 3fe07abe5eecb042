package io.vmfork.vmm.state;

/**
 * Read access to a frozen runtime image of guest RAM, for encoding: which ranges may hold
 * data (everything else is known to be zero and is never read), and their bytes.
 * Implementations are immutable while in use, so an encoder may read them while the VM
 * they came from runs on.
 */
public interface MemorySource {
    long size();

    /** A range that may hold non-zero bytes, page aligned. */
    record Run(long offset, long length) {
    }

    /** The ranges that may hold data, ascending, not overlapping; pages outside them are zero. */
    java.util.List<Run> dataRuns();

    /** Copies {@code length} bytes at {@code offset} into {@code dst[dstOff..]}. */
    void read(long offset, byte[] dst, int dstOff, int length);
}
