package io.vmfork.cli;

import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.security.ClusterCredentials;
import io.vmfork.cluster.api.VmCluster;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.node.VmforkNode;
import io.vmfork.cluster.placement.PlacementEntity;
import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VirtualMachine.ForkRecord;
import io.vmfork.vmm.VmExit;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.guest.Guests;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.cluster.sharding.ShardRegion;
import org.apache.pekko.cluster.sharding.typed.GetShardRegionState;
import org.apache.pekko.cluster.sharding.typed.javadsl.ClusterSharding;
import org.apache.pekko.actor.typed.javadsl.AskPattern;

/**
 * {@code vmfork bench cluster}: what placement and the cluster API cost, on a cluster of
 * separate node JVMs on this machine ({@link LocalCluster}, two nodes) that this JVM joins
 * as a third node of its own: a real host ({@link VmforkNode} in-process, host
 * {@link #BENCH_HOST}) whose Vmm this benchmark reads.
 *
 * <ul>
 * <li>cluster.placement: one PlaceVm ask from this JVM to its answer, one at a time, to a
 *     placement entity that lives on another node (a vm_type chosen for that).
 * <li>cluster.placement_throughput: rounds of 1,000 concurrent PlaceVm asks to that
 *     entity; {@code per_s} is answers per second over all rounds, p50/p99 the single
 *     asks' latencies under that load.
 * <li>cluster.launch_remote: {@code VmCluster.launchOn} of {@code hello} on another node
 *     until its Launched reply reaches this JVM ({@code until = launched_reply}): the VM's
 *     first exit is only visible on its node, so the reply is the honest end point.
 * <li>cluster.fork_parent_blocked: a forker on this JVM's host node, asked "fork 1"
 *     through the API; per fork, the parent's pause (FORK exit to resume) as this node's
 *     Vmm recorded it, with placement (an ask to the remote entity) in the loop;
 *     {@code vmm_only_p50_ms}/{@code vmm_only_p99_ms}: the same pause of a forker on a
 *     plain Vmm (CopyPlacement.LOCAL) in the same run.
 * </ul>
 * Every figure is taken four times in one run, each time on a cluster of its own
 * ({@code pass} 1 to 4): over TLS with mutual authentication, Artery's and the capsule
 * transfers' as a node runs by default (throw-away credentials, as {@link LocalCluster}
 * makes them; {@code tls: true}), over plain TCP
 * twice ({@code tls: false}), and over TLS again; a {@code cluster.tls_cost} line per
 * figure gives the ratio of the means of its TLS and plain passes.
 */
final class ClusterBench {
    /** This JVM's host id; the node JVMs are hosts 2 and 3. */
    static final long BENCH_HOST = 1;
    private static final int NODES = 2;
    private static final int CONCURRENT = 1000;
    private static final int FORKER_TOUCH_MIB = 64;
    private static final long FORKER_MEMORY = (FORKER_TOUCH_MIB + 64L) << 20;
    private static final Duration TIMEOUT = Duration.ofSeconds(60);
    /**
     * Room for every reservation the benchmark makes (they expire after the reservation
     * timeout); local-first keeps a fork's copy on the forking host, as the VMM alone does.
     */
    static final String CONFIG = """
            vmfork.node.capacity { guest-memory = 1000 TiB, vm-slots = 10000000, vcpus = 10000000 }
            vmfork.node.placement.default-policy = local-first
            # The bench times every answer: a round of 1,000 asks at once on a loaded host
            # (TLS, two cores) may take longer than a caller's usual 2 s, which would end the
            # bench instead of showing in its figures.
            vmfork.node.placement.ask-timeout = 30s
            """;

    private final Vmm plainVmm;
    private final boolean json;
    private final int runs;
    /** Where the figures of the pass under way are kept, by bench name, and its number. */
    private Map<String, Map<String, Object>> figures;
    private int pass;

    private ClusterBench(Vmm plainVmm, boolean json, int runs) {
        this.plainVmm = plainVmm;
        this.json = json;
        this.runs = runs;
    }

    static void run(Vmm vmm, int runs, boolean json) {
        new ClusterBench(vmm, json, runs).run();
    }

