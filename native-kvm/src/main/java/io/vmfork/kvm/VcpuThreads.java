package io.vmfork.kvm;

import com.sun.jna.Native;
import io.vmfork.os.Errno;
import io.vmfork.os.HostLibrary;
import io.vmfork.os.NativeCallException;

/**
 * The KVM calls of the host helper library ({@link HostLibrary}, src/main/c/host/vmforkhost.c):
 * it installs a do-nothing signal handler and sends that signal to one thread, which is
 * how a vCPU thread is kicked out of a blocking KVM_RUN, and it lets this process's vCPUs
 * carry an XSAVE component. A Java callback cannot be a signal handler, so this one piece
 * is C; it is still called through JNA like everything else.
 */
public final class VcpuThreads {
    static {
        Native.register(HostLibrary.get());
    }

    private VcpuThreads() {
    }

    private static native int vmfork_install_kick_signal(int signo);

    private static native int vmfork_kick_thread(long pthread, int signo);

    private static native long vmfork_self_thread();

    private static native int vmfork_request_guest_xstate(int feature);

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
}
