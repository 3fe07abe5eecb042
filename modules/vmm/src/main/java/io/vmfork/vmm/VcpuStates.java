package io.vmfork.vmm;

import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.x86.KvmFpu;
import io.vmfork.kvm.x86.KvmRegs;
import io.vmfork.kvm.x86.KvmSegment;
import io.vmfork.kvm.x86.KvmSregs;
import io.vmfork.kvm.x86.KvmVcpuEvents;
import io.vmfork.kvm.x86.KvmXcrs;
import io.vmfork.vmm.state.SegmentState;
import io.vmfork.vmm.state.SregsState;
import io.vmfork.vmm.state.VcpuState;
import java.util.ArrayList;
import java.util.List;

/** Saves a vCPU's state from KVM into a {@link VcpuState} and restores it into another vCPU. */
final class VcpuStates {
    /**
     * What this host can save and restore, decided once per VMM.
     *
     * @param xsave     KVM_GET/SET_XSAVE exist: the whole XSAVE area is carried
     * @param xsaveSize bytes of a vCPU's XSAVE area (4 KiB, or KVM_CAP_XSAVE2's size)
     * @param xsave2    KVM_GET_XSAVE2 exists (needed where the area exceeds 4 KiB)
     */
    record HostCaps(boolean xsave, int xsaveSize, boolean xsave2, boolean xcrs, int[] msrIndices) {
    }

    private VcpuStates() {
    }

    /** The vCPU must not be running (its thread parked, blocked in a hypercall, or it is the caller). */
    static VcpuState capture(KvmVcpu v, HostCaps caps) {
        long[] regs = v.getRegs().toArray();
        SregsState sregs = toState(v.getSregs());
        VcpuState.FpuFormat format;
        byte[] fpu;
        if (caps.xsave()) {
            format = VcpuState.FpuFormat.XSAVE;
            fpu = caps.xsave2() ? v.getXsave2(caps.xsaveSize()) : v.getXsave();
        } else {
            format = VcpuState.FpuFormat.FXSAVE;
            fpu = v.getFpu().bytes;
        }
        long xcr0 = 0;
        if (caps.xcrs()) {
            KvmXcrs x = v.getXcrs();
            for (int i = 0; i < x.nrXcrs; i++) {
                if (x.xcrs[i].xcr == 0) {
                    xcr0 = x.xcrs[i].value;
                }
            }
        }
        int[] msrs = caps.msrIndices();
        long[] values = v.getMsrs(msrs);
        byte[] events = v.getVcpuEvents().bytes.clone();
        int mp = v.getMpState();
        return new VcpuState(v.index(), regs, sregs, format, fpu, xcr0, msrs, values, events, mp);
    }

    /**
     * Ordering requirements: CPUID is set by the caller before this (KVM checks CR4 and
     * XCR0 bits against it). SREGS before REGS (the mode decides how RIP/RFLAGS are
     * read), XCRS before XSAVE (XSTATE_BV is checked against XCR0), MSRs after both (the
     * TSC write, last in the list, fixes the offset from the time of restore), then
     * pending events, then MP state.
     */
    static void restore(KvmVcpu v, VcpuState s, HostCaps caps) {
        v.setSregs(toKvm(s.sregs()));
        KvmRegs r = new KvmRegs();
        r.fromArray(s.regs());
        v.setRegs(r);
        if (caps.xcrs() && s.xcr0() != 0) {
            KvmXcrs x = new KvmXcrs();
            x.nrXcrs = 1;
            x.xcrs[0].xcr = 0;
            x.xcrs[0].value = s.xcr0();
            v.setXcrs(x);
        }
        switch (s.fpuFormat()) {
            case XSAVE -> {
                if (!caps.xsave()) {
                    throw new LaunchException("the saved FPU state is in XSAVE format, which this host cannot restore");
                }
                byte[] area = s.fpu();
                if (area.length > caps.xsaveSize()) {
                    throw new LaunchException("the saved XSAVE area has " + area.length
                            + " bytes, more than this host's " + caps.xsaveSize());
                }
                v.setXsave(area, caps.xsaveSize());
            }
            case FXSAVE -> {
                KvmFpu f = new KvmFpu();
                byte[] b = s.fpu();
                if (b.length != KvmFpu.SIZE) {
                    throw new LaunchException("saved FXSAVE state has " + b.length + " bytes, expected " + KvmFpu.SIZE);
                }
                System.arraycopy(b, 0, f.bytes, 0, b.length);
                v.setFpu(f);
            }
        }
        v.setMsrs(s.msrIndices(), s.msrValues());
        KvmVcpuEvents e = new KvmVcpuEvents();
        byte[] eb = s.events();
        System.arraycopy(eb, 0, e.bytes, 0, Math.min(eb.length, KvmVcpuEvents.SIZE));
        v.setVcpuEvents(e);
        v.setMpState(s.mpState());
    }

    static SregsState toState(KvmSregs s) {
        List<SegmentState> segs = new ArrayList<>();
        for (KvmSegment g : s.segments()) {
            segs.add(new SegmentState(g.base, g.limit, g.selector & 0xffff, g.type, g.present, g.dpl, g.db, g.s, g.l,
                    g.g, g.avl, g.unusable));
        }
        return new SregsState(segs, s.gdt.base, s.gdt.limit & 0xffff, s.idt.base, s.idt.limit & 0xffff, s.cr0, s.cr2,
                s.cr3, s.cr4, s.cr8, s.efer, s.apicBase, s.interruptBitmap);
    }

    static KvmSregs toKvm(SregsState st) {
        KvmSregs s = new KvmSregs();
        KvmSegment[] segs = s.segments();
        for (int i = 0; i < SregsState.SEGMENTS; i++) {
            SegmentState g = st.segments().get(i);
            segs[i].set(g.base(), g.limit(), g.selector(), g.type(), g.present(), g.dpl(), g.db(), g.s(), g.l(), g.g(),
                    g.avl(), g.unusable());
        }
        s.gdt.base = st.gdtBase();
        s.gdt.limit = (short) st.gdtLimit();
        s.idt.base = st.idtBase();
        s.idt.limit = (short) st.idtLimit();
        s.cr0 = st.cr0();
        s.cr2 = st.cr2();
        s.cr3 = st.cr3();
        s.cr4 = st.cr4();
        s.cr8 = st.cr8();
        s.efer = st.efer();
        s.apicBase = st.apicBase();
        s.interruptBitmap = st.interruptBitmap();
        return s;
    }
}
