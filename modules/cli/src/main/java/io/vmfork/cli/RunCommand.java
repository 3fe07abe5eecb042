package io.vmfork.cli;

import io.vmfork.kvm.KvmException;
import io.vmfork.vmm.LaunchException;
import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.guest.InvalidGuestImageException;
import io.vmfork.vmm.linux.ProgramArgs;
import java.time.Duration;
import java.util.List;

/**
 * {@code vmfork run}: one VM, its console on stdout, its message channel on the command line
 * or stdin. A Linux program (docs/linux.md) takes its arguments after "--" and its whole
 * environment from --env K=V (repeatable); argv[0] is "/" and the program's file name.
 */
final class RunCommand {
    private RunCommand() {
    }

    static int run(Args args) {
        args.allowOnly("memory", "timeout", "request", "vm-type", "vcpus", "env", "root");
        String guest = args.positional(0, "GUEST (hello, warm-worker, or a path to an ELF: an SDK guest or a static"
                + " Linux program)");
        VmmSettings settings = VmmSettings.load();
        long memory = args.option("memory") == null ? settings.defaultMemory() : Args.bytes("memory", args.option("memory"));
        Duration timeout = args.option("timeout") == null ? null : Args.duration("timeout", args.option("timeout"));
        int vmType = args.intOption("vm-type", 0);
        int vcpus = args.intOption("vcpus", 1);
        if (vcpus < 1) {
            System.err.println("vmfork run: --vcpus: a VM has at least one vCPU, not " + vcpus);
            return Main.EX_USAGE;
        }
        List<String> requests = args.all("request");

        ElfImage image;
        try {
            image = Guests.resolve(guest);
        } catch (InvalidGuestImageException e) {
            System.err.println("vmfork run: " + e.getMessage());
            return Main.EX_USAGE;
        }
        List<String> env = args.all("env");
        List<String> programArgs = args.tail() == null ? List.of() : args.tail();
        ProgramArgs program = null;
        if (image.kind() == ElfImage.Kind.LINUX) {
            String file = image.name().substring(image.name().lastIndexOf('/') + 1);
            List<String> argv = new java.util.ArrayList<>();
            argv.add("/" + file);
            argv.addAll(programArgs);
            try {
                program = new ProgramArgs(argv, env,
                        args.option("root") == null ? null : java.nio.file.Path.of(args.option("root")));
            } catch (IllegalArgumentException e) {
                System.err.println("vmfork run: " + e.getMessage());
                return Main.EX_USAGE;
            }
        } else if (!env.isEmpty() || !programArgs.isEmpty() || args.option("root") != null) {
            System.err.println("vmfork run: " + guest + " is an SDK guest: it takes no arguments after -- and no --env"
                    + " or --root (those are for Linux programs, docs/linux.md)");
            return Main.EX_USAGE;
        }
        VmSession session = new VmSession();
        try (Vmm vmm = Vmm.open(settings)) {
            System.err.println("vmfork run: platform " + vmm.platform());
            VirtualMachine vm = vmm.launch(new VmSpec(image, memory, vcpus, vmType, session.listener(), program));
            int code = session.attach(vm, requests, timeout, guest);
            if (!vm.unservedSyscalls().isEmpty()) {
                System.err.println("vmfork run: system calls not served (each answered ENOSYS): "
                        + vm.unservedSyscalls().entrySet().stream().map(e -> e.getKey() + " x" + e.getValue())
                                .collect(java.util.stream.Collectors.joining(", ")));
            }
            return code;
        } catch (KvmException | io.vmfork.vmm.platform.process.ProcessPlatformException e) {
            System.err.println("vmfork run: " + e.getMessage());
            return Main.EX_UNAVAILABLE;
        } catch (LaunchException e) {
            System.err.println("vmfork run: cannot launch " + guest + ": " + e.getMessage());
            return Main.EX_USAGE;
        }
    }
}
