package io.vmfork.vmm.linux;

import static io.vmfork.vmm.linux.LinuxErrno.*;

import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;

/**
 * Files: the three standard streams over the VM's message channel (docs/linux.md,
 * "Requests"), and the first slice of the file calls. Standard input is the requests,
 * each one's bytes and a newline; each line written to standard output is a reply;
 * standard error is the console. Other files are a read-only root's ({@link FileCalls});
 * {@code /proc/self/exe} for readlink is the program (its name, as AT_EXECFN).
 */
final class IoCalls {
    static final int STDIN = 0, STDOUT = 1, STDERR = 2;
    /** The most bytes one read or write moves (a longer call is a short count, as POSIX allows). */
    static final int MAX_IO = 1 << 20;
    static final int IOV_MAX = 1024;
    static final int PATH_MAX = 4096;
    static final long AT_EMPTY_PATH = 0x1000;
    static final long F_DUPFD = 0, F_GETFD = 1, F_SETFD = 2, F_GETFL = 3, F_SETFL = 4, O_WRONLY = 1;
    static final int S_IFIFO = 0010000;
    static final String SELF_EXE = "/proc/self/exe";

    private IoCalls() {
    }

    private static boolean isStream(long fd) {
        return fd >= STDIN && fd <= STDERR;
    }

    /**
     * read(fd, buf, count) of stdin: the rest of the current request line, or the next
     * request once it comes (the call blocks, restartably; the first such wait makes the
     * VM READY); 0 at end of input (the channel closed). EFAULT: buf is not the program's;
     * EBADF: any other fd (stdout and stderr are write-only).
     */
    static long read(Call c) {
        long fd = (int) c.a0(), buf = c.a1(), count = c.a2();
        FileCalls.OpenFile f = FileCalls.file(c, fd);
        if (f != null) {
            return FileCalls.read(c, f, buf, count, -1);
        }
        if (fd != STDIN) {
            return err(EBADF);
        }
        if (count < 0) {
            return err(EINVAL);
        }
        int n = (int) Math.min(count, MAX_IO);
        if (!c.mem().ok(buf, n)) {
            return err(EFAULT);
        }
        if (n == 0) {
            return 0;
        }
        byte[] got = take(c, n);
        if (got == null) {
            return Syscalls.STOP;
        }
        c.mem().write(buf, got);
        return got.length;
    }

    /** readv(fd, iov, iovcnt) of stdin: as read, filling the buffers in order. EINVAL: iovcnt outside 0..1024. */
    static long readv(Call c) {
        long fd = (int) c.a0();
        FileCalls.OpenFile f = FileCalls.file(c, fd);
        if (fd != STDIN && f == null) {
            return err(EBADF);
        }
        long[][] iov = iovecs(c, c.a1(), c.a2());
        if (iov == null) {
            return c.a2() < 0 || c.a2() > IOV_MAX ? err(EINVAL) : err(EFAULT);
        }
        if (f != null) {
            long total = 0;
            for (long[] v : iov) {
                long r = FileCalls.read(c, f, v[0], v[1], -1);
                if (r < 0) {
                    return total > 0 ? total : r;
                }
                total += r;
                if (r < v[1]) {
                    break;
                }
            }
            return total;
        }
        long total = 0;
        for (long[] v : iov) {
            if (!c.mem().ok(v[0], v[1])) {
                return err(EFAULT);
            }
            total += v[1];
        }
        if (total == 0) {
            return 0;
        }
        byte[] got = take(c, (int) Math.min(total, MAX_IO));
        if (got == null) {
            return Syscalls.STOP;
        }
        int at = 0;
        for (long[] v : iov) {
            int k = (int) Math.min(v[1], got.length - at);
            if (k <= 0) {
                break;
            }
            byte[] part = new byte[k];
            System.arraycopy(got, at, part, 0, k);
            c.mem().write(v[0], part);
            at += k;
        }
        return got.length;
    }

