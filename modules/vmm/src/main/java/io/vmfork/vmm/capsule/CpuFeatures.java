package io.vmfork.vmm.capsule;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * The CPUID feature registers a clone VM depends on, the names of their bits, and lookups
 * in kvm_cpuid_entry2 arrays (40 bytes an entry: function, index, flags, eax, ebx, ecx,
 * edx, padding[3]; see io.vmfork.kvm.x86.Cpuid).
 *
 * <p>Names follow Linux's /proc/cpuinfo (arch/x86/include/asm/cpufeatures.h). A bit
 * without a name here is shown as {@code CPUID.7.0:EBX[5]}.
 */
public final class CpuFeatures {
    /** KVM_CPUID_FLAG_SIGNIFCANT_INDEX (sic, include/uapi/linux/kvm.h): the entry is for one subleaf only. */
    static final int FLAG_SIGNIFICANT_INDEX = 1;
    static final int EAX = 0;
    static final int EBX = 1;
    static final int ECX = 2;
    static final int EDX = 3;
    private static final String[] REG_NAMES = {"EAX", "EBX", "ECX", "EDX"};

    /** One 32-bit feature register: CPUID.function.index:reg. */
    public record Register(int function, int index, int reg, Map<Integer, String> names, int ignoredBits) {
        /** "CPUID.7.0:EBX". */
        public String label() {
            String f = function >= 0 && function < 10 ? Integer.toString(function)
                    : "0x" + Integer.toHexString(function).toUpperCase(java.util.Locale.ROOT);
            return "CPUID." + f + "." + index + ":" + REG_NAMES[reg];
        }

        /** "avx512f (CPUID.7.0:EBX[16])", or "CPUID.7.0:EBX[5]" for a bit without a name. */
        public String describe(int bit) {
            String where = label() + "[" + bit + "]";
            String name = names.get(bit);
            return name == null ? where : name + " (" + where + ")";
        }
    }

    /**
     * Bits KVM sets in the guest's view from guest state rather than from the host
     * (arch/x86/kvm/cpuid.c, kvm_update_cpuid_runtime): OSXSAVE follows CR4.OSXSAVE and
     * OSPKE follows CR4.PKE. They say nothing about what the host supports.
     */
    private static final int LEAF1_ECX_DYNAMIC = 1 << 27;
    private static final int LEAF7_ECX_DYNAMIC = 1 << 4;

