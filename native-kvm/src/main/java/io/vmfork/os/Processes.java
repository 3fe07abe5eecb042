package io.vmfork.os;

import com.sun.jna.Native;
import com.sun.jna.Pointer;

/**
 * Plain OS calls on other processes of this host, through the host helper library
 * ({@link HostLibrary}, src/main/c/host/procvm.c): their memory (process_vm_readv and
 * process_vm_writev, what they wrote by PAGEMAP_SCAN) and their end (a pidfd per thread,
 * an epoll set to wait on pidfds with an eventfd that wakes its waiter).
 */
public final class Processes {
    static {
        Native.register(HostLibrary.get());
    }

    private Processes() {
    }

    private static native int vmfork_proc_scan_written(int pagemapFd, long start, long end, long[] ranges, int max);

    private static native int vmfork_proc_scan_written_wp(int pagemapFd, long start, long end, long[] ranges, int max);

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

    /**
     * A pidfd that becomes readable once thread {@code tid} of process {@code pid} has
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

    /** Runs the tracked scan reports at most; more are merged into the last (never a page lost). */
    private static final int TRACKED_MAX_RUNS = 4096;

    /**
     * The ranges of [start, end) that process {@code pid} wrote since the last call, in a
     * process whose RAM its asynchronous write-protect userfaultfd tracks (GuestProcesses
     * launch's write tracker), write-protecting them again in the same walk: start, end
     * pairs, in order. The process must not run meanwhile. Past {@value #TRACKED_MAX_RUNS}
     * runs the last one stretches over the rest, so a page written is never left out.
     */
    public static long[] writtenRangesTracked(int pid, long start, long end) {
        int fd = LibC.checkedOpen("/proc/" + pid + "/pagemap", 0);
        try {
            long[] r = new long[2 * TRACKED_MAX_RUNS];
            int n = check(vmfork_proc_scan_written_wp(fd, start, end, r, TRACKED_MAX_RUNS),
                    "PAGEMAP_SCAN (write-protect) of /proc/" + pid + "/pagemap");
            return java.util.Arrays.copyOf(r, 2 * n);
        } finally {
            LibC.closeQuietly(fd);
        }
    }

    /** Reads {@code len} bytes of process {@code pid} at {@code remote} (process_vm_readv); returns the count. */
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
