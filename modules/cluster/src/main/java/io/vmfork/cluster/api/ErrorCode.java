package io.vmfork.cluster.api;

/** Why a command to a VM or a host failed. */
public enum ErrorCode {
    /** No VM with this id is alive on its host (it never existed or has ended). */
    UNKNOWN_VM,
    /** The host the VM id or the caller names is not (or no longer) in the cluster. */
    HOST_GONE,
    /**
     * The guest image is not one of the target host's images (a shipped guest, or a file
     * under its {@code vmfork.node.images}); a host path is never one. Or the file is no
     * vmfork guest (the message says why).
     */
    IMAGE_NOT_FOUND,
    /** The host (or, for placement, every host) has no room for the VM. */
    HOST_FULL,
    /** The VM ended before it answered. */
    VM_ENDED,
    /** The VMM refused the launch or fork (bad size, too many vCPUs, ...). */
    LAUNCH_FAILED,
    /** A request the VM or host refused as invalid (too large, bad count, ...). */
    INVALID,
    /** No answer within the configured timeout. */
    TIMEOUT,
    /**
     * A remote clone's target refused its capsule: this host cannot run it (a CPU feature
     * the guest used is missing, a different KVM, ...) or the capsule is malformed. The
     * message names the mismatch.
     */
    CAPSULE_REFUSED,
    /**
     * A remote clone's capsule did not arrive whole: the connection was cut, the source or
     * the target died, or the peer went silent past the idle timeout.
     */
    TRANSFER_FAILED
}
