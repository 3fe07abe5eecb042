package io.vmfork.kvm;

import com.sun.jna.Memory;
import com.sun.jna.Pointer;
import io.vmfork.kvm.x86.Cpuid;
import io.vmfork.kvm.x86.KvmFpu;
import io.vmfork.kvm.x86.KvmMpState;
import io.vmfork.kvm.x86.KvmRegs;
import io.vmfork.kvm.x86.KvmSregs;
import io.vmfork.kvm.x86.KvmVcpuEvents;
import io.vmfork.kvm.x86.KvmXcrs;
import io.vmfork.os.LibC;

/**
 * One vCPU fd and its mmapped kvm_run. Each get/set is one ioctl that fails with an
 * exception naming it. Not thread-safe: a vCPU belongs to the thread that runs it, or to
 * whoever holds it while that thread is parked.
 */
public final class KvmVcpu implements AutoCloseable {
    public static final int XSAVE_SIZE = 4096;

    private final KvmVm vm;
    private final int index;
    private final int fd;
    private final long runAddress;
    private final long runSize;
    private final KvmRun run;
    private final KvmRegs regs = new KvmRegs();
    /**
     * One buffer for the raw gets and sets of the fork path (kvm_sregs, kvm_regs,
     * kvm_vcpu_events, kvm_mp_state), owned by this vCPU: no allocation per call. The raw
     * calls copy the buffer out (or in) at once, so they never overlap.
     */
    private final Memory rawBuffer = new Memory(KvmSregs.SIZE);
    /** The XSAVE area buffer of the fork path, made on first use at the vCPU's size. */
    private Memory xsaveBuffer;
    private boolean closed;

    KvmVcpu(KvmVm vm, int index, int fd, int mmapSize) {
        this.vm = vm;
        this.index = index;
        this.fd = fd;
        this.runSize = mmapSize;
        this.runAddress = LibC.mmap(0, mmapSize, LibC.PROT_READ | LibC.PROT_WRITE, LibC.MAP_SHARED, fd, 0,
                "kvm_run");
        this.run = new KvmRun(new Pointer(runAddress));
    }

    public int index() {
        return index;
    }

    public KvmVm vm() {
        return vm;
    }

    public KvmRun run() {
        return run;
    }

    /** KVM_RUN: 0 or a negative errno (-EINTR when kicked). */
    public int runOnce() {
        return LibC.ioctlErrno(fd, Ioctls.KVM_RUN, 0L);
    }

    /**
     * KVM_GET_REGS into a structure owned by this vCPU (no allocation on the hypercall path).
     * The returned object is overwritten by the next call.
     */
    public KvmRegs getRegs() {
        LibC.ioctl(fd, Ioctls.KVM_GET_REGS, regs.getPointer(), "KVM_GET_REGS");
        regs.read();
        return regs;
    }

    public void setRegs(KvmRegs r) {
        r.write();
        LibC.ioctl(fd, Ioctls.KVM_SET_REGS, r.getPointer(), "KVM_SET_REGS");
    }

    public KvmSregs getSregs() {
        KvmSregs s = new KvmSregs();
        LibC.ioctl(fd, Ioctls.KVM_GET_SREGS, s.getPointer(), "KVM_GET_SREGS");
        s.read();
        return s;
    }

    public void setSregs(KvmSregs s) {
        s.write();
        LibC.ioctl(fd, Ioctls.KVM_SET_SREGS, s.getPointer(), "KVM_SET_SREGS");
    }

    /**
     * KVM_GET_SREGS as the raw struct kvm_sregs ({@link KvmSregs#SIZE} bytes, the host's
     * byte order): the fork path's way, without the reflection of a JNA Structure read
     * (about 0.1 ms for kvm_sregs's nested segments, measured on the fork path).
     */
    public byte[] getSregsBytes() {
        LibC.ioctl(fd, Ioctls.KVM_GET_SREGS, rawBuffer, "KVM_GET_SREGS");
        return rawBuffer.getByteArray(0, KvmSregs.SIZE);
    }

    /** KVM_SET_SREGS from a raw struct kvm_sregs of {@link KvmSregs#SIZE} bytes. */
    public void setSregsBytes(byte[] sregs) {
        if (sregs.length != KvmSregs.SIZE) {
            throw new IllegalArgumentException("struct kvm_sregs has " + KvmSregs.SIZE + " bytes, got " + sregs.length);
        }
        rawBuffer.write(0, sregs, 0, sregs.length);
        LibC.ioctl(fd, Ioctls.KVM_SET_SREGS, rawBuffer, "KVM_SET_SREGS");
    }

    /** KVM_GET_REGS as the 18 registers of struct kvm_regs, in its order (rax .. r15, rip, rflags). */
    public long[] getRegsArray() {
        LibC.ioctl(fd, Ioctls.KVM_GET_REGS, rawBuffer, "KVM_GET_REGS");
        return rawBuffer.getLongArray(0, KvmRegs.SIZE / 8);
    }

