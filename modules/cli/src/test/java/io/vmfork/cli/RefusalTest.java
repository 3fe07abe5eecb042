package io.vmfork.cli;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.platform.HostPlatforms;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The vmfork command, in a JVM of its own, on a host that refuses what its platform needs,
 * refused for real: src/test/c/refuse.c runs the command under a seccomp filter that fails
 * the chosen system calls with EPERM (what a container runtime's seccomp profile does), or
 * with vm.memfd_noexec raised in a PID namespace of its own, as the command's subreaper.
 * Each command exits 69 with one line on stderr that names what is refused, the call and
 * errno, and the fix, and no stack trace; refuse checks that no process it started (a
 * guest process, a node JVM) is left once it has ended. Namespaces the host refuses are
 * dropped with a note instead, and guests run.
 */
class RefusalTest {
    private static final String OR_KVM = ", or run on a host with /dev/kvm (vmfork.vmm.platform = kvm)";
    private static Path refuse;

    /** Builds refuse.c with gcc, as ForkFloor builds its floor program. */
    @BeforeAll
    static void buildRefuse() throws Exception {
        Path dir = Files.createDirectories(Path.of("target", "test-c"));
        refuse = dir.resolve("refuse").toAbsolutePath();
        ForkFloor.run(List.of("gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", refuse.toString(),
                Path.of("src", "test", "c", "refuse.c").toString()), 60, "gcc");
    }

    private record Result(int code, String out, String err) {
        List<String> errLines() {
            return err.lines().toList();
        }
    }

    /** `refuse REFUSALS -- java ... io.vmfork.cli.Main ARGS`, with {@code env} added. */
    private static Result vmfork(Path dir, List<String> refusals, Map<String, String> env, String... args)
            throws Exception {
        List<String> cmd = new ArrayList<>();
        cmd.add(refuse.toString());
        cmd.addAll(refusals);
        cmd.add("--");
        cmd.addAll(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-Xmx256m",
                "-XX:TieredStopAtLevel=1", "-cp", System.getProperty("java.class.path"), Main.class.getName()));
        cmd.addAll(List.of(args));
        Path out = Files.createTempFile(dir, "out", ".txt");
        Path err = Files.createTempFile(dir, "err", ".txt");
        ProcessBuilder pb = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile())
                .redirectInput(ProcessBuilder.Redirect.from(Path.of("/dev/null").toFile()));
        pb.environment().remove("VMFORK_PLATFORM");
        pb.environment().putAll(env);
        Process p = pb.start();
        if (!p.waitFor(120, TimeUnit.SECONDS)) {
            p.descendants().forEach(ProcessHandle::destroyForcibly);
            p.destroyForcibly();
            fail("vmfork " + String.join(" ", args) + " under " + refusals + " did not end within 120 s: "
                    + Files.readString(err));
        }
        return new Result(p.exitValue(), Files.readString(out), Files.readString(err));
    }

    /** Each command that opens a VMM (or, for demo, checks the platform before starting nodes). */
    private static String[][] commands(Path dir) throws IOException {
        Path conf = dir.resolve("node.conf");
        Files.writeString(conf, "vmfork.host { id = 1, name = \"node-1\" }\n"
                + "vmfork.node { hostname = \"127.0.0.1\", port = 0, status.http-port = -1 }\n");
        return new String[][] {{"run", "hello"}, {"bench", "launch", "--runs", "1"},
            {"node", "--config", conf.toString()}, {"demo", "--nodes", "1"}};
    }

    /** The command's name as its messages start: "bench launch" for a bench scenario. */
    private static String name(String[] args) {
        return args[0].equals("bench") ? "bench " + args[1] : args[0];
    }

    private static boolean isRoot() throws IOException {
        return Files.readString(Path.of("/proc/self/status")).matches("(?s).*\\nUid:\\s+0\\s.*");
    }

    /** Asserts exit 69, the one line on stderr, and that nothing was left running. */
    private static void assertRefused(Result r, String command, String expected) {
        String all = "exit " + r.code() + "\nstderr:\n" + r.err() + "stdout:\n" + r.out();
        assertFalse(r.err().contains("refuse: left behind"), all);
        assertEquals(Main.EX_UNAVAILABLE, r.code(), all);
        assertEquals(1, r.errLines().size(), "one line on stderr: " + all);
        String line = r.errLines().get(0);
        assertTrue(line.startsWith("vmfork " + command + ": "), all);
        assertTrue(line.contains(expected), "expected '" + expected + "' in: " + all);
        assertFalse(line.contains("Exception") || line.contains("\tat "), all);
        assertEquals("", r.out(), all);
    }

    static Stream<Arguments> requiredRefusals() {
        return Stream.of(
                Arguments.of("ptrace", "ptrace is refused (PTRACE_SEIZE of a guest process: EPERM): ", "CAP_SYS_PTRACE"),
                Arguments.of("seccomp", "seccomp filters are refused (seccomp(SECCOMP_SET_MODE_FILTER, TSYNC) in a guest"
                        + " process: EPERM): ", "allow seccomp(2) in the container's seccomp profile"));
    }

    /** ptrace and seccomp filters are required: every command refuses to start without them. */
    @ParameterizedTest(name = "{0}")
    @MethodSource("requiredRefusals")
    void withoutPtraceOrSeccompEveryCommandExits69NamingTheRefusalAndTheFix(String refusal, String what, String fix,
            @TempDir Path dir) throws Exception {
        for (String[] args : commands(dir)) {
            Result r = vmfork(dir, List.of(refusal), Map.of("VMFORK_PLATFORM", "process"), args);
            assertRefused(r, name(args), what);
            assertTrue(r.err().contains(fix) && r.err().contains(OR_KVM), r.err());
            if (args[0].equals("demo")) {
                assertTrue(r.err().endsWith("No node was started.\n"), r.err());
            }
        }
    }

    /**
     * vm.memfd_noexec 2 forbids the executable memfd the stub runs from: refused at open;
     * 1 seals only memfds made without MFD_EXEC, which the stub's is not: guests run.
     */
    @Test
    void memfdNoexecTwoIsRefusedAtOpenAndOneIsNoObstacle(@TempDir Path dir) throws Exception {
        Assumptions.assumeTrue(isRoot(), "needs root: vm.memfd_noexec is set in a new PID namespace");
        Map<String, String> process = Map.of("VMFORK_PLATFORM", "process");
        for (String[] args : commands(dir)) {
            if (args[0].equals("run") || args[0].equals("node")) {
                assertRefused(vmfork(dir, List.of("memfd-noexec=2"), process, args), args[0],
                        "executable memfds are refused (memfd_create(MFD_EXEC) for the guest stub: EACCES):"
                                + " vm.memfd_noexec is 2 in this PID namespace; set vm.memfd_noexec to 0 or 1");
            }
        }
        Result ok = vmfork(dir, List.of("memfd-noexec=1"), process, "run", "hello");
        assertEquals(0, ok.code(), ok.err());
        assertTrue(ok.out().contains("hello from vmfork guest"), ok.out());
    }

    /** `platform = kvm` on a host without the KVM device: each command says so, and how to use the process platform. */
    @Test
    void kvmConfiguredWithoutTheDeviceExits69(@TempDir Path dir) throws Exception {
        Assumptions.assumeFalse(Files.exists(Path.of(HostPlatforms.DEFAULT_KVM_DEVICE)), "this host has /dev/kvm");
        for (String[] args : commands(dir)) {
            Result r = vmfork(dir, List.of(), Map.of("VMFORK_PLATFORM", "kvm"), args);
            if (args[0].equals("demo")) {
                assertRefused(r, "demo", "/dev/kvm does not exist: this machine offers no KVM, and the kvm platform"
                        + " is configured");
                assertTrue(r.err().endsWith("set vmfork.vmm.platform = auto to run the demo's VMs on the process"
                        + " platform. No node was started.\n"), r.err());
            } else {
                assertRefused(r, name(args), "the kvm platform is configured (vmfork.vmm.platform or VMFORK_PLATFORM ="
                        + " kvm) but /dev/kvm does not exist: ");
                assertTrue(r.err().endsWith("or set vmfork.vmm.platform = auto to run guests on the process"
                        + " platform\n"), r.err());
            }
        }
    }

    /**
     * Namespaces are optional: each the host refuses (here the user namespace; every one; the
     * mount of the empty root, as in a container without CAP_SYS_ADMIN) is dropped, said once
     * on stderr, and the guest runs, confined as ever.
     */
    @ParameterizedTest
    @ValueSource(strings = {"userns", "namespaces", "mount"})
    void refusedNamespacesAreDroppedWithANoteAndGuestsRun(String refusal, @TempDir Path dir) throws Exception {
        if (refusal.equals("userns")) {
            Assumptions.assumeTrue(isRoot(), "without root and a user namespace the stub gets no namespace at all");
        }
        Result r = vmfork(dir, List.of(refusal), Map.of("VMFORK_PLATFORM", "process"), "run", "hello");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("hello from vmfork guest"), r.out());
        String refused = switch (refusal) {
            case "userns" -> "refuses: user (clone: EPERM); they have pid, net, ipc, uts, mount (without a user"
                    + " namespace: as uid 65534 when the VMM is root, else as its user)";
            case "namespaces" -> "refuses: user (clone: EPERM), pid (clone: EPERM), net (clone: EPERM), ipc (clone:"
                    + " EPERM), uts (clone: EPERM), mount (clone: EPERM); they have none";
            default -> "refuses: mount (mount of its empty root: EPERM); they have user, pid, net, ipc, uts;";
        };
        List<String> notes = r.errLines().stream().filter(l -> l.contains("guest processes run without")).toList();
        assertEquals(1, notes.size(), r.err());
        assertTrue(notes.get(0).contains(refused), r.err());
    }
}
