package io.vmfork.vmm;

/** Life of a VM. */
public enum VmState {
    /** Built, vCPUs not yet started. */
    CREATED,
    RUNNING,
    /** Every vCPU is stopped at a stable point (parked, or blocked in a restartable hypercall). */
    PAUSED,
    EXITED,
    CRASHED,
    STOPPED;

    public boolean isEnded() {
        return this == EXITED || this == CRASHED || this == STOPPED;
    }
}
