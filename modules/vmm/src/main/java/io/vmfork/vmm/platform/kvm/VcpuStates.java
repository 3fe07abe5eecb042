package io.vmfork.vmm.platform.kvm;

import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.x86.KvmFpu;
import io.vmfork.kvm.x86.KvmSegment;
import io.vmfork.kvm.x86.KvmSregs;
import io.vmfork.kvm.x86.KvmVcpuEvents;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.arch.SegmentState;
import io.vmfork.vmm.arch.SregsState;
import io.vmfork.vmm.LaunchException;
import io.vmfork.vmm.platform.HostCaps;
import io.vmfork.vmm.state.VcpuState;
import io.vmfork.vmm.x86.GuestModel;
import io.vmfork.vmm.x86.KvmCpuStates;
import java.util.ArrayList;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Saves a KVM vCPU's state into a {@link VcpuState} and restores one into another vCPU,
 * through {@link KvmCpuStates}: KVM's registers become the architecture-neutral CPU state
 * and the KVM part, and the model's values fill in the rest on restore, so a state the
 * process platform took restores here too.
 */
public final class VcpuStates {
    private static final Logger log = LoggerFactory.getLogger(VcpuStates.class);

    private VcpuStates() {
    }

    /**
     * The vCPU must not be running (its thread parked, blocked in a hypercall, or it is the
     * caller). {@code cpuidEntries}: the VM's CPUID, which decides the CR4 the model gives it.
     */
    public static VcpuState capture(KvmVcpu v, HostCaps caps, byte[] cpuidEntries, boolean started) {
        long[] regs = v.getRegsArray();
        SregsState sregs = fromBytes(v.getSregsBytes());
        CpuState.FpuFormat format;
        byte[] fpu;
        if (caps.xsave()) {
            format = CpuState.FpuFormat.XSAVE;
            fpu = caps.xsave2() ? v.getXsave2(caps.xsaveSize()) : v.getXsave();
        } else {
            format = CpuState.FpuFormat.FXSAVE;
            fpu = v.getFpu().bytes;
        }
        long xcr0 = caps.xcrs() ? v.getXcr0() : 0;
        int[] msrs = caps.msrIndices();
        long[] values = v.getMsrs(msrs);
        byte[] events = v.getVcpuEventsBytes();
        int mp = v.getMpStateRaw();
        List<GuestModel.Violation> outside = new ArrayList<>();
        VcpuState s = KvmCpuStates.split(v.index(), new KvmCpuStates.KvmView(regs, sregs, format, fpu, xcr0, msrs,
                values, events, mp), started, cpuidEntries, "vcpu " + v.index(), outside);
        if (!outside.isEmpty()) {
            // A CPL3 guest cannot change these; a restore gives it the model's values again.
            log.warn("vCPU {} has state outside the guest model, which a copy does not keep: {}", v.index(), outside);
        }
        return s;
    }

