package io.vmfork.vmm.platform;

/**
 * Where one vCPU's code runs, on whichever platform the host has: enter the guest until it
 * traps, read and set its registers, interrupt it. gVisor's {@code platform.Context} is
 * the model. Everything above it (hypercall dispatch, pause and stop, the fork path) is the
 * same on every platform.
 *
 * <p>Registers are always the 18 of struct kvm_regs, in its order ({@link
 * io.vmfork.vmm.arch.CpuState#REGS}: the architecture-neutral layout), whatever the platform
 * keeps underneath.
 */
public interface ExecContext {
    int index();

    /**
     * Called once on the vCPU's own thread before anything else (the process platform
     * attaches its tracer there).
     */
    default void begin() {
    }

    /** Enters the guest until it traps. Only the vCPU's own thread calls it. */
    Trap run();

    /** The registers now (the vCPU is not in {@link #run}). */
    long[] regs();

    /**
     * Sets the registers the vCPU resumes with. From its own thread, or from another one
     * while the vCPU is held out of {@link #run} (VCPU_START, a launch).
     */
    void setRegs(long[] regs);

    /** Makes a {@link #run} in progress, or the next one, return {@link Trap.Kind#INTERRUPTED} soon. Any thread. */
    void kick();

    /** Forgets a kick that was seen; called by the vCPU's thread before it enters again. */
    void clearKick();

    /**
     * The FS base the vCPU runs with (a Linux guest's arch_prctl). On the vCPU's own thread,
     * out of the guest. Platforms that cannot set it fail loudly.
     */
    default long fsBase() {
        throw new UnsupportedOperationException("FS base access is not implemented on " + getClass().getSimpleName());
    }

    /** Sets the FS base the vCPU resumes with; on its own thread, out of the guest. */
    default void setFsBase(long base) {
        throw new UnsupportedOperationException("FS base access is not implemented on " + getClass().getSimpleName());
    }

    /** The GS base, as {@link #fsBase}. */
    default long gsBase() {
        throw new UnsupportedOperationException("GS base access is not implemented on " + getClass().getSimpleName());
    }

    /** Sets the GS base, as {@link #setFsBase}. */
    default void setGsBase(long base) {
        throw new UnsupportedOperationException("GS base access is not implemented on " + getClass().getSimpleName());
    }

    /** Releases what the context holds; a later {@link #kick} does nothing. */
    void close();
}
