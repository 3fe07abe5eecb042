package io.vmfork.cli;

import io.vmfork.cluster.transfer.TransferServer;
import io.vmfork.cluster.transfer.TransferSettings;
import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.Socket;
import java.time.Duration;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.pekko.actor.AbstractActor;
import org.apache.pekko.actor.ActorRef;
import org.apache.pekko.actor.ActorSystem;
import org.apache.pekko.actor.Props;
import org.apache.pekko.actor.typed.javadsl.Adapter;
import org.apache.pekko.cluster.Cluster;
import org.apache.pekko.stream.Materializer;
import org.apache.pekko.stream.SourceRef;
import org.apache.pekko.stream.javadsl.Sink;

/**
 * {@code vmfork bench transfer}: moving a capsule's bulk bytes between two JVM processes on
 * loopback, this JVM receiving, a {@link TransferPeer} JVM sending. For each size (64 MiB and
 * 1 GiB by default) and method, unmeasured runs (512 MiB, at least one) then {@code --runs}; one run is from the
 * command to the sender until this side has all the bytes and knows the transfer complete:
 * <ul>
 * <li>transfer.tcp_floor: a plain blocking java.net socket, read to its end ({@link TcpFloor}).
 * <li>transfer.streams_tcp: {@code io.vmfork.cluster.transfer} (Pekko Streams TCP, framed),
 *     until the Receiver's stream returned -1 (the END frame arrived and its count matched).
 * <li>transfer.stream_refs: a Pekko {@link SourceRef} of 128 KiB ByteStrings between the two
 *     actor systems, members of one cluster (Artery TCP), until the stream completed here.
 * </ul>
 * Both JVMs run with Pekko's TCP read buffer ({@code pekko.io.tcp.direct-buffer-size}) at
 * {@code --direct-buffer} (1 MiB by default). Then, unless {@code --kill off}, for each method a 1 GiB transfer whose sender is killed with
 * SIGKILL after 256 MiB arrived: {@code transfer.METHOD.sender_killed} says what this side saw
 * ({@code outcome}), after how many bytes, and how long after the kill ({@code detect_ms};
 * a stream ref is given at most 60 s).
 */
final class TransferBench {
    private static final Duration START = Duration.ofSeconds(60);
    private static final Duration RUN = Duration.ofMinutes(5);
    private static final Duration KILL_WAIT = Duration.ofSeconds(60);
    private static final long KILL_SIZE = 1L << 30;
    private static final long KILL_AFTER = 256L << 20;
    /**
     * Pekko's TCP read buffer in both JVMs ({@code --direct-buffer}); Pekko's default is
     * 128 KiB, with which streams_tcp is slower (docs/transfer.md).
     */
    static final String DIRECT_BUFFER = "1MiB";
    /** Unmeasured runs of a size until at least this much moved (one run at least). */
    private static final long WARM_UP_BYTES = 512L << 20;

    /** One transfer as this side sees it. */
    static final class Run {
        final CompletableFuture<Throwable> end = new CompletableFuture<>(); // null: a clean end
        final long killAt;
        final AtomicBoolean killed = new AtomicBoolean();
        volatile Runnable killer;
        volatile long bytes;
        volatile long endNanos;
        volatile long killedNanos;

        Run(long killAt) {
            this.killAt = killAt;
        }

        void progress(long total) {
            bytes = total;
            if (total >= killAt && killed.compareAndSet(false, true)) {
                CompletableFuture.runAsync(() -> {
                    killedNanos = System.nanoTime(); // the SIGKILL is sent next
                    killer.run();
                });
            }
        }

        void finish(Throwable error) {
            endNanos = System.nanoTime();
            end.complete(error);
        }
    }

    private final boolean json;
    private final ActorSystem system;
    private final TransferServer server;
    private final ActorRef refReceiver;
    private final String refPath;
    private final String seed;
    private volatile Run current;
    private PeerProcess peer;
    private String directBuffer;

    private TransferBench(boolean json, ActorSystem system) throws Exception {
        this.json = json;
        this.system = system;
        TransferSettings settings = TransferSettings.fromConfig(system.settings().config());
        this.server = TransferServer.bind(Adapter.toTyped(system), "127.0.0.1", 0, settings, this::receive)
                .toCompletableFuture().get(30, TimeUnit.SECONDS);
        Materializer mat = Materializer.matFromSystem(system);
        this.refReceiver = system.actorOf(Props.create(RefReceiver.class, () -> new RefReceiver(this, mat)), "receiver");
        this.seed = Cluster.get(system).selfAddress().toString();
        this.refPath = refReceiver.path().toStringWithAddress(Cluster.get(system).selfAddress());
    }

