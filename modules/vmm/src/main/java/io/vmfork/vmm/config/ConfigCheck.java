package io.vmfork.vmm.config;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigException;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigObject;
import com.typesafe.config.ConfigOrigin;
import com.typesafe.config.ConfigResolveOptions;
import com.typesafe.config.ConfigUtil;
import com.typesafe.config.ConfigValue;
import com.typesafe.config.ConfigValueType;
import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;

/**
 * Checks what a user wrote under {@code vmfork} against what the modules' reference.conf
 * define, before anything opens or joins: a key no module defines (a typo such as
 * {@code vm-slotz}, or a root {@code vmfrok} that would leave every setting at its default)
 * and a value of the wrong type (a word where a number or a size belongs) are refused with
 * the file and line (or the {@code -D} option), the key, and the nearest known key or the
 * type expected. Ranges and choices are the settings classes' to check ({@code VmmSettings},
 * {@code NodeSettings}); this is what they cannot see: keys they never read.
 *
 * <p>Two kinds of subtree take keys of the user's choosing and are not checked below their
 * root: an object that reference.conf leaves empty (a map such as {@code
 * vmfork.node.placement.policies}) and a Pekko dispatcher's settings (an object with an
 * {@code executor} key).
 */
public final class ConfigCheck {
    /**
     * System properties under vmfork that tools and tests read directly, not through the
     * configuration (System.getProperty, logback): not configuration keys, so not checked.
     */
    private static final List<String> NOT_CONFIGURATION = List.of("vmfork.local-cluster", "vmfork.log",
            "vmfork.multijvm", "vmfork.fuzz", "vmfork.demo.test");
    private static final String ROOT = "vmfork";

    private ConfigCheck() {
    }

    /**
     * {@code ConfigFactory.load()}, checked: system properties over application.conf (or
     * {@code -Dconfig.file}, {@code config.resource}, {@code config.url}) over reference.conf.
     *
     * @throws InvalidConfigException naming every problem found
     */
    public static Config load() {
        Config application;
        try {
            application = ConfigFactory.defaultApplication();
        } catch (ConfigException e) {
            throw new InvalidConfigException(describe(e), e);
        }
        return load(application, "the configuration");
    }

    /**
     * {@code ConfigFactory.load(file)}, checked: system properties over {@code file} over
     * reference.conf.
     *
     * @throws InvalidConfigException naming every problem found
     */
    public static Config load(Config file, String what) {
        Config overrides = ConfigFactory.defaultOverrides();
        Config full;
        Config reference;
        try {
            // The reference unresolved, as ConfigFactory.load does: its substitutions (such as
            // vmfork.transfer.host = ${vmfork.node.hostname}) must see the file's values, not
            // the reference's own (a node at 10.77.0.3 bound its transfer server at 127.0.0.1).
            full = overrides.withFallback(file).withFallback(ConfigFactory.defaultReferenceUnresolved()).resolve();
            // The modules' reference.conf alone: defaultReference() has the system properties in it.
            reference = ConfigFactory.defaultReferenceUnresolved().resolve();
        } catch (ConfigException e) {
            throw new InvalidConfigException(describe(e), e);
        }
        List<String> problems = new ArrayList<>();
        problems.addAll(check(overrides, reference, full, true));
        problems.addAll(check(file, reference, full, false));
        if (!problems.isEmpty()) {
            throw new InvalidConfigException(new ArrayList<>(new LinkedHashSet<>(problems)));
        }
        return full;
    }

    /**
     * The problems of one source of configuration ({@code source}, unresolved is fine; its
     * substitutions are resolved from {@code full}) against {@code reference}; empty when
     * it is fine. {@code systemProperties}: name a problem by its {@code -D} option, and
     * leave the properties that are not configuration alone.
     */
    public static List<String> check(Config source, Config reference, Config full, boolean systemProperties) {
        Config resolved;
        try {
            resolved = source.resolveWith(full, ConfigResolveOptions.defaults().setAllowUnresolved(true));
        } catch (ConfigException e) {
            return List.of(describe(e));
        }
        List<String> problems = new ArrayList<>();
        ConfigObject root = resolved.root();
        ConfigObject refRoot = reference.root();
        for (Map.Entry<String, ConfigValue> e : root.entrySet()) {
            String key = e.getKey();
            if (key.equals(ROOT)) {
                if (refRoot.get(ROOT) instanceof ConfigObject ref) {
                    walk(e.getValue(), ref, ROOT, problems, systemProperties, reference);
                }
            } else if (!refRoot.containsKey(key) && key.length() >= ROOT.length() - 1 && distance(key, ROOT) <= 2) {
                problems.add(label(e.getValue(), key, systemProperties) + ": unknown root key; did you mean "
                        + ROOT + "? (as written, every setting under it is ignored)");
            }
        }
        // In the file's order (an object's keys come in no particular order).
        problems.sort(java.util.Comparator.comparingInt(ConfigCheck::lineOf));
        return problems;
    }

