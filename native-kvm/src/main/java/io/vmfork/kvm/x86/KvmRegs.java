package io.vmfork.kvm.x86;

import com.sun.jna.Structure;

/** struct kvm_regs: the general-purpose registers, RIP and RFLAGS. */
@Structure.FieldOrder({"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags"})
public class KvmRegs extends Structure {
    public static final int SIZE = 144;

    public long rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
    public long r8, r9, r10, r11, r12, r13, r14, r15;
    public long rip, rflags;

    /** All 18 registers in kvm_regs order. */
    public long[] toArray() {
        return new long[] {rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp,
            r8, r9, r10, r11, r12, r13, r14, r15, rip, rflags};
    }

    public void fromArray(long[] v) {
        if (v.length != 18) {
            throw new IllegalArgumentException("kvm_regs has 18 registers, got " + v.length);
        }
        rax = v[0]; rbx = v[1]; rcx = v[2]; rdx = v[3]; rsi = v[4]; rdi = v[5]; rsp = v[6]; rbp = v[7];
        r8 = v[8]; r9 = v[9]; r10 = v[10]; r11 = v[11]; r12 = v[12]; r13 = v[13]; r14 = v[14]; r15 = v[15];
        rip = v[16]; rflags = v[17];
    }
}
