package io.vmfork.vmm.state;

import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.arch.KvmCpuPart;
import java.util.Objects;

/**
 * One vCPU's state: its architecture-neutral {@link CpuState}, what only a KVM vCPU has
 * beyond it ({@link KvmCpuPart}, null when another platform took the state), and whether
 * the guest has started it. Live host resources (fds, kvm_run, threads) are never part of it.
 *
 * @param kvm     the KVM part, or null: a restore on KVM then takes the guest model's values
 * @param started whether the vCPU runs guest code: vCPU 0 always; a secondary vCPU once the guest started
 *                it (VCPU_START), until it stops (VCPU_STOP). A vCPU that is not started keeps its
 *                registers but is not entered until the guest starts it, which sets them anew.
 */
public record VcpuState(int index, CpuState cpu, KvmCpuPart kvm, boolean started) {
    public VcpuState {
        Objects.requireNonNull(cpu, "cpu");
    }

    /** A running vCPU's state (every vCPU of a one-vCPU VM). */
    public VcpuState(int index, CpuState cpu, KvmCpuPart kvm) {
        this(index, cpu, kvm, true);
    }

    /** The general registers, RIP and RFLAGS ({@link CpuState#regs}). */
    public long[] regs() {
        return cpu.regs();
    }

    public long rip() {
        return cpu.rip();
    }

    /** The same state with some registers changed (a fork child's RAX, a rewound RIP). */
    public VcpuState withRegs(long[] newRegs) {
        return new VcpuState(index, cpu.withRegs(newRegs), kvm, started);
    }

    /** The same state, started or not. */
    public VcpuState withStarted(boolean s) {
        return new VcpuState(index, cpu, kvm, s);
    }

    /** The same state without its KVM part, as another platform would have taken it. */
    public VcpuState withoutKvmPart() {
        return new VcpuState(index, cpu, null, started);
    }

    @Override
    public String toString() {
        return String.format("VcpuState[%d%s %s%s]", index, started ? "" : " not started", cpu,
                kvm == null ? "" : " +kvm");
    }
}
