package io.vmfork.vmm.capsule;

import com.google.protobuf.ByteString;
import io.vmfork.proto.CpuidEntry;
import io.vmfork.proto.FpuFormat;
import io.vmfork.proto.Msr;
import io.vmfork.proto.Regs;
import io.vmfork.proto.Segment;
import io.vmfork.proto.Sregs;
import io.vmfork.proto.VcpuEvents;
import io.vmfork.vmm.VmIdentity;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.arch.KvmCpuPart;
import io.vmfork.vmm.arch.SegmentState;
import io.vmfork.vmm.arch.SregsState;
import io.vmfork.vmm.state.DeviceState;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.VcpuState;
import io.vmfork.vmm.x86.GuestModel;
import io.vmfork.vmm.x86.KvmCpuStates;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;

/**
 * Maps the VMM's state records to their Protobuf messages and back, field by field. The
 * proto messages share the records' names, so they are written here with their package.
 *
 * <p>Encoding refuses (IllegalArgumentException) a state the format cannot hold exactly,
 * such as non-zero reserved bytes in kvm_vcpu_events, rather than dropping data. Decoding
 * refuses (CapsuleFormatException, naming the field) anything that would not fit the KVM
 * field it goes into, so that a capsule never sets a register to a truncated value.
 *
 * <p>A vCPU is written as format version 4 has it: the neutral {@code CpuState} and, where
 * KVM took it, the {@code KvmCpuPart}. A version 3 vCPU (KVM's registers, struct by struct)
 * is read through {@link KvmCpuStates#split}, and refused where what the guest model fixes
 * is not the model's: the neutral form cannot hold it.
 */
public final class StateCodec {
    /** sizeof(struct kvm_vcpu_events). */
    public static final int VCPU_EVENTS_BYTES = 64;
    /** sizeof(struct kvm_xsave): the XSAVE area KVM_GET_XSAVE returns, and the least any XSAVE state has. */
    public static final int XSAVE_BYTES = 4096;
    /**
     * The most an XSAVE area may have: KVM_GET_XSAVE2 returns more than 4 KiB where the
     * guest may use components beyond it (AMX tile data makes 11 KiB); 64 KiB leaves room.
     */
    public static final int MAX_XSAVE_BYTES = 64 * 1024;
    /** sizeof(struct kvm_fpu). */
    public static final int FXSAVE_BYTES = 416;
    private static final int U8 = 0xff;
    private static final int U16 = 0xffff;
    private static final int INTERRUPT_BITMAP_WORDS = 4;
    private static final String[] SEGMENT_NAMES = {"cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"};

    private StateCodec() {
    }

    // ---------------------------------------------------------------- machine state

    public static io.vmfork.proto.MachineState encode(MachineState s) {
        io.vmfork.proto.MachineState.Builder b = io.vmfork.proto.MachineState.newBuilder()
                .setIdentity(encode(s.identity()))
                .setMemorySize(s.memorySize())
                .addAllCpuid(encodeCpuid(s.cpuidEntries()))
                .setClockNs(s.clockNs())
                .setDevices(encode(s.devices()));
        for (VcpuState v : s.vcpus()) {
            b.addVcpus(encode(v));
        }
        return b.build();
    }

    /** A state of the current format version. */
    public static MachineState decode(io.vmfork.proto.MachineState p) {
        return decode(p, CapsuleFormat.CURRENT_VERSION);
    }

    /** A state of format {@code version}: the current one, or the one before it (vCPUs in KVM's terms). */
    public static MachineState decode(io.vmfork.proto.MachineState p, int version) {
        require(p.hasIdentity(), "state.identity is missing");
        require(p.hasDevices(), "state.devices is missing");
        byte[] cpuid = decodeCpuid(p.getCpuidList());
        List<VcpuState> vcpus = new ArrayList<>(p.getVcpusCount());
        List<GuestModel.Violation> outside = new ArrayList<>();
        for (int i = 0; i < p.getVcpusCount(); i++) {
            String where = "state.vcpus[" + i + "]";
            vcpus.add(version >= CapsuleFormat.NEUTRAL_CPU_VERSION ? decodeVcpu(p.getVcpus(i), where)
                    : decodeKvmVcpu(p.getVcpus(i), cpuid, where, outside));
        }
        if (!outside.isEmpty()) {
            List<String> what = outside.stream().map(GuestModel.Violation::toString).toList();
            throw new CapsuleFormatException("not a state a vmfork guest can have (format version " + version
                    + " stores what the guest model fixes, and it must be the model's): " + String.join("; ", what));
        }
        return new MachineState(decode(p.getIdentity()), p.getMemorySize(), cpuid, p.getClockNs(), vcpus,
                decode(p.getDevices()));
    }

