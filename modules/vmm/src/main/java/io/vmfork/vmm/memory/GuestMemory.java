package io.vmfork.vmm.memory;

import com.sun.jna.Pointer;
import io.vmfork.kvm.memory.Mapping;
import io.vmfork.kvm.memory.Memfd;

/**
 * A VM's RAM as the VMM sees it: guest-physical [0, size) backed by a memfd, mapped into
 * this process. Every access from the VMM goes through a bounds check, so a guest that
 * passes a bad pointer to a hypercall gets an error, never a host crash.
 */
public final class GuestMemory implements AutoCloseable {
    public static final long PAGE_SIZE = 4096;

    private final Memfd memfd;
    private final Mapping mapping;
    private final Pointer base;

    private GuestMemory(Memfd memfd, Mapping mapping) {
        this.memfd = memfd;
        this.mapping = mapping;
        this.base = mapping.pointer();
    }

    /** Fresh zeroed RAM: a new memfd, mapped shared so that the memfd holds the guest's writes. */
    public static GuestMemory create(String name, long size) {
        Memfd fd = Memfd.create(name, size);
        try {
            return new GuestMemory(fd, fd.map(true, name));
        } catch (RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    public long size() {
        return mapping.size();
    }

    public Memfd memfd() {
        return memfd;
    }

    public Mapping mapping() {
        return mapping;
    }

    /** Host virtual address of guest-physical 0, for KVM_SET_USER_MEMORY_REGION. */
    public long hostAddress() {
        return mapping.address();
    }

    /** True if {@code [gpa, gpa+len)} lies inside guest RAM (no overflow, len may be 0). */
    public boolean contains(long gpa, long len) {
        return gpa >= 0 && len >= 0 && gpa <= size() && len <= size() - gpa;
    }

    private void check(long gpa, long len) {
        if (!contains(gpa, len)) {
            throw new GuestAccessException(gpa, len, size());
        }
    }

    public byte[] read(long gpa, int len) {
        check(gpa, len);
        return base.getByteArray(gpa, len);
    }

    public void write(long gpa, byte[] data) {
        write(gpa, data, 0, data.length);
    }

    public void write(long gpa, byte[] data, int off, int len) {
        check(gpa, len);
        base.write(gpa, data, off, len);
    }

    public long readLong(long gpa) {
        check(gpa, 8);
        return base.getLong(gpa);
    }

    public void writeLong(long gpa, long value) {
        check(gpa, 8);
        base.setLong(gpa, value);
    }

    public int readInt(long gpa) {
        check(gpa, 4);
        return base.getInt(gpa);
    }

    public void writeInt(long gpa, int value) {
        check(gpa, 4);
        base.setInt(gpa, value);
    }

    public byte readByte(long gpa) {
        check(gpa, 1);
        return base.getByte(gpa);
    }

    @Override
    public void close() {
        try {
            mapping.close();
        } finally {
            memfd.close();
        }
    }
}
