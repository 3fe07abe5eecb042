package io.vmfork.vmm;

import io.vmfork.vmm.platform.kvm.VmPool;
import static org.junit.jupiter.api.Assertions.*;

import com.typesafe.config.ConfigFactory;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.VcpuState;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIf;

/**
 * The pool of ready KVM VMs: fork children, clones and launches take from it and it
 * refills; a launch that fails after taking one releases it; closing the VMM leaves no VM,
 * vCPU, fd, mapping or thread, even while the pool is refilling.
 */
@EnabledIf(value = "io.vmfork.vmm.platform.HostPlatforms#vmmRunsOnKvm", disabledReason = "KVM-only by nature: the pool of ready KVM VMs")
class VmPoolTest {
    private static Vmm vmmWithPool(int size) {
        return Vmm.open(VmmSettings.create(ConfigFactory.parseString("vmfork.vmm.pool.size = " + size)
                .withFallback(ConfigFactory.load())));
    }

    @Test
    void forkChildrenAndClonesTakeFromThePoolWhichRefills() throws Exception {
        try (Vmm vmm = vmmWithPool(3)) {
            VmmTesting.quiesce(vmm);
            assertEquals(3, VmmTesting.pooled(vmm));
            assertEquals(3, vmm.pool().made());
            // Each pooled VM holds a KVM VM fd, a vCPU fd and a kvm_run mapping; /dev/kvm is the VMM's.
            assertEquals(1 + 2 * 3, VmmTesting.vmFds());
            assertEquals(3, VmmTesting.vmMappings());

            ForkTest.Announcements a = new ForkTest.Announcements();
            VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 64L << 20).withListener(a));
            parent.ready().get(30, TimeUnit.SECONDS);
            VmmTesting.quiesce(vmm);
            assertEquals(4, vmm.pool().made(), "the launch took a pooled VM");