    // ---------------------------------------------------------------- identity

    public static io.vmfork.proto.VmIdentity encode(VmIdentity id) {
        return io.vmfork.proto.VmIdentity.newBuilder()
                .setVmId(id.vmId())
                .setParentId(id.parentId())
                .setHostId(id.hostId())
                .setForkGeneration(id.forkGeneration())
                .setVmType(id.vmType())
                .build();
    }

    public static VmIdentity decode(io.vmfork.proto.VmIdentity p) {
        return new VmIdentity(p.getVmId(), p.getParentId(), p.getHostId(), p.getForkGeneration(), p.getVmType());
    }

    // ---------------------------------------------------------------- cpuid

    /** kvm_cpuid_entry2 bytes (40 an entry) to messages; the padding must be zero, as KVM leaves it. */
    public static List<CpuidEntry> encodeCpuid(byte[] entries) {
        if (entries.length % CapsuleFormat.CPUID_ENTRY_BYTES != 0) {
            throw new IllegalArgumentException("cpuid entries are " + entries.length + " bytes, not a multiple of "
                    + CapsuleFormat.CPUID_ENTRY_BYTES);
        }
        ByteBuffer b = ByteBuffer.wrap(entries).order(ByteOrder.LITTLE_ENDIAN);
        List<CpuidEntry> out = new ArrayList<>(entries.length / CapsuleFormat.CPUID_ENTRY_BYTES);
        for (int off = 0; off < entries.length; off += CapsuleFormat.CPUID_ENTRY_BYTES) {
            for (int pad = 28; pad < CapsuleFormat.CPUID_ENTRY_BYTES; pad += 4) {
                if (b.getInt(off + pad) != 0) {
                    throw new IllegalArgumentException("cpuid entry " + off / CapsuleFormat.CPUID_ENTRY_BYTES
                            + " has non-zero padding; the capsule format does not keep it");
                }
            }
            out.add(CpuidEntry.newBuilder()
                    .setFunction(b.getInt(off))
                    .setIndex(b.getInt(off + 4))
                    .setFlags(b.getInt(off + 8))
                    .setEax(b.getInt(off + 12))
                    .setEbx(b.getInt(off + 16))
                    .setEcx(b.getInt(off + 20))
                    .setEdx(b.getInt(off + 24))
                    .build());
        }
        return out;
    }

    /** Messages back to kvm_cpuid_entry2 bytes, padding zeroed. */
    public static byte[] decodeCpuid(List<CpuidEntry> entries) {
        ByteBuffer b = ByteBuffer.allocate(entries.size() * CapsuleFormat.CPUID_ENTRY_BYTES)
                .order(ByteOrder.LITTLE_ENDIAN);
        for (CpuidEntry e : entries) {
            b.putInt(e.getFunction()).putInt(e.getIndex()).putInt(e.getFlags()).putInt(e.getEax()).putInt(e.getEbx())
                    .putInt(e.getEcx()).putInt(e.getEdx()).putInt(0).putInt(0).putInt(0);
        }
        return b.array();
    }

    // ---------------------------------------------------------------- vCPU

    public static io.vmfork.proto.VcpuState encode(VcpuState v) {
        io.vmfork.proto.VcpuState.Builder b = io.vmfork.proto.VcpuState.newBuilder()
                .setIndex(v.index())
                .setCpu(encode(v.cpu(), "vcpu " + v.index()))
                .setNotStarted(!v.started());
        if (v.kvm() != null) {
            b.setKvm(encode(v.kvm()));
        }
        return b.build();
    }

