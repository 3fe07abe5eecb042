package io.vmfork.vmm.linux;

import static io.vmfork.vmm.linux.LinuxErrno.*;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

/**
 * The process: identity, limits, the end, TLS (arch_prctl) and randomness (docs/linux.md,
 * "Identity"). The program is its VM's only process: pid and tid {@link #PID}, parent
 * {@link #PARENT_PID} (nothing above it in the VM), uid and gid {@link ProcessStart#UID}.
 */
final class ProcessCalls {
    /** What getpid and gettid answer: the program is its VM's first and only process. */
    static final long PID = 1;
    /** What getppid answers: no parent inside the VM. */
    static final long PARENT_PID = 0;
    /** uname's node name: the same in every VM, so that a fork changes nothing a program could have cached. */
    static final String NODE_NAME = "vmfork";
    static final String SYSNAME = "Linux", RELEASE = "6.1.0-vmfork", VERSION = "#1 vmfork", MACHINE = "x86_64",
            DOMAIN = "(none)";
    static final long ARCH_SET_GS = 0x1001, ARCH_SET_FS = 0x1002, ARCH_GET_FS = 0x1003, ARCH_GET_GS = 0x1004;
    /** The lowest non-canonical user address: FS and GS bases must lie below it. */
    static final long TASK_SIZE = 0x00007ffffffff000L;
    static final long RLIM_INFINITY = -1;
    static final int RLIMIT_DATA = 2, RLIMIT_STACK = 3, RLIMIT_CORE = 4, RLIMIT_NPROC = 6, RLIMIT_NOFILE = 7,
            RLIMIT_AS = 9, RLIM_NLIMITS = 16;
    static final long NOFILE = 1024;
    static final long ROBUST_LIST_HEAD_SIZE = 24;
    static final long GRND_NONBLOCK = 1, GRND_RANDOM = 2, GRND_INSECURE = 4;
    static final int MAX_RANDOM = 1 << 20;

    private ProcessCalls() {
    }

    static long getpid(Call c) {
        return PID;
    }

    static long getppid(Call c) {
        return PARENT_PID;
    }

    static long getuid(Call c) {
        return ProcessStart.UID;
    }

    static long getgid(Call c) {
        return ProcessStart.GID;
    }

    /** getresuid(ruid, euid, suid): EFAULT if any pointer is not the program's. */
    static long getresuid(Call c) {
        return threeInts(c, ProcessStart.UID);
    }

    static long getresgid(Call c) {
        return threeInts(c, ProcessStart.GID);
    }

    private static long threeInts(Call c, long v) {
        for (long p : new long[] {c.a0(), c.a1(), c.a2()}) {
            if (!c.mem().ok(p, 4)) {
                return err(EFAULT);
            }
        }
        for (long p : new long[] {c.a0(), c.a1(), c.a2()}) {
            c.mem().writeInt(p, (int) v);
        }
        return 0;
    }

    /** exit(status), exit_group(status): the VM ends as exited with status & 0xff; what stdout holds without a newline is a last reply. */
    static long exit(Call c) {
        IoCalls.flushStdout(c.host(), c.state());
        c.host().exit((int) (c.a0() & 0xff));
        return Syscalls.STOP;
    }

    /**
     * kill(pid, sig) of itself (pid 1, 0 or -1): signal 0 answers 0; any other ends the VM
     * as crashed, killed by that signal (signals are not delivered to handlers yet).
     * EINVAL: sig outside 0..64; ESRCH: another pid.
     */
    static long kill(Call c) {
        int pid = (int) c.a0(); // pid_t, int: the register's upper half is not the caller's
        return signalSelf(c, pid == PID || pid == 0 || pid == -1, (int) c.a1(), "kill");
    }

    /** tkill(tid, sig): as kill, for tid 1. */
    static long tkill(Call c) {
        return signalSelf(c, (int) c.a0() == PID, (int) c.a1(), "tkill");
    }

    /** tgkill(tgid, tid, sig): as kill, for tgid 1 and tid 1. */
    static long tgkill(Call c) {
        return signalSelf(c, (int) c.a0() == PID && (int) c.a1() == PID, (int) c.a2(), "tgkill");
    }

