package io.vmfork.multijvm;

import static io.vmfork.multijvm.ApiTesting.FORM;
import static io.vmfork.multijvm.ApiTesting.WAIT;
import static io.vmfork.multijvm.ApiTesting.ask;
import static io.vmfork.multijvm.ApiTesting.await;
import static io.vmfork.multijvm.ApiTesting.events;
import static io.vmfork.multijvm.ApiTesting.failure;
import static io.vmfork.multijvm.ApiTesting.joinClient;
import static io.vmfork.multijvm.ApiTesting.subscribe;
import static io.vmfork.multijvm.TestCluster.awaitStatus;
import static io.vmfork.multijvm.TestCluster.exactlyUp;
import static io.vmfork.multijvm.TestCluster.reported;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import io.vmfork.cluster.api.VmCluster;
import io.vmfork.cluster.api.VmEvent;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.api.VmOrigin;
import io.vmfork.cluster.host.HostActor;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.apache.pekko.actor.typed.Props;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * Remote clones between node JVMs, with real KVM VMs, driven through the application API
 * from the test JVM: a fork whose copies placement puts on other hosts starts clone VMs
 * there that see the parent's initialised memory, have their own identity and answer; a
 * fork hypercall learns of its remote copies through FORK_STATUS; 16 clones over 3 nodes;
 * a second fork to the same host sends only the changed pages; every failure of a transfer
 * (either JVM killed with SIGKILL at each failpoint, a silent source, a capsule the target
 * refuses) leaves the parent running, frees everything on the survivor and reaches the
 * application.
 */
@ExtendWith(MultiJvmExtension.class)
class RemoteClonesTest {
        private static final long MIB = 1L << 20;

    private static final String CONFIG = """
            vmfork.node.capacity { vm-slots = 12, vcpus = 64, guest-memory = 8 GiB }
            """;

