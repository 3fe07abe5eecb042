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
        java.io.InputStream oldIn = System.in;
        System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
        System.setErr(new PrintStream(err, true, StandardCharsets.UTF_8));
        // Surefire's stdin is its command channel: a command that reads requests from stdin
        // must not take from it (the fork JVM then misses its shutdown and is killed 30 s later).
        System.setIn(new java.io.ByteArrayInputStream(new byte[0]));
        try {
            int code = Main.run(args);
            return new Result(code, out.toString(StandardCharsets.UTF_8), err.toString(StandardCharsets.UTF_8));
        } finally {
            System.setIn(oldIn);
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
        // KVM: a triple fault; the process platform names the page fault itself.
        assertTrue(r.err().contains("VM crashed: guest crashed: triple fault")
                || r.err().contains("VM crashed: guest crashed: access to guest-physical"), r.err());
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
        assertEquals(Main.EX_USAGE, vmfork("run", "hello", "--vcpus", "0").code());
        Result many = vmfork("run", "hello", "--vcpus", "10000");
        assertEquals(Main.EX_USAGE, many.code());
        assertTrue(many.err().contains("vmfork.vmm.max-vcpus"), many.err());
    }

    @Test
    void runGivesTheGuestTheVcpusAskedFor() {
        Result r = vmfork("run", "smp", "--vcpus", "4", "--request", "info", "--request", "start 4",
                "--request", "progress", "--request", "stop");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("vcpus=4 identity=4 index=0"), r.out());
        assertTrue(r.out().contains("started 14"), r.out());
        assertTrue(r.out().contains("progress ok"), r.out());
    }

    /**
     * A static x86-64 ELF whose only instruction is `jmp .`: it never ends on its own. It
     * carries the vmfork guest note, so that it is an SDK guest, which both platforms run
     * (without it, it would be a Linux program: docs/linux.md, "Which kind").
     */
    private static Path loopForever(Path dir) throws Exception {
        java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(0x1002).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        b.put(new byte[] {0x7f, 'E', 'L', 'F', 2, 1, 1, 0});
        b.position(16);
        b.putShort((short) 2).putShort((short) 62).putInt(1).putLong(0x400000).putLong(64).putLong(0).putInt(0);
        b.putShort((short) 64).putShort((short) 56).putShort((short) 2).putShort((short) 64).putShort((short) 0)
                .putShort((short) 0);
        b.position(64);
        b.putInt(1).putInt(5).putLong(0x1000).putLong(0x400000).putLong(0x400000).putLong(2).putLong(2)
                .putLong(0x1000);
        // PT_NOTE at file offset 0x100: owner "vmfork", type VMF_NOTE_GUEST (1), no descriptor.
        b.putInt(4).putInt(4).putLong(0x100).putLong(0).putLong(0).putLong(20).putLong(20).putLong(4);
        b.position(0x100);
        b.putInt(7).putInt(0).putInt(1).put(new byte[] {'v', 'm', 'f', 'o', 'r', 'k', 0, 0});
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
    void snapshotWhenReadyCapturesAGuestThatNeverWaitsForRequests(@TempDir Path dir) throws Exception {
        Path capsule = dir.resolve("spin.capsule");
        long t0 = System.nanoTime();
        Result s = vmfork("snapshot", "spin", "--out", capsule.toString(), "--when", "ready");
        assertEquals(0, s.code(), s.err());
        // Before --when, snapshot waited for RECV until its 120 s timeout ran out.
        assertTrue(System.nanoTime() - t0 < 60_000_000_000L, "snapshot of a busy guest waited for it to idle");
        Result r = vmfork("restore", capsule.toString(), "--request", "count", "--request", "stop");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().matches("(?s)[0-9]+\n.*"), r.out());

        Result idle = vmfork("snapshot", "spin", "--out", dir.resolve("idle.capsule").toString(), "--when", "idle",
                "--timeout", "1s");
        assertEquals(Main.EX_TIMEOUT, idle.code(), idle.err());
        assertTrue(idle.err().contains("did not wait for a request within"), idle.err());
        assertFalse(Files.exists(dir.resolve("idle.capsule")));

        Result now = vmfork("snapshot", "warm-worker", "--out", dir.resolve("now.capsule").toString(), "--when", "now");
        assertEquals(0, now.code(), now.err());
        Result early = vmfork("restore", dir.resolve("now.capsule").toString(), "--request", "get 42", "--request", "stop");
        assertEquals(0, early.code(), early.err());
        assertTrue(early.out().contains("42 1176139425187626534\n"), "a clone taken before READY initialises on: "
                + early.out());
        Result bad = vmfork("snapshot", "spin", "--out", dir.resolve("x").toString(), "--when", "later");
        assertEquals(Main.EX_USAGE, bad.code(), bad.err());
    }

    /**
     * Re-frames a capsule with vCPU 0's RFLAGS.VM set (virtual-8086 mode, which CPL3 code
     * cannot enter) and a valid digest (issue 6, items 8 and 9: a capsule that would run
     * its guest other than as the model allows). Since format version 4 the capsule holds
     * no CS to forge: the model derives it.
     */
    private static byte[] withForbiddenFlags(byte[] capsule) throws Exception {
        com.google.protobuf.CodedInputStream in = com.google.protobuf.CodedInputStream.newInstance(capsule, 8,
                capsule.length - 8);
        in.setSizeLimit(Integer.MAX_VALUE);
        java.io.ByteArrayOutputStream body = new java.io.ByteArrayOutputStream();
        body.write(capsule, 0, 8);
        while (!in.isAtEnd()) {
            io.vmfork.proto.CapsuleFrame f = io.vmfork.proto.CapsuleFrame.parseFrom(in.readRawBytes(in.readRawVarint32()));
            if (f.hasState()) {
                var s = f.getState().toBuilder();
                var regs = s.getVcpusBuilder(0).getCpuBuilder().getRegsBuilder();
                regs.setRflags(regs.getRflags() | 0x20000);
                f = io.vmfork.proto.CapsuleFrame.newBuilder().setState(s).build();
            }
            if (f.hasTrailer()) {
                byte[] digest = java.security.MessageDigest.getInstance("SHA-256").digest(body.toByteArray());
                f = io.vmfork.proto.CapsuleFrame.newBuilder().setTrailer(f.getTrailer().toBuilder()
                        .setSha256(com.google.protobuf.ByteString.copyFrom(digest))).build();
            }
            f.writeDelimitedTo(body);
        }
        return body.toByteArray();
    }

    @Test
    void aSignedSnapshotRestoresOnlyWhereItsSignerIsTrusted(@TempDir Path dir) throws Exception {
        Result k = vmfork("capsule-key", "--out", dir.resolve("keys").toString());
        assertEquals(0, k.code(), k.err());
        Path key = dir.resolve("keys/capsule-signing.key");
        Path pub = dir.resolve("keys/capsule-signing.pub");
        assertEquals("rw-------", java.nio.file.attribute.PosixFilePermissions.toString(
                Files.getPosixFilePermissions(key)));
        assertTrue(k.out().contains("fingerprint: SHA256:"), k.out());
        assertEquals(ExitCodes.CANTCREAT, vmfork("capsule-key", "--out", dir.resolve("keys").toString()).code(),
                "an existing key is never overwritten");
        assertEquals(0, vmfork("capsule-key", "--out", dir.resolve("keys").toString(), "--name", "other").code());
        Path otherKey = dir.resolve("keys/other.key");

        Path signed = dir.resolve("signed.capsule");
        Result s = vmfork("snapshot", "forker", "--memory", "16M", "--out", signed.toString(), "--sign", key.toString());
        assertEquals(0, s.code(), s.err());
        assertTrue(s.err().contains("signed by SHA256:"), s.err());
        Result r = vmfork("restore", signed.toString(), "--require-signer", pub.toString(), "--request", "sum");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().startsWith("sum="), r.out());

        Path unsigned = dir.resolve("unsigned.capsule");
        assertEquals(0, vmfork("snapshot", "forker", "--memory", "16M", "--out", unsigned.toString()).code());
        Path foreign = dir.resolve("foreign.capsule");
        assertEquals(0, vmfork("snapshot", "forker", "--memory", "16M", "--out", foreign.toString(),
                "--sign", otherKey.toString()).code());
        Path flipped = dir.resolve("flipped.capsule");
        byte[] b = Files.readAllBytes(signed);
        b[b.length - 5] ^= 1; // inside the signature
        Files.write(flipped, b);
        for (Object[] c : new Object[][] {{unsigned, "is not signed"}, {foreign, "which is not its trusted signer"},
                {flipped, "does not verify"}}) {
            Result bad = vmfork("restore", c[0].toString(), "--require-signer", pub.toString(), "--request", "sum");
            assertEquals(CapsuleCommands.EX_NOPERM, bad.code(), bad.err() + bad.out());
            assertTrue(bad.err().startsWith("vmfork restore: " + c[0] + " refused: the capsule from "), bad.err());
            assertTrue(bad.err().contains((String) c[1]), bad.err());
            assertEquals(1, bad.err().lines().count(), "one line, no stack trace: " + bad.err());
            assertEquals("", bad.out(), "nothing ran");
        }
        // Without a required signer every one of them restores.
        Result any = vmfork("restore", unsigned.toString(), "--request", "sum");
        assertEquals(0, any.code(), any.err());

        Result noKey = vmfork("restore", signed.toString(), "--require-signer", dir.resolve("none.pub").toString());
        assertEquals(ExitCodes.NOINPUT, noKey.code());
        assertTrue(noKey.err().contains("none.pub: no such file"), noKey.err());
        Result privAsSigner = vmfork("snapshot", "forker", "--out", dir.resolve("x").toString(), "--sign",
                pub.toString());
        assertEquals(Main.EX_USAGE, privAsSigner.code());
        assertTrue(privAsSigner.err().contains("holds no PRIVATE KEY block"), privAsSigner.err());
    }

    @Test
    void restoreExplainsEveryRefusalWithoutAStackTrace(@TempDir Path dir) throws Exception {
        Path capsule = dir.resolve("forker.capsule");
        Result s = vmfork("snapshot", "forker", "--memory", "16M", "--out", capsule.toString());
        assertEquals(0, s.code(), s.err());
        Path forged = dir.resolve("vm86.capsule");
        Files.write(forged, withForbiddenFlags(Files.readAllBytes(capsule)));
        Result bad = vmfork("restore", forged.toString(), "--request", "sum");
        assertEquals(CapsuleCommands.EX_DATAERR, bad.code(), bad.err() + bad.out());
        assertTrue(bad.err().contains("regs.rflags") && bad.err().contains("CPL3 code cannot set"), bad.err());
        assertFalse(bad.err().contains("\tat "), "no stack trace: " + bad.err());

        Result missing = vmfork("restore", dir.resolve("nothing-here").toString());
        assertEquals(ExitCodes.NOINPUT, missing.code());
        assertTrue(missing.err().endsWith("nothing-here: no such file\n"), missing.err());
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

    /**
     * {@code bench cluster}: two node JVMs and this JVM as a host, one JSON object per
     * benchmark and pass (over TLS, plain TCP, plain TCP, TLS) with numeric figures, then the
     * cost of TLS per benchmark; no node JVM and no temporary directory is left.
     */
    @Test
    void benchClusterPrintsItsFourFiguresWithAndWithoutTlsAndLeavesNoNodeBehind() throws Exception {
        java.util.Set<String> tempBefore = clusterTempDirs();
        Result r = vmfork("bench", "cluster", "--json", "--runs", "1");
        assertEquals(0, r.code(), r.err());
        com.fasterxml.jackson.databind.ObjectMapper mapper = new com.fasterxml.jackson.databind.ObjectMapper();
        java.util.List<String> lines = r.out().lines().toList();
        java.util.List<String> four = java.util.List.of("cluster.placement", "cluster.placement_throughput",
                "cluster.launch_remote", "cluster.fork_parent_blocked");
        // Four passes, TLS, plain, plain, TLS, of the four figures; then the cost of TLS per figure.
        java.util.List<String> want = new java.util.ArrayList<>();
        java.util.List<String> got = new java.util.ArrayList<>();
        boolean[] tls = {true, false, false, true};
        for (int pass = 1; pass <= 4; pass++) {
            for (String b : four) {
                want.add(b + " tls=" + tls[pass - 1] + " pass=" + pass);
            }
        }
        for (String b : four) {
            want.add("cluster.tls_cost of=" + b);
        }
        for (String line : lines) {
            com.fasterxml.jackson.databind.JsonNode o = mapper.readTree(line);
            if (o.path("bench").asText().equals("cluster.tls_cost")) {
                got.add("cluster.tls_cost of=" + o.path("of").asText());
                for (String f : new String[] {"p50_tls", "p50_plain", "p50_ratio", "p99_ratio"}) {
                    assertTrue(o.path(f).isNumber() && o.path(f).asDouble() > 0, f + " in " + line);
                }
                assertEquals(o.path("p50_tls").asDouble() / o.path("p50_plain").asDouble(),
                        o.path("p50_ratio").asDouble(), 0.01, line);
                continue;
            }
            assertTrue(o.path("tls").isBoolean(), "tls in " + line);
            got.add(o.path("bench").asText() + " tls=" + o.path("tls").asBoolean() + " pass=" + o.path("pass").asInt());
            for (String f : new String[] {"n", "p50_ms", "p99_ms"}) {
                assertTrue(o.path(f).isNumber(), f + " in " + line);
            }
            assertTrue(o.path("p50_ms").asDouble() > 0, line);
            if (o.path("bench").asText().equals("cluster.placement_throughput")) {
                assertTrue(o.path("per_s").isNumber() && o.path("per_s").asDouble() > 0, line);
            }
            if (o.path("bench").asText().equals("cluster.fork_parent_blocked")) {
                assertTrue(o.path("vmm_only_p50_ms").isNumber() && o.path("vmm_only_p50_ms").asDouble() > 0, line);
            }
        }
        assertEquals(want, got, r.out());
        try (java.util.stream.Stream<ProcessHandle> children = ProcessHandle.current().children()) {
            assertEquals(java.util.List.of(), children.filter(ProcessHandle::isAlive)
                    .map(h -> h.info().commandLine().orElse("?")).filter(c -> c.contains(LocalCluster.MARKER)).toList());
        }
        assertEquals(tempBefore, clusterTempDirs());
    }

    /**
     * {@code bench capsule}: capsule.compression for random memory and a warm-worker's image,
     * with numeric throughput, an LZ4 ratio near 1 for random bytes and below it for the image.
     */
    @Test
    void benchCapsulePrintsCompressionFiguresForRandomAndTypicalMemory() throws Exception {
        Result r = vmfork("bench", "capsule", "--json", "--runs", "1");
        assertEquals(0, r.code(), r.err());
        com.fasterxml.jackson.databind.ObjectMapper mapper = new com.fasterxml.jackson.databind.ObjectMapper();
        java.util.List<String> lines = r.out().lines().toList();
        assertEquals(2, lines.size(), r.out());
        java.util.List<String> data = new java.util.ArrayList<>();
        for (String line : lines) {
            com.fasterxml.jackson.databind.JsonNode o = mapper.readTree(line);
            assertEquals("capsule.compression", o.path("bench").asText(), line);
            data.add(o.path("data").asText());
            for (String f : new String[] {"n", "ratio", "compress_mib_s", "decompress_mib_s",
                "capsule_none_encode_mib_s", "capsule_lz4_encode_mib_s", "capsule_auto_encode_mib_s"}) {
                assertTrue(o.path(f).isNumber() && o.path(f).asDouble() > 0, f + " in " + line);
            }
        }
        assertEquals(java.util.List.of("random", "warm-worker"), data);
        assertTrue(mapper.readTree(lines.get(0)).path("ratio").asDouble() > 0.99, lines.get(0));
        assertTrue(mapper.readTree(lines.get(1)).path("ratio").asDouble() < 0.9, lines.get(1));
    }

    private static java.util.Set<String> clusterTempDirs() throws Exception {
        try (java.util.stream.Stream<Path> s = Files.list(Path.of(System.getProperty("java.io.tmpdir")))) {
            return s.map(p -> p.getFileName().toString()).filter(n -> n.startsWith("vmfork-cluster-"))
                    .collect(java.util.stream.Collectors.toSet());
        }
    }
}
