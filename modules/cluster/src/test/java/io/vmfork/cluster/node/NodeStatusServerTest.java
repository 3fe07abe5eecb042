package io.vmfork.cluster.node;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.typesafe.config.ConfigFactory;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/** A node's status over HTTP: {@code GET /status} and Pekko Management's {@code /cluster/members}. */
class NodeStatusServerTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    private VmforkNode node;

    @AfterEach
    void stop() {
        if (node != null) {
            node.system().terminate();
            node.whenTerminated().toCompletableFuture().orTimeout(20, TimeUnit.SECONDS).join();
        }
    }

    private String get(int port, String path) throws Exception {
        HttpResponse<String> r = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path))
                .timeout(Duration.ofSeconds(5)).build(), HttpResponse.BodyHandlers.ofString());
        assertEquals(200, r.statusCode(), path + ": " + r.body());
        return r.body();
    }

    @Test
    void statusNamesTheHostItsLoadTheMembersTheirReportsAndTheVms() throws Exception {
        node = VmforkNode.start(ConfigFactory.parseString("""
                vmfork.host { id = 41, name = "h41" }
                vmfork.node.status.http-port = 0
                # Its VMs would show in "vms", which must be empty at first.
                vmfork.node.fork-warm-up = off
                vmfork.node.capacity { vm-slots = 8, vcpus = 16, guest-memory = 1 GiB }
                """).withFallback(ConfigFactory.load()).resolve());
        int port = node.statusServer().orElseThrow().port();
        assertTrue(port > 0);

        // The member becomes up and its own report reaches the replicated map.
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        JsonNode status;
        while (true) {
            status = JSON.readTree(get(port, "/status"));
            JsonNode members = status.path("cluster").path("members");
            if (members.size() == 1 && members.get(0).path("status").asText().equals("Up")
                    && members.get(0).path("host").isObject()) {
                break;
            }
            assertTrue(System.nanoTime() < deadline, "no Up member with a report: " + status);
            Thread.sleep(100);
        }
        assertEquals(41, status.path("host").path("id").asLong());
        assertEquals("h41", status.path("host").path("name").asText());
        assertEquals(node.system().address().toString(), status.path("host").path("address").asText());
        assertEquals(8, status.path("load").path("free_slots").asInt());
        assertEquals(0, status.path("load").path("vms").asInt());
        assertEquals(16, status.path("load").path("capacity").path("vcpus").asInt());
        assertEquals(1L << 30, status.path("load").path("memory_free").asLong());
        JsonNode member = status.path("cluster").path("members").get(0);
        assertTrue(member.path("reachable").asBoolean());
        assertEquals(41, member.path("host").path("host_id").asLong());
        assertEquals(8, member.path("host").path("capacity").path("vm_slots").asInt());
        // The member's report names its platform: this node's own, as "host" shows it.
        assertEquals(node.vmm().platform().name(), status.path("host").path("platform").path("name").asText());
        assertEquals(node.vmm().platform().name(), member.path("host").path("platform").asText());
        assertTrue(status.path("vms").isArray() && status.path("vms").isEmpty(), status.toString());

        // An admission shows in the load at once.
        assertTrue(node.admission().admit(0, 1L << 20, 2));
        status = JSON.readTree(get(port, "/status"));
        assertEquals(1, status.path("load").path("vms").asInt());
        assertEquals(7, status.path("load").path("free_slots").asInt());
        assertEquals(2, status.path("load").path("vcpus_used").asInt());

        // This host's VMs, as its VMM knows them.
        while (!node.cluster().knowsHost(41).toCompletableFuture().get(30, TimeUnit.SECONDS)) {
            assertTrue(System.nanoTime() < deadline + TimeUnit.SECONDS.toNanos(20), "the host never registered");
            Thread.sleep(50);
        }
        io.vmfork.cluster.api.VmInfo spin = node.cluster().launchOn(41, "spin", 4, 16L << 20)
                .toCompletableFuture().get(30, TimeUnit.SECONDS);
        status = JSON.readTree(get(port, "/status"));
        assertEquals(1, status.path("vms").size(), status.toString());
        JsonNode vm = status.path("vms").get(0);
        assertEquals(Long.toHexString(spin.vmId()), vm.path("id").asText());
        assertEquals("booted", vm.path("made").asText());
        assertEquals(4, vm.path("vm_type").asInt());
        assertEquals("spin", vm.path("image").asText());
        node.cluster().stop(spin.vmId()).toCompletableFuture().get(30, TimeUnit.SECONDS);

        // Another source through the extension point; a failing source is reported.
        JsonNode list = JSON.readTree("[{\"vm_id\": 7, \"name\": \"a\\\"b\"}]");
        node.vmStatus(() -> CompletableFuture.completedFuture(list));
        status = JSON.readTree(get(port, "/status"));
        assertEquals(7, status.path("vms").get(0).path("vm_id").asInt());
        assertEquals("a\"b", status.path("vms").get(0).path("name").asText());
        node.vmStatus(() -> CompletableFuture.failedFuture(new IllegalStateException("host actor gone")));
        status = JSON.readTree(get(port, "/status"));
        assertTrue(status.path("vms").isEmpty());
        assertTrue(status.path("vms_error").asText().contains("host actor gone"), status.toString());

        // Pekko Management's cluster routes on the same port.
        JsonNode members = JSON.readTree(get(port, "/cluster/members"));
        assertEquals(node.system().address().toString(), members.path("selfNode").asText());
        assertEquals("Up", members.path("members").get(0).path("status").asText());
    }

    @Test
    void noStatusServerWhenThePortIsMinusOne() {
        node = VmforkNode.start(ConfigFactory.parseString("vmfork.host.id = 42\nvmfork.node.status.http-port = -1")
                .withFallback(ConfigFactory.load()).resolve());
        assertTrue(node.statusServer().isEmpty());
    }
}
