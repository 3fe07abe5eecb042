package io.vmfork.vmm.fork;

import io.vmfork.vmm.hypercall.Hypercalls;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.x86.GuestLayout;
import java.util.BitSet;

/**
 * A FORK hypercall's {@code struct vmf_fork} (docs/hypercalls.md, "9 FORK"): what the guest
 * asks for, read and checked once, and the results written back, the parent's after the
 * fork and each copy's before it runs. The guest can write the block at any time, so
 * everything is read once into this record and never again.
 *
 * @param address GPA of the block
 * @param vmType  type of the copies
 * @param count   copies wanted
 * @param remote  VMF_FORK_REMOTE: copies placed on other hosts are accepted (tickets)
 * @param ids     GPA of {@code uint64_t[count]}
 * @param errors  GPA of {@code int64_t[count]}
 */
public record ForkBlock(long address, int vmType, int count, boolean remote, long ids, long errors) {
    /** Bytes of {@code struct vmf_fork}. */
    public static final int SIZE = 48;
    private static final int ROLE = 32;
    private static final int VM_ID = 40;

    /**
     * Reads the block at {@code address}, or returns null with the status the call fails
     * with in {@code status[0]}: EFAULT for a block or array outside guest RAM or in the
     * VMM's low area, EINVAL for a count outside 1..{@code maxCount} or an unknown flag.
     */
    public static ForkBlock read(GuestMemory m, long address, int maxCount, long[] status) {
        if (!inGuest(m, address, SIZE)) {
            status[0] = Hypercalls.EFAULT;
            return null;
        }
        int vmType = m.readInt(address);
        long count = m.readInt(address + 4) & 0xffffffffL;
        long flags = m.readLong(address + 8);
        long ids = m.readLong(address + 16);
        long errors = m.readLong(address + 24);
        if (count < 1 || count > maxCount || (flags & ~Hypercalls.FORK_REMOTE) != 0) {
            status[0] = Hypercalls.EINVAL;
            return null;
        }
        if (!inGuest(m, ids, count * 8) || !inGuest(m, errors, count * 8)) {
            status[0] = Hypercalls.EFAULT;
            return null;
        }
        return new ForkBlock(address, vmType, (int) count, (flags & Hypercalls.FORK_REMOTE) != 0, ids, errors);
    }

    /** Whether a block at {@code address} lies in the guest's part of RAM (what a clone's fork block must satisfy too). */
    public static boolean inGuest(GuestMemory m, long address, long length) {
        return address >= GuestLayout.IMAGE_MIN && m.contains(address, length);
    }

    /** The guest pages the parent's results go to: written right after it resumes. */
    public BitSet resultPages() {
        BitSet b = new BitSet();
        for (long[] r : new long[][] {{address, SIZE}, {ids, count * 8L}, {errors, count * 8L}}) {
            b.set((int) (r[0] / GuestMemory.PAGE_SIZE), (int) ((r[0] + r[1] - 1) / GuestMemory.PAGE_SIZE) + 1);
        }
        return b;
    }

    /** The parent's results: per copy its id (or ticket) and error, role parent, index 0, its own id. */
    public void writeParent(GuestMemory m, long[] childIds, long[] childErrors, long parentId) {
        // Three writes, not two per copy: each is a process_vm_writev on the process platform.
        m.write(ids, littleEndian(childIds, count));
        m.write(errors, littleEndian(childErrors, count));
        writeRole(m, address, Hypercalls.FORK_PARENT, 0, parentId);
    }

    private static byte[] littleEndian(long[] values, int n) {
        java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(8 * n).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < n; i++) {
            b.putLong(values[i]);
        }
        return b.array();
    }

    /**
     * A copy's view of the block at {@code address} in its own RAM, before it runs: role
     * child, its index, its new id.
     */
    public static void writeChild(GuestMemory m, long address, int index, long childId) {
        writeRole(m, address, Hypercalls.FORK_CHILD, index, childId);
    }

    /** role, index and vm_id lie together at offset 32: one write. */
    private static void writeRole(GuestMemory m, long address, int role, int index, long id) {
        m.write(address + ROLE, java.nio.ByteBuffer.allocate(VM_ID + 8 - ROLE).order(java.nio.ByteOrder.LITTLE_ENDIAN)
                .putInt(role).putInt(index).putLong(id).array());
    }
}