    public static VcpuState decode(io.vmfork.proto.VcpuState p) {
        return decodeVcpu(p, "vcpu");
    }

    private static VcpuState decodeVcpu(io.vmfork.proto.VcpuState p, String where) {
        require(p.getIndex() >= 0, where + ".index " + Integer.toUnsignedString(p.getIndex()) + " is out of range");
        require(p.hasCpu(), where + ".cpu is missing");
        // Version 3's fields: a version 4 writer never sets them, and a reader must not guess which wins.
        require(!p.hasRegs() && !p.hasSregs() && p.getFpuFormatValue() == 0 && p.getFpu().isEmpty()
                && p.getXcr0() == 0 && p.getMsrsCount() == 0 && !p.hasEvents() && p.getMpState() == 0,
                where + " has fields of format version 3 (regs, sregs, fpu_format, fpu, xcr0, msrs, events, mp_state),"
                        + " which version 4 holds in cpu and kvm");
        CpuState cpu = decode(p.getCpu(), where + ".cpu");
        KvmCpuPart kvm = p.hasKvm() ? decode(p.getKvm(), where + ".kvm") : null;
        return new VcpuState(p.getIndex(), cpu, kvm, !p.getNotStarted());
    }

    /** A version 3 vCPU: KVM's registers, split into the CPU state and the KVM part; what differs from the model goes to {@code outside}. */
    private static VcpuState decodeKvmVcpu(io.vmfork.proto.VcpuState p, byte[] cpuid, String where,
            List<GuestModel.Violation> outside) {
        require(p.hasRegs(), where + ".regs is missing");
        require(p.hasSregs(), where + ".sregs is missing");
        require(p.hasEvents(), where + ".events is missing");
        require(p.getIndex() >= 0, where + ".index " + Integer.toUnsignedString(p.getIndex()) + " is out of range");
        require(!p.hasCpu() && !p.hasKvm(), where + " has cpu or kvm, which format version 3 does not define");
        CpuState.FpuFormat format = decode(p.getFpuFormat(), where + ".fpu_format");
        require(fpuSizeFits(format, p.getFpu().size()),
                where + ".fpu is " + p.getFpu().size() + " bytes, " + format + " needs " + fpuSizeRule(format));
        int n = p.getMsrsCount();
        int[] idx = new int[n];
        long[] val = new long[n];
        for (int i = 0; i < n; i++) {
            idx[i] = p.getMsrs(i).getIndex();
            val[i] = p.getMsrs(i).getValue();
        }
        KvmCpuStates.KvmView k = new KvmCpuStates.KvmView(decodeRegs(p.getRegs()),
                decodeSregs(p.getSregs(), where + ".sregs"), format, p.getFpu().toByteArray(), p.getXcr0(), idx, val,
                decodeEvents(p.getEvents(), where + ".events"), p.getMpState());
        return KvmCpuStates.split(p.getIndex(), k, !p.getNotStarted(), cpuid, where, outside);
    }

    // ---------------------------------------------------------------- CPU state

    public static io.vmfork.proto.CpuState encode(CpuState c) {
        return encode(c, "cpu");
    }

    private static io.vmfork.proto.CpuState encode(CpuState c, String where) {
        byte[] fpu = c.fpu();
        if (!fpuSizeFits(c.fpuFormat(), fpu.length)) {
            throw new IllegalArgumentException(where + ": " + c.fpuFormat() + " state is " + fpu.length
                    + " bytes, expected " + fpuSizeRule(c.fpuFormat()));
        }
        return io.vmfork.proto.CpuState.newBuilder()
                .setRegs(encodeRegs(c.regs()))
                .setFsBase(c.fsBase())
                .setGsBase(c.gsBase())
                .setFpuFormat(encode(c.fpuFormat()))
                .setFpu(ByteString.copyFrom(fpu))
                .setXcr0(c.xcr0())
                .build();
    }

