package io.vmfork.kvm;

import com.sun.jna.Memory;
import io.vmfork.kvm.sys.LibC;
import io.vmfork.kvm.x86.KvmClockData;

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

    public void setClock(long clockNs) {
        KvmClockData c = new KvmClockData();
        c.clock = clockNs;
        c.write();
        LibC.ioctl(fd, Ioctls.KVM_SET_CLOCK, c.getPointer(), "KVM_SET_CLOCK");
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            LibC.closeQuietly(fd);
        }
    }
}