    /**
     * Ordering requirements: CPUID is set by the caller before this (KVM checks CR4 and
     * XCR0 bits against it). SREGS before REGS (the mode decides how RIP/RFLAGS are
     * read), XCRS before XSAVE (XSTATE_BV is checked against XCR0), MSRs after both (the
     * TSC write, last in the list, fixes the offset from the time of restore), then
     * pending events, then MP state.
     */
    public static void restore(KvmVcpu v, VcpuState state, byte[] cpuidEntries, HostCaps caps) {
        KvmCpuStates.KvmView s = KvmCpuStates.join(state, cpuidEntries, caps.msrIndices());
        v.setSregsBytes(toBytes(s.sregs()));
        v.setRegsArray(s.regs());
        if (caps.xcrs() && s.xcr0() != 0) {
            v.setXcr0(s.xcr0());
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
        byte[] eb = s.events();
        v.setVcpuEventsBytes(eb.length > KvmVcpuEvents.SIZE ? java.util.Arrays.copyOf(eb, KvmVcpuEvents.SIZE) : eb);
        v.setMpStateRaw(s.mpState());
    }

    // struct kvm_sregs (arch/x86/include/uapi/asm/kvm.h): 8 kvm_segment of 24 bytes (cs ds es
    // fs gs ss tr ldt), 2 kvm_dtable of 16 (gdt idt), cr0 cr2 cr3 cr4 cr8 efer apic_base,
    // interrupt_bitmap[4]; 312 bytes. kvm_segment: base u64, limit u32, selector u16, then
    // type present dpl db s l g avl unusable padding, one byte each.
    private static final int SEGMENT_BYTES = 24;
    private static final int GDT_AT = 192, IDT_AT = 208, CR0_AT = 224, BITMAP_AT = 280;

    /** A raw struct kvm_sregs (KVM_GET_SREGS, host byte order) as a state. */
    public static SregsState fromBytes(byte[] raw) {
        java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(raw).order(java.nio.ByteOrder.nativeOrder());
        List<SegmentState> segs = new ArrayList<>(SregsState.SEGMENTS);
        for (int i = 0; i < SregsState.SEGMENTS; i++) {
            int at = i * SEGMENT_BYTES;
            segs.add(new SegmentState(b.getLong(at), b.getInt(at + 8), b.getShort(at + 12) & 0xffff, b.get(at + 14),
                    b.get(at + 15), b.get(at + 16), b.get(at + 17), b.get(at + 18), b.get(at + 19), b.get(at + 20),
                    b.get(at + 21), b.get(at + 22)));
        }
        long[] bitmap = new long[4];
        for (int i = 0; i < 4; i++) {
            bitmap[i] = b.getLong(BITMAP_AT + 8 * i);
        }
        return new SregsState(segs, b.getLong(GDT_AT), b.getShort(GDT_AT + 8) & 0xffff, b.getLong(IDT_AT),
                b.getShort(IDT_AT + 8) & 0xffff, b.getLong(CR0_AT), b.getLong(CR0_AT + 8), b.getLong(CR0_AT + 16),
                b.getLong(CR0_AT + 24), b.getLong(CR0_AT + 32), b.getLong(CR0_AT + 40), b.getLong(CR0_AT + 48), bitmap);
    }

    /** A state as a raw struct kvm_sregs for KVM_SET_SREGS. */
    public static byte[] toBytes(SregsState st) {
        byte[] raw = new byte[KvmSregs.SIZE];
        java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(raw).order(java.nio.ByteOrder.nativeOrder());
        for (int i = 0; i < SregsState.SEGMENTS; i++) {
            SegmentState g = st.segments().get(i);
            int at = i * SEGMENT_BYTES;
            b.putLong(at, g.base()).putInt(at + 8, (int) g.limit()).putShort(at + 12, (short) g.selector())
                    .put(at + 14, (byte) g.type()).put(at + 15, (byte) g.present()).put(at + 16, (byte) g.dpl())
                    .put(at + 17, (byte) g.db()).put(at + 18, (byte) g.s()).put(at + 19, (byte) g.l())
                    .put(at + 20, (byte) g.g()).put(at + 21, (byte) g.avl()).put(at + 22, (byte) g.unusable());
        }
        b.putLong(GDT_AT, st.gdtBase()).putShort(GDT_AT + 8, (short) st.gdtLimit());
        b.putLong(IDT_AT, st.idtBase()).putShort(IDT_AT + 8, (short) st.idtLimit());
        long[] cr = {st.cr0(), st.cr2(), st.cr3(), st.cr4(), st.cr8(), st.efer(), st.apicBase()};
        for (int i = 0; i < cr.length; i++) {
            b.putLong(CR0_AT + 8 * i, cr[i]);
        }
        long[] bitmap = st.interruptBitmap();
        for (int i = 0; i < 4; i++) {
            b.putLong(BITMAP_AT + 8 * i, bitmap[i]);
        }
        return raw;
    }

    /** The JNA Structure's view (boot sets sregs through it); the fork path uses {@link #fromBytes}. */
    public static SregsState toState(KvmSregs s) {
        List<SegmentState> segs = new ArrayList<>();
        for (KvmSegment g : s.segments()) {
            segs.add(new SegmentState(g.base, g.limit, g.selector & 0xffff, g.type, g.present, g.dpl, g.db, g.s, g.l,
                    g.g, g.avl, g.unusable));
        }
        return new SregsState(segs, s.gdt.base, s.gdt.limit & 0xffff, s.idt.base, s.idt.limit & 0xffff, s.cr0, s.cr2,
                s.cr3, s.cr4, s.cr8, s.efer, s.apicBase, s.interruptBitmap);
    }
}
