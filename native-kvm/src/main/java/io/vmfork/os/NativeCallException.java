package io.vmfork.os;

/**
 * A native call failed. The message names the call and the errno, as in
 * {@code KVM_SET_SREGS failed: EINVAL (22)}.
 */
public class NativeCallException extends RuntimeException {
    private final String call;
    private final int errno;

    public NativeCallException(String call, int errno) {
        super(call + " failed: " + Errno.name(errno) + " (" + errno + ")");
        this.call = call;
        this.errno = errno;
    }

    public NativeCallException(String call, String message) {
        super(call + " failed: " + message);
        this.call = call;
        this.errno = 0;
    }

    /** The name of the call or ioctl that failed. */
    public String call() {
        return call;
    }

    /** The errno it failed with, 0 if it did not set one. */
    public int errno() {
        return errno;
    }
}
