package io.vmfork.vmm.linux;

import static io.vmfork.vmm.linux.LinuxErrno.*;

import io.vmfork.vmm.x86.GuestLayout;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;

/**
 * Memory: the program break and anonymous mappings, all inside guest RAM (docs/linux.md,
 * "Memory"). Protections are recorded nowhere and not enforced (all RAM is read, write and
 * execute, as for an SDK guest); mappings of files are not served yet (ENODEV). Memory given back is zeroed then, so that every new mapping reads zero.
 */
final class MemoryCalls {
    static final long PAGE = GuestLayout.PAGE;
    static final long MAP_SHARED = 0x1, MAP_PRIVATE = 0x2, MAP_TYPE = 0xf, MAP_FIXED = 0x10, MAP_ANONYMOUS = 0x20,
            MAP_FIXED_NOREPLACE = 0x100000;
    static final long MREMAP_MAYMOVE = 1, MREMAP_FIXED = 2, MREMAP_DONTUNMAP = 4;
    static final long MADV_DONTNEED = 4, MADV_FREE = 8, MADV_REMOVE = 9;
    static final long EEXIST = 17, ENODEV = 19;

    private MemoryCalls() {
    }

    /**
     * brk(addr): moves the break to {@code addr} if it stays between the end of the image
     * and the lowest mapping; returns the break (the old one when refused, as Linux does).
     * Pages given back are zeroed. No errno.
     */
    static long brk(Call c) {
        LinuxState s = c.state();
        synchronized (s) {
            long addr = c.a0();
            if (addr < s.brkStart || addr > s.mmapBottom || ProcessStart.pageUp(addr) > s.mmapBottom) {
                return s.brk;
            }
            if (addr < s.brk) {
                long from = ProcessStart.pageUp(addr);
                long to = ProcessStart.pageUp(s.brk);
                if (to > from) {
                    c.mem().zero(from, to - from);
                }
            }
            s.brk = addr;
            return s.brk;
        }
    }

    /**
     * mmap(addr, length, prot, flags, fd, offset), anonymous only. EINVAL: length 0, no or
     * an unknown mapping type, an unaligned offset, or an unaligned address with MAP_FIXED;
     * ENODEV: a mapping of an open file (not served yet); EBADF: of any other fd; ENOMEM: no
     * room left in RAM (or
     * a MAP_FIXED outside the mmap area); EEXIST: MAP_FIXED_NOREPLACE over a mapping.
     */
    static long mmap(Call c) {
        long addr = c.a0(), len = c.a1(), flags = c.a3(), off = c.a5();
        long type = flags & MAP_TYPE;
        if (len == 0 || (type != MAP_SHARED && type != MAP_PRIVATE && type != 3 /* SHARED_VALIDATE */)) {
            return err(EINVAL);
        }
        if ((flags & MAP_ANONYMOUS) == 0) {
            return FileCalls.file(c, c.a4()) != null ? err(ENODEV) : err(EBADF);
        }
        if ((off & (PAGE - 1)) != 0) {
            return err(EINVAL);
        }
        if (len < 0 || len > c.mem().size()) {
            return err(ENOMEM);
        }
        long size = ProcessStart.pageUp(len);
        LinuxState s = c.state();
        synchronized (s) {
            if ((flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) != 0) {
                if ((addr & (PAGE - 1)) != 0) {
                    return err(EINVAL);
                }
                return fixed(c, s, addr, size, (flags & MAP_FIXED_NOREPLACE) != 0 && (flags & MAP_FIXED) == 0);
            }
            return allocate(c, s, size);
        }
    }

    /** A new range of {@code size} bytes (page multiple) in the mmap area, zero; or -ENOMEM. */
    private static long allocate(Call c, LinuxState s, long size) {
        for (Map.Entry<Long, Long> f : s.free.descendingMap().entrySet()) {
            long start = f.getKey(), end = f.getValue();
            if (end - start >= size) {
                s.free.remove(start);
                if (end - start > size) {
                    s.free.put(start, end - size);
                }
                return end - size;
            }
        }
        long floor = ProcessStart.pageUp(s.brk);
        if (s.mmapBottom - floor < size) {
            return err(ENOMEM);
        }
        s.mmapBottom -= size;
        return s.mmapBottom;
    }

