package io.vmfork.cli;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.transfer.TransferClient;
import io.vmfork.cluster.transfer.TransferSettings;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PrintStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.ActorRef;
import org.apache.pekko.actor.ActorSystem;
import org.apache.pekko.actor.AddressFromURIString;
import org.apache.pekko.cluster.Cluster;
import org.apache.pekko.actor.typed.javadsl.Adapter;
import org.apache.pekko.stream.Materializer;
import org.apache.pekko.stream.SourceRef;
import org.apache.pekko.stream.javadsl.Source;
import org.apache.pekko.stream.javadsl.StreamRefs;
import org.apache.pekko.util.ByteString;

/**
 * The sending process of {@code vmfork bench transfer} and {@link TcpFloor}: a JVM of its
 * own that the benchmark starts, sending bytes to it on command, one command a line on
 * stdin, one answer a line on stdout ({@code ready} first, then {@code ok} or
 * {@code err MESSAGE} per command):
 * <ul>
 * <li>{@code floor PORT BYTES}: a plain blocking socket to 127.0.0.1:PORT, BYTES written,
 *     output shut down, one byte of acknowledgement read.
 * <li>{@code streams PORT BYTES}: a {@link TransferClient} transfer to 127.0.0.1:PORT.
 * <li>{@code refs PATH BYTES}: a Pekko {@link SourceRef} of BYTES sent to the actor at PATH
 *     (answers once the ref is sent; the receiver sees the end).
 * </ul>
 * Arguments: the parent's pid (it exits when that process is gone, or stdin ends), then
 * for {@code streams} and {@code refs} the address of the cluster to join (the benchmark's
 * actor system).
 */
public final class TransferPeer {
    static final int BUFFER = 1 << 20;
    /** Elements of a stream ref: under Artery's default maximum frame size (256 KiB). */
    static final int REF_CHUNK = 128 << 10;

    private TransferPeer() {
    }

    /** The actor systems' name: the same in both processes, which form one cluster. */
    static final String SYSTEM = "vmfork-bench";

    /**
     * Both bench processes' actor system: a cluster member on loopback (a free port), with
     * a node's default stable-after (7 s) for the split brain resolver, keep-oldest so that
     * the benchmark's own system (the oldest) survives its peer's kill: stream refs learn of
     * a dead peer only when the cluster downs it.
     */
    static Config systemConfig() {
        return ConfigFactory.parseString("""
                pekko.loglevel = WARNING
                pekko.actor.provider = cluster
                pekko.remote.artery.canonical.hostname = "127.0.0.1"
                pekko.remote.artery.canonical.port = 0
                pekko.cluster.jmx.enabled = off
                pekko.cluster.downing-provider-class = "org.apache.pekko.cluster.sbr.SplitBrainResolverProvider"
                pekko.cluster.split-brain-resolver.active-strategy = keep-oldest
                pekko.cluster.split-brain-resolver.keep-oldest.down-if-alone = off
                pekko.cluster.split-brain-resolver.stable-after = 7s
                """).withFallback(ConfigFactory.load());
    }

    /** Starts this process's actor system, joins {@code seed}, returns once it is Up. */
    static ActorSystem join(String seed) throws Exception {
        ActorSystem system = ActorSystem.create(SYSTEM, systemConfig());
        CompletableFuture<Void> up = new CompletableFuture<>();
        Cluster c = Cluster.get(system);
        c.registerOnMemberUp(() -> up.complete(null));
        c.join(AddressFromURIString.parse(seed));
        try {
            up.get(60, TimeUnit.SECONDS);
        } catch (Exception e) {
            system.terminate();
            throw e;
        }
        return system;
    }

    public static void main(String[] args) throws Exception {
        if (args.length >= 1) {
            ProcessHandle.of(Long.parseLong(args[0])).ifPresent(p -> p.onExit().thenRun(() -> Runtime.getRuntime().halt(3)));
        }
        byte[] buf = new byte[BUFFER];
        new Random(1).nextBytes(buf);
        PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
        ActorSystem system = args.length >= 2 ? join(args[1]) : null;
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        out.println("ready");
        try {
            String line;
            while ((line = in.readLine()) != null) {
                String[] c = line.strip().split(" ");
                try {
                    switch (c[0]) {
                        case "floor" -> floor(Integer.parseInt(c[1]), Long.parseLong(c[2]), buf);
                        case "streams" -> streams(requireSystem(system), Integer.parseInt(c[1]), Long.parseLong(c[2]), buf);
                        case "refs" -> refs(requireSystem(system), c[1], Long.parseLong(c[2]), buf);
                        case "quit" -> {
                            return;
                        }
                        default -> throw new IllegalArgumentException("unknown command " + c[0]);
                    }
                    out.println("ok");
                } catch (Exception e) {
                    out.println("err " + String.valueOf(e).replace('\n', ' '));
                }
            }
        } finally {
            if (system != null) {
                system.terminate();
                system.getWhenTerminated().toCompletableFuture().get(10, TimeUnit.SECONDS);
            }
        }
    }

    private static ActorSystem requireSystem(ActorSystem s) {
        if (s == null) {
            throw new IllegalStateException("started without a cluster seed");
        }
        return s;
    }

    static void writeBytes(OutputStream out, long bytes, byte[] buf) throws IOException {
        for (long done = 0; done < bytes; ) {
            int n = (int) Math.min(buf.length, bytes - done);
            out.write(buf, 0, n);
            done += n;
        }
    }

    private static void floor(int port, long bytes, byte[] buf) throws IOException {
        try (Socket s = new Socket("127.0.0.1", port)) {
            writeBytes(s.getOutputStream(), bytes, buf);
            s.shutdownOutput();
            InputStream in = s.getInputStream();
            if (in.read() < 0) {
                throw new IOException("no acknowledgement");
            }
        }
    }

    private static void streams(ActorSystem system, int port, long bytes, byte[] buf) throws Exception {
        var typed = Adapter.toTyped(system);
        TransferSettings settings = TransferSettings.fromConfig(system.settings().config());
        TransferClient.send(typed, new InetSocketAddress("127.0.0.1", port), new byte[] {1},
                out -> writeBytes(out, bytes, buf), settings).toCompletableFuture().get(10, TimeUnit.MINUTES);
    }

    private static void refs(ActorSystem system, String path, long bytes, byte[] buf) {
        ByteString chunk = ByteString.fromArray(buf, 0, REF_CHUNK);
        long whole = bytes / REF_CHUNK;
        int rest = (int) (bytes % REF_CHUNK);
        Source<ByteString, ?> src = Source.repeat(chunk).take(whole);
        if (rest > 0) {
            src = src.concat(Source.single(chunk.take(rest)));
        }
        SourceRef<ByteString> ref = src.runWith(StreamRefs.sourceRef(), Materializer.matFromSystem(system));
        system.actorSelection(path).tell(ref, ActorRef.noSender());
    }
}
