package io.vmfork.cluster.transfer;

import java.io.IOException;

/**
 * A capsule transfer failed: the connection could not be made, dropped, went idle past the
 * idle timeout, carried a malformed frame, ended before the end-of-data frame, or the other
 * side aborted (its reason). The message says what happened and, where it applies, after
 * how many data bytes.
 */
public class TransferException extends IOException {
    private static final long serialVersionUID = 1L;

    public TransferException(String message) {
        super(message);
    }

    public TransferException(String message, Throwable cause) {
        super(message, cause);
    }
}
