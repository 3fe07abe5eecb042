package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.guest.Guests;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * The two kinds of fork at once: a guest forks in a loop while the host forks it from
 * outside. Every copy must resume in a state the guest could have had; the forker guest
 * checks each FORK result it sees and exits 98 (child) or 99 (parent or outside copy)
 * when a result is impossible.
 */
class ForkRaceTest extends VmmTestBase {
    @Test
    void externalForksRacingForkHypercallsGiveEveryCopyAPossibleState() throws Exception {
        Map<Long, VmExit> ended = new ConcurrentHashMap<>();
        VmListener l = new VmListener() {
            @Override
            public void onEnded(VirtualMachine vm, VmExit exit) {
                ended.put(vm.id(), exit);
            }
        };
        VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 32L << 20).withListener(l));
        parent.ready().get(30, TimeUnit.SECONDS);
        int rounds = 800;
        CompletableFuture<byte[]> stress = parent.channel().request(
                ("forkstress " + rounds).getBytes(StandardCharsets.UTF_8));
        // Fork from outside only once the guest is in its loop (a copy made while it waits in
        // RECV would wait there for ever: copies start with an empty message channel).
        long start = System.nanoTime();
        while (parent.lastFork() == null && System.nanoTime() - start < TimeUnit.SECONDS.toNanos(30)) {
            Thread.sleep(1);
        }
        List<Long> outside = new ArrayList<>();
        int externalForks = 0;
        while (!stress.isDone() && externalForks < 400) {
            VirtualMachine.ForkResult r = parent.fork(1, 0);
            externalForks++;
            for (VirtualMachine c : r.children()) {
                outside.add(c.id());
            }
        }
        String reply = new String(stress.get(60, TimeUnit.SECONDS), StandardCharsets.UTF_8);
        assertTrue(reply.startsWith("stressed=" + rounds + " "), reply);
        assertTrue(externalForks >= 20, "only " + externalForks + " external forks overlapped the loop");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(30);
        while (vmm.vms().size() > 1 && System.nanoTime() < deadline) {
            Thread.sleep(10);
        }
        assertEquals(List.of(parent), vmm.vms(), "copies still running");
        List<String> bad = new ArrayList<>();
        ended.forEach((id, exit) -> {
            if (exit.kind() != VmExit.Kind.EXITED || exit.exitCode() != 0) {
                bad.add(Long.toHexString(id) + (outside.contains(id) ? " (outside copy)" : "") + ": " + exit);
            }
        });
        assertEquals(List.of(), bad, "copies that saw an impossible FORK result, of " + ended.size());
        for (long id : outside) {
            assertTrue(ended.containsKey(id), "outside copy " + Long.toHexString(id) + " never ended");
        }
        parent.stop();
    }
}
