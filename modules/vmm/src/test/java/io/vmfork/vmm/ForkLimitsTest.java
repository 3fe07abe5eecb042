package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import com.typesafe.config.ConfigFactory;
import io.vmfork.vmm.guest.Guests;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** A fork that cannot be satisfied gets an error code; a fork loop cannot take the host down. */
class ForkLimitsTest {
    private static Vmm vmmWith(String config) {
        return Vmm.open(VmmSettings.create(ConfigFactory.parseString(config).withFallback(ConfigFactory.load())));
    }

    @Test
    void copiesOverThePerVmLimitFailWithElimit() throws Exception {
        try (Vmm vmm = vmmWith("vmfork.vmm.fork.max-children-per-vm = 4")) {
            ForkTest.Announcements a = new ForkTest.Announcements();
            VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 64L << 20).withListener(a));
            parent.ready().get(30, TimeUnit.SECONDS);
            String r = ForkTest.ask(parent, "fork 6");
            assertTrue(r.startsWith("parent launched=4 "), r);
            assertTrue(r.endsWith("errs=0,0,0,0,-7,-7"), r);
            assertEquals(5, vmm.liveCount());
        }
    }

    @Test
    void placementDecidesWhichCopiesAreLocalChildren() throws Exception {
        try (Vmm vmm = vmmWith("")) {
            List<Object> asked = new java.util.concurrent.CopyOnWriteArrayList<>();
            vmm.useCopyPlacement((parent, vmType, count) -> {
                asked.add(List.of(parent.vmId(), vmType, count));
                return List.of(io.vmfork.vmm.fork.CopyTarget.LOCAL, new io.vmfork.vmm.fork.CopyTarget.Remote(7),
                        new io.vmfork.vmm.fork.CopyTarget.Refused(io.vmfork.vmm.hypercall.Hypercalls.ELIMIT, "full"),
                        io.vmfork.vmm.fork.CopyTarget.LOCAL);
            });
            ForkTest.Announcements a = new ForkTest.Announcements();
            VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 32L << 20).withListener(a));
            parent.ready().get(30, TimeUnit.SECONDS);
            String r = ForkTest.ask(parent, "fork 4 5");
            assertTrue(r.matches("parent launched=2 ids=[1-9][0-9]*,0,0,[1-9][0-9]* errs=0,-9,-7,0"), r);
            assertEquals(List.of(List.of(parent.id(), 5, 4)), asked);
            assertEquals(3, vmm.liveCount());
            // A placement that breaks its contract fails the copies, not the parent.
            vmm.useCopyPlacement((parent2, vmType, count) -> {
                throw new IllegalStateException("placement is down");
            });
            assertEquals("parent launched=0 ids=0,0 errs=-7,-7", ForkTest.ask(parent, "fork 2"));
            vmm.useCopyPlacement((parent2, vmType, count) -> List.of());
            assertEquals("parent launched=0 ids=0 errs=-7", ForkTest.ask(parent, "fork 1"));
            assertTrue(ForkTest.ask(parent, "sum").startsWith("sum="));
        }
    }

    @Test
    void aForkLoopStopsAtTheHostLimit() throws Exception {
        try (Vmm vmm = vmmWith("vmfork.vmm.max-vms = 20\nvmfork.vmm.fork.max-children-per-vm = 1000")) {
            VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 64L << 20));
            parent.ready().get(30, TimeUnit.SECONDS);
            assertEquals("forked=19 err=-7", ForkTest.ask(parent, "forkloop"));
            assertEquals(20, vmm.liveCount());
            // The host still works: the parent answers, and a VM stopped makes room again.
            assertTrue(ForkTest.ask(parent, "sum").startsWith("sum="));
            List<VirtualMachine> kids = parent.children();
            kids.get(0).stop();
            assertTrue(ForkTest.ask(parent, "fork 1").startsWith("parent launched=1 "));
        }
    }

    @Test
    void forkArgumentsAreChecked() {
        try (Vmm vmm = vmmWith("")) {
            VirtualMachine spin = vmm.launch(VmSpec.of(Guests.shipped("spin"), 16L << 20));
            spin.ready().join();
            assertThrows(IllegalArgumentException.class, () -> spin.fork(0, 0));
            assertThrows(IllegalArgumentException.class, () -> spin.fork(vmm.settings().forkMaxCount() + 1, 0));
            spin.stop();
            assertThrows(VmEndedException.class, () -> spin.fork(1, 0));
        }
    }

    @Test
    void overlayLayersAreCompactedAndForksStayCorrect() throws Exception {
        try (Vmm vmm = vmmWith("vmfork.vmm.fork.max-image-extents = 2")) {
            ForkTest.Announcements a = new ForkTest.Announcements();
            VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 64L << 20).withListener(a));
            parent.ready().get(30, TimeUnit.SECONDS);
            for (int round = 0; round < 6; round++) {
                // Writes far apart, so that every round adds extents that do not touch.
                for (int k = 0; k < 4; k++) {
                    int word = (round * 4 + k) * 40000 % (1 << 20);
                    assertEquals("ok", ForkTest.ask(parent, "write " + word + " " + (round * 100 + k)));
                }
                String reply = ForkTest.ask(parent, "fork 1");
                assertTrue(reply.startsWith("parent launched=1 "), reply);
                VirtualMachine child = vmm.vm(Long.parseLong(reply.replaceAll(".*ids=([0-9]+).*", "$1")));
                a.next(child);
                for (int r = 0; r <= round; r++) {
                    for (int k = 0; k < 4; k++) {
                        int word = (r * 4 + k) * 40000 % (1 << 20);
                        assertEquals(String.valueOf(r * 100 + k), ForkTest.ask(child, "read " + word),
                                "round " + round + " sees the write of round " + r);
                    }
                }
                assertEquals(ForkTest.ask(parent, "sum"), ForkTest.ask(child, "sum"));
                child.stop();
            }
        }
    }
}
