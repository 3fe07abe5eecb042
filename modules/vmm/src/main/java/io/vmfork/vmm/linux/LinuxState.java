package io.vmfork.vmm.linux;

import java.util.Arrays;
import java.util.Map;
import java.util.TreeMap;

/**
 * The Linux personality's state of one VM: everything the program could observe of its
 * "kernel" beyond CPU state and RAM. A plain object with no host resource in it, so that a
 * fork copies it ({@link #copy}) at the instant it captures the VM, and a capsule can carry
 * it field by field in a later version (docs/linux.md, "State").
 *
 * <p>Memory map: the image, then the program break from {@code brkStart} up to {@code brk};
 * the mmap area below the stack, handed out downwards from {@code mmapTop} (its lowest
 * address so far {@code mmapBottom}), with the ranges given back in {@code free}. Memory
 * that is free, or below {@code mmapBottom} and above the break, is zero: a range is
 * zeroed when it is given back, so that an anonymous mapping always reads zero.
 *
 * <p>Guarded by this object's monitor for the copy; otherwise touched by the VM's vCPU
 * thread only (one thread: the program's).
 */
public final class LinuxState {
    // The memory map.
    long brkStart;
    long brk;
    long mmapBottom;
    long mmapTop;
    long stackTop;
    long stackSize;
    /** Given-back ranges of the mmap area, start to end, coalesced; all zero. */
    TreeMap<Long, Long> free = new TreeMap<>();

    // The process start.
    String execfn = "";
    /** What readlink("/proc/self/exe") answers: absolute, as glibc's static start asserts. */
    String exePath = "/";

    // Files: the read-only root (a host directory's absolute path, or null: no files), the
    // working directory inside it, the open files by fd.
    String root;
    String cwd = "/";
    TreeMap<Integer, FileCalls.OpenFile> files = new TreeMap<>();

    // Threads (one): set_tid_address, set_robust_list.
    long clearTidAddress;
    long robustListHead;
    long robustListLength;

    // Signals: recorded, never delivered (docs/linux.md).
    long signalMask;
    long altStackSp;
    long altStackFlags = SignalCalls.SS_DISABLE;
    long altStackSize;
    /** Signal number to struct kernel_sigaction {handler, flags, restorer, mask}. */
    TreeMap<Integer, long[]> sigactions = new TreeMap<>();

    // Limits set with setrlimit/prlimit64: resource to {cur, max}.
    TreeMap<Integer, long[]> rlimits = new TreeMap<>();

    // Standard streams over the message channel.
    /** The rest of the request line being read from stdin, and where the next read starts in it. */
    byte[] stdin = new byte[0];
    int stdinOffset;
    boolean stdinEnded;
    /** stdout bytes after the last newline, not yet a reply. */
    byte[] stdoutPartial = new byte[0];

    /** System calls answered ENOSYS: number to count. */
    TreeMap<Integer, Long> unserved = new TreeMap<>();

    LinuxState() {
    }

    /** A deep copy: what a fork child starts from. */
    public synchronized LinuxState copy() {
        LinuxState c = new LinuxState();
        c.brkStart = brkStart;
        c.brk = brk;
        c.mmapBottom = mmapBottom;
        c.mmapTop = mmapTop;
        c.stackTop = stackTop;
        c.stackSize = stackSize;
        c.free = new TreeMap<>(free);
        c.execfn = execfn;
        c.exePath = exePath;
        c.root = root;
        c.cwd = cwd;
        files.forEach((fd, f) -> c.files.put(fd, f.copy()));
        c.clearTidAddress = clearTidAddress;
        c.robustListHead = robustListHead;
        c.robustListLength = robustListLength;
        c.signalMask = signalMask;
        c.altStackSp = altStackSp;
        c.altStackFlags = altStackFlags;
        c.altStackSize = altStackSize;
        c.sigactions = deep(sigactions);
        c.rlimits = deep(rlimits);
        c.stdin = stdin.clone();
        c.stdinOffset = stdinOffset;
        c.stdinEnded = stdinEnded;
        c.stdoutPartial = stdoutPartial.clone();
        c.unserved = new TreeMap<>(unserved);
        return c;
    }

    private static TreeMap<Integer, long[]> deep(TreeMap<Integer, long[]> m) {
        TreeMap<Integer, long[]> c = new TreeMap<>();
        m.forEach((k, v) -> c.put(k, v.clone()));
        return c;
    }

    /** System calls this VM's program made that are not served (ENOSYS), by number, with their counts. */
    public synchronized Map<Integer, Long> unservedCalls() {
        return new TreeMap<>(unserved);
    }

    /** The program break now. */
    public synchronized long programBreak() {
        return brk;
    }

    /** The recorded disposition of {@code signal} ({handler, flags, restorer, mask}), or null for the default. */
    public synchronized long[] sigaction(int signal) {
        long[] a = sigactions.get(signal);
        return a == null ? null : a.clone();
    }

    @Override
    public synchronized boolean equals(Object o) {
        if (!(o instanceof LinuxState x)) {
            return false;
        }
        synchronized (x) {
            return brkStart == x.brkStart && brk == x.brk && mmapBottom == x.mmapBottom && mmapTop == x.mmapTop
                    && stackTop == x.stackTop && stackSize == x.stackSize && free.equals(x.free)
                    && execfn.equals(x.execfn) && exePath.equals(x.exePath) && java.util.Objects.equals(root, x.root)
                    && cwd.equals(x.cwd) && files.equals(x.files) && clearTidAddress == x.clearTidAddress
                    && robustListHead == x.robustListHead && robustListLength == x.robustListLength
                    && signalMask == x.signalMask && altStackSp == x.altStackSp && altStackFlags == x.altStackFlags
                    && altStackSize == x.altStackSize && sameArrays(sigactions, x.sigactions)
                    && sameArrays(rlimits, x.rlimits) && Arrays.equals(stdin, x.stdin) && stdinOffset == x.stdinOffset
                    && stdinEnded == x.stdinEnded && Arrays.equals(stdoutPartial, x.stdoutPartial)
                    && unserved.equals(x.unserved);
        }
    }

    private static boolean sameArrays(TreeMap<Integer, long[]> a, TreeMap<Integer, long[]> b) {
        if (!a.keySet().equals(b.keySet())) {
            return false;
        }
        for (var e : a.entrySet()) {
            if (!Arrays.equals(e.getValue(), b.get(e.getKey()))) {
                return false;
            }
        }
        return true;
    }

    @Override
    public synchronized int hashCode() {
        return Long.hashCode(brkStart) * 31 + Long.hashCode(mmapTop);
    }
}
