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
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** Fork on one host, for real: children share their parent's memory copy-on-write. */
class ForkTest {
    private static Vmm vmm;

    @BeforeAll
    static void open() {
        vmm = VmmTesting.openVmm();
    }

    @AfterAll
    static void close() {
        vmm.close();
    }

    /** Collects what children announce (unsolicited messages), per VM. */
    static final class Announcements implements VmListener {
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
}
