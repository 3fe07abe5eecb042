package io.vmfork.cluster.host;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmmSettings;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;

/** The node-start warm-up writes and reads back a capsule the reader accepts, and leaves no VM or memfd. */
class CapsuleWarmupTest {
    @Test
    void theWarmUpsCapsulesAreAcceptedAndNothingIsLeft() throws Exception {
        try (Vmm vmm = Vmm.open(VmmSettings.load())) {
            assertTrue(CapsuleWarmup.run(vmm), "a warm-up round failed (its log says why)");
            assertEquals(0, vmm.liveCount());
            long deadline = System.nanoTime() + 5_000_000_000L;
            while (memfds() > 0 && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            assertEquals(0, memfds(), "memfds left by the warm-up");
        }
    }

    /** The VM memfds this JVM holds open (/proc/self/fd links to /memfd:vmfork...); ForkWarmupTest uses it too. */
    static long memfds() throws Exception {
        try (Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
            return fds.filter(fd -> {
                try {
                    return Files.readSymbolicLink(fd).toString().startsWith("/memfd:vmfork");
                } catch (Exception gone) {
                    return false;
                }
            }).count();
        }
    }
}
