package io.vmfork.vmm.platform.process;

/** The process platform cannot do what was asked on this host; the message says what is missing. */
public final class ProcessPlatformException extends RuntimeException {
    public ProcessPlatformException(String message) {
        super(message);
    }
}
