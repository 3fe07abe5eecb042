package io.vmfork.cli;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.config.ConfigCheck;

/**
 * The configuration of the commands that run VMs in this JVM (run, snapshot, restore,
 * bench): read once and checked ({@link ConfigCheck}) before any device opens.
 */
final class CliConfig {
    private CliConfig() {
    }

    /** application.conf or -Dconfig.file, -D options, reference.conf; unknown keys and wrong types refused (78). */
    static Config load() {
        return ConfigCheck.load();
    }

    /** The VMM's settings from {@code config}: a value out of range is a configuration failure (78). */
    static VmmSettings vmm(Config config) {
        try {
            return VmmSettings.create(config);
        } catch (ConfigException e) {
            throw Failure.config("invalid configuration: " + e.getMessage());
        } catch (IllegalArgumentException e) {
            throw Failure.config("invalid configuration: " + whereKey(config, e.getMessage()) + e.getMessage());
        }
    }

    /** "FILE:LINE: " of the first vmfork key a message names, when a file set it. */
    static String whereKey(Config config, String message) {
        java.util.regex.Matcher m = java.util.regex.Pattern.compile("vmfork(\\.[a-z0-9-]+)+").matcher(
                message == null ? "" : message);
        return m.find() ? ConfigCheck.where(config, m.group()) : "";
    }
}
