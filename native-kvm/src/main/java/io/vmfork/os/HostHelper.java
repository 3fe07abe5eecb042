package io.vmfork.os;

import com.sun.jna.Native;

/**
 * The plain OS calls of the host helper library ({@link HostLibrary}) that Java cannot make
 * through JNA alone: CPUID and XGETBV as this process sees them, and userfaultfd write
 * protection with the write-protect copier (src/main/c/host/wpcopy.c).
 */
public final class HostHelper {
    static {
        Native.register(HostLibrary.get());
    }

    private HostHelper() {
    }

    private static native void vmfork_host_cpuid(int leaf, int subleaf, int[] out);

    private static native long vmfork_host_xcr0();

    private static native int vmfork_uffd_open();

    private static native int vmfork_uffd_register_wp(int uffd, long addr, long len);

    private static native int vmfork_uffd_protect(int uffd, long addr, long len, int wp);

    private static native int vmfork_uffd_protect_runs(int uffd, long src, long[] runs, int nruns);

    private static native int vmfork_stop_fd();

    private static native int vmfork_stop_signal(int fd);

    private static native int vmfork_wp_copy(int uffd, int stopFd, long src, long span, int layerFd, long[] runs,
            int nruns, int chunkPages, long[] stats);

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
