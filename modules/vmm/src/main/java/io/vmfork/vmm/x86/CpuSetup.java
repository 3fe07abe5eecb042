package io.vmfork.vmm.x86;

import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.x86.Cpuid;
import io.vmfork.kvm.x86.KvmRegs;
import io.vmfork.kvm.x86.KvmSregs;
import io.vmfork.kvm.x86.KvmXcrs;

/**
 * Puts a fresh vCPU straight into 64-bit mode at CPL3, the way a vmfork guest starts: no
 * boot code runs (guest CPL0 code is emulated on PVM hosts, about 1 us an instruction).
 * A short list of calls, each one ioctl that fails naming itself.
 */
public final class CpuSetup {
    static final long CR0_PE = 1, CR0_MP = 1 << 1, CR0_ET = 1 << 4, CR0_NE = 1 << 5, CR0_WP = 1 << 16,
            CR0_AM = 1 << 18, CR0_PG = 1L << 31;
    static final long CR4_PAE = 1 << 5, CR4_OSFXSR = 1 << 9, CR4_OSXMMEXCPT = 1 << 10,
            CR4_FSGSBASE = 1 << 16, CR4_OSXSAVE = 1 << 18;
    static final long EFER_LME = 1 << 8, EFER_LMA = 1 << 10;
    /** IOPL 3 lets CPL3 code use `out` for hypercalls; bit 1 is always set. */
    public static final long RFLAGS_INITIAL = 0x3002;
    static final int USER_CS = 0x33, USER_DS = 0x2b;
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
        s.cr3 = GuestLayout.PML4;
        s.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG;
        s.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
        if (cpuid.hasXsave()) {
            s.cr4 |= CR4_OSXSAVE;
        }
        long ebx7 = cpuid.register(7, 0, 1);
        if (ebx7 != -1 && (ebx7 & 1) != 0) {
            s.cr4 |= CR4_FSGSBASE;
        }
        s.efer = EFER_LME | EFER_LMA;
        s.cs.set(0, 0xffffffff, USER_CS, 11, 1, 3, 0, 1, 1, 1, 0, 0);
        for (var seg : new io.vmfork.kvm.x86.KvmSegment[] {s.ds, s.es, s.fs, s.gs, s.ss}) {
            seg.set(0, 0xffffffff, USER_DS, 3, 1, 3, 1, 1, 0, 1, 0, 0);
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

    public static void setEntry(KvmVcpu vcpu, long rip, long rsp, long rdi) {
        KvmRegs r = new KvmRegs();
        r.rip = rip;
        r.rsp = rsp;
        r.rdi = rdi;
        r.rflags = RFLAGS_INITIAL;
        vcpu.setRegs(r);
    }
}
