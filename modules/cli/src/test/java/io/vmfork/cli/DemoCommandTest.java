package io.vmfork.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code vmfork demo} as a person runs it: a JVM of its own ({@code java -cp <class path>
 * io.vmfork.cli.Main demo ...}, output to files, so not a terminal) that starts real node
 * JVMs with real KVM VMs. After every run no node JVM it started is left (each carries the
 * demo's pid in {@code -Dvmfork.local-cluster}).
 */
class DemoCommandTest {
    private static final Pattern ROW = Pattern.compile(
            "(cold|w\\d+)\\s+(\\d+)\\s+(node-\\d+)\\s+(cold|child|clone)\\s+(\\d+)\\s+([\\d,.]+ ms)\\s+(\\S+)\\s+(.*)");

    private record Row(String worker, long vmId, String host, String made, int gen, String state) {
    }

    /** A demo JVM, its output files and its pid. */
    private record Demo(Process process, Path out, Path err) {
        String stdout() throws IOException {
            return Files.readString(out);
        }

        String stderr() throws IOException {
            return Files.readString(err);
        }

        int await() throws Exception {
            assertTrue(process.waitFor(180, TimeUnit.SECONDS), "the demo did not end within 180 s: " + stdout()
                    + stderr());
            return process.exitValue();
        }
    }

    private static Demo start(Path dir, String name, List<String> jvmOptions, String... args) throws IOException {
        List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString()));
        cmd.addAll(jvmOptions);
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), Main.class.getName(), "demo"));
        cmd.addAll(List.of(args));
        Path out = dir.resolve(name + ".out");
        Path err = dir.resolve(name + ".err");
        Process p = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile()).start();
        return new Demo(p, out, err);
    }

    /** Node JVMs started by the demo with this pid that are still alive. */
    private static List<String> nodesLeft(long demoPid) {
        try (var all = ProcessHandle.allProcesses()) {
            return all.filter(ProcessHandle::isAlive).map(h -> h.info().commandLine().orElse(""))
                    .filter(c -> c.contains("-D" + LocalCluster.MARKER + "=" + demoPid + " ")).toList();
        }
    }

    private static List<Row> rows(String out) {
        List<Row> rows = new ArrayList<>();
        for (String line : out.lines().toList()) {
            Matcher m = ROW.matcher(line);
            if (m.matches()) {
                rows.add(new Row(m.group(1), Long.parseLong(m.group(2)), m.group(3), m.group(4),
                        Integer.parseInt(m.group(5)), m.group(8)));
            }
        }
        return rows;
    }

    private static Set<String> made(List<Row> rows) {
        Set<String> s = new HashSet<>();
        rows.forEach(r -> s.add(r.made()));
        return s;
    }

    /**
     * Two demos at once (each its own cluster of two nodes on ports the nodes chose): the
     * first runs to the end: a table with the cold VM and four workers, children on the cold
     * VM's host and clones on the other, every request served and checked, capsule bytes on
     * the clones' host, exit 0. The second has a worker stopped mid-burst (the test hook):
     * it is reported as stopped, the others still serve every request; with --keep it then
     * serves each node's status until it is stopped like Ctrl-C (SIGTERM). Neither leaves a
     * node JVM behind.
     */
    @Test
    void twoDemosAtOnceShowChildrenAndClonesServeEveryRequestAndLeaveNoNodeBehind(@TempDir Path dir)
            throws Exception {
        Demo a = start(dir, "a", List.of(), "--workers", "4", "--requests", "200", "--nodes", "2");
        Demo b = start(dir, "b", List.of("-D" + DemoCommand.TEST_STOP_WORKER_AFTER + "=50"), "--workers", "4",
                "--requests", "300", "--nodes", "2", "--keep");
        try {
            // a: the whole scenario, exit 0.
            assertEquals(0, a.await(), a.stdout() + a.stderr());
            String out = a.stdout();
            assertFalse(out.contains("\r"), "not a terminal: plain progress lines");
            assertTrue(out.contains("] starting 2 nodes"), out);
            assertTrue(out.contains("] cold launch of warm-worker"), out);
            List<Row> rows = rows(out);
            assertEquals(5, rows.size(), out);
            Row cold = rows.get(0);
            assertEquals("cold", cold.worker());
            assertEquals("cold", cold.made());
            assertEquals(0, cold.gen());
            for (Row w : rows.subList(1, rows.size())) {
                assertEquals(1, w.gen(), out);
                assertEquals("ok", w.state(), out);
                // spread: children stay on the cold VM's host, clones go to the other.
                assertEquals(w.made().equals("child"), w.host().equals(cold.host()), out);
            }
            assertEquals(Set.of("cold", "child", "clone"), made(rows), out);
            assertEquals(Set.of("node-1", "node-2"), Set.copyOf(rows.stream().map(Row::host).toList()), out);
            assertTrue(out.contains("requests: 200 of 200 served by 4 workers"), out);
            assertTrue(out.contains("every reply checked: 0 wrong"), out);
            assertTrue(out.contains("fork (child), median of 2"), out);
            assertTrue(out.contains("clone, median of 2"), out);
            String cloneHost = rows.stream().filter(r -> r.made().equals("clone")).findFirst().orElseThrow().host();
            assertTrue(Pattern.compile(cloneHost + " [\\d.]+ MiB \\(1 capsule\\)").matcher(out).find(), out);
            assertTrue(out.contains(cold.host() + " none"), out);
            assertEquals(List.of(), nodesLeft(a.process().pid()));

            // b: a worker stopped mid-burst, the rest serves everything; then --keep until SIGTERM.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(180);
            while (!b.stdout().contains("Press Ctrl-C")) {
                assertTrue(b.process().isAlive(), b.stdout() + b.stderr());
                assertTrue(System.nanoTime() < deadline, b.stdout() + b.stderr());
                Thread.sleep(200);
            }
            String bout = b.stdout();
            List<Row> brows = rows(bout);
            assertEquals(5, brows.size(), bout);
            assertEquals(1, brows.stream().filter(r -> r.state().equals("stopped")).count(), bout);
            assertTrue(bout.contains("requests: 300 of 300 served by 4 workers"), bout);
            assertTrue(b.stderr().contains("ended during the burst (stopped)"), b.stderr());
            Matcher page = Pattern.compile("node-\\d+\\s+http://127.0.0.1:(\\d+)/").matcher(bout);
            int pages = 0;
            HttpClient http = HttpClient.newHttpClient();
            while (page.find()) {
                HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + page.group(1)
                        + "/status")).build(), HttpResponse.BodyHandlers.ofString());
                assertEquals(200, r.statusCode());
                pages++;
            }
            assertEquals(2, pages, bout);
            assertEquals(2, nodesLeft(b.process().pid()).size(), "--keep keeps both nodes running");
            b.process().destroy(); // SIGTERM, as Ctrl-C's SIGINT: the shutdown hooks run
            assertTrue(b.process().waitFor(60, TimeUnit.SECONDS), "the demo did not stop on SIGTERM");
            assertTrue(b.stderr().contains("interrupted: stopping every node it started"), b.stderr());
            assertEquals(List.of(), nodesLeft(b.process().pid()));
        } finally {
            a.process().destroyForcibly();
            b.process().destroyForcibly();
        }
    }

    /**
     * A node that cannot start because its port is taken: the demo stops, names the port and
     * shows the last lines of the node's log, exits 69 and leaves no node running.
     */
    @Test
    void aNodeWhosePortIsTakenFailsTheDemoWithItsLogAndLeavesNothing(@TempDir Path dir) throws Exception {
        try (ServerSocket taken = new ServerSocket(0, 50, InetAddress.getLoopbackAddress())) {
            int port = taken.getLocalPort();
            Demo d = start(dir, "d", List.of(), "--workers", "2", "--requests", "10", "--nodes", "2",
                    "--status-port", Integer.toString(port));
            assertEquals(Main.EX_UNAVAILABLE, d.await(), d.stdout() + d.stderr());
            String err = d.stderr();
            assertTrue(err.contains("vmfork demo: node-1 did not start (exit 69)"), err);
            assertTrue(err.contains("did not start (exit 69) because port " + port + " is in use (--status-port"),
                    err);
            assertTrue(err.contains("the last lines of its log"), err);
            assertTrue(err.contains("vmfork node: cannot start"), err);
            assertTrue(err.contains("No node is left running."), err);
            assertEquals(List.of(), nodesLeft(d.process().pid()));
            // The logs are kept for the person to read; this test deletes them.
            Matcher kept = Pattern.compile("node logs are in (\\S+)").matcher(err);
            assertTrue(kept.find(), err);
            try (var files = Files.walk(Path.of(kept.group(1)))) {
                files.sorted(java.util.Comparator.reverseOrder()).forEach(f -> f.toFile().delete());
            }
        }
    }

    /** Asked for KVM (vmfork.vmm.platform = kvm) without a KVM device, the demo says so before it starts anything. */
    @Test
    void withoutKvmTheDemoStartsNoNode(@TempDir Path dir) throws Exception {
        Path conf = dir.resolve("no-kvm.conf");
        Files.writeString(conf, "vmfork.vmm.platform = kvm\nvmfork.vmm.kvm-device = \"" + dir.resolve("no-kvm")
                + "\"\n");
        Demo d = start(dir, "k", List.of(), "--node-config", conf.toString());
        assertEquals(Main.EX_UNAVAILABLE, d.await(), d.stdout() + d.stderr());
        assertTrue(d.stderr().contains(dir.resolve("no-kvm") + " does not exist: this machine offers no KVM"),
                d.stderr());
        assertTrue(d.stderr().contains("No node was started."), d.stderr());
        assertFalse(d.stdout().contains("starting"), d.stdout());
        assertEquals(List.of(), nodesLeft(d.process().pid()));
    }

    /** The demo checks replies with warm-worker's own value function (a reply the guest gave: CliTest). */
    @Test
    void theValueFunctionIsTheGuests() {
        assertEquals("42 1176139425187626534", WarmWorkerReplies.expectedGet(42));
        assertEquals("2097152 miss", WarmWorkerReplies.expectedGet(1L << 21));
        assertEquals(new WarmWorkerReplies.Identity(7, 3, 1, 2, 1),
                WarmWorkerReplies.identity("vm=7 parent=3 gen=1 host=2 type=1"));
    }
}
