package io.vmfork.cli;

import io.vmfork.cluster.api.VmCluster;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The demo's burst: {@code total} {@code get K} requests over a pool of warm-workers, at
 * most {@code inFlight} outstanding per worker, every reply checked against
 * {@link WarmWorkerReplies#expectedGet}. Request i asks for a key that depends only on i;
 * one in 16 asks past the index (a "miss" reply is expected). A worker whose request fails
 * (it crashed, exited, was stopped, its host left) is out of the pool from then on: the
 * request goes back to the others, so the burst still serves every request as long as one
 * worker lives. Runs on the API's futures, no thread of its own.
 */
final class DemoBurst {
    /** One worker of the pool as the burst sees it. */
    static final class Lane {
        final long vmId;
        final AtomicInteger served = new AtomicInteger();
        volatile String failure;
        int active;

        Lane(long vmId) {
            this.vmId = vmId;
        }
    }

    private final VmCluster api;
    private final List<Lane> lanes;
    private final int total;
    private final int inFlight;
    private final AtomicInteger next = new AtomicInteger();
    private final ConcurrentLinkedQueue<Integer> again = new ConcurrentLinkedQueue<>();
    private final AtomicInteger served = new AtomicInteger();
    private final AtomicInteger wrong = new AtomicInteger();
    private final List<String> wrongSamples = Collections.synchronizedList(new ArrayList<>());
    private final CompletableFuture<Void> done = new CompletableFuture<>();
    private final Runnable afterEachReply;
    private int active;

    DemoBurst(VmCluster api, List<Lane> lanes, int total, int inFlight, Runnable afterEachReply) {
        if (lanes.isEmpty() || total < 0 || inFlight < 1) {
            throw new IllegalArgumentException(lanes.size() + " workers, " + total + " requests, " + inFlight
                    + " in flight");
        }
        this.api = api;
        this.lanes = List.copyOf(lanes);
        this.total = total;
        this.inFlight = inFlight;
        this.afterEachReply = afterEachReply;
    }

    /** The key request {@code i} asks for: spread over the index, every 16th past it. */
    static long keyOf(int i) {
        long k = WarmWorkerReplies.mix(i + 0x5eedL) & (WarmWorkerReplies.KEYS - 1);
        return i % 16 == 15 ? WarmWorkerReplies.KEYS + k : k;
    }

    /** Starts the burst; completes when every request was served, exceptionally when no worker is left. */
    CompletableFuture<Void> start() {
        if (total == 0) {
            done.complete(null);
        } else {
            fill();
        }
        return done;
    }

    int served() {
        return served.get();
    }

    int wrong() {
        return wrong.get();
    }

    /** Up to 3 wrong replies: what was asked, what came, what was expected. */
    List<String> wrongSamples() {
        synchronized (wrongSamples) {
            return List.copyOf(wrongSamples);
        }
    }

    // Every live worker gets its lanes back up to inFlight (at the start, and when a dead
    // worker's requests came back to the queue).
    private synchronized void fill() {
        for (Lane l : lanes) {
            while (l.failure == null && l.active < inFlight && (!again.isEmpty() || next.get() < total)) {
                l.active++;
                active++;
                pump(l);
            }
        }
    }

    private void pump(Lane l) {
        Integer i = again.poll();
        if (i == null) {
            int n = next.getAndIncrement();
            i = n < total ? n : null;
        }
        if (i == null || l.failure != null) {
            if (i != null) {
                again.add(i);
            }
            laneEnded(l);
            return;
        }
        int index = i;
        long key = keyOf(index);
        String request = "get " + Long.toUnsignedString(key);
        api.request(l.vmId, request.getBytes(StandardCharsets.UTF_8)).whenComplete((reply, failure) -> {
            if (failure != null) {
                again.add(index);
                if (l.failure == null) {
                    l.failure = failure instanceof CompletionException && failure.getCause() != null
                            ? failure.getCause().getMessage() : failure.getMessage();
                }
                laneEnded(l);
                return;
            }
            String got = new String(reply, StandardCharsets.UTF_8);
            String want = WarmWorkerReplies.expectedGet(key);
            if (!got.equals(want)) {
                wrong.incrementAndGet();
                synchronized (wrongSamples) {
                    if (wrongSamples.size() < 3) {
                        wrongSamples.add("VM " + l.vmId + ": '" + request + "' -> '" + got + "', expected '" + want
                                + "'");
                    }
                }
            }
            l.served.incrementAndGet();
            served.incrementAndGet();
            afterEachReply.run();
            pump(l);
        });
    }

    private synchronized void laneEnded(Lane l) {
        l.active--;
        active--;
        if (served.get() >= total) {
            if (active == 0) {
                done.complete(null);
            }
            return;
        }
        if (!again.isEmpty()) {
            fill();
        }
        if (active == 0 && served.get() < total) {
            done.completeExceptionally(new IllegalStateException("every worker of the pool ended; "
                    + served.get() + " of " + total + " requests were served"));
        }
    }
}
