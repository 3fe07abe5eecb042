package io.vmfork.vmm.linux;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.memory.GuestMemory;
import java.nio.charset.StandardCharsets;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Deque;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The system call table without a VM: a guest memory file and a host that records what the
 * calls did. The memory map's rules, the standard streams' framing, pointer checks and the
 * state's copy.
 */
class LinuxSyscallsTest {
    private static final long MIB = 1 << 20;
    private static final long SIZE = 16 * MIB;
    private static final long STACK = MIB;
    private static final int READ = 0, WRITE = 1, MMAP = 9, MUNMAP = 11, BRK = 12, MREMAP = 25, MADVISE = 28,
            UNAME = 63, ARCH_PRCTL = 158, RT_SIGACTION = 13;
    private static final long ENOMEM = -12, EINVAL = -22, EFAULT = -14, ENOSYS = -38, EBADF = -9;
    private static final long ANON_PRIVATE = 0x22, FIXED = 0x10;

    private GuestMemory memory;
    private LinuxState state;
    private FakeHost host;

    private static final class FakeHost implements LinuxHost {
        final GuestMemory memory;
        final List<String> lines = new ArrayList<>();
        final StringBuilder console = new StringBuilder();
        final Deque<byte[]> requests = new ArrayDeque<>();
        long fs;
        Integer exit;

        FakeHost(GuestMemory memory) {
            this.memory = memory;
        }

        @Override
        public GuestMemory memory() {
            return memory;
        }

        @Override
        public void stdoutLine(byte[] line) {
            lines.add(new String(line, StandardCharsets.UTF_8));
        }

        @Override
        public void stderr(byte[] bytes) {
            console.append(new String(bytes, StandardCharsets.UTF_8));
        }

        @Override
        public byte[] awaitRequest() {
            return requests.isEmpty() ? END_OF_INPUT : requests.poll();
        }

        @Override
        public boolean sleepUntil(long deadline) {
            return true;
        }

        @Override
        public void exit(int code) {
            exit = code;
        }

        @Override
        public void killed(int signal, String why) {
            exit = -signal;
        }

        @Override
        public long fsBase() {
            return fs;
        }

        @Override
        public void setFsBase(long base) {
            fs = base;
        }

        @Override
        public long gsBase() {
            return 0;
        }

        @Override
        public void setGsBase(long base) {
        }

        @Override
        public void random(byte[] into) {
            Arrays.fill(into, (byte) 7);
        }

        @Override
        public int maxMessage() {
            return 8;
        }

        @Override
        public long vmId() {
            return 1;
        }
    }

    @BeforeEach
    void start() {
        memory = GuestMemory.create("linux-syscalls-test", SIZE, 16);
        state = new LinuxState();
        state.brkStart = 0x400000 + MIB;
        state.brk = state.brkStart;
        state.stackTop = SIZE;
        state.stackSize = STACK;
        state.mmapTop = SIZE - STACK - 4096;
        state.mmapBottom = state.mmapTop;
        state.execfn = "/p";
        host = new FakeHost(memory);
    }

    @AfterEach
    void close() {
        memory.close();
    }

    private long call(int nr, long... a) {
        long[] x = Arrays.copyOf(a, 6);
        return Syscalls.serve(state, host, nr, x[0], x[1], x[2], x[3], x[4], x[5]);
    }

    @Test
    void mappingsAreZeroEvenWhenTheirPagesComeBack() {
        long a = call(MMAP, 0, 3 * 4096, 3, ANON_PRIVATE, -1, 0);
        assertEquals(state.mmapTop - 3 * 4096, a);
        memory.write(a, new byte[] {1, 2, 3});
        assertEquals(0, call(MUNMAP, a, 3 * 4096));
        long b = call(MMAP, 0, 4096, 3, ANON_PRIVATE, -1, 0);
        assertTrue(b >= a && b < a + 3 * 4096, Long.toHexString(b));
        assertArrayEquals(new byte[4096], memory.read(b, 4096));
        assertEquals(EINVAL, call(MUNMAP, a + 1, 4096));
        assertEquals(EINVAL, call(MMAP, 0, 0, 3, ANON_PRIVATE, -1, 0));
        assertEquals(EBADF, call(MMAP, 0, 4096, 3, 0x2, 3, 0));
        assertEquals(ENOMEM, call(MMAP, 0, SIZE, 3, ANON_PRIVATE, -1, 0));
        assertEquals(ENOMEM, call(MMAP, 0, 1L << 40, 3, ANON_PRIVATE, -1, 0));
    }

    @Test
    void theBreakAndTheMappingsShareTheSpaceBetweenThem() {
        long room = state.mmapTop - state.brkStart;
        long big = call(MMAP, 0, room - 8192, 3, ANON_PRIVATE, -1, 0);
        assertEquals(state.brkStart + 8192, big);
        assertEquals(state.brkStart + 8192, call(BRK, state.brkStart + 8192));
        assertEquals(state.brkStart + 8192, call(BRK, state.brkStart + 8192 + 1), "refused: the old break");
        memory.write(state.brkStart + 100, new byte[] {9});
        assertEquals(state.brkStart, call(BRK, state.brkStart));
        assertEquals(state.brkStart + 4096, call(BRK, state.brkStart + 4096));
        assertEquals(0, memory.readByte(state.brkStart + 100), "a page given back by brk comes back zero");
        assertEquals(0, call(MUNMAP, big, room - 8192));
        assertEquals(state.mmapTop, state.mmapBottom, "everything given back returns to the break's side");
        assertEquals(state.brkStart + 2 * MIB, call(BRK, state.brkStart + 2 * MIB));
    }

