package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.ConfigFactory;
import io.vmfork.vmm.guest.Guests;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * A fan-out with launch threads ({@code vmfork.vmm.fork.launch-threads}): every child of
 * one FORK, launched on the forking thread and the launch threads at once, gets its own
 * index, id and slot, sees the parent's memory and keeps its writes; closing the VMM
 * leaves no launch thread.
 */
class ForkFanOutTest {
    private static final int CHILDREN = 32;

    @Test
    void childrenLaunchedOnSeveralThreadsAreEachRight() throws Exception {
        Set<String> launchedOn = ConcurrentHashMap.newKeySet();
        ForkTest.Announcements a = new ForkTest.Announcements() {
            @Override
            public void onForked(VirtualMachine parent, VirtualMachine child) {
                launchedOn.add(Thread.currentThread().getName());
                super.onForked(parent, child);
            }
        };
        try (Vmm vmm = Vmm.open(VmmSettings.create(ConfigFactory.parseString(
                "vmfork.vmm.fork.launch-threads = 2").withFallback(ConfigFactory.load())))) {
            VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 64L << 20).withListener(a));
            parent.ready().get(30, TimeUnit.SECONDS);
            String sum = ask(parent, "sum");
            String r = ask(parent, "fork " + CHILDREN);
            assertTrue(r.startsWith("parent launched=" + CHILDREN + " "), r);
            List<VirtualMachine> kids = parent.lastFork().children();
            assertEquals(CHILDREN, kids.size());
            assertEquals(CHILDREN, kids.stream().map(VirtualMachine::id).distinct().count());
            for (int i = 0; i < CHILDREN; i++) {
                VirtualMachine c = kids.get(i);
                assertTrue(a.next(c).startsWith("child index=" + i + " id=" + c.id() + " "), "child " + i);
                assertEquals(sum, ask(c, "sum"));
                assertEquals("ok", ask(c, "write 1 " + c.id()));
            }
            for (VirtualMachine c : kids) {
                assertEquals(String.valueOf(c.id()), ask(c, "read 1"));
            }
            assertTrue(launchedOn.stream().anyMatch(n -> n.startsWith("vmfork-fork-launch-")),
                    "no child was launched on a launch thread: " + launchedOn);
            assertTrue(launchedOn.size() > 1, "one thread launched every child: " + launchedOn);
            assertEquals(CHILDREN + 1, vmm.liveCount());
        }
        VmmTesting.assertNothingLeftAfterClose();
    }

    private static String ask(VirtualMachine vm, String request) throws Exception {
        return new String(vm.channel().request(request.getBytes(StandardCharsets.UTF_8)).get(30, TimeUnit.SECONDS),
                StandardCharsets.UTF_8);
    }
}
