package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.guest.Guests;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** Fork on one host, for real: children share their parent's memory copy-on-write. */
class ForkTest extends VmmTestBase {
    /** Collects what children announce (unsolicited messages), per VM. */
    static class Announcements implements VmListener {
        final Map<Long, BlockingQueue<String>> byVm = new ConcurrentHashMap<>();
        final BlockingQueue<VirtualMachine> forked = new LinkedBlockingQueue<>();

        BlockingQueue<String> of(long vm) {
            return byVm.computeIfAbsent(vm, k -> new LinkedBlockingQueue<>());
        }

        @Override
        public void onUnsolicitedMessage(VirtualMachine vm, byte[] message) {
            of(vm.id()).add(new String(message, StandardCharsets.UTF_8));
        }

        @Override
        public void onForked(VirtualMachine parent, VirtualMachine child) {
            forked.add(child);
        }

        String next(VirtualMachine vm) throws InterruptedException {
            String s = of(vm.id()).poll(30, TimeUnit.SECONDS);
            assertNotNull(s, "no announcement from " + vm);
            return s;
        }
    }

    static String ask(VirtualMachine vm, String request) throws Exception {
        return new String(vm.channel().request(request.getBytes(StandardCharsets.UTF_8)).get(30, TimeUnit.SECONDS),
                StandardCharsets.UTF_8);
    }