            // Each step starts with a full pool (a refill waits until launches are quiet).
            String r = ForkTest.ask(parent, "fork 2");
            assertTrue(r.startsWith("parent launched=2 "), r);
            VmmTesting.quiesce(vmm);
            assertEquals(6, vmm.pool().made(), "both children of the FORK hypercall took pooled VMs");
            VirtualMachine.ForkResult ext = parent.fork(1, 0);
            assertEquals(1, ext.children().size());
            VmmTesting.quiesce(vmm);
            assertEquals(7, vmm.pool().made(), "the child of an external fork took a pooled VM");
            try (VirtualMachine.Snapshot s = parent.snapshot()) {
                VirtualMachine clone = vmm.restore(s.state(), s.image(), VmListener.NONE);
                assertTrue(ForkTest.ask(clone, "sum").startsWith("sum="));
                clone.stop();
            }
            VmmTesting.quiesce(vmm);
            assertEquals(8, vmm.pool().made(), "the clone took a pooled VM");
            for (VirtualMachine c : parent.children()) {
                assertTrue(ForkTest.ask(c, "sum").startsWith("sum="), c.toString());
                assertNotEquals(parent.id(), c.id());
                c.stop();
            }
            parent.stop();
        }
        VmmTesting.assertNothingLeftAfterClose();
    }

    @Test
    void aFanOutGrowsThePoolForTheNextOneWhichShrinksBackAndLeavesNothing() throws Exception {
        try (Vmm vmm = Vmm.open(VmmSettings.create(ConfigFactory.parseString(
                "vmfork.vmm.pool { size = 2, max-size = 12, shrink-after = 3s }").withFallback(ConfigFactory.load())))) {
            VmmTesting.quiesce(vmm);
            int vmFds = VmmTesting.vmFds();
            int mappings = VmmTesting.vmMappings();
            ForkTest.Announcements a = new ForkTest.Announcements();
            VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 64L << 20).withListener(a));
            parent.ready().get(30, TimeUnit.SECONDS);
            String r = ForkTest.ask(parent, "fork 16");
            assertTrue(r.startsWith("parent launched=16 "), r);
            assertEquals(12, vmm.pool().target(), "a fan-out of 16 grows the pool to its max-size");
            for (VirtualMachine c : parent.children()) {
                c.stop();
            }
            VmmTesting.quiesce(vmm);
            assertEquals(12, VmmTesting.pooled(vmm));
            long taken = vmm.pool().taken();
            r = ForkTest.ask(parent, "fork 10");
            assertTrue(r.startsWith("parent launched=10 "), r);
            assertEquals(taken + 10, vmm.pool().taken(), "the second fan-out found all its VMs made");
            for (VirtualMachine c : parent.children()) {
                c.stop();
            }
            parent.stop();
            // No fan-out for shrink-after: back to 2, the extra VMs closed.
            long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
            while ((vmm.pool().target() != 2 || VmmTesting.pooled(vmm) != 2) && System.nanoTime() < deadline) {
                Thread.sleep(50);
            }
            assertEquals(2, vmm.pool().target());
            assertEquals(2, VmmTesting.pooled(vmm));
            assertEquals(vmFds, VmmTesting.settle(VmmTesting::vmFds, vmFds), "VM fds of the shrunk pool left");
            assertEquals(mappings, VmmTesting.settle(VmmTesting::vmMappings, mappings), "kvm_run mappings left");
        }
        VmmTesting.assertNothingLeftAfterClose();
    }

    static List<VirtualMachine> forkVia(Vmm vmm, VirtualMachine parent, int n) throws Exception {
        String r = ForkTest.ask(parent, "fork " + n);
        assertTrue(r.startsWith("parent launched=" + n + " "), r);
        List<VirtualMachine> kids = new java.util.ArrayList<>();
        for (String id : r.replaceAll(".*ids=([0-9,]+).*", "$1").split(",")) {
            VirtualMachine c = vmm.vm(Long.parseLong(id));
            assertNotNull(c, "child " + id + " is not alive");
            kids.add(c);
        }
        return kids;
    }

    /** This process's mapped address space, bytes (VmSize). */
    static long addressSpace() {
        try {
            for (String l : java.nio.file.Files.readAllLines(java.nio.file.Path.of("/proc/self/status"))) {
                if (l.startsWith("VmSize:")) {
                    return Long.parseLong(l.replaceAll("[^0-9]", "")) << 10;
                }
            }
        } catch (java.io.IOException e) {
            throw new IllegalStateException(e);
        }
        throw new IllegalStateException("no VmSize in /proc/self/status");
    }

    @Test
    void pooledVmsGetTheirMemorySlotForTheSizeOfTheLastChildAndReleaseItsRange() throws Exception {
        long ram = 72L << 20;
        long before;
        try (Vmm vmm = vmmWithPool(3)) {
            ForkTest.Announcements a = new ForkTest.Announcements();
            VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), ram).withListener(a));
            parent.ready().get(30, TimeUnit.SECONDS);
            String sum = ForkTest.ask(parent, "sum");
            VmmTesting.quiesce(vmm);
            assertEquals(0, vmm.pool().withSlotFor(ram), "no child launched yet: no slot made for its size");
            // The first child tells the pool the size; the VMs made after it come with a slot for it.
            for (VirtualMachine c : forkVia(vmm, parent, 1)) {
                a.next(c); // its announcement first: the channel has no request ids
                assertEquals(sum, ForkTest.ask(c, "sum"));
                c.stop();
            }
            VmmTesting.quiesce(vmm);
            assertEquals(1, vmm.pool().withSlotFor(ram), "the replacement VM has its slot's range reserved");
            // Children that take those VMs map their memory into the range: they see their parent's.
            for (int round = 0; round < 3; round++) {
                List<VirtualMachine> kids = forkVia(vmm, parent, 3);
                for (VirtualMachine c : kids) {
                    a.next(c);
                    assertEquals(sum, ForkTest.ask(c, "sum"));
                    assertEquals("ok", ForkTest.ask(c, "write 3 " + c.id()));
                }
                for (VirtualMachine c : kids) {
                    assertEquals(String.valueOf(c.id()), ForkTest.ask(c, "read 3"), "children are apart");
                    c.stop();
                }
                VmmTesting.quiesce(vmm);
            }
            assertEquals(3, vmm.pool().withSlotFor(ram), "every pooled VM has its slot's range");
            // A booted VM takes a pooled VM too: its slot and range go.
            VirtualMachine booted = vmm.launch(VmSpec.of(Guests.shipped("forker"), 16L << 20));
            booted.ready().get(30, TimeUnit.SECONDS);
            assertTrue(ForkTest.ask(booted, "sum").startsWith("sum="));
            booted.stop();
            parent.stop();
            VmmTesting.quiesce(vmm);
            assertEquals(3, vmm.pool().withSlotFor(ram));
            before = addressSpace();
        }
        long freed = before - addressSpace();
        assertTrue(freed >= 3 * ram, "closing the pool freed " + (freed >> 20) + " MiB of address space, less than its"
                + " three reserved ranges of " + (ram >> 20) + " MiB");
        VmmTesting.assertNothingLeftAfterClose();
    }

    @Test
    void aRestoreThatFailsAfterTakingAPooledVmReleasesIt() throws Exception {
        try (Vmm vmm = vmmWithPool(2)) {
            VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 16L << 20));
            parent.ready().get(30, TimeUnit.SECONDS);
            try (VirtualMachine.Snapshot s = parent.snapshot()) {
                VmmTesting.quiesce(vmm);
                int vmFds = VmmTesting.vmFds();
                int mappings = VmmTesting.vmMappings();
                long made = vmm.pool().made();
                VcpuState v = s.state().vcpus().get(0);
                // An XSAVE area larger than this host's: refused after the pooled vCPU became the VM's.
                io.vmfork.vmm.arch.CpuState c = v.cpu();
                VcpuState big = new VcpuState(v.index(), new io.vmfork.vmm.arch.CpuState(c.regs(), c.fsBase(),
                        c.gsBase(), c.fpuFormat(), new byte[vmm.caps().xsaveSize() + 64], c.xcr0()), v.kvm());
                MachineState bad = new MachineState(s.state().identity(), s.state().memorySize(),
                        s.state().cpuidEntries(), s.state().clockNs(), List.of(big), s.state().devices());
                for (int i = 0; i < 5; i++) {
                    assertThrows(LaunchException.class, () -> vmm.restore(bad, s.image(), VmListener.NONE));
                    VmmTesting.quiesce(vmm);
                }
                assertEquals(made + 5, vmm.pool().made(), "every failed restore took a pooled VM");
                assertEquals(vmFds, VmmTesting.vmFds(), "a failed restore left a KVM VM or vCPU fd");
                // Not exact: the parent's RAM view from before the snapshot is unmapped in the background.
                assertTrue(VmmTesting.settle(VmmTesting::vmMappings, mappings) <= mappings,
                        "a failed restore left a kvm_run mapping");
            }
            parent.stop();
        }
    }

    @Test
    void closingWhileThePoolRefillsLeavesNothing() throws Exception {
        for (int round = 0; round < 10; round++) {
            Vmm vmm = vmmWithPool(8);
            try {
                // Drain it as it fills, so that close() finds the thread making VMs.
                for (int i = 0; i < 3; i++) {
                    VmPool.Entry e = vmm.takePooledVm(0);
                    if (e != null) {
                        e.close();
                    }
                }
            } finally {
                vmm.close();
            }
            assertNull(vmm.takePooledVm(0), "a closed pool hands out nothing");
            VmmTesting.assertNothingLeftAfterClose();
        }
    }

    @Test
    void sizeZeroMeansNoPoolAndNoThread() throws Exception {
        try (Vmm vmm = vmmWithPool(0)) {
            assertNull(vmm.pool());
            assertFalse(VmmTesting.poolThreadAlive());
            ForkTest.Announcements a = new ForkTest.Announcements();
            VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 16L << 20).withListener(a));
            parent.ready().get(30, TimeUnit.SECONDS);
            String r = ForkTest.ask(parent, "fork 1");
            assertTrue(r.startsWith("parent launched=1 "), r);
            for (VirtualMachine c : parent.children()) {
                c.stop();
            }
            parent.stop();
        }
        VmmTesting.assertNothingLeftAfterClose();
        assertThrows(IllegalArgumentException.class, () -> vmmWithPool(-1));
    }
}
