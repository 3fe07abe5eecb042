package io.vmfork.vmm;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** Builds small ELF files in memory, for tests of the loader and of odd guests. */
final class TestElf {
    static final long BASE = 0x400000;

    private TestElf() {
    }

    /**
     * A static x86-64 SDK guest: one PT_LOAD at {@code vaddr} holding {@code code}, {@code memSize} bytes in memory,
     * and a PT_NOTE with the vmfork guest note (docs/linux.md, "Which kind").
     */
    static byte[] executable(byte[] code, long vaddr, long memSize, int machine, int type, int elfClass) {
        return build(code, vaddr, memSize, machine, type, elfClass, true);
    }

    /** The same without the vmfork guest note: a Linux program. */
    static byte[] linuxExecutable(byte[] code, long vaddr, long memSize, int machine, int type, int elfClass) {
        return build(code, vaddr, memSize, machine, type, elfClass, false);
    }

    private static byte[] build(byte[] code, long vaddr, long memSize, int machine, int type, int elfClass,
            boolean note) {
        int noteOff = 0x800;
        int phoff = 64;
        int dataOff = 0x1000;
        ByteBuffer b = ByteBuffer.allocate(dataOff + code.length).order(ByteOrder.LITTLE_ENDIAN);
        b.put(new byte[] {0x7f, 'E', 'L', 'F', (byte) elfClass, 1, 1, 0});
        b.position(16);
        b.putShort((short) type);
        b.putShort((short) machine);
        b.putInt(1);
        b.putLong(vaddr); // entry
        b.putLong(phoff);
        b.putLong(0); // shoff
        b.putInt(0);
        b.putShort((short) 64);
        b.putShort((short) 56);
        b.putShort((short) (note ? 2 : 1));
        b.putShort((short) 64);
        b.putShort((short) 0);
        b.putShort((short) 0);
        b.position(phoff);
        b.putInt(1); // PT_LOAD
        b.putInt(5); // R+X
        b.putLong(dataOff);
        b.putLong(vaddr);
        b.putLong(vaddr);
        b.putLong(code.length);
        b.putLong(memSize);
        b.putLong(0x1000);
        if (note) {
            b.putInt(4); // PT_NOTE
            b.putInt(4);
            b.putLong(noteOff);
            b.putLong(0);
            b.putLong(0);
            b.putLong(24);
            b.putLong(24);
            b.putLong(4);
            b.position(noteOff);
            b.putInt(7).putInt(4).putInt(1);
            b.put(new byte[] {'v', 'm', 'f', 'o', 'r', 'k', 0, 0});
            b.putInt(1);
        }
        b.position(dataOff);
        b.put(code);
        return b.array();
    }

    static byte[] executable(byte[] code) {
        return executable(code, BASE, code.length, 62, 2, 2);
    }

    /** mov $nr,%eax; mov $port,%dx; out/in ... : code that does one port access. */
    static byte[] portAccess(int port, boolean out) {
        return new byte[] {
            (byte) 0xb8, 0x01, 0, 0, 0,                              // mov $1, %eax
            0x66, (byte) 0xba, (byte) port, (byte) (port >> 8),      // mov $port, %dx
            (byte) (out ? 0xef : 0xed),                              // out %eax,(%dx) / in (%dx),%eax
            (byte) 0xeb, (byte) 0xfe,                                // jmp .
        };
    }

    /** EXIT(7) issued as `rep outsl` of two dwords to the hypercall port: string I/O, not a hypercall. */
    static byte[] repOutsToHypercallPort() {
        return new byte[] {
            (byte) 0xb8, 0x02, 0, 0, 0,                              // mov $2 (EXIT), %eax
            (byte) 0xbf, 0x07, 0, 0, 0,                              // mov $7, %edi
            0x66, (byte) 0xba, (byte) 0xf0, 0x07,                    // mov $0x7f0, %dx
            0x48, (byte) 0x8d, 0x35, 0, 0, 0, 0,                     // lea 0(%rip), %rsi
            (byte) 0xb9, 0x02, 0, 0, 0,                              // mov $2, %ecx
            (byte) 0xf3, 0x6f,                                       // rep outsl
            (byte) 0xeb, (byte) 0xfe,                                // jmp .
        };
    }

    /** Offset of the `syscall` in {@link #syscallCode()}. */
    static final int SYSCALL_OFFSET = 5;

    /** `syscall`, which a vmfork guest has no use for (EFER.SCE is clear). */
    static byte[] syscallCode() {
        return new byte[] {
            (byte) 0xb8, 0x01, 0, 0, 0,                              // mov $1, %eax
            0x0f, 0x05,                                              // syscall
            (byte) 0xeb, (byte) 0xfe,                                // jmp .
        };
    }
}
