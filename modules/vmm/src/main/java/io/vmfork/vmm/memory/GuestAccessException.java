package io.vmfork.vmm.memory;

/** The VMM was asked to touch guest memory outside the VM's RAM. */
public final class GuestAccessException extends RuntimeException {
    public GuestAccessException(long gpa, long len, long ramSize) {
        super("guest range [0x" + Long.toHexString(gpa) + ", +" + len + ") lies outside guest RAM of "
                + ramSize + " bytes");
    }
}