    /** Up to {@code n} bytes of stdin, waiting for a request if none is buffered; empty at its end; null to stop. */
    private static byte[] take(Call c, int n) {
        LinuxState s = c.state();
        synchronized (s) {
            if (s.stdinOffset >= s.stdin.length && !s.stdinEnded) {
                s.stdin = new byte[0];
                s.stdinOffset = 0;
            }
        }
        boolean empty;
        synchronized (s) {
            empty = s.stdinOffset >= s.stdin.length && !s.stdinEnded;
        }
        if (empty) {
            // Not under the state's monitor: a fork captures the VM (and copies the state) meanwhile.
            byte[] m = c.host().awaitRequest();
            if (m == null) {
                return null;
            }
            synchronized (s) {
                if (m == LinuxHost.END_OF_INPUT) {
                    s.stdinEnded = true;
                } else {
                    byte[] line = new byte[m.length + 1];
                    System.arraycopy(m, 0, line, 0, m.length);
                    line[m.length] = '\n';
                    s.stdin = line;
                    s.stdinOffset = 0;
                }
            }
        }
        synchronized (s) {
            int k = Math.min(n, s.stdin.length - s.stdinOffset);
            byte[] out = new byte[Math.max(k, 0)];
            if (k > 0) {
                System.arraycopy(s.stdin, s.stdinOffset, out, 0, k);
                s.stdinOffset += k;
            }
            return out;
        }
    }

    /**
     * write(fd, buf, count) to stdout (each complete line a reply) or stderr (the console).
     * EFAULT: buf is not the program's; EBADF: another fd (stdin is read-only).
     */
    static long write(Call c) {
        long fd = (int) c.a0(), buf = c.a1(), count = c.a2();
        if (fd != STDOUT && fd != STDERR) {
            return err(EBADF);
        }
        if (count < 0) {
            return err(EINVAL);
        }
        int n = (int) Math.min(count, MAX_IO);
        if (!c.mem().ok(buf, n)) {
            return err(EFAULT);
        }
        if (n == 0) {
            return 0;
        }
        emit(c, (int) fd, c.mem().read(buf, n));
        return n;
    }

    /** writev(fd, iov, iovcnt): as write, the buffers in order. EINVAL: iovcnt outside 0..1024. */
    static long writev(Call c) {
        long fd = (int) c.a0();
        if (fd != STDOUT && fd != STDERR) {
            return err(EBADF);
        }
        long[][] iov = iovecs(c, c.a1(), c.a2());
        if (iov == null) {
            return c.a2() < 0 || c.a2() > IOV_MAX ? err(EINVAL) : err(EFAULT);
        }
        ByteArrayOutputStream all = new ByteArrayOutputStream();
        for (long[] v : iov) {
            int k = (int) Math.min(v[1], MAX_IO - all.size());
            if (v[1] < 0 || !c.mem().ok(v[0], k)) {
                return err(EFAULT);
            }
            if (k > 0) {
                all.writeBytes(c.mem().read(v[0], k));
            }
        }
        if (all.size() > 0) {
            emit(c, (int) fd, all.toByteArray());
        }
        return all.size();
    }

    /** The iovec array (base, length pairs), or null when iovcnt is out of range or the array not readable. */
    private static long[][] iovecs(Call c, long iov, long count) {
        if (count < 0 || count > IOV_MAX) {
            return null;
        }
        long[] raw = c.mem().getLongs(iov, (int) count * 2);
        if (raw == null) {
            return null;
        }
        long[][] out = new long[(int) count][];
        for (int i = 0; i < count; i++) {
            out[i] = new long[] {raw[2 * i], raw[2 * i + 1]};
        }
        return out;
    }

