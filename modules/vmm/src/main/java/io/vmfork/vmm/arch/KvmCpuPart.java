package io.vmfork.vmm.arch;

import java.util.Arrays;
import java.util.List;

/**
 * What a KVM vCPU holds beyond its {@link CpuState} that the guest model does not fix:
 * optional in a vCPU's state (only the KVM platform takes it). Everything else KVM has of a
 * vCPU (CS, SS, TR, LDTR, GDTR, IDTR, CR0, CR3, CR4, CR8, EFER, the APIC base, the MSRs a
 * CPL3 guest cannot write) is what {@link io.vmfork.vmm.x86.GuestModel} says, and is
 * derived from it on restore.
 *
 * @param dataSegments DS, ES, FS and GS as KVM holds them (a CPL3 guest may load a null
 *                     selector), FS and GS with base 0: their bases are the {@link CpuState}'s
 * @param cr2          CR2, the last page-fault address (not readable at CPL3)
 * @param msrIndices   the MSRs whose values the model leaves open (the TSC, IA32_MISC_ENABLE), and
 *                     {@code msrValues} theirs, in the order KVM_SET_MSRS takes them (the TSC last)
 * @param events       the 64 bytes of struct kvm_vcpu_events: pending exceptions, interrupts, NMIs,
 *                     SMIs and the interrupt shadow
 * @param mpState      kvm_mp_state.mp_state (KVM_MP_STATE_*)
 */
public record KvmCpuPart(List<SegmentState> dataSegments, long cr2, int[] msrIndices, long[] msrValues,
        byte[] events, int mpState) {
    /** DS, ES, FS, GS. */
    public static final int DATA_SEGMENTS = 4;
    /** Positions in {@link #dataSegments}. */
    public static final int DS = 0, ES = 1, FS = 2, GS = 3;
    /** sizeof(struct kvm_vcpu_events). */
    public static final int EVENTS_BYTES = 64;

    public KvmCpuPart {
        if (dataSegments.size() != DATA_SEGMENTS) {
            throw new IllegalArgumentException("DS, ES, FS and GS are 4 segments, got " + dataSegments.size());
        }
        if (msrIndices.length != msrValues.length) {
            throw new IllegalArgumentException("MSR indices and values differ in length");
        }
        if (events.length != EVENTS_BYTES) {
            throw new IllegalArgumentException("kvm_vcpu_events is 64 bytes, got " + events.length);
        }
        dataSegments = List.copyOf(dataSegments);
        msrIndices = msrIndices.clone();
        msrValues = msrValues.clone();
        events = events.clone();
    }

    @Override
    public int[] msrIndices() {
        return msrIndices.clone();
    }

    @Override
    public long[] msrValues() {
        return msrValues.clone();
    }

    @Override
    public byte[] events() {
        return events.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof KvmCpuPart x && dataSegments.equals(x.dataSegments) && cr2 == x.cr2
                && Arrays.equals(msrIndices, x.msrIndices) && Arrays.equals(msrValues, x.msrValues)
                && Arrays.equals(events, x.events) && mpState == x.mpState;
    }

    @Override
    public int hashCode() {
        return dataSegments.hashCode() * 31 + Arrays.hashCode(msrValues);
    }
}