    private static void walk(ConfigValue value, ConfigObject ref, String path, List<String> problems,
                             boolean systemProperties, Config reference) {
        if (!(value instanceof ConfigObject object)) {
            problems.add(label(value, path, systemProperties) + ": " + given(value)
                    + " is not an object (keys: " + String.join(", ", new TreeSet<>(ref.keySet())) + ")");
            return;
        }
        for (Map.Entry<String, ConfigValue> e : object.entrySet()) {
            String key = e.getKey();
            String full = path + "." + ConfigUtil.joinPath(key);
            ConfigValue v = e.getValue();
            if (systemProperties && notConfiguration(full, v)) {
                continue;
            }
            ConfigValue r = ref.get(key);
            if (r == null) {
                problems.add(label(v, full, systemProperties) + ": unknown key; "
                        + suggestion(key, path, ref, reference));
            } else if (r instanceof ConfigObject refObject) {
                if (!open(refObject)) {
                    walk(v, refObject, full, problems, systemProperties, reference);
                } else if (!(v instanceof ConfigObject) && v.valueType() != ConfigValueType.NULL) {
                    problems.add(label(v, full, systemProperties) + ": " + given(v) + " is not an object");
                }
            } else {
                String expected = mismatch(v, r);
                if (expected != null) {
                    problems.add(label(v, full, systemProperties) + ": " + given(v) + " is not " + expected);
                }
            }
        }
    }

    /** Whether {@code v} at {@code path} holds only properties that are not configuration. */
    private static boolean notConfiguration(String path, ConfigValue v) {
        if (NOT_CONFIGURATION.stream().anyMatch(p -> path.equals(p) || path.startsWith(p + "."))) {
            return true;
        }
        if (v instanceof ConfigObject o && !o.isEmpty()) {
            return o.entrySet().stream().allMatch(e -> notConfiguration(path + "." + ConfigUtil.joinPath(e.getKey()),
                    e.getValue()));
        }
        return false;
    }

    /** A subtree whose keys are the user's: a map left empty in reference.conf, a dispatcher's settings. */
    private static boolean open(ConfigObject ref) {
        return ref.isEmpty() || ref.containsKey("executor");
    }

    /** What {@code v} should have been, or null when it fits the reference value {@code r}. */
    private static String mismatch(ConfigValue v, ConfigValue r) {
        if (v.valueType() == ConfigValueType.NULL || r.valueType() == ConfigValueType.NULL) {
            return null;
        }
        Config one = ConfigFactory.empty().withValue("v", v);
        String expected = expectation(r);
        try {
            switch (r.valueType()) {
                case NUMBER -> {
                    if (r.unwrapped() instanceof Integer || r.unwrapped() instanceof Long) {
                        one.getLong("v");
                    } else {
                        one.getDouble("v");
                    }
                }
                case BOOLEAN -> one.getBoolean("v");
                case LIST -> one.getList("v");
                case STRING -> {
                    switch (expected) {
                        case BOOLEAN -> one.getBoolean("v");
                        case SIZE -> one.getBytes("v");
                        case DURATION -> one.getDuration("v");
                        default -> one.getString("v");
                    }
                }
                default -> {
                    return null;
                }
            }
            return null;
        } catch (ConfigException.NotResolved e) {
            return null;
        } catch (ConfigException e) {
            return expected;
        }
    }

    private static final String BOOLEAN = "a boolean (on, off, true or false)";
    /** What HOCON's getBoolean takes besides true and false: reference.conf writes on and off. */
    private static final List<String> BOOLEAN_WORDS = List.of("on", "off", "yes", "no", "true", "false");
    private static final String SIZE = "a size (such as 64 MiB, 1 GiB, or a number of bytes)";
    private static final String DURATION = "a duration (such as 500ms, 5s or 2m)";

