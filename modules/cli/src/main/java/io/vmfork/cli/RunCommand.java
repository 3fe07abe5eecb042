package io.vmfork.cli;

import com.typesafe.config.Config;
import io.vmfork.vmm.LaunchException;
import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.guest.InvalidGuestImageException;
import io.vmfork.vmm.linux.ProgramArgs;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code vmfork run}: one VM, its console on stdout, its message channel on the command
 * line or stdin. A Linux program (docs/linux.md) takes its arguments after "--" (positionals
 * after GUEST; picocli ends options at {@code --}), its whole environment from
 * {@code --env K=V} (repeatable) and its read-only root from {@code --root}; argv[0] is "/"
 * and the program's file name.
 */
@Command(name = "run", header = "Boot a guest in a VM, attached to the terminal.", sortOptions = false,
        description = "Boot GUEST in a VM on this host's platform. Its console (a Linux program's stderr) streams to "
                + "stdout. Requests for its message channel come from --request (repeatable) or, without any, one per "
                + "line on stdin; each reply is printed (a Linux program reads each request as a line of its stdin and "
                + "answers with a line of its stdout). A Linux program gets ARGS after \"--\", exactly the --env "
                + "entries as its environment and DIR as its read-only root (no files without it); the system calls "
                + "it made that are not served are listed on stderr at its end. The command exits with the guest's "
                + "exit code.",
        exitCodeListHeading = "%nExit codes:%n",
        exitCodeList = {"N:the guest's exit code (0 when it exited cleanly)",
            "64:bad usage: an unknown guest name, an option out of range",
            "65:GUEST is not a guest image (an SDK guest or a static x86-64 Linux program; a dynamically linked,"
                + " 32-bit or other-architecture ELF is refused with its reason)",
            "66:GUEST names a file that does not exist",
            "69:this host cannot run guests (the line says what is refused)",
            "70:the VM crashed (the reason names the RIP)",
            "78:invalid configuration", "124:--timeout ran out"})
final class RunCommand implements Callable<Integer> {
    @Mixin
    HelpOption help;

    @Parameters(index = "0", paramLabel = "GUEST",
            description = "A shipped example (hello, warm-worker, forker, smp, lua-worker, ...) or a path to an ELF: a"
                    + " guest built with the SDK, or a static x86-64 Linux program (docs/linux.md).")
    String guest;

    @Parameters(index = "1..*", paramLabel = "ARGS",
            description = "A Linux program's arguments, after \"--\" (argv[0] is \"/\" and its file name).")
    List<String> programArgs = new ArrayList<>();

    @Option(names = "--memory", paramLabel = "SIZE", converter = Converters.Size.class,
            description = "Guest RAM (64M, 1G; a multiple of 2 MiB). Default: vmfork.vmm.memory.default (256 MiB);"
                    + " untouched RAM costs nothing.")
    Long memory;

    @Option(names = "--vcpus", paramLabel = "N", defaultValue = "1",
            description = "vCPUs, 1 to vmfork.vmm.max-vcpus. Default: ${DEFAULT-VALUE}.")
    int vcpus;

    @Option(names = "--timeout", paramLabel = "DURATION", converter = Converters.Duration.class,
            description = "Stop the VM after DURATION (10s, 500ms) and exit 124. Default: none.")
    Duration timeout;

    @Option(names = "--vm-type", paramLabel = "N", defaultValue = "0",
            description = "The VM's vm_type (what placement policies key on). Default: ${DEFAULT-VALUE}.")
    int vmType;

    @Option(names = "--request", paramLabel = "TEXT",
            description = "A request for the guest's message channel (repeatable); without any, stdin's lines.")
    List<String> requests = new ArrayList<>();

    @Option(names = "--env", paramLabel = "K=V",
            description = "An environment entry of a Linux program (repeatable); it gets these and nothing of the"
                    + " host's.")
    List<String> env = new ArrayList<>();

    @Option(names = "--root", paramLabel = "DIR",
            description = "A Linux program's read-only root directory; without it, it has no files.")
    Path root;

    @Override
    public Integer call() {
        if (vcpus < 1) {
            throw Failure.usage("--vcpus: a VM has at least one vCPU, not " + vcpus);
        }
        if (vmType < 0) {
            throw Failure.usage("--vm-type: a vm_type cannot be negative, got " + vmType);
        }
        Config config = CliConfig.load();
        VmmSettings settings = CliConfig.vmm(config);
        long mem = memory == null ? settings.defaultMemory() : memory;
        try {
            Vmm.checkLaunch(settings, mem, vcpus);
        } catch (LaunchException e) {
            throw Failure.usage(e.getMessage());
        }
        ElfImage image = guestImage(guest);
        ProgramArgs program = null;
        if (image.kind() == ElfImage.Kind.LINUX) {
            String file = image.name().substring(image.name().lastIndexOf('/') + 1);
            List<String> argv = new ArrayList<>();
            argv.add("/" + file);
            argv.addAll(programArgs);
            try {
                program = new ProgramArgs(argv, env, root);
            } catch (IllegalArgumentException e) {
                throw Failure.usage(e.getMessage());
            }
        } else if (!env.isEmpty() || !programArgs.isEmpty() || root != null) {
            throw Failure.usage(guest + " is an SDK guest: it takes no arguments after -- and no --env or --root (those"
                    + " are for Linux programs, docs/linux.md)");
        }
        VmSession session = new VmSession();
        try (Vmm vmm = Vmm.open(settings)) {
            System.err.println("vmfork run: platform " + vmm.platform());
            VirtualMachine vm = vmm.launch(new VmSpec(image, mem, vcpus, vmType, session.listener(), program));
            int code = session.attach(vm, requests, timeout, guest);
            if (!vm.unservedSyscalls().isEmpty()) {
                System.err.println("vmfork run: system calls not served (each answered ENOSYS): "
                        + vm.unservedSyscalls().entrySet().stream().map(e -> e.getKey() + " x" + e.getValue())
                                .collect(java.util.stream.Collectors.joining(", ")));
            }
            return code;
        } catch (LaunchException e) {
            throw Failure.usage("cannot launch " + guest + ": " + e.getMessage());
        }
    }

    /**
     * GUEST as an image, before any device opens: a path that names no file exits 66, a
     * name that is no shipped guest 64, a file that is not a guest image 65.
     */
    static ElfImage guestImage(String guest) {
        boolean path = guest.contains("/") || guest.endsWith(".elf");
        if (path && !Files.isRegularFile(Path.of(guest))) {
            throw Failure.noInput("no guest image at " + guest + (Files.exists(Path.of(guest)) ? " (not a file)"
                    : ": no such file"));
        }
        if (path && !Files.isReadable(Path.of(guest))) {
            throw Failure.noInput("cannot read " + guest + ": permission denied");
        }
        try {
            return Guests.resolve(guest);
        } catch (InvalidGuestImageException e) {
            if (!path && !Files.exists(Path.of(guest))) {
                throw Failure.usage(e.getMessage());
            }
            throw Failure.data(e.getMessage());
        }
    }
}
