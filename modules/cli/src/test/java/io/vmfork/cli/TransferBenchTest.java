package io.vmfork.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/** {@code vmfork bench transfer} and {@link TcpFloor}, briefly (tiny sizes), with real sender JVMs. */
class TransferBenchTest {
    @Test
    void tcpFloorMeasuresBetweenTwoProcessesAndLeavesNoPeer() {
        Stats s = TcpFloor.measure(4L << 20, 3);
        assertEquals(3, s.n());
        assertTrue(s.median() > 0);
        assertEquals(List.of(), livePeers());
    }

    @Test
    void benchTransferPrintsOneFigurePerMethodAndLeavesNoPeer() throws Exception {
        PrintStream old = System.out;
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        int code;
        System.setOut(new PrintStream(out, true, StandardCharsets.UTF_8));
        try {
            code = Main.run(new String[] {"bench", "transfer", "--json", "--runs", "2", "--sizes", "16", "--kill", "off"});
        } finally {
            System.setOut(old);
        }
        String text = out.toString(StandardCharsets.UTF_8);
        assertEquals(0, code, text);
        ObjectMapper mapper = new ObjectMapper();
        List<String> benches = new ArrayList<>();
        for (String line : text.lines().filter(l -> l.startsWith("{")).toList()) {
            JsonNode o = mapper.readTree(line);
            benches.add(o.path("bench").asText());
            assertEquals(16, o.path("memory_mib").asInt(), line);
            assertEquals(2, o.path("n").asInt(), line);
            for (String f : new String[] {"p50_ms", "p99_ms", "mib_s"}) {
                assertTrue(o.path(f).isNumber() && o.path(f).asDouble() > 0, f + " in " + line);
            }
        }
        assertEquals(List.of("transfer.tcp_floor", "transfer.streams_tcp", "transfer.stream_refs"), benches, text);
        assertEquals(List.of(), livePeers());
    }

    private static List<String> livePeers() {
        try (var children = ProcessHandle.current().children()) {
            return children.filter(ProcessHandle::isAlive).map(h -> h.info().commandLine().orElse("?"))
                    .filter(c -> c.contains(TransferPeer.class.getName())).toList();
        }
    }
}