    /** MAP_FIXED inside [break, mmapTop): whatever was mapped there is replaced by zero pages. */
    private static long fixed(Call c, LinuxState s, long addr, long size, boolean noReplace) {
        long end = addr + size;
        if (end < addr || addr < ProcessStart.pageUp(s.brk) || end > s.mmapTop) {
            return err(ENOMEM);
        }
        List<long[]> used = allocated(s, Math.max(addr, s.mmapBottom), Math.max(end, s.mmapBottom));
        if (noReplace && !used.isEmpty()) {
            return err(EEXIST);
        }
        for (long[] u : used) {
            c.mem().zero(u[0], u[1] - u[0]);
        }
        removeFree(s, addr, end);
        if (addr < s.mmapBottom) {
            if (end < s.mmapBottom) {
                addFree(s, end, s.mmapBottom); // fresh, so zero
            }
            s.mmapBottom = addr;
        }
        return addr;
    }

    /**
     * munmap(addr, length): the part of the range inside the mmap area is given back
     * (zeroed); the rest is left alone. EINVAL: an unaligned address or a zero length.
     */
    static long munmap(Call c) {
        long addr = c.a0(), len = c.a1();
        if ((addr & (PAGE - 1)) != 0 || len <= 0 || addr + ProcessStart.pageUp(len) < addr) {
            return err(EINVAL);
        }
        LinuxState s = c.state();
        synchronized (s) {
            release(c, s, addr, addr + ProcessStart.pageUp(len));
        }
        return 0;
    }

    /**
     * mremap(old, oldSize, newSize, flags, newAddr): shrinks in place, grows in place where
     * the pages above are free, else moves with MREMAP_MAYMOVE. EINVAL: unaligned address,
     * unknown flags, MREMAP_FIXED or MREMAP_DONTUNMAP (not served), a zero size; EFAULT: the
     * old range is not a mapping of the mmap area; ENOMEM: no room.
     */
    static long mremap(Call c) {
        long old = c.a0(), oldLen = c.a1(), newLen = c.a2(), flags = c.a3();
        if ((old & (PAGE - 1)) != 0 || (flags & ~(MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP)) != 0
                || (flags & (MREMAP_FIXED | MREMAP_DONTUNMAP)) != 0 || newLen <= 0 || oldLen <= 0
                || newLen > c.mem().size() || oldLen > c.mem().size()) {
            return newLen > c.mem().size() ? err(ENOMEM) : err(EINVAL);
        }
        long oldSize = ProcessStart.pageUp(oldLen), newSize = ProcessStart.pageUp(newLen);
        LinuxState s = c.state();
        synchronized (s) {
            long oldEnd = old + oldSize;
            if (old < s.mmapBottom || oldEnd > s.mmapTop || oldEnd < old
                    || allocated(s, old, oldEnd).stream().mapToLong(r -> r[1] - r[0]).sum() != oldSize) {
                return err(EFAULT);
            }
            if (newSize <= oldSize) {
                release(c, s, old + newSize, oldEnd);
                return old;
            }
            long grownEnd = old + newSize;
            if (grownEnd <= s.mmapTop && grownEnd > old && allocated(s, oldEnd, grownEnd).isEmpty()) {
                removeFree(s, oldEnd, grownEnd);
                return old;
            }
            if ((flags & MREMAP_MAYMOVE) == 0) {
                return err(ENOMEM);
            }
            long moved = allocate(c, s, newSize);
            if (moved < 0) {
                return moved;
            }
            c.mem().copy(old, moved, oldSize);
            release(c, s, old, oldEnd);
            return moved;
        }
    }

