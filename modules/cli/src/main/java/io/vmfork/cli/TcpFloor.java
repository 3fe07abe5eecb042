package io.vmfork.cli;

import java.io.IOException;
import java.io.InputStream;
import java.io.UncheckedIOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.time.Duration;

/**
 * The floor under moving bytes between two processes: a plain blocking java.net socket on
 * loopback, this JVM receiving, a {@link TransferPeer} JVM (started here, killed after)
 * sending. One run: from the command to the peer until this side has read all the bytes
 * and the end of the stream (connection set-up included).
 */
final class TcpFloor implements AutoCloseable {
    private static final Duration START = Duration.ofSeconds(60);
    private static final Duration RUN = Duration.ofMinutes(5);
    private static final long WARM_UP_BYTES = 512L << 20;

    private final PeerProcess peer;
    private final ServerSocket server;

    private TcpFloor(PeerProcess peer, ServerSocket server) {
        this.peer = peer;
        this.server = server;
    }

    static TcpFloor start() {
        ServerSocket s;
        try {
            s = new ServerSocket(0, 4, InetAddress.getLoopbackAddress());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
        try {
            return new TcpFloor(PeerProcess.start(null, START), s);
        } catch (RuntimeException e) {
            closeQuietly(s);
            throw e;
        }
    }

    /**
     * clone.tcp_floor: moves {@code bytes} {@code runs} times (after unmeasured runs of 512
     * MiB, at least one) and returns the times in ms; the p50 is {@code median()}.
     */
    static Stats measure(long bytes, int runs) {
        try (TcpFloor f = start()) {
            for (long warm = 0; warm < WARM_UP_BYTES; warm += bytes) {
                f.once(bytes);
            }
            double[] ms = new double[runs];
            for (int i = 0; i < runs; i++) {
                ms[i] = f.once(bytes);
            }
            return new Stats(ms);
        }
    }

    /** One run; returns its time in ms. */
    double once(long bytes) {
        long t0 = System.nanoTime();
        peer.command("floor " + server.getLocalPort() + " " + bytes);
        long got = receive(bytes);
        double ms = (System.nanoTime() - t0) / 1e6;
        peer.expect("ok", RUN);
        if (got != bytes) {
            throw new IllegalStateException("tcp floor: received " + got + " of " + bytes + " bytes");
        }
        return ms;
    }

    /** Accepts one connection, reads it to its end; returns the bytes read. Acknowledges. */
    private long receive(long bytes) {
        try (Socket s = server.accept()) {
            s.setSoTimeout((int) RUN.toMillis());
            long got = readAll(s.getInputStream());
            s.getOutputStream().write(1);
            return got;
        } catch (IOException e) {
            throw new UncheckedIOException("tcp floor: receiving " + bytes + " bytes", e);
        }
    }

    static long readAll(InputStream in) throws IOException {
        byte[] buf = new byte[TransferPeer.BUFFER];
        long got = 0;
        int r;
        while ((r = in.read(buf)) >= 0) {
            got += r;
        }
        return got;
    }

    PeerProcess peer() {
        return peer;
    }

    ServerSocket serverSocket() {
        return server;
    }

    @Override
    public void close() {
        peer.close();
        closeQuietly(server);
    }

    private static void closeQuietly(ServerSocket s) {
        try {
            s.close();
        } catch (IOException e) {
            // nothing to release beyond the fd, which close released or never had
        }
    }
}
