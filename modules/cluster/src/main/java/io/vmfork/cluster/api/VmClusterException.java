package io.vmfork.cluster.api;

/** A command of the application API failed; {@link #code()} says why. */
public final class VmClusterException extends RuntimeException {
    private final ErrorCode code;

    public VmClusterException(ErrorCode code, String message) {
        super(code + ": " + message);
        this.code = code;
    }

    public VmClusterException(ErrorCode code, String message, Throwable cause) {
        super(code + ": " + message, cause);
        this.code = code;
    }

    public ErrorCode code() {
        return code;
    }
}
