package io.vmfork.cli;

import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.api.VmCluster;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.node.VmforkNode;
import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VirtualMachine.ForkRecord;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code vmfork bench clone}: remote clones between separate node JVMs on this machine
 * ({@link LocalCluster}, hosts 2 and 3) and this JVM, which joins as host 1 and runs the
 * parents, so that it reads their fork records. Times are CLOCK_MONOTONIC readings, which
 * every process on this machine shares: the FORK exit as the parent's VMM recorded it, and
 * the clone's first instruction as the clone itself read it (forker's "rfork" children read
 * CLOCK first thing after FORK returns and answer it to "born"). The parents fork
 * with VMF_FORK_REMOTE and wait in FORK_STATUS until their remote copies started.
 *
 * <ul>
 * <li>clone.tcp_floor: the capsule's bytes over a plain loopback TCP socket between two
 *     processes ({@link TcpFloor}), per size.
 * <li>clone.remote: a new forker with {@code memory_mib} of incompressible memory (filled
 *     with random data) forks one copy that placement puts on another node (a full
 *     capsule); FORK exit to the clone's first instruction; {@code ratio} to
 *     clone.tcp_floor of that size.
 * <li>clone.parent_blocked: the parent's pause (FORK exit to resume) in those forks: its
 *     first fork after writing all its memory.
 * <li>clone.remote_incremental: after a first clone to each node, the parent rewrites
 *     1 MiB of its 64 and forks again: time as clone.remote, {@code bytes_sent} per fork.
 * <li>clone.fanout: 32 copies of a 64 MiB parent spread over 3 nodes in one FORK: from the
 *     FORK exit until the last copy ran its first instruction ({@code total_ms}, median).
 * </ul>
 */
final class CloneBench {
    static final long BENCH_HOST = 1;
    private static final int NODES = 2;
    private static final int REMOTE_TYPE = 21;
    private static final int FANOUT_TYPE = 22;
    private static final Duration TIMEOUT = Duration.ofSeconds(120);
    private static final Pattern PARENT = Pattern.compile(
            "parent launched=(\\d+) ids=([\\d,]+) errs=([-\\d,]+) now=([-\\d,]+) waited=([-\\d,:a-z]+)");
    static final String CONFIG = """
            vmfork.node.capacity { guest-memory = 64 GiB, vm-slots = 200, vcpus = 1000 }
            vmfork.node.placement.policies { 21 = least-loaded, 22 = spread }
            """;

    private final boolean json;
    private final int runs;

    private CloneBench(boolean json, int runs) {
        this.json = json;
        this.runs = runs;
    }

    static void run(int runs, boolean json) {
        new CloneBench(json, runs).run();
    }

    /**
     * Every figure as a node runs by default, Artery and the capsule transfers over TLS
     * ({@code tls: true}, {@code transfer_tls: true}), and the 64 MiB clone.remote with the
     * transfers over plain TCP too ({@code vmfork.transfer.tls = off}, {@code transfer_tls:
     * false}), in the same run: passes plain, TLS, TLS, plain, each on a cluster of its own,
     * the first TLS pass taking every figure, the others the 64 MiB clone.remote alone (so
     * that neither side profits more from this JVM's warming up); then a
     * {@code clone.tls_cost} line with the mean of each side's medians and their ratio
     * (issue 16's target: at most 1.2).
     */
    private void run() {
        Map<Boolean, List<Double>> medians = new LinkedHashMap<>();
        medians.put(true, new ArrayList<>());
        medians.put(false, new ArrayList<>());
        boolean all = true;
        for (boolean tls : new boolean[] {false, true, true, false}) {
            boolean every = tls && all;
            all &= !every;
            // Artery runs over TLS in every pass; the capsule transfers only in the TLS passes
            // (vmfork.transfer.tls, on by default: see reference.conf).
            String config = tls ? CONFIG : CONFIG + "\nvmfork.transfer.tls = off\n";
            try (LocalCluster cluster = LocalCluster.start(true, NODES, BENCH_HOST + 1, config, Duration.ofSeconds(60))) {
                Stats.tls = cluster.tls();
                if (System.getenv("VMFORK_KEEP_LOGS") != null) {
                    cluster.keepLogs();
                }
                try {
                    VmforkNode node = ClusterBench.joinAsHost(cluster, BENCH_HOST, config);
                    try {
                        medians.get(tls).add(every ? benchmarks(node) : remote(node, 64, runs).median());
                    } finally {
                        node.close();
                    }
                } catch (RuntimeException | Error e) {
                    cluster.keepLogs();
                    throw e;
                }
            }
        }
        Stats.tls = null;
        double on = medians.get(true).stream().mapToDouble(Double::doubleValue).average().orElseThrow();
        double off = medians.get(false).stream().mapToDouble(Double::doubleValue).average().orElseThrow();
        print(ordered("bench", "clone.tls_cost", "memory_mib", 64, "remote_p50_ms_tls", round(on),
                "remote_p50_ms_plain", round(off), "ratio", round(on / off), "target", 1.2,
                "passes", "plain, tls (every figure), tls, plain"));
    }

