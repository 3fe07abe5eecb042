package io.vmfork.os;

import com.sun.jna.LastErrorException;
import com.sun.jna.Native;
import com.sun.jna.NativeLibrary;
import com.sun.jna.Pointer;

/**
 * The one native boundary to libc. Every declaration is here, and each is wrapped once
 * by a checked method that throws {@link NativeCallException} naming the call and errno.
 * Direct mapping (no proxy) keeps the cost of a call near that of the syscall itself.
 */
public final class LibC {
    public static final int O_RDWR = 0x2;
    public static final int O_RDONLY = 0x0;
    public static final int O_CLOEXEC = 0x80000;

    public static final int PROT_NONE = 0x0;
    public static final int PROT_READ = 0x1;
    public static final int PROT_WRITE = 0x2;
    public static final int MAP_SHARED = 0x01;
    public static final int MAP_PRIVATE = 0x02;
    public static final int MAP_FIXED = 0x10;
    public static final int MAP_ANONYMOUS = 0x20;
    public static final int MAP_NORESERVE = 0x4000;

    public static final int MADV_DONTNEED = 4;
    public static final int MADV_REMOVE = 9;

    public static final int MFD_CLOEXEC = 0x1;
    /** An executable memfd (Linux 6.3; refused with EACCES where vm.memfd_noexec is 2). */
    public static final int MFD_EXEC = 0x10;

    public static final int SEEK_SET = 0;
    public static final int SEEK_DATA = 3;
    public static final int SEEK_HOLE = 4;

    static {
        Native.register(NativeLibrary.getInstance("c"));
    }

    private LibC() {
    }

    // ---- raw declarations -------------------------------------------------------------

    private static native int open(String path, int flags) throws LastErrorException;

    private static native int close(int fd) throws LastErrorException;

    private static native int ioctl(int fd, long request, long arg) throws LastErrorException;

    private static native int ioctl(int fd, long request, Pointer arg) throws LastErrorException;

    private static native long mmap(long addr, long length, int prot, int flags, int fd, long offset)
            throws LastErrorException;

    private static native int munmap(long addr, long length) throws LastErrorException;

    private static native int madvise(long addr, long length, int advice) throws LastErrorException;

    private static native int memfd_create(String name, int flags) throws LastErrorException;

    private static native int ftruncate(int fd, long length) throws LastErrorException;

    private static native long lseek(int fd, long offset, int whence) throws LastErrorException;

    private static native long pread(int fd, Pointer buf, long count, long offset) throws LastErrorException;

    private static native long pwrite(int fd, Pointer buf, long count, long offset) throws LastErrorException;

    private static native int kill(int pid, int sig) throws LastErrorException;

    private static native int setpriority(int which, int who, int prio) throws LastErrorException;

    private static native long syscall(long number) throws LastErrorException;

    // ---- checked wrappers -------------------------------------------------------------

    public static final int SIGKILL = 9;

    /** Sends {@code sig} to process {@code pid}; false when it no longer exists. */
    public static boolean sendSignal(int pid, int sig) {
        try {
            kill(pid, sig);
            return true;
        } catch (LastErrorException e) {
            if (e.getErrorCode() == Errno.ESRCH) {
                return false;
            }
            throw new NativeCallException("kill(" + pid + ")", e.getErrorCode());
        }
    }


    public static int checkedOpen(String path, int flags) {
        try {
            return open(path, flags | O_CLOEXEC);
        } catch (LastErrorException e) {
            throw new NativeCallException("open(" + path + ")", e.getErrorCode());
        }
    }

    public static void checkedClose(int fd) {
        try {
            close(fd);
        } catch (LastErrorException e) {
            throw new NativeCallException("close", e.getErrorCode());
        }
    }

    /** Closes quietly: for release paths that must go on releasing the rest. */
    public static void closeQuietly(int fd) {
        if (fd < 0) {
            return;
        }
        try {
            close(fd);
        } catch (LastErrorException ignored) {
            // Nothing to do: the fd is gone either way (close never leaves it open on Linux).
        }
    }

    public static int ioctl(int fd, long request, long arg, String name) {
        try {
            return ioctl(fd, request, arg);
        } catch (LastErrorException e) {
            throw new NativeCallException(name, e.getErrorCode());
        }
    }

    public static int ioctl(int fd, long request, Pointer arg, String name) {
        try {
            return ioctl(fd, request, arg);
        } catch (LastErrorException e) {
            throw new NativeCallException(name, e.getErrorCode());
        }
    }

