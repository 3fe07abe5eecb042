package io.vmfork.cluster.node;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.api.VmCluster;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.placement.HostLoad;
import io.vmfork.cluster.placement.LoadReports;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.apache.pekko.cluster.ddata.LWWMap;
import org.apache.pekko.cluster.ddata.typed.javadsl.DistributedData;
import org.apache.pekko.cluster.ddata.typed.javadsl.Replicator;
import org.junit.jupiter.api.Test;

/**
 * A client member joins a one-node cluster and drives a real VM on the node through the
 * application API, while placement never counts the client as a host.
 */
class ClusterClientTest {
    @Test
    void aClientJoinsLaunchesWherePlacementSaysAndIsNeverAHost() throws Exception {
        Config nodeConfig = ConfigFactory.parseString("vmfork.host { id = 31, name = h31 }")
                .withFallback(ConfigFactory.load()).resolve();
        VmforkNode node = VmforkNode.start(nodeConfig);
        try {
            String seed = "127.0.0.1:" + node.system().address().getPort().get();
            assertThrows(InvalidNodeConfigException.class, () -> ClusterClient.join(ConfigFactory.load()));
            ClusterClient client = ClusterClient.join(ConfigFactory.parseString(
                    "vmfork.node.seed-nodes = [\"" + seed + "\"]").withFallback(ConfigFactory.load()));
            try {
                client.awaitHosts(List.of(31L), Duration.ofSeconds(30));
                VmCluster api = client.cluster();
                VmInfo vm = api.launch("warm-worker", 0, 256L << 20).toCompletableFuture().get(30, TimeUnit.SECONDS);
                assertEquals(31, vm.hostId());
                assertEquals("42 1176139425187626534", new String(api.request(vm.vmId(),
                        "get 42".getBytes(StandardCharsets.UTF_8)).toCompletableFuture().get(30, TimeUnit.SECONDS),
                        StandardCharsets.UTF_8));
                assertEquals(List.of(vm.vmId()), api.list().toCompletableFuture().get(30, TimeUnit.SECONDS).stream()
                        .map(VmInfo::vmId).toList());
                // Only the node reports load: the client is never a candidate.
                Map<Long, HostLoad> reports = reports(client);
                assertEquals(java.util.Set.of(31L), reports.keySet());
                assertTrue(api.knowsHost(31).toCompletableFuture().get(10, TimeUnit.SECONDS));
                assertTrue(!api.knowsHost(ClusterClient.CLIENT_HOST_ID).toCompletableFuture().get(10,
                        TimeUnit.SECONDS));
                api.stop(vm.vmId()).toCompletableFuture().get(30, TimeUnit.SECONDS);
            } finally {
                client.close();
            }
        } finally {
            node.system().terminate();
            node.whenTerminated().toCompletableFuture().orTimeout(20, TimeUnit.SECONDS).join();
        }
    }

    private static Map<Long, HostLoad> reports(ClusterClient client) {
        Replicator.GetResponse<LWWMap<Long, HostLoad>> r = AskPattern.<Replicator.Command,
                        Replicator.GetResponse<LWWMap<Long, HostLoad>>>ask(
                        DistributedData.get(client.system()).replicator(),
                        replyTo -> new Replicator.Get<>(LoadReports.KEY, Replicator.readLocal(), replyTo),
                        Duration.ofSeconds(3), client.system().scheduler())
                .toCompletableFuture().join();
        return r instanceof Replicator.GetSuccess<LWWMap<Long, HostLoad>> ok
                ? Map.copyOf(ok.get(LoadReports.KEY).getEntries()) : Map.of();
    }
}
