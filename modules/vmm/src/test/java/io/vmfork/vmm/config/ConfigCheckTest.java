package io.vmfork.vmm.config;

import static org.junit.jupiter.api.Assertions.*;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigParseOptions;
import java.util.List;
import org.junit.jupiter.api.Test;

/** What a user's configuration may say under vmfork, against the vmm module's reference.conf. */
class ConfigCheckTest {
    private static final Config REFERENCE = ConfigFactory.parseString("""
            vmfork {
              vmm { max-vms = 1024, stop-timeout = 5s, memory { default = 256 MiB }, platform = "auto"
                    fork.copy-after-resume-above = 512 KiB, ratio = 0.5, on = on, list = [] }
              node.placement.policies {}
              node.host-dispatcher { type = Dispatcher, executor = "thread-pool-executor" }
            }
            """).resolve();

    private static List<String> problems(String user) {
        Config c = ConfigFactory.parseString(user, ConfigParseOptions.defaults().setOriginDescription("user.conf"));
        return ConfigCheck.check(c, REFERENCE, c.withFallback(REFERENCE).resolve(), false);
    }

    @Test
    void whatReferenceConfDefinesWithTheRightTypesPasses() {
        assertEquals(List.of(), problems("""
                vmfork.vmm { max-vms = "12", stop-timeout = 500ms, memory.default = 1 GiB, platform = kvm
                             fork.copy-after-resume-above = null, ratio = 1, on = off, list = [a, b] }
                vmfork.node.placement.policies { 7 = spread, web = pack }
                vmfork.node.host-dispatcher { thread-pool-executor.fixed-pool-size = 4 }
                pekko.loglevel = DEBUG
                other.key = 1
                """));
    }

    @Test
    void unknownKeysNameTheNearestKnownOne() {
        assertEquals(List.of("user.conf: 1: vmfork.vmm.max-vmz: unknown key; did you mean max-vms?"),
                problems("vmfork.vmm.max-vmz = 3"));
        assertTrue(problems("vmfork.max-vms = 3").get(0).endsWith("did you mean vmfork.vmm.max-vms?"));
        assertTrue(problems("vmfork.vmm.zzzzzzzzzz = 3").get(0).contains("vmfork.vmm has "));
        assertTrue(problems("vmfrok.vmm.max-vms = 3").get(0).contains("vmfrok: unknown root key; did you mean vmfork?"));
        assertEquals(List.of(), problems("vm.x = 3\nfork.y = 1"), "roots far from vmfork are others'");
    }

    @Test
    void wrongTypesNameWhatWasGivenAndWhatIsExpected() {
        assertTrue(problems("vmfork.vmm.max-vms = lots").get(0).endsWith("vmfork.vmm.max-vms: 'lots' is not a whole"
                + " number"));
        assertTrue(problems("vmfork.vmm.stop-timeout = soon").get(0).endsWith("'soon' is not a duration (such as"
                + " 500ms, 5s or 2m)"));
        assertTrue(problems("vmfork.vmm.memory.default = big").get(0).contains("'big' is not a size"));
        assertTrue(problems("vmfork.vmm.on = maybe").get(0).contains("'maybe' is not a boolean"));
        assertTrue(problems("vmfork.vmm.list = 3").get(0).contains("3 is not a list"));
        assertTrue(problems("vmfork.vmm.memory = 3").get(0).contains("vmfork.vmm.memory: 3 is not an object"
                + " (keys: default)"));
        assertTrue(problems("vmfork.vmm.platform = [a]").get(0).contains("a list is not a string"));
    }

    @Test
    void aSystemPropertyIsNamedAsItsOption() {
        Config props = ConfigFactory.parseMap(java.util.Map.of("vmfork.vmm.max-vmz", "3",
                "vmfork.local-cluster", "123", "vmfork.log.level", "INFO", "vmfork.demo.test.stop-worker-after", "5"));
        assertEquals(List.of("-Dvmfork.vmm.max-vmz: unknown key; did you mean max-vms?"),
                ConfigCheck.check(props, REFERENCE, props.withFallback(REFERENCE).resolve(), true));
        Config mixed = ConfigFactory.parseMap(java.util.Map.of("vmfork.demo.test.x", "1", "vmfork.demo.other", "2"));
        assertEquals(List.of("-Dvmfork.demo: unknown key; vmfork has node, vmm"),
                ConfigCheck.check(mixed, REFERENCE, mixed.withFallback(REFERENCE).resolve(), true));
    }

    @Test
    void levenshtein() {
        assertEquals(0, ConfigCheck.distance("vmfork", "vmfork"));
        assertEquals(2, ConfigCheck.distance("vmfrok", "vmfork"));
        assertEquals(1, ConfigCheck.distance("vm-slotz", "vm-slots"));
        assertEquals(3, ConfigCheck.distance("", "abc"));
    }
}
