package io.vmfork.cluster.host;

import io.vmfork.cluster.placement.AdmissionLedger;
import io.vmfork.cluster.placement.LoadReporter;
import io.vmfork.cluster.placement.PlacementClient;
import io.vmfork.cluster.placement.PlacementEntity;
import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmIdentity;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.fork.CopyPlacement;
import io.vmfork.vmm.fork.CopyTarget;
import io.vmfork.vmm.fork.RemoteFork;
import io.vmfork.vmm.hypercall.Hypercalls;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.typed.ActorRef;

/**
 * The host's {@link CopyPlacement}: a fork (hypercall or from outside) asks the placement
 * entity of its vm_type where each copy goes, waiting at most the placement ask timeout on
 * the forking thread (the parent is paused meanwhile). Copies placed on this host are
 * admitted through the host's {@link AdmissionLedger} right here, with the placement's
 * reservation id, so a fork can never over-commit the host either; a copy the ledger
 * refuses fails with {@code VMF_ELIMIT}. Copies placed on other hosts are
 * {@link CopyTarget.Remote} with the placement's reservation there; the VMM hands them to
 * {@link #ship} once the parent runs again, and {@link CloneSource} sends them.
 *
 * <p>A copy admitted here whose launch then fails in the VMM is given back to the ledger
 * when that parent's fork ends ({@link #forkEnded}, for forks from outside), at the
 * parent's next fork (forks of one VM are serialized by the VMM) or when the parent
 * ends ({@link #parentEnded}).
 */
final class HostCopyPlacement implements CopyPlacement {
    private final Vmm vmm;
    private final AdmissionLedger ledger;
    private final ActorRef<LoadReporter.Command> reporter;
    private final PlacementClient placement;
    private final long hostId;
    private final Duration timeout;
    private final java.util.function.Consumer<RemoteFork> shipper;
    /** Copies admitted for a parent's fork and not launched (yet), by parent id. */
    private final Map<Long, Integer> unlaunched = new ConcurrentHashMap<>();

    HostCopyPlacement(Vmm vmm, AdmissionLedger ledger, ActorRef<LoadReporter.Command> reporter,
                      PlacementClient placement, long hostId, Duration timeout,
                      java.util.function.Consumer<RemoteFork> shipper) {
        this.shipper = shipper;
        this.vmm = vmm;
        this.ledger = ledger;
        this.reporter = reporter;
        this.placement = placement;
        this.hostId = hostId;
        this.timeout = timeout;
    }

    @Override
    public List<CopyTarget> place(VmIdentity parent, int vmType, int count) {
        VirtualMachine p = vmm.vm(parent.vmId());
        long memory = p != null ? p.memory().size() : vmm.settings().defaultMemory();
        int vcpus = p != null ? Math.max(1, p.vcpuCount()) : 1;
        giveBack(parent.vmId(), memory, vcpus);
        PlacementEntity.Reply reply;
        try {
            reply = placement.placeCopies(vmType, count, parent.hostId(), memory, vcpus).toCompletableFuture()
                    .get(timeout.toMillis(), TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return Collections.nCopies(count, new CopyTarget.Refused(Hypercalls.EAGAIN, "interrupted"));
        } catch (Exception e) {
            return Collections.nCopies(count, new CopyTarget.Refused(Hypercalls.EAGAIN,
                    "placement did not answer: " + e));
        }
        List<CopyTarget> targets = new ArrayList<>(count);
        int admitted = 0;
        if (reply instanceof PlacementEntity.Placed placed) {
            for (PlacementEntity.Slot slot : placed.slots()) {
                if (slot.hostId() != hostId) {
                    targets.add(new CopyTarget.Remote(slot.hostId(), slot.reservationId()));
                } else if (ledger.admit(slot.reservationId(), memory, vcpus)) {
                    targets.add(CopyTarget.LOCAL);
                    admitted++;
                } else {
                    targets.add(new CopyTarget.Refused(Hypercalls.ELIMIT, "host " + hostId + " is full"));
                }
            }
            while (targets.size() < count) {
                targets.add(new CopyTarget.Refused(Hypercalls.ELIMIT, placed.shortfall()));
            }
            reporter.tell(LoadReporter.ReportNow.INSTANCE);
        } else {
            String reason = reply instanceof PlacementEntity.NoCapacity n ? n.reason() : String.valueOf(reply);
            targets.addAll(Collections.nCopies(count, new CopyTarget.Refused(Hypercalls.ELIMIT, reason)));
        }
        if (admitted > 0) {
            unlaunched.merge(parent.vmId(), admitted, Integer::sum);
        }
        return targets;
    }

    @Override
    public void ship(RemoteFork fork) {
        shipper.accept(fork);
    }

    /** A copy of {@code parentId} is launched (called on the forking thread, from onForked). */
    void launched(long parentId) {
        unlaunched.computeIfPresent(parentId, (k, n) -> n > 1 ? n - 1 : null);
    }

    /** A fork of {@code parentId} from outside has returned: copies still unlaunched failed. */
    void forkEnded(long parentId, long memory, int vcpus) {
        giveBack(parentId, memory, vcpus);
    }

    /** The parent ended: no copy of it is being launched any more. */
    void parentEnded(long parentId, long memory, int vcpus) {
        giveBack(parentId, memory, vcpus);
    }

    private void giveBack(long parentId, long memory, int vcpus) {
        Integer n = unlaunched.remove(parentId);
        if (n != null) {
            for (int i = 0; i < n; i++) {
                ledger.release(memory, vcpus);
            }
            reporter.tell(LoadReporter.ReportNow.INSTANCE);
        }
    }
}
