package io.vmfork.kvm.x86;

import com.sun.jna.Structure;

/** struct kvm_xcrs: extended control registers (XCR0). */
@Structure.FieldOrder({"nrXcrs", "flags", "xcrs", "padding"})
public class KvmXcrs extends Structure {
    public static final int MAX = 16;
    public int nrXcrs;
    public int flags;
    public Xcr[] xcrs = (Xcr[]) new Xcr().toArray(MAX);
    public long[] padding = new long[16];

    @Structure.FieldOrder({"xcr", "reserved", "value"})
    public static class Xcr extends Structure {
        public int xcr;
        public int reserved;
        public long value;
    }
}
