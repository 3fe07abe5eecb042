package io.vmfork.kvm;

import com.sun.jna.Memory;
import io.vmfork.kvm.x86.KvmClockData;
import io.vmfork.os.LibC;

/** One KVM VM fd: memory slots, vCPU creation, the VM clock. */
public final class KvmVm implements AutoCloseable {
    /** KVM_MEM_LOG_DIRTY_PAGES */
    public static final int MEM_LOG_DIRTY_PAGES = 1;

    private final Kvm kvm;
    private final int fd;
    private boolean closed;

    KvmVm(Kvm kvm, int fd) {
        this.kvm = kvm;
        this.fd = fd;
    }

    public Kvm kvm() {
        return kvm;
    }

    public int fd() {
        return fd;
    }

    /** KVM_SET_USER_MEMORY_REGION; a size of 0 deletes the slot. */
    public void setUserMemoryRegion(int slot, int flags, long guestPhys, long size, long hostAddress) {
        Memory m = new Memory(32);
        m.setInt(0, slot);
        m.setInt(4, flags);
        m.setLong(8, guestPhys);
        m.setLong(16, size);
        m.setLong(24, hostAddress);
        LibC.ioctl(fd, Ioctls.KVM_SET_USER_MEMORY_REGION, m, "KVM_SET_USER_MEMORY_REGION");
    }

    /**
     * KVM_GET_DIRTY_LOG: the pages of {@code slot} written by the guest since the last call,
     * one bit a page, into {@code bitmap} (which must hold pages/64 longs, rounded up).
     */
    public void getDirtyLog(int slot, Memory bitmap) {
        Memory m = new Memory(16);
        m.setInt(0, slot);
        m.setInt(4, 0);
        m.setPointer(8, bitmap);
        LibC.ioctl(fd, Ioctls.KVM_GET_DIRTY_LOG, m, "KVM_GET_DIRTY_LOG");
    }

    /** KVM_CREATE_VCPU, with its kvm_run area mapped. */
    /** KVM_CHECK_EXTENSION on this VM (some answers, such as KVM_CAP_XSAVE2's size, are per VM). */
    public int checkExtension(int cap) {
        return LibC.ioctl(fd, Ioctls.KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION");
    }

    public KvmVcpu createVcpu(int index) {
        int vcpuFd = LibC.ioctl(fd, Ioctls.KVM_CREATE_VCPU, index, "KVM_CREATE_VCPU");
        try {
            return new KvmVcpu(this, index, vcpuFd, kvm.vcpuMmapSize());
        } catch (RuntimeException e) {
            LibC.closeQuietly(vcpuFd);
            throw e;
        }
    }

    public KvmClockData getClock() {
        KvmClockData c = new KvmClockData();
        LibC.ioctl(fd, Ioctls.KVM_GET_CLOCK, c.getPointer(), "KVM_GET_CLOCK");
        c.read();
        return c;
    }

    /** struct kvm_clock_data: clock u64, flags u32, pad0 u32, realtime u64, host_tsc u64, pad u32[4]. */
    private static final int CLOCK_DATA_SIZE = 48;

    /**
     * KVM_SET_CLOCK with flags 0: the VM's kvmclock reads {@code clockNs} now. Through a raw
     * buffer, not the Structure: it is on every fork child's launch.
     */
    public void setClock(long clockNs) {
        com.sun.jna.Memory m = new com.sun.jna.Memory(CLOCK_DATA_SIZE);
        m.clear();
        m.setLong(0, clockNs);
        LibC.ioctl(fd, Ioctls.KVM_SET_CLOCK, m, "KVM_SET_CLOCK");
    }

    /** KVM_GET_CLOCK's clock field, in ns (raw, as {@link #setClock}: on every fork's capture). */
    public long getClockNs() {
        com.sun.jna.Memory m = new com.sun.jna.Memory(CLOCK_DATA_SIZE);
        m.clear();
        LibC.ioctl(fd, Ioctls.KVM_GET_CLOCK, m, "KVM_GET_CLOCK");
        return m.getLong(0);
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            LibC.closeQuietly(fd);
        }
    }
}