    /**
     * The benchmarks four times, each on a cluster of its own, in the order TLS, plain TCP,
     * plain TCP, TLS (so that neither mode profits more from this JVM's warming up); then
     * the cost of TLS, one line per figure ({@code cluster.tls_cost}: each figure's mean over
     * its two TLS passes against the same over the plain ones, and their ratio).
     */
    private void run() {
        Map<Boolean, List<Map<String, Map<String, Object>>>> passes = new LinkedHashMap<>();
        passes.put(true, new ArrayList<>());
        passes.put(false, new ArrayList<>());
        int pass = 0;
        for (boolean tls : new boolean[] {true, false, false, true}) {
            Map<String, Map<String, Object>> figures = new LinkedHashMap<>();
            run(tls, ++pass, figures);
            passes.get(tls).add(figures);
        }
        Stats.tls = null;
        for (String bench : passes.get(true).get(0).keySet()) {
            Map<String, Object> cost = new LinkedHashMap<>();
            cost.put("bench", "cluster.tls_cost");
            cost.put("of", bench);
            for (String k : List.of("p50_ms", "p99_ms", "per_s")) {
                if (passes.get(true).get(0).get(bench).get(k) instanceof Double) {
                    double on = mean(passes.get(true), bench, k);
                    double off = mean(passes.get(false), bench, k);
                    String name = k.replace("_ms", "");
                    cost.put(name + "_tls", on);
                    cost.put(name + "_plain", off);
                    cost.put(name + "_ratio", on / off);
                }
            }
            print(cost);
        }
    }

    private static double mean(List<Map<String, Map<String, Object>>> passes, String bench, String key) {
        double sum = 0;
        for (Map<String, Map<String, Object>> p : passes) {
            sum += (Double) p.get(bench).get(key);
        }
        return sum / passes.size();
    }

    private void run(boolean tls, int pass, Map<String, Map<String, Object>> figures) {
        Stats.tls = tls;
        this.pass = pass;
        this.figures = figures;
        try (LocalCluster cluster = LocalCluster.start(tls, NODES, BENCH_HOST + 1, CONFIG, Duration.ofSeconds(60))) {
            try {
                VmforkNode node = joinAsHost(cluster, BENCH_HOST, CONFIG);
                try {
                    benchmarks(node, cluster);
                } finally {
                    node.close();
                }
            } catch (RuntimeException | Error e) {
                cluster.keepLogs();
                throw e;
            }
        }
    }

    /** This JVM joins {@code cluster} as host {@code hostId}, a node of its own; returns once placement knows every host. */
    static VmforkNode joinAsHost(LocalCluster cluster, long hostId, String extraConfig) {
        String config = "vmfork.host { id = " + hostId + ", name = \"bench\" }\n"
                + "vmfork.node { hostname = \"127.0.0.1\", port = " + LocalCluster.freePort()
                + ", seed-nodes = [\"" + cluster.seed() + "\"] }\n"
                + cluster.memberCredentials("bench", ClusterCredentials.Role.NODE) + LocalCluster.NODE_DEFAULTS
                + extraConfig;
        VmforkNode node = VmforkNode.start(ConfigFactory.load(ConfigFactory.parseString(config)));
        try {
            long deadline = System.nanoTime() + TIMEOUT.toNanos();
            List<Long> hosts = new ArrayList<>(List.of(hostId));
            cluster.nodes().forEach(n -> hosts.add(n.hostId()));
            for (long h : hosts) {
                while (!join(node.cluster().placementKnowsHost(h))) {
                    if (System.nanoTime() > deadline) {
                        throw new IllegalStateException("placement does not know host " + h + " within " + TIMEOUT);
                    }
                    sleep(100);
                }
            }
            return node;
        } catch (RuntimeException e) {
            node.close();
            throw e;
        }
    }

    private void benchmarks(VmforkNode node, LocalCluster cluster) {
        int vmType = remoteEntityType(node);
        placement(node, vmType);
        throughput(node, vmType);
        launchRemote(node.cluster(), cluster.nodes().get(0).hostId());
        forkParentBlocked(node, vmType);
    }

    private void print(Map<String, Object> fields) {
        if (figures != null && Stats.tls != null) {
            fields.put("pass", pass);
            figures.put((String) fields.get("bench"), fields);
        }
        System.out.println(json ? Stats.json(fields) : Stats.text(fields));
        System.out.flush();
    }

    // ---- placement ----------------------------------------------------------------------

    /** A vm_type whose placement entity lives on another node than this JVM's. */
    private static int remoteEntityType(VmforkNode node) {
        for (int t = 0; t < 64; t++) {
            placeFirst(node, t);
            if (!localEntityIds(node).contains(PlacementEntity.entityId(t))) {
                return t;
            }
        }
        throw new IllegalStateException("every placement entity of vm_types 0..63 lives on this JVM's node");
    }

