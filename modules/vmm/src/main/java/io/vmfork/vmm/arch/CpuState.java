package io.vmfork.vmm.arch;

import java.util.Arrays;

/**
 * The CPU state of one x86-64 vCPU as every platform has it: what a CPL3 guest can change
 * itself. A KVM vCPU and a traced host thread both map to and from it (their platforms do
 * the mapping); a capsule stores it, so a capture moves between platforms.
 *
 * @param regs      the general registers, RIP and RFLAGS: 18 values in the order of {@link #RAX}..{@link #RFLAGS}
 *                  (struct kvm_regs' order, which {@link io.vmfork.vmm.platform.ExecContext} uses too)
 * @param fsBase    the FS base (the guest's thread pointer; WRFSBASE, or a capture of the FS segment)
 * @param gsBase    the GS base
 * @param fpuFormat how {@code fpu} is laid out
 * @param fpu       the XSAVE area in the CPU's standard format (Intel SDM vol. 1, ch. 13), its size the
 *                  area's (at least 4 KiB, KVM's kvm_xsave region; larger with components beyond it, such as
 *                  AMX tiles); or, on a KVM host without XSAVE ioctls only, the 416-byte struct kvm_fpu
 * @param xcr0      XCR0 in force for the guest: the XSAVE state components it may use; 0 where unknown
 *                  (a KVM host without XCRs)
 */
public record CpuState(long[] regs, long fsBase, long gsBase, FpuFormat fpuFormat, byte[] fpu, long xcr0) {

    /** How the FPU/SSE/AVX state is laid out. */
    public enum FpuFormat {
        /** The XSAVE standard format: 512-byte legacy area, 64-byte header, then the components. */
        XSAVE,
        /** struct kvm_fpu (KVM_GET_FPU), 416 bytes: only KVM hosts without XSAVE ioctls take or restore it. */
        FXSAVE
    }

    public static final int REGS = 18;
    /** Indices in {@link #regs}: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags. */
    public static final int RAX = 0, RBX = 1, RCX = 2, RDX = 3, RSI = 4, RDI = 5, RSP = 6, RBP = 7, R8 = 8, R9 = 9,
            R10 = 10, R11 = 11, R12 = 12, R13 = 13, R14 = 14, R15 = 15, RIP = 16, RFLAGS = 17;
    /** Bytes of KVM's kvm_xsave region, the least an XSAVE area is stored with. */
    public static final int XSAVE_MIN_BYTES = 4096;
    /** Bytes of struct kvm_fpu. */
    public static final int FXSAVE_BYTES = 416;

    public CpuState {
        if (regs.length != REGS) {
            throw new IllegalArgumentException("a vCPU has 18 general registers with RIP and RFLAGS, got "
                    + regs.length);
        }
        if (fpuFormat == null) {
            throw new IllegalArgumentException("no FPU format");
        }
        regs = regs.clone();
        fpu = fpu.clone();
    }

    @Override
    public long[] regs() {
        return regs.clone();
    }

    @Override
    public byte[] fpu() {
        return fpu.clone();
    }

    public long rip() {
        return regs[RIP];
    }

    /** The same state with other general registers (a fork child's RAX, a rewound RIP). */
    public CpuState withRegs(long[] newRegs) {
        return new CpuState(newRegs, fsBase, gsBase, fpuFormat, fpu, xcr0);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof CpuState x && Arrays.equals(regs, x.regs) && fsBase == x.fsBase && gsBase == x.gsBase
                && fpuFormat == x.fpuFormat && Arrays.equals(fpu, x.fpu) && xcr0 == x.xcr0;
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(regs);
    }

    @Override
    public String toString() {
        return String.format("CpuState[rip=0x%x rsp=0x%x rflags=0x%x fs=0x%x gs=0x%x %s %d bytes xcr0=0x%x]",
                regs[RIP], regs[RSP], regs[RFLAGS], fsBase, gsBase, fpuFormat, fpu.length, xcr0);
    }
}
