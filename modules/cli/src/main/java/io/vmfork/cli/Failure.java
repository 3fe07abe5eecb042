package io.vmfork.cli;

/**
 * A command's failure that it has put in words: one line for the user, naming the problem
 * and what to do, and the exit code ({@link ExitCodes}) it ends the command with. Thrown
 * by a command; {@link ExitCodes#report} prints it.
 */
final class Failure extends RuntimeException {
    private final int code;

    private Failure(int code, String message, Throwable cause) {
        super(message, cause);
        this.code = code;
    }

    int code() {
        return code;
    }

    static Failure of(int code, String message) {
        return new Failure(code, message, null);
    }

    static Failure of(int code, String message, Throwable cause) {
        return new Failure(code, message, cause);
    }

    /** A wrong argument or option: 64. */
    static Failure usage(String message) {
        return new Failure(ExitCodes.USAGE, message, null);
    }

    /** A file named on the command line that is missing or cannot be read: 66. */
    static Failure noInput(String message) {
        return new Failure(ExitCodes.NOINPUT, message, null);
    }

    /** A file whose content is not what it should be: 65. */
    static Failure data(String message) {
        return new Failure(ExitCodes.DATAERR, message, null);
    }

    /** A configuration that cannot be used: 78. */
    static Failure config(String message) {
        return new Failure(ExitCodes.CONFIG, message, null);
    }

    /** This host cannot do it (no usable platform, a port in use): 69. */
    static Failure unavailable(String message) {
        return new Failure(ExitCodes.UNAVAILABLE, message, null);
    }

    /** An output file that cannot be created: 73. */
    static Failure cantCreate(String message) {
        return new Failure(ExitCodes.CANTCREAT, message, null);
    }
}
