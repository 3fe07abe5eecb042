package io.vmfork.cluster.transfer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.ConfigFactory;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.typed.ActorSystem;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * The transfer server's limits one by one (package-info, "Limits"): the open deadline, the
 * OPEN frame's size, the caps on connections in all and per peer (an expected peer passing
 * the first), the cap on transfers being received, and the peer the Acceptor is shown.
 */
class TransferLimitsTest {
    private static final Duration OPEN_TIMEOUT = Duration.ofMillis(800);
    private static ActorTestKit kit;
    private static ActorSystem<Void> system;
    private static TransferSettings base;
    private TransferServer server;

    @BeforeAll
    static void startSystem() {
        kit = ActorTestKit.create("TransferLimitsTest", ConfigFactory.parseString("pekko.actor.provider = local")
                .withFallback(ConfigFactory.load()));
        system = kit.system();
        base = TransferSettings.fromConfig(system.settings().config()).withIdleTimeout(Duration.ofSeconds(2));
    }

    @AfterAll
    static void stopSystem() {
        kit.shutdownTestKit();
    }

    @AfterEach
    void closeServer() {
        if (server != null) {
            server.close();
        }
    }

    private TransferSettings limits(int total, int perPeer, int receiving) {
        return base.withLimits(new TransferSettings.Limits(OPEN_TIMEOUT, total, perPeer, receiving, 4));
    }

    private TransferServer bind(TransferSettings s, TransferServer.Acceptor a) throws Exception {
        server = TransferServer.bindAccepting(system, "127.0.0.1", 0, s, a).toCompletableFuture().get(30, TimeUnit.SECONDS);
        return server;
    }

    private static TransferServer.Receiver draining() {
        return (opening, in) -> {
            in.transferTo(java.io.OutputStream.nullOutputStream());
            return new byte[] {1};
        };
    }

    private Socket connectFrom(String local) throws IOException {
        Socket s = new Socket();
        s.bind(new InetSocketAddress(local, 0));
        s.connect(server.address(), 5000);
        s.setSoTimeout(10_000);
        return s;
    }

    @Test
    void aConnectionWithoutAnOpeningIsRefusedAtTheDeadline() throws Exception {
        bind(limits(8, 8, 8), (o, p) -> draining());
        try (Socket s = connectFrom("127.0.0.1")) {
            long t0 = System.nanoTime();
            TransferTest.Frame f = TransferTest.readFrame(s.getInputStream());
            long ms = (System.nanoTime() - t0) / 1_000_000;
            assertEquals(Frames.ABORT, f.kind());
            assertTrue(f.text().contains("vmfork.transfer.open-timeout"), f.text());
            assertTrue(ms >= OPEN_TIMEOUT.toMillis() - 100 && ms < OPEN_TIMEOUT.toMillis() + 2000, ms + " ms");
            assertEquals(-1, s.getInputStream().read());
        }
    }

    @Test
    void anOpenFrameOverOneKibIsRefusedFromItsLength() throws Exception {
        bind(limits(8, 8, 8), (o, p) -> draining());
        try (Socket s = connectFrom("127.0.0.1")) {
            byte[] header = new byte[Frames.HEADER];
            Frames.putHeader(header, 0, Frames.MAX_OPEN + 1, Frames.OPEN);
            s.getOutputStream().write(header);
            TransferTest.Frame f = TransferTest.readFrame(s.getInputStream());
            assertTrue(f.text().contains("an OPEN frame of 1025 bytes"), f.text());
        }
        // And a sender is not let send one.
        ExecutionException e = assertThrows(ExecutionException.class, () -> TransferClient.send(system,
                server.address(), new byte[Frames.MAX_OPEN], out -> { }, base).toCompletableFuture().get());
        assertInstanceOf(TransferException.class, e.getCause());
    }

