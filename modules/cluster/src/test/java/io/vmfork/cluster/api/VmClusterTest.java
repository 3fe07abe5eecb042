package io.vmfork.cluster.api;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.host.HostActor;
import io.vmfork.cluster.node.VmforkNode;
import io.vmfork.vmm.Vmm;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.typed.Cluster;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The application API and the HostActor on a real node of its own cluster, running real
 * KVM VMs: launches through placement and on a named host, requests, forks from outside and
 * by the FORK hypercall (its copies placed by placement and admitted by the host), admission
 * past capacity, errors for unknown, stopped and missing things, lifecycle events and
 * console output. After each test the node stops and its VMM holds no VM.
 */
class VmClusterTest {
    private static final Duration WAIT = Duration.ofSeconds(30);
    private final List<VmforkNode> nodes = new ArrayList<>();
    private final List<Vmm> vmms = new ArrayList<>();

    @AfterEach
    void stopNodes() {
        for (int i = nodes.size() - 1; i >= 0; i--) {
            nodes.get(i).system().terminate();
            nodes.get(i).whenTerminated().toCompletableFuture().orTimeout(30, TimeUnit.SECONDS).join();
        }
        for (Vmm vmm : vmms) {
            assertEquals(0, vmm.liveCount(), "a VM outlived its node");
        }
    }

    private static String hostPort(VmforkNode n) {
        return "127.0.0.1:" + n.system().address().getPort().get();
    }

    private VmforkNode start(long hostId, String extra) throws Exception {
        Config c = ConfigFactory.parseString("vmfork.host.id = " + hostId + "\nvmfork.host.name = h" + hostId + "\n"
                + extra).withFallback(ConfigFactory.load()).resolve();
        VmforkNode n = VmforkNode.start(c);
        nodes.add(n);
        vmms.add(n.vmm());
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (Cluster.get(n.system()).selfMember().status() != MemberStatus.up()) {
            assertTrue(System.nanoTime() < deadline, "node did not become up");
            Thread.sleep(50);
        }
        while (!await(n.cluster().knowsHost(hostId))) {
            assertTrue(System.nanoTime() < deadline, "the node's HostActor is not registered");
            Thread.sleep(20);
        }
        return n;
    }

    private static <T> T await(CompletionStage<T> stage) throws Exception {
        return stage.toCompletableFuture().get(WAIT.toSeconds(), TimeUnit.SECONDS);
    }

    private static VmClusterException failure(CompletionStage<?> stage) throws Exception {
        try {
            Object v = stage.toCompletableFuture().get(WAIT.toSeconds(), TimeUnit.SECONDS);
            return fail("expected a failure, got " + v);
        } catch (ExecutionException e) {
            return assertInstanceOf(VmClusterException.class, e.getCause());
        }
    }

    private static String ask(VmCluster api, long vmId, String request) throws Exception {
        return new String(await(api.request(vmId, request.getBytes(StandardCharsets.UTF_8))), StandardCharsets.UTF_8);
    }

    /** Placement answers once the node's first load report is replicated: wait for it. */
    private static VmInfo launchThroughPlacement(VmCluster api, String image, int vmType, long memory)
            throws Exception {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (true) {
            try {
                return await(api.launch(image, vmType, memory));
            } catch (ExecutionException e) {
                VmClusterException v = assertInstanceOf(VmClusterException.class, e.getCause());
                if (v.code() != ErrorCode.HOST_FULL || System.nanoTime() > deadline) {
                    throw v;
                }
                Thread.sleep(100);
            }
        }
    }

    private static VmEvent next(TestProbe<VmEvent> probe, VmEvent.Kind kind, long vmId) {
        return probe.fishForMessage(WAIT, "a " + kind + " event of VM " + vmId, e ->
                e.kind() == kind && e.vmId() == vmId
                        ? org.apache.pekko.actor.testkit.typed.javadsl.FishingOutcomes.complete()
                        : org.apache.pekko.actor.testkit.typed.javadsl.FishingOutcomes.continueAndIgnore())
                .get(0);
    }

    /** Waits until the host's ledger counts {@code vms} VMs (a VM's end is released as it is torn down). */
    private static void awaitAdmitted(VmforkNode node, int vms) throws InterruptedException {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (node.admission().vmCount() != vms && System.nanoTime() < deadline) {
            Thread.sleep(20);
        }
        assertEquals(vms, node.admission().vmCount());
    }

