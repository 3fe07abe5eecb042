package io.vmfork.kvm;

import com.sun.jna.Pointer;

/** Accessors over a vCPU's mmapped struct kvm_run (offsets from linux/kvm.h, x86-64). */
public final class KvmRun {
    public static final int EXIT_UNKNOWN = 0;
    public static final int EXIT_EXCEPTION = 1;
    public static final int EXIT_IO = 2;
    public static final int EXIT_HLT = 5;
    public static final int EXIT_MMIO = 6;
    public static final int EXIT_SHUTDOWN = 8;
    public static final int EXIT_FAIL_ENTRY = 9;
    public static final int EXIT_INTR = 10;
    public static final int EXIT_INTERNAL_ERROR = 17;
    public static final int EXIT_SYSTEM_EVENT = 24;

    public static final int IO_IN = 0;
    public static final int IO_OUT = 1;

    private static final int OFF_IMMEDIATE_EXIT = 1;
    private static final int OFF_EXIT_REASON = 8;
    private static final int OFF_IO_DIRECTION = 32;
    private static final int OFF_IO_SIZE = 33;
    private static final int OFF_IO_PORT = 34;
    private static final int OFF_IO_COUNT = 36;
    private static final int OFF_IO_DATA_OFFSET = 40;
    private static final int OFF_MMIO_PHYS = 32;
    private static final int OFF_FAIL_ENTRY_REASON = 32;
    private static final int OFF_INTERNAL_SUBERROR = 32;

    private final Pointer run;

    KvmRun(Pointer run) {
        this.run = run;
    }

    public int exitReason() {
        return run.getInt(OFF_EXIT_REASON);
    }

    public void setImmediateExit(boolean on) {
        run.setByte(OFF_IMMEDIATE_EXIT, (byte) (on ? 1 : 0));
    }

    public int ioDirection() {
        return run.getByte(OFF_IO_DIRECTION) & 0xff;
    }

    public int ioSize() {
        return run.getByte(OFF_IO_SIZE) & 0xff;
    }

    public int ioPort() {
        return run.getShort(OFF_IO_PORT) & 0xffff;
    }

    public int ioCount() {
        return run.getInt(OFF_IO_COUNT);
    }

    /** The first data item of an I/O exit, as an unsigned 32-bit value. */
    public long ioData32() {
        long off = run.getLong(OFF_IO_DATA_OFFSET);
        return run.getInt(off) & 0xffffffffL;
    }

    public long mmioPhysAddr() {
        return run.getLong(OFF_MMIO_PHYS);
    }

    public long failEntryReason() {
        return run.getLong(OFF_FAIL_ENTRY_REASON);
    }

    public int internalSuberror() {
        return run.getInt(OFF_INTERNAL_SUBERROR);
    }

    public static String exitName(int reason) {
        return switch (reason) {
            case EXIT_UNKNOWN -> "KVM_EXIT_UNKNOWN";
            case EXIT_EXCEPTION -> "KVM_EXIT_EXCEPTION";
            case EXIT_IO -> "KVM_EXIT_IO";
            case EXIT_HLT -> "KVM_EXIT_HLT";
            case EXIT_MMIO -> "KVM_EXIT_MMIO";
            case EXIT_SHUTDOWN -> "KVM_EXIT_SHUTDOWN";
            case EXIT_FAIL_ENTRY -> "KVM_EXIT_FAIL_ENTRY";
            case EXIT_INTR -> "KVM_EXIT_INTR";
            case EXIT_INTERNAL_ERROR -> "KVM_EXIT_INTERNAL_ERROR";
            case EXIT_SYSTEM_EVENT -> "KVM_EXIT_SYSTEM_EVENT";
            default -> "KVM exit " + reason;
        };
    }
}