    private static void emit(Call c, int fd, byte[] bytes) {
        if (fd == STDERR) {
            c.host().stderr(bytes);
            return;
        }
        LinuxState s = c.state();
        int max = Math.max(1, c.host().maxMessage());
        java.util.List<byte[]> lines = new java.util.ArrayList<>();
        synchronized (s) {
            byte[] pending = s.stdoutPartial;
            byte[] all = new byte[pending.length + bytes.length];
            System.arraycopy(pending, 0, all, 0, pending.length);
            System.arraycopy(bytes, 0, all, pending.length, bytes.length);
            int start = 0;
            for (int i = 0; i < all.length; i++) {
                if (all[i] == '\n' || i - start == max) {
                    lines.add(java.util.Arrays.copyOfRange(all, start, i));
                    start = all[i] == '\n' ? i + 1 : i;
                }
            }
            s.stdoutPartial = java.util.Arrays.copyOfRange(all, start, all.length);
        }
        for (byte[] line : lines) {
            c.host().stdoutLine(line);
        }
    }

    /** What is left on stdout without a newline, as a last reply (at exit). */
    static void flushStdout(LinuxHost host, LinuxState s) {
        byte[] rest;
        synchronized (s) {
            rest = s.stdoutPartial;
            s.stdoutPartial = new byte[0];
        }
        if (rest.length > 0) {
            host.stdoutLine(rest);
        }
    }

    /** close(fd): the standard streams stay open (0); a file is closed; any other fd EBADF. */
    static long close(Call c) {
        return isStream((int) c.a0()) ? 0 : FileCalls.close(c, c.a0());
    }

    /** lseek(fd, offset, whence): ESPIPE on the standard streams (they are pipes), a file's offset, else EBADF. */
    static long lseek(Call c) {
        FileCalls.OpenFile f = FileCalls.file(c, c.a0());
        if (f != null) {
            return FileCalls.lseek(c, f, c.a1(), c.a2());
        }
        return isStream((int) c.a0()) ? err(ESPIPE) : err(EBADF);
    }

    /** pread64(fd, buf, count, offset): ESPIPE on the standard streams, a file's bytes at offset (EINVAL if negative), else EBADF. */
    static long pread(Call c) {
        FileCalls.OpenFile f = FileCalls.file(c, c.a0());
        if (f != null && c.nr() == 17) {
            return c.a3() < 0 ? err(EINVAL) : FileCalls.read(c, f, c.a1(), c.a2(), c.a3());
        }
        return isStream((int) c.a0()) ? err(ESPIPE) : err(EBADF);
    }

    /** ioctl(fd, request, arg): ENOTTY on the standard streams (not terminals: TCGETS, TIOCGWINSZ, ...) and files, else EBADF. */
    static long ioctl(Call c) {
        return isStream((int) c.a0()) || FileCalls.file(c, c.a0()) != null ? err(ENOTTY) : err(EBADF);
    }

    /**
     * fcntl(fd, cmd, arg) on the standard streams: F_GETFD 0, F_SETFD accepted, F_GETFL
     * O_RDONLY (stdin) or O_WRONLY, F_SETFL accepted; other commands EINVAL. EBADF: another fd.
     */
    static long fcntl(Call c) {
        long fd = (int) c.a0(), cmd = c.a1();
        if (!isStream(fd) && FileCalls.file(c, fd) == null) {
            return err(EBADF);
        }
        if (cmd == F_GETFD || cmd == F_SETFD || cmd == F_SETFL) {
            return 0;
        }
        if (cmd == F_GETFL) {
            return fd == STDIN ? 0 : O_WRONLY;
        }
        return err(EINVAL);
    }

    /** fstat(fd, statbuf): the standard streams are pipes (S_IFIFO, mode 0600). EFAULT: statbuf; EBADF: another fd. */
    static long fstat(Call c) {
        FileCalls.OpenFile f = FileCalls.file(c, c.a0());
        return f != null ? FileCalls.stat(c, f.path, c.a1()) : stat(c, c.a0(), c.a1());
    }

    /**
     * newfstatat(dirfd, path, statbuf, flags): with AT_EMPTY_PATH and "" as fstat(dirfd);
     * any other path ENOENT. EFAULT: path or statbuf.
     */
    static long newfstatat(Call c) {
        String path = c.mem().cString(c.a1(), PATH_MAX);
        if (path == null) {
            return err(EFAULT);
        }
        if (path.isEmpty() && (c.a3() & AT_EMPTY_PATH) != 0) {
            FileCalls.OpenFile f = FileCalls.file(c, c.a0());
            return f != null ? FileCalls.stat(c, f.path, c.a2()) : stat(c, c.a0(), c.a2());
        }
        return FileCalls.fstatat(c, c.a0(), path, c.a2(), c.a3());
    }