    public static CpuState decode(io.vmfork.proto.CpuState p) {
        return decode(p, "cpu");
    }

    private static CpuState decode(io.vmfork.proto.CpuState p, String where) {
        require(p.hasRegs(), where + ".regs is missing");
        CpuState.FpuFormat format = decode(p.getFpuFormat(), where + ".fpu_format");
        require(fpuSizeFits(format, p.getFpu().size()),
                where + ".fpu is " + p.getFpu().size() + " bytes, " + format + " needs " + fpuSizeRule(format));
        return new CpuState(decodeRegs(p.getRegs()), p.getFsBase(), p.getGsBase(), format, p.getFpu().toByteArray(),
                p.getXcr0());
    }

    // ---------------------------------------------------------------- KVM part

    public static io.vmfork.proto.KvmCpuPart encode(KvmCpuPart k) {
        List<SegmentState> d = k.dataSegments();
        io.vmfork.proto.KvmCpuPart.Builder b = io.vmfork.proto.KvmCpuPart.newBuilder()
                .setDs(encode(d.get(KvmCpuPart.DS))).setEs(encode(d.get(KvmCpuPart.ES)))
                .setFs(encode(d.get(KvmCpuPart.FS))).setGs(encode(d.get(KvmCpuPart.GS)))
                .setCr2(k.cr2())
                .setEvents(encodeEvents(k.events()))
                .setMpState(k.mpState());
        int[] idx = k.msrIndices();
        long[] val = k.msrValues();
        for (int i = 0; i < idx.length; i++) {
            b.addMsrs(Msr.newBuilder().setIndex(idx[i]).setValue(val[i]));
        }
        return b.build();
    }

    public static KvmCpuPart decode(io.vmfork.proto.KvmCpuPart p) {
        return decode(p, "kvm");
    }

    private static KvmCpuPart decode(io.vmfork.proto.KvmCpuPart p, String where) {
        require(p.hasDs(), where + ".ds is missing");
        require(p.hasEs(), where + ".es is missing");
        require(p.hasFs(), where + ".fs is missing");
        require(p.hasGs(), where + ".gs is missing");
        require(p.hasEvents(), where + ".events is missing");
        List<SegmentState> data = List.of(decodeSegment(p.getDs(), where + ".ds"),
                decodeSegment(p.getEs(), where + ".es"), decodeSegment(p.getFs(), where + ".fs"),
                decodeSegment(p.getGs(), where + ".gs"));
        int n = p.getMsrsCount();
        int[] idx = new int[n];
        long[] val = new long[n];
        for (int i = 0; i < n; i++) {
            idx[i] = p.getMsrs(i).getIndex();
            val[i] = p.getMsrs(i).getValue();
        }
        return new KvmCpuPart(data, p.getCr2(), idx, val, decodeEvents(p.getEvents(), where + ".events"),
                p.getMpState());
    }

    /** XSAVE: the 4 KiB kvm_xsave or the larger KVM_GET_XSAVE2 area; FXSAVE: exactly a kvm_fpu. */
    private static boolean fpuSizeFits(CpuState.FpuFormat f, int bytes) {
        return f == CpuState.FpuFormat.XSAVE ? bytes >= XSAVE_BYTES && bytes <= MAX_XSAVE_BYTES
                : bytes == FXSAVE_BYTES;
    }

    private static String fpuSizeRule(CpuState.FpuFormat f) {
        return f == CpuState.FpuFormat.XSAVE ? XSAVE_BYTES + " to " + MAX_XSAVE_BYTES : String.valueOf(FXSAVE_BYTES);
    }

    public static FpuFormat encode(CpuState.FpuFormat f) {
        return switch (f) {
            case XSAVE -> FpuFormat.FPU_FORMAT_XSAVE;
            case FXSAVE -> FpuFormat.FPU_FORMAT_FXSAVE;
        };
    }

    public static CpuState.FpuFormat decode(FpuFormat f) {
        return decode(f, "fpu_format");
    }

