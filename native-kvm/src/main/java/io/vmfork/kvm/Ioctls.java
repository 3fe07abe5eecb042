package io.vmfork.kvm;

/** KVM ioctl request numbers, computed like linux/ioctl.h's _IO/_IOR/_IOW/_IOWR. */
final class Ioctls {
    private static final int KVMIO = 0xAE;
    private static final long NONE = 0, WRITE = 1, READ = 2;

    static final long KVM_GET_API_VERSION = io(0x00);
    static final long KVM_CREATE_VM = io(0x01);
    static final long KVM_GET_MSR_INDEX_LIST = iowr(0x02, 4);
    static final long KVM_CHECK_EXTENSION = io(0x03);
    static final long KVM_GET_VCPU_MMAP_SIZE = io(0x04);
    static final long KVM_GET_SUPPORTED_CPUID = iowr(0x05, 8);
    static final long KVM_CREATE_VCPU = io(0x41);
    static final long KVM_GET_DIRTY_LOG = iow(0x42, 16);
    static final long KVM_SET_USER_MEMORY_REGION = iow(0x46, 32);
    static final long KVM_SET_TSS_ADDR = io(0x47);
    static final long KVM_SET_CLOCK = iow(0x7b, 48);
    static final long KVM_GET_CLOCK = ior(0x7c, 48);
    static final long KVM_RUN = io(0x80);
    static final long KVM_GET_REGS = ior(0x81, 144);
    static final long KVM_SET_REGS = iow(0x82, 144);
    static final long KVM_GET_SREGS = ior(0x83, 312);
    static final long KVM_SET_SREGS = iow(0x84, 312);
    static final long KVM_GET_MSRS = iowr(0x88, 8);
    static final long KVM_SET_MSRS = iow(0x89, 8);
    static final long KVM_GET_FPU = ior(0x8c, 416);
    static final long KVM_SET_FPU = iow(0x8d, 416);
    static final long KVM_SET_CPUID2 = iow(0x90, 8);
    static final long KVM_GET_CPUID2 = iowr(0x91, 8);
    static final long KVM_GET_MP_STATE = ior(0x98, 4);
    static final long KVM_SET_MP_STATE = iow(0x99, 4);
    static final long KVM_GET_VCPU_EVENTS = ior(0x9f, 64);
    static final long KVM_SET_VCPU_EVENTS = iow(0xa0, 64);
    static final long KVM_GET_XSAVE = ior(0xa4, 4096);
    static final long KVM_SET_XSAVE = iow(0xa5, 4096);
    static final long KVM_GET_XCRS = ior(0xa6, 392);
    static final long KVM_SET_XCRS = iow(0xa7, 392);
    /** _IOR(KVMIO, 0xcf, struct kvm_xsave): the size in the number is 4 KiB, the buffer is KVM_CAP_XSAVE2's. */
    static final long KVM_GET_XSAVE2 = ior(0xcf, 4096);

    private Ioctls() {
    }

    private static long ioc(long dir, int nr, int size) {
        return (dir << 30) | ((long) size << 16) | ((long) KVMIO << 8) | nr;
    }

    private static long io(int nr) {
        return ioc(NONE, nr, 0);
    }

    private static long ior(int nr, int size) {
        return ioc(READ, nr, size);
    }

    private static long iow(int nr, int size) {
        return ioc(WRITE, nr, size);
    }

    private static long iowr(int nr, int size) {
        return ioc(READ | WRITE, nr, size);
    }
}
