package io.vmfork.cluster.api;

import io.vmfork.cluster.serialization.ClusterMessage;

/**
 * A lifecycle event of a VM, as subscribers receive it.
 *
 * @param kind     what happened
 * @param vmId     the VM (for {@link Kind#FORKED}: the child)
 * @param hostId   its host
 * @param vm       the VM's description for LAUNCHED, FORKED and KNOWN; else null
 * @param exitCode the guest's exit code for EXITED; else -1
 * @param detail   why it ended (EXITED, CRASHED, STOPPED, LOST) or why a clone failed (CLONE_FAILED), else ""
 */
public record VmEvent(Kind kind, long vmId, long hostId, VmInfo vm, int exitCode, String detail)
        implements ClusterMessage {
    /** What happened to a VM. */
    public enum Kind {
        /** Booted from an image on its host. */
        LAUNCHED,
        /** The guest said it is ready to serve. */
        READY,
        /**
         * A copy was made of {@code vm().parentId()}; this event names the copy, a child on
         * the parent's host or a clone on another ({@code vm().origin()}).
         */
        FORKED,
        /**
         * A copy of VM {@code vmId} that placement put on another host was not started:
         * {@code detail} names the copy, the target host and why (the source host sends it).
         */
        CLONE_FAILED,
        /** The guest called EXIT. */
        EXITED,
        /** The guest faulted or broke the ABI. */
        CRASHED,
        /** The host stopped it. */
        STOPPED,
        /** Its host left the cluster (removed or dead): the VM is gone with it. */
        LOST,
        /**
         * Sent to a new subscriber of a host for each VM the host has already, so that it
         * knows of VMs older than its subscription; a node's {@link ClusterView} passes it on
         * to its subscribers for a VM it had not known (its host was listed after they
         * subscribed).
         */
        KNOWN
    }

    public VmEvent {
        if (kind == null) {
            throw new IllegalArgumentException("a VmEvent needs a kind");
        }
        if (detail == null) {
            detail = "";
        }
    }
}
