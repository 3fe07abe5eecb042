package io.vmfork.vmm.capsule;

/**
 * A capsule is not a well-formed capsule of a supported format version: damaged,
 * truncated, forged or of another format. The message names what is wrong and where
 * (frame number and byte offset in the stream). Whatever the reader wrote to its
 * {@link MemorySink} before this was thrown must be discarded.
 */
public final class CapsuleFormatException extends CapsuleException {
    public CapsuleFormatException(String message) {
        super(message);
    }

    public CapsuleFormatException(String message, Throwable cause) {
        super(message, cause);
    }

    /** A problem in frame {@code frame} (0 is the header), which starts at byte {@code offset} of the stream. */
    static CapsuleFormatException inFrame(int frame, String kind, long offset, String what) {
        return new CapsuleFormatException("capsule frame " + frame + " (" + kind + ") at byte " + offset + ": " + what);
    }

    /** A problem at byte {@code offset} of the stream, outside any frame. */
    static CapsuleFormatException atByte(long offset, String what) {
        return new CapsuleFormatException("capsule at byte " + offset + ": " + what);
    }
}