    private static java.util.Set<String> localEntityIds(VmforkNode node) {
        ShardRegion.CurrentShardRegionState state = join(AskPattern.<org.apache.pekko.cluster.sharding.typed.ClusterShardingQuery,
                        ShardRegion.CurrentShardRegionState>ask(ClusterSharding.get(node.system()).shardState(),
                r -> new GetShardRegionState(PlacementEntity.TYPE_KEY, r), TIMEOUT, node.system().scheduler()));
        java.util.Set<String> ids = new java.util.HashSet<>();
        for (ShardRegion.ShardState s : state.getShards()) {
            ids.addAll(s.getEntityIds());
        }
        return ids;
    }

    /**
     * The first PlaceVm ask of a vm_type, which starts its entity (a shard allocated, the
     * entity's subscription to the load reports): on a loaded host that can take longer
     * than the ask timeout, so a timed-out ask is repeated until {@link #TIMEOUT}.
     */
    private static void placeFirst(VmforkNode node, int vmType) {
        long deadline = System.nanoTime() + TIMEOUT.toNanos();
        while (true) {
            try {
                place(node, vmType, 1);
                return;
            } catch (java.util.concurrent.CompletionException e) {
                if (!(e.getCause() instanceof org.apache.pekko.pattern.AskTimeoutException)
                        || System.nanoTime() > deadline) {
                    throw e;
                }
            }
        }
    }

    /** One PlaceVm ask of 1 MiB; fails unless it placed. */
    private static double place(VmforkNode node, int vmType, int unused) {
        long t0 = System.nanoTime();
        PlacementEntity.Reply r = join(node.placement().placeVm(vmType, 1L << 20, 1));
        long t1 = System.nanoTime();
        expectPlaced(r);
        return (t1 - t0) / 1e6;
    }

    private static void expectPlaced(PlacementEntity.Reply r) {
        if (!(r instanceof PlacementEntity.Placed p) || p.slots().isEmpty()) {
            throw new IllegalStateException("placement did not place: " + r);
        }
    }

    private void placement(VmforkNode node, int vmType) {
        for (int i = 0; i < 200; i++) {
            place(node, vmType, 0);
        }
        int n = Math.max(runs, 10) * 5;
        double[] ms = new double[n];
        for (int i = 0; i < n; i++) {
            ms[i] = place(node, vmType, 0);
        }
        print(new Stats(ms).fields("cluster.placement", ordered("vm_type", vmType, "entity", "remote")));
    }

    private void throughput(VmforkNode node, int vmType) {
        int rounds = Math.max(2, Math.min(10, runs / 20));
        round(node, vmType); // warm-up
        double[] all = new double[rounds * CONCURRENT];
        long elapsed = 0;
        for (int r = 0; r < rounds; r++) {
            long t0 = System.nanoTime();
            double[] ms = round(node, vmType);
            elapsed += System.nanoTime() - t0;
            System.arraycopy(ms, 0, all, r * CONCURRENT, CONCURRENT);
        }
        Map<String, Object> extra = new LinkedHashMap<>();
        extra.put("per_s", all.length / (elapsed / 1e9));
        extra.put("concurrent", CONCURRENT);
        extra.put("rounds", rounds);
        extra.put("vm_type", vmType);
        print(new Stats(all).fields("cluster.placement_throughput", extra));
    }

    /** 1,000 asks at once; each one's latency. */
    private static double[] round(VmforkNode node, int vmType) {
        double[] ms = new double[CONCURRENT];
        List<CompletableFuture<Void>> all = new ArrayList<>(CONCURRENT);
        for (int i = 0; i < CONCURRENT; i++) {
            int k = i;
            long t0 = System.nanoTime();
            all.add(node.placement().placeVm(vmType, 1L << 20, 1).toCompletableFuture().thenAccept(r -> {
                ms[k] = (System.nanoTime() - t0) / 1e6;
                expectPlaced(r);
            }));
        }
        CompletableFuture.allOf(all.toArray(CompletableFuture[]::new)).orTimeout(60, TimeUnit.SECONDS).join();
        return ms;
    }

    // ---- launch_remote ---------------------------------------------------------------

    private void launchRemote(VmCluster api, long remoteHost) {
        int warmup = 5;
        int n = Math.max(5, runs / 4);
        double[] ms = new double[n];
        for (int i = 0; i < warmup + n; i++) {
            long t0 = System.nanoTime();
            VmInfo vm = join(api.launchOn(remoteHost, "hello", 0, 0));
            long t1 = System.nanoTime();
            if (vm.hostId() != remoteHost) {
                throw new IllegalStateException("hello launched on host " + vm.hostId() + ", not " + remoteHost);
            }
            if (i >= warmup) {
                ms[i - warmup] = (t1 - t0) / 1e6;
            }
        }
        print(new Stats(ms).fields("cluster.launch_remote",
                ordered("guest", "hello", "host", remoteHost, "until", "launched_reply")));
    }

