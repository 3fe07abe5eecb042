package io.vmfork.vmm.fork;

import io.vmfork.vmm.VmIdentity;
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
}
