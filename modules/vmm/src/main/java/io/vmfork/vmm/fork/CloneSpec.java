package io.vmfork.vmm.fork;

import io.vmfork.vmm.VmListener;

/**
 * What the target host needs besides the machine state and the runtime image to start one
 * remote copy of a fork ({@link io.vmfork.vmm.Vmm#launchClone}).
 *
 * @param vmType    the copy's VM type (the fork's {@link RemoteFork#vmType()})
 * @param forkBlock GPA of the parent's {@code struct vmf_fork} ({@link RemoteFork#forkBlock()}),
 *                  filled in as a child's before the clone runs; 0 for a fork from outside
 * @param copyIndex the copy's index in its fork ({@link RemoteFork.Copy#index()})
 * @param listener  the clone's events; null for none
 */
public record CloneSpec(int vmType, long forkBlock, int copyIndex, VmListener listener) {
    public CloneSpec {
        if (copyIndex < 0) {
            throw new IllegalArgumentException("copyIndex must be >= 0, got " + copyIndex);
        }
        if (listener == null) {
            listener = VmListener.NONE;
        }
    }
}
