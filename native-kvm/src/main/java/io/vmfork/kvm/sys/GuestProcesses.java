package io.vmfork.kvm.sys;

import com.sun.jna.Native;
import com.sun.jna.NativeLibrary;
import com.sun.jna.Pointer;

/**
 * The process platform's native side (src/main/c/host/procvm.c and the stub executable,
 * src/main/c/stub): a guest process made, confined and traced with ptrace. These are
 * plain OS calls, not KVM; they live beside the KVM bindings only because they share the
 * host helper library.
 *
 * <p>Every tracing call ({@link #seize}, {@link #run}, {@link #setRegs}, {@link #getRegs},
 * {@link #getXstate}, {@link #setXstate}) must come from the one thread that seized the
 * guest thread: Linux takes ptrace requests only from the tracer.
 */
public final class GuestProcesses {
    static {
        Native.register(NativeLibrary.getInstance("vmforkhost"));
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
            long[] unmaps, int nunmaps, int vcpus, int[] tidsOut, int go);

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

    private static native int vmfork_proc_scan_written(int pagemapFd, long start, long end, long[] ranges, int max);

    private static native int vmfork_proc_pidfd(int pid, int tid);

    private static native int vmfork_watch_create(int[] wakeOut);

    private static native int vmfork_watch_add(int epoll, int fd, long key);

    private static native int vmfork_watch_wake(int wake);

    private static native int vmfork_watch_wait(int epoll, int wake, long[] keys, int max, int timeoutMs);

    private static native long vmfork_proc_readv(int pid, long remote, Pointer local, long len);

    private static native long vmfork_proc_writev(int pid, long remote, Pointer local, long len);

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
    public static int[] launch(int sock, int[] fds, long[] extents, long[] unmaps, int vcpus, boolean go) {
        int[] tids = new int[vcpus];
        check(vmfork_proc_launch(sock, fds, fds.length, extents, extents.length / 5, unmaps, unmaps.length / 2, vcpus,
                tids, go ? 1 : 0), "guest process launch");
        return tids;
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

    /**
     * A pidfd that becomes readable once thread {@code tid} of guest process {@code pid} has
     * exited (PIDFD_THREAD; before Linux 6.9 the process's pidfd). Close-on-exec.
     */
    public static int pidfd(int pid, int tid) {
        return check(vmfork_proc_pidfd(pid, tid), "pidfd_open(" + tid + ")");
    }

    /** An epoll set to watch pidfds in, with an eventfd in it that wakes its waiter: {epoll fd, eventfd}. */
    public static int[] watchCreate() {
        int[] wake = new int[1];
        int ep = check(vmfork_watch_create(wake), "epoll_create1 (guest death watch)");
        return new int[] {ep, wake[0]};
    }

    /** Adds {@code fd} to the set under {@code key} (> 0); it reports once. */
    public static void watchAdd(int epoll, int fd, long key) {
        check(vmfork_watch_add(epoll, fd, key), "epoll_ctl (guest death watch)");
    }

    public static void watchWake(int wake) {
        check(vmfork_watch_wake(wake), "eventfd write (guest death watch)");
    }

    /** Waits for keys that reported into {@code keys}; returns their count (key 0: woken). */
    public static int watchWait(int epoll, int wake, long[] keys, int timeoutMs) {
        return check(vmfork_watch_wait(epoll, wake, keys, keys.length, timeoutMs), "epoll_wait (guest death watch)");
    }

    /**
     * The ranges of [start, end) that process {@code pid} wrote in its private file
     * mappings (present anonymous pages, PAGEMAP_SCAN): start, end pairs, in order.
     */
    public static long[] writtenRanges(int pid, long start, long end) {
        int fd = LibC.checkedOpen("/proc/" + pid + "/pagemap", 0);
        try {
            for (int max = 1024;; max *= 4) {
                long[] r = new long[2 * max];
                int n = vmfork_proc_scan_written(fd, start, end, r, max);
                if (n == -28 /* ENOSPC */) {
                    continue;
                }
                check(n, "PAGEMAP_SCAN of /proc/" + pid + "/pagemap");
                return java.util.Arrays.copyOf(r, 2 * n);
            }
        } finally {
            LibC.closeQuietly(fd);
        }
    }

    /** Reads {@code len} bytes of the guest process at {@code remote} (process_vm_readv); returns the count. */
    public static long read(int pid, long remote, Pointer local, long len) {
        long n = vmfork_proc_readv(pid, remote, local, len);
        if (n < 0) {
            throw new NativeCallException("process_vm_readv", (int) -n);
        }
        return n;
    }

    public static long write(int pid, long remote, Pointer local, long len) {
        long n = vmfork_proc_writev(pid, remote, local, len);
        if (n < 0) {
            throw new NativeCallException("process_vm_writev", (int) -n);
        }
        return n;
    }
}
