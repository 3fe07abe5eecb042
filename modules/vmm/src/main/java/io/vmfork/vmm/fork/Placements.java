package io.vmfork.vmm.fork;

import io.vmfork.vmm.VmIdentity;
import io.vmfork.vmm.hypercall.Hypercalls;
import java.util.Collections;
import java.util.List;
import java.util.Objects;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The fork path's side of the {@link CopyPlacement} contract: asking where the copies go
 * and handing back those placed elsewhere, so that a placement that breaks its contract
 * (throws, answers the wrong number of targets) fails the copies, never the fork or the
 * parent.
 */
public final class Placements {
    private static final Logger log = LoggerFactory.getLogger(Placements.class);

    private Placements() {
    }

    /**
     * Asks {@code placement} where each of {@code count} copies of {@code parent} goes. A
     * placement that throws, or answers other than {@code count} targets, refuses every copy
     * (ELIMIT) rather than the fork.
     */
    public static List<CopyTarget> place(CopyPlacement placement, VmIdentity parent, int vmType, int count,
            Object forked) {
        try {
            List<CopyTarget> t = placement.place(parent, vmType, count);
            if (t != null && t.size() == count && t.stream().allMatch(Objects::nonNull)) {
                return t;
            }
            log.warn("fork of {}: placement answered {} targets for {} copies", forked, t == null ? null : t.size(),
                    count);
        } catch (RuntimeException e) {
            log.warn("fork of {}: placement failed", forked, e);
        }
        return Collections.nCopies(count, new CopyTarget.Refused(Hypercalls.ELIMIT, "placement failed"));
    }

    /**
     * A fork hypercall without VMF_FORK_REMOTE: each copy placed on another host fails with
     * EREMOTE (ABI 1's first form), set in {@code errors}.
     */
    public static void refuseRemote(List<CopyTarget> targets, long[] errors, Object forked) {
        for (int i = 0; i < targets.size(); i++) {
            if (targets.get(i) instanceof CopyTarget.Remote r) {
                errors[i] = Hypercalls.EREMOTE;
                log.debug("fork of {} copy {}: placed on host {}; the caller did not ask for remote copies", forked, i,
                        r.hostId());
            }
        }
    }

    /**
     * Hands the remote copies to placement, the parent running. A placement that throws
     * fails the copies it had not resolved (ETRANSFER) and the fork is closed.
     */
    public static void ship(CopyPlacement placement, RemoteFork remote, Object forked) {
        if (remote == null) {
            return;
        }
        try {
            placement.ship(remote);
        } catch (RuntimeException e) {
            log.warn("fork of {}: shipping {} failed", forked, remote, e);
            for (RemoteFork.Copy c : remote.copies()) {
                remote.failed(c.index(), Hypercalls.ETRANSFER, "placement could not ship the copy: " + e);
            }
            remote.close();
        }
    }
}