    // ---- fork_parent_blocked ------------------------------------------------------------

    private void forkParentBlocked(VmforkNode node, int vmType) {
        int warmup = 10;
        int n = Math.max(10, runs / 2);
        VmCluster api = node.cluster();
        VmInfo parent = join(api.launchOn(BENCH_HOST, "forker", vmType, FORKER_MEMORY));
        double[] withPlacement = new double[n];
        try {
            expect(join(api.request(parent.vmId(), bytes("touch " + FORKER_TOUCH_MIB))), "touched " + FORKER_TOUCH_MIB);
            VirtualMachine vm = node.vmm().vm(parent.vmId());
            for (int i = 0; i < warmup + n; i++) {
                ForkRecord previous = vm.lastFork();
                String reply = text(join(api.request(parent.vmId(), bytes("fork 1 " + vmType))));
                ForkRecord rec = vm.lastFork();
                long child = childOf(reply, rec, previous);
                // Stopped by the host, not by "stop": the host would take the child's
                // announcement for its reply.
                join(api.stop(child));
                if (i >= warmup) {
                    withPlacement[i - warmup] = (rec.resumedNanos() - rec.exitNanos()) / 1e6;
                }
            }
        } finally {
            join(api.stop(parent.vmId()));
        }

        double[] vmmOnly = new double[n];
        VirtualMachine p = plainVmm.launch(VmSpec.of(Guests.shipped("forker"), FORKER_MEMORY));
        try {
            expect(await(p.channel().request(bytes("touch " + FORKER_TOUCH_MIB))), "touched " + FORKER_TOUCH_MIB);
            for (int i = 0; i < warmup + n; i++) {
                ForkRecord previous = p.lastFork();
                String reply = text(await(p.channel().request(bytes("fork 1 " + vmType))));
                ForkRecord rec = p.lastFork();
                childOf(reply, rec, previous);
                VirtualMachine c = rec.children().get(0);
                c.stop();
                c.awaitTermination(TIMEOUT);
                if (i >= warmup) {
                    vmmOnly[i - warmup] = (rec.resumedNanos() - rec.exitNanos()) / 1e6;
                }
            }
        } finally {
            for (VirtualMachine c : p.children()) {
                c.stop();
            }
            p.stop();
        }
        Stats only = new Stats(vmmOnly);
        Map<String, Object> extra = new LinkedHashMap<>();
        extra.put("vmm_only_p50_ms", only.median());
        extra.put("vmm_only_p99_ms", only.percentile(99));
        extra.put("guest", "forker");
        extra.put("memory_mib", FORKER_TOUCH_MIB);
        extra.put("vm_type", vmType);
        extra.put("entity", "remote");
        print(new Stats(withPlacement).fields("cluster.fork_parent_blocked", extra));
    }

    /** The one child id of a "parent launched=1 ids=ID errs=0" reply, checked against the new record. */
    private static long childOf(String reply, ForkRecord rec, ForkRecord previous) {
        if (rec == null || rec == previous || rec.children().size() != 1 || !reply.startsWith("parent launched=1 ids=")
                || !reply.endsWith(" errs=0")) {
            throw new IllegalStateException("fork 1 failed: '" + reply + "'");
        }
        long id = Long.parseLong(reply.substring("parent launched=1 ids=".length(), reply.length() - " errs=0".length()));
        if (id != rec.children().get(0).id()) {
            throw new IllegalStateException("forker reports child " + id + " but the VMM launched "
                    + rec.children().get(0).id());
        }
        return id;
    }

    /** Extra fields in the order given: key, value, key, value, ... */
    private static Map<String, Object> ordered(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return m;
    }

    private static void expect(byte[] got, String want) {
        if (!text(got).equals(want)) {
            throw new IllegalStateException("expected '" + want + "', got '" + text(got) + "'");
        }
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String text(byte[] b) {
        return new String(b, StandardCharsets.UTF_8);
    }

    private static byte[] await(CompletableFuture<byte[]> f) {
        return f.orTimeout(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS).join();
    }

    private static <T> T join(CompletionStage<T> stage) {
        return stage.toCompletableFuture().orTimeout(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS).join();
    }

    private static void sleep(long ms) {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted", e);
        }
    }
}
