package io.vmfork.cluster.host;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.fork.CopyTarget;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * The node-start fork warm-up forks a real VM whose children answer, asks the VMM's
 * placement nothing, and leaves no VM, guest process or memfd.
 */
class ForkWarmupTest {
    @Test
    void theWarmUpsChildrenAnswerNothingIsPlacedAndNothingIsLeft() throws Exception {
        try (Vmm vmm = Vmm.open(VmmSettings.load())) {
            AtomicInteger asked = new AtomicInteger();
            vmm.useCopyPlacement((parent, vmType, count) -> {
                asked.incrementAndGet();
                return java.util.Collections.nCopies(count, CopyTarget.LOCAL);
            });
            assertTrue(ForkWarmup.run(vmm), "a warm-up round failed (its log says why)");
            assertEquals(0, asked.get(), "the warm-up asked the VMM's placement");
            assertEquals(0, vmm.liveCount(), "VMs left by the warm-up");
            long deadline = System.nanoTime() + 5_000_000_000L;
            while (CapsuleWarmupTest.memfds() > 0 && System.nanoTime() < deadline) {
                Thread.sleep(20);
            }
            assertEquals(0, CapsuleWarmupTest.memfds(), "memfds left by the warm-up");
        }
        assertEquals(0, guestProcesses(), "guest processes left after the VMM closed");
    }

    /** Children of this JVM (guest processes, pooled ones too): none may be left once the VMM is closed. */
    private static long guestProcesses() {
        return ProcessHandle.current().children().count();
    }
}
