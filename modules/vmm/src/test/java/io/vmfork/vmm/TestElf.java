package io.vmfork.vmm;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;

/** Builds small ELF files in memory, for tests of the loader and of odd guests. */
final class TestElf {
    static final long BASE = 0x400000;

    private TestElf() {
    }

    /** A static x86-64 executable: one PT_LOAD at {@code vaddr} holding {@code code}, {@code memSize} bytes in memory. */
    static byte[] executable(byte[] code, long vaddr, long memSize, int machine, int type, int elfClass) {
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
        b.putShort((short) 1);
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
}
