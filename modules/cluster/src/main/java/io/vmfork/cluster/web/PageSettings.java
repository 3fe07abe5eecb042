package io.vmfork.cluster.web;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import io.vmfork.cluster.node.InvalidNodeConfigException;
import java.time.Duration;

/**
 * The cluster page's bounds, the {@code vmfork.node.status.page} subtree.
 *
 * @param buffer        messages queued for one browser's feed; a browser that falls this far
 *                      behind is dropped (its feed closed) and resyncs with a new snapshot
 * @param maxBrowsers   feeds served at once; one more is answered 503
 * @param maxPerClient  feeds served at once to one client address; one more is answered 429
 * @param hostsInterval at most one {@code hosts} message per feed per interval (load
 *                      reports and membership changes in between are coalesced)
 * @param heartbeat     an SSE heartbeat after this much silence, so that idle connections stay
 *                      open and a browser that went away is noticed
 */
public record PageSettings(int buffer, int maxBrowsers, int maxPerClient, Duration hostsInterval,
                           Duration heartbeat) {
    private static final String PATH = "vmfork.node.status.page";

    public PageSettings {
        if (buffer < 16) {
            throw new InvalidNodeConfigException(PATH + ".buffer", buffer + " is less than 16");
        }
        if (maxBrowsers < 1) {
            throw new InvalidNodeConfigException(PATH + ".max-browsers", "must be positive");
        }
        if (maxPerClient < 1) {
            throw new InvalidNodeConfigException(PATH + ".max-browsers-per-client", "must be positive");
        }
        if (hostsInterval.isNegative() || hostsInterval.isZero()) {
            throw new InvalidNodeConfigException(PATH + ".hosts-interval", "must be a positive duration");
        }
        if (heartbeat.isNegative() || heartbeat.isZero()) {
            throw new InvalidNodeConfigException(PATH + ".heartbeat", "must be a positive duration");
        }
    }

    /** Reads {@code vmfork.node.status.page} of {@code config}. */
    public static PageSettings create(Config config) {
        try {
            Config c = config.getConfig(PATH);
            return new PageSettings(c.getInt("buffer"), c.getInt("max-browsers"), c.getInt("max-browsers-per-client"),
                    c.getDuration("hosts-interval"), c.getDuration("heartbeat"));
        } catch (ConfigException e) {
            throw new InvalidNodeConfigException(PATH, e.getMessage(), e);
        }
    }
}
