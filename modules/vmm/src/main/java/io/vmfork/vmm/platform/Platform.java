package io.vmfork.vmm.platform;

import io.vmfork.vmm.capsule.HostPlatform;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.state.MachineState;

/**
 * Where this host runs its guests: KVM ({@code platform.kvm}) or confined host processes
 * ({@code platform.process}), chosen once per VMM ({@link PlatformChoice}). gVisor's
 * {@code platform.Platform} is the model: a platform says what it can do and makes the
 * platform's half of each VM, a {@link Machine} (an address space and one
 * {@link ExecContext} per vCPU). Everything above it (the VM and its device model, hypercall
 * dispatch, the fork path, capsules, the cluster) is written once.
 *
 * <p>Thread-safe: launches on several threads at once call it.
 */
public interface Platform extends AutoCloseable {
    /** "kvm" or "process", as {@link PlatformChoice#name()}. */
    String name();

    /** The CPUID entries (kvm_cpuid_entry2 layout) a VM booted here runs with. */
    byte[] cpuidEntries();

    /** What vCPU state a capture holds here and a capsule may carry. */
    HostCaps caps();

    /** What a capsule written here records of this host, and what one restored here is checked against. */
    HostPlatform hostPlatform();

    /**
     * The machine for a booted guest: {@code memory} (shared RAM, the image and boot info
     * written) becomes its address space, every vCPU gets {@code entryRegs} (only vCPU 0
     * runs from them). On success the machine owns the memory; on failure this releases
     * what it made and leaves the memory to the caller.
     */
    Machine boot(GuestMemory memory, int vcpus, long[] entryRegs);

    /**
     * The machine for a VM restored from a capture: its RAM a private copy-on-write view of
     * {@code image} (nothing copied), each vCPU with its captured state. The caller keeps
     * its reference to the image. On failure everything made is released.
     *
     * @param name names the VM's host resources (its RAM's memfds)
     */
    Machine restore(String name, MachineState state, RuntimeImage image);

    /** A fork is about to launch {@code n} VMs here at once (a platform's pool may grow for the next). */
    default void expectLaunches(int n) {
    }

    /**
     * The VMM is closing: the platform makes nothing more ahead of need and releases what
     * it made so (its pools); a launch from now on makes what it needs inline.
     */
    default void closing() {
    }

    /** Releases what the platform holds (its pools, /dev/kvm); every machine has been released. */
    @Override
    void close();
}