    /** KVM_SET_REGS from the 18 registers of struct kvm_regs, in its order. */
    public void setRegsArray(long[] r) {
        if (r.length != KvmRegs.SIZE / 8) {
            throw new IllegalArgumentException("kvm_regs has " + KvmRegs.SIZE / 8 + " registers, got " + r.length);
        }
        rawBuffer.write(0, r, 0, r.length);
        LibC.ioctl(fd, Ioctls.KVM_SET_REGS, rawBuffer, "KVM_SET_REGS");
    }

    /** KVM_GET_VCPU_EVENTS as the raw struct kvm_vcpu_events ({@link KvmVcpuEvents#SIZE} bytes). */
    public byte[] getVcpuEventsBytes() {
        LibC.ioctl(fd, Ioctls.KVM_GET_VCPU_EVENTS, rawBuffer, "KVM_GET_VCPU_EVENTS");
        return rawBuffer.getByteArray(0, KvmVcpuEvents.SIZE);
    }

    /** KVM_SET_VCPU_EVENTS from a raw struct kvm_vcpu_events; a shorter array is padded with zeros. */
    public void setVcpuEventsBytes(byte[] events) {
        if (events.length > KvmVcpuEvents.SIZE) {
            throw new IllegalArgumentException("struct kvm_vcpu_events has " + KvmVcpuEvents.SIZE + " bytes, got "
                    + events.length);
        }
        rawBuffer.clear(KvmVcpuEvents.SIZE);
        rawBuffer.write(0, events, 0, events.length);
        LibC.ioctl(fd, Ioctls.KVM_SET_VCPU_EVENTS, rawBuffer, "KVM_SET_VCPU_EVENTS");
    }

    /** KVM_GET_MP_STATE without a Structure. */
    public int getMpStateRaw() {
        LibC.ioctl(fd, Ioctls.KVM_GET_MP_STATE, rawBuffer, "KVM_GET_MP_STATE");
        return rawBuffer.getInt(0);
    }

    /** KVM_SET_MP_STATE without a Structure. */
    public void setMpStateRaw(int state) {
        rawBuffer.setInt(0, state);
        LibC.ioctl(fd, Ioctls.KVM_SET_MP_STATE, rawBuffer, "KVM_SET_MP_STATE");
    }

    private Memory xsaveBuffer(int size) {
        if (xsaveBuffer == null || xsaveBuffer.size() != size) {
            xsaveBuffer = new Memory(size);
        }
        return xsaveBuffer;
    }

    public KvmFpu getFpu() {
        KvmFpu f = new KvmFpu();
        LibC.ioctl(fd, Ioctls.KVM_GET_FPU, f.getPointer(), "KVM_GET_FPU");
        f.read();
        return f;
    }

    public void setFpu(KvmFpu f) {
        f.write();
        LibC.ioctl(fd, Ioctls.KVM_SET_FPU, f.getPointer(), "KVM_SET_FPU");
    }

    /** KVM_GET_XSAVE: the 4 KiB XSAVE area (legacy region, header, extended components up to 4 KiB). */
    public byte[] getXsave() {
        Memory m = xsaveBuffer(XSAVE_SIZE);
        LibC.ioctl(fd, Ioctls.KVM_GET_XSAVE, m, "KVM_GET_XSAVE");
        return m.getByteArray(0, XSAVE_SIZE);
    }

    /**
     * KVM_GET_XSAVE2: the whole XSAVE area of this vCPU, {@code size} bytes as
     * KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) on the VM reports it (at least 4 KiB; larger
     * where the guest may use AMX tile data).
     */
    public byte[] getXsave2(int size) {
        if (size < XSAVE_SIZE) {
            throw new IllegalArgumentException("an xsave2 area has at least " + XSAVE_SIZE + " bytes, got " + size);
        }
        Memory m = xsaveBuffer(size);
        m.clear();
        LibC.ioctl(fd, Ioctls.KVM_GET_XSAVE2, m, "KVM_GET_XSAVE2");
        return m.getByteArray(0, size);
    }

    /**
     * KVM_SET_XSAVE. KVM reads as many bytes as this vCPU's XSAVE area has (4 KiB, or
     * KVM_CAP_XSAVE2's size), so {@code area} is passed in a buffer of {@code size} bytes,
     * zero beyond its end: components it does not hold stay in their initial state.
     */
    public void setXsave(byte[] area, int size) {
        if (size < XSAVE_SIZE || area.length < XSAVE_SIZE || area.length > size) {
            throw new IllegalArgumentException("xsave area of " + area.length + " bytes does not fit a vCPU area of "
                    + size + " bytes (at least " + XSAVE_SIZE + ")");
        }
        Memory m = xsaveBuffer(size);
        if (area.length < size) {
            m.clear(); // components beyond the area stay in their initial state
        }
        m.write(0, area, 0, area.length);
        LibC.ioctl(fd, Ioctls.KVM_SET_XSAVE, m, "KVM_SET_XSAVE");
    }

