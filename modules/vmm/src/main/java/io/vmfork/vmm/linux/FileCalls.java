package io.vmfork.vmm.linux;

import static io.vmfork.vmm.linux.LinuxErrno.*;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermission;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.Map;

/**
 * Files, read-only, inside the program's root (docs/linux.md, "Files"): a host directory
 * given at start ({@link ProgramArgs#root}). Every path is resolved by the VMM one component
 * at a time inside the root: {@code ..} stops at the root, a symbolic link is followed by
 * the VMM (an absolute one from the root, at most {@link #MAX_LINKS}), so no path, link or
 * {@code /proc} of the host reaches outside it. Without a root every path is ENOENT. The fd
 * table (path, offset) is in {@link LinuxState}, so a fork's copies share nothing but the
 * root's files.
 */
final class FileCalls {
    static final long AT_FDCWD = -100;
    static final long O_ACCMODE = 3, O_CREAT = 0100, O_TRUNC = 01000, O_APPEND = 02000, O_DIRECTORY = 0200000,
            O_NOFOLLOW = 0400000;
    static final long AT_SYMLINK_NOFOLLOW = 0x100, AT_EMPTY_PATH = 0x1000;
    static final long EROFS = 30, ENOTDIR = 20, EISDIR = 21, ELOOP = 40, EMFILE = 24, ENAMETOOLONG = 36;
    static final int MAX_LINKS = 40;
    static final int MAX_FDS = 1024;
    static final int FIRST_FD = 3;
    static final long SEEK_SET = 0, SEEK_CUR = 1, SEEK_END = 2;

    private FileCalls() {
    }

    /** An open file: its path inside the root and the offset of the next read. */
    static final class OpenFile {
        final String path;
        long offset;
        final boolean directory;

        OpenFile(String path, long offset, boolean directory) {
            this.path = path;
            this.offset = offset;
            this.directory = directory;
        }

        OpenFile copy() {
            return new OpenFile(path, offset, directory);
        }

        @Override
        public boolean equals(Object o) {
            return o instanceof OpenFile f && f.path.equals(path) && f.offset == offset && f.directory == directory;
        }

        @Override
        public int hashCode() {
            return path.hashCode();
        }
    }

    /** A path inside the root ("/a/b"), or -errno. */
    record Resolved(String path, long errno) {
    }

    private static Path host(LinuxState s, String path) {
        return Path.of(s.root).resolve(path.substring(1));
    }

    /**
     * Resolves {@code path} against {@code base} (a directory inside the root) without ever
     * leaving the root. {@code followLast}: follow a link in the last component.
     */
    static Resolved resolve(LinuxState s, String base, String path, boolean followLast) {
        if (s.root == null) {
            return new Resolved(null, ENOENT);
        }
        if (path.isEmpty()) {
            return new Resolved(null, ENOENT);
        }
        Deque<String> todo = new ArrayDeque<>(List.of(path.split("/")));
        List<String> at = new ArrayList<>();
        if (!path.startsWith("/")) {
            for (String p : base.split("/")) {
                if (!p.isEmpty()) {
                    at.add(p);
                }
            }
        }
        int links = 0;
        while (!todo.isEmpty()) {
            String part = todo.poll();
            if (part.isEmpty() || part.equals(".")) {
                continue;
            }
            if (part.equals("..")) {
                if (!at.isEmpty()) {
                    at.remove(at.size() - 1);
                }
                continue;
            }
            if (!at.isEmpty()) {
                Path dir = host(s, "/" + String.join("/", at));
                if (!Files.isDirectory(dir, LinkOption.NOFOLLOW_LINKS)) {
                    return new Resolved(null, Files.exists(dir, LinkOption.NOFOLLOW_LINKS) ? ENOTDIR : ENOENT);
                }
            }
            at.add(part);
            Path h = host(s, "/" + String.join("/", at));
            if (Files.isSymbolicLink(h) && (followLast || !todo.isEmpty())) {
                if (++links > MAX_LINKS) {
                    return new Resolved(null, ELOOP);
                }
                String target;
                try {
                    target = Files.readSymbolicLink(h).toString();
                } catch (IOException e) {
                    return new Resolved(null, ENOENT);
                }
                at.remove(at.size() - 1);
                if (target.startsWith("/")) {
                    at.clear(); // an absolute link starts again at the root, never at the host's /
                }
                List<String> parts = List.of(target.split("/"));
                for (int i = parts.size() - 1; i >= 0; i--) {
                    todo.push(parts.get(i));
                }
            }
        }
        return new Resolved("/" + String.join("/", at), 0);
    }