    /** {@code sizes} in MiB; {@code directBuffer} a size that {@code pekko.io.tcp.direct-buffer-size} takes. */
    static void run(int runs, List<Long> sizes, boolean kill, String directBuffer, boolean json) {
        ActorSystem system = ActorSystem.create(TransferPeer.SYSTEM, com.typesafe.config.ConfigFactory.parseString(
                "pekko.io.tcp.direct-buffer-size = " + directBuffer).withFallback(TransferPeer.systemConfig()));
        Cluster.get(system).join(Cluster.get(system).selfAddress());
        TransferBench b = null;
        try {
            b = new TransferBench(json, system);
            b.directBuffer = directBuffer;
            b.peer = PeerProcess.start(b.seed, directBuffer, START);
            b.all(sizes, runs, kill);
        } catch (Exception e) {
            throw new IllegalStateException("bench transfer: " + e.getMessage(), e);
        } finally {
            if (b != null) {
                if (b.peer != null) {
                    b.peer.close();
                }
                b.server.close();
            }
            system.terminate();
            try {
                system.getWhenTerminated().toCompletableFuture().get(30, TimeUnit.SECONDS);
            } catch (Exception e) {
                System.err.println("vmfork: the bench's actor system did not stop: " + e);
            }
        }
    }

    private void all(List<Long> sizes, int runs, boolean kill) throws Exception {
        for (long mib : sizes) {
            measure("transfer.tcp_floor", mib, runs, this::floorOnce);
            measure("transfer.streams_tcp", mib, runs, bytes -> pekkoOnce("streams", bytes));
            measure("transfer.stream_refs", mib, runs, bytes -> pekkoOnce("refs", bytes));
        }
        if (kill) {
            for (String m : List.of("tcp_floor", "streams_tcp", "stream_refs")) {
                killRun(m);
            }
        }
    }

    private interface Once {
        double run(long bytes) throws Exception;
    }

    private void measure(String bench, long mib, int runs, Once once) throws Exception {
        long bytes = mib << 20;
        for (long warm = 0; warm < WARM_UP_BYTES; warm += bytes) {
            once.run(bytes); // the JIT and both processes' buffers settle
        }
        double[] ms = new double[runs];
        for (int i = 0; i < runs; i++) {
            ms[i] = once.run(bytes);
        }
        Stats st = new Stats(ms);
        Map<String, Object> f = new LinkedHashMap<>();
        f.put("bench", bench);
        f.put("memory_mib", mib);
        f.put("n", st.n());
        f.put("p50_ms", st.median());
        f.put("p99_ms", st.percentile(99));
        f.put("mib_s", mib / (st.median() / 1000));
        print(f);
    }

    private double floorOnce(long bytes) throws Exception {
        Run r = new Run(Long.MAX_VALUE);
        long t0 = System.nanoTime();
        try (TcpFloorReceiver recv = new TcpFloorReceiver()) {
            peer.command("floor " + recv.port() + " " + bytes);
            recv.receive(r);
        }
        double ms = (r.endNanos - t0) / 1e6;
        peer.expect("ok", RUN);
        check(r, bytes);
        return ms;
    }

    private double pekkoOnce(String method, long bytes) throws Exception {
        Run r = new Run(Long.MAX_VALUE);
        current = r;
        long t0 = System.nanoTime();
        peer.command(method + " " + (method.equals("refs") ? refPath : Integer.toString(server.address().getPort()))
                + " " + bytes);
        r.end.get(RUN.toMillis(), TimeUnit.MILLISECONDS);
        double ms = (r.endNanos - t0) / 1e6;
        peer.expect("ok", RUN);
        check(r, bytes);
        return ms;
    }

    private static void check(Run r, long bytes) throws Exception {
        Throwable e = r.end.get();
        if (e != null || r.bytes != bytes) {
            throw new IllegalStateException("received " + r.bytes + " of " + bytes + " bytes"
                    + (e == null ? "" : ": " + e), e);
        }
    }