    public KvmXcrs getXcrs() {
        KvmXcrs x = new KvmXcrs();
        LibC.ioctl(fd, Ioctls.KVM_GET_XCRS, x.getPointer(), "KVM_GET_XCRS");
        x.read();
        return x;
    }

    /** struct kvm_xcrs: nr_xcrs u32, flags u32, 16 x {xcr u32, reserved u32, value u64}, padding u64[16]. */
    private static final int XCRS_SIZE = 8 + 16 * 16 + 16 * 8;

    /** XCR0 from KVM_GET_XCRS, or 0 if KVM reports none (raw: on every fork's capture). */
    public long getXcr0() {
        Memory m = new Memory(XCRS_SIZE);
        m.clear();
        LibC.ioctl(fd, Ioctls.KVM_GET_XCRS, m, "KVM_GET_XCRS");
        int n = Math.min(16, m.getInt(0));
        for (int i = 0; i < n; i++) {
            if (m.getInt(8 + 16L * i) == 0) {
                return m.getLong(8 + 16L * i + 8);
            }
        }
        return 0;
    }

    /** KVM_SET_XCRS with XCR0 only (raw: on every fork child's launch). */
    public void setXcr0(long value) {
        Memory m = new Memory(XCRS_SIZE);
        m.clear();
        m.setInt(0, 1);
        m.setLong(16, value);
        LibC.ioctl(fd, Ioctls.KVM_SET_XCRS, m, "KVM_SET_XCRS");
    }

    public void setXcrs(KvmXcrs x) {
        x.write();
        LibC.ioctl(fd, Ioctls.KVM_SET_XCRS, x.getPointer(), "KVM_SET_XCRS");
    }

    /** KVM_GET_MSRS for {@code indices}; returns their values in the same order. */
    public long[] getMsrs(int[] indices) {
        Memory m = msrBuffer(indices, null);
        int n = LibC.ioctl(fd, Ioctls.KVM_GET_MSRS, m, "KVM_GET_MSRS");
        if (n != indices.length) {
            throw new KvmException("KVM_GET_MSRS read " + n + " of " + indices.length + " MSRs (first missing: 0x"
                    + Integer.toHexString(indices[n]) + ")");
        }
        long[] values = new long[indices.length];
        for (int i = 0; i < indices.length; i++) {
            values[i] = m.getLong(8 + 16L * i + 8);
        }
        return values;
    }

    public void setMsrs(int[] indices, long[] values) {
        if (indices.length != values.length) {
            throw new IllegalArgumentException("MSR indices and values differ in length");
        }
        Memory m = msrBuffer(indices, values);
        int n = LibC.ioctl(fd, Ioctls.KVM_SET_MSRS, m, "KVM_SET_MSRS");
        if (n != indices.length) {
            throw new KvmException("KVM_SET_MSRS wrote " + n + " of " + indices.length + " MSRs (refused: 0x"
                    + Integer.toHexString(indices[n]) + ")");
        }
    }

    private static Memory msrBuffer(int[] indices, long[] values) {
        Memory m = new Memory(8 + 16L * Math.max(1, indices.length));
        m.clear();
        m.setInt(0, indices.length);
        for (int i = 0; i < indices.length; i++) {
            m.setInt(8 + 16L * i, indices[i]);
            if (values != null) {
                m.setLong(8 + 16L * i + 8, values[i]);
            }
        }
        return m;
    }

    public KvmVcpuEvents getVcpuEvents() {
        KvmVcpuEvents e = new KvmVcpuEvents();
        LibC.ioctl(fd, Ioctls.KVM_GET_VCPU_EVENTS, e.getPointer(), "KVM_GET_VCPU_EVENTS");
        e.read();
        return e;
    }

    public void setVcpuEvents(KvmVcpuEvents e) {
        e.write();
        LibC.ioctl(fd, Ioctls.KVM_SET_VCPU_EVENTS, e.getPointer(), "KVM_SET_VCPU_EVENTS");
    }

    public int getMpState() {
        KvmMpState s = new KvmMpState();
        LibC.ioctl(fd, Ioctls.KVM_GET_MP_STATE, s.getPointer(), "KVM_GET_MP_STATE");
        s.read();
        return s.mpState;
    }

    public void setMpState(int state) {
        KvmMpState s = new KvmMpState();
        s.mpState = state;
        s.write();
        LibC.ioctl(fd, Ioctls.KVM_SET_MP_STATE, s.getPointer(), "KVM_SET_MP_STATE");
    }

    public void setCpuid(Cpuid cpuid) {
        LibC.ioctl(fd, Ioctls.KVM_SET_CPUID2, cpuid.memory(), "KVM_SET_CPUID2");
    }

    @Override
    public synchronized void close() {
        if (!closed) {
            closed = true;
            try {
                LibC.munmap(runAddress, runSize, "kvm_run");
            } finally {
                LibC.closeQuietly(fd);
            }
        }
    }
}
