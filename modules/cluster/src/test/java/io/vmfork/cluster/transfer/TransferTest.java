package io.vmfork.cluster.transfer;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.typesafe.config.ConfigFactory;
import java.io.DataInputStream;
import java.io.DataOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.time.Duration;
import java.util.Arrays;
import java.util.Random;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.typed.ActorSystem;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** TransferServer and TransferClient over real loopback sockets, in one JVM. */
class TransferTest {
    private static final Duration IDLE = Duration.ofSeconds(1);
    private static final long WAIT_S = 30;
    private static ActorTestKit kit;
    private static ActorSystem<Void> system;
    private static TransferSettings settings;

    private TransferServer server;

    @BeforeAll
    static void startSystem() {
        kit = ActorTestKit.create("TransferTest", ConfigFactory.parseString("pekko.actor.provider = local")
                .withFallback(ConfigFactory.load()));
        system = kit.system();
        settings = TransferSettings.fromConfig(system.settings().config()).withIdleTimeout(IDLE);
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

    private TransferServer bind(TransferServer.Receiver r) throws Exception {
        server = TransferServer.bind(system, "127.0.0.1", 0, settings, r).toCompletableFuture().get(WAIT_S, TimeUnit.SECONDS);
        return server;
    }

    private CompletionStage<byte[]> send(byte[] opening, TransferClient.IoWriter w) {
        return TransferClient.send(system, server.address(), opening, w, settings);
    }

    /** The stage's failure (it must fail within WAIT_S). */
    private static Throwable failure(CompletionStage<?> stage) throws Exception {
        try {
            stage.toCompletableFuture().get(WAIT_S, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            return e.getCause();
        }
        return fail("the transfer succeeded");
    }

    /** A receiver that records how its reading ended: -1 (null here) or the exception. */
    private static final class Recording implements TransferServer.Receiver {
        final CompletableFuture<Throwable> readEnd = new CompletableFuture<>();
        final CountDownLatch started = new CountDownLatch(1);
        final AtomicInteger calls = new AtomicInteger();
        volatile long bytes;

        @Override
        public byte[] receive(byte[] opening, InputStream in) throws Exception {
            calls.incrementAndGet();
            started.countDown();
            byte[] buf = new byte[64 << 10];
            try {
                int r;
                while ((r = in.read(buf)) >= 0) {
                    bytes += r;
                }
                readEnd.complete(null);
            } catch (Throwable e) {
                readEnd.complete(e);
                throw e;
            }
            return ("got " + bytes).getBytes(StandardCharsets.UTF_8);
        }
    }

    private static TransferException readFailure(Recording r) throws Exception {
        Throwable t = r.readEnd.get(WAIT_S, TimeUnit.SECONDS);
        if (t == null) {
            return fail("the receiver's stream ended cleanly (-1) after " + r.bytes + " bytes");
        }
        return assertInstanceOf(TransferException.class, t);
    }

    static void writePattern(OutputStream out, long bytes, MessageDigest md) throws IOException {
        byte[] chunk = new byte[256 << 10];
        new Random(42).nextBytes(chunk);
        for (long done = 0; done < bytes; ) {
            int n = (int) Math.min(chunk.length, bytes - done);
            chunk[0] = (byte) (done >>> 18); // vary the chunks
            out.write(chunk, 0, n);
            if (md != null) {
                md.update(chunk, 0, n);
            }
            done += n;
        }
    }

    @Test
    void a64MiBRoundTripArrivesWholeAndReturnsTheResult() throws Exception {
        bind((opening, in) -> {
            MessageDigest md = MessageDigest.getInstance("SHA-256");
            byte[] buf = new byte[100_000]; // not a multiple of the frame size
            long n = 0;
            int r;
            while ((r = in.read(buf)) >= 0) {
                md.update(buf, 0, r);
                n += r;
            }
            byte[] d = md.digest();
            return ByteBuffer.allocate(opening.length + 8 + d.length).put(opening).putLong(n).put(d).array();
        });
        MessageDigest sent = MessageDigest.getInstance("SHA-256");
        long size = 64L << 20;
        byte[] opening = "capsule 7".getBytes(StandardCharsets.UTF_8);
        byte[] result = send(opening, out -> writePattern(out, size, sent)).toCompletableFuture().get(WAIT_S, TimeUnit.SECONDS);
        ByteBuffer b = ByteBuffer.wrap(result);
        byte[] echoed = new byte[opening.length];
        b.get(echoed);
        assertArrayEquals(opening, echoed);
        assertEquals(size, b.getLong());
        byte[] digest = new byte[b.remaining()];
        b.get(digest);
        assertArrayEquals(sent.digest(), digest);
    }

    @Test
    void aSlowReceiverHoldsTheWriterBack() throws Exception {
        java.util.concurrent.atomic.AtomicLong written = new java.util.concurrent.atomic.AtomicLong();
        CompletableFuture<Long> aheadWhilePaused = new CompletableFuture<>();
        bind((opening, in) -> {
            byte[] buf = new byte[1 << 20];
            long read = in.readNBytes(buf, 0, buf.length);
            sleep(700); // under the idle timeout: the writer fills every buffer on the way, then blocks
            aheadWhilePaused.complete(written.get() - read);
            while (in.read(buf) >= 0) {
                // the rest
            }
            return new byte[0];
        });
        long size = 256L << 20;
        send(new byte[0], out -> {
            byte[] chunk = new byte[1 << 20];
            for (long done = 0; done < size; done += chunk.length) {
                out.write(chunk);
                written.addAndGet(chunk.length);
            }
        }).toCompletableFuture().get(WAIT_S, TimeUnit.SECONDS);
        long ahead = aheadWhilePaused.get();
        assertTrue(ahead < (64L << 20), "the writer got " + (ahead >> 20) + " MiB ahead of a paused receiver");
    }

    @Test
    void anEmptyTransferCompletes() throws Exception {
        Recording r = new Recording();
        bind(r);
        byte[] result = send(new byte[0], out -> { }).toCompletableFuture().get(WAIT_S, TimeUnit.SECONDS);
        assertEquals("got 0", new String(result, StandardCharsets.UTF_8));
        assertEquals(null, r.readEnd.get(WAIT_S, TimeUnit.SECONDS));
    }

    @Test
    void aWriterFailingMidwayAbortsTheReceiverAndFailsWithItsException() throws Exception {
        Recording r = new Recording();
        bind(r);
        IOException boom = new IOException("memory image unreadable");
        Throwable t = failure(send(new byte[] {1}, out -> {
            writePattern(out, 3L << 20, null);
            throw boom;
        }));
        assertSame(boom, t);
        TransferException read = readFailure(r);
        assertTrue(read.getMessage().contains("aborted") && read.getMessage().contains("memory image unreadable"),
                read.getMessage());
    }

    @Test
    void aReceiverThrowingFailsTheSenderWithItsMessage() throws Exception {
        bind((opening, in) -> {
            in.readNBytes(1000);
            throw new IllegalStateException("capsule needs avx512f, this host lacks it");
        });
        CountDownLatch writerDone = new CountDownLatch(1);
        Throwable t = failure(send(new byte[] {1}, out -> {
            try {
                writePattern(out, 1L << 30, null); // far more than the socket buffers hold
            } finally {
                writerDone.countDown();
            }
        }));
        assertInstanceOf(TransferException.class, t);
        assertTrue(t.getMessage().contains("capsule needs avx512f, this host lacks it"), t.getMessage());
        assertTrue(writerDone.await(WAIT_S, TimeUnit.SECONDS), "the writer, blocked under backpressure, was released");
    }

    @Test
    void aReceiverReturningBeforeTheEndFailsTheSender() throws Exception {
        bind((opening, in) -> {
            in.readNBytes(10);
            return new byte[] {1};
        });
        Throwable t = failure(send(new byte[0], out -> writePattern(out, 1000, null)));
        assertTrue(t.getMessage().contains("before the end of the data"), t.getMessage());
    }

    @Test
    void closingTheServerMidTransferFailsBothSides() throws Exception {
        Recording r = new Recording();
        bind(r);
        CompletionStage<byte[]> sending = send(new byte[0], out -> {
            writePattern(out, 1L << 20, null);
            out.flush();
            sleep(200);
            server.close();
            writePattern(out, 64L << 20, null);
        });
        TransferException read = readFailure(r);
        assertTrue(read.getMessage().contains("closed"), read.getMessage());
        assertInstanceOf(TransferException.class, failure(sending));
    }

    @Test
    void aSenderWhoseConnectionEndsBeforeTheEndFrameIsNeverComplete() throws Exception {
        Recording r = new Recording();
        bind(r);
        try (Socket s = new Socket("127.0.0.1", server.address().getPort())) {
            OutputStream out = s.getOutputStream();
            out.write(Frames.open(new byte[] {9}));
            out.write(Frames.frame(Frames.DATA, new byte[1000]));
            out.flush();
            assertTrue(r.started.await(WAIT_S, TimeUnit.SECONDS));
        } // closed: a clean FIN, as the kernel sends for a sender killed with SIGKILL
        TransferException read = readFailure(r);
        assertTrue(read.getMessage().contains("ended after 1000 data bytes"), read.getMessage());
        assertEquals(1000, r.bytes);
    }

    @Test
    void anEndFrameWithAWrongCountIsATruncation() throws Exception {
        Recording r = new Recording();
        bind(r);
        try (Socket s = new Socket("127.0.0.1", server.address().getPort())) {
            OutputStream out = s.getOutputStream();
            out.write(Frames.open(new byte[0]));
            out.write(Frames.frame(Frames.DATA, new byte[10]));
            out.write(Frames.end(20));
            out.flush();
            TransferException read = readFailure(r);
            assertTrue(read.getMessage().contains("truncated"), read.getMessage());
            Frame back = readFrame(s.getInputStream());
            assertEquals(Frames.ABORT, back.kind());
        }
    }

    @Test
    void aSilentSenderFailsBothSidesAfterTheIdleTimeout() throws Exception {
        Recording r = new Recording();
        bind(r);
        long t0 = System.nanoTime();
        CountDownLatch writerDone = new CountDownLatch(1);
        CompletionStage<byte[]> sending = send(new byte[0], out -> {
            try {
                out.write(new byte[1024]);
                out.flush();
                sleep(20_000);
            } finally {
                writerDone.countDown();
            }
        });
        TransferException read = readFailure(r);
        double readS = (System.nanoTime() - t0) / 1e9;
        Throwable t = failure(sending);
        double sendS = (System.nanoTime() - t0) / 1e9;
        assertTrue(read.getMessage().contains("idle"), read.getMessage());
        assertInstanceOf(TransferException.class, t);
        assertTrue(t.getMessage().contains("idle"), t.getMessage());
        assertTrue(readS < 3 && sendS < 3, "failed after " + readS + " s / " + sendS + " s with an idle timeout of 1 s");
        assertTrue(writerDone.await(5, TimeUnit.SECONDS), "the sleeping writer was interrupted");
    }

    @Test
    void aReceiverThatStopsReadingFailsTheSenderAfterTheIdleTimeout() throws Exception {
        CompletableFuture<Throwable> laterRead = new CompletableFuture<>();
        bind((opening, in) -> {
            in.readNBytes(1 << 20);
            sleep(4_000);
            try {
                in.readAllBytes();
                laterRead.complete(null);
            } catch (IOException e) {
                laterRead.complete(e);
            }
            return new byte[0];
        });
        long t0 = System.nanoTime();
        CountDownLatch writerDone = new CountDownLatch(1);
        Throwable t = failure(send(new byte[0], out -> {
            try {
                writePattern(out, 1L << 30, null);
            } finally {
                writerDone.countDown();
            }
        }));
        double s = (System.nanoTime() - t0) / 1e9;
        assertInstanceOf(TransferException.class, t);
        assertTrue(t.getMessage().contains("idle"), t.getMessage());
        assertTrue(s < 3.5, "failed after " + s + " s with an idle timeout of 1 s");
        assertTrue(writerDone.await(5, TimeUnit.SECONDS), "the writer, blocked under backpressure, was released");
        assertInstanceOf(TransferException.class, laterRead.get(WAIT_S, TimeUnit.SECONDS),
                "the receiver's later read throws");
    }

    @Test
    void aFrameLongerThanTheCapIsRefusedBeforeAllocation() throws Exception {
        Recording r = new Recording();
        bind(r);
        try (Socket s = new Socket("127.0.0.1", server.address().getPort())) {
            DataOutputStream out = new DataOutputStream(s.getOutputStream());
            out.write(Frames.open(new byte[0]));
            out.writeInt(settings.maxFrameBytes() + 2); // payload of max-frame + 1
            out.writeByte(Frames.DATA);
            out.flush();
            TransferException read = readFailure(r);
            assertTrue(read.getMessage().contains("exceeds the maximum"), read.getMessage());
            Frame back = readFrame(s.getInputStream());
            assertEquals(Frames.ABORT, back.kind());
            assertTrue(back.text().contains("exceeds the maximum"), back.text());
        }
    }

    @Test
    void aResultFrameLongerThanTheCapFailsTheSender() throws Exception {
        try (ServerSocket fake = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            CompletableFuture<Void> served = CompletableFuture.runAsync(() -> {
                try (Socket s = fake.accept()) {
                    DataOutputStream out = new DataOutputStream(s.getOutputStream());
                    out.writeInt(Integer.MAX_VALUE);
                    out.writeByte(Frames.RESULT);
                    out.flush();
                    s.getInputStream().readAllBytes();
                } catch (IOException e) {
                    // the client cut the connection: expected
                }
            });
            Throwable t = failure(TransferClient.send(system, (InetSocketAddress) fake.getLocalSocketAddress(),
                    new byte[0], out -> { }, settings));
            assertInstanceOf(TransferException.class, t);
            assertTrue(t.getMessage().contains("exceeds the maximum"), t.getMessage());
            served.get(WAIT_S, TimeUnit.SECONDS);
        }
    }

    @Test
    void aReceiverClosingWithoutAResultFailsTheSender() throws Exception {
        try (ServerSocket fake = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            CompletableFuture<Long> served = CompletableFuture.supplyAsync(() -> {
                try (Socket s = fake.accept()) {
                    InputStream in = s.getInputStream();
                    long n = 0;
                    byte[] buf = new byte[1 << 16];
                    // OPEN (6 + 5 bytes), DATA (5 + 1000), END (5 + 8): then close without a word
                    while (n < 11 + 1005 + 13) {
                        int r = in.read(buf);
                        if (r < 0) {
                            break;
                        }
                        n += r;
                    }
                    return n;
                } catch (IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            });
            Throwable t = failure(TransferClient.send(system, (InetSocketAddress) fake.getLocalSocketAddress(),
                    new byte[0], out -> out.write(new byte[1000]), settings));
            assertEquals(11 + 1005 + 13, served.get(WAIT_S, TimeUnit.SECONDS));
            assertInstanceOf(TransferException.class, t);
            assertTrue(t.getMessage().contains("without a result after 1000 data bytes"), t.getMessage());
        }
    }

    @Test
    void garbageIsRefusedWithoutDisturbingOtherTransfers() throws Exception {
        Recording r = new Recording();
        bind(r);
        CountDownLatch garbageDone = new CountDownLatch(1);
        MessageDigest md = MessageDigest.getInstance("SHA-256");
        CompletionStage<byte[]> good = send(new byte[0], out -> {
            writePattern(out, 8L << 20, md);
            out.flush();
            try {
                assertTrue(garbageDone.await(WAIT_S, TimeUnit.SECONDS));
            } catch (InterruptedException e) {
                throw new IOException(e);
            }
            writePattern(out, 8L << 20, md);
        });
        for (String garbage : new String[] {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "\0\0\0\u0009\u0001VMFX\0\u0001zz"}) {
            try (Socket s = new Socket("127.0.0.1", server.address().getPort())) {
                s.getOutputStream().write(garbage.getBytes(StandardCharsets.ISO_8859_1));
                s.getOutputStream().flush();
                Frame back = readFrame(s.getInputStream());
                assertEquals(Frames.ABORT, back.kind());
                assertTrue(back.text().startsWith("refused: "), back.text());
                assertEquals(-1, s.getInputStream().read(), "the server closed the connection");
            }
        }
        garbageDone.countDown();
        assertEquals("got " + (16L << 20), new String(good.toCompletableFuture().get(WAIT_S, TimeUnit.SECONDS),
                StandardCharsets.UTF_8));
        assertEquals(1, r.calls.get(), "the receiver saw only the real transfer");
    }

    @Test
    void aConnectionThatCannotBeMadeFails() throws Exception {
        int port;
        try (ServerSocket s = new ServerSocket(0)) {
            port = s.getLocalPort();
        }
        Throwable t = failure(TransferClient.send(system, new InetSocketAddress("127.0.0.1", port), new byte[0],
                out -> fail("the writer must not run"), settings));
        assertInstanceOf(TransferException.class, t);
        assertTrue(t.getMessage().startsWith("cannot connect to"), t.getMessage());
    }

    @Test
    void aPortInUseFailsTheBind() throws Exception {
        try (ServerSocket taken = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
            Throwable t = failure(TransferServer.bind(system, "127.0.0.1", taken.getLocalPort(), settings,
                    (o, in) -> new byte[0]));
            assertInstanceOf(TransferException.class, t);
            assertTrue(t.getMessage().startsWith("cannot bind the transfer server to 127.0.0.1:" + taken.getLocalPort()),
                    t.getMessage());
        }
    }

    @Test
    void anOpeningOverTheCapIsRefusedAtOnce() {
        CompletionStage<byte[]> s = TransferClient.send(system, new InetSocketAddress("127.0.0.1", 1),
                new byte[settings.maxFrameBytes()], out -> { }, settings);
        ExecutionException e = assertThrows(ExecutionException.class, () -> s.toCompletableFuture().get());
        assertInstanceOf(TransferException.class, e.getCause());
    }

    @Test
    void transfersLeaveNoThreadsOrSocketsBehind() throws Exception {
        Recording r = new Recording();
        bind(r);
        send(new byte[0], out -> writePattern(out, 1 << 20, null)).toCompletableFuture().get(WAIT_S, TimeUnit.SECONDS);
        long fdsBefore = openFds();
        server.close();
        server = null;
        awaitSettled(fdsBefore - 1); // the listening socket too

        bind(r);
        for (int i = 0; i < 5; i++) {
            send(new byte[] {(byte) i}, out -> writePattern(out, 4 << 20, null))
                    .toCompletableFuture().get(WAIT_S, TimeUnit.SECONDS);
        }
        failure(send(new byte[0], out -> {
            writePattern(out, 1 << 20, null);
            throw new IOException("writer fails");
        }));
        TransferServer refusing = TransferServer.bind(system, "127.0.0.1", 0, settings, (o, in) -> {
            throw new IllegalStateException("refused");
        }).toCompletableFuture().get(WAIT_S, TimeUnit.SECONDS);
        failure(TransferClient.send(system, refusing.address(), new byte[0], out -> writePattern(out, 64L << 20, null),
                settings));
        refusing.close();
        try (Socket s = new Socket("127.0.0.1", server.address().getPort())) {
            s.getOutputStream().write("garbage!".getBytes(StandardCharsets.US_ASCII));
            readFrame(s.getInputStream());
        }
        int closedPort;
        try (ServerSocket gone = new ServerSocket(0)) {
            closedPort = gone.getLocalPort();
        }
        failure(TransferClient.send(system, new InetSocketAddress("127.0.0.1", closedPort), new byte[0], out -> { },
                settings));
        CompletionStage<byte[]> cut = send(new byte[0], out -> writePattern(out, 1L << 30, null));
        sleep(100);
        server.close(); // mid-transfer
        failure(cut);
        server = null;
        awaitSettled(fdsBefore - 1);
        long pool = Thread.getAllStackTraces().keySet().stream()
                .filter(t -> t.getName().contains("vmfork.transfer.blocking-dispatcher")).count();
        assertTrue(pool <= 16, pool + " blocking threads (the pool has 16)");
    }

    /** Waits until at most {@code fds} fds are open and no thread but this one runs transfer code. */
    private static void awaitSettled(long fds) throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (true) {
            long open = openFds();
            java.util.List<String> busy = Thread.getAllStackTraces().entrySet().stream()
                    .filter(e -> e.getKey() != Thread.currentThread())
                    .filter(e -> Arrays.stream(e.getValue()).anyMatch(f -> f.getClassName().startsWith(
                            "io.vmfork.cluster.transfer.") && !f.getClassName().contains("Test")))
                    .map(e -> e.getKey().getName()).toList();
            if (open <= fds && busy.isEmpty()) {
                return;
            }
            if (System.nanoTime() > deadline) {
                fail(open + " fds open (expected at most " + fds + "), threads still in transfer code: " + busy);
            }
            Thread.sleep(50);
        }
    }

    private static long openFds() {
        String[] fds = new java.io.File("/proc/self/fd").list();
        return fds == null ? -1 : fds.length;
    }

    record Frame(byte kind, byte[] payload) {
        String text() {
            return new String(payload, StandardCharsets.UTF_8);
        }
    }

    static Frame readFrame(InputStream in) throws IOException {
        DataInputStream d = new DataInputStream(in);
        int n = d.readInt();
        byte kind = d.readByte();
        byte[] p = new byte[n - 1];
        d.readFully(p);
        return new Frame(kind, p);
    }

    static void sleep(long ms) throws IOException {
        try {
            Thread.sleep(ms);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IOException("interrupted", e);
        }
    }
}
