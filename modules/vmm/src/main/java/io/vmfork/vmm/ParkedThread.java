package io.vmfork.vmm;

import java.util.concurrent.CompletableFuture;

/**
 * A daemon thread started ahead of need (by the {@link VmPool}), parked until it is given
 * the one task it runs, as a pooled VM's vCPU thread: starting a Java thread costs a launch
 * about 0.1-0.2 ms between {@code Thread.start} and the thread's first instruction. A parked
 * thread that is never given a task must be {@link #cancel}led; it then ends.
 */
final class ParkedThread {
    private final CompletableFuture<Runnable> task = new CompletableFuture<>();
    private final Thread thread;

    private ParkedThread(String name) {
        thread = new Thread(this::park, name);
        thread.setDaemon(true);
    }

    static ParkedThread start(String name) {
        ParkedThread p = new ParkedThread(name);
        p.thread.start();
        return p;
    }

    Thread thread() {
        return thread;
    }

    /** Runs {@code r} on this thread, renamed {@code name}; false if it was cancelled (or given a task) already. */
    boolean run(Runnable r, String name) {
        return task.complete(() -> {
            thread.setName(name);
            r.run();
        });
    }

    /** Ends the thread if it was never given a task. Idempotent. */
    void cancel() {
        task.complete(null);
    }

    private void park() {
        Runnable r = task.join();
        if (r != null) {
            r.run();
        }
    }
}