    private static CpuState.FpuFormat decode(FpuFormat f, String where) {
        return switch (f) {
            case FPU_FORMAT_XSAVE -> CpuState.FpuFormat.XSAVE;
            case FPU_FORMAT_FXSAVE -> CpuState.FpuFormat.FXSAVE;
            default -> throw new CapsuleFormatException(where + " " + f + " is not a known FPU format");
        };
    }

    // ---------------------------------------------------------------- kvm_regs

    /** The 18 values in CpuState order: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags. */
    public static Regs encodeRegs(long[] r) {
        if (r.length != CpuState.REGS) {
            throw new IllegalArgumentException("kvm_regs has 18 registers, got " + r.length);
        }
        return Regs.newBuilder()
                .setRax(r[0]).setRbx(r[1]).setRcx(r[2]).setRdx(r[3])
                .setRsi(r[4]).setRdi(r[5]).setRsp(r[6]).setRbp(r[7])
                .setR8(r[8]).setR9(r[9]).setR10(r[10]).setR11(r[11])
                .setR12(r[12]).setR13(r[13]).setR14(r[14]).setR15(r[15])
                .setRip(r[16]).setRflags(r[17])
                .build();
    }

    public static long[] decodeRegs(Regs p) {
        return new long[] {
            p.getRax(), p.getRbx(), p.getRcx(), p.getRdx(), p.getRsi(), p.getRdi(), p.getRsp(), p.getRbp(),
            p.getR8(), p.getR9(), p.getR10(), p.getR11(), p.getR12(), p.getR13(), p.getR14(), p.getR15(),
            p.getRip(), p.getRflags(),
        };
    }

    // ---------------------------------------------------------------- kvm_sregs

    public static Sregs encode(SregsState s) {
        List<SegmentState> seg = s.segments();
        Sregs.Builder b = Sregs.newBuilder()
                .setCs(encode(seg.get(0))).setDs(encode(seg.get(1))).setEs(encode(seg.get(2)))
                .setFs(encode(seg.get(3))).setGs(encode(seg.get(4))).setSs(encode(seg.get(5)))
                .setTr(encode(seg.get(6))).setLdt(encode(seg.get(7)))
                .setGdtBase(s.gdtBase()).setGdtLimit(s.gdtLimit())
                .setIdtBase(s.idtBase()).setIdtLimit(s.idtLimit())
                .setCr0(s.cr0()).setCr2(s.cr2()).setCr3(s.cr3()).setCr4(s.cr4()).setCr8(s.cr8())
                .setEfer(s.efer()).setApicBase(s.apicBase());
        for (long w : s.interruptBitmap()) {
            b.addInterruptBitmap(w);
        }
        return b.build();
    }

    public static SregsState decode(Sregs p) {
        return decodeSregs(p, "sregs");
    }

    private static SregsState decodeSregs(Sregs p, String where) {
        boolean[] present = {p.hasCs(), p.hasDs(), p.hasEs(), p.hasFs(), p.hasGs(), p.hasSs(), p.hasTr(), p.hasLdt()};
        for (int i = 0; i < present.length; i++) {
            require(present[i], where + "." + SEGMENT_NAMES[i] + " is missing");
        }
        require(p.getInterruptBitmapCount() == INTERRUPT_BITMAP_WORDS,
                where + ".interrupt_bitmap has " + p.getInterruptBitmapCount() + " words, kvm_sregs has 4");
        List<SegmentState> seg = List.of(
                decodeSegment(p.getCs(), where + ".cs"), decodeSegment(p.getDs(), where + ".ds"),
                decodeSegment(p.getEs(), where + ".es"), decodeSegment(p.getFs(), where + ".fs"),
                decodeSegment(p.getGs(), where + ".gs"), decodeSegment(p.getSs(), where + ".ss"),
                decodeSegment(p.getTr(), where + ".tr"), decodeSegment(p.getLdt(), where + ".ldt"));
        long[] bitmap = new long[INTERRUPT_BITMAP_WORDS];
        for (int i = 0; i < bitmap.length; i++) {
            bitmap[i] = p.getInterruptBitmap(i);
        }
        return new SregsState(seg, p.getGdtBase(), fits(p.getGdtLimit(), U16, where + ".gdt_limit"), p.getIdtBase(),
                fits(p.getIdtLimit(), U16, where + ".idt_limit"), p.getCr0(), p.getCr2(), p.getCr3(), p.getCr4(),
                p.getCr8(), p.getEfer(), p.getApicBase(), bitmap);
    }

