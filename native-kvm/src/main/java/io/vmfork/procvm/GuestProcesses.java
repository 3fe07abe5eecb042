package io.vmfork.procvm;

import com.sun.jna.Native;
import io.vmfork.os.Errno;
import io.vmfork.os.HostLibrary;
import io.vmfork.os.NativeCallException;

/**
 * The process platform's native side (src/main/c/host/procvm.c and the stub executable,
 * src/main/c/stub), bound through the host helper library ({@link HostLibrary}): a guest
 * process made, confined and traced with ptrace. What it needs of other processes that is
 * not particular to guests (their memory, a pidfd, a death watch) is {@link
 * io.vmfork.os.Processes}.
 *
 * <p>Every tracing call ({@link #seize}, {@link #run}, {@link #setRegs}, {@link #getRegs},
 * {@link #getXstate}, {@link #setXstate}) must come from the one thread that seized the
 * guest thread: Linux takes ptrace requests only from the tracer.
 */
public final class GuestProcesses {
    static {
        Native.register(HostLibrary.get());
    }

    /** Registers of struct user_regs_struct (asm/user_64.h), as {@link #run} takes and gives them. */
    public static final int USER_REGS = 27;
    public static final int UR_R15 = 0, UR_R14 = 1, UR_R13 = 2, UR_R12 = 3, UR_RBP = 4, UR_RBX = 5, UR_R11 = 6,
            UR_R10 = 7, UR_R9 = 8, UR_R8 = 9, UR_RAX = 10, UR_RCX = 11, UR_RDX = 12, UR_RSI = 13, UR_RDI = 14,
            UR_ORIG_RAX = 15, UR_RIP = 16, UR_CS = 17, UR_EFLAGS = 18, UR_RSP = 19, UR_SS = 20, UR_FS_BASE = 21,
            UR_GS_BASE = 22, UR_DS = 23, UR_ES = 24, UR_FS = 25, UR_GS = 26;

    /** What {@link #run} stopped on. */
    public static final int STOP_SIGNAL = 1, STOP_SYSCALL = 2, STOP_EXITED = 3, STOP_KILLED = 4;
    /** Words of the info array {@link #run} fills. */
    public static final int INFO_WORDS = 8;

    private GuestProcesses() {
    }

    private static native int vmfork_proc_spawn(int stubFd, int[] sockOut, int[] nsOut);

    private static native String vmfork_proc_spawn_step();

    private static native String vmfork_proc_spawn_note();

    private static native int vmfork_proc_launch(int sock, int[] fds, int nfds, long[] extents, int nextents,
            long[] unmaps, int nunmaps, int vcpus, int[] tidsOut, int go, int[] uffdOut);

    private static native int vmfork_proc_go(int sock);

    private static native int vmfork_proc_seize(int tid);

    private static native int vmfork_proc_run(int tid, long[] regsIn, int deliver, long[] regsOut, long[] info);

    private static native int vmfork_proc_setregs(int tid, long[] regs);

    private static native int vmfork_proc_getregs(int tid, long[] regs);

    private static native int vmfork_proc_get_xstate(int tid, byte[] buf, int len);

    private static native int vmfork_proc_set_xstate(int tid, byte[] buf, int len);

    private static native int vmfork_xstate_size();

    private static native int vmfork_proc_kick(int pid, int tid);

    private static native int vmfork_proc_unmaps(int pid, long[] ranges, int max);

    private static native int vmfork_proc_reap(int pid, int nohang);

    private static native int vmfork_proc_wait(int tid, long[] regsOut, long[] info);

    private static int check(int rc, String what) {
        if (rc < 0) {
            throw new NativeCallException(what, -rc);
        }
        return rc;
    }

    /** A new guest process (the stub, waiting for its launch): its pid, control socket and namespaces. */
    public record Spawned(int pid, int sock, int namespaces) {
    }

    /** A spawn that failed, and the step of it that did ({@link #step}: "clone", "execveat of the stub", ...). */
    public static final class SpawnException extends NativeCallException {
        private final String step;

        SpawnException(String step, int errno) {
            super("guest process spawn: " + step, errno);
            this.step = step;
        }

        public String step() {
            return step;
        }
    }

    /**
     * Spawns the stub executable opened as {@code stubFd} in a confined process of its own,
     * in every namespace the host allows ({@link #refusedNamespaces}).
     */
    public static Spawned spawn(int stubFd) {
        int[] sock = new int[1];
        int[] ns = new int[1];
        int pid = vmfork_proc_spawn(stubFd, sock, ns);
        if (pid < 0) {
            throw new SpawnException(vmfork_proc_spawn_step(), -pid);
        }
        return new Spawned(pid, sock[0], ns[0]);
    }