    /**
     * mprotect(addr, length, prot): accepted and not enforced. EINVAL: an unaligned address
     * or unknown bits in prot; ENOMEM: the range is not the program's memory.
     */
    static long mprotect(Call c) {
        long addr = c.a0(), len = c.a1(), prot = c.a2();
        if ((addr & (PAGE - 1)) != 0 || (prot & ~(0x7L | 0x01000000L | 0x02000000L)) != 0) {
            return err(EINVAL);
        }
        if (len < 0 || !c.mem().ok(addr, ProcessStart.pageUp(len))) {
            return err(ENOMEM);
        }
        return 0;
    }

    /**
     * madvise(addr, length, advice): MADV_DONTNEED, MADV_FREE and MADV_REMOVE zero the range
     * (what the next read of private anonymous memory would see); other advice is accepted.
     * EINVAL: an unaligned address or a negative length; ENOMEM: not the program's memory.
     */
    static long madvise(Call c) {
        long addr = c.a0(), len = c.a1(), advice = c.a2();
        if ((addr & (PAGE - 1)) != 0 || len < 0) {
            return err(EINVAL);
        }
        if (len == 0) {
            return 0;
        }
        long size = ProcessStart.pageUp(len);
        if (!c.mem().ok(addr, size)) {
            return err(ENOMEM);
        }
        if (advice == MADV_DONTNEED || advice == MADV_FREE || advice == MADV_REMOVE) {
            synchronized (c.state()) {
                for (long[] u : allocated(c.state(), addr, addr + size)) {
                    c.mem().zero(u[0], u[1] - u[0]);
                }
            }
        }
        return 0;
    }

    /** Gives back the part of [start, end) inside the mmap area: zeroes what was in use, then frees it. */
    private static void release(Call c, LinuxState s, long start, long end) {
        start = Math.max(start, s.mmapBottom);
        end = Math.min(end, s.mmapTop);
        if (start >= end) {
            return;
        }
        for (long[] u : allocated(s, start, end)) {
            c.mem().zero(u[0], u[1] - u[0]);
        }
        addFree(s, start, end);
        // A free range at the bottom of the area goes back to the break's side.
        Map.Entry<Long, Long> low = s.free.firstEntry();
        if (low != null && low.getKey() == s.mmapBottom) {
            s.free.remove(low.getKey());
            s.mmapBottom = low.getValue();
        }
    }

    /** The parts of [start, end) that are not free (in the area), in order. */
    static List<long[]> allocated(LinuxState s, long start, long end) {
        List<long[]> out = new ArrayList<>();
        long at = start;
        Map.Entry<Long, Long> before = s.free.floorEntry(start);
        if (before != null && before.getValue() > at) {
            at = before.getValue();
        }
        for (Map.Entry<Long, Long> f : s.free.subMap(start, true, end, false).entrySet()) {
            if (f.getKey() > at) {
                out.add(new long[] {at, Math.min(f.getKey(), end)});
            }
            at = Math.max(at, f.getValue());
        }
        if (at < end) {
            out.add(new long[] {at, end});
        }
        return out;
    }

    private static void addFree(LinuxState s, long start, long end) {
        removeFree(s, start, end);
        Map.Entry<Long, Long> before = s.free.lowerEntry(start);
        if (before != null && before.getValue() == start) {
            start = before.getKey();
            s.free.remove(before.getKey());
        }
        Long after = s.free.get(end);
        if (after != null) {
            s.free.remove(end);
            end = after;
        }
        s.free.put(start, end);
    }

    private static void removeFree(LinuxState s, long start, long end) {
        Map.Entry<Long, Long> before = s.free.lowerEntry(start);
        if (before != null && before.getValue() > start) {
            s.free.put(before.getKey(), start);
            if (before.getValue() > end) {
                s.free.put(end, before.getValue());
            }
        }
        for (Map.Entry<Long, Long> f : new ArrayList<>(s.free.subMap(start, true, end, false).entrySet())) {
            s.free.remove(f.getKey());
            if (f.getValue() > end) {
                s.free.put(end, f.getValue());
            }
        }
    }
}