    /** Every figure; returns the 64 MiB clone.remote median. */
    private double benchmarks(VmforkNode node) {
        double remote64 = remote(node, 64, runs).median();
        remote(node, 1024, Math.max(5, runs / 4));
        incremental(node);
        fanout(node);
        return remote64;
    }

    private void print(Map<String, Object> fields) {
        System.out.println(json ? Stats.json(fields) : Stats.text(fields));
        System.out.flush();
    }

    // ---- clone.remote, clone.parent_blocked, clone.tcp_floor ----------------------------

    private Stats remote(VmforkNode node, int mib, int n) {
        VmCluster api = node.cluster();
        double[] remote = new double[n];
        double[] blocked = new double[n];
        long capsuleBytes = 0;
        int warmup = 2;
        for (int i = 0; i < warmup + n; i++) {
            // A new parent each time: its first capsule to any host is a full one.
            VmInfo parent = join(api.launchOn(BENCH_HOST, "forker", REMOTE_TYPE, (mib + 64L) << 20));
            try {
                expect(request(api, parent.vmId(), "fill " + mib), "filled " + mib);
                VirtualMachine vm = node.vmm().vm(parent.vmId());
                long sentBefore = node.cloneStats().bytesSent();
                Fork f = forkRemote(api, vm, parent.vmId(), 1, REMOTE_TYPE);
                capsuleBytes = node.cloneStats().bytesSent() - sentBefore;
                if (i >= warmup) {
                    remote[i - warmup] = (f.lastFirstInstruction() - f.record().exitNanos()) / 1e6;
                    blocked[i - warmup] = (f.record().resumedNanos() - f.record().exitNanos()) / 1e6;
                }
                f.stopClones(api);
            } finally {
                join(api.stop(parent.vmId()));
            }
        }
        Stats floor = TcpFloor.measure(capsuleBytes, Math.max(5, Math.min(n, 10)));
        print(floor.fields("clone.tcp_floor", ordered("memory_mib", mib, "bytes", capsuleBytes)));
        Stats r = new Stats(remote);
        print(r.fields("clone.remote", ordered("memory_mib", mib, "ratio", round(r.median() / floor.median()),
                "capsule_bytes", capsuleBytes, "guest", "forker", "until", "clone_first_instruction",
                // The node's transfers run over TLS when it has credentials, unless
                // vmfork.transfer.tls = off (docs/transfer.md).
                "transfer_tls", node.settings().security().transferTls())));
        print(new Stats(blocked).fields("clone.parent_blocked", ordered("memory_mib", mib,
                "state", "first_fork_after_touching")));
        return r;
    }

    // ---- clone.remote_incremental ---------------------------------------------------------

    private void incremental(VmforkNode node) {
        VmCluster api = node.cluster();
        int mib = 64;
        VmInfo parent = join(api.launchOn(BENCH_HOST, "forker", REMOTE_TYPE, (mib + 64L) << 20));
        try {
            expect(request(api, parent.vmId(), "fill " + mib), "filled " + mib);
            VirtualMachine vm = node.vmm().vm(parent.vmId());
            // A first (full) capsule to each node.
            for (int i = 0; i < 2 * NODES; i++) {
                forkRemote(api, vm, parent.vmId(), 1, REMOTE_TYPE).stopClones(api);
            }
            double[] ms = new double[runs];
            double[] sent = new double[runs];
            long deltas = node.cloneStats().deltasSent();
            for (int i = 0; i < runs; i++) {
                expect(request(api, parent.vmId(), "fill 1"), "filled 1");
                long before = node.cloneStats().bytesSent();
                Fork f = forkRemote(api, vm, parent.vmId(), 1, REMOTE_TYPE);
                sent[i] = node.cloneStats().bytesSent() - before;
                ms[i] = (f.lastFirstInstruction() - f.record().exitNanos()) / 1e6;
                f.stopClones(api);
            }
            deltas = node.cloneStats().deltasSent() - deltas;
            Stats s = new Stats(sent);
            print(new Stats(ms).fields("clone.remote_incremental", ordered("memory_mib", mib, "rewritten_mib", 1,
                    "bytes_sent", (long) s.median(), "bytes_sent_max", (long) s.percentile(100), "deltas", deltas)));
        } finally {
            join(api.stop(parent.vmId()));
        }
    }

