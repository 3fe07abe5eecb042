package io.vmfork.vmm.platform;

import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;

/**
 * A daemon thread started ahead of need, parked until it is given the one task it runs, as
 * a pooled vCPU's thread: starting a Java thread costs a launch 0.1-0.2 ms on KVM hosts,
 * and 0.3-0.5 ms between {@code Thread.start} and the thread's first instruction on the
 * PVM development machines. A parked thread that is never given a task must be
 * {@link #cancel}led; it then ends.
 *
 * <p>KVM's pool ({@code VmPool}) parks one beside each pooled VM; the process platform's
 * pool parks one that has already become the tracer of its pooled guest process's main
 * thread (ptrace ties a tracee to the thread that seized it, so the vCPU must run there).
 */
public final class ParkedThread {
    private final CompletableFuture<Runnable> task = new CompletableFuture<>();
    private final CompletableFuture<Void> preluded = new CompletableFuture<>();
    private final Runnable prelude;
    private final Thread thread;

    private ParkedThread(String name, Runnable prelude) {
        this.prelude = prelude;
        thread = new Thread(this::park, name);
        thread.setDaemon(true);
    }

    public static ParkedThread start(String name) {
        ParkedThread p = new ParkedThread(name, null);
        p.thread.start();
        return p;
    }

    /**
     * Starts a thread that runs {@code prelude} first, and returns once it has: the thread
     * is then parked. If the prelude throws, the thread ends and this throws what it threw.
     */
    public static ParkedThread startAfter(String name, Runnable prelude) {
        ParkedThread p = new ParkedThread(name, prelude);
        p.thread.start();
        try {
            p.preluded.join();
        } catch (CompletionException e) {
            if (e.getCause() instanceof RuntimeException r) {
                throw r;
            }
            throw e;
        }
        return p;
    }

    public Thread thread() {
        return thread;
    }

    /** Runs {@code r} on this thread, renamed {@code name}; false if it was cancelled (or given a task) already. */
    public boolean run(Runnable r, String name) {
        return task.complete(() -> {
            thread.setName(name);
            r.run();
        });
    }

    /** Ends the thread if it was never given a task. Idempotent. */
    public void cancel() {
        task.complete(null);
    }

    private void park() {
        if (prelude != null) {
            try {
                prelude.run();
            } catch (RuntimeException | Error e) {
                preluded.completeExceptionally(e);
                return;
            }
            preluded.complete(null);
        }
        Runnable r = task.join();
        if (r != null) {
            r.run();
        }
    }
}
