package io.vmfork.kvm.sys;

import com.sun.jna.Native;
import com.sun.jna.NativeLibrary;

/**
 * The small C library that ships in this jar (src/main/c/host): it installs a do-nothing
 * signal handler and sends that signal to one thread, which is how a vCPU thread is
 * kicked out of a blocking KVM_RUN. A Java callback cannot be a signal handler, so this
 * one piece is C; it is still called through JNA like everything else.
 */
public final class HostHelper {
    static {
        Native.register(NativeLibrary.getInstance("vmforkhost"));
    }

    private HostHelper() {
    }

    private static native int vmfork_install_kick_signal(int signo);

    private static native int vmfork_kick_thread(long pthread, int signo);

    private static native long vmfork_self_thread();

    private static native void vmfork_host_cpuid(int leaf, int subleaf, int[] out);

    private static native long vmfork_host_xcr0();

    private static native int vmfork_request_guest_xstate(int feature);

    private static native int vmfork_uffd_open();

    private static native int vmfork_uffd_register_wp(int uffd, long addr, long len);

    private static native int vmfork_uffd_protect(int uffd, long addr, long len, int wp);

    private static native int vmfork_uffd_protect_runs(int uffd, long src, long[] runs, int nruns);

    private static native int vmfork_stop_fd();

    private static native int vmfork_stop_signal(int fd);

    private static native int vmfork_wp_copy(int uffd, int stopFd, long src, long span, int layerFd, long[] runs,
            int nruns, int chunkPages, long[] stats);

    public static void installKickSignal(int signo) {
        int rc = vmfork_install_kick_signal(signo);
        if (rc != 0) {
            throw new NativeCallException("sigaction(" + signo + ")", -rc);
        }
    }

    /** Sends the kick signal; false if the thread is already gone. */
    public static boolean kick(long pthread, int signo) {
        int rc = vmfork_kick_thread(pthread, signo);
        if (rc == Errno.ESRCH) {
            return false;
        }
        if (rc != 0) {
            throw new NativeCallException("pthread_kill", rc);
        }
        return true;
    }

    public static long selfThread() {
        return vmfork_self_thread();
    }

    /**
     * CPUID as this process sees it at CPL3: EAX, EBX, ECX, EDX of {@code leaf}/{@code
     * subleaf} (all 0 above the CPU's highest leaf). On PVM hosts a guest sees the same.
     */
    public static int[] hostCpuid(int leaf, int subleaf) {
        int[] out = new int[4];
        vmfork_host_cpuid(leaf, subleaf, out);
        return out;
    }

    /** XCR0 in force for this process (XGETBV), or 0 where XSAVE is not enabled. */
    public static long hostXcr0() {
        return vmfork_host_xcr0();
    }

    /**
     * Asks the kernel to let this process's vCPUs carry XSAVE component {@code feature}
     * (arch_prctl ARCH_REQ_XCOMP_GUEST_PERM); false where the CPU or kernel does not
     * offer it, or when a vCPU of this process already exists. Never throws: the component is
     * optional.
     */
    public static boolean requestGuestXstate(int feature) {
        // Every refusal means the same to the VMM: the component is not carried. EINVAL
        // (kernels before 5.17 or an unknown component), EOPNOTSUPP (no such CPU
        // feature), EBUSY (a vCPU exists already).
        return vmfork_request_guest_xstate(feature) == 0;
    }

    // ---- write-protect copy (src/main/c/host/wpcopy.c) -----------------------------------

    private static int check(int rc, String what) {
        if (rc < 0) {
            throw new NativeCallException(what, -rc);
        }
        return rc;
    }

    /** A new userfaultfd for write-protect faults (non-blocking, close-on-exec). */
    public static int uffdOpen() {
        return check(vmfork_uffd_open(), "userfaultfd");
    }

    /** Registers [addr, addr+len) of this process with {@code uffd} for write-protect faults. */
    public static void uffdRegisterWriteProtect(int uffd, long addr, long len) {
        check(vmfork_uffd_register_wp(uffd, addr, len), "UFFDIO_REGISTER");
    }

    /** Sets or lifts write protection on [addr, addr+len); lifting wakes blocked writers. */
    public static void uffdProtect(int uffd, long addr, long len, boolean protect) {
        check(vmfork_uffd_protect(uffd, addr, len, protect ? 1 : 0), "UFFDIO_WRITEPROTECT");
    }

    /**
     * Write-protects every run ({@code runs}: offset, length pairs from {@code src}); on
     * failure none is left protected.
     */
    public static void uffdProtectRuns(int uffd, long src, long[] runs) {
        check(vmfork_uffd_protect_runs(uffd, src, runs, runs.length / 2), "UFFDIO_WRITEPROTECT");
    }

    /** An eventfd to stop {@link #wpCopy} with {@link #stopSignal}. */
    public static int stopFd() {
        return check(vmfork_stop_fd(), "eventfd");
    }

    public static void stopSignal(int fd) {
        check(vmfork_stop_signal(fd), "eventfd write");
    }

    /**
     * Copies write-protected runs of {@code [src, src+span)} into {@code layerFd} at the same
     * offsets, serving write faults on {@code uffd} first, lifting the protection as it
     * goes and, whatever happens, from every run before it returns. Blocks until done.
     *
     * @return 0, or -errno (-ECANCELED when stopped through {@code stopFd})
     */
    public static int wpCopy(int uffd, int stopFd, long src, long span, int layerFd, long[] runs, int chunkPages,
            long[] stats) {
        return vmfork_wp_copy(uffd, stopFd, src, span, layerFd, runs, runs.length / 2, chunkPages, stats);
    }
}
