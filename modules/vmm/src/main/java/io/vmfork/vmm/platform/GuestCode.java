package io.vmfork.vmm.platform;

import io.vmfork.vmm.hypercall.Hypercalls;
import io.vmfork.vmm.memory.GuestMemory;

/**
 * What a trap's instruction was, read from guest memory (guest virtual is guest physical):
 * the same tests on every platform, so that a guest is judged alike on each.
 */
public final class GuestCode {
    private static final int OUT_EAX_DX = Hypercalls.OUT_EAX_DX & 0xff;
    private static final int MAX_PREFIXES = 15;
    private static final int OUTS_BYTE = 0x6e;
    private static final int OUTS_DWORD = 0x6f;

    private GuestCode() {
    }

    /**
     * Whether the instruction that ends just before {@code rip} is `out %eax,(%dx)` (KVM
     * leaves RIP past it). String I/O (`rep outsl`) to the port exits with RIP still on the
     * `outs` (once per element) and is not one.
     */
    public static boolean isHypercallBefore(GuestMemory memory, long rip) {
        if (rip < 1 || !memory.contains(rip - 1, 2) || (memory.readByte(rip - 1) & 0xff) != OUT_EAX_DX) {
            return false;
        }
        // RIP on an `outs` (prefixes, then 0x6e/0x6f) is string I/O whatever byte precedes it.
        for (long p = rip; p < rip + MAX_PREFIXES && memory.contains(p, 1); p++) {
            int b = memory.readByte(p) & 0xff;
            if (b == OUTS_BYTE || b == OUTS_DWORD) {
                return false;
            }
            if (!(b == 0x66 || b == 0x67 || b == 0xf2 || b == 0xf3 || (b >= 0x40 && b <= 0x4f))) {
                break;
            }
        }
        return true;
    }

    /** Whether the byte at {@code rip} is `out %eax,(%dx)` with no prefix before it (the process platform traps on it). */
    public static boolean isHypercallAt(GuestMemory memory, long rip) {
        return rip >= 0 && memory.contains(rip, 1) && (memory.readByte(rip) & 0xff) == OUT_EAX_DX;
    }

    /** Whether guest memory at {@code gva} holds `syscall` (0f 05). */
    public static boolean isSyscall(GuestMemory memory, long gva) {
        return gva >= 0 && memory.contains(gva, 2) && memory.readByte(gva) == 0x0f && memory.readByte(gva + 1) == 0x05;
    }
}
