package io.vmfork.cli;

import com.typesafe.config.ConfigException;
import io.vmfork.cluster.node.InvalidNodeConfigException;
import io.vmfork.kvm.KvmException;
import io.vmfork.os.NativeCallException;
import io.vmfork.vmm.capsule.CapsuleFormatException;
import io.vmfork.vmm.capsule.CapsuleIncompatibleException;
import io.vmfork.vmm.capsule.CapsuleSignatureException;
import io.vmfork.vmm.config.InvalidConfigException;
import io.vmfork.vmm.guest.InvalidGuestImageException;
import io.vmfork.vmm.platform.process.ProcessPlatformException;
import java.io.IOException;
import java.io.PrintWriter;
import java.io.UncheckedIOException;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;

/**
 * The exit codes of the vmfork command (sysexits.h, and 124 for a timeout as timeout(1)),
 * and the one place that turns a failure into one of them and one line on stderr: the
 * problem and what to do. A stack trace only with {@code --debug}.
 */
final class ExitCodes {
    static final int OK = 0;
    /** A wrong command, option or argument. */
    static final int USAGE = 64;
    /** A file whose content is wrong: a capsule that is not valid, a guest that is not an ELF. */
    static final int DATAERR = 65;
    /** A file named on the command line that is missing or unreadable. */
    static final int NOINPUT = 66;
    /** This host cannot do it: no usable platform, a port in use, a capsule it cannot run. */
    static final int UNAVAILABLE = 69;
    /** A step that failed, or a fault of vmfork itself. */
    static final int SOFTWARE = 70;
    /** An output file that cannot be created. */
    static final int CANTCREAT = 73;
    /** Reading or writing failed midway. */
    static final int IOERR = 74;
    /** Not allowed: a capsule not signed by a trusted signer. */
    static final int NOPERM = 77;
    /** A configuration (file, -D option, --node-config) that cannot be used. */
    static final int CONFIG = 78;
    /** --timeout ran out. */
    static final int TIMEOUT = 124;

    /** The list every command's help ends with (picocli's "key:description" form). */
    static final String[] ALL = {
        "0:success (run and restore: the guest's own exit code)",
        "64:bad usage: an unknown command or option, a stray or wrong argument",
        "65:bad data: a capsule or guest image that is not valid",
        "66:no input: a file named on the command line is missing or unreadable",
        "69:unavailable: this host cannot run guests, a port is in use, a capsule this host cannot run",
        "70:a step failed (the line says which), or an internal error",
        "73:an output file cannot be created",
        "74:an I/O error",
        "77:a capsule not signed by a trusted signer",
        "78:invalid configuration: an unknown key, a wrong value (file and line named)",
        "124:--timeout ran out",
    };

    private ExitCodes() {
    }

    /** Prints {@code failure} as one line naming the command, and returns its exit code. */
    static int report(Throwable failure, String command, boolean debug, PrintWriter err) {
        Throwable e = unwrap(failure);
        int code = code(e);
        err.println(command + ": " + message(e, code));
        if (debug) {
            failure.printStackTrace(err);
        }
        err.flush();
        return code;
    }

    private static Throwable unwrap(Throwable e) {
        while ((e instanceof CompletionException || e instanceof ExecutionException) && e.getCause() != null) {
            e = e.getCause();
        }
        return e;
    }

    static int code(Throwable e) {
        if (e instanceof Failure f) {
            return f.code();
        }
        if (e instanceof InvalidConfigException || e instanceof InvalidNodeConfigException
                || e instanceof ConfigException) {
            return CONFIG;
        }
        if (e instanceof CapsuleSignatureException) {
            return NOPERM;
        }
        if (e instanceof CapsuleFormatException || e instanceof InvalidGuestImageException) {
            return DATAERR;
        }
        if (e instanceof KvmException || e instanceof ProcessPlatformException || e instanceof NativeCallException
                || e instanceof CapsuleIncompatibleException) {
            return UNAVAILABLE;
        }
        if (e instanceof UncheckedIOException || e instanceof IOException) {
            return IOERR;
        }
        return SOFTWARE;
    }

    private static String message(Throwable e, int code) {
        if (e instanceof Failure || e instanceof InvalidConfigException || e instanceof InvalidNodeConfigException
                || code == DATAERR || code == NOPERM) {
            return e.getMessage();
        }
        if (e instanceof ConfigException) {
            return "invalid configuration: " + e.getMessage() + " (docs/configuration.md lists every key)";
        }
        if (code == UNAVAILABLE) {
            return e.getMessage();
        }
        if (code == IOERR) {
            return "I/O error: " + (e.getCause() != null ? e.getCause().getMessage() : e.getMessage());
        }
        return "internal error: " + e.getClass().getSimpleName() + (e.getMessage() == null ? "" : ": "
                + e.getMessage()) + " (rerun with --debug for the stack trace, and please report it)";
    }
}
