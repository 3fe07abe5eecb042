package io.vmfork.kvm;

import com.sun.jna.Memory;
import io.vmfork.kvm.x86.Cpuid;
import io.vmfork.os.LibC;
import io.vmfork.os.NativeCallException;

/**
 * The /dev/kvm handle: system-wide queries and VM creation. One per host process; it
 * is thread-safe (every method is a stateless ioctl on the same fd).
 */
public final class Kvm implements AutoCloseable {
    public static final int EXPECTED_API_VERSION = 12;
    public static final int CAP_IMMEDIATE_EXIT = 136;
    public static final int CAP_XSAVE2 = 208;
    public static final int CAP_ADJUST_CLOCK = 39;
    public static final int CAP_XSAVE = 55;
    public static final int CAP_XCRS = 56;
    private static final int MAX_CPUID_ENTRIES = 256;

    private final int fd;
    private final int apiVersion;
    private final int vcpuMmapSize;
    private volatile boolean closed;

    private Kvm(int fd) {
        this.fd = fd;
        this.apiVersion = LibC.ioctl(fd, Ioctls.KVM_GET_API_VERSION, 0L, "KVM_GET_API_VERSION");
        if (apiVersion != EXPECTED_API_VERSION) {
            LibC.closeQuietly(fd);
            throw new KvmException("KVM API version " + apiVersion + " is not supported (need "
                    + EXPECTED_API_VERSION + ")");
        }
        this.vcpuMmapSize = LibC.ioctl(fd, Ioctls.KVM_GET_VCPU_MMAP_SIZE, 0L, "KVM_GET_VCPU_MMAP_SIZE");
        if (checkExtension(CAP_IMMEDIATE_EXIT) <= 0) {
            LibC.closeQuietly(fd);
            throw new KvmException("KVM_CAP_IMMEDIATE_EXIT is missing: vCPUs could not be paused reliably");
        }
    }

    /** Opens {@code path} (normally /dev/kvm), failing with a message a person can act on. */
    public static Kvm open(String path) {
        int fd;
        try {
            fd = LibC.checkedOpen(path, LibC.O_RDWR);
        } catch (NativeCallException e) {
            throw new KvmException("cannot open " + path + ": " + e.getMessage()
                    + " (is KVM available, and may this user open it?)", e);
        }
        try {
            return new Kvm(fd);
        } catch (NativeCallException e) {
            LibC.closeQuietly(fd);
            // ENOTTY: the file opened, but it answers no KVM ioctl (vmfork.vmm.kvm-device = /dev/null).
            throw new KvmException(path + (e.errno() == io.vmfork.os.Errno.ENOTTY ? " is not a KVM device: " : ": ")
                    + e.getMessage() + " (vmfork.vmm.kvm-device names the KVM device, usually /dev/kvm)", e);
        }
    }

    public int apiVersion() {
        return apiVersion;
    }

    public int vcpuMmapSize() {
        return vcpuMmapSize;
    }

    public int checkExtension(int cap) {
        return LibC.ioctl(fd, Ioctls.KVM_CHECK_EXTENSION, cap, "KVM_CHECK_EXTENSION");
    }

    /** KVM_GET_SUPPORTED_CPUID: what this host can offer a guest. */
    public Cpuid supportedCpuid() {
        Cpuid c = Cpuid.withCapacity(MAX_CPUID_ENTRIES);
        LibC.ioctl(fd, Ioctls.KVM_GET_SUPPORTED_CPUID, c.memory(), "KVM_GET_SUPPORTED_CPUID");
        return c;
    }

    /** KVM_GET_MSR_INDEX_LIST: the MSRs this host can save and restore. */
    public int[] msrIndexList() {
        int capacity = 1024;
        Memory m = new Memory(4 + 4L * capacity);
        m.setInt(0, capacity);
        LibC.ioctl(fd, Ioctls.KVM_GET_MSR_INDEX_LIST, m, "KVM_GET_MSR_INDEX_LIST");
        int n = m.getInt(0);
        return m.getIntArray(4, n);
    }

    /** KVM_CREATE_VM. */
    public KvmVm createVm() {
        int vmFd = LibC.ioctl(fd, Ioctls.KVM_CREATE_VM, 0L, "KVM_CREATE_VM");
        return new KvmVm(this, vmFd);
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            LibC.closeQuietly(fd);
        }
    }
}
