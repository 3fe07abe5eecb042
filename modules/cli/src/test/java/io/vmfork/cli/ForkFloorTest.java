package io.vmfork.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIf;

/** fork.c_floor: the shipped C program is built with gcc, runs real KVM VMs, and leaves no temp files. */
class ForkFloorTest {
    @EnabledIf(value = "io.vmfork.vmm.platform.HostPlatforms#vmmRunsOnKvm", disabledReason = "KVM-only by nature: the floor program drives /dev/kvm")
    @Test
    void theFloorProgramBuildsRunsAndCleansUp() throws IOException {
        Path tmp = Path.of(System.getProperty("java.io.tmpdir"));
        long before = floorDirs(tmp);
        Map<String, Object> m = ForkFloor.measure(5, 16, 4);
        assertEquals("fork.c_floor", m.get("bench"));
        assertEquals(5L, m.get("n"));
        double p50 = (Double) m.get("p50_ms");
        assertTrue(p50 > 0 && p50 <= (Double) m.get("p99_ms"), m.toString());
        assertTrue((Double) m.get("capture_p50_ms") > 0 && (Double) m.get("launch_p50_ms") > 0, m.toString());
        assertEquals(16L, m.get("ram_mib"));
        assertEquals(before, floorDirs(tmp), "fork_floor left its temporary directory behind");
    }

    @Test
    void theOutputIsCheckedNotTrusted() {
        assertThrows(IllegalStateException.class, () -> ForkFloor.parse("fork_floor: KVM_CREATE_VM failed: EMFILE"));
        assertThrows(IllegalStateException.class, () -> ForkFloor.parse("{\"bench\": \"other\", \"p50_ms\": 1.0}"));
        assertEquals(0.5, ForkFloor.parse("{\"bench\": \"fork.c_floor\", \"n\": 3, \"p50_ms\": 0.500}").get("p50_ms"));
    }

    private static long floorDirs(Path tmp) throws IOException {
        try (Stream<Path> s = Files.list(tmp)) {
            return s.filter(p -> p.getFileName().toString().startsWith("vmfork-floor-")).count();
        }
    }
}
