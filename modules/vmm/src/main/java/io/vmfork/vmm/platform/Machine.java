package io.vmfork.vmm.platform;

import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.state.VcpuState;
import java.util.BitSet;
import java.util.List;
import java.util.function.Consumer;
import java.util.function.IntConsumer;
import java.util.function.Supplier;

/**
 * The platform's half of one VM, made by {@link Platform#boot} or {@link Platform#restore}:
 * its address space (guest RAM, read and written by the VMM through {@link #memory()},
 * dirty tracking and freezing in {@link #capture}) and one {@link ExecContext} per vCPU.
 * The VM owns it and releases it once every vCPU thread has left.
 */
public interface Machine {
    /** Guest RAM as the VMM reads and writes it. */
    GuestMemory memory();

    /** One execution context per vCPU, in index order. */
    List<ExecContext> contexts();

    /**
     * The thread started ahead that must run vCPU {@code index} (a pooled one; on the
     * process platform the tracer of that vCPU's thread), or null for a thread of its own.
     * Each is handed out once; one never taken is cancelled by {@link #release}.
     */
    ParkedThread takeThread(int index);

    /**
     * The VM's vCPUs are about to start: from now on, {@code onDeath} (with the reason) is
     * called if the platform sees the guest end outside any vCPU's run (a guest process
     * killed from outside while every vCPU waits in the VMM).
     */
    default void started(Consumer<String> onDeath) {
    }

    /**
     * Freezes the paused VM: every vCPU's state and a runtime image of its RAM, after which
     * the VM goes on from that image (copy-on-write: its later writes never reach it).
     * Called with every vCPU out of the guest and held; {@code threads} runs work on a
     * vCPU's own thread where the platform needs it. Ordering requirements are each
     * platform's own.
     *
     * @param started     per vCPU, whether the guest started it
     * @param resultPages pages the VMM writes right after the VM resumes: copy them now
     */
    Capture capture(boolean[] started, BitSet resultPages, VcpuThreads threads);

    /** The VM runs again after a capture: the work the capture left for after the pause. */
    void resumed();

    /**
     * Releases what the machine holds: the contexts (closed already by the vCPU threads that
     * ran them, or now), guest RAM, a thread never taken. Called once.
     */
    void release();

    /** The host pid of the guest's process (the process platform), -1 where there is none. */
    default int guestPid() {
        return -1;
    }

    /**
     * What {@link #capture} took: the vCPUs as they are (a vCPU waiting in a hypercall has
     * RIP past its `out`), the image (the caller releases it), the VM's CPUID and clock, and
     * the kernel's per-page work in nanoseconds (reading dirty logs, write-protecting,
     * swapping memory slots).
     */
    record Capture(List<VcpuState> vcpus, RuntimeImage image, byte[] cpuidEntries, long clockNs,
            long pageWorkNanos) {
        public Capture {
            vcpus = List.copyOf(vcpus);
        }
    }

    /** Work on the VM's vCPU threads, for a platform whose vCPU state only its own thread reaches (ptrace). */
    interface VcpuThreads {
        /** Runs {@code work} on vCPU {@code index}'s thread and returns what it returned. */
        <T> T runOn(int index, Supplier<T> work);

        /** Runs {@code work} for every vCPU on that vCPU's thread, all at once; returns when all have. */
        void onEach(IntConsumer work);
    }
}
