package io.vmfork.vmm.x86;

import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.x86.Cpuid;
import io.vmfork.kvm.x86.KvmRegs;
import io.vmfork.kvm.x86.KvmSregs;
import io.vmfork.kvm.x86.KvmXcrs;
import io.vmfork.vmm.arch.CpuState;

/**
 * Puts a fresh vCPU straight into 64-bit mode at CPL3, the way a vmfork guest starts: no
 * boot code runs (guest CPL0 code is emulated on PVM hosts, about 1 us an instruction).
 * A short list of calls, each one ioctl that fails naming itself.
 */
public final class CpuSetup {
    /** IOPL 3 lets CPL3 code use `out` for hypercalls; bit 1 is always set. */
    public static final long RFLAGS_INITIAL = 0x3002;
    /** XCR0: x87, SSE, AVX. */
    static final long XCR0_WANTED = 0x7;

    private CpuSetup() {
    }

    public static void setCpuid(KvmVcpu vcpu, Cpuid cpuid) {
        vcpu.setCpuid(cpuid);
    }

    /**
     * Ordering requirements: CPUID before SREGS (KVM checks CR4 bits such as OSXSAVE and
     * FSGSBASE against the guest's CPUID), SREGS before XCRS (XSETBV needs CR4.OSXSAVE).
     */
    public static void setLongModeUser(KvmVcpu vcpu, Cpuid cpuid) {
        KvmSregs s = vcpu.getSregs();
        // Every value here is GuestModel's, which a restore checks a captured state against.
        s.cr3 = GuestModel.CR3;
        s.cr0 = GuestModel.CR0;
        long ebx7 = cpuid.register(7, 0, 1);
        s.cr4 = GuestModel.cr4(cpuid.hasXsave(), ebx7 != -1 && (ebx7 & 1) != 0);
        s.efer = GuestModel.EFER;
        set(s.cs, GuestModel.USER_CODE);
        for (var seg : new io.vmfork.kvm.x86.KvmSegment[] {s.ds, s.es, s.fs, s.gs, s.ss}) {
            set(seg, GuestModel.USER_DATA);
        }
        vcpu.setSregs(s);
        if (cpuid.hasXsave()) {
            long supported = cpuid.register(0xd, 0, 0);
            KvmXcrs x = new KvmXcrs();
            x.nrXcrs = 1;
            x.xcrs[0].xcr = 0;
            x.xcrs[0].value = XCR0_WANTED & (supported == -1 ? 0x3 : supported);
            vcpu.setXcrs(x);
        }
    }

    private static void set(io.vmfork.kvm.x86.KvmSegment k, io.vmfork.vmm.arch.SegmentState g) {
        k.set(g.base(), g.limit(), g.selector(), g.type(), g.present(), g.dpl(), g.db(), g.s(), g.l(), g.g(), g.avl(),
                g.unusable());
    }

    /** The 18 registers (kvm_regs order) a vCPU starts with at {@code rip}: others 0. */
    public static long[] entryRegs(long rip, long rsp, long rdi) {
        long[] r = new long[CpuState.REGS];
        r[CpuState.RIP] = rip;
        r[CpuState.RSP] = rsp;
        r[CpuState.RDI] = rdi;
        r[CpuState.RFLAGS] = RFLAGS_INITIAL;
        return r;
    }

    public static void setEntry(KvmVcpu vcpu, long rip, long rsp, long rdi) {
        KvmRegs r = new KvmRegs();
        r.rip = rip;
        r.rsp = rsp;
        r.rdi = rdi;
        r.rflags = RFLAGS_INITIAL;
        vcpu.setRegs(r);
    }
}
