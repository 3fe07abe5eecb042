package io.vmfork.os;

import com.sun.jna.Pointer;

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

    /**
     * An address range reserved for a later {@link #privateAt} (PROT_NONE, no memory): a
     * KVM memory slot may point here before the guest RAM is mapped in.
     */
    public static Mapping reserve(long size, String what) {
        long addr = LibC.mmap(0, size, LibC.PROT_NONE, LibC.MAP_PRIVATE | LibC.MAP_ANONYMOUS | LibC.MAP_NORESERVE, -1,
                0, what);
        return new Mapping(addr, size, what);
    }

    /**
     * A MAP_PRIVATE view of the whole of {@code file} placed over {@code reserved} (which must
     * have the file's size), at the same address. The returned mapping owns the range from
     * now on, also if this throws (then the range is unmapped); {@code reserved} must not be
     * closed or used again.
     */
    public static Mapping privateAt(Memfd file, Mapping reserved, String what) {
        if (reserved.size != file.size()) {
            throw new IllegalArgumentException("reserved range of " + reserved.size + " bytes for a file of "
                    + file.size());
        }
        reserved.closed = true; // ownership moves to the new mapping
        Mapping m = new Mapping(reserved.address, reserved.size, what);
        try {
            LibC.mmap(reserved.address, file.size(), LibC.PROT_READ | LibC.PROT_WRITE,
                    LibC.MAP_PRIVATE | LibC.MAP_FIXED | LibC.MAP_NORESERVE, file.fd(), 0, what);
            return m;
        } catch (RuntimeException e) {
            m.close();
            throw e;
        }
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
