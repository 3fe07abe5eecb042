package io.vmfork.kvm.x86;

import com.sun.jna.Structure;

/** struct kvm_segment: one segment register with its hidden descriptor cache. */
@Structure.FieldOrder({"base", "limit", "selector", "type", "present", "dpl", "db", "s", "l", "g",
        "avl", "unusable", "padding"})
public class KvmSegment extends Structure {
    public long base;
    public int limit;
    public short selector;
    public byte type, present, dpl, db, s, l, g, avl, unusable, padding;

    public KvmSegment() {
    }

    public static class ByValue extends KvmSegment implements Structure.ByValue {
    }

    /** Copies every field of {@code o} into this segment. */
    public void set(long base, int limit, int selector, int type, int present, int dpl, int db, int s,
            int l, int g, int avl, int unusable) {
        this.base = base;
        this.limit = limit;
        this.selector = (short) selector;
        this.type = (byte) type;
        this.present = (byte) present;
        this.dpl = (byte) dpl;
        this.db = (byte) db;
        this.s = (byte) s;
        this.l = (byte) l;
        this.g = (byte) g;
        this.avl = (byte) avl;
        this.unusable = (byte) unusable;
    }
}