    /** The events of {@code kind} of all of {@code vmIds}, whatever their order. */
    private static java.util.Map<Long, VmEvent> all(TestProbe<VmEvent> probe, VmEvent.Kind kind, Set<Long> vmIds) {
        java.util.Map<Long, VmEvent> seen = new java.util.HashMap<>();
        probe.fishForMessage(WAIT, kind + " events of " + vmIds, e -> {
            if (e.kind() == kind && vmIds.contains(e.vmId())) {
                seen.put(e.vmId(), e);
            }
            return seen.size() == vmIds.size()
                    ? org.apache.pekko.actor.testkit.typed.javadsl.FishingOutcomes.complete()
                    : org.apache.pekko.actor.testkit.typed.javadsl.FishingOutcomes.continueAndIgnore();
        });
        return seen;
    }

    @Test
    void aSubscriberThatComesAfterTheViewListedAHostIsToldItsVmsAsKnown() throws Exception {
        VmforkNode node = start(28, "");
        ActorTestKit kit = ActorTestKit.create(node.system());
        VmInfo vm = await(node.cluster().launchOn(28, "forker", 1, 16L << 20));
        VmCluster view = VmCluster.create(node.system(), node.placement(), node.cluster().timeout());
        long deadline = System.nanoTime() + 30_000_000_000L;
        while (await(view.known()).stream().noneMatch(v -> v.vmId() == vm.vmId())) {
            assertTrue(System.nanoTime() < deadline, "the view never listed the VM");
            Thread.sleep(20);
        }
        TestProbe<VmEvent> events = kit.createTestProbe();
        view.subscribe(events.getRef());
        VmEvent known = next(events, VmEvent.Kind.KNOWN, vm.vmId());
        assertEquals(28, known.hostId());
        await(view.stop(vm.vmId()));
        next(events, VmEvent.Kind.STOPPED, vm.vmId());
    }

    @Test
    void aViewThatListsAHostAfterItsSubscriberCameAnnouncesTheHostsVmsAsKnownAndKnowsThem() throws Exception {
        VmforkNode node = start(25, "");
        ActorTestKit kit = ActorTestKit.create(node.system());
        VmInfo vm = await(node.cluster().launchOn(25, "forker", 1, 16L << 20));

        // A new view (as the cluster page's feed, or a node that has just joined, has): its
        // subscriber comes before the view has listed the host.
        VmCluster late = VmCluster.create(node.system(), node.placement(), node.cluster().timeout());
        TestProbe<VmEvent> events = kit.createTestProbe();
        late.subscribe(events.getRef());
        VmEvent known = next(events, VmEvent.Kind.KNOWN, vm.vmId());
        assertEquals(25, known.hostId());
        assertEquals(vm.vmId(), known.vm().vmId());
        assertEquals(VmOrigin.BOOTED, known.vm().origin());
        assertTrue(await(late.known()).stream().anyMatch(v -> v.vmId() == vm.vmId()), "known() misses the VM");

        await(late.stop(vm.vmId()));
        next(events, VmEvent.Kind.STOPPED, vm.vmId());
        assertTrue(await(late.known()).stream().noneMatch(v -> v.vmId() == vm.vmId()), "known() keeps a stopped VM");
    }

