package io.vmfork.cluster.host;

import com.typesafe.config.Config;
import java.time.Duration;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Points of a clone transfer where a test can hold a node, to kill it there
 * ({@code vmfork.transfer.test.hold-at}, empty in production): the node logs
 * {@code "vmfork failpoint <name> reached"} and waits {@code hold-for} before going on.
 * Names: {@code source-before-first-chunk}, {@code source-mid}, {@code source-after-last-chunk},
 * {@code target-before-first-chunk}, {@code target-mid}, {@code target-after-last-chunk}
 * (the capsule verified, no clone started yet).
 */
final class Failpoints {
    static final Failpoints NONE = new Failpoints(Set.of(), Duration.ZERO);
    private static final Logger log = LoggerFactory.getLogger(Failpoints.class);

    private final Set<String> holdAt;
    private final Duration holdFor;

    private Failpoints(Set<String> holdAt, Duration holdFor) {
        this.holdAt = holdAt;
        this.holdFor = holdFor;
    }

    static Failpoints fromConfig(Config c) {
        if (!c.hasPath("vmfork.transfer.test.hold-at")) {
            return NONE;
        }
        return new Failpoints(Set.copyOf(c.getStringList("vmfork.transfer.test.hold-at")),
                c.getDuration("vmfork.transfer.test.hold-for"));
    }

    boolean any() {
        return !holdAt.isEmpty();
    }

    /** Holds the calling (transfer) thread if {@code name} is configured. */
    void reach(String name) {
        if (!holdAt.contains(name)) {
            return;
        }
        log.warn("vmfork failpoint {} reached", name);
        System.out.println("vmfork failpoint " + name + " reached");
        System.out.flush();
        try {
            Thread.sleep(holdFor.toMillis());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
