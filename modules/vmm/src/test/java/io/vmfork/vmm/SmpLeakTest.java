package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.guest.Guests;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * A VM with several vCPUs, started and not started, and its fork children leave no vCPU
 * thread, fd, memfd or mapping behind; a VMM of its own, so that nothing else is open.
 */
class SmpLeakTest {
    private static final int VCPUS = 4;

    @Test
    void anSmpVmAndItsForksLeaveNothingBehind() throws Exception {
        try (Vmm own = VmmTesting.openVmm()) {
            VirtualMachine warm = own.launch(VmSpec.of(Guests.shipped("hello"), 8 << 20));
            warm.awaitTermination(VmmTesting.TIMEOUT);
            VmmTesting.quiesce(own);
            int fds = VmmTesting.openFds();
            int vmFds = VmmTesting.vmFds();
            int threads = VmmTesting.vmmThreads();
            for (int round = 0; round < 3; round++) {
                VirtualMachine vm = own.launch(new VmSpec(Guests.shipped("smp"), 64L << 20, VCPUS, 0,
                        VmListener.NONE));
                vm.ready().get(30, TimeUnit.SECONDS);
                assertEquals("started 6", SmpLeakTest.ask(vm, "start 3"));
                VirtualMachine.ForkResult r = vm.fork(2, 0);
                assertEquals(2, r.children().size());
                for (VirtualMachine c : r.children()) {
                    assertEquals("progress ok", SmpLeakTest.ask(c, "progress"));
                    c.stop();
                }
                vm.stop();
                // A guest that exits from vCPU 0 while its secondaries count, and one that
                // exits from a secondary.
                VirtualMachine exits = own.launch(new VmSpec(Guests.shipped("smp"), 64L << 20, VCPUS, 0,
                        VmListener.NONE));
                exits.ready().get(30, TimeUnit.SECONDS);
                assertEquals("started 14", ask(exits, "start 4"));
                exits.channel().send("exit".getBytes());
                assertEquals(VmExit.Kind.EXITED, exits.awaitTermination(VmmTesting.TIMEOUT).kind());
                VirtualMachine wexit = own.launch(new VmSpec(Guests.shipped("smp"), 64L << 20, VCPUS, 0,
                        VmListener.NONE));
                wexit.ready().get(30, TimeUnit.SECONDS);
                wexit.channel().send("wexit".getBytes());
                assertEquals(7, wexit.awaitTermination(VmmTesting.TIMEOUT).exitCode());
            }
            assertEquals(0, own.liveCount());
            VmmTesting.quiesce(own);
            assertEquals(threads, VmmTesting.settle(VmmTesting::vmmThreads, threads), "vCPU threads left");
            VmmTesting.assertNoFdLeft(fds, vmFds);
            assertEquals(0, VmmTesting.memfds(), "memfds left behind");
        }
        VmmTesting.assertNothingLeftAfterClose();
    }

    private static String ask(VirtualMachine vm, String request) throws Exception {
        return new String(vm.channel().request(request.getBytes(java.nio.charset.StandardCharsets.UTF_8))
                .get(30, TimeUnit.SECONDS), java.nio.charset.StandardCharsets.UTF_8);
    }
}