    @Test
    void clonesOnOtherNodesSeeTheParentsMemoryAnswerAndHaveTheirOwnIdentity(TestCluster cluster) throws Exception {
        NodeProcess n1 = cluster.start("node-1", 1, null, CONFIG);
        List<NodeProcess> three = List.of(n1, cluster.start("node-2", 2, n1, CONFIG),
                cluster.start("node-3", 3, n1, CONFIG));
        ClientMember client = joinClient(cluster, three, CONFIG);
        VmCluster api = client.cluster();
        BlockingQueue<VmEvent> events = subscribe(client);

        VmInfo parent = await(api.launchOn(1, "forker", 1, 64 * MIB));
        assertEquals("ok", ask(api, parent.vmId(), "write 5 12345"));
        String sum = ask(api, parent.vmId(), "sum");
        String parentRand = ask(api, parent.vmId(), "rand");

        // A fork from outside: least-loaded puts both copies on the other hosts.
        HostActor.Forked forked = await(api.fork(parent.vmId(), 2, 4));
        assertEquals(List.of(), forked.errors());
        assertEquals(2, forked.children().size(), forked.toString());
        Map<Long, VmInfo> byHost = new TreeMap<>();
        for (VmInfo c : forked.children()) {
            assertEquals(VmOrigin.CLONE, c.origin(), c.toString());
            assertEquals(c.hostId(), VmInfo.hostOf(c.vmId()));
            byHost.put(c.hostId(), c);
            // Its parent's memory, initialised before the fork and written just before it.
            assertEquals(sum, ask(api, c.vmId(), "sum"));
            assertEquals("12345", ask(api, c.vmId(), "read 5"));
            // Its own identity: its id on its host, the parent, the next generation, the type asked for.
            assertEquals("vm=" + c.vmId() + " parent=" + parent.vmId() + " gen=1 host=" + c.hostId() + " type=4",
                    ask(api, c.vmId(), "id"));
            assertEquals(1, c.forkGeneration());
            assertEquals(parent.vmId(), c.parentId());
            // Fresh entropy.
            assertNotEquals(parentRand, ask(api, c.vmId(), "rand"));
        }
        assertEquals(Set.of(2L, 3L), byHost.keySet());
        Map<Long, VmEvent> forkedEvents = events(events, VmEvent.Kind.FORKED, Set.copyOf(
                forked.children().stream().map(VmInfo::vmId).toList()), WAIT);
        forkedEvents.values().forEach(e -> assertEquals(VmOrigin.CLONE, e.vm().origin()));
        // The parent ran on meanwhile and is unchanged by its clones.
        assertEquals("ok", ask(api, byHost.get(2L).vmId(), "write 5 1"));
        assertEquals("12345", ask(api, parent.vmId(), "read 5"));
        for (VmInfo c : forked.children()) {
            await(api.stop(c.vmId()));
        }
        for (NodeProcess n : three) {
            JsonNode clones = n.status().orElseThrow().path("clones");
            System.out.println("multi-jvm: remote clones, host " + n.hostId() + ": " + clones);
        }

        // A fork hypercall: the remote copies are accepted (VMF_EINPROGRESS with a ticket)
        // while the parent runs on; each clone's fork block names it as the child it is.
        // (forker's "rfork": FORK with VMF_FORK_REMOTE, then FORK_STATUS of each ticket at
        // once and waiting.)
        String reply = ask(api, parent.vmId(), "rfork 2 6");
        Matcher m = Pattern.compile("parent launched=2 ids=(\\d+),(\\d+) errs=-10,-10 now=(-10|0),(-10|0) "
                + "waited=0:(\\d+),0:(\\d+)").matcher(reply);
        assertTrue(m.matches(), reply);
        Set<Long> fromStatus = Set.of(Long.parseLong(m.group(5)), Long.parseLong(m.group(6)));
        List<VmInfo> hypercallClones = new ArrayList<>();
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (hypercallClones.size() < 2 && System.nanoTime() < deadline) {
            VmEvent e = events.poll(1, TimeUnit.SECONDS);
            if (e != null && e.kind() == VmEvent.Kind.FORKED && e.vm().parentId() == parent.vmId()) {
                assertEquals(VmOrigin.CLONE, e.vm().origin());
                assertEquals(6, e.vm().vmType());
                hypercallClones.add(e.vm());
            }
        }
        assertEquals(2, hypercallClones.size(), "FORKED events of the hypercall's clones");
        assertEquals(fromStatus, Set.of(hypercallClones.get(0).vmId(), hypercallClones.get(1).vmId()));
        Set<String> announced = new java.util.HashSet<>();
        for (VmInfo c : hypercallClones) {
            // A child announces itself unsolicited first (forker's protocol): that is its
            // first answer; then it serves.
            String first = ask(api, c.vmId(), "id");
            String expectedId = "vm=" + c.vmId() + " parent=" + parent.vmId() + " gen=1 host=" + c.hostId()
                    + " type=6";
            if (first.startsWith("child ")) {
                announced.add(first.replaceAll(" id=.*", ""));
                assertTrue(first.contains("id=" + c.vmId() + " "), first);
                assertEquals(expectedId, ask(api, c.vmId(), "id"));
            } else {
                assertEquals(expectedId, first);
            }
            assertEquals(sum, ask(api, c.vmId(), "sum"));
            await(api.stop(c.vmId()));
        }
        // The parent can ask again later.
        assertEquals("status=0 vm=" + m.group(5), ask(api, parent.vmId(), "fstatus " + m.group(1) + " 0"));

        // 16 clones and children over 3 nodes in one fork.
        HostActor.Forked many = await(api.fork(parent.vmId(), 16, 4));
        assertEquals(List.of(), many.errors());
        assertEquals(16, many.children().size());
        Map<Long, Integer> perHost = new TreeMap<>();
        for (VmInfo c : many.children()) {
            perHost.merge(c.hostId(), 1, Integer::sum);
            assertEquals(c.hostId() == 1 ? VmOrigin.CHILD : VmOrigin.CLONE, c.origin(), c.toString());
            assertEquals(sum, ask(api, c.vmId(), "sum"));
        }
        System.out.println("multi-jvm: 16 copies over 3 nodes: " + perHost);
        assertEquals(Set.of(1L, 2L, 3L), perHost.keySet(), perHost.toString());
        // Each target received the image once, however many clones it started from it.
        for (NodeProcess n : three.subList(1, 3)) {
            JsonNode clones = n.status().orElseThrow().path("clones");
            assertEquals(3, clones.path("capsules_received").asInt(), n + ": " + clones);
        }
    }

