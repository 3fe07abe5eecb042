package io.vmfork.kvm.x86;

import com.sun.jna.Structure;

/** struct kvm_clock_data: the VM's kvmclock, in ns. */
@Structure.FieldOrder({"clock", "flags", "pad0", "realtime", "hostTsc", "pad"})
public class KvmClockData extends Structure {
    public long clock;
    public int flags;
    public int pad0;
    public long realtime;
    public long hostTsc;
    public int[] pad = new int[4];
}
