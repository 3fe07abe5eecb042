package io.vmfork.cluster.web;

import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * The cluster page's feeds in use, in total and per client address, taken and given back
 * atomically: of any number of browsers that ask at once, exactly as many as the caps
 * allow get a feed. (A check of the count followed by an increment let 17 feeds in under a
 * cap of 16 with 60 clients at once.)
 */
final class FeedPermits {
    /** Why a feed was refused, or that it was granted. */
    enum Outcome { GRANTED, NODE_FULL, CLIENT_FULL }

    private final int total;
    private final int perClient;
    private final AtomicInteger inUse = new AtomicInteger();
    private final ConcurrentHashMap<Object, Integer> byClient = new ConcurrentHashMap<>();

    FeedPermits(int total, int perClient) {
        if (total < 1 || perClient < 1) {
            throw new IllegalArgumentException("feed caps must be positive: " + total + ", " + perClient);
        }
        this.total = total;
        this.perClient = perClient;
    }

    /** One feed for {@code client}, if both caps allow; {@link #release} gives it back. */
    Outcome acquire(Object client) {
        Outcome[] outcome = {Outcome.CLIENT_FULL};
        // compute() runs atomically for the client's key: its count cannot move under us,
        // and the node's total is taken with a compare-and-set loop inside.
        byClient.compute(client, (k, n) -> {
            int mine = n == null ? 0 : n;
            if (mine >= perClient) {
                return n;
            }
            if (!takeOne()) {
                outcome[0] = Outcome.NODE_FULL;
                return n;
            }
            outcome[0] = Outcome.GRANTED;
            return mine + 1;
        });
        return outcome[0];
    }

    private boolean takeOne() {
        while (true) {
            int now = inUse.get();
            if (now >= total) {
                return false;
            }
            if (inUse.compareAndSet(now, now + 1)) {
                return true;
            }
        }
    }

    /** Gives back a feed {@link #acquire} granted to {@code client}. */
    void release(Object client) {
        byClient.computeIfPresent(client, (k, n) -> {
            inUse.decrementAndGet();
            return n <= 1 ? null : n - 1;
        });
    }

    /** Feeds in use now. */
    int inUse() {
        return inUse.get();
    }

    /** Feeds in use now by {@code client}. */
    int inUse(Object client) {
        return byClient.getOrDefault(client, 0);
    }
}