    @Test
    void aSecondForkToTheSameHostSendsOnlyTheChangedPages(TestCluster cluster) throws Exception {
        NodeProcess n1 = cluster.start("node-1", 1, null, CONFIG);
        NodeProcess n2 = cluster.start("node-2", 2, n1, CONFIG);
        List<NodeProcess> two = List.of(n1, n2);
        ClientMember client = joinClient(cluster, two, CONFIG);
        VmCluster api = client.cluster();

        VmInfo parent = await(api.launchOn(1, "forker", 1, 64 * MIB));
        // Host 1 stays the fuller one, even while host 2's report still counts a stopped
        // clone: least-loaded puts every copy on host 2.
        await(api.launchOn(1, "spin", 1, 512 * MIB));
        assertEquals("touched 16", ask(api, parent.vmId(), "touch 16"));
        VmInfo first = only(await(api.fork(parent.vmId(), 1, 1)));
        assertEquals(2, first.hostId());
        long sentFirst = sent(n1);
        assertTrue(sentFirst > 16 * MIB, "first capsule: " + sentFirst + " bytes");
        await(api.stop(first.vmId()));
        awaitStatus(List.of(n2), s -> s.path("vms").isEmpty(), WAIT, "the first clone gone");

        // The parent rewrites 1 MiB of its memory, then forks to the same host again.
        assertEquals("ok", ask(api, parent.vmId(), "write 7 777"));
        assertEquals("touched 1", ask(api, parent.vmId(), "touch 1"));
        String parentRead = ask(api, parent.vmId(), "readall 16");
        VmInfo second = only(await(api.fork(parent.vmId(), 1, 1)));
        assertEquals(2, second.hostId());
        long sentSecond = sent(n1) - sentFirst;
        JsonNode c1 = n1.status().orElseThrow().path("clones");
        JsonNode c2 = n2.status().orElseThrow().path("clones");
        System.out.println("multi-jvm: incremental clone: first capsule " + sentFirst + " bytes, second "
                + sentSecond + " bytes; source " + c1 + ", target " + c2);
        assertEquals(1, c1.path("deltas_sent").asInt(), c1.toString());
        assertEquals(1, c2.path("deltas_received").asInt(), c2.toString());
        assertTrue(sentSecond <= 2 * MIB, "second capsule: " + sentSecond + " bytes");
        // The clone built over the kept image sees the parent as it was at the second fork.
        assertEquals("777", ask(api, second.vmId(), "read 7"));
        assertEquals(parentRead, ask(api, second.vmId(), "readall 16"));
        assertEquals(ask(api, parent.vmId(), "sum"), ask(api, second.vmId(), "sum"));
    }