    static VirtualMachine forker(Announcements a) throws Exception {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("forker"), 64L << 20).withListener(a));
        vm.ready().get(30, TimeUnit.SECONDS);
        return vm;
    }

    static List<VirtualMachine> forkVia(VirtualMachine parent, int n, Announcements a) throws Exception {
        String r = ask(parent, "fork " + n);
        assertTrue(r.startsWith("parent launched=" + n + " "), r);
        List<VirtualMachine> kids = new ArrayList<>();
        for (String id : r.replaceAll(".*ids=([0-9,]+).*", "$1").split(",")) {
            VirtualMachine c = vmm.vm(Long.parseLong(id));
            assertNotNull(c, "child " + id + " is not alive");
            kids.add(c);
        }
        return kids;
    }

    @Test
    void aChildSeesWhatItsParentInitialisedAndWritesStayApart() throws Exception {
        Announcements a = new Announcements();
        VirtualMachine parent = forker(a);
        String sum = ask(parent, "sum");
        List<VirtualMachine> kids = forkVia(parent, 2, a);
        VirtualMachine c0 = kids.get(0), c1 = kids.get(1);
        assertEquals("child index=0 id=" + c0.id() + " parent=" + parent.id() + " gen=1 type=0", a.next(c0));
        assertEquals("child index=1 id=" + c1.id() + " parent=" + parent.id() + " gen=1 type=0", a.next(c1));
        assertEquals(sum, ask(c0, "sum"));
        assertEquals(sum, ask(c1, "sum"));
        // A write in one child is seen by nobody else.
        assertEquals("ok", ask(c0, "write 5 777"));
        assertEquals("777", ask(c0, "read 5"));
        assertNotEquals("777", ask(c1, "read 5"));
        assertNotEquals("777", ask(parent, "read 5"));
        // ...and the parent's writes after the fork are invisible to its children.
        assertEquals("ok", ask(parent, "write 6 888"));
        assertNotEquals("888", ask(c0, "read 6"));
        assertNotEquals("888", ask(c1, "read 6"));
        assertEquals("888", ask(parent, "read 6"));
        // Identity and entropy differ.
        assertEquals("vm=" + c0.id() + " parent=" + parent.id() + " gen=1 host=1 type=0", ask(c0, "id"));
        assertNotEquals(ask(c0, "rand"), ask(c1, "rand"));
        assertEquals(parent, c0.parent());
        for (VirtualMachine v : List.of(c0, c1, parent)) {
            v.stop();
        }
    }

    @Test
    void sixtyFourChildrenAllRunAndAnswer() throws Exception {
        Announcements a = new Announcements();
        VirtualMachine parent = forker(a);
        String sum = ask(parent, "sum");
        List<VirtualMachine> kids = forkVia(parent, 64, a);
        assertEquals(64, kids.stream().map(VirtualMachine::id).distinct().count());
        for (int i = 0; i < kids.size(); i++) {
            VirtualMachine c = kids.get(i);
            assertTrue(a.next(c).startsWith("child index=" + i + " id=" + c.id() + " "));
        }
        for (VirtualMachine c : kids) {
            assertEquals(sum, ask(c, "sum"));
            assertEquals("ok", ask(c, "write 1 " + c.id()));
        }
        for (VirtualMachine c : kids) {
            assertEquals(String.valueOf(c.id()), ask(c, "read 1"), "each child keeps its own write");
        }
        assertEquals(64, parent.children().size());
        for (VirtualMachine c : kids) {
            c.stop();
        }
        assertEquals(0, parent.children().size());
        parent.stop();
    }

    @Test
    void childrenForkGrandchildren() throws Exception {
        Announcements a = new Announcements();
        VirtualMachine parent = forker(a);
        VirtualMachine child = forkVia(parent, 1, a).get(0);
        a.next(child);
        assertEquals("ok", ask(child, "write 9 4242"));
        VirtualMachine grandchild = forkVia(child, 1, a).get(0);
        assertEquals("child index=0 id=" + grandchild.id() + " parent=" + child.id() + " gen=2 type=0",
                a.next(grandchild));
        assertEquals("4242", ask(grandchild, "read 9"), "a grandchild sees its parent's state");
        assertEquals("ok", ask(grandchild, "write 9 1"));
        assertEquals("4242", ask(child, "read 9"));
        assertNotEquals("4242", ask(parent, "read 9"));
        for (VirtualMachine v : List.of(grandchild, child, parent)) {
            v.stop();
        }
    }

    @Test
    void aSecondForkCapturesThePresentStateOnly() throws Exception {
        Announcements a = new Announcements();
        VirtualMachine parent = forker(a);
        VirtualMachine first = forkVia(parent, 1, a).get(0);
        a.next(first);
        assertEquals("ok", ask(parent, "write 3 333"));
        assertEquals("touched 4", ask(parent, "touch 4"));
        VirtualMachine second = forkVia(parent, 1, a).get(0);
        a.next(second);
        assertEquals("333", ask(second, "read 3"));
        assertNotEquals("333", ask(first, "read 3"));
        assertEquals(ask(parent, "readall 4"), ask(second, "readall 4"));
        assertNotEquals(ask(parent, "readall 4"), ask(first, "readall 4"));
        assertEquals(ask(parent, "sum"), ask(second, "sum"));
        // A third fork right after the second copies nothing and still sees everything.
        VirtualMachine third = forkVia(parent, 1, a).get(0);
        a.next(third);
        assertEquals("333", ask(third, "read 3"));
        for (VirtualMachine v : List.of(first, second, third, parent)) {
            v.stop();
        }
    }

    /**
     * The process platform tracks a guest's writes in place (the stub's write-protect
     * userfaultfd): after its first fork (its RAM file becomes the image, and it moves to a
     * process mapping that privately) a parent keeps its guest process fork after fork, and
     * each fork's children still see every page written since the last, the guest's own and
     * those the VMM wrote into it.
     */
    @Test
    @org.junit.jupiter.api.condition.DisabledIf(value = "io.vmfork.vmm.platform.HostPlatforms#vmmRunsOnKvm",
            disabledReason = "process-platform-only by nature: where a guest process's writes are tracked")
    void aParentForkedAgainKeepsItsGuestProcessAndItsChildrenSeeEveryLaterWrite() throws Exception {
        Announcements a = new Announcements();
        VirtualMachine parent = forker(a);
        long slot = parent.memory().size() - (8L << 20); // below the stack, above what forker uses
        VirtualMachine first = forkVia(parent, 1, a).get(0);
        a.next(first);
        int pid = parent.guestPid();
        parent.memory().writeLong(slot, 0x1111);
        assertEquals("ok", ask(parent, "write 5 222"));
        VirtualMachine second = forkVia(parent, 1, a).get(0);
        a.next(second);
        assertEquals(pid, parent.guestPid(), "the parent moved to a new guest process at its second fork");
        assertEquals("222", ask(second, "read 5"));
        assertEquals(0x1111, second.memory().readLong(slot), "the VMM's write before the fork");
        parent.memory().writeLong(slot, 0x2222);
        assertEquals("ok", ask(parent, "write 5 333"));
        VirtualMachine third = forkVia(parent, 1, a).get(0);
        a.next(third);
        assertEquals(pid, parent.guestPid());
        assertEquals("333", ask(third, "read 5"));
        assertEquals(0x2222, third.memory().readLong(slot));
        assertEquals(0x1111, second.memory().readLong(slot), "an earlier child keeps what it had");
        assertEquals("222", ask(second, "read 5"));
        assertNotEquals("222", ask(first, "read 5"));
        // A fork with nothing written since copies nothing and still sees everything.
        VirtualMachine fourth = forkVia(parent, 1, a).get(0);
        a.next(fourth);
        assertEquals("333", ask(fourth, "read 5"));
        assertEquals(0x2222, fourth.memory().readLong(slot));
        assertEquals(ask(parent, "sum"), ask(fourth, "sum"));
        for (VirtualMachine v : List.of(first, second, third, fourth, parent)) {
            v.stop();
        }
    }

    @Test
    void anApplicationForksAVmThatIsBusyComputing() throws Exception {
        VirtualMachine spin = vmm.launch(VmSpec.of(Guests.shipped("spin"), 16L << 20));
        spin.ready().get(30, TimeUnit.SECONDS);
        long before = Long.parseLong(ask(spin, "count"));
        VirtualMachine.ForkResult r = spin.fork(2, 7);
        assertEquals(2, r.children().size(), r.errors().toString());
        for (VirtualMachine c : r.children()) {
            long count = Long.parseLong(ask(c, "count"));
            assertTrue(count > before, "the child goes on counting from where its parent was: " + count);
            assertEquals("vm=" + c.id() + " parent=" + spin.id() + " gen=1 host=1 type=7", ask(c, "id"));
        }
        assertTrue(Long.parseLong(ask(spin, "count")) > before, "the parent runs on");
        for (VirtualMachine c : r.children()) {
            c.stop();
        }
        spin.stop();
    }

    @Test
    void aWorkerWaitingForARequestIsForkedAndTheChildServes() throws Exception {
        VirtualMachine worker = vmm.launch(VmSpec.of(Guests.shipped("warm-worker"), 256L << 20));
        worker.ready().get(60, TimeUnit.SECONDS);
        String expected = ask(worker, "get 42");
        VirtualMachine.ForkResult r = worker.fork(3, 0);
        assertEquals(3, r.children().size());
        for (VirtualMachine c : r.children()) {
            assertEquals(expected, ask(c, "get 42"), "the child re-issues RECV and serves from the parent's index");
            assertTrue(c.ready().isDone(), "a copy of a ready worker is ready");
        }
        assertEquals(expected, ask(worker, "get 42"));
        for (VirtualMachine c : r.children()) {
            assertEquals("bye", ask(c, "stop"));
            assertEquals(VmExit.exited(0), c.awaitTermination(VmmTesting.TIMEOUT));
        }
        worker.stop();
    }

    @Test
    void untouchedPagesAreNeverMaterialised() throws Exception {
        VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 1L << 30));
        parent.ready().get(30, TimeUnit.SECONDS);
        try (VirtualMachine.Snapshot s = parent.snapshot()) {
            long data = s.image().dataRuns().stream().mapToLong(r -> r.length()).sum();
            assertTrue(data < 16L << 20, "a 1 GiB VM that touched ~9 MiB has " + data + " bytes of data in its image");
        }
        parent.stop();
    }
}
