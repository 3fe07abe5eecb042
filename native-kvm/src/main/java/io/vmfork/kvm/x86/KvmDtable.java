package io.vmfork.kvm.x86;

import com.sun.jna.Structure;

/** struct kvm_dtable: GDTR or IDTR. */
@Structure.FieldOrder({"base", "limit", "padding"})
public class KvmDtable extends Structure {
    public long base;
    public short limit;
    public short[] padding = new short[3];

    public static class ByValue extends KvmDtable implements Structure.ByValue {
    }
}