    @Test
    void launchesHelloAndWarmWorkerThroughPlacementAndAnswersRequests() throws Exception {
        VmforkNode node = start(21, "");
        ActorTestKit kit = ActorTestKit.create(node.system());
        VmCluster api = node.cluster();
        TestProbe<VmEvent> events = kit.createTestProbe();
        api.subscribe(events.getRef());
        Thread.sleep(300); // the view subscribes to the host

        VmInfo hello = launchThroughPlacement(api, "hello", 3, 64L << 20);
        assertEquals(21, hello.hostId());
        assertEquals(21, VmInfo.hostOf(hello.vmId()));
        assertEquals(VmOrigin.BOOTED, hello.origin());
        assertEquals(3, hello.vmType());
        assertEquals(64L << 20, hello.memory());
        assertEquals(hello, next(events, VmEvent.Kind.LAUNCHED, hello.vmId()).vm());
        VmEvent exited = next(events, VmEvent.Kind.EXITED, hello.vmId());
        assertEquals(0, exited.exitCode());

        VmInfo worker = launchThroughPlacement(api, "warm-worker", 3, 256L << 20);
        TestProbe<ConsoleOutput> console = kit.createTestProbe();
        next(events, VmEvent.Kind.READY, worker.vmId());
        String soFar = new String(await(api.subscribeConsole(worker.vmId(), console.getRef())), StandardCharsets.UTF_8);
        assertTrue(soFar.contains("warm-worker: ready"), soFar);
        assertEquals("vm=" + worker.vmId() + " parent=0 gen=0 host=21 type=3", ask(api, worker.vmId(), "id"));
        assertTrue(ask(api, worker.vmId(), "get 1").startsWith("1 "));

        List<VmInfo> all = await(api.list());
        assertEquals(1, all.size(), all.toString());
        assertEquals(worker.vmId(), all.get(0).vmId());
        assertTrue(all.get(0).ready());
        assertEquals("RUNNING", all.get(0).state());

        VmInfo crash = await(api.launchOn(21, "crash", 3, 64L << 20));
        VmEvent crashed = next(events, VmEvent.Kind.CRASHED, crash.vmId());
        assertTrue(!crashed.detail().isEmpty(), crashed.toString());

        // Console output is streamed to the subscriber as the guest writes it: a request too
        // large for warm-worker's buffer makes it print why, answer, and exit with code 4.
        assertEquals("error: request too large", ask(api, worker.vmId(), "x".repeat(8192)));
        StringBuilder streamed = new StringBuilder();
        console.fishForMessage(WAIT, "the console line about the large request", c -> {
            assertEquals(worker.vmId(), c.vmId());
            streamed.append(new String(c.bytes(), StandardCharsets.UTF_8));
            return streamed.toString().contains("warm-worker: request of 8192 bytes is too large\n")
                    ? org.apache.pekko.actor.testkit.typed.javadsl.FishingOutcomes.complete()
                    : org.apache.pekko.actor.testkit.typed.javadsl.FishingOutcomes.continueAndIgnore();
        });
        assertEquals(4, next(events, VmEvent.Kind.EXITED, worker.vmId()).exitCode());
        awaitAdmitted(node, 0);
    }

    @Test
    void forksFromOutsideAndByTheForkHypercallThroughPlacement() throws Exception {
        VmforkNode node = start(22, "");
        ActorTestKit kit = ActorTestKit.create(node.system());
        VmCluster api = node.cluster();
        TestProbe<VmEvent> events = kit.createTestProbe();
        api.subscribe(events.getRef());
        Thread.sleep(300);

        VmInfo worker = launchThroughPlacement(api, "warm-worker", 5, 256L << 20);
        next(events, VmEvent.Kind.READY, worker.vmId());
        HostActor.Forked forked = await(api.fork(worker.vmId(), 2, -1));
        assertEquals(List.of(), forked.errors());
        assertEquals(2, forked.children().size());
        Set<Long> outside = new HashSet<>();
        forked.children().forEach(c -> outside.add(c.vmId()));
        var forkedEvents = all(events, VmEvent.Kind.FORKED, outside);
        for (VmInfo c : forked.children()) {
            assertEquals(c.vmId(), forkedEvents.get(c.vmId()).vm().vmId());
            assertEquals(VmOrigin.CHILD, c.origin());
            assertEquals(worker.vmId(), c.parentId());
            assertEquals(1, c.forkGeneration());
            assertEquals(5, c.vmType());
            assertEquals("vm=" + c.vmId() + " parent=" + worker.vmId() + " gen=1 host=22 type=5",
                    ask(api, c.vmId(), "id"));
        }
        // Each copy was placed by placement and admitted by the host.
        assertEquals(3, node.admission().vmCount());

        // The FORK hypercall: its copies' hosts come from placement, through the host.
        VmInfo forker = launchThroughPlacement(api, "forker", 6, 64L << 20);
        next(events, VmEvent.Kind.READY, forker.vmId());
        String r = ask(api, forker.vmId(), "fork 2");
        assertTrue(r.startsWith("parent launched=2 "), r);
        Set<Long> children = new HashSet<>();
        for (String id : r.replaceAll(".*ids=([0-9,]+).*", "$1").split(",")) {
            children.add(Long.parseLong(id));
        }
        for (VmEvent f : all(events, VmEvent.Kind.FORKED, children).values()) {
            assertEquals(forker.vmId(), f.vm().parentId());
            assertEquals(VmOrigin.CHILD, f.vm().origin());
        }
        assertEquals(6, node.admission().vmCount());

        List<VmInfo> all = await(api.list());
        assertEquals(6, all.size(), all.toString());
        long booted = all.stream().filter(v -> v.origin() == VmOrigin.BOOTED).count();
        assertEquals(2, booted);
        for (VmInfo v : all) {
            if (children.contains(v.vmId())) {
                assertEquals(forker.vmId(), v.parentId());
                assertEquals(VmOrigin.CHILD, v.origin());
                assertEquals(1, v.forkGeneration());
            }
        }
        for (VmInfo v : all) {
            await(api.stop(v.vmId()));
        }
        assertEquals(List.of(), await(api.list()));
        awaitAdmitted(node, 0);
    }

