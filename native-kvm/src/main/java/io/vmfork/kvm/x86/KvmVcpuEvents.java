package io.vmfork.kvm.x86;

import com.sun.jna.Structure;

/**
 * struct kvm_vcpu_events: pending exception, interrupt, NMI and SMI state. Kept as its
 * 64 raw bytes plus the flag accessors the VMM needs: the layout is fixed by the KVM ABI
 * and the VMM never edits it, only carries it from one vCPU to another.
 */
@Structure.FieldOrder({"bytes"})
public class KvmVcpuEvents extends Structure {
    public static final int SIZE = 64;
    /** Offset of the u32 flags field. */
    public static final int FLAGS_OFFSET = 20;
    public byte[] bytes = new byte[SIZE];
}
