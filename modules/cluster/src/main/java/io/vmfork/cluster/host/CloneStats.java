package io.vmfork.cluster.host;

import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Supplier;

/**
 * What a host's remote clones have moved, for its {@code GET /status} ("clones"): capsules
 * and bytes sent and received, how many were deltas, copies started and failed, and the
 * images kept for later deltas. Counters only grow; thread-safe.
 */
public final class CloneStats {
    final AtomicLong capsulesSent = new AtomicLong();
    final AtomicLong bytesSent = new AtomicLong();
    final AtomicLong deltasSent = new AtomicLong();
    final AtomicLong copiesFailed = new AtomicLong();
    final AtomicLong capsulesReceived = new AtomicLong();
    final AtomicLong bytesReceived = new AtomicLong();
    final AtomicLong deltasReceived = new AtomicLong();
    final AtomicLong clonesStarted = new AtomicLong();
    final AtomicLong transfersFailed = new AtomicLong();
    private volatile Supplier<long[]> kept = () -> new long[] {0, 0};

    void keptFrom(Supplier<long[]> usage) {
        this.kept = usage;
    }

    public long capsulesSent() {
        return capsulesSent.get();
    }

    public long bytesSent() {
        return bytesSent.get();
    }

    public long deltasSent() {
        return deltasSent.get();
    }

    /** The counters as the status page shows them. */
    public ObjectNode toJson() {
        ObjectNode o = JsonNodeFactory.instance.objectNode();
        o.put("capsules_sent", capsulesSent.get());
        o.put("bytes_sent", bytesSent.get());
        o.put("deltas_sent", deltasSent.get());
        o.put("copies_failed", copiesFailed.get());
        o.put("capsules_received", capsulesReceived.get());
        o.put("bytes_received", bytesReceived.get());
        o.put("deltas_received", deltasReceived.get());
        o.put("clones_started", clonesStarted.get());
        o.put("transfers_failed", transfersFailed.get());
        long[] k = kept.get();
        o.put("images_kept", k[0]);
        o.put("image_bytes_kept", k[1]);
        return o;
    }
}
