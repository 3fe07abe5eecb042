package io.vmfork.vmm.linux;

import java.util.HashMap;
import java.util.Map;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The system call table of a Linux guest (x86-64 numbers, arch/x86/entry/syscalls/
 * syscall_64.tbl): each served call's handler in its family's class. Every other number
 * answers ENOSYS, is counted in the VM's {@link LinuxState#unservedCalls()} and logged once
 * per VM and number, so that a user sees what a program missed.
 */
public final class Syscalls {
    private static final Logger log = LoggerFactory.getLogger(Syscalls.class);
    /** A result that means: the vCPU must not return to the program (it exited, or the VM stops). */
    public static final long STOP = Long.MIN_VALUE;

    @FunctionalInterface
    interface Handler {
        long serve(Call c);
    }

    private record Entry(String name, Handler handler) {
    }

    private static final Map<Integer, Entry> TABLE = new HashMap<>();
    /** Names of calls not served, for the log and the stats (the ones programs are known to make). */
    private static final Map<Integer, String> OTHER_NAMES = new HashMap<>();

    private static void served(int nr, String name, Handler h) {
        if (TABLE.put(nr, new Entry(name, h)) != null) {
            throw new IllegalStateException("system call " + nr + " twice in the table");
        }
    }

    static {
        served(0, "read", IoCalls::read);
        served(1, "write", IoCalls::write);
        served(2, "open", IoCalls::open);
        served(3, "close", IoCalls::close);
        served(5, "fstat", IoCalls::fstat);
        served(8, "lseek", IoCalls::lseek);
        served(9, "mmap", MemoryCalls::mmap);
        served(10, "mprotect", MemoryCalls::mprotect);
        served(11, "munmap", MemoryCalls::munmap);
        served(12, "brk", MemoryCalls::brk);
        served(13, "rt_sigaction", SignalCalls::rtSigaction);
        served(14, "rt_sigprocmask", SignalCalls::rtSigprocmask);
        served(16, "ioctl", IoCalls::ioctl);
        served(17, "pread64", IoCalls::pread);
        served(18, "pwrite64", IoCalls::pread);
        served(19, "readv", IoCalls::readv);
        served(20, "writev", IoCalls::writev);
        served(21, "access", IoCalls::access);
        served(24, "sched_yield", c -> 0);
        served(25, "mremap", MemoryCalls::mremap);
        served(28, "madvise", MemoryCalls::madvise);
        served(35, "nanosleep", TimeCalls::nanosleep);
        served(39, "getpid", ProcessCalls::getpid);
        served(60, "exit", ProcessCalls::exit);
        served(62, "kill", ProcessCalls::kill);
        served(63, "uname", ProcessCalls::uname);
        served(72, "fcntl", IoCalls::fcntl);
        served(79, "getcwd", IoCalls::getcwd);
        served(80, "chdir", FileCalls::chdir);
        served(89, "readlink", IoCalls::readlink);
        served(96, "gettimeofday", TimeCalls::gettimeofday);
        served(97, "getrlimit", ProcessCalls::getrlimit);
        served(99, "sysinfo", ProcessCalls::sysinfo);
        served(102, "getuid", ProcessCalls::getuid);
        served(104, "getgid", ProcessCalls::getgid);
        served(107, "geteuid", ProcessCalls::getuid);
        served(108, "getegid", ProcessCalls::getgid);
        served(110, "getppid", ProcessCalls::getppid);
        served(118, "getresuid", ProcessCalls::getresuid);
        served(120, "getresgid", ProcessCalls::getresgid);
        served(131, "sigaltstack", SignalCalls::sigaltstack);
        served(158, "arch_prctl", ProcessCalls::archPrctl);
        served(160, "setrlimit", ProcessCalls::setrlimit);
        served(186, "gettid", ProcessCalls::getpid);
        served(200, "tkill", ProcessCalls::tkill);
        served(201, "time", TimeCalls::time);
        served(204, "sched_getaffinity", ProcessCalls::schedGetaffinity);
        served(218, "set_tid_address", ProcessCalls::setTidAddress);
        served(228, "clock_gettime", TimeCalls::clockGettime);
        served(229, "clock_getres", TimeCalls::clockGetres);
        served(230, "clock_nanosleep", TimeCalls::clockNanosleep);
        served(231, "exit_group", ProcessCalls::exit);
        served(234, "tgkill", ProcessCalls::tgkill);
        served(217, "getdents64", FileCalls::getdents64);
        served(257, "openat", IoCalls::openat);
        served(262, "newfstatat", IoCalls::newfstatat);
        served(267, "readlinkat", IoCalls::readlinkat);
        served(269, "faccessat", IoCalls::faccessat);
        served(273, "set_robust_list", ProcessCalls::setRobustList);
        served(302, "prlimit64", ProcessCalls::prlimit64);
        served(318, "getrandom", ProcessCalls::getrandom);
        served(334, "rseq", c -> LinuxErrno.err(LinuxErrno.ENOSYS)); // glibc and musl do without it
        served(439, "faccessat2", IoCalls::faccessat);
        String[][] others = {{"15", "rt_sigreturn"}, {"22", "pipe"}, {"32", "dup"}, {"33", "dup2"},
            {"56", "clone"}, {"57", "fork"}, {"58", "vfork"}, {"59", "execve"}, {"61", "wait4"}, {"202", "futex"},
{"293", "pipe2"}, {"294", "inotify_init1"}, {"332", "statx"}, {"435", "clone3"},
            {"292", "dup3"}, {"41", "socket"}, {"7", "poll"}, {"23", "select"}, {"270", "pselect6"},
            {"271", "ppoll"}, {"232", "epoll_wait"}, {"291", "epoll_create1"}, {"290", "eventfd2"}};
        for (String[] o : others) {
            OTHER_NAMES.put(Integer.parseInt(o[0]), o[1]);
        }
    }

    private Syscalls() {
    }

    /** The call's name, or "system call N". */
    public static String name(int nr) {
        Entry e = TABLE.get(nr);
        if (e != null) {
            return e.name();
        }
        String n = OTHER_NAMES.get(nr);
        return n != null ? n : "system call " + nr;
    }

    /** Whether {@code nr} is served (an ENOSYS by design, such as rseq's, counts as served). */
    public static boolean isServed(int nr) {
        return TABLE.containsKey(nr);
    }

    /**
     * Serves system call {@code nr} with its arguments: the value for RAX (a result, or
     * -errno), or {@link #STOP}.
     */
    public static long serve(LinuxState state, LinuxHost host, int nr, long a0, long a1, long a2, long a3, long a4,
            long a5) {
        Entry e = nr >= 0 ? TABLE.get(nr) : null;
        if (e == null) {
            long n;
            synchronized (state) {
                n = state.unserved.merge(nr, 1L, Long::sum);
            }
            if (n == 1) {
                log.info("VM {}: {} is not served; it answers ENOSYS (counted in the VM's unserved calls)",
                        Long.toHexString(host.vmId()), name(nr));
            }
            return LinuxErrno.err(LinuxErrno.ENOSYS);
        }
        return e.handler().serve(new Call(nr, a0, a1, a2, a3, a4, a5, host, state, new UserMemory(host.memory())));
    }
}
