package io.vmfork.cli;

import com.typesafe.config.ConfigException;
import com.typesafe.config.ConfigFactory;
import com.typesafe.config.ConfigValueFactory;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;

/** A small command-line parser: positionals, --flags, and --options with values. */
final class Args {
    static final class UsageException extends RuntimeException {
        UsageException(String message) {
            super(message);
        }
    }

    private final List<String> positionals = new ArrayList<>();
    private final List<String[]> options = new ArrayList<>();
    /** What follows a bare "--", verbatim (a Linux program's arguments); null when there is no "--". */
    private List<String> tail;

    Args(String[] args) {
        for (int i = 0; i < args.length; i++) {
            String a = args[i];
            if (a.equals("--")) {
                tail = List.of(java.util.Arrays.copyOfRange(args, i + 1, args.length));
                break;
            }
            if (a.startsWith("--")) {
                String name = a.substring(2);
                String value = null;
                int eq = name.indexOf('=');
                if (eq >= 0) {
                    value = name.substring(eq + 1);
                    name = name.substring(0, eq);
                } else if (i + 1 < args.length && !args[i + 1].startsWith("--") && !isFlag(name)) {
                    value = args[++i];
                }
                options.add(new String[] {name, value});
            } else {
                positionals.add(a);
            }
        }
    }

    private static boolean isFlag(String name) {
        return name.equals("json") || name.equals("quiet") || name.equals("keep");
    }

    /** The arguments after a bare "--", verbatim; null when the command line has none. */
    List<String> tail() {
        return tail;
    }

    List<String> positionals() {
        return positionals;
    }

    String positional(int i, String what) {
        if (i >= positionals.size()) {
            throw new UsageException("missing " + what);
        }
        return positionals.get(i);
    }

    boolean flag(String name) {
        return options.stream().anyMatch(o -> o[0].equals(name));
    }

    String option(String name) {
        String v = null;
        for (String[] o : options) {
            if (o[0].equals(name)) {
                if (o[1] == null) {
                    throw new UsageException("--" + name + " needs a value");
                }
                v = o[1];
            }
        }
        return v;
    }

    List<String> all(String name) {
        List<String> vs = new ArrayList<>();
        for (String[] o : options) {
            if (o[0].equals(name)) {
                if (o[1] == null) {
                    throw new UsageException("--" + name + " needs a value");
                }
                vs.add(o[1]);
            }
        }
        return vs;
    }

    void allowOnly(String... names) {
        List<String> ok = List.of(names);
        for (String[] o : options) {
            if (!ok.contains(o[0])) {
                throw new UsageException("unknown option --" + o[0]);
            }
        }
    }

    /** A memory size such as 64M, 64MiB, 1G, 1GiB or a number of bytes. */
    static long bytes(String name, String text) {
        try {
            return ConfigFactory.empty().withValue("v", ConfigValueFactory.fromAnyRef(text)).getBytes("v");
        } catch (ConfigException e) {
            throw new UsageException("--" + name + ": '" + text + "' is not a size (try 64M or 1G)");
        }
    }

    /** A duration such as 10s, 500ms or 2m. */
    static Duration duration(String name, String text) {
        try {
            return ConfigFactory.empty().withValue("v", ConfigValueFactory.fromAnyRef(text)).getDuration("v");
        } catch (ConfigException e) {
            throw new UsageException("--" + name + ": '" + text + "' is not a duration (try 10s or 500ms)");
        }
    }

    int intOption(String name, int dflt) {
        String v = option(name);
        if (v == null) {
            return dflt;
        }
        try {
            return Integer.parseInt(v);
        } catch (NumberFormatException e) {
            throw new UsageException("--" + name + ": '" + v + "' is not a whole number");
        }
    }
}