    /**
     * SIGKILL of the source or the target at each point of a transfer: the survivor frees
     * everything it had for the transfer, the parent (if it survives) runs on, and the
     * application hears of the lost copy.
     */
    @ParameterizedTest
    @ValueSource(strings = {"source-before-first-chunk", "source-mid", "source-after-last-chunk",
            "target-before-first-chunk", "target-mid", "target-after-last-chunk"})
    void aNodeKilledMidTransferLosesNothingOnTheSurvivor(String failpoint, TestCluster cluster) throws Exception {
        boolean sourceDies = failpoint.startsWith("source");
        String hold = "vmfork.transfer.test { hold-at = [\"" + failpoint + "\"], hold-for = 120s }\n";
        NodeProcess n1 = cluster.start("node-1", 1, null, CONFIG + (sourceDies ? hold : ""));
        NodeProcess n2 = cluster.start("node-2", 2, n1, CONFIG + (sourceDies ? "" : hold));
        List<NodeProcess> two = List.of(n1, n2);
        ClientMember client = joinClient(cluster, two, CONFIG);
        VmCluster api = client.cluster();
        BlockingQueue<VmEvent> events = subscribe(client);

        VmInfo parent = await(api.launchOn(1, "forker", 1, 64 * MIB));
        assertEquals("touched 16", ask(api, parent.vmId(), "touch 16"));
        NodeProcess survivor = sourceDies ? n2 : n1;
        NodeProcess victim = sourceDies ? n1 : n2;
        Leaks before = Leaks.of(survivor);

        long logMark = Files.size(victim.log());
        CompletableFuture<HostActor.Forked> fork = api.fork(parent.vmId(), 1, 1).toCompletableFuture();
        awaitLogLine(victim, logMark, "vmfork failpoint " + failpoint + " reached", WAIT);
        victim.kill();

        if (sourceDies) {
            // The target frees the admission, the partial image and its file.
            awaitStatus(List.of(n2), s -> s.path("vms").isEmpty() && s.path("load").path("vms").asInt() == 0
                    && s.path("load").path("memory_used").asLong() == 0, WAIT, "the target has freed the transfer");
            Leaks.awaitBack(survivor, before, WAIT);
            assertTrue(n2.status().orElseThrow().path("clones").path("transfers_failed").asInt() >= 1);
        } else {
            // The parent runs on; the fork's reply and a CLONE_FAILED event name the lost copy.
            HostActor.Forked r = fork.get(WAIT.toSeconds(), TimeUnit.SECONDS);
            assertEquals(List.of(), r.children(), r.toString());
            assertEquals(1, r.errors().size(), r.toString());
            VmEvent failed = events(events, VmEvent.Kind.CLONE_FAILED, Set.of(parent.vmId()), WAIT)
                    .get(parent.vmId());
            assertTrue(failed.detail().contains("host 2"), failed.detail());
            System.out.println("multi-jvm: " + failpoint + ": " + r.errors() + " / " + failed.detail());
            assertEquals("touched 1", ask(api, parent.vmId(), "touch 1"));
            awaitStatus(List.of(n1), s -> s.path("vms").size() == 1, WAIT, "only the parent on the source");
            Leaks.awaitBack(survivor, before, WAIT);
        }
    }

    @Test
    void aSilentSourceTimesOutAndTheTargetFreesEverything(TestCluster cluster) throws Exception {
        String quick = "vmfork.transfer.idle-timeout = 2s\n";
        NodeProcess n1 = cluster.start("node-1", 1, null, CONFIG + quick
                + "vmfork.transfer.test { hold-at = [\"source-mid\"], hold-for = 6s }\n");
        NodeProcess n2 = cluster.start("node-2", 2, n1, CONFIG + quick);
        ClientMember client = joinClient(cluster, List.of(n1, n2), CONFIG);
        VmCluster api = client.cluster();
        VmInfo parent = await(api.launchOn(1, "forker", 1, 64 * MIB));
        assertEquals("touched 16", ask(api, parent.vmId(), "touch 16"));
        Leaks before = Leaks.of(n2);
        HostActor.Forked r = await(api.fork(parent.vmId(), 1, 1));
        assertEquals(List.of(), r.children(), r.toString());
        assertEquals(1, r.errors().size(), r.toString());
        System.out.println("multi-jvm: silent source: " + r.errors());
        awaitStatus(List.of(n2), s -> s.path("vms").isEmpty() && s.path("load").path("vms").asInt() == 0,
                WAIT, "the target has freed the transfer");
        Leaks.awaitBack(n2, before, WAIT);
        // Both hosts still work: the next fork succeeds.
        n1.status();
        assertEquals("ok", ask(api, parent.vmId(), "write 1 1"));
    }