    private static long stat(Call c, long fdArg, long buf) {
        long fd = (int) fdArg;
        if (!isStream(fd)) {
            return err(EBADF);
        }
        if (!c.mem().ok(buf, 144)) {
            return err(EFAULT);
        }
        ByteBuffer b = ByteBuffer.allocate(144).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(0, 0xc); // st_dev: a pipe fs
        b.putLong(8, 1 + fd); // st_ino
        b.putLong(16, 1); // st_nlink
        b.putInt(24, S_IFIFO | 0600); // st_mode
        b.putInt(28, (int) ProcessStart.UID);
        b.putInt(32, (int) ProcessStart.GID);
        b.putLong(56, 4096); // st_blksize
        c.mem().write(buf, b.array());
        return 0;
    }

    /** open(path, flags, mode): as openat from the working directory. */
    static long open(Call c) {
        return FileCalls.openat(c, FileCalls.AT_FDCWD, c.a0(), c.a1());
    }

    /** openat(dirfd, path, flags, mode): a file of the read-only root (FileCalls). */
    static long openat(Call c) {
        return FileCalls.openat(c, c.a0(), c.a1(), c.a2());
    }

    /** access(path, mode): as faccessat from the working directory. */
    static long access(Call c) {
        String path = c.mem().cString(c.a0(), PATH_MAX);
        return path == null ? err(EFAULT) : FileCalls.access(c, FileCalls.AT_FDCWD, path, c.a1());
    }

    /** faccessat(dirfd, path, mode[, flags]) inside the root. EFAULT: path. */
    static long faccessat(Call c) {
        String path = c.mem().cString(c.a1(), PATH_MAX);
        return path == null ? err(EFAULT) : FileCalls.access(c, c.a0(), path, c.a2());
    }

    /** getcwd(buf, size): the working directory inside the root. ERANGE: too small; EFAULT: buf. Returns the length with the NUL. */
    static long getcwd(Call c) {
        byte[] cwd;
        synchronized (c.state()) {
            cwd = (c.state().cwd + "\0").getBytes(StandardCharsets.UTF_8);
        }
        if (c.a1() < cwd.length) {
            return err(ERANGE);
        }
        if (!c.mem().ok(c.a0(), cwd.length)) {
            return err(EFAULT);
        }
        c.mem().write(c.a0(), cwd);
        return cwd.length;
    }

    /** readlink(path, buf, size). */
    static long readlink(Call c) {
        return readlinkOf(c, FileCalls.AT_FDCWD, c.a0(), c.a1(), c.a2());
    }

    /** readlinkat(dirfd, path, buf, size). */
    static long readlinkat(Call c) {
        return readlinkOf(c, c.a0(), c.a1(), c.a2(), c.a3());
    }

    /**
     * /proc/self/exe is the program (its AT_EXECFN if absolute, else "/" and the image's
     * file name); any other path ENOENT. EINVAL: size
     * <= 0; EFAULT: path or buf. Returns the bytes placed, not NUL-terminated, cut to size.
     */
    private static long readlinkOf(Call c, long dirfd, long pathAddr, long buf, long size) {
        String path = c.mem().cString(pathAddr, PATH_MAX);
        if (path == null) {
            return err(EFAULT);
        }
        if (size <= 0) {
            return err(EINVAL);
        }
        if (!path.equals(SELF_EXE)) {
            return FileCalls.readlink(c, dirfd, path, buf, size);
        }
        String target;
        synchronized (c.state()) {
            target = c.state().exePath;
        }
        byte[] t = target.getBytes(StandardCharsets.UTF_8);
        int n = (int) Math.min(size, t.length);
        if (!c.mem().ok(buf, n)) {
            return err(EFAULT);
        }
        c.mem().write(buf, java.util.Arrays.copyOf(t, n));
        return n;
    }
}
