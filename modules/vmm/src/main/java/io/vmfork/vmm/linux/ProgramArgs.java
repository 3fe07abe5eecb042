package io.vmfork.vmm.linux;

import java.util.List;

/**
 * What a Linux program is started with: its argument vector ({@code argv[0]} first), its
 * whole environment, given explicitly ("K=V" each; nothing of the host's is added), and its
 * read-only root: a host directory its file calls see as "/" (null: no files at all).
 */
public record ProgramArgs(List<String> argv, List<String> env, java.nio.file.Path root) {
    /** Bytes of argv and env strings together a start accepts (as the kernel's ARG_MAX-like bound). */
    public static final int MAX_BYTES = 128 * 1024;

    public ProgramArgs(List<String> argv, List<String> env) {
        this(argv, env, null);
    }

    public ProgramArgs {
        if (root != null) {
            try {
                root = root.toRealPath();
            } catch (java.io.IOException e) {
                throw new IllegalArgumentException("the root " + root + " cannot be read: " + e.getMessage());
            }
            if (!java.nio.file.Files.isDirectory(root)) {
                throw new IllegalArgumentException("the root " + root + " is not a directory");
            }
        }
        argv = List.copyOf(argv);
        env = List.copyOf(env);
        long bytes = 0;
        for (String s : argv) {
            checkString(s, "argument");
            bytes += s.length() + 1;
        }
        for (String s : env) {
            checkString(s, "environment entry");
            if (s.indexOf('=') <= 0) {
                throw new IllegalArgumentException("an environment entry is K=V, got '" + s + "'");
            }
            bytes += s.length() + 1;
        }
        if (bytes > MAX_BYTES) {
            throw new IllegalArgumentException("arguments and environment take " + bytes + " bytes, more than "
                    + MAX_BYTES);
        }
    }

    private static void checkString(String s, String what) {
        if (s == null || s.indexOf('\0') >= 0) {
            throw new IllegalArgumentException("an " + what + " must not contain a NUL byte");
        }
    }

    /** argv = {name}, no environment. */
    public static ProgramArgs of(String name) {
        return new ProgramArgs(List.of(name), List.of());
    }

    /** The same with {@code dir} as the read-only root. */
    public ProgramArgs withRoot(java.nio.file.Path dir) {
        return new ProgramArgs(argv, env, dir);
    }
}
