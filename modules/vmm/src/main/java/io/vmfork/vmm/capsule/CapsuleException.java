package io.vmfork.vmm.capsule;

/** A capsule was refused; a subclass says whether it is damaged or does not fit this host. */
public abstract class CapsuleException extends RuntimeException {
    protected CapsuleException(String message) {
        super(message);
    }

    protected CapsuleException(String message, Throwable cause) {
        super(message, cause);
    }
}
