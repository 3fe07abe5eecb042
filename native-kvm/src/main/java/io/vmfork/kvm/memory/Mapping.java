package io.vmfork.kvm.memory;

import com.sun.jna.Pointer;
import io.vmfork.kvm.sys.LibC;

/** A host virtual memory mapping that this object owns and unmaps on close. */
public final class Mapping implements AutoCloseable {
    private final long address;
    private final long size;
    private final String what;
    private volatile boolean closed;

    private Mapping(long address, long size, String what) {
        this.address = address;
        this.size = size;
        this.what = what;
    }

    static Mapping ofFile(Memfd file, boolean shared, String what) {
        long addr = LibC.mmap(0, file.size(), LibC.PROT_READ | LibC.PROT_WRITE,
                (shared ? LibC.MAP_SHARED : LibC.MAP_PRIVATE) | LibC.MAP_NORESERVE, file.fd(), 0, what);
        return new Mapping(addr, file.size(), what);
    }

    /** Anonymous private memory, zero-filled, for scratch buffers. */
    public static Mapping anonymous(long size, String what) {
        long addr = LibC.mmap(0, size, LibC.PROT_READ | LibC.PROT_WRITE,
                LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS | LibC.MAP_NORESERVE, -1, 0, what);
        return new Mapping(addr, size, what);
    }

    /**
     * Replaces {@code [offset, offset+length)} of this mapping, in place, with a MAP_PRIVATE
     * view of the same range of {@code file}. The address stays the same, so a KVM memory
     * slot that points here keeps working: KVM's MMU notifier drops the old pages.
     */
    public void remapPrivate(Memfd file, long offset, long length) {
        checkRange(offset, length);
        LibC.mmap(address + offset, length, LibC.PROT_READ | LibC.PROT_WRITE,
                LibC.MAP_PRIVATE | LibC.MAP_FIXED | LibC.MAP_NORESERVE, file.fd(), offset, what + " (remap)");
    }

    public long address() {
        return address;
    }

    public long size() {
        return size;
    }

    public Pointer pointer() {
        return new Pointer(address);
    }

    public boolean isClosed() {
        return closed;
    }

    private void checkRange(long offset, long length) {
        if (offset < 0 || length < 0 || offset > size || length > size - offset) {
            throw new IndexOutOfBoundsException("range [" + offset + ", +" + length + ") outside " + what
                    + " of " + size + " bytes");
        }
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            LibC.munmap(address, size, what);
        }
    }
}
