package io.vmfork.cluster.transfer;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.security.ClusterCredentials;
import java.nio.ByteBuffer;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Arrays;
import java.util.Optional;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.typed.ActorSystem;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The cost of the transfers' TLS in one JVM on loopback: 64 MiB through TransferClient and
 * TransferServer, plain and over TLS, in alternating runs (plain then TLS, then TLS then
 * plain, ...) after unmeasured ones, so that load from elsewhere falls on both alike; the
 * median of each and their ratio. A measurement, not a check: runs only with
 * {@code -Dvmfork.transfer.speed=on} (under {@code flock /tmp/vmfork-heavy.lock}).
 */
class TransferTlsSpeedTest {
    private static final long BYTES = 64L << 20;
    private static final int WARM_UP = 4;

    @TempDir
    Path dir;

    @Test
    void plainAgainstTls() throws Exception {
        Assumptions.assumeTrue("on".equals(System.getProperty("vmfork.transfer.speed")), "a measurement");
        int runs = Integer.getInteger("vmfork.transfer.speed.runs", 15);
        ActorTestKit kit = ActorTestKit.create("TransferTlsSpeedTest", ConfigFactory.parseString(
                "pekko.actor.provider = local\npekko.io.tcp.direct-buffer-size = 1MiB")
                .withFallback(ConfigFactory.load()));
        TransferServer plainServer = null;
        TransferServer tlsServer = null;
        try {
            ActorSystem<Void> system = kit.system();
            TransferSettings plain = TransferSettings.fromConfig(system.settings().config());
            ClusterCredentials.Authority ca = ClusterCredentials.createAuthority(dir, "alpha");
            ClusterCredentials.MemberFiles n1 = ClusterCredentials.issue(ca, dir, "node-1",
                    ClusterCredentials.Role.NODE, Duration.ofDays(1));
            ClusterCredentials.MemberFiles n2 = ClusterCredentials.issue(ca, dir, "node-2",
                    ClusterCredentials.Role.NODE, Duration.ofDays(1));
            TransferSettings server1 = plain.withTls(Optional.of(new TransferTls(n1, Duration.ofMinutes(5))));
            TransferSettings client2 = plain.withTls(Optional.of(new TransferTls(n2, Duration.ofMinutes(5))));
            TransferServer.Receiver count = (opening, in) -> {
                byte[] buf = new byte[1 << 16];
                long n = 0;
                for (int r; (r = in.read(buf)) >= 0; ) {
                    n += r;
                }
                return ByteBuffer.allocate(8).putLong(n).array();
            };
            plainServer = TransferServer.bind(system, "127.0.0.1", 0, plain, count).toCompletableFuture()
                    .get(30, TimeUnit.SECONDS);
            tlsServer = TransferServer.bind(system, "127.0.0.1", 0, server1, count).toCompletableFuture()
                    .get(30, TimeUnit.SECONDS);
            double[] off = new double[runs];
            double[] on = new double[runs];
            for (int i = -WARM_UP; i < runs; i++) {
                for (int k = 0; k < 2; k++) {
                    boolean tls = (k == 0) == (Math.floorMod(i, 2) == 1);
                    double ms = once(system, tls ? tlsServer : plainServer, tls ? client2 : plain);
                    if (i >= 0) {
                        (tls ? on : off)[i] = ms;
                    }
                }
            }
            Arrays.sort(off);
            Arrays.sort(on);
            System.out.printf("SPEED 64 MiB, %d runs each: plain p50 %.1f ms (min %.1f), tls p50 %.1f ms (min %.1f),"
                    + " ratio %.2f%n", runs, off[runs / 2], off[0], on[runs / 2], on[0], on[runs / 2] / off[runs / 2]);
        } finally {
            if (plainServer != null) {
                plainServer.close();
            }
            if (tlsServer != null) {
                tlsServer.close();
            }
            kit.shutdownTestKit();
        }
    }

    private static double once(ActorSystem<Void> system, TransferServer server, TransferSettings settings)
            throws Exception {
        long t0 = System.nanoTime();
        byte[] r = TransferClient.send(system, server.address(), new byte[] {1},
                out -> TransferTest.writePattern(out, BYTES, null), settings).toCompletableFuture().get(60, TimeUnit.SECONDS);
        long t1 = System.nanoTime();
        assertEquals(BYTES, ByteBuffer.wrap(r).getLong());
        return (t1 - t0) / 1e6;
    }
}
