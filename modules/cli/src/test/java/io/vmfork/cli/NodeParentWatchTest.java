package io.vmfork.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A node started with --parent-pid ends when that process is SIGKILLed: through
 * {@code vmfork node} (as LocalCluster starts them for the demo and the benchmarks) and
 * through the node's own main class (as the multi-JVM tests may).
 */
class NodeParentWatchTest {
    @ParameterizedTest
    @ValueSource(strings = {"vmfork node", "VmforkNode"})
    void aNodeStopsWhenItsParentIsKilled(String entry, @TempDir Path dir) throws Exception {
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        Path conf = dir.resolve("node.conf");
        Files.writeString(conf, "vmfork.host { id = 61, name = \"watched\" }\n"
                + "vmfork.node { hostname = \"127.0.0.1\", port = " + port + ", status.http-port = -1 }\n");
        Process parent = new ProcessBuilder("sleep", "120").start();
        Process node = null;
        try {
            List<String> cmd = new ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java")
                    .toString(), "-Xmx256m", "-cp", System.getProperty("java.class.path")));
            if (entry.equals("vmfork node")) {
                cmd.addAll(List.of(Main.class.getName(), "node", "--parent-pid", Long.toString(parent.pid()),
                        "--config", conf.toString()));
            } else {
                cmd.addAll(List.of("io.vmfork.cluster.node.VmforkNode", "--parent-pid", Long.toString(parent.pid()),
                        conf.toString()));
            }
            node = new ProcessBuilder(cmd).redirectErrorStream(true).redirectOutput(dir.resolve("node.log").toFile())
                    .start();
            // Let the node come up, then kill its parent the hard way.
            assertFalse(node.waitFor(4, TimeUnit.SECONDS), "the node ended on its own: "
                    + Files.readString(dir.resolve("node.log")));
            parent.destroyForcibly().waitFor();
            assertTrue(node.waitFor(30, TimeUnit.SECONDS), "the node outlived its parent");
            assertEquals(0, node.exitValue(), Files.readString(dir.resolve("node.log")));
            assertTrue(Files.readString(dir.resolve("node.log")).contains("is gone: stopping"));
        } finally {
            parent.destroyForcibly();
            if (node != null) {
                node.destroyForcibly().waitFor();
            }
        }
    }
}
