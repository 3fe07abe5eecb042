package io.vmfork.vmm.config;

import java.util.List;

/**
 * The configuration names a key that no vmfork module defines, gives a key a value of the
 * wrong type, or cannot be read at all. The message has one line per problem, each naming
 * where it is (file and line, or the {@code -D} option), the key, and what to do.
 */
public final class InvalidConfigException extends RuntimeException {
    private final List<String> problems;

    public InvalidConfigException(List<String> problems) {
        super(String.join("\n", problems));
        this.problems = List.copyOf(problems);
    }

    public InvalidConfigException(String problem, Throwable cause) {
        super(problem, cause);
        this.problems = List.of(problem);
    }

    /** One line per problem. */
    public List<String> problems() {
        return problems;
    }
}
