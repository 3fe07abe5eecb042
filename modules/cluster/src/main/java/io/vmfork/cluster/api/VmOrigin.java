package io.vmfork.cluster.api;

/** How a VM was made. */
public enum VmOrigin {
    /** Booted from a guest image. */
    BOOTED,
    /** A copy-on-write fork child on its parent's host. */
    CHILD,
    /** A clone on another host, made from a clone capsule. */
    CLONE
}
