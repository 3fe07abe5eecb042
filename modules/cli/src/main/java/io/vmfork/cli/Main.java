package io.vmfork.cli;

import java.io.PrintWriter;
import java.util.concurrent.Callable;
import picocli.CommandLine;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.ParseResult;
import picocli.CommandLine.Spec;

/**
 * The vmfork command: picocli parses, checks every option and argument against its type,
 * and prints each command's help; {@link ExitCodes} turns every failure into an exit code
 * and one line.
 */
public final class Main {
    static final int EX_USAGE = ExitCodes.USAGE;
    static final int EX_UNAVAILABLE = ExitCodes.UNAVAILABLE;
    static final int EX_SOFTWARE = ExitCodes.SOFTWARE;
    static final int EX_CANTCREAT = ExitCodes.CANTCREAT;
    static final int EX_CONFIG = ExitCodes.CONFIG;
    static final int EX_TIMEOUT = ExitCodes.TIMEOUT;

    private Main() {
    }

    public static void main(String[] args) {
        System.exit(run(args));
    }

    static int run(String... args) {
        return commandLine().execute(args);
    }

    /** The whole command tree, writing to this moment's System.out and System.err. */
    static CommandLine commandLine() {
        CommandLine cl = new CommandLine(new Vmfork());
        cl.setOut(new PrintWriter(System.out, true));
        cl.setErr(new PrintWriter(System.err, true));
        cl.setParameterExceptionHandler(Main::usageError);
        cl.setExecutionExceptionHandler((e, sub, parsed) -> ExitCodes.report(e, name(sub), debug(parsed),
                sub.getErr()));
        cl.setExitCodeExceptionMapper(ExitCodes::code);
        cl.getCommandSpec().usageMessage().exitCodeList(exitCodes(ExitCodes.ALL));
        return cl;
    }

    private static java.util.Map<String, String> exitCodes(String[] list) {
        java.util.Map<String, String> m = new java.util.LinkedHashMap<>();
        for (String s : list) {
            int colon = s.indexOf(':');
            m.put(s.substring(0, colon), s.substring(colon + 1));
        }
        return m;
    }

    /** "vmfork bench transfer": the command's full name, as every message starts. */
    private static String name(CommandLine cl) {
        return cl.getCommandSpec().qualifiedName();
    }

    private static boolean debug(ParseResult parsed) {
        for (ParseResult p = parsed; p != null; p = p.subcommand()) {
            if (p.hasMatchedOption("--debug")) {
                return true;
            }
        }
        return false;
    }

    /** A wrong command line: one line naming what is wrong, where help is, exit 64. */
    private static int usageError(CommandLine.ParameterException e, String[] args) {
        CommandLine cl = e.getCommandLine();
        PrintWriter err = cl.getErr();
        err.println(name(cl) + ": " + e.getMessage() + " (see " + name(cl) + " --help)");
        CommandLine.UnmatchedArgumentException.printSuggestions(e, err);
        if (debug(e.getCommandLine().getParseResult())) {
            e.printStackTrace(err);
        }
        err.flush();
        return ExitCodes.USAGE;
    }

    /** {@code vmfork}: without a command, its usage on stderr and 64. */
    @Command(name = "vmfork", mixinStandardHelpOptions = true, versionProvider = VersionInfo.class,
            description = "Launches VMs fast by forking VMs that are already running, on one host or over a cluster. Every "
                    + "command has --help; the README's \"The vmfork command\" says more.",
            subcommands = {DemoCommand.Cli.class, RunCommand.class, CapsuleCommands.Snapshot.class,
                CapsuleCommands.Restore.class, CapsuleCommands.CapsuleKey.class, NodeCommand.class, CertsCommand.class,
                BenchCommand.class, CompletionCommand.class, CommandLine.HelpCommand.class},
            exitCodeListHeading = "%nExit codes (of every command):%n")
    static final class Vmfork implements Callable<Integer> {
        @Spec
        CommandSpec spec;

        @Option(names = "--debug", scope = CommandLine.ScopeType.INHERIT,
                description = "On a failure, print the stack trace after its line.")
        boolean debug;

        @Override
        public Integer call() {
            CommandLine cl = spec.commandLine();
            cl.getErr().println("vmfork: a command is missing");
            cl.usage(cl.getErr());
            return ExitCodes.USAGE;
        }
    }
}