    @Test
    void mremapGrowsInPlaceOrMovesAndKeepsTheBytes() {
        long a = call(MMAP, 0, 4096, 3, ANON_PRIVATE, -1, 0);
        long b = call(MMAP, 0, 4096, 3, ANON_PRIVATE, -1, 0);
        memory.write(b, "hello".getBytes(StandardCharsets.UTF_8));
        assertEquals(ENOMEM, call(MREMAP, b, 4096, 8192, 0, 0), "a is above b: no room in place");
        long moved = call(MREMAP, b, 4096, 8192, 1, 0);
        assertNotEquals(b, moved);
        assertEquals("hello", new String(memory.read(moved, 5), StandardCharsets.UTF_8));
        assertEquals(moved, call(MREMAP, moved, 8192, 4096, 0, 0), "shrinks in place");
        assertEquals(EFAULT, call(MREMAP, b, 4096, 8192, 1, 0), "b was given back");
        assertEquals(0, call(MADVISE, a, 4096, 4));
        long fixed = call(MMAP, a, 4096, 3, ANON_PRIVATE | FIXED, -1, 0);
        assertEquals(a, fixed);
    }

    @Test
    void stdoutLinesAreRepliesStderrTheConsoleAndStdinTheRequests() {
        long buf = 0x400000;
        memory.write(buf, "one\ntw".getBytes(StandardCharsets.UTF_8));
        assertEquals(6, call(WRITE, 1, buf, 6));
        memory.write(buf, "o\n0123456789\n".getBytes(StandardCharsets.UTF_8));
        assertEquals(13, call(WRITE, 1, buf, 13));
        assertEquals(List.of("one", "two", "01234567", "89"), host.lines, "a line over max-message goes in pieces");
        memory.write(buf, "err".getBytes(StandardCharsets.UTF_8));
        assertEquals(3, call(WRITE, 2, buf, 3));
        assertEquals("err", host.console.toString());
        host.requests.add("abcdef".getBytes(StandardCharsets.UTF_8));
        assertEquals(4, call(READ, 0, buf, 4));
        assertEquals("abcd", new String(memory.read(buf, 4), StandardCharsets.UTF_8));
        assertEquals(3, call(READ, 0, buf, 100));
        assertEquals("ef\n", new String(memory.read(buf, 3), StandardCharsets.UTF_8));
        assertEquals(0, call(READ, 0, buf, 100), "end of input");
        memory.write(buf, "x\n".getBytes(StandardCharsets.UTF_8));
        assertEquals(2, call(WRITE, 0xffffffff00000001L, buf, 2), "an fd is an int: the register's upper half is not the caller's");
        assertEquals("x", host.lines.get(host.lines.size() - 1));
        assertEquals(EBADF, call(READ, 1, buf, 1));
        assertEquals(EBADF, call(WRITE, 0, buf, 1));
        assertEquals(EFAULT, call(WRITE, 1, 0x1000, 1), "below 0x200000 is never the program's");
        assertEquals(EFAULT, call(READ, 0, SIZE - 2, 4));
        assertEquals(EFAULT, call(UNAME, 0x100000));
    }

    @Test
    void unknownCallsAnswerEnosysAndAreCounted() {
        assertEquals(ENOSYS, call(294));
        assertEquals(ENOSYS, call(294));
        assertEquals(ENOSYS, call(999));
        assertEquals(java.util.Map.of(294, 2L, 999, 1L), state.unservedCalls());
        assertEquals("inotify_init1", Syscalls.name(294));
        assertEquals(0, call(ARCH_PRCTL, 0x1002, 0x500000));
        assertEquals(0x500000, host.fs);
        assertEquals(-1, call(ARCH_PRCTL, 0x1002, 0x800000000000L), "EPERM");
        assertEquals(EINVAL, call(ARCH_PRCTL, 0x3001, 0));
    }

    @Test
    void theStateCopiesWholeAndAChangeChangesIt() {
        memory.write(0x400000, new byte[] {1, 0, 0, 0, 0, 0, 0, 0});
        assertEquals(0, call(RT_SIGACTION, 10, 0x400000, 0, 8));
        call(MMAP, 0, 4096, 3, ANON_PRIVATE, -1, 0);
        long m = call(MMAP, 0, 4096, 3, ANON_PRIVATE, -1, 0);
        call(MUNMAP, m + 4096, 4096);
        call(294);
        LinuxState copy = state.copy();
        assertEquals(state, copy);
        call(MMAP, 0, 4096, 3, ANON_PRIVATE, -1, 0);
        assertNotEquals(state, copy);
        LinuxState again = state.copy();
        assertEquals(0, call(RT_SIGACTION, 10, 0, 0x400100, 8));
        assertEquals(1, memory.readLong(0x400100));
        assertEquals(again, state);
        memory.write(0x400000, new byte[] {2, 0, 0, 0, 0, 0, 0, 0});
        call(RT_SIGACTION, 10, 0x400000, 0, 8);
        assertNotEquals(again, state);
        assertArrayEquals(new long[] {1, 0, 0, 0}, again.sigaction(10), "the copy is deep");
    }
}
