package io.vmfork.vmm.hypercall;

/**
 * The hypercall ABI, version {@value #ABI_VERSION}: numbers, status codes and limits.
 * docs/hypercalls.md is the reference and the SDK header vmfork.h mirrors it; a test
 * checks that the three agree.
 */
public final class Hypercalls {
    public static final int ABI_VERSION = 1;
    public static final int PORT = 0x7f0;
    /** `out %eax, (%dx)`: the one instruction a hypercall is, one byte long. */
    public static final byte OUT_EAX_DX = (byte) 0xef;

    public static final int ABI_VERSION_CALL = 0;
    public static final int CONSOLE_WRITE = 1;
    public static final int EXIT = 2;
    public static final int IDENTITY = 3;
    public static final int ENTROPY = 4;
    public static final int CLOCK = 5;
    public static final int RECV = 6;
    public static final int SEND = 7;
    public static final int READY = 8;
    public static final int FORK = 9;
    public static final int FORK_STATUS = 10;
    public static final int VCPU_START = 11;
    public static final int VCPU_STOP = 12;
    public static final int VCPU_INDEX = 13;

    public static final long OK = 0;
    public static final long EINVAL = -1;
    public static final long EFAULT = -2;
    public static final long ENOSYS = -3;
    public static final long E2BIG = -4;
    public static final long EAGAIN = -5;
    public static final long ECLOSED = -6;
    public static final long ELIMIT = -7;
    public static final long ENOMEM = -8;
    public static final long EREMOTE = -9;
    public static final long EINPROGRESS = -10;
    public static final long ETRANSFER = -11;

    public static final int CONSOLE_MAX = 65536;
    public static final int ENTROPY_MAX = 4096;
    public static final long RECV_NONBLOCK = 1;

    /** FORK: the caller's role after the call. */
    public static final int FORK_PARENT = 0;
    public static final int FORK_CHILD = 1;
    /** FORK flag: copies placed on other hosts are accepted (EINPROGRESS and a ticket) rather than failed with EREMOTE. */
    public static final long FORK_REMOTE = 1;
    /** FORK_STATUS: the longest wait, in nanoseconds; a longer wait_ns is cut to it. */
    public static final long FORK_STATUS_WAIT_MAX = 10_000_000_000L;

    public static final long BOOT_INFO_MAGIC = 0x544f4f424b524f46L;

    private Hypercalls() {
    }

    public static String statusName(long status) {
        return switch ((int) status) {
            case 0 -> "OK";
            case -1 -> "EINVAL";
            case -2 -> "EFAULT";
            case -3 -> "ENOSYS";
            case -4 -> "E2BIG";
            case -5 -> "EAGAIN";
            case -6 -> "ECLOSED";
            case -7 -> "ELIMIT";
            case -8 -> "ENOMEM";
            case -9 -> "EREMOTE";
            case -10 -> "EINPROGRESS";
            case -11 -> "ETRANSFER";
            default -> "status " + status;
        };
    }

    public static String name(int nr) {
        return switch (nr) {
            case ABI_VERSION_CALL -> "ABI_VERSION";
            case CONSOLE_WRITE -> "CONSOLE_WRITE";
            case EXIT -> "EXIT";
            case IDENTITY -> "IDENTITY";
            case ENTROPY -> "ENTROPY";
            case CLOCK -> "CLOCK";
            case RECV -> "RECV";
            case SEND -> "SEND";
            case READY -> "READY";
            case FORK -> "FORK";
            case FORK_STATUS -> "FORK_STATUS";
            case VCPU_START -> "VCPU_START";
            case VCPU_STOP -> "VCPU_STOP";
            case VCPU_INDEX -> "VCPU_INDEX";
            default -> "hypercall " + nr;
        };
    }
}
