package io.vmfork.vmm.x86;

import io.vmfork.kvm.x86.Msr;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.arch.KvmCpuPart;
import io.vmfork.vmm.arch.SegmentState;
import io.vmfork.vmm.arch.SregsState;
import io.vmfork.vmm.hypercall.Hypercalls;
import io.vmfork.vmm.state.DeviceState;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.VcpuState;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * The vmfork guest model, in one place: the CPU and memory state a vmfork guest can have.
 * A boot sets it up ({@link CpuSetup}, {@link PageTables}), and a restore refuses any
 * captured state outside it ({@link #check}), so that the two cannot drift apart.
 *
 * <p>A vmfork guest runs at CPL3 in 64-bit mode with the VMM's identity map. From CPL3
 * it can change its general registers, the arithmetic and control flags of RFLAGS, its
 * FPU/SSE/AVX state, the FS/GS bases (WRFSBASE where CR4.FSGSBASE is set), null
 * selectors in DS/ES/FS/GS, and the TSC it reads; nothing else. Everything else a
 * capsule says must equal what a boot gives, and memory below {@link GuestLayout#IMAGE_MIN}
 * belongs to the VMM: a restore rebuilds it ({@link #pageTableArea}, {@link #bootInfoPage})
 * rather than taking it from a capsule.
 *
 * <p>So a vCPU's state is its {@link CpuState} (what CPL3 code changes) and, taken on KVM,
 * a {@link KvmCpuPart} (what KVM holds beyond it that the model leaves open); the rest of
 * KVM's view ({@link #sregs}, {@link #msrValue}) is this class's, on every platform.
 */
public final class GuestModel {
    static final long CR0_PE = 1, CR0_MP = 1 << 1, CR0_ET = 1 << 4, CR0_NE = 1 << 5, CR0_WP = 1 << 16,
            CR0_AM = 1 << 18, CR0_PG = 1L << 31;
    static final long CR4_PAE = 1 << 5, CR4_OSFXSR = 1 << 9, CR4_OSXMMEXCPT = 1 << 10;
    /** CR4 bits that depend on the guest's CPUID: set when it has the feature. */
    public static final long CR4_FSGSBASE = 1 << 16, CR4_OSXSAVE = 1 << 18;
    static final long EFER_LME = 1 << 8, EFER_LMA = 1 << 10;

    /** CR0 of every vmfork vCPU: protected mode, paging, write protect, alignment checks. */
    public static final long CR0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG;
    /** CR4 bits every vmfork vCPU has: PAE paging, FXSAVE and SIMD exceptions. */
    public static final long CR4_REQUIRED = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    /** EFER: long mode, active. No SCE (SYSCALL #UDs), no NXE. */
    public static final long EFER = EFER_LME | EFER_LMA;
    /** CR3: the VMM's PML4. */
    public static final long CR3 = GuestLayout.PML4;
    /** IA32_APIC_BASE that KVM gives vCPU 0 (the bootstrap processor): 0xfee00000, enabled, BSP. */
    public static final long APIC_BASE_BSP = 0xfee0_0900L;
    /** IA32_APIC_BASE that KVM gives every other vCPU (an application processor): enabled, not BSP. */
    public static final long APIC_BASE_AP = 0xfee0_0800L;
    public static final int USER_CS = 0x33, USER_DS = 0x2b;
    /** 64-bit user code: selector 0x33, type 11 (execute/read, accessed), DPL 3, L. */
    public static final SegmentState USER_CODE = new SegmentState(0, 0xffffffff, USER_CS, 11, 1, 3, 0, 1, 1, 1, 0, 0);
    /** User data and stack: selector 0x2b, type 3 (read/write, accessed), DPL 3. */
    public static final SegmentState USER_DATA = new SegmentState(0, 0xffffffff, USER_DS, 3, 1, 3, 1, 1, 0, 1, 0, 0);
    /** TR and LDTR as a vCPU comes out of reset (Intel SDM vol. 3, 10.1.1); CPL3 code cannot load them. */
    public static final SegmentState RESET_TR = new SegmentState(0, 0xffff, 0, 11, 1, 0, 0, 0, 0, 0, 0, 0);
    public static final SegmentState RESET_LDT = new SegmentState(0, 0xffff, 0, 2, 1, 0, 0, 0, 0, 0, 0, 0);
    /** GDTR and IDTR limit at reset, base 0: a vmfork guest has no descriptor tables of its own. */
    public static final int RESET_TABLE_LIMIT = 0xffff;
    /** KVM_MP_STATE_RUNNABLE: a CPL3 guest cannot HLT, so it is never anything else. */
    public static final int MP_STATE_RUNNABLE = 0;
    /**
     * The MSRs of {@link Msr#GUEST_VISIBLE} whose values the model leaves open, in
     * KVM_SET_MSRS order: IA32_MISC_ENABLE (what the host's KVM reports at reset) and the
     * TSC (which the guest reads), last.
     */
    public static final List<Integer> OPEN_MSRS = List.of(Msr.IA32_MISC_ENABLE, Msr.IA32_TSC);

    /** Most MSRs a vCPU state may list: the guest-visible list. */
    public static final int MAX_MSRS = Msr.GUEST_VISIBLE.length;

    /** RFLAGS bits CPL3 code can have: CF 1 PF AF ZF SF TF IF DF OF IOPL NT RF AC ID (not VM, VIF, VIP). */
    static final long RFLAGS_ALLOWED = 0x1 | 0x2 | 0x4 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x400 | 0x800
            | 0x3000 | 0x4000 | 0x1_0000 | 0x4_0000 | 0x20_0000;
    /** IA32_PAT at reset (Intel SDM vol. 3, 13.12.4); only CPL0 can write it. */
    static final long PAT_RESET = 0x0007_0406_0007_0406L;
    /** IA32_MISC_ENABLE bits KVM may report at reset: fast strings, BTS and PEBS unavailable. */
    static final long MISC_ENABLE_ALLOWED = 0x1 | 0x800 | 0x1000;
    /** KVM_VCPUEVENT_VALID_*: NMI_PENDING SIPI_VECTOR SHADOW SMM PAYLOAD TRIPLE_FAULT. */
    static final int EVENTS_VALID_FLAGS = 0x3f;
    /** kvm_vcpu_events.interrupt.shadow: KVM_X86_SHADOW_INT_MOV_SS | KVM_X86_SHADOW_INT_STI (CPL3 can MOV SS, and STI with IOPL 3). */
    static final int EVENTS_SHADOW_ALLOWED = 0x3;
    private static final int EVENTS_FLAGS_OFFSET = 20, EVENTS_SHADOW_OFFSET = 11;
    /** Offsets in the FPU areas: MXCSR in struct kvm_fpu; MXCSR, XSTATE_BV, XCOMP_BV in the XSAVE layout. */
    private static final int FXSAVE_MXCSR = 408, XSAVE_MXCSR = 24, XSAVE_HEADER = 512, XSAVE_HEADER_END = 576;
    private static final long MXCSR_ALLOWED = 0xffff;
    /** Bytes of the boot info structure (docs/hypercalls.md, "Boot info"). */
    public static final int BOOT_INFO_BYTES = 56;
    /** Offset of the boot info's vcpu_count, appended to the first 48-byte form. */
    static final int BOOT_INFO_VCPU_COUNT = 48;
    /** End of the page-table area: the PML4, PDPT, low PT and up to {@link GuestLayout#MAX_PDS} PDs. */
    public static final long PAGE_TABLES_END = GuestLayout.PD_BASE + GuestLayout.MAX_PDS * GuestLayout.PAGE;
    private static final int CANONICAL_BITS = 48;
    private static final String[] SEGMENT_NAMES = {"cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"};

    private GuestModel() {
    }

    /** One way a state is outside the model; {@code hostLimit} when it is this host's limit rather than the model's. */
    public record Violation(String field, String problem, boolean hostLimit) {
        @Override
        public String toString() {
            return field + " " + problem;
        }
    }

    /**
     * What the host running the restored VM allows.
     *
     * @param hostMsrs      the MSRs this host saves and restores (Msr.GUEST_VISIBLE filtered by KVM's list)
     * @param maxXsaveBytes the largest XSAVE area this host's vCPUs take (4 KiB, or KVM_CAP_XSAVE2's size)
     * @param kvm           whether the host runs guests in KVM vCPUs, which take a state's {@link KvmCpuPart};
     *                      false on the process platform, which keeps only the {@link CpuState} and refuses a
     *                      KVM part whose difference from the model a guest could notice there
     */
    public record Rules(int maxVcpus, long minMemory, long maxMemory, int maxMessageBytes, int maxQueuedRequests,
            int[] hostMsrs, int maxXsaveBytes, boolean kvm) {
        public Rules {
            hostMsrs = hostMsrs.clone();
        }

        @Override
        public int[] hostMsrs() {
            return hostMsrs.clone();
        }
    }

    /** The MSRs of {@link Msr#GUEST_VISIBLE} that KVM lists on this host: what a fork saves. */
    public static int[] hostMsrs(int[] kvmMsrIndexList) {
        Set<Integer> listed = new HashSet<>();
        for (int m : kvmMsrIndexList) {
            listed.add(m);
        }
        return java.util.Arrays.stream(Msr.GUEST_VISIBLE).filter(listed::contains).toArray();
    }

    /** CR4 of a vmfork vCPU whose CPUID has (or lacks) XSAVE and FSGSBASE. */
    public static long cr4(boolean xsave, boolean fsgsbase) {
        return CR4_REQUIRED | (xsave ? CR4_OSXSAVE : 0) | (fsgsbase ? CR4_FSGSBASE : 0);
    }

    // ---------------------------------------------------------------- memory size

    /** Problems of a guest RAM size: the 2 MiB grid (the model), the host's range (a host limit). */
    public static List<Violation> checkMemorySize(long bytes, Rules rules) {
        List<Violation> out = new ArrayList<>();
        if (bytes % GuestLayout.LARGE_PAGE != 0 || bytes <= GuestLayout.IMAGE_MIN) {
            out.add(new Violation("memory_size", "= " + Long.toUnsignedString(bytes)
                    + " is not a multiple of 2 MiB above 0x200000, as the RAM of every vmfork guest is", false));
        } else if (Long.compareUnsigned(bytes, GuestLayout.MAX_MEMORY) > 0) {
            out.add(new Violation("memory_size", "= " + Long.toUnsignedString(bytes)
                    + " is over the " + (GuestLayout.MAX_MEMORY >> 30) + " GiB the VMM's page tables can map", false));
        }
        if (Long.compareUnsigned(bytes, rules.minMemory()) < 0 || Long.compareUnsigned(bytes, rules.maxMemory()) > 0) {
            out.add(new Violation("memory_size", "= " + (bytes >>> 20) + " MiB is outside this host's range "
                    + (rules.minMemory() >> 20) + " .. " + (rules.maxMemory() >> 20) + " MiB (vmfork.vmm.memory.min/max)",
                    true));
        }
        return out;
    }

    // ---------------------------------------------------------------- machine state

    /** Every way {@code s} is outside the guest model or this host's rules; empty if a vmfork guest can have it. */
    public static List<Violation> check(MachineState s, Rules rules) {
        List<Violation> out = new ArrayList<>(checkMemorySize(s.memorySize(), rules));
        int n = s.vcpus().size();
        if (n > rules.maxVcpus()) {
            out.add(new Violation("vcpus", "has " + n + " vCPUs; this host allows " + rules.maxVcpus()
                    + " (vmfork.vmm.max-vcpus)", true));
        }
        if (n < 1) {
            out.add(new Violation("vcpus", "is empty; a vmfork guest has at least vCPU 0", false));
        } else if (!s.vcpus().get(0).started()) {
            out.add(new Violation("vcpus[0].not_started", "is set; vCPU 0 of a vmfork guest always runs", false));
        }
        long cpuidXcr0 = cpuidXcr0(s.cpuidEntries());
        Set<Integer> hostMsrs = new HashSet<>();
        for (int m : rules.hostMsrs()) {
            hostMsrs.add(m);
        }
        for (int i = 0; i < n; i++) {
            VcpuState v = s.vcpus().get(i);
            String w = "vcpus[" + i + "]";
            if (v.index() != i) {
                out.add(new Violation(w + ".index", "= " + v.index() + ", expected " + i, false));
            }
            checkCpu(v.cpu(), w + ".cpu", cpuidXcr0, rules.maxXsaveBytes(), out);
            if (v.kvm() != null) {
                checkKvmPart(v.kvm(), w + ".kvm", rules.kvm() ? hostMsrs : null, out);
                if (!rules.kvm()) {
                    checkKvmPartOffKvm(v.kvm(), w + ".kvm", out);
                }
            }
        }
        checkDevices(s.devices(), rules, out);
        return out;
    }

    /** What CPL3 code can have of its own: a canonical RIP and FS/GS bases, RFLAGS, the FPU area and XCR0. */
    private static void checkCpu(CpuState c, String w, long cpuidXcr0, int maxXsaveBytes, List<Violation> out) {
        long[] regs = c.regs();
        if (!canonical(regs[CpuState.RIP])) {
            out.add(new Violation(w + ".regs.rip", String.format("= 0x%x is not canonical", regs[CpuState.RIP]), false));
        }
        long rflags = regs[CpuState.RFLAGS];
        if ((rflags & ~RFLAGS_ALLOWED) != 0) {
            out.add(new Violation(w + ".regs.rflags", String.format("= 0x%x has bits 0x%x that CPL3 code cannot set",
                    rflags, rflags & ~RFLAGS_ALLOWED), false));
        }
        if (!canonical(c.fsBase())) {
            out.add(new Violation(w + ".fs_base", String.format("= 0x%x is not canonical", c.fsBase()), false));
        }
        if (!canonical(c.gsBase())) {
            out.add(new Violation(w + ".gs_base", String.format("= 0x%x is not canonical", c.gsBase()), false));
        }
        checkFpu(c, w, cpuidXcr0, maxXsaveBytes, out);
    }

    /**
     * The KVM part: DS/ES/FS/GS the user data segment or a null selector, only the MSRs the
     * model leaves open (each once, with values a CPL3 guest can have, and where
     * {@code hostMsrs} is given, ones this host's KVM lists), no pending event, RUNNABLE.
     */
    private static void checkKvmPart(KvmCpuPart k, String w, Set<Integer> hostMsrs, List<Violation> out) {
        String[] names = {"ds", "es", "fs", "gs"};
        for (int i = 0; i < KvmCpuPart.DATA_SEGMENTS; i++) {
            checkDataSegment(k.dataSegments().get(i), w + "." + names[i], false, out);
        }
        int[] idx = k.msrIndices();
        long[] val = k.msrValues();
        Set<Integer> seen = new HashSet<>();
        for (int i = 0; i < idx.length; i++) {
            String name = String.format("%s.msrs[%d] (0x%x)", w, i, idx[i]);
            if (!OPEN_MSRS.contains(idx[i])) {
                out.add(new Violation(name, isGuestVisible(idx[i])
                        ? "is fixed by the guest model, not carried in a vCPU's KVM part"
                        : "is not an MSR a vmfork guest can observe", false));
                continue;
            }
            if (!seen.add(idx[i])) {
                out.add(new Violation(name, "is listed twice", false));
                continue;
            }
            if (hostMsrs != null && !hostMsrs.contains(idx[i])) {
                out.add(new Violation(name, "cannot be restored on this host (KVM does not list it)", true));
            }
            String bad = openMsrProblem(idx[i], val[i]);
            if (bad != null) {
                out.add(new Violation(name, String.format("= 0x%x %s", val[i], bad), false));
            }
        }
        checkEvents(k.events(), w + ".events", out);
        if (k.mpState() != MP_STATE_RUNNABLE) {
            out.add(new Violation(w + ".mp_state", "= " + Integer.toUnsignedString(k.mpState())
                    + ", a vmfork vCPU is always RUNNABLE (0)", false));
        }
    }

    /**
     * On the process platform a KVM part is dropped: the guest's thread has the host's
     * selectors, TSC and IA32_MISC_ENABLE, and nothing else of it. The only thing the model
     * allows there that a guest could notice missing is an interrupt shadow (MOV SS or STI
     * just executed: the next instruction runs before any debug trap); a state with one runs
     * on KVM only. (Pending events are outside the model on every host.)
     */
    private static void checkKvmPartOffKvm(KvmCpuPart k, String w, List<Violation> out) {
        int shadow = k.events()[EVENTS_SHADOW_OFFSET] & 0xff;
        if (shadow != 0) {
            // KVM_X86_SHADOW_INT_MOV_SS 0x01, KVM_X86_SHADOW_INT_STI 0x02 (arch/x86/include/uapi/asm/kvm.h)
            String kind = (shadow & 1) != 0 && (shadow & 2) != 0 ? "MOV SS|STI" : (shadow & 1) != 0 ? "MOV SS" : "STI";
            out.add(new Violation(w + ".events.interrupt_shadow", "= " + shadow + " (" + kind + "): the process platform"
                    + " cannot restore a KVM vCPU's interrupt shadow; this capsule runs on a KVM host only", true));
        }
    }

    /** DS/ES/FS/GS: the user data segment, or a null selector; FS/GS bases are the CpuState's (0 here). */
    private static void checkDataSegment(SegmentState g, String name, boolean withBase, List<Violation> out) {
        // A CPL3 guest may load a null selector (RPL 0-3) into DS/ES/FS/GS. In 64-bit mode the CPU then
        // ignores the rest of the register but the FS/GS base, and none of it bears on the privilege level
        // (CS and SS do), so the attributes KVM reports for it are not checked.
        boolean isNull = g.selector() <= 3 && (withBase || g.base() == 0);
        if (!isNull) {
            expectSegment(withBase ? withBase(g, 0) : g, USER_DATA, name, out);
        }
    }

    /** Whether a CPL3 guest can have {@code value} in an MSR the model leaves open: null if so, else why not. */
    private static String openMsrProblem(int msr, long value) {
        return switch (msr) {
            case Msr.IA32_TSC -> null;
            case Msr.IA32_MISC_ENABLE -> (value & ~MISC_ENABLE_ALLOWED) == 0 ? null
                    : String.format("has bits outside 0x%x", MISC_ENABLE_ALLOWED);
            default -> "is not an MSR the model leaves open";
        };
    }

    static boolean isGuestVisible(int msr) {
        for (int m : Msr.GUEST_VISIBLE) {
            if (m == msr) {
                return true;
            }
        }
        return false;
    }

    /**
     * The value the model fixes for {@code msr} of {@link Msr#GUEST_VISIBLE}, not one of
     * {@link #OPEN_MSRS}: the FS/GS bases of the CPU state, PAT at reset, and 0 for the
     * SYSCALL/SYSENTER targets, KERNEL_GS_BASE and TSC_AUX (only CPL0 code can write them,
     * and KVM resets them to 0; SYSENTER_CS in particular would let SYSENTER enter CPL0).
     */
    public static long msrValue(int msr, long fsBase, long gsBase) {
        if (OPEN_MSRS.contains(msr) || !isGuestVisible(msr)) {
            throw new IllegalArgumentException(String.format("MSR 0x%x is not one the model fixes", msr));
        }
        return switch (msr) {
            case Msr.FS_BASE -> fsBase;
            case Msr.GS_BASE -> gsBase;
            case Msr.IA32_PAT -> PAT_RESET;
            default -> 0;
        };
    }

    /**
     * KVM's segment, descriptor-table and control registers of vCPU {@code index} of a
     * guest whose CPUID has (or lacks) XSAVE and FSGSBASE: the model's, with the FS/GS
     * bases of {@code cpu} and, where {@code kvm} is given, its data segments and CR2.
     */
    public static SregsState sregs(int index, CpuState cpu, KvmCpuPart kvm, boolean xsave, boolean fsgsbase) {
        List<SegmentState> data = kvm != null ? kvm.dataSegments() : List.of(USER_DATA, USER_DATA, USER_DATA, USER_DATA);
        List<SegmentState> segs = List.of(USER_CODE, data.get(KvmCpuPart.DS), data.get(KvmCpuPart.ES),
                withBase(data.get(KvmCpuPart.FS), cpu.fsBase()), withBase(data.get(KvmCpuPart.GS), cpu.gsBase()),
                USER_DATA, RESET_TR, RESET_LDT);
        return new SregsState(segs, 0, RESET_TABLE_LIMIT, 0, RESET_TABLE_LIMIT, CR0, kvm != null ? kvm.cr2() : 0, CR3,
                cr4(xsave, fsgsbase), 0, EFER, index == 0 ? APIC_BASE_BSP : APIC_BASE_AP, new long[4]);
    }

    /** Whether a guest with these CPUID entries (kvm_cpuid_entry2 layout) has XSAVE: CR4.OSXSAVE is set then. */
    public static boolean cpuidXsave(byte[] cpuidEntries) {
        return (cpuidRegister(cpuidEntries, 1, 0, 2) & (1 << 26)) != 0;
    }

    /** Whether a guest with these CPUID entries has FSGSBASE: CR4.FSGSBASE is set then. */
    public static boolean cpuidFsgsbase(byte[] cpuidEntries) {
        return (cpuidRegister(cpuidEntries, 7, 0, 1) & 1) != 0;
    }

    /**
     * Every way KVM's segment and control registers {@code s} of vCPU {@code index} differ
     * from what the model fixes ({@link #sregs}); the data segments may be null selectors.
     * Names start with {@code w}.
     */
    static void checkSregs(SregsState s, String w, int index, boolean xsave, boolean fsgsbase, List<Violation> out) {
        List<SegmentState> seg = s.segments();
        expectSegment(seg.get(0), USER_CODE, w + ".cs", out);
        expectSegment(seg.get(5), USER_DATA, w + ".ss", out);
        for (int i = 1; i <= 4; i++) {
            SegmentState g = seg.get(i);
            String name = w + "." + SEGMENT_NAMES[i];
            boolean fsOrGs = i == 3 || i == 4;
            if (fsOrGs && !canonical(g.base())) {
                out.add(new Violation(name + ".base", String.format("= 0x%x is not canonical", g.base()), false));
            }
            checkDataSegment(g, name, fsOrGs, out);
        }
        expectSegment(seg.get(6), RESET_TR, w + ".tr", out);
        expectSegment(seg.get(7), RESET_LDT, w + ".ldt", out);
        expect(s.gdtBase(), 0, w + ".gdt_base", out);
        expect(s.gdtLimit(), RESET_TABLE_LIMIT, w + ".gdt_limit", out);
        expect(s.idtBase(), 0, w + ".idt_base", out);
        expect(s.idtLimit(), RESET_TABLE_LIMIT, w + ".idt_limit", out);
        expect(s.cr0(), CR0, w + ".cr0", out);
        expect(s.cr3(), CR3, w + ".cr3", out);
        long cr4Allowed = cr4(xsave, fsgsbase);
        if ((s.cr4() & CR4_REQUIRED) != CR4_REQUIRED || (s.cr4() & ~cr4Allowed) != 0) {
            out.add(new Violation(w + ".cr4", String.format("= 0x%x; a vmfork vCPU with this CPUID has 0x%x and may "
                    + "have 0x%x", s.cr4(), CR4_REQUIRED, cr4Allowed), false));
        }
        expect(s.cr8(), 0, w + ".cr8", out);
        expect(s.efer(), EFER, w + ".efer", out);
        expect(s.apicBase(), index == 0 ? APIC_BASE_BSP : APIC_BASE_AP, w + ".apic_base", out);
        for (long word : s.interruptBitmap()) {
            if (word != 0) {
                out.add(new Violation(w + ".interrupt_bitmap", "is not empty: a vmfork guest gets no interrupts",
                        false));
                break;
            }
        }
    }

    private static void checkFpu(CpuState v, String w, long cpuidXcr0, int maxXsaveBytes, List<Violation> out) {
        byte[] fpu = v.fpu();
        ByteBuffer b = ByteBuffer.wrap(fpu).order(ByteOrder.LITTLE_ENDIAN);
        long xcr0 = v.xcr0();
        if (xcr0 != 0) {
            if ((xcr0 & 1) == 0 || (xcr0 & 0x6) == 0x4 || (xcr0 & ~cpuidXcr0) != 0) {
                out.add(new Violation(w + ".xcr0", String.format("= 0x%x is not a valid XCR0 within the state "
                        + "components 0x%x of the capsule's CPUID", xcr0, cpuidXcr0), false));
            }
        }
        switch (v.fpuFormat()) {
            case FXSAVE -> {
                if (fpu.length >= FXSAVE_MXCSR + 4 && (b.getInt(FXSAVE_MXCSR) & ~MXCSR_ALLOWED) != 0) {
                    out.add(new Violation(w + ".fpu", String.format("MXCSR 0x%x has reserved bits",
                            b.getInt(FXSAVE_MXCSR)), false));
                }
            }
            case XSAVE -> {
                if (fpu.length > maxXsaveBytes) {
                    out.add(new Violation(w + ".fpu", "XSAVE area of " + fpu.length + " bytes is larger than the "
                            + maxXsaveBytes + " bytes this host's vCPUs take", true));
                }
                if (fpu.length < XSAVE_HEADER_END) {
                    out.add(new Violation(w + ".fpu", "XSAVE area of " + fpu.length + " bytes is shorter than its "
                            + XSAVE_HEADER_END + "-byte legacy area and header", false));
                    return;
                }
                if ((b.getInt(XSAVE_MXCSR) & ~MXCSR_ALLOWED) != 0) {
                    out.add(new Violation(w + ".fpu", String.format("MXCSR 0x%x has reserved bits",
                            b.getInt(XSAVE_MXCSR)), false));
                }
                long xstateBv = b.getLong(XSAVE_HEADER);
                if (xcr0 != 0 && (xstateBv & ~xcr0) != 0) {
                    out.add(new Violation(w + ".fpu", String.format("XSTATE_BV 0x%x is outside XCR0 0x%x", xstateBv,
                            xcr0), false));
                }
                for (int off = XSAVE_HEADER + 8; off < XSAVE_HEADER_END; off += 8) {
                    if (b.getLong(off) != 0) {
                        out.add(new Violation(w + ".fpu", "XSAVE header has non-zero XCOMP_BV or reserved bytes "
                                + "(KVM takes the standard format only)", false));
                        break;
                    }
                }
            }
        }
    }

    private static void checkEvents(byte[] e, String w, List<Violation> out) {
        ByteBuffer b = ByteBuffer.wrap(e).order(ByteOrder.LITTLE_ENDIAN);
        int flags = b.getInt(EVENTS_FLAGS_OFFSET);
        if ((flags & ~EVENTS_VALID_FLAGS) != 0) {
            out.add(new Violation(w + ".flags", String.format("= 0x%x has bits outside 0x%x", flags,
                    EVENTS_VALID_FLAGS), false));
        }
        if ((e[EVENTS_SHADOW_OFFSET] & ~EVENTS_SHADOW_ALLOWED) != 0) {
            out.add(new Violation(w + ".interrupt_shadow", "= " + (e[EVENTS_SHADOW_OFFSET] & 0xff) + " is not 0-3",
                    false));
        }
        for (int i = 0; i < e.length; i++) {
            if (i >= EVENTS_FLAGS_OFFSET && i < EVENTS_FLAGS_OFFSET + 4 || i == EVENTS_SHADOW_OFFSET) {
                continue;
            }
            if (e[i] != 0) {
                out.add(new Violation(w, "has a pending or injected exception, interrupt, NMI, SIPI, SMI or triple "
                        + "fault (byte " + i + " of kvm_vcpu_events): a vmfork guest at a capture point has none", false));
                break;
            }
        }
    }

    private static void checkDevices(DeviceState d, Rules rules, List<Violation> out) {
        List<byte[]> q = d.queuedRequests();
        if (q.size() > rules.maxQueuedRequests()) {
            out.add(new Violation("devices.queued_requests", "has " + q.size() + " requests; this host queues at most "
                    + rules.maxQueuedRequests() + " (vmfork.vmm.channel.max-queued)", true));
        }
        for (int i = 0; i < q.size(); i++) {
            if (q.get(i).length > rules.maxMessageBytes()) {
                out.add(new Violation("devices.queued_requests[" + i + "]", "is " + q.get(i).length
                        + " bytes; this host's messages are at most " + rules.maxMessageBytes()
                        + " (vmfork.vmm.channel.max-message)", true));
                break;
            }
        }
    }

    // ---------------------------------------------------------------- VMM-owned memory

    /** The boot info a vmfork guest was started with (docs/hypercalls.md, "Boot info"). */
    public record BootInfo(long memorySize, long heapStart, long heapEnd, long stackTop, int vcpuCount) {
    }

    /**
     * Reads and checks the boot info page of a capsule for a guest of {@code memorySize}
     * bytes and {@code vcpuCount} vCPUs: every field must be what a boot of such a guest
     * writes, and the rest of the page zero. A vcpu_count of 0 is taken for 1: writers
     * before the field was appended left it zero, and they wrote one-vCPU guests only.
     * Adds what is wrong to {@code out}; returns the boot info if nothing is.
     */
    public static BootInfo checkBootInfo(byte[] page, long memorySize, int vcpuCount, List<Violation> out) {
        String w = "memory[0x" + Long.toHexString(GuestLayout.BOOT_INFO) + "] (boot info)";
        int before = out.size();
        if (page == null) {
            out.add(new Violation(w, "is missing: every vmfork guest has one", false));
            return null;
        }
        ByteBuffer b = ByteBuffer.wrap(page).order(ByteOrder.LITTLE_ENDIAN);
        long heapStart = b.getLong(24);
        long heapEnd = b.getLong(32);
        long stackTop = b.getLong(40);
        if (b.getLong(0) != Hypercalls.BOOT_INFO_MAGIC) {
            out.add(new Violation(w + ".magic", String.format("= 0x%x", b.getLong(0)), false));
        }
        if (b.getInt(8) != Hypercalls.ABI_VERSION) {
            out.add(new Violation(w + ".abi_version", "= " + b.getInt(8) + ", not " + Hypercalls.ABI_VERSION, false));
        }
        if (b.getInt(12) != 0) {
            out.add(new Violation(w + ".vcpu_index", "= " + b.getInt(12) + ", not 0", false));
        }
        int count = b.getInt(BOOT_INFO_VCPU_COUNT);
        if (count != vcpuCount && !(count == 0 && vcpuCount == 1)) {
            out.add(new Violation(w + ".vcpu_count", "= " + Integer.toUnsignedString(count) + ", the capsule has "
                    + vcpuCount + " vCPUs", false));
        }
        if (b.getInt(BOOT_INFO_VCPU_COUNT + 4) != 0) {
            out.add(new Violation(w + ".reserved", "= " + b.getInt(BOOT_INFO_VCPU_COUNT + 4) + ", not 0", false));
        }
        if (b.getLong(16) != memorySize) {
            out.add(new Violation(w + ".memory_size", "= " + b.getLong(16) + ", the capsule's is " + memorySize, false));
        }
        if (stackTop != memorySize) {
            out.add(new Violation(w + ".stack_top", "= " + stackTop + ", not the memory size " + memorySize, false));
        }
        if (heapStart < GuestLayout.IMAGE_MIN || heapStart % GuestLayout.PAGE != 0 || heapEnd % GuestLayout.PAGE != 0
                || Long.compareUnsigned(heapStart, heapEnd) > 0 || Long.compareUnsigned(heapEnd, memorySize) > 0) {
            out.add(new Violation(w + ".heap", String.format("[0x%x, 0x%x) is not a page-aligned range between "
                    + "0x%x and the memory size", heapStart, heapEnd, GuestLayout.IMAGE_MIN), false));
        }
        for (int i = BOOT_INFO_BYTES; i < page.length; i++) {
            if (page[i] != 0) {
                out.add(new Violation(w, "has non-zero bytes after its " + BOOT_INFO_BYTES + "-byte structure", false));
                break;
            }
        }
        return out.size() == before ? new BootInfo(memorySize, heapStart, heapEnd, stackTop, vcpuCount) : null;
    }

    /** The boot info page (4 KiB) a boot writes for {@code info}. */
    public static byte[] bootInfoPage(BootInfo info) {
        ByteBuffer b = ByteBuffer.allocate((int) GuestLayout.PAGE).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(0, Hypercalls.BOOT_INFO_MAGIC).putInt(8, Hypercalls.ABI_VERSION).putInt(12, 0)
                .putLong(16, info.memorySize()).putLong(24, info.heapStart()).putLong(32, info.heapEnd())
                .putLong(40, info.stackTop()).putInt(BOOT_INFO_VCPU_COUNT, info.vcpuCount());
        return b.array();
    }

    /** Bytes [0, {@link #PAGE_TABLES_END}) of a guest of {@code memorySize} bytes, as a boot leaves them. */
    public static byte[] pageTableArea(long memorySize) {
        byte[] area = new byte[(int) PAGE_TABLES_END];
        ByteBuffer b = ByteBuffer.wrap(area).order(ByteOrder.LITTLE_ENDIAN);
        PageTables.build(memorySize, (gpa, value) -> b.putLong((int) gpa, value));
        return area;
    }

    // ---------------------------------------------------------------- helpers

    private static void expectSegment(SegmentState got, SegmentState want, String w, List<Violation> out) {
        if (!got.equals(want)) {
            out.add(new Violation(w, "= " + describe(got) + ", a vmfork vCPU has " + describe(want), false));
        }
    }

    static SegmentState withBase(SegmentState g, long base) {
        return new SegmentState(base, g.limit(), g.selector(), g.type(), g.present(), g.dpl(), g.db(), g.s(), g.l(),
                g.g(), g.avl(), g.unusable());
    }

    private static String describe(SegmentState g) {
        return String.format("{base 0x%x limit 0x%x selector 0x%x type %d present %d dpl %d db %d s %d l %d g %d avl %d "
                + "unusable %d}", g.base(), g.limit(), g.selector(), g.type(), g.present(), g.dpl(), g.db(), g.s(),
                g.l(), g.g(), g.avl(), g.unusable());
    }

    private static void expect(long got, long want, String w, List<Violation> out) {
        if (got != want) {
            out.add(new Violation(w, String.format("= 0x%x, a vmfork vCPU has 0x%x", got, want), false));
        }
    }

    static boolean canonical(long address) {
        return (address << (64 - CANONICAL_BITS)) >> (64 - CANONICAL_BITS) == address;
    }

    /** Register {@code reg} (0=eax..3=edx) of a kvm_cpuid_entry2 array's leaf, 0 if absent. */
    static long cpuidRegister(byte[] entries, int function, int index, int reg) {
        ByteBuffer b = ByteBuffer.wrap(entries).order(ByteOrder.LITTLE_ENDIAN);
        for (int off = 0; off + 40 <= entries.length; off += 40) {
            if (b.getInt(off) == function && (b.getInt(off + 4) == index || (b.getInt(off + 8) & 1) == 0)) {
                return b.getInt(off + 12 + 4 * reg) & 0xffff_ffffL;
            }
        }
        return 0;
    }

    /** The XSAVE state components the CPUID offers (leaf 0xD.0 EDX:EAX); x87 and SSE without leaf 0xD. */
    static long cpuidXcr0(byte[] entries) {
        long lo = cpuidRegister(entries, 0xd, 0, 0);
        long hi = cpuidRegister(entries, 0xd, 0, 3);
        return (hi << 32 | lo) | 0x3;
    }
}
