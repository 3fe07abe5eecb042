package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.guest.Guests;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Guests boot on real KVM, talk through hypercalls and exit with their code. */
class BootTest extends VmmTestBase {
    /** docs/hypercalls.md, IDENTITY: host id above bit 40, a sequence that grows by one, new after a restart. */
    @Test
    void vmIdsCarryTheHostIdAndASequenceThatARestartedVmmDoesNotRepeat() throws Exception {
        long a = vmm.launch(VmSpec.of(Guests.shipped("exit42"), 8 << 20)).id();
        long b = vmm.launch(VmSpec.of(Guests.shipped("exit42"), 8 << 20)).id();
        assertEquals(vmm.settings().hostId(), a >>> 40);
        assertEquals(a + 1, b, "consecutive launches take consecutive sequence numbers");
        Thread.sleep(5);
        try (Vmm restarted = VmmTesting.openVmm()) {
            long c = restarted.launch(VmSpec.of(Guests.shipped("exit42"), 8 << 20)).id();
            assertEquals(vmm.settings().hostId(), c >>> 40);
            assertTrue(c > b, "a VMM opened later starts above the ids of the one before: "
                    + Long.toHexString(c) + " <= " + Long.toHexString(b));
        }
    }

    @Test
    void helloPrintsItsIdentityAndExitsZero() {
        List<String> streamed = Collections.synchronizedList(new ArrayList<>());
        VmListener l = new VmListener() {
            @Override
            public void onConsole(VirtualMachine vm, byte[] bytes) {
                streamed.add(new String(bytes, StandardCharsets.UTF_8));
            }
        };
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("hello"), 64 << 20).withListener(l));
        VmExit exit = vm.awaitTermination(VmmTesting.TIMEOUT);
        assertEquals(VmExit.Kind.EXITED, exit.kind(), exit.reason());
        assertEquals(0, exit.exitCode());
        String out = vm.console().text();
        assertTrue(out.contains("hello from vmfork guest vm " + vm.id() + " (abi 1) on host "
                + vmm.settings().hostId()), out);
        assertTrue(out.matches("(?s).*entropy: [0-9a-f]{16}.*"), out);
        assertEquals(out, String.join("", streamed), "the listener streams what the console keeps");
        assertEquals(VmState.EXITED, vm.state());
        assertTrue(vm.firstExitNanos() > vm.launchStartNanos());
    }

    @Test
    void exitCodeReachesTheHost() {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("exit42"), 8 << 20));
        VmExit exit = vm.awaitTermination(VmmTesting.TIMEOUT);
        assertEquals(VmExit.Kind.EXITED, exit.kind(), exit.reason());
        assertEquals(42, exit.exitCode());
        assertTrue(vm.console().text().contains("exiting with 42"));
    }

    @Test
    void eachVmHasItsOwnIdAndEntropy() {
        VirtualMachine a = vmm.launch(VmSpec.of(Guests.shipped("hello"), 8 << 20));
        VirtualMachine b = vmm.launch(VmSpec.of(Guests.shipped("hello"), 8 << 20));
        a.awaitTermination(VmmTesting.TIMEOUT);
        b.awaitTermination(VmmTesting.TIMEOUT);
        assertNotEquals(a.id(), b.id());
        String ea = a.console().text().replaceAll("(?s).*entropy: ([0-9a-f]+).*", "$1");
        String eb = b.console().text().replaceAll("(?s).*entropy: ([0-9a-f]+).*", "$1");
        assertNotEquals(ea, eb);
    }

    @Test
    void stopEndsARunningVm() {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("spin"), 8 << 20));
        vm.ready().join();
        VmExit exit = vm.stop();
        assertEquals(VmExit.Kind.STOPPED, exit.kind());
        assertEquals(VmState.STOPPED, vm.state());
    }
}
