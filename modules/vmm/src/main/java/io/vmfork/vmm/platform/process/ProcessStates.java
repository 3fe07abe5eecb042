package io.vmfork.vmm.platform.process;

import io.vmfork.kvm.sys.HostHelper;
import io.vmfork.vmm.state.SegmentState;
import io.vmfork.vmm.state.SregsState;
import io.vmfork.vmm.state.VcpuState;
import io.vmfork.vmm.x86.GuestModel;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * A process-platform vCPU's state as a {@link VcpuState}, and back. What a CPL3 thread has
 * of its own (the general registers, RIP, RFLAGS, FS and GS bases, the XSAVE area) is
 * stored as it is; what the guest model fixes (segments, control registers, EFER) is the
 * model's, as a KVM vCPU of the same guest holds it, so that the state reads like a KVM
 * capture. The MSR list is empty: a CPL3 thread has no MSRs of its own but the FS/GS bases.
 */
public final class ProcessStates {
    private static final int FS = 3, GS = 4;
    private static final int EVENTS_BYTES = 64;
    private static final long CPUID_OSXSAVE = 1L << 27;
    /**
     * The XSAVE area is stored at least this large: KVM's kvm_xsave region, the same
     * standard-format layout padded to 4 KiB, which is what a capsule carries.
     */
    private static final int KVM_XSAVE_BYTES = 4096;

    private ProcessStates() {
    }

    /** Captures vCPU {@code index}; on the vCPU's own thread, the vCPU out of the guest. */
    public static VcpuState capture(ProcessExecContext context, int xstateSize) {
        long[] regs = context.regs();
        long[] bases = context.segmentBases();
        byte[] xstate = context.xstate(xstateSize);
        if (xstate.length < KVM_XSAVE_BYTES) {
            xstate = Arrays.copyOf(xstate, KVM_XSAVE_BYTES);
        }
        return new VcpuState(context.index(), regs, sregs(context.index(), bases[0], bases[1]),
                VcpuState.FpuFormat.XSAVE, xstate, HostHelper.hostXcr0(), new int[0], new long[0],
                new byte[EVENTS_BYTES], GuestModel.MP_STATE_RUNNABLE);
    }

    /** Leaves {@code s} pending on {@code context}, to be set when its thread attaches. */
    public static void restore(ProcessExecContext context, VcpuState s, int xstateSize) {
        byte[] xstate = null;
        if (s.fpuFormat() == VcpuState.FpuFormat.XSAVE) {
            byte[] area = s.fpu();
            // A KVM capture carries a 4 KiB kvm_xsave region; the same layout, padded.
            xstate = area.length > xstateSize ? Arrays.copyOf(area, xstateSize) : area;
        }
        List<SegmentState> seg = s.sregs().segments();
        context.restoreState(s.regs(), seg.get(FS).base(), seg.get(GS).base(), xstate);
    }

    /** The guest model's segment and control registers, with the thread's FS and GS bases. */
    static SregsState sregs(int index, long fsBase, long gsBase) {
        List<SegmentState> segs = new ArrayList<>();
        SegmentState d = GuestModel.USER_DATA;
        segs.add(GuestModel.USER_CODE); // cs
        segs.add(d); // ds
        segs.add(d); // es
        segs.add(withBase(d, fsBase));
        segs.add(withBase(d, gsBase));
        segs.add(d); // ss
        segs.add(GuestModel.RESET_TR);
        segs.add(GuestModel.RESET_LDT);
        boolean osxsave = (HostHelper.hostCpuid(1, 0)[2] & CPUID_OSXSAVE) != 0;
        boolean fsgsbase = (HostHelper.hostCpuid(7, 0)[1] & 1) != 0;
        return new SregsState(segs, 0, GuestModel.RESET_TABLE_LIMIT, 0, GuestModel.RESET_TABLE_LIMIT, GuestModel.CR0, 0,
                GuestModel.CR3, GuestModel.cr4(osxsave, fsgsbase), 0, GuestModel.EFER,
                index == 0 ? GuestModel.APIC_BASE_BSP : GuestModel.APIC_BASE_AP, new long[4]);
    }

    private static SegmentState withBase(SegmentState s, long base) {
        return new SegmentState(base, s.limit(), s.selector(), s.type(), s.present(), s.dpl(), s.db(), s.s(), s.l(),
                s.g(), s.avl(), s.unusable());
    }
}
