package io.vmfork.vmm.state;

import java.util.Arrays;

/**
 * Everything a guest can observe of one vCPU: registers, FPU/SSE/AVX state, the MSRs it
 * can touch, pending events and the MP state. Live host resources (fds, kvm_run) are
 * never part of it.
 *
 * @param regs       kvm_regs, 18 values: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags
 * @param fpuFormat  how {@code fpu} is laid out: XSAVE (the kvm_xsave area, 4 KiB or KVM_GET_XSAVE2's larger
 *                   one) or FXSAVE (the 416-byte kvm_fpu, only where KVM has no XSAVE ioctls)
 * @param xcr0       XCR0, or 0 where the host has no XCRs
 * @param msrIndices MSR numbers, and {@code msrValues} their values in the same order
 * @param events     the 64 raw bytes of kvm_vcpu_events
 * @param started    whether the vCPU runs guest code: vCPU 0 always; a secondary vCPU once the guest started
 *                   it (VCPU_START), until it stops (VCPU_STOP). A vCPU that is not started keeps its
 *                   registers but is not entered until the guest starts it, which sets them anew.
 */
public record VcpuState(int index, long[] regs, SregsState sregs, FpuFormat fpuFormat, byte[] fpu, long xcr0,
        int[] msrIndices, long[] msrValues, byte[] events, int mpState, boolean started) {

    public enum FpuFormat { XSAVE, FXSAVE }

    public static final int REGS = 18;
    /** Indices of the 18 registers (struct kvm_regs order: rax rbx rcx rdx rsi rdi rsp rbp r8..r15 rip rflags). */
    public static final int RAX = 0, RBX = 1, RCX = 2, RDX = 3, RSI = 4, RDI = 5, RSP = 6, RBP = 7, R8 = 8, R9 = 9,
            R10 = 10, R11 = 11, R12 = 12, R13 = 13, R14 = 14, R15 = 15, RIP = 16, RFLAGS = 17;

    /** A running vCPU's state (every vCPU of a one-vCPU VM). */
    public VcpuState(int index, long[] regs, SregsState sregs, FpuFormat fpuFormat, byte[] fpu, long xcr0,
            int[] msrIndices, long[] msrValues, byte[] events, int mpState) {
        this(index, regs, sregs, fpuFormat, fpu, xcr0, msrIndices, msrValues, events, mpState, true);
    }

    public VcpuState {
        if (regs.length != REGS) {
            throw new IllegalArgumentException("kvm_regs has 18 registers, got " + regs.length);
        }
        if (msrIndices.length != msrValues.length) {
            throw new IllegalArgumentException("MSR indices and values differ in length");
        }
        regs = regs.clone();
        fpu = fpu.clone();
        msrIndices = msrIndices.clone();
        msrValues = msrValues.clone();
        events = events.clone();
    }

    @Override
    public long[] regs() {
        return regs.clone();
    }

    @Override
    public byte[] fpu() {
        return fpu.clone();
    }

    @Override
    public int[] msrIndices() {
        return msrIndices.clone();
    }

    @Override
    public long[] msrValues() {
        return msrValues.clone();
    }

    @Override
    public byte[] events() {
        return events.clone();
    }

    public long rip() {
        return regs[RIP];
    }

    /** The same state with some registers changed (a fork child's RAX, a rewound RIP). */
    public VcpuState withRegs(long[] newRegs) {
        return new VcpuState(index, newRegs, sregs, fpuFormat, fpu, xcr0, msrIndices, msrValues, events, mpState,
                started);
    }

    /** The same state, started or not. */
    public VcpuState withStarted(boolean s) {
        return new VcpuState(index, regs, sregs, fpuFormat, fpu, xcr0, msrIndices, msrValues, events, mpState, s);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof VcpuState x && index == x.index && Arrays.equals(regs, x.regs) && sregs.equals(x.sregs)
                && fpuFormat == x.fpuFormat && Arrays.equals(fpu, x.fpu) && xcr0 == x.xcr0
                && Arrays.equals(msrIndices, x.msrIndices) && Arrays.equals(msrValues, x.msrValues)
                && Arrays.equals(events, x.events) && mpState == x.mpState && started == x.started;
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(regs);
    }

    @Override
    public String toString() {
        return String.format("VcpuState[%d%s rip=0x%x rsp=0x%x cr3=0x%x]", index, started ? "" : " not started",
                regs[RIP], regs[6], sregs.cr3());
    }
}
