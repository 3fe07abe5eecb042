package io.vmfork.vmm.arch;

import java.util.Arrays;
import java.util.List;

/**
 * Segment, descriptor-table and control registers of a vCPU (kvm_sregs).
 * {@code segments} are in kvm_sregs order: cs ds es fs gs ss tr ldt.
 */
public record SregsState(List<SegmentState> segments, long gdtBase, int gdtLimit, long idtBase, int idtLimit,
        long cr0, long cr2, long cr3, long cr4, long cr8, long efer, long apicBase, long[] interruptBitmap) {
    public static final int SEGMENTS = 8;

    public SregsState {
        if (segments.size() != SEGMENTS) {
            throw new IllegalArgumentException("kvm_sregs has 8 segments, got " + segments.size());
        }
        if (interruptBitmap.length != 4) {
            throw new IllegalArgumentException("interrupt bitmap has 4 words, got " + interruptBitmap.length);
        }
        segments = List.copyOf(segments);
        interruptBitmap = interruptBitmap.clone();
    }

    @Override
    public long[] interruptBitmap() {
        return interruptBitmap.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof SregsState x && segments.equals(x.segments) && gdtBase == x.gdtBase
                && gdtLimit == x.gdtLimit && idtBase == x.idtBase && idtLimit == x.idtLimit && cr0 == x.cr0
                && cr2 == x.cr2 && cr3 == x.cr3 && cr4 == x.cr4 && cr8 == x.cr8 && efer == x.efer
                && apicBase == x.apicBase && Arrays.equals(interruptBitmap, x.interruptBitmap);
    }

    @Override
    public int hashCode() {
        return segments.hashCode() * 31 + Long.hashCode(cr3);
    }
}
