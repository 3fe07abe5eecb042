package io.vmfork.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.attribute.PosixFilePermissions;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code vmfork certs} writes what a node's {@code vmfork.security} needs, and
 * {@code vmfork node} refuses an address other than loopback without it.
 */
class CertsCommandTest {
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
    void createsTheCaAndMembersAndRotatesAMember(@TempDir Path dir) throws Exception {
        Result r = vmfork("certs", "--dir", dir.toString(), "--cluster", "lab", "--node", "node-1", "--node", "node-2",
                "--client", "app", "--days", "30");
        assertEquals(0, r.code(), r.err());
        for (String f : List.of("ca.crt", "ca.key", "node-1.crt", "node-1.key", "node-2.crt", "node-2.key", "app.crt",
                "app.key")) {
            assertTrue(Files.isRegularFile(dir.resolve(f)), f);
            if (f.endsWith(".key")) {
                assertEquals("rw-------", PosixFilePermissions.toString(Files.getPosixFilePermissions(dir.resolve(f))));
            }
        }
        assertTrue(r.out().contains("created the CA of cluster 'lab'"), r.out());
        assertTrue(r.out().contains("node node-1 (valid 30 days):\n  vmfork.security { key-file = \""
                + dir.resolve("node-1.key") + "\""), r.out());
        assertTrue(r.out().contains("client app (valid 30 days)"), r.out());

        // Rotation: a new key and certificate under the same CA, the others untouched.
        String ca = Files.readString(dir.resolve("ca.crt"));
        String key1 = Files.readString(dir.resolve("node-1.key"));
        String key2 = Files.readString(dir.resolve("node-2.key"));
        r = vmfork("certs", "--dir", dir.toString(), "--node", "node-1");
        assertEquals(0, r.code(), r.err());
        assertFalse(r.out().contains("created the CA"), r.out());
        assertEquals(ca, Files.readString(dir.resolve("ca.crt")));
        assertNotEquals(key1, Files.readString(dir.resolve("node-1.key")));
        assertEquals(key2, Files.readString(dir.resolve("node-2.key")));
    }

    @Test
    void refusesWhatWouldBreakTheCluster(@TempDir Path dir) {
        assertEquals(Main.EX_USAGE, vmfork("certs").code());
        assertEquals(0, vmfork("certs", "--dir", dir.toString()).code());
        Result r = vmfork("certs", "--dir", dir.toString());
        assertEquals(Main.EX_USAGE, r.code());
        assertTrue(r.err().contains("has a cluster CA already"), r.err());
        r = vmfork("certs", "--dir", dir.toString(), "--cluster", "other", "--node", "n");
        assertEquals(Main.EX_USAGE, r.code());
        assertTrue(r.err().contains("is cluster 'vmfork', not 'other'"), r.err());
        r = vmfork("certs", "--dir", dir.toString(), "--node", "../escape");
        assertEquals(Main.EX_USAGE, r.code());
        assertTrue(r.err().contains("is not a member name"), r.err());
        assertFalse(Files.exists(dir.getParent().resolve("escape.key")));
    }

    /** As a user runs it: its own JVM, one line on stderr, the documented exit code. */
    @Test
    void aNodeOffLoopbackWithoutCredentialsDoesNotStart(@TempDir Path dir) throws Exception {
        Path conf = dir.resolve("node.conf");
        Files.writeString(conf, "vmfork.host { id = 5, name = \"exposed\" }\n"
                + "vmfork.node { hostname = \"192.0.2.10\", port = 0, status.http-port = -1 }\n");
        Process p = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-Xmx128m",
                "-cp", System.getProperty("java.class.path"), Main.class.getName(), "node", "--config", conf.toString())
                .redirectErrorStream(true).start();
        assertTrue(p.waitFor(60, TimeUnit.SECONDS), "the node did not exit");
        String out = new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
        assertEquals(Main.EX_CONFIG, p.exitValue(), out);
        assertEquals(List.of("vmfork node: " + conf + ": invalid node configuration: vmfork.security: no credentials,"
                + " and Artery at 192.0.2.10 is not loopback-only: set vmfork.security.key-file, cert-file and"
                + " ca-cert-file (vmfork certs creates them), or vmfork.security.insecure = on to run without TLS"),
                out.lines().filter(l -> !l.startsWith("SLF4J")).toList());
    }
}