    @Test
    void aFullHostRefusesClearlyAndKeepsServing() throws Exception {
        VmforkNode node = start(23, "vmfork.node.capacity.vm-slots = 2");
        VmCluster api = node.cluster();
        VmInfo a = await(api.launchOn(23, "warm-worker", 0, 256L << 20));
        VmInfo b = await(api.launchOn(23, "warm-worker", 0, 256L << 20));
        VmClusterException full = failure(api.launchOn(23, "warm-worker", 0, 256L << 20));
        assertEquals(ErrorCode.HOST_FULL, full.code());
        assertTrue(full.getMessage().contains("2 of 2 VM slots"), full.getMessage());
        // A fork past capacity: its copies are refused, not launched.
        HostActor.Forked forked = await(api.fork(a.vmId(), 1, -1));
        assertEquals(List.of(), forked.children());
        assertEquals(List.of("ELIMIT"), forked.errors());
        // The host keeps serving, and a stopped VM frees its slot.
        assertTrue(ask(api, a.vmId(), "get 2").startsWith("2 "));
        await(api.stop(b.vmId()));
        VmInfo c = await(api.launchOn(23, "warm-worker", 0, 256L << 20));
        assertTrue(ask(api, c.vmId(), "get 3").startsWith("3 "));
        assertEquals(2, node.admission().vmCount());
    }

    @Test
    void unknownStoppedAndMissingThingsAreClearErrors() throws Exception {
        VmforkNode node = start(24, "");
        VmCluster api = node.cluster();
        long unknown = (24L << 40) | 12345;
        VmClusterException e = failure(api.request(unknown, new byte[] {1}));
        assertEquals(ErrorCode.UNKNOWN_VM, e.code());
        assertTrue(e.getMessage().contains("no VM " + unknown + " on host 24"), e.getMessage());
        assertEquals(ErrorCode.UNKNOWN_VM, failure(api.stop(unknown)).code());
        assertEquals(ErrorCode.UNKNOWN_VM, failure(api.fork(unknown, 1, -1)).code());

        VmClusterException gone = failure(api.request((99L << 40) | 1, new byte[] {1}));
        assertEquals(ErrorCode.HOST_GONE, gone.code());
        assertTrue(gone.getMessage().contains("host 99 is not in the cluster"), gone.getMessage());
        assertEquals(ErrorCode.HOST_GONE, failure(api.launchOn(99, "hello", 0, 0)).code());

        VmClusterException missing = failure(api.launchOn(24, "no-such-guest", 0, 64L << 20));
        assertEquals(ErrorCode.IMAGE_NOT_FOUND, missing.code());
        assertTrue(missing.getMessage().contains("no-such-guest"), missing.getMessage());
        assertEquals(0, node.admission().vmCount());

        // A request to a VM that dies before it answers: VM_ENDED. Requests an actor sends
        // to a host reach the guest in the order sent, so "get 1" comes after "stop".
        VmInfo dying = await(api.launchOn(24, "warm-worker", 0, 256L << 20));
        TestProbe<HostActor.Reply> replies = ActorTestKit.create(node.system()).createTestProbe();
        node.host().tell(new HostActor.Request(dying.vmId(), "stop".getBytes(StandardCharsets.UTF_8),
                replies.getRef()));
        node.host().tell(new HostActor.Request(dying.vmId(), "get 1".getBytes(StandardCharsets.UTF_8),
                replies.getRef()));
        HostActor.Response bye = replies.expectMessageClass(HostActor.Response.class, WAIT);
        assertEquals("bye", new String(bye.payload(), StandardCharsets.UTF_8));
        HostActor.Failure ended = replies.expectMessageClass(HostActor.Failure.class, WAIT);
        assertEquals(ErrorCode.VM_ENDED, ended.code(), ended.message());
        assertTrue(ended.message().contains("exited with code 0"), ended.message());

        VmInfo w = await(api.launchOn(24, "warm-worker", 0, 256L << 20));
        assertNotNull(await(api.stop(w.vmId())));
        VmClusterException stopped = failure(api.request(w.vmId(), "get 1".getBytes(StandardCharsets.UTF_8)));
        assertEquals(ErrorCode.UNKNOWN_VM, stopped.code());
        assertEquals(ErrorCode.UNKNOWN_VM, failure(api.stop(w.vmId())).code());
        // The VM that exited by itself is released once the VMM has torn it down.
        awaitAdmitted(node, 0);
    }

