package io.vmfork.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The vmfork command, in process, on real VMs. */
class CliTest {
    private record Result(int code, String out, String err) {
    }

    private static synchronized Result vmfork(String... args) {
        PrintStream oldOut = System.out;
        PrintStream oldErr = System.err;
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        ByteArrayOutputStream err = new ByteArrayOutputStream();
        System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
        try {
            int code = Main.run(args);
            return new Result(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
        } finally {
            System.setOut(oldOut);
            System.setErr(oldErr);
        }
    }

    @Test
    void runPrintsTheConsoleAndRepliesAndExitsWithTheGuestsCode() {
        Result r = vmfork("run", "warm-worker", "--request", "get 42", "--request", "stats", "--request", "stop");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("warm-worker: ready"), r.out());
        assertTrue(r.out().contains("\n42 1176139425187626534\n"), r.out());
        assertTrue(r.out().contains("keys=2097152 rounds=96"), r.out());
        assertTrue(r.out().endsWith("bye\n"), r.out());
    }

    @Test
    void aCrashIsReportedWithItsReason() {
        Result r = vmfork("run", "crash");
        assertEquals(Main.EX_SOFTWARE, r.code());
        assertTrue(r.err().contains("VM crashed: guest crashed: triple fault"), r.err());
        assertTrue(r.err().contains("rip=0x"), r.err());
    }

    @Test
    void exitCodesAndUsageErrors() {
        assertEquals(42, vmfork("run", "exit42").code());
        Result none = vmfork("run", "no-such-guest");
        assertEquals(Main.EX_USAGE, none.code());
        assertTrue(none.err().contains("no shipped guest named 'no-such-guest'"), none.err());
        Result mem = vmfork("run", "hello", "--memory", "3M");
        assertEquals(Main.EX_USAGE, mem.code());
        assertTrue(mem.err().contains("multiple of 2 MiB"), mem.err());
        assertEquals(Main.EX_USAGE, vmfork("run", "hello", "--bogus", "1").code());
    }

    /** A static x86-64 ELF whose only instruction is `jmp .`: it never ends on its own. */
    private static Path loopForever(Path dir) throws Exception {
        java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(0x1002).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        b.put(new byte[] {0x7f, 'E', 'L', 'F', 2, 1, 1, 0});
        b.position(16);
        b.putShort((short) 2).putShort((short) 62).putInt(1).putLong(0x400000).putLong(64).putLong(0).putInt(0);
        b.putShort((short) 64).putShort((short) 56).putShort((short) 1).putShort((short) 64).putShort((short) 0)
                .putShort((short) 0);
        b.position(64);
        b.putInt(1).putInt(5).putLong(0x1000).putLong(0x400000).putLong(0x400000).putLong(2).putLong(2)
                .putLong(0x1000);
        b.position(0x1000);
        b.put((byte) 0xeb).put((byte) 0xfe);
        Path p = dir.resolve("loop.elf");
        Files.write(p, b.array());
        return p;
    }

    @Test
    void aTimeoutStopsTheVm(@TempDir Path dir) throws Exception {
        Result r = vmfork("run", loopForever(dir).toString(), "--timeout", "300ms", "--request", "x");
        assertEquals(Main.EX_TIMEOUT, r.code(), r.err());
        assertTrue(r.err().contains("did not end within"), r.err());
    }

    @Test
    void snapshotThenRestoreGivesAWorkingClone(@TempDir Path dir) throws Exception {
        Path capsule = dir.resolve("ww.capsule");
        Result s = vmfork("snapshot", "warm-worker", "--out", capsule.toString(), "--request", "get 1");
        assertEquals(0, s.code(), s.err());
        assertTrue(Files.size(capsule) > 64L << 20, "the capsule holds the worker's 64 MiB index");
        Result r = vmfork("restore", capsule.toString(), "--request", "get 42", "--request", "stop");
        assertEquals(0, r.code(), r.err());
        assertFalse(r.out().contains("building index"), "a clone does not initialise again: " + r.out());
        assertTrue(r.out().startsWith("42 1176139425187626534\n"), r.out());

        Path broken = dir.resolve("broken.capsule");
        byte[] b = Files.readAllBytes(capsule);
        b[b.length / 2] ^= 1;
        Files.write(broken, b);
        Result bad = vmfork("restore", broken.toString());
        assertEquals(CapsuleCommands.EX_DATAERR, bad.code());
        assertTrue(bad.err().contains("is not a valid capsule"), bad.err());
    }

    @Test
    void nodeRefusesAnInvalidConfigNamingTheKey(@TempDir Path dir) throws Exception {
        Path conf = dir.resolve("node.conf");
        Files.writeString(conf, "vmfork.node.placement.policies { 7 = nearest }\n");
        Result r = vmfork("node", "--config", conf.toString());
        assertEquals(Main.EX_CONFIG, r.code(), r.err());
        assertTrue(r.err().contains("vmfork.node.placement.policies.7"), r.err());
        Result missing = vmfork("node");
        assertEquals(Main.EX_USAGE, missing.code());
        assertTrue(missing.err().contains("--config"), missing.err());
    }

    @Test
    void nodeThatCannotBindItsPortExits69(@TempDir Path dir) throws Exception {
        try (java.net.ServerSocket taken = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            Path conf = dir.resolve("node.conf");
            Files.writeString(conf, "vmfork.node { hostname = \"127.0.0.1\", port = " + taken.getLocalPort() + " }\n");
            Result r = vmfork("node", "--config", conf.toString());
            assertEquals(Main.EX_UNAVAILABLE, r.code(), r.err());
            assertTrue(r.err().contains("vmfork node: cannot start"), r.err());
        }
    }
}
