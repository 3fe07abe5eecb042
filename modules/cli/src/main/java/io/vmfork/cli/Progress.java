package io.vmfork.cli;

import java.io.PrintStream;

/**
 * A command's progress. On a terminal it is one line that rewrites itself (carriage return,
 * erase to the end of the line), updated as often as {@link #update} is called; elsewhere
 * (a pipe, a file, a CI log) only the steps ({@link #step}) are printed, each on a plain
 * line of its own with the seconds since the start, and updates are dropped.
 */
final class Progress {
    private static final String ERASE_LINE = "\r\033[K";
    private static final int MAX_WIDTH = 79;

    private final PrintStream out;
    private final boolean terminal;
    private final String prefix;
    private final long start = System.nanoTime();
    private String step = "";
    private boolean lineShown;

    private Progress(PrintStream out, boolean terminal, String prefix) {
        this.out = out;
        this.terminal = terminal;
        this.prefix = prefix;
    }

    /**
     * Progress on {@code out}, rewriting one line when this JVM has a terminal (stdin and
     * stdout, as {@link System#console()} says) and {@code TERM} is not {@code dumb}.
     */
    static Progress onStdout(String prefix) {
        boolean terminal = System.console() != null && !"dumb".equals(System.getenv("TERM"));
        return new Progress(System.out, terminal, prefix);
    }

    /** Progress on {@code out} as on a terminal or not. */
    static Progress of(PrintStream out, boolean terminal, String prefix) {
        return new Progress(out, terminal, prefix);
    }

    boolean terminal() {
        return terminal;
    }

    /** A new step: shown on the line on a terminal, printed as a line elsewhere. */
    synchronized void step(String text) {
        step = text;
        if (terminal) {
            show(text);
        } else {
            out.printf("%s[%5.1f s] %s%n", prefix, (System.nanoTime() - start) / 1e9, text);
            out.flush();
        }
    }

    /** Detail of the current step (a count, say): shown on a terminal only. */
    synchronized void update(String detail) {
        if (terminal) {
            show(step + ": " + detail);
        }
    }

    /** Clears the progress line (on a terminal) so that ordinary output can follow. */
    synchronized void clear() {
        if (terminal && lineShown) {
            out.print(ERASE_LINE);
            out.flush();
            lineShown = false;
        }
    }

    private void show(String text) {
        // A line longer than the terminal wraps, and the carriage return then rewrites only its end.
        String line = prefix + String.format("[%5.1f s] ", (System.nanoTime() - start) / 1e9) + text;
        if (line.length() > MAX_WIDTH) {
            line = line.substring(0, MAX_WIDTH - 3) + "...";
        }
        out.print(ERASE_LINE + line);
        out.flush();
        lineShown = true;
    }
}
