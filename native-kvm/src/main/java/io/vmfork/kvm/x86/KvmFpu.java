package io.vmfork.kvm.x86;

import com.sun.jna.Structure;

/** struct kvm_fpu, 416 bytes: the legacy FXSAVE-style view, used where XSAVE is absent. */
@Structure.FieldOrder({"bytes"})
public class KvmFpu extends Structure {
    public static final int SIZE = 416;
    public byte[] bytes = new byte[SIZE];
}