    @Test
    void anotherNodesVmIsDrivenThroughThisNodeAndReportedLostWithItsHost() throws Exception {
        VmforkNode a = start(25, "");
        VmforkNode b = start(26, "vmfork.node.seed-nodes = [\"" + hostPort(a) + "\"]");
        VmCluster api = a.cluster();
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (!await(api.knowsHost(26))) {
            assertTrue(System.nanoTime() < deadline, "node a does not see host 26");
            Thread.sleep(50);
        }
        ActorTestKit kit = ActorTestKit.create(a.system());
        TestProbe<VmEvent> events = kit.createTestProbe();
        api.subscribe(events.getRef());
        Thread.sleep(500);

        // Launch, request and list cross the network (serialized with host.proto).
        VmInfo w = await(api.launchOn(26, "warm-worker", 4, 256L << 20));
        assertEquals(26, w.hostId());
        assertEquals(26, VmInfo.hostOf(w.vmId()));
        next(events, VmEvent.Kind.READY, w.vmId());
        assertEquals("vm=" + w.vmId() + " parent=0 gen=0 host=26 type=4", ask(api, w.vmId(), "id"));
        assertTrue(await(api.list()).stream().anyMatch(v -> v.vmId() == w.vmId() && v.hostId() == 26));
        assertEquals(1, b.vmm().liveCount());

        // Node b goes: its VM is reported lost to a's subscribers, and b's VMM is closed.
        b.system().terminate();
        b.whenTerminated().toCompletableFuture().get(30, TimeUnit.SECONDS);
        assertEquals(0, b.vmm().liveCount());
        VmEvent lost = next(events, VmEvent.Kind.LOST, w.vmId());
        assertEquals(26, lost.hostId());
        assertEquals(w.vmId(), lost.vm().vmId());
        assertEquals(ErrorCode.HOST_GONE, failure(api.request(w.vmId(), "id".getBytes(StandardCharsets.UTF_8))).code());
    }

    /**
     * The HostActor's fence: a node the cluster downs stops its VMs itself, before its
     * actor system has terminated, and its shutdown names the downing (vmfork node exits 75).
     */
    @Test
    void aNodeTheClusterDownsStopsItsVmsAtOnce() throws Exception {
        VmforkNode a = start(27, "");
        VmforkNode b = start(28, "vmfork.node.seed-nodes = [\"" + hostPort(a) + "\"]");
        VmCluster api = a.cluster();
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (!await(api.knowsHost(28))) {
            assertTrue(System.nanoTime() < deadline, "node a does not see host 28");
            Thread.sleep(50);
        }
        VmInfo vm = await(api.launchOn(28, "forker", 1, 64L << 20));
        assertEquals(28, vm.hostId());
        assertNotNull(b.vmm().vm(vm.vmId()), "b runs the VM"); // besides, maybe, its warm-up's VMs

        Cluster.get(a.system()).manager().tell(new org.apache.pekko.cluster.typed.Down(b.system().address()));
        deadline = System.nanoTime() + WAIT.toNanos();
        while (b.vmm().liveCount() > 0) {
            assertTrue(System.nanoTime() < deadline, "node b still runs its VM after it was downed");
            Thread.sleep(5);
        }
        // Stopped by the fence, not by the actor system's end: Artery's flush alone takes longer.
        assertTrue(!b.whenTerminated().toCompletableFuture().isDone(), "b's VM stopped only as b terminated");
        b.whenTerminated().toCompletableFuture().get(30, TimeUnit.SECONDS);
        assertTrue(VmforkNode.wasDowned(b.shutdownReason().orElseThrow()), b.shutdownReason().toString());
    }

    @Test
    void theReadmeExampleRuns() throws Exception {
        VmforkNode node = start(27, "");
        List<String> out = VmClusterExample.run(node.cluster(), 27);
        assertTrue(out.get(0).matches("launched \\d+ on host 27, get 7 -> 7 \\d+"), out.toString());
        assertEquals("forked 2 children", out.get(1));
        assertEquals(5, out.size(), out.toString());
        assertEquals(List.of(), await(node.cluster().list()));
    }
}