    /** KVM_RUN and friends: returns -errno instead of throwing, for EINTR on the hot path. */
    public static int ioctlErrno(int fd, long request, long arg) {
        try {
            return ioctl(fd, request, arg);
        } catch (LastErrorException e) {
            return -e.getErrorCode();
        }
    }

    public static long mmap(long addr, long length, int prot, int flags, int fd, long offset, String what) {
        try {
            long p = mmap(addr, length, prot, flags, fd, offset);
            if (p == -1L) {
                throw new NativeCallException("mmap(" + what + ")", "MAP_FAILED");
            }
            return p;
        } catch (LastErrorException e) {
            throw new NativeCallException("mmap(" + what + ")", e.getErrorCode());
        }
    }

    public static void munmap(long addr, long length, String what) {
        try {
            munmap(addr, length);
        } catch (LastErrorException e) {
            throw new NativeCallException("munmap(" + what + ")", e.getErrorCode());
        }
    }

    public static void madvise(long addr, long length, int advice, String what) {
        try {
            madvise(addr, length, advice);
        } catch (LastErrorException e) {
            throw new NativeCallException("madvise(" + what + ")", e.getErrorCode());
        }
    }

    public static int memfdCreate(String name) {
        try {
            return memfd_create(name, MFD_CLOEXEC);
        } catch (LastErrorException e) {
            throw new NativeCallException("memfd_create(" + name + ")", e.getErrorCode());
        }
    }

    /**
     * A memfd that can be executed: MFD_EXEC, so that vm.memfd_noexec 1 (which seals a memfd
     * made without it against execution) does not apply; a kernel older than 6.3 does not
     * know the flag (EINVAL), and its memfds are executable anyway.
     */
    public static int memfdCreateExecutable(String name) {
        try {
            return memfd_create(name, MFD_CLOEXEC | MFD_EXEC);
        } catch (LastErrorException e) {
            if (e.getErrorCode() != Errno.EINVAL) {
                throw new NativeCallException("memfd_create(" + name + ", MFD_EXEC)", e.getErrorCode());
            }
        }
        return memfdCreate(name);
    }

    public static void ftruncate(int fd, long length, String what) {
        try {
            ftruncate(fd, length);
        } catch (LastErrorException e) {
            throw new NativeCallException("ftruncate(" + what + ")", e.getErrorCode());
        }
    }

    /**
     * lseek with SEEK_DATA/SEEK_HOLE: returns the offset, or -1 when there is no more
     * data (ENXIO), which is how a sparse memfd says "the rest is holes".
     */
    public static long seekData(int fd, long offset, int whence) {
        try {
            return lseek(fd, offset, whence);
        } catch (LastErrorException e) {
            if (e.getErrorCode() == Errno.ENXIO) {
                return -1L;
            }
            throw new NativeCallException(whence == SEEK_DATA ? "lseek(SEEK_DATA)" : "lseek(SEEK_HOLE)",
                    e.getErrorCode());
        }
    }

    public static void preadFully(int fd, Pointer buf, long count, long offset, String what) {
        long done = 0;
        while (done < count) {
            long n;
            try {
                n = pread(fd, buf.share(done), count - done, offset + done);
            } catch (LastErrorException e) {
                if (e.getErrorCode() == Errno.EINTR) {
                    continue;
                }
                throw new NativeCallException("pread(" + what + ")", e.getErrorCode());
            }
            if (n == 0) {
                throw new NativeCallException("pread(" + what + ")", "unexpected end of file");
            }
            done += n;
        }
    }

    public static void pwriteFully(int fd, Pointer buf, long count, long offset, String what) {
        long done = 0;
        while (done < count) {
            long n;
            try {
                n = pwrite(fd, buf.share(done), count - done, offset + done);
            } catch (LastErrorException e) {
                if (e.getErrorCode() == Errno.EINTR) {
                    continue;
                }
                throw new NativeCallException("pwrite(" + what + ")", e.getErrorCode());
            }
            done += n;
        }
    }

    private static final int PRIO_PROCESS = 0;
    private static final long SYS_GETTID = 186; // x86-64

    /**
     * Sets the calling thread's nice value (Linux keeps one per thread: setpriority with
     * PRIO_PROCESS and a tid). Raising it needs no privilege; lowering it again needs
     * CAP_SYS_NICE or RLIMIT_NICE.
     */
    public static void setThreadNice(int nice) {
        try {
            setpriority(PRIO_PROCESS, (int) syscall(SYS_GETTID), nice);
        } catch (LastErrorException e) {
            throw new NativeCallException("setpriority(PRIO_PROCESS, gettid, " + nice + ")", e.getErrorCode());
        }
    }
}