    // ---------------------------------------------------------------- kvm_segment

    public static Segment encode(SegmentState s) {
        return Segment.newBuilder()
                .setBase(s.base()).setLimit(s.limit()).setSelector(s.selector())
                .setType(s.type()).setPresent(s.present()).setDpl(s.dpl()).setDb(s.db())
                .setS(s.s()).setL(s.l()).setG(s.g()).setAvl(s.avl()).setUnusable(s.unusable())
                .build();
    }

    public static SegmentState decode(Segment p) {
        return decodeSegment(p, "segment");
    }

    private static SegmentState decodeSegment(Segment p, String w) {
        return new SegmentState(p.getBase(), p.getLimit(), fits(p.getSelector(), U16, w + ".selector"),
                fits(p.getType(), U8, w + ".type"), fits(p.getPresent(), U8, w + ".present"),
                fits(p.getDpl(), U8, w + ".dpl"), fits(p.getDb(), U8, w + ".db"), fits(p.getS(), U8, w + ".s"),
                fits(p.getL(), U8, w + ".l"), fits(p.getG(), U8, w + ".g"), fits(p.getAvl(), U8, w + ".avl"),
                fits(p.getUnusable(), U8, w + ".unusable"));
    }

    // ---------------------------------------------------------------- kvm_vcpu_events

    /*
     * struct kvm_vcpu_events (include/uapi/linux/kvm.h, x86), 64 bytes:
     *   0 exception {u8 injected, nr, has_error_code, pending; u32 error_code}
     *   8 interrupt {u8 injected, nr, soft, shadow}
     *  12 nmi {u8 injected, pending, masked, pad}
     *  16 u32 sipi_vector    20 u32 flags
     *  24 smi {u8 smm, pending, smm_inside_nmi, latched_init}
     *  28 triple_fault {u8 pending}    29 u8 reserved[26]
     *  55 u8 exception_has_payload     56 u64 exception_payload
     * KVM_GET_VCPU_EVENTS zeroes the struct first (arch/x86/kvm/x86.c,
     * kvm_vcpu_ioctl_x86_get_vcpu_events), so pad and reserved are zero from a real vCPU.
     */
    private static final int EV_NMI_PAD = 15;
    private static final int EV_RESERVED = 29;
    private static final int EV_RESERVED_END = 55;

    public static VcpuEvents encodeEvents(byte[] raw) {
        if (raw.length != VCPU_EVENTS_BYTES) {
            throw new IllegalArgumentException("kvm_vcpu_events is 64 bytes, got " + raw.length);
        }
        boolean reservedClear = raw[EV_NMI_PAD] == 0;
        for (int i = EV_RESERVED; i < EV_RESERVED_END; i++) {
            reservedClear &= raw[i] == 0;
        }
        if (!reservedClear) {
            throw new IllegalArgumentException("kvm_vcpu_events has non-zero reserved bytes: a newer KVM layout"
                    + " that this capsule format cannot hold");
        }
        ByteBuffer b = ByteBuffer.wrap(raw).order(ByteOrder.LITTLE_ENDIAN);
        return VcpuEvents.newBuilder()
                .setExceptionInjected(u8(raw[0])).setExceptionNr(u8(raw[1]))
                .setExceptionHasErrorCode(u8(raw[2])).setExceptionPending(u8(raw[3]))
                .setExceptionErrorCode(b.getInt(4))
                .setInterruptInjected(u8(raw[8])).setInterruptNr(u8(raw[9]))
                .setInterruptSoft(u8(raw[10])).setInterruptShadow(u8(raw[11]))
                .setNmiInjected(u8(raw[12])).setNmiPending(u8(raw[13])).setNmiMasked(u8(raw[14]))
                .setSipiVector(b.getInt(16)).setFlags(b.getInt(20))
                .setSmiSmm(u8(raw[24])).setSmiPending(u8(raw[25]))
                .setSmiInsideNmi(u8(raw[26])).setSmiLatchedInit(u8(raw[27]))
                .setTripleFaultPending(u8(raw[28]))
                .setExceptionHasPayload(u8(raw[55])).setExceptionPayload(b.getLong(56))
                .build();
    }