    /** The directory a *at call's path is relative to, or null (EBADF / ENOTDIR in {@code err}). */
    private static String base(Call c, long dirfdArg, long[] err) {
        long dirfd = (int) dirfdArg; // an int in the kernel's ABI: the upper half of the register is not the caller's
        LinuxState s = c.state();
        if (dirfd == AT_FDCWD) {
            return s.cwd;
        }
        OpenFile f = s.files.get((int) dirfd);
        if (dirfd < 0 || dirfd > Integer.MAX_VALUE || f == null) {
            err[0] = EBADF;
            return null;
        }
        if (!f.directory) {
            err[0] = ENOTDIR;
            return null;
        }
        return f.path;
    }

    /**
     * openat(dirfd, path, flags, mode): opens a file or directory of the root, read-only.
     * EROFS: any write access, O_CREAT or O_TRUNC; ENOENT: no such path (or no root); ENOTDIR;
     * ELOOP: too many links, or O_NOFOLLOW on a link; EMFILE: 1024 open files; EFAULT: path.
     */
    static long openat(Call c, long dirfd, long pathAddr, long flags) {
        String path = c.mem().cString(pathAddr, IoCalls.PATH_MAX);
        if (path == null) {
            return err(EFAULT);
        }
        if ((flags & O_ACCMODE) != 0 || (flags & (O_CREAT | O_TRUNC | O_APPEND)) != 0) {
            return err(EROFS);
        }
        LinuxState s = c.state();
        synchronized (s) {
            long[] e = new long[1];
            String base = base(c, dirfd, e);
            if (base == null) {
                return err(e[0]);
            }
            Resolved r = resolve(s, base, path, (flags & O_NOFOLLOW) == 0);
            if (r.errno() != 0) {
                return err(r.errno());
            }
            Path h = host(s, r.path());
            if (Files.isSymbolicLink(h)) {
                return err(ELOOP);
            }
            if (!Files.exists(h, LinkOption.NOFOLLOW_LINKS)) {
                return err(ENOENT);
            }
            boolean dir = Files.isDirectory(h, LinkOption.NOFOLLOW_LINKS);
            if ((flags & O_DIRECTORY) != 0 && !dir) {
                return err(ENOTDIR);
            }
            if (!dir && !Files.isRegularFile(h, LinkOption.NOFOLLOW_LINKS)) {
                return err(EACCES); // devices, sockets, fifos of the host are never opened
            }
            for (int fd = FIRST_FD; fd < MAX_FDS; fd++) {
                if (!s.files.containsKey(fd)) {
                    s.files.put(fd, new OpenFile(r.path(), 0, dir));
                    return fd;
                }
            }
            return err(EMFILE);
        }
    }

    /** close(fd) of a file. EBADF: not open. */
    static long close(Call c, long fdArg) {
        int fd = (int) fdArg;
        synchronized (c.state()) {
            return c.state().files.remove((int) fd) != null ? 0 : err(EBADF);
        }
    }

    /** The open file {@code fd}, or null. */
    static OpenFile file(Call c, long fdArg) {
        int fd = (int) fdArg;
        if (fd < FIRST_FD || fd >= MAX_FDS) {
            return null;
        }
        synchronized (c.state()) {
            return c.state().files.get((int) fd);
        }
    }

    /** read or pread64 of a file at {@code at} (its offset, advanced, when {@code at} < 0). EISDIR; EFAULT: buf. */
    static long read(Call c, OpenFile f, long buf, long count, long at) {
        if (f.directory) {
            return err(EISDIR);
        }
        if (count < 0) {
            return err(EINVAL);
        }
        int n = (int) Math.min(count, IoCalls.MAX_IO);
        if (!c.mem().ok(buf, n)) {
            return err(EFAULT);
        }
        long pos = at >= 0 ? at : f.offset;
        ByteBuffer b = ByteBuffer.allocate(n);
        try (FileChannel ch = FileChannel.open(host(c.state(), f.path), StandardOpenOption.READ,
                LinkOption.NOFOLLOW_LINKS)) {
            while (b.hasRemaining() && ch.read(b, pos + b.position()) > 0) {
                // as much as there is
            }
        } catch (IOException e) {
            return err(EACCES);
        }
        byte[] got = java.util.Arrays.copyOf(b.array(), b.position());
        c.mem().write(buf, got);
        if (at < 0) {
            synchronized (c.state()) {
                f.offset += got.length;
            }
        }
        return got.length;
    }

