package io.vmfork.cli;

import java.util.concurrent.Callable;
import picocli.AutoComplete;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;

/** {@code vmfork completion}: the bash (and zsh) completion script of every command and option. */
@Command(name = "completion", header = "Print the bash/zsh completion script of vmfork.",
        description = "Print the completion script of vmfork for bash and zsh (from picocli's AutoComplete). Use it with: "
                + "source <(./vmfork completion)",
        exitCodeListHeading = "%nExit codes:%n", exitCodeList = {"0:printed"})
final class CompletionCommand implements Callable<Integer> {
    @picocli.CommandLine.Mixin
    HelpOption help;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() {
        spec.commandLine().getOut().print(AutoComplete.bash("vmfork", spec.root().commandLine()));
        spec.commandLine().getOut().flush();
        return 0;
    }
}
