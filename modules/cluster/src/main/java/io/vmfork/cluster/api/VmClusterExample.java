package io.vmfork.cluster.api;

import io.vmfork.cluster.host.HostActor;
import io.vmfork.cluster.node.VmforkNode;
import java.io.File;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * The README's example of the application API: starts a node from a configuration file
 * (e.g. conf/node-1.conf), launches warm-worker where placement puts it, asks it, forks it
 * into two copies from outside (placement places them), lists the cluster's VMs, stops
 * them and the node.
 *
 * <pre>
 * java -cp "modules/cli/target/classes:modules/cli/target/lib/*" \
 *     io.vmfork.cluster.api.VmClusterExample conf/node-1.conf
 * </pre>
 */
public final class VmClusterExample {
    private VmClusterExample() {
    }

    public static void main(String[] args) throws Exception {
        try (VmforkNode node = VmforkNode.start(VmforkNode.loadConfig(new File(args[0])))) {
            run(node.cluster(), node.settings().hostId()).forEach(System.out::println);
        }
    }

    /** The example's steps on {@code cluster}, whose node is host {@code hostId}; returns what it saw. */
    public static List<String> run(VmCluster cluster, long hostId) throws Exception {
        List<String> out = new ArrayList<>();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(60);
        while (!cluster.placementKnowsHost(hostId).toCompletableFuture().get()) {
            if (System.nanoTime() > deadline) { // e.g. its seed nodes are not up
                throw new IllegalStateException("host " + hostId + " is not placeable after 60 s: is its node up?");
            }
            Thread.sleep(50); // a node that just started takes a moment to be placeable
        }
        // Placement picks the host (launchOn(hostId, ...) names one).
        VmInfo worker = cluster.launch("warm-worker", 0, 256L << 20).toCompletableFuture().get();
        byte[] reply = cluster.request(worker.vmId(), "get 7".getBytes(StandardCharsets.UTF_8))
                .toCompletableFuture().get(30, TimeUnit.SECONDS);
        out.add("launched " + worker.vmId() + " on host " + worker.hostId() + ", get 7 -> "
                + new String(reply, StandardCharsets.UTF_8));
        HostActor.Forked forked = cluster.fork(worker.vmId(), 2, -1).toCompletableFuture().get();
        out.add("forked " + forked.children().size() + " children" + (forked.errors().isEmpty() ? ""
                : ", copies failed: " + forked.errors()));
        for (VmInfo vm : cluster.list().toCompletableFuture().get()) {
            out.add(vm.vmId() + " host=" + vm.hostId() + " " + vm.origin() + " gen=" + vm.forkGeneration()
                    + " parent=" + vm.parentId() + " " + vm.state());
            cluster.stop(vm.vmId()).toCompletableFuture().get();
        }
        return out;
    }
}
