package io.vmfork.vmm.guest;

/** A guest image that cannot run as a vmfork guest, with the reason. */
public final class InvalidGuestImageException extends RuntimeException {
    public InvalidGuestImageException(String message) {
        super(message);
    }

    public InvalidGuestImageException(String message, Throwable cause) {
        super(message, cause);
    }
}