    @Test
    void aTargetMissingACpuFeatureRefusesTheCapsuleCleanly(TestCluster cluster) throws Exception {
        NodeProcess n1 = cluster.start("node-1", 1, null, CONFIG);
        NodeProcess n2 = cluster.start("node-2", 2, n1, CONFIG
                + "vmfork.capsule.hide-cpu-features = [\"avx512f\", \"avx\"]\n");
        ClientMember client = joinClient(cluster, List.of(n1, n2), CONFIG);
        VmCluster api = client.cluster();
        BlockingQueue<VmEvent> events = subscribe(client);
        VmInfo parent = await(api.launchOn(1, "forker", 1, 64 * MIB));
        Leaks before = Leaks.of(n2);
        HostActor.Forked r = await(api.fork(parent.vmId(), 1, 1));
        assertEquals(List.of(), r.children(), r.toString());
        assertEquals(1, r.errors().size(), r.toString());
        assertTrue(r.errors().get(0).contains("avx"), r.errors().toString());
        VmEvent failed = events(events, VmEvent.Kind.CLONE_FAILED, Set.of(parent.vmId()), WAIT).get(parent.vmId());
        assertTrue(failed.detail().contains("CAPSULE_REFUSED"), failed.detail());
        System.out.println("multi-jvm: refused capsule: " + failed.detail());
        awaitStatus(List.of(n2), s -> s.path("vms").isEmpty() && s.path("load").path("vms").asInt() == 0,
                WAIT, "the refusing target has nothing left");
        Leaks.awaitBack(n2, before, WAIT);
        assertEquals("ok", ask(api, parent.vmId(), "write 1 1"));
    }

    // ---- helpers ----

    /** What a node process holds of VMs: memfds open, memfd mappings, KVM VM fds. */
    record Leaks(long pid, int memfds, int mappings, int kvmVms) {
        static Leaks of(NodeProcess n) throws IOException {
            long pid = n.pid();
            int memfds = 0;
            int vms = 0;
            try (Stream<Path> fds = Files.list(Path.of("/proc/" + pid + "/fd"))) {
                for (Path fd : fds.toList()) {
                    try {
                        String target = Files.readSymbolicLink(fd).toString();
                        memfds += target.startsWith("/memfd:") ? 1 : 0;
                        vms += target.equals("anon_inode:kvm-vm") ? 1 : 0;
                    } catch (IOException gone) {
                        // closed meanwhile
                    }
                }
            }
            int maps = (int) Files.readAllLines(Path.of("/proc/" + pid + "/maps")).stream()
                    .filter(l -> l.contains("/memfd:")).count();
            return new Leaks(pid, memfds, maps, vms);
        }

        /** Waits until {@code n} holds no more than {@code before} (a VM pool refills its KVM VMs). */
        static void awaitBack(NodeProcess n, Leaks before, Duration within) throws Exception {
            long deadline = System.nanoTime() + within.toNanos();
            Leaks now = of(n);
            while (now.memfds > before.memfds || now.mappings > before.mappings || now.kvmVms > before.kvmVms) {
                if (System.nanoTime() > deadline) {
                    fail(n + " still holds more than before the transfer: " + now + " vs " + before);
                }
                Thread.sleep(200);
                now = of(n);
            }
        }
    }

    private static long sent(NodeProcess n) {
        return n.status().orElseThrow().path("clones").path("bytes_sent").asLong();
    }

    private static VmInfo only(HostActor.Forked f) {
        assertEquals(List.of(), f.errors(), f.toString());
        assertEquals(1, f.children().size(), f.toString());
        return f.children().get(0);
    }

    /** Waits until {@code n}'s log has {@code line} past byte {@code from} (a parameterized test's nodes share a log). */
    private static void awaitLogLine(NodeProcess n, long from, String line, Duration within) throws Exception {
        long deadline = System.nanoTime() + within.toNanos();
        while (true) {
            byte[] all = Files.readAllBytes(n.log());
            if (new String(all, (int) Math.min(from, all.length), (int) Math.max(0, all.length - from),
                    StandardCharsets.UTF_8).contains(line)) {
                return;
            }
            if (System.nanoTime() > deadline) {
                fail(n + " never logged \"" + line + "\":\n" + n.tail());
            }
            Thread.sleep(50);
        }
    }
}
