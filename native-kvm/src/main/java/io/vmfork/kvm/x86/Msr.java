package io.vmfork.kvm.x86;

/** Model-specific register numbers the VMM saves and restores. */
public final class Msr {
    public static final int IA32_SYSENTER_CS = 0x174;
    public static final int IA32_SYSENTER_ESP = 0x175;
    public static final int IA32_SYSENTER_EIP = 0x176;
    public static final int IA32_TSC = 0x10;
    public static final int IA32_MISC_ENABLE = 0x1a0;
    public static final int IA32_PAT = 0x277;
    public static final int STAR = 0xc0000081;
    public static final int LSTAR = 0xc0000082;
    public static final int CSTAR = 0xc0000083;
    public static final int SYSCALL_MASK = 0xc0000084;
    public static final int FS_BASE = 0xc0000100;
    public static final int GS_BASE = 0xc0000101;
    public static final int KERNEL_GS_BASE = 0xc0000102;
    public static final int TSC_AUX = 0xc0000103;

    /**
     * What a vmfork guest can observe or change. FS/GS base first: a CPL3 guest sets them
     * with WRFSBASE/WRGSBASE. TSC last: on restore it is written after everything else.
     */
    public static final int[] GUEST_VISIBLE = {
        FS_BASE, GS_BASE, KERNEL_GS_BASE, STAR, LSTAR, CSTAR, SYSCALL_MASK, TSC_AUX,
        IA32_SYSENTER_CS, IA32_SYSENTER_ESP, IA32_SYSENTER_EIP, IA32_PAT, IA32_MISC_ENABLE, IA32_TSC,
    };

    private Msr() {
    }
}
