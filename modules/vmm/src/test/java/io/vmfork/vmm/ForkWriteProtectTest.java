package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.ForkTest.Announcements;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.memory.GuestMemory;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIf;

/**
 * A fork of a parent that wrote much since its previous fork copies those pages after the
 * parent resumes, under write protection (GuestMemory, wpcopy.c): real VMs, real faults.
 * The parent races the copy by rewriting all its memory at once; children must see the
 * memory of the instant of the fork, never a page the parent wrote afterwards.
 */
@EnabledIf(value = "io.vmfork.vmm.platform.HostPlatforms#vmmRunsOnKvm", disabledReason = "KVM-only by nature: the KVM platform's write-protect copy after resume (the process platform copies in the pause)")
class ForkWriteProtectTest extends VmmTestBase {
    static VirtualMachine forker(Announcements a, int heapMib) throws Exception {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("forker"), (heapMib + 16L) << 20).withListener(a));
        vm.ready().get(30, TimeUnit.SECONDS);
        assertEquals("touched " + heapMib, ForkTest.ask(vm, "touch " + heapMib));
        return vm;
    }

    /** The parent's first fork (its RAM file becomes the image: nothing to copy), its child stopped. */
    static void firstFork(VirtualMachine parent, Announcements a) throws Exception {
        ForkTest.forkVia(parent, 1, a).get(0).stop();
    }

    static String readall(VirtualMachine vm, int mib) throws Exception {
        String r = ForkTest.ask(vm, "readall " + mib);
        assertTrue(r.startsWith("read " + mib + " "), r);
        return r;
    }

    /** "forkw": one child, and the parent writes a word of every page right after the fork. */
    static VirtualMachine forkw(VirtualMachine parent, int mib) throws Exception {
        String r = ForkTest.ask(parent, "forkw " + mib);
        assertTrue(r.startsWith("parent launched=1 ids="), r);
        VirtualMachine c = vmm.vm(Long.parseLong(r.replaceAll(".*ids=([0-9]+).*", "$1")));
        assertNotNull(c, r);
        return c;
    }

    @Test
    void childrenSeeTheInstantOfTheForkWhileTheParentRewritesEverythingAtOnce() throws Exception {
        Announcements a = new Announcements();
        int mib = 64;
        VirtualMachine parent = forker(a, mib);
        try {
            firstFork(parent, a);
            for (int round = 0; round < 3; round++) {
                assertEquals("filled " + mib, ForkTest.ask(parent, "fill " + mib));
                assertEquals("ok", ForkTest.ask(parent, "write 5 " + (1000 + round)));
                String before = readall(parent, mib);
                String sum = ForkTest.ask(parent, "sum");
                // The parent writes every page at once after the fork (in the guest, before it
                // replies), racing the copy, then rewrites all of it again.
                VirtualMachine child = forkw(parent, mib);
                assertEquals("filled " + mib, ForkTest.ask(parent, "fill " + mib));
                assertEquals("ok", ForkTest.ask(parent, "write 5 " + (2000 + round)));
                io.vmfork.vmm.memory.MemoryFreezer.CopyStats copy = parent.memory().freezer().lastCopy();
                assertNotNull(copy, "the fork copied nothing after resuming");
                assertTrue(copy.pages() >= (mib << 8), "copied " + copy.pages() + " pages");
                assertTrue(copy.faults() > 0, "the parent never waited for a page: no race tested");
                assertNotEquals(before, readall(parent, mib));
                assertEquals(before, readall(child, mib), "the child saw memory of after the fork");
                assertEquals(sum, ForkTest.ask(child, "sum"));
                assertEquals(String.valueOf(1000 + round), ForkTest.ask(child, "read 5"));
                assertEquals(String.valueOf(2000 + round), ForkTest.ask(parent, "read 5"));
                child.stop();
            }
        } finally {
            parent.stop();
        }
    }

    @Test
    void stoppingTheParentAndItsChildMidCopyLeavesNothingBehind() throws Exception {
        Announcements a = new Announcements();
        int mib = 256;
        VmmTesting.quiesce(vmm);
        int fds = VmmTesting.openFds();
        int vmFds = VmmTesting.vmFds();
        int mappings = VmmTesting.vmMappings();
        for (int i = 0; i < 3; i++) {
            VirtualMachine parent = forker(a, mib);
            VirtualMachine first = ForkTest.forkVia(parent, 1, a).get(0);
            first.stop();
            assertEquals("filled " + mib, ForkTest.ask(parent, "fill " + mib));
            // Stop them while the 256 MiB copy (tens of ms) still runs: the child has not
            // started yet, the copier reads the parent's view and serves its faults.
            VirtualMachine child = ForkTest.forkVia(parent, 1, a).get(0);
            if (i == 0) {
                child.stop();
                parent.stop();
            } else if (i == 1) {
                parent.stop();
                child.stop();
            } else {
                // a child stopped before it started, the parent left to finish the copy
                child.stop();
                assertEquals(ForkTest.ask(parent, "sum"), ForkTest.ask(parent, "sum"));
                parent.stop();
            }
            assertNotEquals(VmState.RUNNING, child.state());
        }
        VmmTesting.quiesce(vmm);
        assertEquals(mappings, VmmTesting.settle(VmmTesting::vmMappings, mappings), "guest RAM mappings left");
        VmmTesting.assertNoFdLeft(fds, vmFds);
        assertEquals(0, VmmTesting.settle(() -> (int) Thread.getAllStackTraces().keySet().stream()
                .filter(t -> t.getName().equals("vmfork-freeze-copy")).count(), 0), "copier threads left");
    }

    @Test
    void aSnapshotTakenWhileTheCopyRunsWaitsForItAndHoldsTheInstantOfTheFork() throws Exception {
        Announcements a = new Announcements();
        int mib = 128;
        VirtualMachine parent = forker(a, mib);
        try {
            firstFork(parent, a);
            assertEquals("filled " + mib, ForkTest.ask(parent, "fill " + mib));
            String before = readall(parent, mib);
            // A fork from outside: the copy runs after the parent resumes; the child starts
            // once it is complete, and a read of the image waits for it.
            VirtualMachine.ForkResult r = parent.fork(1, 0);
            assertEquals(1, r.children().size(), r.toString());
            VirtualMachine child = r.children().get(0);
            assertEquals("filled " + mib, ForkTest.ask(parent, "fill " + mib));
            assertEquals(before, readall(child, mib));
            assertNotEquals(before, readall(parent, mib));
            child.stop();
        } finally {
            parent.stop();
        }
    }

    @Test
    void aWriterVcpuRacingTheForkLeaksNothingIntoTheChildren() throws Exception {
        // smp: vCPUs 1-3 count in their lanes; lane 1 also sweeps a 32 MiB region, one page a
        // turn, so that at every fork 8,192 pages are dirty again: they are write-protected
        // and copied while lane 1 keeps writing them. Each child checks, at its start count
        // n, that every page holds the last value written there up to n: none older (a page
        // copied too early), none newer (a write of the parent's after the fork).
        Announcements a = new Announcements();
        VirtualMachine parent = vmm.launch(new VmSpec(Guests.shipped("smp"), 96L << 20, 4, 0, a));
        List<VirtualMachine> kids = new java.util.ArrayList<>();
        try {
            parent.ready().get(30, TimeUnit.SECONDS);
            assertEquals("sweeping 8192", ForkTest.ask(parent, "sweep 32"));
            assertEquals("started 14", ForkTest.ask(parent, "start 4"));
            assertEquals("progress ok", ForkTest.ask(parent, "progress"));
            java.util.regex.Pattern parentLine = java.util.regex.Pattern.compile(
                    "parent rc=1 id=(\\d+) pre=[\\d,]+ post=[\\d,]+ progress=ok errors=0");
            long faults = 0;
            for (int f = 0; f < 10; f++) {
                String r = ForkTest.ask(parent, "fork");
                java.util.regex.Matcher m = parentLine.matcher(r);
                assertTrue(m.matches(), "fork " + f + ": " + r);
                VirtualMachine child = vmm.vm(Long.parseLong(m.group(1)));
                assertNotNull(child, "fork " + f + ": the child is not alive");
                kids.add(child);
                String c = a.next(child);
                assertTrue(c.matches("child id=" + child.id()
                        + " start=[\\d,]+ pre=[\\d,]+ first=[\\d,]+ mine=ok ring=ok errors=0 progress=ok sweep=ok"),
                        "fork " + f + " child: " + c);
                if (f == 0) {
                    continue; // the first fork turns the RAM file into the image: no copy
                }
                io.vmfork.vmm.memory.MemoryFreezer.CopyStats copy = parent.memory().freezer().lastCopy();
                assertNotNull(copy, "fork " + f + " copied nothing after the parent resumed");
                assertTrue(copy.pages() >= 8192, "fork " + f + " copied " + copy.pages() + " pages");
                faults += copy.faults();
            }
            assertTrue(faults > 0, "the writer never met a write-protected page: no race tested");
            assertEquals("errors=0 running=14", ForkTest.ask(parent, "errors"));
            assertTrue(ForkTest.ask(parent, "stop").startsWith("stopped lanes="));
            assertEquals("check ok", ForkTest.ask(parent, "check"));
            for (VirtualMachine k : kids) {
                assertEquals("check ok", ForkTest.ask(k, "check"), "child " + k);
            }
        } finally {
            for (VirtualMachine k : kids) {
                k.stop();
            }
            parent.stop();
        }
    }

    @Test
    void aOneGibParentThatRewritesEverythingBetweenTenForksGivesEachChildItsInstant() throws Exception {
        Announcements a = new Announcements();
        int mib = 1024;
        VirtualMachine parent = forker(a, mib);
        try {
            firstFork(parent, a);
            String previous = null;
            for (int round = 0; round < 10; round++) {
                // Fresh random words in every page, then a fork whose parent at once adds 1 to
                // a word of every page (last page first, meeting pages the copy has not reached).
                assertEquals("filled " + mib, ForkTest.ask(parent, "fill " + mib));
                String before = readall(parent, mib);
                assertNotEquals(previous, before);
                VirtualMachine child = forkw(parent, mib);
                assertEquals(before, readall(child, mib), "round " + round + ": the child's sampled pages (a word of"
                        + " each) are not its parent's at the fork");
                assertNotEquals(before, readall(parent, mib));
                io.vmfork.vmm.memory.MemoryFreezer.CopyStats copy = parent.memory().freezer().lastCopy();
                assertTrue(copy != null && copy.pages() >= (mib << 8), "round " + round + ": " + copy);
                child.stop();
                previous = before;
            }
        } finally {
            parent.stop();
        }
    }
}
