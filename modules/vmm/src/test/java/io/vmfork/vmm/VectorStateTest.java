package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.guest.Guests;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * The x87, SSE, AVX and AVX-512 state a guest can observe survives a fork, an external
 * fork of a guest computing in vector registers, and a capsule clone. The xstate guest
 * decides for itself (CPUID, XGETBV) which registers exist, fills them all, and checks
 * them after the VMM took it apart and put it back together.
 */
class VectorStateTest extends VmmTestBase {
    private static VirtualMachine xstate(VmListener listener) throws Exception {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("xstate"), 16L << 20).withListener(listener));
        vm.ready().get(30, TimeUnit.SECONDS);
        return vm;
    }

    /** What the guest found it can use: this host must at least have AVX for the test to mean much. */
    private static String info(VirtualMachine vm) throws Exception {
        String info = ForkTest.ask(vm, "info");
        assertTrue(info.matches("tier=(sse|avx|avx512) amx=[01] xcr0=[0-9a-f]+"), info);
        return info;
    }

    @Test
    void everyChildOfAForkHypercallHasItsParentsRegisters() throws Exception {
        ForkTest.Announcements a = new ForkTest.Announcements();
        VirtualMachine parent = xstate(a);
        System.out.println("xstate guest: " + info(parent));
        List<VirtualMachine> kids = new ArrayList<>();
        try {
            assertEquals("parent launched=3 ok", ForkTest.ask(parent, "fork 3"));
            for (int i = 0; i < 3; i++) {
                VirtualMachine c = a.forked.poll(30, TimeUnit.SECONDS);
                assertNotNull(c, "child " + i + " was not reported");
                kids.add(c);
            }
            for (VirtualMachine c : kids) {
                String got = a.next(c);
                assertTrue(got.matches("child index=[0-2] ok"), "child " + c + ": " + got);
            }
            // A child forks again: its own registers were restored from its parent's.
            assertEquals("parent launched=1 ok", ForkTest.ask(kids.get(0), "fork 1"));
            VirtualMachine grandchild = a.forked.poll(30, TimeUnit.SECONDS);
            assertNotNull(grandchild);
            kids.add(grandchild);
            assertEquals("child index=0 ok", a.next(grandchild));
        } finally {
            for (VirtualMachine v : kids) {
                v.stop();
            }
            parent.stop();
        }
    }

    @Test
    void aCopyMadeWhileTheGuestComputesInVectorRegistersComputesOn() throws Exception {
        VirtualMachine spin = xstate(VmListener.NONE);
        List<VirtualMachine> copies = new ArrayList<>();
        try {
            info(spin);
            for (int round = 0; round < 3; round++) {
                assertEquals("spinning", ForkTest.ask(spin, "spin"));
                Thread.sleep(20 + 30 * round);
                VirtualMachine.ForkResult r = spin.fork(2, 0);
                assertEquals(2, r.children().size(), r.errors().toString());
                copies.addAll(r.children());
                for (VirtualMachine c : r.children()) {
                    String got = ForkTest.ask(c, "check");
                    assertTrue(got.matches("spin rounds=[0-9]+ ok"), "copy " + c + ": " + got);
                }
                String got = ForkTest.ask(spin, "check");
                assertTrue(got.matches("spin rounds=[0-9]+ ok"), "the parent: " + got);
            }
        } finally {
            for (VirtualMachine v : copies) {
                v.stop();
            }
            spin.stop();
        }
    }

    @Test
    void aCapsuleCloneHasTheRegistersOfTheGuestItWasCapturedFrom() throws Exception {
        VirtualMachine original = xstate(VmListener.NONE);
        VirtualMachine held = null, spinning = null;
        try {
            info(original);
            // Blocked in RECV with every register live.
            assertEquals("holding", ForkTest.ask(original, "hold"));
            SnapshotContractTest.idle(original);
            held = vmm.restoreCapsule(new ByteArrayInputStream(capsuleOf(original)), VmListener.NONE);
            assertEquals("hold ok", ForkTest.ask(held, "go"));
            assertEquals("hold ok", ForkTest.ask(original, "go"));
            // Captured in the middle of the vector loop.
            assertEquals("spinning", ForkTest.ask(original, "spin"));
            Thread.sleep(30);
            spinning = vmm.restoreCapsule(new ByteArrayInputStream(capsuleOf(original)), VmListener.NONE);
            String got = ForkTest.ask(spinning, "check");
            assertTrue(got.matches("spin rounds=[0-9]+ ok"), "clone: " + got);
            got = ForkTest.ask(original, "check");
            assertTrue(got.matches("spin rounds=[0-9]+ ok"), "original: " + got);
        } finally {
            for (VirtualMachine v : new VirtualMachine[] {held, spinning, original}) {
                if (v != null) {
                    v.stop();
                }
            }
        }
    }

    private static byte[] capsuleOf(VirtualMachine vm) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (VirtualMachine.Snapshot s = vm.snapshot()) {
            vmm.writeCapsule(s, out);
        }
        return out.toByteArray();
    }
}
