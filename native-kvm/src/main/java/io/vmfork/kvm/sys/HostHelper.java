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
}
