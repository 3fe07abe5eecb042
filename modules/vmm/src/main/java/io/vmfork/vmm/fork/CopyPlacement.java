package io.vmfork.vmm.fork;

import io.vmfork.vmm.VmIdentity;
import io.vmfork.vmm.hypercall.Hypercalls;
import java.util.Collections;
import java.util.List;

/**
 * Where the copies of a fork go: the patent's {@code get_target_pf(vm_type)}. Declared by
 * the VMM and implemented above it (the cluster's placement service), so that the VMM
 * never depends on the cluster. The VMM asks once per fork, with the parent paused, and
 * launches the copies placed on this host as copy-on-write children.
 *
 * <p>An implementation must answer within its own deadline (the parent's pause grows by
 * the time it takes) and must never throw for a placement it cannot make: it answers
 * {@link CopyTarget.Refused} for those copies instead.
 *
 * <p>Copies placed on other hosts ({@link CopyTarget.Remote}) are handed back to the
 * placement in one {@link RemoteFork} per fork, through {@link #ship}, once the parent
 * runs again: the transfer of the runtime image never holds the parent.
 */
@FunctionalInterface
public interface CopyPlacement {
    /** Every copy on this host: the VMM alone, with no cluster. */
    CopyPlacement LOCAL = (parent, vmType, count) -> Collections.nCopies(count, CopyTarget.LOCAL);

    /**
     * Decides, for each of {@code count} copies of {@code parent}, where it goes.
     *
     * @return exactly {@code count} targets, in the order of the copies
     */
    List<CopyTarget> place(VmIdentity parent, int vmType, int count);

    /**
     * Sends the copies of one fork that {@link #place} put on other hosts: called once per
     * fork that has such copies, on the forking thread, after the parent has resumed (its
     * local children launched and its FORK result written). Takes ownership of
     * {@code fork}: the implementation reports every copy's outcome
     * ({@link RemoteFork#started}, {@link RemoteFork#failed}) and closes it when done with
     * its image. It must not block: the work belongs on other threads. If it throws, the
     * VMM fails the copies not yet resolved and closes the fork.
     *
     * <p>The default makes no remote clones: every copy fails with {@code VMF_EREMOTE}.
     */
    default void ship(RemoteFork fork) {
        try {
            for (RemoteFork.Copy c : fork.copies()) {
                fork.failed(c.index(), Hypercalls.EREMOTE, "this host makes no remote clones");
            }
        } finally {
            fork.close();
        }
    }
}
