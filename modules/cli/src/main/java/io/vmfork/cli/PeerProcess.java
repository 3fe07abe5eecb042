package io.vmfork.cli;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * A {@link TransferPeer} JVM: started on this JVM's class path, driven one line at a time,
 * killed with SIGKILL on {@link #kill}; {@link #close} asks it to quit first, then kills it.
 */
final class PeerProcess implements AutoCloseable {
    private static final String EOF = "\0eof";
    private final Process process;
    private final OutputStream stdin;
    private final LinkedBlockingQueue<String> lines = new LinkedBlockingQueue<>();

    private PeerProcess(Process process) {
        this.process = process;
        this.stdin = process.getOutputStream();
        Thread reader = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(process.getInputStream(),
                    StandardCharsets.UTF_8))) {
                String l;
                while ((l = r.readLine()) != null) {
                    lines.add(l);
                }
            } catch (IOException e) {
                // the process is gone
            }
            lines.add(EOF);
        }, "vmfork-transfer-peer-reader");
        reader.setDaemon(true);
        reader.start();
    }

    /** A peer that joins the cluster at {@code seed} (an actor system address), or none if null. */
    static PeerProcess start(String seed, Duration within) {
        return start(seed, null, within);
    }

    /** With Pekko's TCP read buffer ({@code pekko.io.tcp.direct-buffer-size}) set, unless null. */
    static PeerProcess start(String seed, String directBuffer, Duration within) {
        List<String> cmd = new java.util.ArrayList<>(List.of(Path.of(System.getProperty("java.home"), "bin", "java").toString(),
                "-Xmx1g"));
        if (directBuffer != null) {
            cmd.add("-Dpekko.io.tcp.direct-buffer-size=" + directBuffer);
        }
        cmd.addAll(List.of("-cp", System.getProperty("java.class.path"), TransferPeer.class.getName(),
                Long.toString(ProcessHandle.current().pid())));
        if (seed != null) {
            cmd.add(seed);
        }
        PeerProcess p;
        try {
            p = new PeerProcess(new ProcessBuilder(cmd).redirectError(ProcessBuilder.Redirect.INHERIT).start());
        } catch (IOException e) {
            throw new UncheckedIOException("cannot start the transfer peer JVM", e);
        }
        try {
            p.expect("ready", within);
            return p;
        } catch (RuntimeException e) {
            p.close();
            throw e;
        }
    }

    /** Sends one command line (without waiting for its answer). */
    void command(String line) {
        try {
            stdin.write((line + "\n").getBytes(StandardCharsets.UTF_8));
            stdin.flush();
        } catch (IOException e) {
            throw new UncheckedIOException("the transfer peer is gone", e);
        }
    }

    /** Waits for the next answer and checks it. */
    void expect(String answer, Duration within) {
        String l;
        try {
            l = lines.poll(within.toMillis(), TimeUnit.MILLISECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted waiting for the transfer peer", e);
        }
        if (l == null) {
            throw new IllegalStateException("the transfer peer did not answer within " + within);
        }
        if (!l.equals(answer)) {
            throw new IllegalStateException("the transfer peer answered '" + (l.equals(EOF) ? "(exited)" : l)
                    + "', expected '" + answer + "'");
        }
    }

    /** SIGKILL, and waits until the process is gone. */
    void kill() {
        process.destroyForcibly();
        try {
            process.waitFor(10, TimeUnit.SECONDS);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /** Asks the peer to quit (its actor system leaves the cluster), then kills what is left. */
    @Override
    public void close() {
        if (process.isAlive()) {
            try {
                command("quit");
                process.waitFor(15, TimeUnit.SECONDS);
            } catch (UncheckedIOException e) {
                // already gone
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        kill();
    }
}
