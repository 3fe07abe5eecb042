package io.vmfork.cli;

import static org.junit.jupiter.api.Assertions.*;

import com.typesafe.config.ConfigFactory;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * {@code vmfork run} of a static Linux program (docs/linux.md), in process, on the process
 * platform (where a host's /dev/kvm would make "auto" choose KVM, which does not run Linux
 * programs yet, the test asks for the process platform).
 */
class LinuxRunTest {
    private static String previous;

    @BeforeAll
    static void processPlatform() {
        previous = System.getProperty("vmfork.vmm.platform");
        System.setProperty("vmfork.vmm.platform", "process");
        ConfigFactory.invalidateCaches();
    }

    @AfterAll
    static void restorePlatform() {
        if (previous == null) {
            System.clearProperty("vmfork.vmm.platform");
        } else {
            System.setProperty("vmfork.vmm.platform", previous);
        }
        ConfigFactory.invalidateCaches();
    }

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
        System.setIn(new java.io.ByteArrayInputStream(new byte[0])); // Surefire's stdin is its command channel
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
    void runGivesAProgramItsArgumentsAndEnvironmentAndPrintsItsReplies() {
        for (String libc : new String[] {"musl", "glibc"}) {
            String name = "linux-probe-" + libc;
            Result r = vmfork("run", name, "--memory", "64M", "--env", "GREETING=hi there", "--env", "X=1",
                    "--request", "argv", "--request", "env", "--request", "enosys", "--", "one", "--two");
            assertEquals(0, r.code(), r.err());
            assertTrue(r.err().contains("platform process"), r.err());
            assertTrue(r.out().contains("probe: up\n"), r.out());
            assertTrue(r.out().contains("argc=3 /" + name + "|one|--two\n"), r.out());
            assertTrue(r.out().contains("envc=2 GREETING=hi there|X=1\n"), r.out());
            assertTrue(r.out().contains("probe: end of input\n"), r.out());
            assertTrue(r.err().contains("system calls not served (each answered ENOSYS): inotify_init1 x2"), r.err());
        }
    }

    @Test
    void anExitCodeIsTheCommandsAndRefusalsSayWhy() {
        assertEquals(5, vmfork("run", "linux-probe-musl", "--request", "exit 5").code());
        Result dynamic = vmfork("run", "linux-probe-dynamic");
        assertEquals(Main.EX_USAGE, dynamic.code());
        assertTrue(dynamic.err().contains("dynamically linked"), dynamic.err());
        // Into a directory that exists: the Linux program is what is refused, before any file is written.
        Result snapshot = vmfork("snapshot", "linux-probe-musl", "--out",
                System.getProperty("java.io.tmpdir") + "/vmfork-linux-never-written-" + ProcessHandle.current().pid()
                        + ".capsule");
        assertEquals(Main.EX_USAGE, snapshot.code());
        assertTrue(snapshot.err().contains("capsules of Linux guests are not implemented yet"), snapshot.err());
        Result sdkArgs = vmfork("run", "hello", "--env", "A=B");
        assertEquals(Main.EX_USAGE, sdkArgs.code());
        assertTrue(sdkArgs.err().contains("SDK guest"), sdkArgs.err());
    }
}
