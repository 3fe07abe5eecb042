package io.vmfork.vmm.capsule;

/**
 * A well-formed capsule that is not the VM its reader admitted: its memory size, vCPU count
 * or VM type differs from what the reader was told to expect ({@link CapsuleReader.Expected},
 * e.g. what a remote clone's offer was admitted for). Refused right after the header (memory,
 * vCPUs) or the state frame (VM type), before the state is used or any memory is read.
 */
public final class CapsuleNotAdmittedException extends CapsuleException {
    public CapsuleNotAdmittedException(String message) {
        super(message);
    }
}
