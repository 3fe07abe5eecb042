package io.vmfork.vmm.platform;

/**
 * Why {@link ExecContext#run} returned.
 *
 * @param regs   for {@link Kind#HYPERCALL}: the registers, RIP already past the `out`
 * @param reason for {@link Kind#CRASHED}: why the VM cannot go on, naming the RIP (the
 *               texts of docs/hypercalls.md, "What ends a VM")
 */
public record Trap(Kind kind, long[] regs, String reason) {
    public enum Kind {
        /** A well-formed hypercall: `out %eax,(%dx)` to the hypercall port. */
        HYPERCALL,
        /** Kicked, or a stop that means nothing to the guest: look at pause and stop, then enter again. */
        INTERRUPTED,
        /** The guest faulted or broke the ABI; the VM ends. */
        CRASHED
    }

    private static final Trap INTERRUPTED_TRAP = new Trap(Kind.INTERRUPTED, null, null);

    public static Trap hypercall(long[] regs) {
        return new Trap(Kind.HYPERCALL, regs, null);
    }

    public static Trap interrupted() {
        return INTERRUPTED_TRAP;
    }

    public static Trap crashed(String reason) {
        return new Trap(Kind.CRASHED, null, reason);
    }
}
