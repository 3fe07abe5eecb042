package io.vmfork.kvm.x86;

import com.sun.jna.Structure;

/** struct kvm_mp_state. */
@Structure.FieldOrder({"mpState"})
public class KvmMpState extends Structure {
    public static final int RUNNABLE = 0;
    public static final int UNINITIALIZED = 1;
    public static final int HALTED = 3;
    public int mpState;
}
