package io.vmfork.vmm.fork;

/** Where one copy of a fork goes, as {@link CopyPlacement} decided it. */
public sealed interface CopyTarget {
    /** On this host, as a copy-on-write child. */
    CopyTarget LOCAL = new Local();

    /** A copy-on-write child on the forking VM's own host. */
    record Local() implements CopyTarget {
    }

    /**
     * A clone VM on another host of the cluster, made from a clone capsule: the VMM hands it
     * to {@link CopyPlacement#ship} after the parent has resumed.
     *
     * @param hostId        the target host
     * @param reservationId placement's reservation on that host, 0 if none
     */
    record Remote(long hostId, long reservationId) implements CopyTarget {
        /** A copy on {@code hostId} with no reservation. */
        public Remote(long hostId) {
            this(hostId, 0);
        }
    }

    /**
     * No host takes this copy.
     *
     * @param status the hypercall status the copy fails with (a {@code VMF_E*} code of
     *               io.vmfork.vmm.hypercall.Hypercalls, e.g. ELIMIT when no host has room)
     * @param reason for logs and the application
     */
    record Refused(long status, String reason) implements CopyTarget {
    }
}
