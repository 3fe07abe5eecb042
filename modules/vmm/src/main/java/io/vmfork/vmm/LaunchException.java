package io.vmfork.vmm;

/** A VM could not be launched; the message says why. Nothing of it is left behind. */
public class LaunchException extends RuntimeException {
    public LaunchException(String message) {
        super(message);
    }

    public LaunchException(String message, Throwable cause) {
        super(message, cause);
    }
}
