package io.vmfork.os;

/**
 * An anonymous memory file (memfd_create) of a fixed size. Pages of a memfd that were
 * never written are holes: they take no host memory and read as zero.
 */
public final class Memfd implements AutoCloseable {
    private final int fd;
    private long size;
    private boolean closed;

    private Memfd(int fd, long size) {
        this.fd = fd;
        this.size = size;
    }

    public static Memfd create(String name, long size) {
        return create(name, size, false);
    }

    /** A memfd to execute (execveat with AT_EMPTY_PATH): see {@link LibC#memfdCreateExecutable}. */
    public static Memfd createExecutable(String name, long size) {
        return create(name, size, true);
    }

    private static Memfd create(String name, long size, boolean executable) {
        if (size <= 0) {
            throw new IllegalArgumentException("memfd size must be positive, got " + size);
        }
        int fd = executable ? LibC.memfdCreateExecutable(name) : LibC.memfdCreate(name);
        try {
            LibC.ftruncate(fd, size, name);
        } catch (RuntimeException e) {
            LibC.closeQuietly(fd);
            throw e;
        }
        return new Memfd(fd, size);
    }

    /** Changes the file's size (growing adds holes; shrinking drops what lies past the end). */
    public synchronized void resize(long newSize) {
        if (newSize <= 0) {
            throw new IllegalArgumentException("memfd size must be positive, got " + newSize);
        }
        LibC.ftruncate(fd, newSize, "memfd resize");
        size = newSize;
    }

    public int fd() {
        return fd;
    }

    public synchronized long size() {
        return size;
    }

    /** Maps the whole file; MAP_SHARED writes reach the file, MAP_PRIVATE writes stay in the mapping. */
    public Mapping map(boolean shared, String what) {
        return Mapping.ofFile(this, shared, what);
    }

    /** The next offset at or after {@code from} that holds data, or -1 if none does. */
    public long nextData(long from) {
        return LibC.seekData(fd, from, LibC.SEEK_DATA);
    }

    /** The next hole at or after {@code from} (the file end counts as a hole). */
    public long nextHole(long from) {
        long h = LibC.seekData(fd, from, LibC.SEEK_HOLE);
        return h < 0 ? size : h;
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            LibC.closeQuietly(fd);
        }
    }
}