    /** The registers a capsule's CPUID is checked against the host's in. */
    public static final List<Register> CHECKED = List.of(
            new Register(1, 0, ECX, names(
                    0, "sse3", 1, "pclmulqdq", 2, "dtes64", 3, "monitor", 4, "ds_cpl", 5, "vmx", 6, "smx", 7, "est",
                    8, "tm2", 9, "ssse3", 10, "cid", 11, "sdbg", 12, "fma", 13, "cx16", 14, "xtpr", 15, "pdcm",
                    17, "pcid", 18, "dca", 19, "sse4_1", 20, "sse4_2", 21, "x2apic", 22, "movbe", 23, "popcnt",
                    24, "tsc_deadline_timer", 25, "aes", 26, "xsave", 27, "osxsave", 28, "avx", 29, "f16c",
                    30, "rdrand", 31, "hypervisor"), LEAF1_ECX_DYNAMIC),
            new Register(1, 0, EDX, names(
                    0, "fpu", 1, "vme", 2, "de", 3, "pse", 4, "tsc", 5, "msr", 6, "pae", 7, "mce", 8, "cx8",
                    9, "apic", 11, "sep", 12, "mtrr", 13, "pge", 14, "mca", 15, "cmov", 16, "pat", 17, "pse36",
                    18, "pn", 19, "clflush", 21, "dts", 22, "acpi", 23, "mmx", 24, "fxsr", 25, "sse", 26, "sse2",
                    27, "ss", 28, "ht", 29, "tm", 30, "ia64", 31, "pbe"), 0),
            new Register(7, 0, EBX, names(
                    0, "fsgsbase", 1, "tsc_adjust", 2, "sgx", 3, "bmi1", 4, "hle", 5, "avx2", 6, "fdp_excptn_only",
                    7, "smep", 8, "bmi2", 9, "erms", 10, "invpcid", 11, "rtm", 12, "cqm", 13, "zero_fcs_fds",
                    14, "mpx", 15, "rdt_a", 16, "avx512f", 17, "avx512dq", 18, "rdseed", 19, "adx", 20, "smap",
                    21, "avx512ifma", 22, "pcommit", 23, "clflushopt", 24, "clwb", 25, "intel_pt", 26, "avx512pf",
                    27, "avx512er", 28, "avx512cd", 29, "sha_ni", 30, "avx512bw", 31, "avx512vl"), 0),
            new Register(7, 0, ECX, names(
                    0, "prefetchwt1", 1, "avx512vbmi", 2, "umip", 3, "pku", 4, "ospke", 5, "waitpkg",
                    6, "avx512_vbmi2", 7, "shstk", 8, "gfni", 9, "vaes", 10, "vpclmulqdq", 11, "avx512_vnni",
                    12, "avx512_bitalg", 13, "tme", 14, "avx512_vpopcntdq", 16, "la57", 22, "rdpid",
                    23, "keylocker", 24, "bus_lock_detect", 25, "cldemote", 27, "movdiri", 28, "movdir64b",
                    29, "enqcmd", 30, "sgx_lc"), LEAF7_ECX_DYNAMIC),
            new Register(7, 0, EDX, names(
                    2, "avx512_4vnniw", 3, "avx512_4fmaps", 4, "fsrm", 8, "avx512_vp2intersect", 10, "md_clear",
                    14, "serialize", 16, "tsxldtrk", 18, "pconfig", 19, "arch_lbr", 20, "ibt", 22, "amx_bf16",
                    23, "avx512_fp16", 24, "amx_tile", 25, "amx_int8", 26, "spec_ctrl", 27, "intel_stibp",
                    28, "flush_l1d", 29, "arch_capabilities", 30, "core_capabilities", 31, "spec_ctrl_ssbd"), 0),
            new Register(7, 1, EAX, names(4, "avx_vnni", 5, "avx512_bf16"), 0),
            new Register(0xD, 0, EAX, names(
                    0, "xsave state x87", 1, "xsave state sse", 2, "xsave state avx", 3, "xsave state bndregs",
                    4, "xsave state bndcsr", 5, "xsave state opmask", 6, "xsave state zmm_hi256",
                    7, "xsave state hi16_zmm", 9, "xsave state pkru", 17, "xsave state xtilecfg",
                    18, "xsave state xtiledata"), 0),
            new Register(0xD, 1, EAX, names(0, "xsaveopt", 1, "xsavec", 2, "xgetbv1", 3, "xsaves", 4, "xfd"), 0),
            new Register(0x80000001, 0, ECX, names(
                    0, "lahf_lm", 1, "cmp_legacy", 2, "svm", 3, "extapic", 4, "cr8_legacy", 5, "abm", 6, "sse4a",
                    7, "misalignsse", 8, "3dnowprefetch", 9, "osvw", 10, "ibs", 11, "xop", 12, "skinit", 13, "wdt",
                    15, "lwp", 16, "fma4", 17, "tce", 19, "nodeid_msr", 21, "tbm", 22, "topoext",
                    23, "perfctr_core", 24, "perfctr_nb", 26, "bpext", 27, "ptsc", 28, "perfctr_llc",
                    29, "mwaitx"), 0),
            new Register(0x80000001, 0, EDX, names(
                    11, "syscall", 19, "mp", 20, "nx", 22, "mmxext", 25, "fxsr_opt", 26, "pdpe1gb", 27, "rdtscp",
                    29, "lm", 30, "3dnowext", 31, "3dnow"), 0));

    private CpuFeatures() {
    }

    /** The register of the {@link #CHECKED} list that holds {@code name}, for tests and tools. */
    public static Register registerOf(String name) {
        for (Register r : CHECKED) {
            if (r.names().containsValue(name)) {
                return r;
            }
        }
        throw new IllegalArgumentException("no CPU feature named " + name);
    }

    /** The bit of {@code name} in its register. */
    public static int bitOf(String name) {
        for (Map.Entry<Integer, String> e : registerOf(name).names().entrySet()) {
            if (e.getValue().equals(name)) {
                return e.getKey();
            }
        }
        throw new AssertionError(name);
    }

    /**
     * Register {@code reg} of leaf {@code function} subleaf {@code index} in kvm_cpuid_entry2
     * bytes, or 0 when the leaf is absent (a missing leaf offers no feature). An entry
     * without KVM_CPUID_FLAG_SIGNIFCANT_INDEX answers for every subleaf.
     */
    public static int value(byte[] entries, int function, int index, int reg) {
        ByteBuffer b = ByteBuffer.wrap(entries).order(ByteOrder.LITTLE_ENDIAN);
        for (int off = 0; off + CapsuleFormat.CPUID_ENTRY_BYTES <= entries.length;
                off += CapsuleFormat.CPUID_ENTRY_BYTES) {
            if (b.getInt(off) == function
                    && ((b.getInt(off + 8) & FLAG_SIGNIFICANT_INDEX) == 0 || b.getInt(off + 4) == index)) {
                return b.getInt(off + 12 + 4 * reg);
            }
        }
        return 0;
    }

