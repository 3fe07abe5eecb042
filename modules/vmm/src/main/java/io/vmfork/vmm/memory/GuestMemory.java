package io.vmfork.vmm.memory;

import com.sun.jna.Memory;
import com.sun.jna.Pointer;
import io.vmfork.os.Mapping;
import io.vmfork.os.Memfd;
import io.vmfork.os.Processes;
import java.util.BitSet;

/**
 * A VM's RAM as the VMM sees it: guest-physical [0, size), mapped into this process (or, on
 * the process platform once the RAM is private to the guest's process, reached through
 * that process), and its {@link MemoryFreezer}, which freezes it into runtime images for
 * forks and snapshots.
 *
 * <p>Every access from the VMM goes through a bounds check, so a guest that passes a bad
 * pointer to a hypercall gets an error, never a host crash. Pages the VMM writes while the
 * RAM is private are tracked for the next freeze.
 */
public final class GuestMemory implements AutoCloseable {
    public static final long PAGE_SIZE = 4096;

    private final String name;
    private final long size;
    private volatile Mapping view;
    private volatile Pointer base;
    /**
     * On the process platform, once the guest's RAM is private to its process: that
     * process's pid, through which the VMM reads and writes it (process_vm_readv/writev);
     * 0 while the VMM's own view is the guest's RAM.
     */
    private volatile int processPid;
    /** Pages the VMM wrote through this object since the last freeze (private views only). */
    private final BitSet vmmDirty = new BitSet();
    private volatile boolean closed;
    private MemoryFreezer freezer;

    private GuestMemory(String name, long size) {
        this.name = name;
        this.size = size;
    }

