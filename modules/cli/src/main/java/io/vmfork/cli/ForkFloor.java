package io.vmfork.cli;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * fork.c_floor: the floor under a local fork, measured by a plain-C program that the
 * project ships as source (native-kvm's bench/fork_floor.c, in the jar) and this class
 * compiles with gcc into a temporary directory, runs and deletes. The program does the
 * work the VMM must do for a child (capture the parent's vCPU, new KVM VM over a
 * MAP_PRIVATE view of the parent's memfd, vCPU, state restored, run to the first exit);
 * see its header comment.
 */
final class ForkFloor {
    static final String SOURCE = "io/vmfork/bench/fork_floor.c";
    private static final long COMPILE_TIMEOUT_S = 60;
    private static final long RUN_TIMEOUT_S = 300;

    private ForkFloor() {
    }

    /**
     * Builds and runs the floor program: {@code runs} children of a parent of
     * {@code ramMib} with {@code touchMib} written. Returns its JSON object's fields.
     */
    static Map<String, Object> measure(int runs, long ramMib, long touchMib) {
        Path dir = null;
        try {
            dir = Files.createTempDirectory("vmfork-floor-");
            Path src = dir.resolve("fork_floor.c");
            try (InputStream in = ForkFloor.class.getClassLoader().getResourceAsStream(SOURCE)) {
                if (in == null) {
                    throw new IllegalStateException(SOURCE + " is not on the class path (is native-kvm built?)");
                }
                Files.copy(in, src);
            }
            Path exe = dir.resolve("fork_floor");
            run(List.of("gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", exe.toString(), src.toString()),
                    COMPILE_TIMEOUT_S, "gcc");
            String out = run(List.of(exe.toString(), Integer.toString(runs), Long.toString(ramMib),
                    Long.toString(touchMib)), RUN_TIMEOUT_S, "fork_floor");
            return parse(out.strip());
        } catch (IOException e) {
            throw new IllegalStateException("fork.c_floor: " + e, e);
        } finally {
            if (dir != null) {
                deleteTree(dir);
            }
        }
    }

    static String run(List<String> cmd, long timeoutS, String name) throws IOException {
        Process p;
        try {
            p = new ProcessBuilder(cmd).redirectErrorStream(true).start();
        } catch (IOException e) {
            throw new IllegalStateException("fork.c_floor: cannot start " + name + " (" + e.getMessage()
                    + "); the benchmark needs gcc", e);
        }
        try {
            byte[] out = p.getInputStream().readAllBytes();
            if (!p.waitFor(timeoutS, TimeUnit.SECONDS)) {
                throw new IllegalStateException("fork.c_floor: " + name + " did not finish within " + timeoutS + " s");
            }
            String text = new String(out, StandardCharsets.UTF_8);
            if (p.exitValue() != 0) {
                throw new IllegalStateException("fork.c_floor: " + name + " exited " + p.exitValue() + ": " + text);
            }
            return text;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("fork.c_floor: interrupted waiting for " + name, e);
        } finally {
            p.destroyForcibly();
        }
    }

    /** The program's one line, a flat JSON object of strings and numbers. */
    static Map<String, Object> parse(String line) {
        if (!line.startsWith("{") || !line.endsWith("}") || line.indexOf('\n') >= 0) {
            throw new IllegalStateException("fork.c_floor: unexpected output: " + line);
        }
        Map<String, Object> m = new LinkedHashMap<>();
        for (String field : line.substring(1, line.length() - 1).split(",")) {
            String[] kv = field.split(":", 2);
            if (kv.length != 2) {
                throw new IllegalStateException("fork.c_floor: unexpected field '" + field + "' in " + line);
            }
            String key = unquote(kv[0].strip());
            String v = kv[1].strip();
            Object value;
            if (v.startsWith("\"")) {
                value = unquote(v);
            } else if (v.equals("true") || v.equals("false")) {
                value = Boolean.valueOf(v);
            } else if (v.contains(".")) {
                value = Double.valueOf(v);
            } else {
                value = Long.valueOf(v); // not in a ?: with a Double, which would promote it
            }
            m.put(key, value);
        }
        if (!"fork.c_floor".equals(m.get("bench")) || !(m.get("p50_ms") instanceof Double)) {
            throw new IllegalStateException("fork.c_floor: unexpected output: " + line);
        }
        return m;
    }

    private static String unquote(String s) {
        if (s.length() < 2 || !s.startsWith("\"") || !s.endsWith("\"")) {
            throw new IllegalStateException("fork.c_floor: expected a string, got " + s);
        }
        return s.substring(1, s.length() - 1);
    }

    static void deleteTree(Path dir) {
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(p);
            }
        } catch (IOException e) {
            System.err.println("vmfork: could not delete " + dir + ": " + e);
        }
    }
}