    private static String expectation(ConfigValue r) {
        Config one = ConfigFactory.empty().withValue("v", r);
        return switch (r.valueType()) {
            case NUMBER -> r.unwrapped() instanceof Integer || r.unwrapped() instanceof Long ? "a whole number"
                    : "a number";
            case BOOLEAN -> BOOLEAN;
            case LIST -> "a list ([...])";
            case STRING -> {
                if (BOOLEAN_WORDS.contains(String.valueOf(r.unwrapped()))) {
                    yield BOOLEAN;
                }
                if (parses(() -> one.getBytes("v"))) {
                    yield SIZE;
                }
                if (parses(() -> one.getDuration("v"))) {
                    yield DURATION;
                }
                yield "a string";
            }
            default -> r.valueType().name().toLowerCase();
        };
    }

    private static boolean parses(Runnable r) {
        try {
            r.run();
            return true;
        } catch (ConfigException e) {
            return false;
        }
    }

    private static String given(ConfigValue v) {
        return switch (v.valueType()) {
            case OBJECT -> "an object";
            case LIST -> "a list";
            case STRING -> "'" + v.unwrapped() + "'";
            default -> String.valueOf(v.unwrapped());
        };
    }

    /** "did you mean vm-slots?": the nearest key beside it, else a key of that name elsewhere, else the keys. */
    private static String suggestion(String key, String parent, ConfigObject ref, Config reference) {
        String best = null;
        int bestDistance = Integer.MAX_VALUE;
        for (String k : new TreeSet<>(ref.keySet())) {
            int d = distance(key, k);
            if (d < bestDistance) {
                best = k;
                bestDistance = d;
            }
        }
        if (best != null && bestDistance <= Math.max(2, key.length() / 3)) {
            return "did you mean " + best + "?";
        }
        for (Map.Entry<String, ConfigValue> e : reference.getConfig(ROOT).entrySet()) {
            List<String> parts = ConfigUtil.splitPath(e.getKey());
            int at = parts.indexOf(key);
            if (at >= 0) {
                return "did you mean " + ROOT + "." + ConfigUtil.joinPath(parts.subList(0, at + 1)) + "?";
            }
        }
        return parent + " has " + String.join(", ", new TreeSet<>(ref.keySet()));
    }

    /** The key and where it was set: "FILE:LINE: KEY", or "-DKEY" for a system property. */
    private static String label(ConfigValue v, String path, boolean systemProperties) {
        return systemProperties ? "-D" + path : where(v.origin()) + path;
    }

    /** "FILE:LINE: " or the origin's own description, for a message that names where a value came from. */
    public static String where(ConfigOrigin o) {
        if (o == null) {
            return "";
        }
        String name = o.filename() != null ? o.filename() : o.url() != null ? o.url().toString()
                : o.resource() != null ? o.resource() : null;
        if (name == null) {
            return o.description() + ": ";
        }
        return o.lineNumber() > 0 ? name + ":" + o.lineNumber() + ": " : name + ": ";
    }

    /** "FILE:LINE: " of the value at {@code path} in {@code config}, or "" when it has no such value. */
    public static String where(Config config, String path) {
        try {
            if (!config.hasPathOrNull(path) || config.getValue(path) instanceof ConfigObject) {
                return "";
            }
            ConfigOrigin o = config.getValue(path).origin();
            return o.description().startsWith("system properties") ? "-D" + path + ": " : where(o);
        } catch (ConfigException e) {
            return "";
        }
    }

    private static String describe(ConfigException e) {
        return "cannot read the configuration: " + e.getMessage();
    }

    private static final java.util.regex.Pattern LINE = java.util.regex.Pattern.compile("^[^:]*:(\\d+): ");

    private static int lineOf(String problem) {
        java.util.regex.Matcher m = LINE.matcher(problem);
        return m.find() ? Integer.parseInt(m.group(1)) : 0;
    }

    /** Levenshtein distance. */
    static int distance(String a, String b) {
        int[] prev = new int[b.length() + 1];
        int[] cur = new int[b.length() + 1];
        for (int j = 0; j <= b.length(); j++) {
            prev[j] = j;
        }
        for (int i = 1; i <= a.length(); i++) {
            cur[0] = i;
            for (int j = 1; j <= b.length(); j++) {
                int sub = prev[j - 1] + (a.charAt(i - 1) == b.charAt(j - 1) ? 0 : 1);
                cur[j] = Math.min(sub, Math.min(prev[j] + 1, cur[j - 1] + 1));
            }
            int[] t = prev;
            prev = cur;
            cur = t;
        }
        return prev[b.length()];
    }
}
