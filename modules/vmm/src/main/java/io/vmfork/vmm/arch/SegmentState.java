package io.vmfork.vmm.arch;

/** One segment register with its hidden descriptor cache (kvm_segment). */
public record SegmentState(long base, int limit, int selector, int type, int present, int dpl, int db, int s, int l,
        int g, int avl, int unusable) {
}