    /**
     * The namespaces this host refused to guest processes, each with the step and errno
     * ("user (clone: EPERM), mount (mount of its empty root: EPERM)"); empty when every one
     * was allowed. Known once a spawn has succeeded.
     */
    public static String refusedNamespaces() {
        String s = vmfork_proc_spawn_note();
        return s == null ? "" : s;
    }

    /**
     * Gives the stub its memory ({@code extents}: guest address, length, fd index, file
     * offset, shared; five longs each) and the ranges to unmap (address, length), and has
     * it make {@code vcpus} threads; returns their host tids, vCPU 0's first. With
     * {@code go}, GO follows at once (every thread is traced already: see vmfork_proc_launch).
     */
    public static Launched launch(int sock, int[] fds, long[] extents, long[] unmaps, int vcpus, boolean go) {
        int[] tids = new int[vcpus];
        int[] uffd = new int[1];
        check(vmfork_proc_launch(sock, fds, fds.length, extents, extents.length / 5, unmaps, unmaps.length / 2, vcpus,
                tids, go ? 1 : 0, uffd), "guest process launch");
        return new Launched(tids, uffd[0]);
    }

    /**
     * A launched guest process: its threads' host tids, vCPU 0's first, and for private RAM
     * the userfaultfd that tracks its writes (asynchronous write-protect; the caller owns
     * and closes it), else the -errno of why there is none (-ENOENT: shared RAM).
     */
    public record Launched(int[] tids, int writeTracker) {
    }

    /** What the stub must unmap before the guest runs ([stack], [vdso], [vvar]): address, length pairs. */
    public static long[] unmaps(int pid) {
        long[] r = new long[2 * 64];
        int n = check(vmfork_proc_unmaps(pid, r, 64), "reading /proc/" + pid + "/maps");
        return java.util.Arrays.copyOf(r, 2 * n);
    }

    /** Waits for a guest process no tracer will reap (its tracer gone, or never seized); false if there was none. */
    public static boolean reap(int pid) {
        int rc = vmfork_proc_reap(pid, 0);
        if (rc == -Errno.ECHILD) {
            return false;
        }
        check(rc, "waitpid");
        return true;
    }

    /**
     * Reaps {@code tid} (a thread of a killed guest process, or the process itself) if it
     * has ended, without waiting: true when it is gone (reaped now, or before).
     */
    public static boolean reapIfEnded(int tid) {
        int rc = vmfork_proc_reap(tid, 1);
        if (rc == -Errno.ECHILD) {
            return true;
        }
        if (rc == -Errno.EAGAIN) {
            return false;
        }
        check(rc, "waitpid");
        return (rc & 0xff) != 0x7f; // a stop reported late is not an end
    }

    /** Waits for the traced thread's next stop without resuming it; a STOP_ kind as {@link #run}. */
    public static int await(int tid, long[] regsOut, long[] info) {
        return check(vmfork_proc_wait(tid, regsOut, info), "waitpid (ptrace)");
    }

    /** Lets the stub confine itself (seccomp) and stop every thread for its tracer. */
    public static void go(int sock) {
        check(vmfork_proc_go(sock), "guest process go");
    }

    public static void seize(int tid) {
        check(vmfork_proc_seize(tid), "PTRACE_SEIZE");
    }

    /**
     * Sets the registers when {@code regsIn} is not null, resumes the thread and waits for
     * its next stop; returns a STOP_ kind with {@code regsOut} and {@code info} filled.
     */
    public static int run(int tid, long[] regsIn, long[] regsOut, long[] info) {
        return check(vmfork_proc_run(tid, regsIn, 0, regsOut, info), "guest thread run (ptrace)");
    }

    public static void setRegs(int tid, long[] regs) {
        check(vmfork_proc_setregs(tid, regs), "PTRACE_SETREGS");
    }

    public static void getRegs(int tid, long[] regs) {
        check(vmfork_proc_getregs(tid, regs), "PTRACE_GETREGS");
    }

    /** The thread's XSAVE area (user ABI layout, as KVM's kvm_xsave region holds it). */
    public static byte[] getXstate(int tid, int size) {
        byte[] buf = new byte[size];
        int n = check(vmfork_proc_get_xstate(tid, buf, size), "PTRACE_GETREGSET NT_X86_XSTATE");
        return n == size ? buf : java.util.Arrays.copyOf(buf, n);
    }

    public static void setXstate(int tid, byte[] area) {
        check(vmfork_proc_set_xstate(tid, area, area.length), "PTRACE_SETREGSET NT_X86_XSTATE");
    }

    /** Bytes of this CPU's user-ABI XSAVE area (CPUID 0xD). */
    public static int xstateSize() {
        return check(vmfork_xstate_size(), "CPUID 0xD");
    }

    /** Makes a running guest thread stop soon; false if it is gone. */
    public static boolean kick(int pid, int tid) {
        int rc = vmfork_proc_kick(pid, tid);
        if (rc == -Errno.ESRCH) {
            return false;
        }
        check(rc, "tgkill");
        return true;
    }
}