    private static long signalSelf(Call c, boolean self, long sig, String call) {
        if (sig < 0 || sig > SignalCalls.NSIG) {
            return err(EINVAL);
        }
        if (!self) {
            return err(ESRCH);
        }
        if (sig == 0) {
            return 0;
        }
        IoCalls.flushStdout(c.host(), c.state());
        c.host().killed((int) sig, call);
        return Syscalls.STOP;
    }

    /** uname(buf): struct utsname, 6 fields of 65 bytes. EFAULT: buf. */
    static long uname(Call c) {
        if (!c.mem().ok(c.a0(), 6 * 65)) {
            return err(EFAULT);
        }
        byte[] u = new byte[6 * 65];
        String[] f = {SYSNAME, NODE_NAME, RELEASE, VERSION, MACHINE, DOMAIN};
        for (int i = 0; i < f.length; i++) {
            byte[] b = f[i].getBytes(StandardCharsets.US_ASCII);
            System.arraycopy(b, 0, u, i * 65, Math.min(b.length, 64));
        }
        c.mem().write(c.a0(), u);
        return 0;
    }

    /**
     * sysinfo(info): uptime since the VM's clock origin, no load, RAM as the VM's memory
     * size and what its map has not handed out, one process. EFAULT: info.
     */
    static long sysinfo(Call c) {
        if (!c.mem().ok(c.a0(), 112)) {
            return err(EFAULT);
        }
        LinuxState s = c.state();
        long total = c.mem().size();
        long used;
        synchronized (s) {
            long freeRanges = s.free.entrySet().stream().mapToLong(e -> e.getValue() - e.getKey()).sum();
            used = (s.brk - s.brkStart) + (s.mmapTop - s.mmapBottom - freeRanges) + s.stackSize;
        }
        ByteBuffer b = ByteBuffer.allocate(112).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(0, System.nanoTime() / 1_000_000_000L);
        b.putLong(32, total);
        b.putLong(40, Math.max(0, total - used));
        b.putShort(80, (short) 1);
        b.putInt(104, 1); // mem_unit
        c.mem().write(c.a0(), b.array());
        return 0;
    }

    /** getrlimit(resource, rlim). EINVAL: resource; EFAULT: rlim. */
    static long getrlimit(Call c) {
        if (c.a0() < 0 || c.a0() >= RLIM_NLIMITS) {
            return err(EINVAL);
        }
        long[] l = limit(c, (int) c.a0());
        return c.mem().putLongs(c.a1(), l[0], l[1]) ? 0 : err(EFAULT);
    }

    /** setrlimit(resource, rlim): recorded; what getrlimit answers after. EINVAL: resource, cur above max; EFAULT. */
    static long setrlimit(Call c) {
        if (c.a0() < 0 || c.a0() >= RLIM_NLIMITS) {
            return err(EINVAL);
        }
        long[] n = c.mem().getLongs(c.a1(), 2);
        if (n == null) {
            return err(EFAULT);
        }
        if (Long.compareUnsigned(n[0], n[1]) > 0) {
            return err(EINVAL);
        }
        synchronized (c.state()) {
            c.state().rlimits.put((int) c.a0(), n);
        }
        return 0;
    }

    /**
     * prlimit64(pid, resource, new, old) of itself (pid 0 or 1): the old limit written
     * first, then the new one recorded. ESRCH: another pid; EINVAL: resource, or cur above
     * max; EFAULT: either pointer.
     */
    static long prlimit64(Call c) {
        if ((int) c.a0() != 0 && (int) c.a0() != PID) {
            return err(ESRCH);
        }
        if (c.a1() < 0 || c.a1() >= RLIM_NLIMITS) {
            return err(EINVAL);
        }
        int res = (int) c.a1();
        long[] n = null;
        if (c.a2() != 0) {
            n = c.mem().getLongs(c.a2(), 2);
            if (n == null) {
                return err(EFAULT);
            }
            if (Long.compareUnsigned(n[0], n[1]) > 0) {
                return err(EINVAL);
            }
        }
        if (c.a3() != 0) {
            long[] l = limit(c, res);
            if (!c.mem().putLongs(c.a3(), l[0], l[1])) {
                return err(EFAULT);
            }
        }
        if (n != null) {
            synchronized (c.state()) {
                c.state().rlimits.put(res, n);
            }
        }
        return 0;
    }

