package io.vmfork.vmm.linux;

import java.util.List;

/**
 * What a Linux program is started with: its argument vector ({@code argv[0]} first) and
 * its whole environment, given explicitly ("K=V" each). Nothing of the host's environment
 * is added.
 */
public record ProgramArgs(List<String> argv, List<String> env) {
    /** Bytes of argv and env strings together a start accepts (as the kernel's ARG_MAX-like bound). */
    public static final int MAX_BYTES = 128 * 1024;

    public ProgramArgs {
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
}