    @Test
    void connectionsAreCappedPerPeerAndInAllButAnExpectedPeerGetsIn() throws Exception {
        InetAddress member = InetAddress.getByName("127.0.0.1");
        bind(limits(3, 2, 3), new TransferServer.Acceptor() {
            @Override
            public TransferServer.Receiver accept(byte[] opening, InetSocketAddress peer) {
                return draining();
            }

            @Override
            public boolean expects(InetAddress peer) {
                return peer.equals(member);
            }
        });
        List<Socket> held = new ArrayList<>();
        try {
            held.add(connectFrom("127.0.0.2"));
            held.add(connectFrom("127.0.0.2"));
            awaitConnections(2);
            try (Socket third = connectFrom("127.0.0.2")) {
                TransferTest.Frame f = TransferTest.readFrame(third.getInputStream());
                assertTrue(f.text().contains("vmfork.transfer.max-connections-per-peer"), f.text());
                assertEquals(-1, third.getInputStream().read());
            }
            held.add(connectFrom("127.0.0.3"));
            awaitConnections(3);
            try (Socket fourth = connectFrom("127.0.0.4")) {
                TransferTest.Frame f = TransferTest.readFrame(fourth.getInputStream());
                assertTrue(f.text().contains("vmfork.transfer.max-connections)"), f.text());
            }
            // The member a transfer is expected from is let in past the total cap.
            byte[] r = TransferClient.send(system, server.address(), new InetSocketAddress(member, 0), new byte[] {7},
                    out -> out.write(new byte[1000]), base).toCompletableFuture().get(10, TimeUnit.SECONDS);
            assertEquals(1, r.length);
        } finally {
            for (Socket s : held) {
                s.close();
            }
        }
    }

    @Test
    void transfersBeingReceivedAreCappedAndTheNextIsToldBusy() throws Exception {
        CountDownLatch release = new CountDownLatch(1);
        CountDownLatch first = new CountDownLatch(1);
        bind(limits(8, 8, 1), (o, p) -> (opening, in) -> {
            first.countDown();
            release.await(10, TimeUnit.SECONDS);
            in.transferTo(java.io.OutputStream.nullOutputStream());
            return new byte[] {1};
        });
        CompletionStage<byte[]> one = TransferClient.send(system, server.address(), new byte[] {1},
                out -> out.write(new byte[1000]), base);
        assertTrue(first.await(10, TimeUnit.SECONDS));
        ExecutionException e = assertThrows(ExecutionException.class, () -> TransferClient.send(system,
                server.address(), new byte[] {2}, out -> out.write(new byte[1000]), base).toCompletableFuture()
                .get(10, TimeUnit.SECONDS));
        assertTrue(e.getCause().getMessage().contains("vmfork.transfer.max-receiving"), e.getCause().getMessage());
        release.countDown();
        assertEquals(1, one.toCompletableFuture().get(10, TimeUnit.SECONDS).length);
    }

    @Test
    void theAcceptorSeesTheConnectionsPeerAndItsRefusalReachesTheSender() throws Exception {
        AtomicReference<InetSocketAddress> seen = new AtomicReference<>();
        bind(limits(8, 8, 8), (o, p) -> {
            seen.set(p);
            throw new TransferException("not from you");
        });
        try (Socket s = connectFrom("127.0.0.2")) {
            byte[] open = ByteBuffer.allocate(Frames.HEADER + Frames.OPEN_PREFIX + 1).array();
            Frames.putHeader(open, 0, Frames.OPEN_PREFIX + 1, Frames.OPEN);
            ByteBuffer.wrap(open, Frames.HEADER, Frames.OPEN_PREFIX).putInt(Frames.MAGIC).putShort(Frames.VERSION);
            s.getOutputStream().write(open);
            TransferTest.Frame f = TransferTest.readFrame(s.getInputStream());
            assertEquals("refused: not from you", f.text());
            InputStream in = s.getInputStream();
            assertEquals(-1, in.read(), "closed once the sender is drained");
        }
        assertEquals(InetAddress.getByName("127.0.0.2"), seen.get().getAddress());
    }

    private void awaitConnections(int n) throws InterruptedException {
        long until = System.nanoTime() + 5_000_000_000L;
        while (server.openConnections() < n && System.nanoTime() < until) {
            Thread.sleep(10);
        }
        assertEquals(n, server.openConnections());
    }
}
