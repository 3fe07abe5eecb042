package io.vmfork.cluster.node;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.placement.PlacementPolicy;
import java.time.Duration;
import java.util.List;
import org.junit.jupiter.api.Test;

class NodeSettingsTest {
    private static Config with(String hocon) {
        return ConfigFactory.parseString(hocon).withFallback(ConfigFactory.defaultReference()).resolve();
    }

    @Test
    void defaultsAreValid() {
        NodeSettings s = NodeSettings.create(ConfigFactory.defaultReference().resolve());
        assertEquals("vmfork", s.systemName());
        assertEquals(25520, s.port());
        assertEquals(List.of(), s.seedNodes());
        assertEquals(64, s.capacity().vmSlots());
        assertEquals(PlacementPolicy.LEAST_LOADED, s.placement().policyFor(12345));
        assertEquals("keep-majority", s.downing().strategy());
    }

    @Test
    void policiesPerVmTypeFallBackToTheDefault() {
        NodeSettings s = NodeSettings.create(with(
                "vmfork.node.placement { default-policy = spread, policies { 7 = local-first, 9 = pack } }"));
        assertEquals(PlacementPolicy.LOCAL_FIRST, s.placement().policyFor(7));
        assertEquals(PlacementPolicy.PACK, s.placement().policyFor(9));
        assertEquals(PlacementPolicy.SPREAD, s.placement().policyFor(8));
    }

    @Test
    void seedsAndDowningBecomePekkoSettings() {
        NodeSettings s = NodeSettings.create(with("""
                vmfork.security.insecure = on
                vmfork.node { hostname = "10.0.0.5", port = 2552, seed-nodes = ["10.0.0.1:2552", "h2:2553"],
                              downing { strategy = keep-oldest, stable-after = 3s } }
                """));
        Config p = s.pekkoConfig();
        assertEquals(List.of("pekko://vmfork@10.0.0.1:2552", "pekko://vmfork@h2:2553"),
                p.getStringList("pekko.cluster.seed-nodes"));
        assertEquals("10.0.0.5", p.getString("pekko.remote.artery.canonical.hostname"));
        assertEquals(2552, p.getInt("pekko.remote.artery.canonical.port"));
        assertEquals("keep-oldest", p.getString("pekko.cluster.split-brain-resolver.active-strategy"));
        assertEquals(Duration.ofSeconds(3), p.getDuration("pekko.cluster.split-brain-resolver.stable-after"));
        assertEquals("org.apache.pekko.cluster.sbr.SplitBrainResolverProvider",
                p.getString("pekko.cluster.downing-provider-class"));
    }

    private static void refused(String hocon, String key) {
        InvalidNodeConfigException e = assertThrows(InvalidNodeConfigException.class,
                () -> NodeSettings.create(with(hocon)), hocon);
        assertEquals(key, e.key(), e.getMessage());
        assertTrue(e.getMessage().contains(key), e.getMessage());
    }

    @Test
    void anInvalidConfigIsRefusedNamingTheKey() {
        refused("vmfork.node.port = 70000", "vmfork.node.port");
        refused("vmfork.node.seed-nodes = [\"127.0.0.1:25520\", \"nocolon\"]", "vmfork.node.seed-nodes[1]");
        refused("vmfork.host.id = 8388608", "vmfork.host.id");
        refused("vmfork.host.id = -1", "vmfork.host.id");
        refused("vmfork.node.capacity.vm-slots = 0", "vmfork.node.capacity.vm-slots");
        refused("vmfork.node.capacity.guest-memory = 0", "vmfork.node.capacity.guest-memory");
        refused("vmfork.node.placement.default-policy = random", "vmfork.node.placement.default-policy");
        refused("vmfork.node.placement.policies { 7 = nearest }", "vmfork.node.placement.policies.7");
        refused("vmfork.node.placement.policies { web = pack }", "vmfork.node.placement.policies.web");
        refused("vmfork.node.placement.reservation-timeout = 0s", "vmfork.node.placement.reservation-timeout");
        refused("vmfork.node.downing.strategy = coin-toss", "vmfork.node.downing.strategy");
        refused("vmfork.node.system-name = \"has space\"", "vmfork.node.system-name");
        refused("vmfork.node.status.http-port = -5", "vmfork.node.status.http-port");
    }

    @Test
    void aWronglyTypedKeyIsNamed() {
        InvalidNodeConfigException e = assertThrows(InvalidNodeConfigException.class,
                () -> NodeSettings.create(with("vmfork.node.capacity.vcpus = lots")));
        assertTrue(e.getMessage().contains("capacity.vcpus"), e.getMessage());
    }
}
