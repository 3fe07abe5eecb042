package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.guest.Guests;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * A few hundred forks, through both paths, leave no fd, memfd, mapping or thread behind
 * beyond the VM pool's (checked full at both ends); and once the VMM is closed, nothing at all.
 */
class ForkLeakTest {
    @Test
    void threeHundredForksLeaveNothingBehind() throws Exception {
        // The pool keeps its size here (it would grow to 20 after "fork 20": VmPoolTest covers that).
        try (Vmm vmm = Vmm.open(VmmSettings.create(com.typesafe.config.ConfigFactory.parseString(
                "vmfork.vmm.pool.max-size = 4").withFallback(com.typesafe.config.ConfigFactory.load())))) {
            VirtualMachine warm = vmm.launch(VmSpec.of(Guests.shipped("hello"), 8 << 20));
            warm.awaitTermination(VmmTesting.TIMEOUT);
            VmmTesting.quiesce(vmm);
            int pooled = VmmTesting.pooled(vmm);
            // KVM keeps a pool of ready VMs; the process platform has none (yet).
            assertEquals(vmm.pool() == null ? 0 : vmm.settings().poolSize(), pooled, "the pool is full");
            int fds = VmmTesting.openFds();
            int vmFds = VmmTesting.vmFds();
            // VMM threads by name (vCPU, pool, launch, copier): the process's task count also
            // moves with lazily started singletons (the unmap thread, JNA's cleaner).
            int threads = VmmTesting.vmmThreads();

            VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 64L << 20));
            parent.ready().get(30, TimeUnit.SECONDS);
            int forks = 0;
            for (int round = 0; round < 10; round++) {
                // Dirty some memory so that every round adds an overlay layer.
                assertEquals("touched 1", ForkTest.ask(parent, "touch 1"));
                String r = ForkTest.ask(parent, "fork 20");
                assertTrue(r.startsWith("parent launched=20 "), r);
                forks += 20;
                VirtualMachine.ForkResult ext = parent.fork(10, 0);
                assertEquals(10, ext.children().size());
                forks += 10;
                for (VirtualMachine c : parent.children()) {
                    c.stop();
                }
            }
            assertEquals(300, forks);
            parent.stop();
            assertEquals(0, vmm.liveCount());
            assertTrue(VmmTesting.settle(VmmTesting::vmmThreads, threads) <= threads, () -> "vCPU threads left behind: "
                    + Thread.getAllStackTraces().keySet().stream().map(Thread::getName).sorted().toList());
            VmmTesting.quiesce(vmm);
            VmmTesting.assertNoFdLeft(fds, vmFds);
            assertEquals(0, VmmTesting.memfds(), "memfds left behind");
            assertEquals(pooled, VmmTesting.vmMappings(), "guest RAM or kvm_run mappings left behind (beyond the pool's)");
        }
        VmmTesting.assertNothingLeftAfterClose();
    }
}
