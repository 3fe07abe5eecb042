package io.vmfork.vmm.linux;

import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.x86.GuestLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/**
 * The program's memory as its system calls see it, every pointer checked like a
 * hypercall's (docs/hypercalls.md, "Pointer checks"): a range is the program's when it
 * lies inside guest RAM at or above {@link GuestLayout#IMAGE_MIN} (below it are the VMM's
 * page tables and boot info, never the program's), computed without overflow. A call
 * given any other pointer answers EFAULT; the VMM never fails on it.
 */
final class UserMemory {
    /** The lowest address a Linux program's pointers may reach. */
    static final long LOWEST = GuestLayout.IMAGE_MIN;
    private static final int ZERO_CHUNK = 256 << 10;
    private static final byte[] ZEROS = new byte[ZERO_CHUNK];

    private final GuestMemory m;

    UserMemory(GuestMemory m) {
        this.m = m;
    }

    long size() {
        return m.size();
    }

    /** Whether {@code [addr, addr + len)} is the program's (a zero length needs only a sane address). */
    boolean ok(long addr, long len) {
        if (len == 0) {
            return true;
        }
        return len > 0 && addr >= LOWEST && m.contains(addr, len);
    }

    byte[] read(long addr, int len) {
        return m.read(addr, len);
    }

    void write(long addr, byte[] bytes) {
        m.write(addr, bytes);
    }

    long readLong(long addr) {
        return m.readLong(addr);
    }

    void writeLong(long addr, long v) {
        m.writeLong(addr, v);
    }

    int readInt(long addr) {
        return m.readInt(addr);
    }

    void writeInt(long addr, int v) {
        m.writeInt(addr, v);
    }

    /** Writes {@code longs} at {@code addr} if the whole block is the program's; false (EFAULT) otherwise. */
    boolean putLongs(long addr, long... longs) {
        if (!ok(addr, 8L * longs.length)) {
            return false;
        }
        ByteBuffer b = ByteBuffer.allocate(8 * longs.length).order(ByteOrder.LITTLE_ENDIAN);
        for (long v : longs) {
            b.putLong(v);
        }
        m.write(addr, b.array());
        return true;
    }

    /** Reads {@code n} longs at {@code addr}, or null (EFAULT). */
    long[] getLongs(long addr, int n) {
        if (!ok(addr, 8L * n)) {
            return null;
        }
        ByteBuffer b = ByteBuffer.wrap(m.read(addr, 8 * n)).order(ByteOrder.LITTLE_ENDIAN);
        long[] r = new long[n];
        for (int i = 0; i < n; i++) {
            r[i] = b.getLong();
        }
        return r;
    }

    /** Zeroes {@code [addr, addr + len)}, which the caller has checked. */
    void zero(long addr, long len) {
        while (len > 0) {
            int n = (int) Math.min(len, ZERO_CHUNK);
            m.write(addr, ZEROS, 0, n);
            addr += n;
            len -= n;
        }
    }

    /** Copies {@code len} bytes inside guest RAM, from {@code from} to {@code to} (not overlapping). */
    void copy(long from, long to, long len) {
        while (len > 0) {
            int n = (int) Math.min(len, ZERO_CHUNK);
            m.write(to, m.read(from, n));
            from += n;
            to += n;
            len -= n;
        }
    }

    /** The NUL-terminated string at {@code addr} of at most {@code max} bytes, or null (EFAULT, or too long). */
    String cString(long addr, int max) {
        StringBuilder sb = new StringBuilder();
        long at = addr;
        while (at - addr < max) {
            int chunk = (int) Math.min(256, max - (at - addr));
            if (!ok(at, 1)) {
                return null;
            }
            chunk = (int) Math.min(chunk, m.size() - at);
            byte[] b = m.read(at, chunk);
            for (int i = 0; i < b.length; i++) {
                if (b[i] == 0) {
                    return sb.toString();
                }
                sb.append((char) (b[i] & 0xff));
            }
            at += chunk;
        }
        return null;
    }
}