    public static byte[] decodeEvents(VcpuEvents p) {
        return decodeEvents(p, "events");
    }

    private static byte[] decodeEvents(VcpuEvents p, String w) {
        ByteBuffer b = ByteBuffer.allocate(VCPU_EVENTS_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        b.put(0, b8(p.getExceptionInjected(), w + ".exception_injected"));
        b.put(1, b8(p.getExceptionNr(), w + ".exception_nr"));
        b.put(2, b8(p.getExceptionHasErrorCode(), w + ".exception_has_error_code"));
        b.put(3, b8(p.getExceptionPending(), w + ".exception_pending"));
        b.putInt(4, p.getExceptionErrorCode());
        b.put(8, b8(p.getInterruptInjected(), w + ".interrupt_injected"));
        b.put(9, b8(p.getInterruptNr(), w + ".interrupt_nr"));
        b.put(10, b8(p.getInterruptSoft(), w + ".interrupt_soft"));
        b.put(11, b8(p.getInterruptShadow(), w + ".interrupt_shadow"));
        b.put(12, b8(p.getNmiInjected(), w + ".nmi_injected"));
        b.put(13, b8(p.getNmiPending(), w + ".nmi_pending"));
        b.put(14, b8(p.getNmiMasked(), w + ".nmi_masked"));
        b.putInt(16, p.getSipiVector());
        b.putInt(20, p.getFlags());
        b.put(24, b8(p.getSmiSmm(), w + ".smi_smm"));
        b.put(25, b8(p.getSmiPending(), w + ".smi_pending"));
        b.put(26, b8(p.getSmiInsideNmi(), w + ".smi_inside_nmi"));
        b.put(27, b8(p.getSmiLatchedInit(), w + ".smi_latched_init"));
        b.put(28, b8(p.getTripleFaultPending(), w + ".triple_fault_pending"));
        b.put(55, b8(p.getExceptionHasPayload(), w + ".exception_has_payload"));
        b.putLong(56, p.getExceptionPayload());
        return b.array();
    }

    // ---------------------------------------------------------------- devices

    public static io.vmfork.proto.DeviceState encode(DeviceState d) {
        io.vmfork.proto.DeviceState.Builder b = io.vmfork.proto.DeviceState.newBuilder()
                .setConsoleBytesWritten(d.consoleBytesWritten())
                .setChannelClosed(d.channelClosed())
                .setReady(d.ready());
        for (byte[] r : d.queuedRequests()) {
            b.addQueuedRequests(ByteString.copyFrom(r));
        }
        return b.build();
    }

    public static DeviceState decode(io.vmfork.proto.DeviceState p) {
        List<byte[]> queued = new ArrayList<>(p.getQueuedRequestsCount());
        for (ByteString r : p.getQueuedRequestsList()) {
            queued.add(r.toByteArray());
        }
        return new DeviceState(p.getConsoleBytesWritten(), queued, p.getChannelClosed(), p.getReady());
    }

    // ---------------------------------------------------------------- helpers

    private static int u8(byte b) {
        return b & U8;
    }

    private static byte b8(int v, String where) {
        return (byte) fits(v, U8, where);
    }

    /** {@code v} read as unsigned must not exceed {@code max}: the width of the KVM field it goes into. */
    private static int fits(int v, int max, String where) {
        if (Integer.compareUnsigned(v, max) > 0) {
            throw new CapsuleFormatException(where + " = " + Integer.toUnsignedString(v)
                    + " does not fit its KVM field (max " + max + ")");
        }
        return v;
    }

    private static void require(boolean ok, String what) {
        if (!ok) {
            throw new CapsuleFormatException(what);
        }
    }
}
