package io.vmfork.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import picocli.CommandLine;

/**
 * The vmfork command's surface, without a VM: help of every command, --version,
 * completion, usage errors, arguments and files checked before any device opens, and
 * configuration typos and wrong types, each an exit code and one line per problem, no
 * stack trace. Commands that need a fresh JVM (system properties) run as a process, with
 * the KVM platform pointed at a device that does not exist: a command that reported the
 * platform instead of its argument would exit 69.
 */
class CliUsageTest {
    private static final List<String> NO_KVM = List.of("-Dvmfork.vmm.platform=kvm",
            "-Dvmfork.vmm.kvm-device=/nonexistent/kvm");

    private record Result(int code, String out, String err) {
        /** One line on stderr (picocli may add a "Did you mean" line), no stack trace. */
        Result oneLine() {
            assertFalse(err.contains("\tat "), "no stack trace: " + err);
            assertEquals(1, err.lines().filter(l -> !l.startsWith("Did you mean")).count(), "one line: " + err);
            return this;
        }
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

    /** {@code java JVM_OPTIONS io.vmfork.cli.Main ARGS} in a JVM of its own. */
    private static Result process(List<String> jvmOptions, String... args) throws Exception {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-XX:TieredStopAtLevel=1", "-Xmx128m"));
        cmd.addAll(jvmOptions);
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), Main.class.getName()));
        cmd.addAll(List.of(args));
        Process p = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new java.io.File("/dev/null")))
                .start();
        // Small outputs: read after it ends.
        if (!p.waitFor(60, TimeUnit.SECONDS)) {
            p.destroyForcibly().waitFor();
            fail("vmfork " + String.join(" ", args) + " did not end within 60 s");
        }
        return new Result(p.exitValue(), new String(p.getInputStream().readAllBytes(), StandardCharsets.UTF_8),
                new String(p.getErrorStream().readAllBytes(), StandardCharsets.UTF_8));
    }

    /** Every command and subcommand, as the words that name it: "run", "bench transfer", ... */
    static Stream<String> commands() {
        List<String> all = new ArrayList<>();
        collect(Main.commandLine(), "", all);
        return all.stream();
    }

    private static void collect(CommandLine cl, String prefix, List<String> into) {
        for (var e : cl.getSubcommands().entrySet()) {
            if (e.getKey().equals("help")) {
                continue;
            }
            String name = (prefix + " " + e.getKey()).strip();
            into.add(name);
            collect(e.getValue(), name, into);
        }
    }

    @ParameterizedTest
    @MethodSource("commands")
    void everyCommandHasHelpWithItsOptionsDefaultsAndExitCodes(String command) {
        List<String> args = new ArrayList<>(List.of(command.split(" ")));
        args.add("--help");
        Result r = vmfork(args.toArray(String[]::new));
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("Usage: vmfork " + command), r.out());
        assertTrue(r.out().contains("Exit codes"), r.out());
        assertTrue(r.out().contains("--help"), r.out());
        CommandLine cl = Main.commandLine();
        for (String word : command.split(" ")) {
            cl = cl.getSubcommands().get(word);
        }
        for (CommandLine.Model.OptionSpec o : cl.getCommandSpec().options()) {
            assertTrue(r.out().contains(o.longestName()), o.longestName() + " in the help of " + command);
            String d = String.join(" ", o.description());
            if (o.defaultValue() != null && !o.usageHelp()) {
                assertTrue(d.contains("Default"), "the help of " + command + " gives the default of " + o.longestName());
            }
        }
        assertEquals(0, vmfork("help", command.split(" ")[0]).code());
    }

    @Test
    void withoutACommandUsageGoesToStderrWithExit64() {
        Result r = vmfork();
        assertEquals(ExitCodes.USAGE, r.code());
        assertEquals("", r.out());
        assertTrue(r.err().startsWith("vmfork: a command is missing\nUsage: vmfork"), r.err());
        assertTrue(r.err().contains("demo") && r.err().contains("completion"), r.err());
    }

    @Test
    void versionNamesTheCommitAndThePlatformsOfThisHost() {
        Result r = vmfork("--version");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().matches("(?s)vmfork \\d+\\.\\d+\\.\\d+(-SNAPSHOT)? \\(commit [^)]+\\)\n.*"), r.out());
        assertFalse(r.out().contains("(commit unknown)"), "the build bakes in the commit: " + r.out());
        assertTrue(r.out().contains("\nplatform kvm: "), r.out());
        assertTrue(r.out().contains("\nplatform process: "), r.out());
    }

    @Test
    void completionCoversEveryCommandAndOption() {
        Result r = vmfork("completion");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("complete -F"), "a bash completion script");
        for (String c : commands().toList()) {
            assertTrue(r.out().contains(c.substring(c.lastIndexOf(' ') + 1)), c);
        }
        assertTrue(r.out().contains("--node-config") && r.out().contains("--require-signer"), "options too");
    }

    @Test
    void unknownOptionsAndStrayArgumentsAreUsageErrors() {
        String[][] wrong = {{"frobnicate"}, {"--bogus"}, {"run", "hello", "--bogus", "1"}, {"run", "hello", "extra"},
            {"run"}, {"demo", "foo"}, {"demo", "--workers", "many"}, {"demo", "--workers", "0"}, {"bench"},
            {"bench", "foo"}, {"bench", "launch", "--runs", "x"}, {"bench", "launch", "--runs", "0"},
            {"bench", "transfer", "--sizes", "big"}, {"bench", "transfer", "--kill", "maybe"},
            {"bench", "transfer", "--direct-buffer", "lots"}, {"node"}, {"node", "--config"},
            {"node", "--config", "x", "--parent-pid", "me"}, {"certs"}, {"certs", "--dir", "d", "--days", "0"},
            {"snapshot", "hello"}, {"snapshot", "hello", "--out", "x", "--when", "later"}, {"restore"},
            {"restore", "a", "b"}, {"capsule-key"}, {"capsule-key", "--out", "d", "--name", "../x"},
            {"run", "hello", "--memory", "lots"}, {"run", "hello", "--timeout", "soon"}, {"run", "hello",
                "--vcpus", "0"}, {"completion", "zsh"}};
        for (String[] args : wrong) {
            Result r = vmfork(args).oneLine();
            assertEquals(ExitCodes.USAGE, r.code(), String.join(" ", args) + ": " + r.err());
            assertTrue(r.err().startsWith("vmfork"), r.err());
        }
        Result bogus = vmfork("run", "hello", "--bogus");
        assertTrue(bogus.err().contains("--bogus") && bogus.err().contains("vmfork run --help"), bogus.err());
        Result sizes = vmfork("bench", "transfer", "--sizes", "big");
        assertTrue(sizes.err().contains("'big'"), sizes.err());
    }

    @Test
    void demoHelpAndStrayArgumentsDoNotStartTheDemo() {
        Result h = vmfork("demo", "-h");
        assertEquals(0, h.code());
        assertTrue(h.out().contains("--node-config"), h.out());
        assertFalse(h.err().contains("starting"), h.err());
        Result foo = vmfork("demo", "foo").oneLine();
        assertEquals(ExitCodes.USAGE, foo.code());
        assertTrue(foo.err().contains("'foo'"), foo.err());
    }

    /** With a KVM device that does not exist configured, each of these would exit 69 if it opened it first. */
    @Test
    void argumentsAndFilesAreCheckedBeforeThePlatform(@TempDir Path dir) throws Exception {
        Path empty = Files.createFile(dir.resolve("empty.capsule"));
        Path garbage = Files.writeString(dir.resolve("garbage.capsule"), "not a capsule at all\n");
        Path notElf = Files.writeString(dir.resolve("guest.elf"), "#!/bin/sh\n");
        Path capsuleLike = dir.resolve("magic.capsule");
        Files.write(capsuleLike, io.vmfork.vmm.capsule.CapsuleFormat.fileMagic());
        Object[][] cases = {
            {66, "no such file", new String[] {"restore", dir.resolve("missing.capsule").toString()}},
            {65, "is empty", new String[] {"restore", empty.toString()}},
            {65, "is not a capsule", new String[] {"restore", garbage.toString()}},
            {66, "no such file", new String[] {"restore", capsuleLike.toString(), "--require-signer",
                dir.resolve("none.pub").toString()}},
            {73, "does not exist", new String[] {"snapshot", "hello", "--out", dir.resolve("no/dir/x.capsule")
                .toString()}},
            {66, "no such file", new String[] {"snapshot", "hello", "--out", dir.resolve("x").toString(), "--sign",
                dir.resolve("none.key").toString()}},
            {66, "no such file", new String[] {"run", dir.resolve("missing.elf").toString()}},
            {65, "", new String[] {"run", notElf.toString()}},
            {64, "no shipped guest named", new String[] {"run", "no-such-guest"}},
            {64, "--runs must be at least 1", new String[] {"bench", "fork", "--runs", "0"}},
            {64, "multiple of 2 MiB", new String[] {"run", "hello", "--memory", "3M"}},
            {64, "vmfork.vmm.max-vcpus", new String[] {"run", "hello", "--vcpus", "10000"}},
            {64, "vmfork.vmm.memory.min/max", new String[] {"snapshot", "hello", "--out", dir.resolve("m").toString(),
                "--memory", "64G"}},
            {66, "no such file", new String[] {"node", "--config", dir.resolve("missing.conf").toString()}},
            {66, "no such file", new String[] {"demo", "--node-config", dir.resolve("missing.conf").toString()}},
        };
        for (Object[] c : cases) {
            String[] args = (String[]) c[2];
            Result r = process(NO_KVM, args).oneLine();
            assertEquals((int) c[0], r.code(), String.join(" ", args) + ": " + r.err());
            assertTrue(r.err().contains((String) c[1]), r.err());
            assertFalse(r.err().contains("/nonexistent/kvm"), "the argument's problem, not the platform's: " + r.err());
        }
    }

    @Test
    void aFileThatIsNotAKvmDeviceIsNamedWithItsErrno() throws Exception {
        Result r = process(List.of("-Dvmfork.vmm.platform=kvm", "-Dvmfork.vmm.kvm-device=/dev/null"), "run", "hello")
                .oneLine();
        assertEquals(ExitCodes.UNAVAILABLE, r.code(), r.err());
        assertTrue(r.err().contains("/dev/null is not a KVM device: KVM_GET_API_VERSION failed: ENOTTY (25)"), r.err());
    }

    @Test
    void debugAddsTheStackTrace(@TempDir Path dir) {
        Result plain = vmfork("restore", dir.resolve("missing").toString()).oneLine();
        Result debug = vmfork("--debug", "restore", dir.resolve("missing").toString());
        assertEquals(ExitCodes.NOINPUT, debug.code());
        assertTrue(debug.err().startsWith(plain.err()), debug.err());
        assertTrue(debug.err().contains("\tat io.vmfork.cli."), debug.err());
    }

    // ---- configuration: typos and wrong types, through a file, -D and --node-config ---------------

    private static final String TYPOS = """
            vmfork {
              node {
                capacty.vm-slots = 3
                status.htpp-port = 8558
                capacity.vm-slotz = 4
              }
              vmm.max-vmz = 12
              vmm.max-vms = lots
              vmm.stop-timeout = soon
            }
            vmfrok.node.port = 2552
            """;

    private static void assertTypos(String err, String origin) {
        assertFalse(err.contains("\tat "), "no stack trace: " + err);
        for (String want : new String[] {origin + "3: vmfork.node.capacty: unknown key; did you mean capacity?",
            origin + "4: vmfork.node.status.htpp-port: unknown key; did you mean http-port?",
            origin + "5: vmfork.node.capacity.vm-slotz: unknown key; did you mean vm-slots?",
            origin + "7: vmfork.vmm.max-vmz: unknown key; did you mean max-vms?",
            origin + "8: vmfork.vmm.max-vms: 'lots' is not a whole number",
            origin + "9: vmfork.vmm.stop-timeout: 'soon' is not a duration",
            origin + "11: vmfrok: unknown root key; did you mean vmfork?"}) {
            assertEquals(1, count(err, want), want + " once in: " + err);
        }
    }

    private static int count(String text, String part) {
        return (int) Pattern.compile(Pattern.quote(part)).matcher(text).results().count();
    }

    @Test
    void typosAndWrongTypesInTheConfigFileAreRefusedWithTheirLines(@TempDir Path dir) throws Exception {
        Path file = Files.writeString(dir.resolve("user.conf"), TYPOS);
        Result r = process(List.of("-Dconfig.file=" + file), "run", "hello");
        assertEquals(ExitCodes.CONFIG, r.code(), r.err());
        assertTrue(r.err().startsWith("vmfork run: " + file + ":"), r.err());
        assertTypos(r.err(), file + ":");
        assertEquals(7, r.err().lines().count(), r.err());
    }

    @Test
    void typosInANodesConfigStopItBeforeAnythingStarts(@TempDir Path dir) {
        Path file = dir.resolve("node.conf");
        try {
            Files.writeString(file, TYPOS);
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
        Result r = vmfork("node", "--config", file.toString());
        assertEquals(ExitCodes.CONFIG, r.code(), r.err());
        assertTypos(r.err(), file + ":");
        assertFalse(r.err().contains("platform"), "refused before the VMM opens: " + r.err());
    }

    @Test
    void typosInTheDemosNodeConfigAreNamedByItsOwnLines(@TempDir Path dir) throws Exception {
        Path file = Files.writeString(dir.resolve("extra.conf"), TYPOS);
        Result r = vmfork("demo", "--node-config", file.toString());
        assertEquals(ExitCodes.CONFIG, r.code(), r.err());
        assertTypos(r.err(), file + ":");
        Path broken = Files.writeString(dir.resolve("broken.conf"), "vmfork.node {\n  port = 1\n");
        Result syntax = vmfork("demo", "--node-config", broken.toString()).oneLine();
        assertEquals(ExitCodes.CONFIG, syntax.code(), syntax.err());
        assertTrue(syntax.err().contains(broken.toString()) && !syntax.err().contains("String:"), syntax.err());
    }

    @Test
    void typosAndWrongTypesInSystemPropertiesAreRefused() throws Exception {
        Result r = process(List.of("-Dvmfork.vmm.max-vmz=12", "-Dvmfork.node.capacity.vm-slots=many",
                "-Dvmfrok.node.port=1"), "run", "hello");
        assertEquals(ExitCodes.CONFIG, r.code(), r.err());
        assertFalse(r.err().contains("\tat "), r.err());
        assertEquals(1, count(r.err(), "-Dvmfork.vmm.max-vmz: unknown key; did you mean max-vms?"), r.err());
        assertEquals(1, count(r.err(), "-Dvmfork.node.capacity.vm-slots: 'many' is not a whole number"), r.err());
        assertEquals(1, count(r.err(), "-Dvmfrok: unknown root key; did you mean vmfork?"), r.err());

        Result wrong = process(List.of("-Dvmfork.vmm.max-vms=abc"), "run", "hello").oneLine();
        assertEquals(ExitCodes.CONFIG, wrong.code(), wrong.err());
        assertTrue(wrong.err().contains("vmfork.vmm.max-vms: 'abc' is not a whole number"), wrong.err());
        Result range = process(List.of("-Dvmfork.vmm.pool.size=-3"), "run", "hello").oneLine();
        assertEquals(ExitCodes.CONFIG, range.code(), range.err());
        assertTrue(range.err().contains("vmfork.vmm.pool.size must be 0 (no pool) or more, got -3"), range.err());
        // What tools and tests read directly is not configuration: not refused.
        Result marker = process(List.of("-Dvmfork.local-cluster=1", "-Dvmfork.log.level=INFO",
                "-Dvmfork.demo.test.stop-worker-after=50"), "run",
                "no-such-guest");
        assertEquals(ExitCodes.USAGE, marker.code(), marker.err());
    }

    @Test
    void aMissingOrBrokenConfigFileIsOneLineWithExit78(@TempDir Path dir) throws Exception {
        Result missing = process(List.of("-Dconfig.file=" + dir.resolve("none.conf")), "run", "hello").oneLine();
        assertEquals(ExitCodes.CONFIG, missing.code(), missing.err());
        assertTrue(missing.err().contains(dir.resolve("none.conf").toString()), missing.err());
        Path broken = Files.writeString(dir.resolve("broken.conf"), "vmfork {\n  vmm {\n    max-vms = 3\n");
        Result syntax = process(List.of("-Dconfig.file=" + broken), "run", "hello").oneLine();
        assertEquals(ExitCodes.CONFIG, syntax.code(), syntax.err());
        assertTrue(syntax.err().contains(broken + ": 4"), syntax.err());
    }

    @Test
    void nodeWithAValueOutOfRangeNamesItsLine(@TempDir Path dir) throws Exception {
        Path file = Files.writeString(dir.resolve("node.conf"), "# a node\nvmfork.node.port = 70000\n");
        Result r = vmfork("node", "--config", file.toString()).oneLine();
        assertEquals(ExitCodes.CONFIG, r.code(), r.err());
        assertTrue(r.err().contains(file + ":2: invalid node configuration: vmfork.node.port: 70000 is not a port"),
                r.err());
    }

    /** README's command reference names every command and every option that the help text has. */
    @Test
    void theReadmesCommandReferenceMatchesTheHelp() throws Exception {
        String readme = Files.readString(Path.of("..", "..", "README.md"));
        int from = readme.indexOf("## The vmfork command");
        int to = readme.indexOf("\n## ", from + 1);
        String reference = readme.substring(from, to);
        Matcher synopsis = Pattern.compile("(?m)^\\./vmfork (\\S+)").matcher(reference);
        List<String> listed = new ArrayList<>();
        while (synopsis.find()) {
            listed.add(synopsis.group(1));
        }
        CommandLine root = Main.commandLine();
        for (var e : root.getSubcommands().entrySet()) {
            if (e.getKey().equals("help")) {
                continue;
            }
            assertTrue(listed.contains(e.getKey()), "README's synopsis lists vmfork " + e.getKey() + ": " + listed);
            check(reference, e.getValue());
        }
    }

    private static void check(String reference, CommandLine cl) {
        for (CommandLine.Model.OptionSpec o : cl.getCommandSpec().options()) {
            if (!o.usageHelp() && !o.longestName().equals("--debug")) {
                assertTrue(reference.contains(o.longestName()), "README's command reference names "
                        + cl.getCommandSpec().qualifiedName() + " " + o.longestName());
            }
        }
        for (CommandLine sub : cl.getSubcommands().values()) {
            check(reference, sub);
        }
    }
}
