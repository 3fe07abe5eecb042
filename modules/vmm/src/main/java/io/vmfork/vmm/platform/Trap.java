package io.vmfork.vmm.platform;

/**
 * Why {@link ExecContext#run} returned.
 *
 * @param regs   for {@link Kind#HYPERCALL}: the registers, RIP already past the `out`; for
 *               {@link Kind#SYSCALL}: the registers, RIP past the `syscall`
 * @param reason for {@link Kind#CRASHED}: why the VM cannot go on, naming the RIP (the
 *               texts of docs/hypercalls.md, "What ends a VM")
 */
public record Trap(Kind kind, long[] regs, String reason) {
    public enum Kind {
        /** A well-formed hypercall: `out %eax,(%dx)` to the hypercall port. */
        HYPERCALL,
        /** Kicked, or a stop that means nothing to the guest: look at pause and stop, then enter again. */
        INTERRUPTED,
        /**
         * A `syscall` instruction in guest RAM (regs: RIP past it, RAX the number). A Linux
         * guest's VMM serves it (docs/linux.md); for an SDK guest it is a crash with
         * {@code reason}.
         */
        SYSCALL,
        /** The guest faulted or broke the ABI; the VM ends. */
        CRASHED
    }

    private static final Trap INTERRUPTED_TRAP = new Trap(Kind.INTERRUPTED, null, null);

    public static Trap hypercall(long[] regs) {
        return new Trap(Kind.HYPERCALL, regs, null);
    }

    /** A system call: {@code regs} as it made it (RIP past the `syscall`), {@code reason} the crash text for a guest that makes none. */
    public static Trap syscall(long[] regs, String reason) {
        return new Trap(Kind.SYSCALL, regs, reason);
    }

    public static Trap interrupted() {
        return INTERRUPTED_TRAP;
    }

    public static Trap crashed(String reason) {
        return new Trap(Kind.CRASHED, null, reason);
    }
}