    /**
     * A copy of {@code entries} with bit {@code bit} of register {@code reg} cleared in
     * every entry that answers for leaf {@code function} subleaf {@code index}.
     */
    static byte[] withBitCleared(byte[] entries, int function, int index, int reg, int bit) {
        byte[] out = entries.clone();
        ByteBuffer b = ByteBuffer.wrap(out).order(ByteOrder.LITTLE_ENDIAN);
        for (int off = 0; off + CapsuleFormat.CPUID_ENTRY_BYTES <= out.length; off += CapsuleFormat.CPUID_ENTRY_BYTES) {
            if (b.getInt(off) == function
                    && ((b.getInt(off + 8) & FLAG_SIGNIFICANT_INDEX) == 0 || b.getInt(off + 4) == index)) {
                int at = off + 12 + 4 * reg;
                b.putInt(at, b.getInt(at) & ~(1 << bit));
            }
        }
        return out;
    }

    /** Whether leaf {@code function} is present at all. */
    static boolean hasLeaf(byte[] entries, int function) {
        ByteBuffer b = ByteBuffer.wrap(entries).order(ByteOrder.LITTLE_ENDIAN);
        for (int off = 0; off + CapsuleFormat.CPUID_ENTRY_BYTES <= entries.length;
                off += CapsuleFormat.CPUID_ENTRY_BYTES) {
            if (b.getInt(off) == function) {
                return true;
            }
        }
        return false;
    }

    /** The vendor string of leaf 0 (EBX, EDX, ECX), or null when leaf 0 is absent. */
    static String vendor(byte[] entries) {
        if (!hasLeaf(entries, 0)) {
            return null;
        }
        ByteBuffer s = ByteBuffer.allocate(12).order(ByteOrder.LITTLE_ENDIAN);
        s.putInt(value(entries, 0, 0, EBX)).putInt(value(entries, 0, 0, EDX)).putInt(value(entries, 0, 0, ECX));
        return new String(s.array(), java.nio.charset.StandardCharsets.ISO_8859_1);
    }

    /** The features {@code needed} has that {@code offered} lacks, each described with its name and place. */
    public static List<String> missing(byte[] needed, byte[] offered) {
        List<String> out = new ArrayList<>();
        for (Register r : CHECKED) {
            int need = value(needed, r.function(), r.index(), r.reg()) & ~r.ignoredBits();
            int lack = need & ~value(offered, r.function(), r.index(), r.reg());
            for (int bit = 0; bit < Integer.SIZE; bit++) {
                if ((lack & (1 << bit)) != 0) {
                    out.add(r.describe(bit));
                }
            }
        }
        return out;
    }

    /**
     * XCR0 bits {@code needed} has that {@code offered} lacks, named as the XSAVE state
     * components of CPUID.0xD.0:EAX are ("xsave state avx512 opmask ... (XCR0[5])").
     */
    public static List<String> missingXcr0(long needed, long offered) {
        Register components = registerOf("xsave state x87");
        List<String> out = new ArrayList<>();
        long lack = needed & ~offered;
        for (int bit = 0; bit < Long.SIZE; bit++) {
            if ((lack & (1L << bit)) != 0) {
                String name = components.names().get(bit);
                out.add(name == null ? "XCR0[" + bit + "]" : name + " (XCR0[" + bit + "])");
            }
        }
        return out;
    }

    /** The leaves a capsule records as observed: leaf 0 (the vendor) and those of {@link #CHECKED}, as {function, index}. */
    public static List<List<Integer>> observedLeaves() {
        java.util.LinkedHashSet<List<Integer>> leaves = new java.util.LinkedHashSet<>();
        leaves.add(List.of(0, 0));
        for (Register r : CHECKED) {
            leaves.add(List.of(r.function(), r.index()));
        }
        return List.copyOf(leaves);
    }

    /**
     * The leaves of {@link #CHECKED} and leaf 0 (the vendor) as this process reads them
     * with the cpuid instruction, in kvm_cpuid_entry2 layout: what a guest at CPL3 sees on
     * a PVM host, where CPUID is not intercepted.
     */
    public static byte[] hostObserved() {
        List<List<Integer>> leaves = observedLeaves();
        ByteBuffer b = ByteBuffer.allocate(leaves.size() * CapsuleFormat.CPUID_ENTRY_BYTES)
                .order(ByteOrder.LITTLE_ENDIAN);
        for (List<Integer> l : leaves) {
            int[] r = io.vmfork.os.HostHelper.hostCpuid(l.get(0), l.get(1));
            boolean subleaves = l.get(0) == 7 || l.get(0) == 0xD;
            b.putInt(l.get(0)).putInt(l.get(1)).putInt(subleaves ? FLAG_SIGNIFICANT_INDEX : 0);
            b.putInt(r[0]).putInt(r[1]).putInt(r[2]).putInt(r[3]);
            b.putInt(0).putInt(0).putInt(0);
        }
        return b.array();
    }

    private static Map<Integer, String> names(Object... bitAndName) {
        java.util.HashMap<Integer, String> m = new java.util.HashMap<>();
        for (int i = 0; i < bitAndName.length; i += 2) {
            m.put((Integer) bitAndName[i], (String) bitAndName[i + 1]);
        }
        return Map.copyOf(m);
    }
}
