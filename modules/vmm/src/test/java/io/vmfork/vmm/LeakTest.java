package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.guest.Guests;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Every fd, memfd, mapping and thread of a VM is released when it ends, whichever way it
 * ends: exit, crash, stop, and a launch that fails half-way.
 */
class LeakTest {
    private static final int VMS = 200;

    @Test
    void twoHundredVmsLeaveNothingBehind() throws Exception {
        try (Vmm vmm = VmmTesting.openVmm()) {
            ElfImage hello = Guests.shipped("hello");
            ElfImage crash = Guests.shipped("crash");
            ElfImage spin = Guests.shipped("spin");
            // Warm up: lazily loaded classes and JIT threads must not count as leaks.
            vmm.launch(VmSpec.of(hello, 8 << 20)).awaitTermination(VmmTesting.TIMEOUT);
            VmmTesting.quiesce(vmm);
            int fds = VmmTesting.openFds();
            int vmFds = VmmTesting.vmFds();
            int threads = VmmTesting.threads();
            int pooled = VmmTesting.pooled(vmm);
            assertEquals(pooled, VmmTesting.vmMappings(), "no VM mappings before but the pool's kvm_run areas");

            List<VirtualMachine> batch = new ArrayList<>();
            for (int i = 0; i < VMS; i++) {
                ElfImage img = switch (i % 4) {
                    case 0, 1 -> hello;
                    case 2 -> crash;
                    default -> spin;
                };
                VirtualMachine vm = vmm.launch(VmSpec.of(img, 16 << 20));
                batch.add(vm);
                if (img == spin) {
                    vm.ready().join();
                    vm.stop();
                }
                if (batch.size() == 20) {
                    for (VirtualMachine b : batch) {
                        b.awaitTermination(VmmTesting.TIMEOUT);
                    }
                    batch.clear();
                }
            }
            for (VirtualMachine b : batch) {
                b.awaitTermination(VmmTesting.TIMEOUT);
            }
            // Refused launches leave nothing behind either.
            ElfImage bad = ElfImage.parse("bad", TestElf.executable(TestElf.portAccess(0x7f0, true),
                    TestElf.BASE, 30L << 20, 62, 2, 2));
            for (int i = 0; i < 20; i++) {
                assertThrows(LaunchException.class, () -> vmm.launch(VmSpec.of(bad, 16 << 20)));
            }
            assertEquals(0, vmm.liveCount());
            assertTrue(VmmTesting.settle(VmmTesting::threads, threads) <= threads, "vCPU threads left behind");
            VmmTesting.quiesce(vmm);
            VmmTesting.assertNoFdLeft(fds, vmFds);
            assertEquals(0, VmmTesting.memfds(), "memfds left behind");
            assertEquals(pooled, VmmTesting.vmMappings(), "guest RAM or kvm_run mappings left behind");
        }
        VmmTesting.assertNothingLeftAfterClose();
    }
}