    /** Fresh zeroed RAM: a new memfd, mapped shared so that the memfd holds the guest's writes. */
    public static GuestMemory create(String name, long size, int maxExtents) {
        GuestMemory m = new GuestMemory(name, size);
        Memfd fd = Memfd.create(name, size);
        try {
            m.setView(fd.map(true, name));
            m.freezer = new MemoryFreezer(m, maxExtents, fd, null);
            return m;
        } catch (RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    /** A private copy-on-write view of {@code image}; takes a reference to it. */
    public static GuestMemory fromImage(String name, RuntimeImage image, int maxExtents) {
        return fromImage(name, image, maxExtents, null);
    }

    /**
     * As above, placed over {@code reserved} when not null (an address range of the image's
     * size that a KVM memory slot may already point at), which it takes ownership of.
     */
    public static GuestMemory fromImage(String name, RuntimeImage image, int maxExtents, Mapping reserved) {
        GuestMemory m = new GuestMemory(name, image.size());
        Mapping v = reserved == null ? image.mapPrivate(name) : image.mapPrivateAt(reserved, name);
        m.freezer = new MemoryFreezer(m, maxExtents, null, image.retain());
        m.setView(v);
        return m;
    }

    /**
     * The process platform's RAM of a VM started from {@code image} (a fork child, a
     * clone): private to the guest process, which maps the image itself; the VMM has no
     * view and reaches the RAM through the process ({@link #attachProcess}). Takes a
     * reference to the image.
     */
    public static GuestMemory forProcess(String name, RuntimeImage image, int maxExtents) {
        GuestMemory m = new GuestMemory(name, image.size());
        m.freezer = new MemoryFreezer(m, maxExtents, null, image.retain());
        return m;
    }

    /** What freezes this RAM into runtime images (forks, snapshots). */
    public MemoryFreezer freezer() {
        return freezer;
    }

    /** From now on the VMM reads and writes this RAM in process {@code pid}, which maps it privately. */
    public void attachProcess(int pid) {
        processPid = pid;
    }

    /** Reads {@code [gpa, gpa + len)} from the guest process into {@code dst}. */
    void readProcess(Pointer dst, long gpa, long len) {
        long done = 0;
        while (done < len) {
            long n = Processes.read(processPid, gpa + done, dst.share(done), len - done);
            if (n <= 0) {
                throw new GuestAccessException(gpa + done, len - done, size);
            }
            done += n;
        }
    }

    private void writeProcess(long gpa, Pointer src, long len) {
        long done = 0;
        while (done < len) {
            long n = Processes.write(processPid, gpa + done, src.share(done), len - done);
            if (n <= 0) {
                throw new GuestAccessException(gpa + done, len - done, size);
            }
            done += n;
        }
    }

    private void setView(Mapping v) {
        view = v;
        base = v.pointer();
    }

    public long size() {
        return size;
    }

    /** The RAM file while the view is still shared (a booted VM before its first freeze); -1 after. */
    public int sharedFileDescriptor() {
        return freezer.sharedFileDescriptor();
    }

    /** Host virtual address of guest-physical 0, for KVM_SET_USER_MEMORY_REGION. */
    public long hostAddress() {
        return view.address();
    }

    /** True once the RAM is private over a runtime image (and the platform should log dirty pages). */
    public boolean isPrivate() {
        return freezer.isPrivate();
    }

    // ---- for the freezer, which changes the view; under its lock, the VM paused ----------

    String name() {
        return name;
    }

    boolean isClosed() {
        return closed;
    }

    /** Host pointer to guest-physical {@code gpa} in the VMM's view. */
    Pointer hostPointer(long gpa) {
        return base.share(gpa);
    }

    /** The VMM's view goes (the guest's process maps the RAM now); returns it, to unmap later. */
    Mapping detachView() {
        Mapping old = view;
        view = null;
        base = null;
        return old;
    }

    /** The VMM's view becomes {@code next}; returns the one it replaces, to unmap later. */
    Mapping swapView(Mapping next) {
        Mapping old = view;
        setView(next);
        return old;
    }

    /**
     * One write (of the byte already there) to page 0 of a view just made private, while
     * the VM is paused: the first write fault in a private mapping sets up its anonymous
     * memory under the memory map lock, which the unmap of the old view (after the pause)
     * holds for tens of ms at 1 GiB; later faults take only their mapping's own lock.
     */
    void touchFirstPage() {
        base.setByte(0, base.getByte(0));
    }

    void clearVmmDirty() {
        synchronized (vmmDirty) {
            vmmDirty.clear();
        }
    }

    void markVmmDirty(int page) {
        synchronized (vmmDirty) {
            vmmDirty.set(page);
        }
    }

    /** Adds the pages the VMM wrote since the last freeze to {@code pages}. */
    void addVmmDirty(BitSet pages) {
        synchronized (vmmDirty) {
            pages.or(vmmDirty);
        }
    }

    void checkOpen() {
        if (closed) {
            throw new IllegalStateException("guest memory " + name + " is closed");
        }
    }

    // ---- bounds-checked access ---------------------------------------------------------

    /** True if {@code [gpa, gpa+len)} lies inside guest RAM (no overflow, len may be 0). */
    public boolean contains(long gpa, long len) {
        return gpa >= 0 && len >= 0 && gpa <= size && len <= size - gpa;
    }

    private void check(long gpa, long len) {
        if (!contains(gpa, len)) {
            throw new GuestAccessException(gpa, len, size);
        }
    }

    private void written(long gpa, long len) {
        if (len > 0 && freezer.isPrivate()) {
            synchronized (vmmDirty) {
                vmmDirty.set((int) (gpa / PAGE_SIZE), (int) ((gpa + len - 1) / PAGE_SIZE) + 1);
            }
        }
    }

    /**
     * A native buffer per thread for reads and writes through a guest process: a JNA
     * Memory per access (malloc plus a cleaner registration) cost more than the
     * process_vm_readv itself on the hypercall path.
     */
    private static final int SCRATCH_BYTES = 64 << 10;
    private static final ThreadLocal<Memory> SCRATCH = ThreadLocal.withInitial(() -> new Memory(SCRATCH_BYTES));

    public byte[] read(long gpa, int len) {
        check(gpa, len);
        if (processPid != 0) {
            if (len == 0) {
                return new byte[0];
            }
            if (len <= SCRATCH_BYTES) {
                Memory m = SCRATCH.get();
                readProcess(m, gpa, len);
                return m.getByteArray(0, len);
            }
            try (Memory m = new Memory(len)) {
                readProcess(m, gpa, len);
                return m.getByteArray(0, len);
            }
        }
        return base.getByteArray(gpa, len);
    }

    public void write(long gpa, byte[] data) {
        write(gpa, data, 0, data.length);
    }

    public void write(long gpa, byte[] data, int off, int len) {
        check(gpa, len);
        if (processPid != 0) {
            if (len > 0 && len <= SCRATCH_BYTES) {
                Memory m = SCRATCH.get();
                m.write(0, data, off, len);
                writeProcess(gpa, m, len);
            } else if (len > 0) {
                try (Memory m = new Memory(len)) {
                    m.write(0, data, off, len);
                    writeProcess(gpa, m, len);
                }
            }
            return; // the process's own written pages are its dirty log
        }
        base.write(gpa, data, off, len);
        written(gpa, len);
    }

    public long readLong(long gpa) {
        check(gpa, 8);
        if (processPid != 0) {
            return java.nio.ByteBuffer.wrap(read(gpa, 8)).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
        }
        return base.getLong(gpa);
    }

    public void writeLong(long gpa, long value) {
        check(gpa, 8);
        if (processPid != 0) {
            write(gpa, java.nio.ByteBuffer.allocate(8).order(java.nio.ByteOrder.LITTLE_ENDIAN).putLong(value).array());
            return;
        }
        base.setLong(gpa, value);
        written(gpa, 8);
    }

    public int readInt(long gpa) {
        check(gpa, 4);
        if (processPid != 0) {
            return java.nio.ByteBuffer.wrap(read(gpa, 4)).order(java.nio.ByteOrder.LITTLE_ENDIAN).getInt();
        }
        return base.getInt(gpa);
    }

    public void writeInt(long gpa, int value) {
        check(gpa, 4);
        if (processPid != 0) {
            write(gpa, java.nio.ByteBuffer.allocate(4).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(value).array());
            return;
        }
        base.setInt(gpa, value);
        written(gpa, 4);
    }

    public byte readByte(long gpa) {
        check(gpa, 1);
        if (processPid != 0) {
            return read(gpa, 1)[0];
        }
        return base.getByte(gpa);
    }

    /** Releases the freezer's part (waiting for its background work), then the view. */
    @Override
    public void close() {
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
        }
        try {
            freezer.close();
        } finally {
            Mapping v = view;
            if (v != null) {
                v.close();
            }
        }
    }
}