    /** lseek(fd, offset, whence) of a file. EINVAL: whence, or a negative result. */
    static long lseek(Call c, OpenFile f, long offset, long whence) {
        long size;
        try {
            size = f.directory ? 0 : Files.size(host(c.state(), f.path));
        } catch (IOException e) {
            return err(EACCES);
        }
        long base = whence == SEEK_SET ? 0 : whence == SEEK_CUR ? f.offset : whence == SEEK_END ? size : -1;
        if (base < 0 || base + offset < 0) {
            return err(EINVAL);
        }
        synchronized (c.state()) {
            f.offset = base + offset;
        }
        return f.offset;
    }

    /** struct stat of a path inside the root (read-only: write bits cleared). */
    static long stat(Call c, String path, long buf) {
        if (!c.mem().ok(buf, 144)) {
            return err(EFAULT);
        }
        Map<String, Object> a;
        try {
            a = Files.readAttributes(host(c.state(), path), "unix:*", LinkOption.NOFOLLOW_LINKS);
        } catch (IOException | UnsupportedOperationException e) {
            return err(ENOENT);
        }
        ByteBuffer b = ByteBuffer.allocate(144).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(0, 0x76666b); // st_dev: the root's, the same for all its files
        b.putLong(8, ((Number) a.get("ino")).longValue());
        b.putLong(16, ((Number) a.get("nlink")).longValue());
        b.putInt(24, ((Number) a.get("mode")).intValue() & ~0222);
        b.putInt(28, (int) ProcessStart.UID);
        b.putInt(32, (int) ProcessStart.GID);
        long size = ((Number) a.get("size")).longValue();
        b.putLong(48, size);
        b.putLong(56, 4096);
        b.putLong(64, (size + 511) / 512);
        long mtime = ((java.nio.file.attribute.FileTime) a.get("lastModifiedTime")).toMillis();
        for (int off : new int[] {72, 88, 104}) {
            b.putLong(off, mtime / 1000);
            b.putLong(off + 8, (mtime % 1000) * 1_000_000);
        }
        c.mem().write(buf, b.array());
        return 0;
    }

    /** newfstatat(dirfd, path, buf, flags) of a path inside the root. */
    static long fstatat(Call c, long dirfd, String path, long buf, long flags) {
        LinuxState s = c.state();
        Resolved r;
        synchronized (s) {
            long[] e = new long[1];
            String base = base(c, dirfd, e);
            if (base == null) {
                return err(e[0]);
            }
            r = resolve(s, base, path, (flags & AT_SYMLINK_NOFOLLOW) == 0);
        }
        return r.errno() != 0 ? err(r.errno()) : stat(c, r.path(), buf);
    }

    /** faccessat(dirfd, path, mode): 0 if it exists; EROFS for W_OK (2); ENOENT. */
    static long access(Call c, long dirfd, String path, long mode) {
        LinuxState s = c.state();
        Resolved r;
        synchronized (s) {
            long[] e = new long[1];
            String base = base(c, dirfd, e);
            if (base == null) {
                return err(e[0]);
            }
            r = resolve(s, base, path, true);
        }
        if (r.errno() != 0) {
            return err(r.errno());
        }
        Path h = host(s, r.path());
        if (!Files.exists(h, LinkOption.NOFOLLOW_LINKS)) {
            return err(ENOENT);
        }
        if ((mode & 2) != 0) {
            return err(EROFS);
        }
        if ((mode & 1) != 0) {
            try {
                if (!Files.getPosixFilePermissions(h, LinkOption.NOFOLLOW_LINKS).contains(
                        PosixFilePermission.OWNER_EXECUTE)) {
                    return err(EACCES);
                }
            } catch (IOException | UnsupportedOperationException e) {
                return err(EACCES);
            }
        }
        return 0;
    }

