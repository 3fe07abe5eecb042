package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.guest.InvalidGuestImageException;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** Bad guests, bad images and bad sizes get clear errors; the host keeps running other VMs. */
class BadInputTest extends VmmTestBase {
    @Test
    void badHypercallArgumentsGetErrorCodesAndTheGuestGoesOn() {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("badcalls"), 16 << 20));
        VmExit exit = vm.awaitTermination(VmmTesting.TIMEOUT);
        String out = vm.console().text();
        assertEquals(VmExit.exited(0), exit, out);
        assertFalse(out.contains("FAIL"), out);
        for (String check : new String[] {"console-addr-beyond-ram", "console-addr-len-overflow", "console-len-too-big",
            "unknown-hypercall", "identity-block-beyond-ram", "entropy-len-too-big", "recv-nonblock-empty",
            "recv-buffer-beyond-ram"}) {
            assertTrue(out.contains("ok " + check), check + " missing in:\n" + out);
        }
    }

    @Test
    void aCrashingGuestIsReportedWithItsRipWhileAnotherVmRunsOn() throws Exception {
        VirtualMachine spin = vmm.launch(VmSpec.of(Guests.shipped("spin"), 8 << 20));
        spin.ready().get(30, TimeUnit.SECONDS);
        VirtualMachine crash = vmm.launch(VmSpec.of(Guests.shipped("crash"), 8 << 20));
        VmExit exit = crash.awaitTermination(VmmTesting.TIMEOUT);
        assertEquals(VmExit.Kind.CRASHED, exit.kind(), exit.reason());
        // KVM: a triple fault (no exception handlers); the process platform: the page fault itself.
        assertTrue(exit.reason().matches(".*triple fault.*rip=0x40[0-9a-f]{4}.*")
                || exit.reason().matches("guest crashed: access to guest-physical 0x[0-9a-f]+, outside RAM, at"
                        + " rip=0x40[0-9a-f]{4}"), exit.reason());
        assertEquals(VmState.CRASHED, crash.state());
        assertTrue(crash.console().text().contains("about to crash"));
        // The other VM did not notice.
        String count = new String(spin.channel().request("count".getBytes(StandardCharsets.UTF_8))
                .get(30, TimeUnit.SECONDS), StandardCharsets.UTF_8);
        assertTrue(Long.parseLong(count) > 0, count);
        assertEquals(VmState.RUNNING, spin.state());
        spin.stop();
    }

    @Test
    void portIoThatIsNotAHypercallEndsTheVm() {
        ElfImage in = ElfImage.parse("in", TestElf.executable(TestElf.portAccess(0x7f0, false)));
        VmExit e1 = vmm.launch(VmSpec.of(in, 8 << 20)).awaitTermination(VmmTesting.TIMEOUT);
        assertEquals(VmExit.Kind.CRASHED, e1.kind());
        assertTrue(e1.reason().contains("bad hypercall: port I/O in port 0x7f0"), e1.reason());
        ElfImage other = ElfImage.parse("out", TestElf.executable(TestElf.portAccess(0x3f8, true)));
        VmExit e2 = vmm.launch(VmSpec.of(other, 8 << 20)).awaitTermination(VmmTesting.TIMEOUT);
        assertEquals(VmExit.Kind.CRASHED, e2.kind());
        assertTrue(e2.reason().contains("port 0x3f8"), e2.reason());
    }

    @Test
    void stringIoToTheHypercallPortEndsTheVmInsteadOfServingHypercalls() {
        ElfImage rep = ElfImage.parse("rep-outs", TestElf.executable(TestElf.repOutsToHypercallPort()));
        VmExit e = vmm.launch(VmSpec.of(rep, 8 << 20)).awaitTermination(VmmTesting.TIMEOUT);
        assertEquals(VmExit.Kind.CRASHED, e.kind(), e.reason());
        assertTrue(e.reason().contains("bad hypercall: port I/O") && e.reason().contains("string"), e.reason());
    }

    @Test
    void aSyscallCrashNamesTheSyscallInstruction() {
        ElfImage sc = ElfImage.parse("syscall", TestElf.executable(TestElf.syscallCode()));
        VmExit e = vmm.launch(VmSpec.of(sc, 8 << 20)).awaitTermination(VmmTesting.TIMEOUT);
        assertEquals(VmExit.Kind.CRASHED, e.kind(), e.reason());
        String rip = String.format("rip=0x%x", TestElf.BASE + TestElf.SYSCALL_OFFSET);
        assertTrue(e.reason().contains(rip) && e.reason().contains("syscall"), e.reason());
    }

    @Test
    void imagesThatAreNotX8664StaticExecutablesAreRefused() {
        byte[] code = TestElf.portAccess(0x7f0, true);
        assertRefused(new byte[] {1, 2, 3}, "not an ELF file");
        assertRefused(TestElf.executable(code, TestElf.BASE, code.length, 183, 2, 2), "not x86-64");
        assertRefused(TestElf.executable(code, TestElf.BASE, code.length, 62, 2, 1), "not a 64-bit");
        assertRefused(TestElf.executable(code, TestElf.BASE, code.length, 62, 3, 2), "position-independent");
        assertRefused(TestElf.executable(code, TestElf.BASE, code.length, 62, 1, 2), "not an executable");
        byte[] truncated = java.util.Arrays.copyOf(TestElf.executable(code), 0x1002);
        assertRefused(truncated, "malformed");
    }

    private static void assertRefused(byte[] elf, String why) {
        InvalidGuestImageException e = assertThrows(InvalidGuestImageException.class, () -> ElfImage.parse("t", elf));
        assertTrue(e.getMessage().contains(why), e.getMessage());
    }

    @Test
    void anImageThatDoesNotFitIsRefusedBeforeAnyVmExists() {
        int before = vmm.liveCount();
        byte[] code = TestElf.portAccess(0x7f0, true);
        ElfImage huge = ElfImage.parse("huge", TestElf.executable(code, TestElf.BASE, 64L << 20, 62, 2, 2));
        LaunchException e = assertThrows(LaunchException.class, () -> vmm.launch(VmSpec.of(huge, 16 << 20)));
        assertTrue(e.getMessage().contains("does not fit"), e.getMessage());
        ElfImage low = ElfImage.parse("low", TestElf.executable(code, 0x1000, code.length, 62, 2, 2));
        LaunchException e2 = assertThrows(LaunchException.class, () -> vmm.launch(VmSpec.of(low, 16 << 20)));
        assertTrue(e2.getMessage().contains("below 0x200000"), e2.getMessage());
        assertEquals(before, vmm.liveCount());
    }

    @Test
    void memorySizesOutsideTheRulesAreRefused() {
        ElfImage hello = Guests.shipped("hello");
        assertThrows(LaunchException.class, () -> vmm.launch(VmSpec.of(hello, (3 << 20))), "not 2 MiB aligned");
        LaunchException small = assertThrows(LaunchException.class, () -> vmm.launch(VmSpec.of(hello, 2 << 20)));
        assertTrue(small.getMessage().contains("outside the allowed range"), small.getMessage());
        LaunchException big = assertThrows(LaunchException.class,
                () -> vmm.launch(VmSpec.of(hello, vmm.settings().maxMemory() + (2 << 20))));
        assertTrue(big.getMessage().contains("outside the allowed range"), big.getMessage());
        LaunchException odd = assertThrows(LaunchException.class, () -> vmm.launch(VmSpec.of(hello, (4 << 20) + 4096)));
        assertTrue(odd.getMessage().contains("multiple of 2 MiB"), odd.getMessage());
    }

    @Test
    void oversizedRequestsAndClosedChannelsAreRefusedToTheApplication() throws Exception {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("spin"), 8 << 20));
        vm.ready().get(30, TimeUnit.SECONDS);
        byte[] big = new byte[vmm.settings().maxMessageBytes() + 1];
        assertThrows(MessageChannel.ChannelException.class, () -> vm.channel().request(big));
        vm.stop();
        assertThrows(MessageChannel.ChannelException.class, () -> vm.channel().request(new byte[1]));
    }
}
