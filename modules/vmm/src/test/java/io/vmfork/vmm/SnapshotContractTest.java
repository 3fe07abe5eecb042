package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.kvm.x86.Msr;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.MemorySource;
import io.vmfork.vmm.state.VcpuState;
import java.security.MessageDigest;
import java.util.Arrays;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * The contract every snapshottable component keeps, on a real VM: snapshot, restore,
 * snapshot gives back the first snapshot; a change changes it; snapshots can be taken
 * again and again.
 */
class SnapshotContractTest extends VmmTestBase {
    /** A vCPU state with the TSC left out: it counts host time, so it moves between captures by design. */
    static VcpuState withoutTsc(VcpuState s) {
        io.vmfork.vmm.arch.KvmCpuPart k = s.kvm();
        if (k == null) {
            return s; // the process platform's guest reads the host's TSC: no TSC in its state
        }
        int[] idx = k.msrIndices();
        long[] val = k.msrValues();
        for (int i = 0; i < idx.length; i++) {
            if (idx[i] == Msr.IA32_TSC) {
                val[i] = 0;
            }
        }
        return new VcpuState(s.index(), s.cpu(), new io.vmfork.vmm.arch.KvmCpuPart(k.dataSegments(), k.cr2(), idx, val,
                k.events(), k.mpState()), s.started());
    }

    static byte[] memoryDigest(MemorySource m) throws Exception {
        MessageDigest d = MessageDigest.getInstance("SHA-256");
        byte[] page = new byte[4096];
        byte[] zero = new byte[4096];
        for (MemorySource.Run r : m.dataRuns()) {
            for (long off = r.offset(); off < r.offset() + r.length(); off += page.length) {
                m.read(off, page, 0, page.length);
                if (!Arrays.equals(page, zero)) {
                    d.update(Long.toString(off).getBytes());
                    d.update(page);
                }
            }
        }
        return d.digest();
    }

    /** Waits until the guest is back in RECV, so that nothing runs between two captures. */
    static void idle(VirtualMachine vm) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (!vm.awaitingRequest()) {
            assertTrue(System.nanoTime() < deadline, vm + " never went idle");
            Thread.sleep(1);
        }
    }

    @Test
    void snapshotRestoreSnapshotGivesTheFirstSnapshotBack() throws Exception {
        VirtualMachine original = vmm.launch(VmSpec.of(Guests.shipped("forker"), 64L << 20));
        original.ready().get(30, TimeUnit.SECONDS);
        assertEquals("ok", ForkTest.ask(original, "write 11 1111"));
        idle(original);
        try (VirtualMachine.Snapshot first = original.snapshot()) {
            VirtualMachine clone = vmm.restore(first.state(), first.image(), VmListener.NONE);
            // The clone re-issues the RECV it was captured in, and waits there like the original.
            idle(clone);
            try (VirtualMachine.Snapshot second = clone.snapshot()) {
                MachineState a = first.state();
                MachineState b = second.state();
                assertEquals(a.vcpus().size(), b.vcpus().size());
                for (int i = 0; i < a.vcpus().size(); i++) {
                    assertEquals(withoutTsc(a.vcpus().get(i)), withoutTsc(b.vcpus().get(i)), "vCPU " + i);
                }
                assertArrayEquals(a.cpuidEntries(), b.cpuidEntries());
                assertEquals(a.memorySize(), b.memorySize());
                assertEquals(a.devices().ready(), b.devices().ready());
                assertArrayEquals(memoryDigest(first.image()), memoryDigest(second.image()), "guest RAM");
                // Only what must differ does: identity.
                assertEquals(original.id(), b.identity().parentId());
                assertEquals(a.identity().forkGeneration() + 1, b.identity().forkGeneration());
            }
            assertEquals("1111", ForkTest.ask(clone, "read 11"));
            assertEquals(ForkTest.ask(original, "sum"), ForkTest.ask(clone, "sum"));
            clone.stop();
        }
        original.stop();
    }

    @Test
    void aChangeChangesTheSnapshotAndSnapshotsRepeat() throws Exception {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("forker"), 64L << 20));
        vm.ready().get(30, TimeUnit.SECONDS);
        idle(vm);
        byte[] d1;
        byte[] d2;
        byte[] d3;
        try (VirtualMachine.Snapshot s = vm.snapshot()) {
            d1 = memoryDigest(s.image());
        }
        try (VirtualMachine.Snapshot s = vm.snapshot()) {
            d2 = memoryDigest(s.image());
        }
        assertArrayEquals(d1, d2, "nothing ran that could change memory between the snapshots");
        assertEquals("ok", ForkTest.ask(vm, "write 12 1212"));
        idle(vm);
        try (VirtualMachine.Snapshot s = vm.snapshot()) {
            d3 = memoryDigest(s.image());
        }
        assertFalse(Arrays.equals(d1, d3), "a write changes the snapshot");
        vm.stop();
    }
}
