package io.vmfork.vmm.capsule;

import com.sun.jna.Memory;
import io.vmfork.os.LibC;
import io.vmfork.os.Memfd;
import io.vmfork.vmm.memory.RuntimeImage;

/**
 * Where a capsule's memory chunks land on restore: a new sparse memfd of the VM's size
 * that becomes a {@link RuntimeImage} once the whole capsule is verified. Pages the
 * capsule leaves out stay holes. If the capsule turns out bad, close() drops the file
 * and nothing of it is left.
 */
public final class ImageSink implements MemorySink, AutoCloseable {
    private final Memfd file;
    private final Memory buffer;
    private boolean taken;

    private ImageSink(Memfd file, int bufferBytes) {
        this.file = file;
        this.buffer = new Memory(bufferBytes);
    }

    /**
     * A sink for a capsule of at most {@code maxSize} bytes of RAM (its real size is known
     * only once the capsule is read: the file is sparse, so the bound costs nothing).
     */
    public static ImageSink create(String name, long maxSize, int maxChunkBytes) {
        return new ImageSink(Memfd.create(name, maxSize), maxChunkBytes);
    }

    @Override
    public void write(long offset, byte[] bytes, int off, int len) {
        if (!buffer.valid()) {
            throw new IllegalStateException("the sink is closed");
        }
        if (len > buffer.size()) {
            throw new IllegalArgumentException("chunk of " + len + " bytes exceeds the sink's buffer");
        }
        if (offset < 0 || offset > file.size() - len) {
            throw new IllegalArgumentException("chunk at " + offset + " lies outside the image");
        }
        buffer.write(0, bytes, off, len);
        LibC.pwriteFully(file.fd(), buffer, len, offset, "capsule memory");
    }

    /** The verified image of {@code memorySize} bytes; the sink gives up the file to it. */
    public RuntimeImage toImage(long memorySize) {
        if (taken) {
            throw new IllegalStateException("the image was taken already");
        }
        file.resize(memorySize);
        taken = true;
        return RuntimeImage.fromFile(file);
    }

    /**
     * The verified image of a delta capsule: {@code base} with {@code runs} (the pages the
     * capsule covered) taken from this sink's file; the sink gives up the file to it.
     * {@code base} keeps its own references.
     */
    public RuntimeImage toOverlay(RuntimeImage base, java.util.List<io.vmfork.vmm.state.MemorySource.Run> runs) {
        if (taken) {
            throw new IllegalStateException("the image was taken already");
        }
        file.resize(base.size());
        taken = true;
        return base.overlayOf(file, runs);
    }

    /** Frees the copy buffer at once (not at the garbage collector's leisure) and drops the file unless taken. */
    @Override
    public void close() {
        buffer.close();
        if (!taken) {
            taken = true;
            file.close();
        }
    }
}
