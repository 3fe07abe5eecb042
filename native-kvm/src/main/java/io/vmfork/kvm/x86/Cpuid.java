package io.vmfork.kvm.x86;

import com.sun.jna.Memory;

/**
 * struct kvm_cpuid2 with its entries, held as raw memory: 8 header bytes, then
 * {@code nent} entries of 40 bytes {function, index, flags, eax, ebx, ecx, edx, padding[3]}.
 */
public final class Cpuid {
    public static final int HEADER = 8;
    public static final int ENTRY = 40;
    /** CPUID.1:ECX.XSAVE */
    public static final int ECX1_XSAVE = 1 << 26;

    private final Memory memory;

    private Cpuid(Memory memory) {
        this.memory = memory;
    }

    /** Room for {@code capacity} entries, nent set to it (as KVM_GET_SUPPORTED_CPUID wants). */
    public static Cpuid withCapacity(int capacity) {
        Memory m = new Memory(HEADER + (long) capacity * ENTRY);
        m.clear();
        m.setInt(0, capacity);
        return new Cpuid(m);
    }

    /** From the flat entry bytes of {@link #entryBytes()}. */
    public static Cpuid fromEntryBytes(byte[] entries) {
        if (entries.length % ENTRY != 0) {
            throw new IllegalArgumentException("cpuid entries must be a multiple of " + ENTRY + " bytes");
        }
        int n = entries.length / ENTRY;
        Memory m = new Memory(HEADER + (long) Math.max(n, 1) * ENTRY);
        m.clear();
        m.setInt(0, n);
        m.write(HEADER, entries, 0, entries.length);
        return new Cpuid(m);
    }

    public Memory memory() {
        return memory;
    }

    public int count() {
        return memory.getInt(0);
    }

    public byte[] entryBytes() {
        return memory.getByteArray(HEADER, count() * ENTRY);
    }

    /** Register {@code reg} (0=eax 1=ebx 2=ecx 3=edx) of leaf {@code function}/{@code index}, or -1 if absent. */
    public long register(int function, int index, int reg) {
        for (int i = 0; i < count(); i++) {
            long off = HEADER + (long) i * ENTRY;
            if (memory.getInt(off) == function && memory.getInt(off + 4) == index) {
                return memory.getInt(off + 12 + 4L * reg) & 0xffffffffL;
            }
        }
        return -1;
    }

    public boolean hasXsave() {
        long ecx = register(1, 0, 2);
        return ecx != -1 && (ecx & ECX1_XSAVE) != 0;
    }
}