    private void killRun(String method) throws Exception {
        Run r = new Run(KILL_AFTER);
        PeerProcess victim = peer;
        r.killer = victim::kill;
        current = r;
        long t0 = System.nanoTime();
        switch (method) {
            case "tcp_floor" -> {
                try (TcpFloorReceiver recv = new TcpFloorReceiver()) {
                    victim.command("floor " + recv.port() + " " + KILL_SIZE);
                    recv.receive(r);
                }
            }
            case "streams_tcp" -> victim.command("streams " + server.address().getPort() + " " + KILL_SIZE);
            default -> victim.command("refs " + refPath + " " + KILL_SIZE);
        }
        String outcome;
        try {
            Throwable e = r.end.get(KILL_WAIT.toMillis() + (System.nanoTime() - t0) / 1_000_000, TimeUnit.MILLISECONDS);
            outcome = e == null ? "clean end of stream after " + r.bytes + " of " + KILL_SIZE + " bytes"
                    : e.getClass().getSimpleName() + ": " + e.getMessage();
        } catch (TimeoutException e) {
            r.endNanos = System.nanoTime();
            outcome = "no outcome within " + KILL_WAIT.toSeconds() + " s of the kill";
        }
        while (r.killedNanos == 0) {
            Thread.sleep(10);
        }
        Map<String, Object> f = new LinkedHashMap<>();
        f.put("bench", "transfer." + method + ".sender_killed");
        f.put("memory_mib", KILL_SIZE >> 20);
        f.put("killed_after_mib", KILL_AFTER >> 20);
        f.put("received_mib", r.bytes >> 20);
        f.put("detect_ms", Math.max(0, (r.endNanos - r.killedNanos) / 1e6));
        f.put("outcome", outcome);
        print(f);
        if (!method.equals("stream_refs")) { // the last: the cluster still has the dead member
            peer = PeerProcess.start(seed, directBuffer, START);
        }
    }

    /** TransferServer's Receiver: reads to the end, counting. */
    private byte[] receive(byte[] opening, InputStream in) throws IOException {
        Run r = current;
        byte[] buf = new byte[TransferPeer.BUFFER];
        long n = 0;
        try {
            int k;
            while ((k = in.read(buf)) >= 0) {
                n += k;
                r.progress(n);
            }
        } catch (IOException e) {
            r.finish(e);
            throw e;
        }
        r.finish(null);
        return new byte[] {1};
    }

    /** The stream refs' receiving actor: runs each SourceRef it is sent to its end. */
    static final class RefReceiver extends AbstractActor {
        private final TransferBench bench;
        private final Materializer mat;

        RefReceiver(TransferBench bench, Materializer mat) {
            this.bench = bench;
            this.mat = mat;
        }

        @Override
        public Receive createReceive() {
            return receiveBuilder().match(SourceRef.class, this::onRef).build();
        }

        @SuppressWarnings("unchecked")
        private void onRef(SourceRef<?> ref) {
            Run r = bench.current;
            long[] n = {0};
            ((SourceRef<org.apache.pekko.util.ByteString>) ref).getSource()
                    .map(bs -> {
                        n[0] += bs.size();
                        r.progress(n[0]);
                        return bs;
                    })
                    .runWith(Sink.ignore(), mat)
                    .whenComplete((done, e) -> r.finish(e));
        }
    }

    /** One floor connection's receiving end (a fresh listening socket per run). */
    private static final class TcpFloorReceiver implements AutoCloseable {
        private final java.net.ServerSocket server;

        TcpFloorReceiver() throws IOException {
            server = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress());
        }

        int port() {
            return server.getLocalPort();
        }

        void receive(Run r) throws IOException {
            try (Socket s = server.accept()) {
                s.setSoTimeout((int) RUN.toMillis());
                byte[] buf = new byte[TransferPeer.BUFFER];
                long n = 0;
                InputStream in = s.getInputStream();
                try {
                    int k;
                    while ((k = in.read(buf)) >= 0) {
                        n += k;
                        r.progress(n);
                    }
                } catch (IOException e) {
                    r.finish(e);
                    return;
                }
                r.finish(null);
                try {
                    s.getOutputStream().write(1);
                } catch (IOException e) {
                    // the sender is gone (the kill run): nothing to acknowledge
                }
            }
        }

        @Override
        public void close() throws IOException {
            server.close();
        }
    }

    private void print(Map<String, Object> fields) {
        System.out.println(json ? Stats.json(fields) : Stats.text(fields));
        System.out.flush();
    }
}
