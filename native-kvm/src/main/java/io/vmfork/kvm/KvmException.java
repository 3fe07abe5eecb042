package io.vmfork.kvm;

/** A KVM operation could not be carried out; the message names the step. */
public class KvmException extends RuntimeException {
    public KvmException(String message) {
        super(message);
    }

    public KvmException(String message, Throwable cause) {
        super(message, cause);
    }
}