    // ---- clone.fanout -------------------------------------------------------------------

    private void fanout(VmforkNode node) {
        VmCluster api = node.cluster();
        int mib = 64;
        int copies = 32;
        int n = Math.max(3, runs / 4);
        VmInfo parent = join(api.launchOn(BENCH_HOST, "forker", FANOUT_TYPE, (mib + 64L) << 20));
        try {
            expect(request(api, parent.vmId(), "fill " + mib), "filled " + mib);
            VirtualMachine vm = node.vmm().vm(parent.vmId());
            double[] total = new double[n];
            Map<Long, Integer> hosts = new LinkedHashMap<>();
            for (int i = 0; i < 1 + n; i++) {
                expect(request(api, parent.vmId(), "fill " + mib), "filled " + mib);
                Fork f = forkRemote(api, vm, parent.vmId(), copies, FANOUT_TYPE);
                if (i >= 1) {
                    total[i - 1] = (f.lastFirstInstruction() - f.record().exitNanos()) / 1e6;
                }
                hosts.clear();
                f.clones.forEach(c -> hosts.merge(VmInfo.hostOf(c), 1, Integer::sum));
                f.stopClones(api);
            }
            Stats s = new Stats(total);
            Map<String, Object> fields = s.fields("clone.fanout", ordered("copies", copies, "memory_mib", mib,
                    "hosts", hosts.toString()));
            fields.put("total_ms", s.median());
            print(fields);
        } finally {
            join(api.stop(parent.vmId()));
        }
    }

    // ---- one fork ------------------------------------------------------------------------

    /** A FORK hypercall and what it made: its record, the copies' ids, their first instructions. */
    private record Fork(ForkRecord record, List<Long> clones, long lastFirstInstruction) {
        void stopClones(VmCluster api) {
            for (long c : clones) {
                join(api.stop(c));
            }
        }
    }

    /**
     * Asks the parent to fork {@code count} copies, waits (FORK_STATUS) until every remote
     * one started, and collects each copy's first-instruction time from its announcement.
     */
    private static Fork forkRemote(VmCluster api, VirtualMachine vm, long parentId, int count, int vmType) {
        ForkRecord previous = vm.lastFork();
        String reply = request(api, parentId, "rfork " + count + " " + vmType);
        ForkRecord rec = vm.lastFork();
        Matcher m = PARENT.matcher(reply);
        if (!m.matches() || rec == null || rec == previous || Integer.parseInt(m.group(1)) != count) {
            throw new IllegalStateException("fork " + count + " failed: '" + reply + "'");
        }
        // Local copies: errs 0 and their id; remote ones: EINPROGRESS (-10), and after the
        // guest waited in FORK_STATUS, "0:<clone id>" once started.
        String[] ids = m.group(2).split(",");
        String[] errs = m.group(3).split(",");
        String[] waited = m.group(5).split(",");
        List<Long> all = new ArrayList<>();
        for (int i = 0; i < count; i++) {
            if (errs[i].equals("0")) {
                all.add(Long.parseLong(ids[i]));
            } else if (errs[i].equals("-10") && waited[i].startsWith("0:")) {
                all.add(Long.parseLong(waited[i].substring(2)));
            } else {
                throw new IllegalStateException("copy " + i + " failed: '" + reply + "'");
            }
        }
        long last = 0;
        for (long c : all) {
            // The copy's CLOCK reading right after FORK returned in it. Its announcement (sent
            // unsolicited, so dropped by the host unless a request is waiting) may come first.
            String a = request(api, c, "born");
            if (a.startsWith("child ")) {
                a = request(api, c, "born");
            }
            if (!a.startsWith("born=") || a.equals("born=0")) {
                throw new IllegalStateException("copy " + c + " answered '" + a + "' to born");
            }
            last = Math.max(last, Long.parseLong(a.substring("born=".length())));
        }
        return new Fork(rec, all, last);
    }

    // ---- helpers --------------------------------------------------------------------------

    private static Map<String, Object> ordered(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return m;
    }

    private static double round(double v) {
        return Math.round(v * 100) / 100.0;
    }

    private static String request(VmCluster api, long vmId, String text) {
        return new String(join(api.request(vmId, text.getBytes(StandardCharsets.UTF_8))), StandardCharsets.UTF_8);
    }

    private static void expect(String got, String want) {
        if (!got.equals(want)) {
            throw new IllegalStateException("expected '" + want + "', got '" + got + "'");
        }
    }

    private static <T> T join(CompletionStage<T> stage) {
        return stage.toCompletableFuture().orTimeout(TIMEOUT.toMillis(), TimeUnit.MILLISECONDS).join();
    }
}
