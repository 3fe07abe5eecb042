package io.vmfork.kvm.x86;

import com.sun.jna.Structure;

/** struct kvm_sregs: segment, descriptor-table and control registers, EFER, APIC base. */
@Structure.FieldOrder({"cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt", "gdt", "idt",
        "cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apicBase", "interruptBitmap"})
public class KvmSregs extends Structure {
    public static final int SIZE = 312;

    public KvmSegment.ByValue cs = new KvmSegment.ByValue();
    public KvmSegment.ByValue ds = new KvmSegment.ByValue();
    public KvmSegment.ByValue es = new KvmSegment.ByValue();
    public KvmSegment.ByValue fs = new KvmSegment.ByValue();
    public KvmSegment.ByValue gs = new KvmSegment.ByValue();
    public KvmSegment.ByValue ss = new KvmSegment.ByValue();
    public KvmSegment.ByValue tr = new KvmSegment.ByValue();
    public KvmSegment.ByValue ldt = new KvmSegment.ByValue();
    public KvmDtable.ByValue gdt = new KvmDtable.ByValue();
    public KvmDtable.ByValue idt = new KvmDtable.ByValue();
    public long cr0, cr2, cr3, cr4, cr8, efer, apicBase;
    public long[] interruptBitmap = new long[4];

    /** The eight segments in kvm_sregs order: cs ds es fs gs ss tr ldt. */
    public KvmSegment[] segments() {
        return new KvmSegment[] {cs, ds, es, fs, gs, ss, tr, ldt};
    }
}