    /** readlinkat inside the root: the link's own text (which the VMM resolves inside the root when followed). */
    static long readlink(Call c, long dirfd, String path, long buf, long size) {
        LinuxState s = c.state();
        Resolved r;
        synchronized (s) {
            long[] e = new long[1];
            String base = base(c, dirfd, e);
            if (base == null) {
                return err(e[0]);
            }
            r = resolve(s, base, path, false);
        }
        if (r.errno() != 0) {
            return err(r.errno());
        }
        Path h = host(s, r.path());
        if (!Files.isSymbolicLink(h)) {
            return err(Files.exists(h, LinkOption.NOFOLLOW_LINKS) ? EINVAL : ENOENT);
        }
        byte[] t;
        try {
            t = Files.readSymbolicLink(h).toString().getBytes(StandardCharsets.UTF_8);
        } catch (IOException e) {
            return err(ENOENT);
        }
        int n = (int) Math.min(size, t.length);
        if (!c.mem().ok(buf, n)) {
            return err(EFAULT);
        }
        c.mem().write(buf, java.util.Arrays.copyOf(t, n));
        return n;
    }

    /**
     * getdents64(fd, dirp, count): the entries of an open directory of the root, "." and ".."
     * first, then its names in sorted order (struct linux_dirent64, each 8-byte aligned); the
     * fd's offset counts entries. 0 at the end. EBADF: not open; ENOTDIR: not a directory;
     * EINVAL: count too small for the next entry; EFAULT: dirp.
     */
    static long getdents64(Call c) {
        OpenFile f = file(c, c.a0());
        if (f == null) {
            return err(EBADF);
        }
        if (!f.directory) {
            return err(ENOTDIR);
        }
        long count = Math.min(c.a2(), IoCalls.MAX_IO);
        if (count < 0 || !c.mem().ok(c.a1(), count)) {
            return err(EFAULT);
        }
        List<String> names = new ArrayList<>(List.of(".", ".."));
        Path dir = host(c.state(), f.path);
        try (java.util.stream.Stream<Path> s = Files.list(dir)) {
            s.map(p -> p.getFileName().toString()).sorted().forEach(names::add);
        } catch (IOException e) {
            return err(ENOENT);
        }
        ByteBuffer b = ByteBuffer.allocate((int) count).order(ByteOrder.LITTLE_ENDIAN);
        long index = f.offset;
        while (index < names.size()) {
            String name = names.get((int) index);
            byte[] n = name.getBytes(StandardCharsets.UTF_8);
            int reclen = (19 + n.length + 1 + 7) & ~7;
            if (b.remaining() < reclen) {
                if (b.position() == 0) {
                    return err(EINVAL);
                }
                break;
            }
            Path h = name.equals(".") || name.equals("..") ? dir : dir.resolve(name);
            int type = Files.isSymbolicLink(h) ? 10 : Files.isDirectory(h, LinkOption.NOFOLLOW_LINKS) ? 4
                    : Files.isRegularFile(h, LinkOption.NOFOLLOW_LINKS) ? 8 : 0;
            int at = b.position();
            b.putLong(at, Math.abs((long) (f.path + "/" + name).hashCode()) + 1); // d_ino
            b.putLong(at + 8, index + 1); // d_off: the next entry's position
            b.putShort(at + 16, (short) reclen);
            b.put(at + 18, (byte) type);
            b.position(at + 19);
            b.put(n);
            b.position(at + reclen);
            index++;
        }
        int len = b.position();
        c.mem().write(c.a1(), java.util.Arrays.copyOf(b.array(), len));
        synchronized (c.state()) {
            f.offset = index;
        }
        return len;
    }

    /** chdir(path): a directory inside the root. ENOENT, ENOTDIR, EFAULT. */
    static long chdir(Call c) {
        String path = c.mem().cString(c.a0(), IoCalls.PATH_MAX);
        if (path == null) {
            return err(EFAULT);
        }
        LinuxState s = c.state();
        synchronized (s) {
            Resolved r = resolve(s, s.cwd, path, true);
            if (r.errno() != 0) {
                return err(r.errno());
            }
            Path h = host(s, r.path());
            if (!Files.exists(h, LinkOption.NOFOLLOW_LINKS)) {
                return err(ENOENT);
            }
            if (!Files.isDirectory(h, LinkOption.NOFOLLOW_LINKS)) {
                return err(ENOTDIR);
            }
            s.cwd = r.path();
        }
        return 0;
    }
}
