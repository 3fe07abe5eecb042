package io.vmfork.vmm.x86;

import io.vmfork.kvm.x86.Msr;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.arch.KvmCpuPart;
import io.vmfork.vmm.arch.SegmentState;
import io.vmfork.vmm.arch.SregsState;
import io.vmfork.vmm.state.VcpuState;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * A KVM vCPU's registers, as KVM's ioctls hold them ({@link KvmView}), to and from a
 * {@link VcpuState}: {@link #split} keeps what the guest can change (the {@link CpuState})
 * and what KVM holds that the model leaves open (the {@link KvmCpuPart}), and checks that
 * the rest is what {@link GuestModel} fixes; {@link #join} builds KVM's view back from the
 * model, the CPU state and the part (or, for a state another platform took, the model's
 * values alone). The KVM platform captures and restores through it, and a capsule of format
 * version 3, which stored KVM's view, is read through {@link #split}.
 */
public final class KvmCpuStates {
    private KvmCpuStates() {
    }

    /**
     * Everything KVM_GET/SET_* hold of one vCPU, mapped field by field.
     *
     * @param regs       kvm_regs (the 18 values of {@link CpuState#regs})
     * @param msrIndices the MSRs read or to write, in KVM_SET_MSRS order, and {@code msrValues} theirs
     * @param events     the 64 raw bytes of kvm_vcpu_events
     */
    public record KvmView(long[] regs, SregsState sregs, CpuState.FpuFormat fpuFormat, byte[] fpu, long xcr0,
            int[] msrIndices, long[] msrValues, byte[] events, int mpState) {
    }

    /**
     * The state of vCPU {@code index} of a guest with CPUID {@code cpuidEntries} whose KVM
     * registers are {@code k}. Adds to {@code out} every way {@code k} differs from what the
     * guest model fixes (those values are not kept: a restore takes the model's), each named
     * from {@code w} ("vcpus[0]" gives "vcpus[0].sregs.cs"). The part's own values are
     * checked by {@link GuestModel#check}, not here.
     */
    public static VcpuState split(int index, KvmView k, boolean started, byte[] cpuidEntries, String w,
            List<GuestModel.Violation> out) {
        boolean xsave = GuestModel.cpuidXsave(cpuidEntries);
        boolean fsgsbase = GuestModel.cpuidFsgsbase(cpuidEntries);
        SregsState s = k.sregs();
        GuestModel.checkSregs(s, w + ".sregs", index, xsave, fsgsbase, out);
        List<SegmentState> seg = s.segments();
        long fsBase = seg.get(3).base();
        long gsBase = seg.get(4).base();
        List<SegmentState> data = List.of(seg.get(1), seg.get(2), GuestModel.withBase(seg.get(3), 0),
                GuestModel.withBase(seg.get(4), 0));
        List<Integer> openIdx = new ArrayList<>();
        List<Long> openVal = new ArrayList<>();
        int[] idx = k.msrIndices();
        long[] val = k.msrValues();
        Set<Integer> seen = new HashSet<>();
        for (int i = 0; i < idx.length; i++) {
            String name = String.format("%s.msrs[%d] (0x%x)", w, i, idx[i]);
            if (!GuestModel.isGuestVisible(idx[i])) {
                out.add(new GuestModel.Violation(name, "is not an MSR a vmfork guest can observe", false));
                continue;
            }
            if (!seen.add(idx[i])) {
                out.add(new GuestModel.Violation(name, "is listed twice", false));
                continue;
            }
            if (GuestModel.OPEN_MSRS.contains(idx[i])) {
                openIdx.add(idx[i]);
                openVal.add(val[i]);
                continue;
            }
            long want = GuestModel.msrValue(idx[i], fsBase, gsBase);
            if (val[i] != want) {
                String why = switch (idx[i]) {
                    case Msr.FS_BASE -> "differs from fs.base";
                    case Msr.GS_BASE -> "differs from gs.base";
                    case Msr.IA32_PAT -> String.format("is not the reset value 0x%x", want);
                    default -> "is not 0: only CPL0 code can write it";
                };
                out.add(new GuestModel.Violation(name, String.format("= 0x%x %s", val[i], why), false));
            }
        }
        // KVM_SET_MSRS order: the TSC last (its write fixes the offset from the time of restore).
        int[] pi = new int[openIdx.size()];
        long[] pv = new long[openIdx.size()];
        int j = 0;
        for (int m : GuestModel.OPEN_MSRS) {
            int at = openIdx.indexOf(m);
            if (at >= 0) {
                pi[j] = m;
                pv[j++] = openVal.get(at);
            }
        }
        KvmCpuPart part = new KvmCpuPart(data, s.cr2(), pi, pv, k.events(), k.mpState());
        CpuState cpu = new CpuState(k.regs(), fsBase, gsBase, k.fpuFormat(), k.fpu(), k.xcr0());
        return new VcpuState(index, cpu, part, started);
    }

    /**
     * KVM's view of {@code s} for a vCPU whose KVM lists {@code hostMsrs} (of
     * {@link Msr#GUEST_VISIBLE}, in that order): the model's segment and control registers
     * with the CPU state's FS/GS bases; every MSR the host lists, the model's value or the
     * part's, the TSC last; the part's events and MP state. Without a part (a state the
     * process platform took): the model's data segments and CR2 0, IA32_MISC_ENABLE and the
     * TSC left as the new vCPU has them, no event, RUNNABLE.
     */
    public static KvmView join(VcpuState s, byte[] cpuidEntries, int[] hostMsrs) {
        CpuState c = s.cpu();
        KvmCpuPart k = s.kvm();
        SregsState sregs = GuestModel.sregs(s.index(), c, k, GuestModel.cpuidXsave(cpuidEntries),
                GuestModel.cpuidFsgsbase(cpuidEntries));
        List<Integer> idx = new ArrayList<>();
        List<Long> val = new ArrayList<>();
        for (int m : hostMsrs) {
            if (!GuestModel.OPEN_MSRS.contains(m)) {
                idx.add(m);
                val.add(GuestModel.msrValue(m, c.fsBase(), c.gsBase()));
            }
        }
        if (k != null) {
            // In OPEN_MSRS order whatever the part's: the TSC last (its write fixes the offset from the
            // time of restore). An MSR the model does not leave open is not in a checked part.
            int[] pi = k.msrIndices();
            long[] pv = k.msrValues();
            for (int m : GuestModel.OPEN_MSRS) {
                for (int i = 0; i < pi.length; i++) {
                    if (pi[i] == m) {
                        idx.add(m);
                        val.add(pv[i]);
                    }
                }
            }
        }
        return new KvmView(c.regs(), sregs, c.fpuFormat(), c.fpu(), c.xcr0(),
                idx.stream().mapToInt(Integer::intValue).toArray(), val.stream().mapToLong(Long::longValue).toArray(),
                k != null ? k.events() : new byte[KvmCpuPart.EVENTS_BYTES],
                k != null ? k.mpState() : GuestModel.MP_STATE_RUNNABLE);
    }
}