    /** A resource's limit: as set, else the VM's: the stack's size, 1024 files, no core, one process, RAM for memory. */
    private static long[] limit(Call c, int res) {
        synchronized (c.state()) {
            long[] set = c.state().rlimits.get(res);
            if (set != null) {
                return set.clone();
            }
            return switch (res) {
                case RLIMIT_STACK -> new long[] {c.state().stackSize, c.state().stackSize};
                case RLIMIT_NOFILE -> new long[] {NOFILE, NOFILE};
                case RLIMIT_CORE -> new long[] {0, 0};
                case RLIMIT_NPROC -> new long[] {1, 1};
                case RLIMIT_AS, RLIMIT_DATA -> new long[] {c.mem().size(), c.mem().size()};
                default -> new long[] {RLIM_INFINITY, RLIM_INFINITY};
            };
        }
    }

    /**
     * arch_prctl(code, addr): ARCH_SET_FS and ARCH_SET_GS set the base in the vCPU's
     * registers (on the process platform, the traced thread's), ARCH_GET_FS and ARCH_GET_GS
     * write it to addr. EPERM: a base at or above the user address limit; EFAULT: addr for
     * a GET; EINVAL: another code (CET and the like).
     */
    static long archPrctl(Call c) {
        long code = c.a0(), addr = c.a1();
        if (code == ARCH_SET_FS || code == ARCH_SET_GS) {
            if (Long.compareUnsigned(addr, TASK_SIZE) >= 0) {
                return err(EPERM);
            }
            if (code == ARCH_SET_FS) {
                c.host().setFsBase(addr);
            } else {
                c.host().setGsBase(addr);
            }
            return 0;
        }
        if (code == ARCH_GET_FS || code == ARCH_GET_GS) {
            long v = code == ARCH_GET_FS ? c.host().fsBase() : c.host().gsBase();
            return c.mem().putLongs(addr, v) ? 0 : err(EFAULT);
        }
        return err(EINVAL);
    }

    /** set_tid_address(tidptr): recorded; returns the tid. */
    static long setTidAddress(Call c) {
        synchronized (c.state()) {
            c.state().clearTidAddress = c.a0();
        }
        return PID;
    }

    /** set_robust_list(head, len): recorded. EINVAL: len is not the size of struct robust_list_head (24). */
    static long setRobustList(Call c) {
        if (c.a1() != ROBUST_LIST_HEAD_SIZE) {
            return err(EINVAL);
        }
        synchronized (c.state()) {
            c.state().robustListHead = c.a0();
            c.state().robustListLength = c.a1();
        }
        return 0;
    }

    /**
     * sched_getaffinity(pid, size, mask) of itself: CPU 0 only (one thread, one vCPU).
     * ESRCH: another pid; EINVAL: size < 8 or not a multiple of 8; EFAULT: mask. Returns 8.
     */
    static long schedGetaffinity(Call c) {
        if ((int) c.a0() != 0 && (int) c.a0() != PID) {
            return err(ESRCH);
        }
        if (c.a1() < 8 || (c.a1() & 7) != 0) {
            return err(EINVAL);
        }
        return c.mem().putLongs(c.a2(), 1L) ? 8 : err(EFAULT);
    }

    /**
     * getrandom(buf, count, flags): fresh bytes from the VMM's generator, never a parent's
     * (a fork child draws its own). EINVAL: unknown flags; EFAULT: buf. At most 1 MiB a call.
     */
    static long getrandom(Call c) {
        if ((c.a2() & ~(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE)) != 0
                || (c.a2() & (GRND_RANDOM | GRND_INSECURE)) == (GRND_RANDOM | GRND_INSECURE)) {
            return err(EINVAL);
        }
        if (c.a1() < 0) {
            return err(EINVAL);
        }
        int n = (int) Math.min(c.a1(), MAX_RANDOM);
        if (!c.mem().ok(c.a0(), n)) {
            return err(EFAULT);
        }
        byte[] b = new byte[n];
        c.host().random(b);
        c.mem().write(c.a0(), b);
        return n;
    }
}
