package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.guest.Guests;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** Closing a VMM ends every VM, including the ones being born, and returns only when all are released. */
class CloseTest {
    @Test
    void closeWhileAGuestForksInALoopLeavesNothingRunning() throws Exception {
        for (int round = 0; round < 5; round++) {
            Vmm vmm = VmmTesting.openVmm();
            int fds;
            try {
                vmm.launch(VmSpec.of(Guests.shipped("hello"), 8 << 20)).awaitTermination(VmmTesting.TIMEOUT);
                fds = VmmTesting.openFds();
                VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 16L << 20));
                parent.ready().get(30, TimeUnit.SECONDS);
                parent.channel().request("forkloop".getBytes(StandardCharsets.UTF_8));
                long start = System.nanoTime();
                while (parent.children().size() < 3 && System.nanoTime() - start < TimeUnit.SECONDS.toNanos(10)) {
                    Thread.sleep(1);
                }
                assertTrue(parent.children().size() >= 3, "the guest did not fork");
            } finally {
                vmm.close();
            }
            assertEquals(java.util.List.of(), vmm.vms(), "VMs still registered after close");
            assertEquals(0, vmm.liveCount(), "VM slots still taken after close");
            assertEquals(0, VmmTesting.memfds(), "memfds left behind");
            assertEquals(0, VmmTesting.vmMappings(), "guest RAM or kvm_run mappings left behind");
            // Exact on what a VMM and its VMs hold (/dev/kvm, KVM objects, memfds); the JVM's own
            // fds come and go, so the total only has to settle back.
            assertEquals(0, VmmTesting.vmFds(), "VM fds left behind (the VMM's /dev/kvm fd is closed too)");
            assertTrue(VmmTesting.settle(VmmTesting::openFds, fds) <= fds, "fds left behind");
        }
    }
}
