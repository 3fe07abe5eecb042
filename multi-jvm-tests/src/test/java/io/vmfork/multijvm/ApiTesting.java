package io.vmfork.multijvm;

import static io.vmfork.multijvm.TestCluster.awaitStatus;
import static io.vmfork.multijvm.TestCluster.exactlyUp;
import static io.vmfork.multijvm.TestCluster.reported;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.vmfork.cluster.api.VmCluster;
import io.vmfork.cluster.api.VmClusterException;
import io.vmfork.cluster.api.VmEvent;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.typed.Props;
import org.apache.pekko.actor.typed.javadsl.Behaviors;

/** What the multi-JVM tests do through the application API from the test JVM. */
final class ApiTesting {
    /** How long a cluster may take to form and a test JVM's placement to know every host. */
    static final Duration FORM = Duration.ofSeconds(60);
    /** How long one API call may take. */
    static final Duration WAIT = Duration.ofSeconds(60);

    private ApiTesting() {
    }

    /**
     * The test JVM joins through the first of {@code nodes} with {@code config}, and waits
     * until placement from it can choose every one of them.
     */
    static ClientMember joinClient(TestCluster cluster, List<NodeProcess> nodes, String config) throws Exception {
        ClientMember client = cluster.joinAsClient(nodes.get(0), config);
        awaitStatus(nodes, exactlyUp(nodes, 1).and(reported(nodes)), FORM,
                "the nodes and the test JVM Up, the hosts' loads reported");
        client.awaitUpWithReports(nodes.size(), FORM);
        for (NodeProcess n : nodes) {
            awaitPlaceable(client, n);
        }
        return client;
    }

    /** Waits until the test JVM's placement can choose {@code n}. */
    static void awaitPlaceable(ClientMember client, NodeProcess n) throws Exception {
        long deadline = System.nanoTime() + FORM.toNanos();
        while (!await(client.cluster().placementKnowsHost(n.hostId()))) {
            assertTrue(System.nanoTime() < deadline, "the test JVM's placement does not know " + n);
            Thread.sleep(100);
        }
    }

    /** The lifecycle events the client's view passes on, in a queue. */
    static BlockingQueue<VmEvent> subscribe(ClientMember client) {
        BlockingQueue<VmEvent> q = new LinkedBlockingQueue<>();
        client.cluster().subscribe(client.system().systemActorOf(Behaviors.receive(VmEvent.class)
                .onAnyMessage(e -> {
                    q.add(e);
                    return Behaviors.same();
                }).build(), "events-" + UUID.randomUUID(), Props.empty()));
        return q;
    }

    /** Waits for an event of {@code kind} of each of {@code vmIds}. */
    static Map<Long, VmEvent> events(BlockingQueue<VmEvent> q, VmEvent.Kind kind, Set<Long> vmIds, Duration within)
            throws InterruptedException {
        Map<Long, VmEvent> seen = new HashMap<>();
        List<VmEvent> other = new ArrayList<>();
        long deadline = System.nanoTime() + within.toNanos();
        while (seen.size() < vmIds.size()) {
            VmEvent e = q.poll(Math.max(1, deadline - System.nanoTime()), TimeUnit.NANOSECONDS);
            if (e == null) {
                fail("no " + kind + " events of " + vmIds + " within " + within + "; got " + seen.keySet()
                        + ", other events: " + other);
            }
            if (e.kind() == kind && vmIds.contains(e.vmId())) {
                seen.put(e.vmId(), e);
            } else {
                other.add(e);
            }
        }
        return seen;
    }

    static <T> T await(CompletionStage<T> stage) throws Exception {
        return stage.toCompletableFuture().get(WAIT.toSeconds(), TimeUnit.SECONDS);
    }

    static VmClusterException failure(CompletionStage<?> stage) throws Exception {
        try {
            Object v = stage.toCompletableFuture().get(WAIT.toSeconds(), TimeUnit.SECONDS);
            return fail("expected a failure, got " + v);
        } catch (ExecutionException e) {
            return assertInstanceOf(VmClusterException.class, e.getCause(), e.toString());
        }
    }

    /** A request to a VM, as text. */
    static String ask(VmCluster api, long vmId, String request) throws Exception {
        return new String(await(api.request(vmId, request.getBytes(StandardCharsets.UTF_8))), StandardCharsets.UTF_8);
    }
}
