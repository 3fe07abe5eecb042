package io.vmfork.cli;

import static org.junit.jupiter.api.Assertions.*;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIf;

/**
 * fork.c_floor: the shipped C programs are built with gcc, run real VMs (KVM's or guest processes), and leave
 * no temp files and no processes behind.
 */
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

    @EnabledIf(value = "io.vmfork.vmm.platform.HostPlatforms#vmmRunsOnProcess", disabledReason = "process-platform"
            + " floor: the bench runs it only where the VMM is on the process platform, and this run's is on KVM")
    @Test
    void theProcessFloorProgramBuildsRunsAndLeavesNothingBehind() throws IOException {
        Path tmp = Path.of(System.getProperty("java.io.tmpdir"));
        long before = floorDirs(tmp);
        Map<String, Object> m = ProcForkFloor.measure(5, 32, 8);
        assertEquals("fork.c_floor", m.get("bench"));
        assertEquals("process", m.get("platform"));
        assertEquals(5L, m.get("n"));
        double p50 = (Double) m.get("p50_ms");
        assertTrue(p50 > 0 && p50 <= (Double) m.get("p99_ms"), m.toString());
        for (String part : new String[] {"capture", "child", "parent_blocked"}) {
            assertTrue((Double) m.get(part + "_p50_ms") > 0, part + ": " + m);
        }
        // The parent moves to a new process at each fork only where its writes are not
        // tracked in place (as the Java path does).
        if (Boolean.TRUE.equals(m.get("write_tracking"))) {
            assertEquals(0.0, (Double) m.get("move_p99_ms"), 0.01, m.toString());
        } else {
            assertTrue((Double) m.get("move_p50_ms") > 0, m.toString());
        }
        // The steady state forks from: the parent's stack, fork block and the pages after it
        // (two runs), an image of the base and one layer.
        assertEquals(2L, m.get("written_runs"), m.toString());
        assertEquals(2L, m.get("image_files"), m.toString());
        assertEquals(32L, m.get("ram_mib"));
        // Every guest process the program made was its child and was reaped (it checks
        // with waitpid, and exits 1 otherwise); its temporary directory is gone.
        assertEquals(0L, m.get("children_left"));
        assertEquals(before, floorDirs(tmp), "proc_fork_floor left its temporary directory behind");
    }

    @Test
    void theOutputIsCheckedNotTrusted() {
        assertThrows(IllegalStateException.class, () -> ForkFloor.parse("fork_floor: KVM_CREATE_VM failed: EMFILE"));
        assertThrows(IllegalStateException.class, () -> ForkFloor.parse("{\"bench\": \"other\", \"p50_ms\": 1.0}"));
        assertEquals(0.5, ForkFloor.parse("{\"bench\": \"fork.c_floor\", \"n\": 3, \"p50_ms\": 0.500}").get("p50_ms"));
        Map<String, Object> p = ForkFloor.parse("{\"bench\": \"fork.c_floor\", \"platform\": \"process\", \"n\": 3,"
                + " \"p50_ms\": 2.500, \"children_left\": 0}");
        assertEquals("process", p.get("platform"));
        assertEquals(0L, p.get("children_left"));
    }

    private static long floorDirs(Path tmp) throws IOException {
        try (Stream<Path> s = Files.list(tmp)) {
            return s.filter(p -> p.getFileName().toString().startsWith("vmfork-floor-")).count();
        }
    }
}
