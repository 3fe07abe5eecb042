package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.capsule.CapsuleException;
import io.vmfork.vmm.capsule.CapsuleStats;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.state.MachineState;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.util.Arrays;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** A real VM through a capsule and back, on the same host; bad capsules start nothing. */
class CapsuleRestoreTest extends VmmTestBase {
    private static byte[] capsuleOf(VirtualMachine vm) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (VirtualMachine.Snapshot s = vm.snapshot()) {
            CapsuleStats stats = vmm.writeCapsule(s, out);
            assertEquals(out.size(), stats.capsuleBytes());
        }
        return out.toByteArray();
    }

    @Test
    void aCapsuleRoundTripGivesAVmWithTheSameGuestVisibleState() throws Exception {
        VirtualMachine original = vmm.launch(VmSpec.of(Guests.shipped("forker"), 256L << 20));
        original.ready().get(30, TimeUnit.SECONDS);
        assertEquals("ok", ForkTest.ask(original, "write 21 2121"));
        assertEquals("touched 16", ForkTest.ask(original, "touch 16"));
        SnapshotContractTest.idle(original);
        byte[] capsule;
        MachineState before;
        byte[] memBefore;
        try (VirtualMachine.Snapshot s = original.snapshot()) {
            before = s.state();
            memBefore = SnapshotContractTest.memoryDigest(s.image());
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            vmm.writeCapsule(s, out);
            capsule = out.toByteArray();
        }
        assertTrue(capsule.length < 40L << 20, "zero and untouched pages stay out: " + capsule.length);

        VirtualMachine clone = vmm.restoreCapsule(new ByteArrayInputStream(capsule), VmListener.NONE);
        SnapshotContractTest.idle(clone);
        try (VirtualMachine.Snapshot s = clone.snapshot()) {
            for (int i = 0; i < before.vcpus().size(); i++) {
                assertEquals(SnapshotContractTest.withoutTsc(before.vcpus().get(i)),
                        SnapshotContractTest.withoutTsc(s.state().vcpus().get(i)));
            }
            assertArrayEquals(memBefore, SnapshotContractTest.memoryDigest(s.image()));
            assertEquals(original.id(), s.state().identity().parentId());
        }
        assertEquals("2121", ForkTest.ask(clone, "read 21"));
        assertEquals(ForkTest.ask(original, "readall 16"), ForkTest.ask(clone, "readall 16"));
        assertEquals(ForkTest.ask(original, "sum"), ForkTest.ask(clone, "sum"));
        assertNotEquals(ForkTest.ask(original, "rand"), ForkTest.ask(clone, "rand"));
        clone.stop();
        original.stop();
    }

    @Test
    void damagedCapsulesAreRefusedBeforeAnyVmRunsAndLeaveNothing() throws Exception {
        VirtualMachine original = vmm.launch(VmSpec.of(Guests.shipped("forker"), 64L << 20));
        original.ready().get(30, TimeUnit.SECONDS);
        SnapshotContractTest.idle(original);
        byte[] capsule = capsuleOf(original);
        original.stop();
        VmmTesting.quiesce(vmm);
        int fds = VmmTesting.openFds();
        int vmFds = VmmTesting.vmFds();
        int live = vmm.liveCount();
        byte[][] bad = {
            Arrays.copyOf(capsule, capsule.length / 2),        // truncated
            Arrays.copyOf(capsule, capsule.length - 1),        // truncated in the trailer
            flip(capsule, capsule.length / 3),                 // a bit flipped in memory
            flip(capsule, 20),                                  // a bit flipped in the header
            flip(capsule, 0),                                   // wrong magic
        };
        for (byte[] b : bad) {
            assertThrows(CapsuleException.class, () -> vmm.restoreCapsule(new ByteArrayInputStream(b), VmListener.NONE));
        }
        assertEquals(live, vmm.liveCount(), "no VM was started");
        VmmTesting.quiesce(vmm);
        VmmTesting.assertNoFdLeft(fds, vmFds);
        assertEquals(0, VmmTesting.memfds(), "no memfd was left behind");
        // And the good one still restores.
        VirtualMachine clone = vmm.restoreCapsule(new ByteArrayInputStream(capsule), VmListener.NONE);
        assertTrue(ForkTest.ask(clone, "sum").startsWith("sum="));
        clone.stop();
    }

    private static byte[] flip(byte[] b, int at) {
        byte[] c = b.clone();
        c[at] ^= 0x10;
        return c;
    }
}
