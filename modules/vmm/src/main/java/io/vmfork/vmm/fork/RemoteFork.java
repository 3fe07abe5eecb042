package io.vmfork.vmm.fork;

import io.vmfork.vmm.VmIdentity;
import io.vmfork.vmm.hypercall.Hypercalls;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.state.MachineState;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.atomic.AtomicBoolean;

/**
 * The copies of one fork that placement put on other hosts, with what a target needs to
 * start them: the machine state the copies start from and the frozen runtime image. The
 * VMM makes one per fork that has such copies and hands it to
 * {@link CopyPlacement#ship} once the parent runs again; the parent never waits for it.
 *
 * <p>Whoever holds it reports each copy's outcome, once: {@link #started} or
 * {@link #failed} (thread-safe; the first outcome of a copy wins, later ones are
 * ignored). The outcome reaches the parent's guest through FORK_STATUS
 * (docs/hypercalls.md) while the parent lives, and {@link #outcome(int)} completes.
 * {@link #close()} releases the image; copies not resolved by then fail with
 * {@code VMF_EREMOTE}.
 */
public final class RemoteFork implements AutoCloseable {
    private static final org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(RemoteFork.class);
    /**
     * One copy to start on another host.
     *
     * @param index         its index among the fork's copies (what its fork block says)
     * @param hostId        the target host placement chose
     * @param reservationId placement's reservation on that host, 0 if none
     * @param ticket        what the parent's guest asks FORK_STATUS with (unique per parent VM)
     */
    public record Copy(int index, long hostId, long reservationId, long ticket) {
    }

    /**
     * How one copy ended: started ({@code status} 0, {@code vmId} the clone's id) or failed
     * ({@code status} a {@code VMF_E*} code, {@code vmId} 0).
     */
    public record Outcome(int index, long status, long vmId, String reason) {
        public boolean started() {
            return status == Hypercalls.OK;
        }
    }

    /** Hears each copy's outcome once (the parent's ticket table); called on the reporting thread. */
    @FunctionalInterface
    public interface OutcomeListener {
        OutcomeListener NONE = (copy, outcome) -> {
        };

        void resolved(Copy copy, Outcome outcome);
    }

    private final long forkId;
    private final VmIdentity parent;
    private final int vmType;
    private final MachineState state;
    private final RuntimeImage image;
    private final long forkBlock;
    private final List<Copy> copies;
    private final CompletableFuture<Outcome>[] outcomes;
    private final OutcomeListener listener;
    private final AtomicBoolean closed = new AtomicBoolean();

    /**
     * Made by the VMM (and by tests). Takes ownership of one reference to {@code image},
     * released by {@link #close()}.
     */
    @SuppressWarnings("unchecked")
    public RemoteFork(long forkId, VmIdentity parent, int vmType, MachineState state, RuntimeImage image,
            long forkBlock, List<Copy> copies, OutcomeListener listener) {
        this.forkId = forkId;
        this.parent = Objects.requireNonNull(parent, "parent");
        this.vmType = vmType;
        this.state = Objects.requireNonNull(state, "state");
        this.image = Objects.requireNonNull(image, "image");
        this.forkBlock = forkBlock;
        this.copies = List.copyOf(copies);
        this.listener = listener == null ? OutcomeListener.NONE : listener;
        int max = -1;
        for (Copy c : this.copies) {
            if (c.index() < 0) {
                throw new IllegalArgumentException("copy index " + c.index() + " is negative");
            }
            max = Math.max(max, c.index());
        }
        this.outcomes = new CompletableFuture[max + 1];
        for (Copy c : this.copies) {
            if (outcomes[c.index()] != null) {
                throw new IllegalArgumentException("copy index " + c.index() + " appears twice");
            }
            outcomes[c.index()] = new CompletableFuture<>();
        }
    }

    /** Unique among the forks of this VMM; a fork from outside reports it in its ForkResult. */
    public long forkId() {
        return forkId;
    }

    /** The forking VM, as it was when it forked. */
    public VmIdentity parent() {
        return parent;
    }

    /** The copies' VM type. */
    public int vmType() {
        return vmType;
    }

    /**
     * The state the copies start from. For a FORK hypercall the calling vCPU's RAX is
     * already 0 ({@code VMF_OK}), as in a local child.
     */
    public MachineState state() {
        return state;
    }

    /** The frozen runtime image; valid until {@link #close()} (retain it to keep it longer). */
    public RuntimeImage image() {
        if (closed.get()) {
            throw new IllegalStateException("remote fork " + forkId + " is closed; its image is released");
        }
        return image;
    }

    /** GPA of the caller's {@code struct vmf_fork}, 0 for a fork from outside. */
    public long forkBlock() {
        return forkBlock;
    }

    /** The copies to start elsewhere, in index order. */
    public List<Copy> copies() {
        return copies;
    }

    /** Completes with the outcome of copy {@code index} (one of {@link #copies()}). */
    public CompletableFuture<Outcome> outcome(int index) {
        return future(index).copy();
    }

    /** Copy {@code index} runs on its host as VM {@code vmId}. Ignored if the copy is resolved already. */
    public void started(int index, long vmId) {
        if (vmId == 0) {
            throw new IllegalArgumentException("a started clone has a non-zero VM id");
        }
        resolve(index, new Outcome(index, Hypercalls.OK, vmId, "started"));
    }

    /**
     * Copy {@code index} will not run. Ignored if the copy is resolved already.
     *
     * @param status a negative {@code VMF_E*} code other than {@code VMF_EINPROGRESS}: e.g.
     *               ELIMIT (no room on the target), ENOMEM, ETRANSFER (transfer failed or
     *               the target refused the capsule), EREMOTE (not launched)
     */
    public void failed(int index, long status, String reason) {
        if (status >= 0 || status == Hypercalls.EINPROGRESS) {
            throw new IllegalArgumentException("a failed copy has a VMF_E* status other than EINPROGRESS, got "
                    + status);
        }
        resolve(index, new Outcome(index, status, 0, reason == null ? Hypercalls.statusName(status) : reason));
    }

    /** Releases the image; copies not resolved yet fail with {@code VMF_EREMOTE}. Idempotent. */
    @Override
    public void close() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        try {
            for (Copy c : copies) {
                resolve(c.index(), new Outcome(c.index(), Hypercalls.EREMOTE, 0, "not launched"));
            }
        } finally {
            image.release();
        }
    }

    /** Whether {@link #close()} has run. */
    public boolean isClosed() {
        return closed.get();
    }

    private void resolve(int index, Outcome o) {
        CompletableFuture<Outcome> f = future(index);
        if (f.complete(o)) {
            Copy copy = copies.stream().filter(c -> c.index() == index).findFirst().orElseThrow();
            try {
                listener.resolved(copy, o);
            } catch (RuntimeException e) {
                log.warn("{}: the listener of copy {} failed", this, index, e);
            }
        }
    }

    private CompletableFuture<Outcome> future(int index) {
        CompletableFuture<Outcome> f = index >= 0 && index < outcomes.length ? outcomes[index] : null;
        if (f == null) {
            throw new IllegalArgumentException("fork " + forkId + " has no remote copy " + index);
        }
        return f;
    }

    @Override
    public String toString() {
        return "remote fork " + forkId + " of VM " + Long.toHexString(parent.vmId()) + " (" + copies.size()
                + " copies)";
    }
}
