package io.vmfork.vmm.platform.process;

import io.vmfork.os.HostHelper;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.state.VcpuState;
import java.util.Arrays;

/**
 * A process-platform vCPU's state as a {@link VcpuState}, and back: what a CPL3 thread has
 * of its own — the general registers, RIP, RFLAGS, FS and GS bases (struct
 * user_regs_struct, PTRACE_GETREGS), the XSAVE area (PTRACE_GETREGSET NT_X86_XSTATE) and
 * the host's XCR0 — is the architecture-neutral {@link CpuState}, the whole of it. No KVM
 * part: a KVM host restoring this state takes the guest model's segments, control
 * registers and MSRs, as a boot there sets them. A KVM part in a state restored here is
 * dropped (the reader has refused one whose loss the guest could notice, see
 * {@link io.vmfork.vmm.x86.GuestModel#check}): the thread keeps the host's selectors and
 * reads the host's TSC.
 */
public final class ProcessStates {
    private ProcessStates() {
    }

    /** Captures vCPU {@code index}; on the vCPU's own thread, the vCPU out of the guest. */
    public static VcpuState capture(ProcessExecContext context, int xstateSize, boolean started) {
        long[] regs = context.regs();
        long[] bases = context.segmentBases();
        byte[] xstate = context.xstate(xstateSize);
        if (xstate.length < CpuState.XSAVE_MIN_BYTES) {
            // Stored as KVM's kvm_xsave region: the same standard-format layout, padded to 4 KiB.
            xstate = Arrays.copyOf(xstate, CpuState.XSAVE_MIN_BYTES);
        }
        CpuState cpu = new CpuState(regs, bases[0], bases[1], CpuState.FpuFormat.XSAVE, xstate,
                HostHelper.hostXcr0());
        return new VcpuState(context.index(), cpu, null, started);
    }

    /** Leaves {@code s} pending on {@code context}, to be set when its thread attaches. */
    public static void restore(ProcessExecContext context, VcpuState s, int xstateSize) {
        CpuState c = s.cpu();
        byte[] xstate = null;
        if (c.fpuFormat() == CpuState.FpuFormat.XSAVE) {
            byte[] area = c.fpu();
            // A KVM capture carries a 4 KiB kvm_xsave region (or KVM_GET_XSAVE2's larger one): the same
            // layout, of which the thread takes the host's size.
            xstate = area.length > xstateSize ? Arrays.copyOf(area, xstateSize) : area;
        }
        context.restoreState(c.regs(), c.fsBase(), c.gsBase(), xstate);
    }
}
