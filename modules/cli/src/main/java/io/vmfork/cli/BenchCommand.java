package io.vmfork.cli;

import com.typesafe.config.Config;
import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmExit;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.guest.Guests;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

/**
 * {@code vmfork bench SCENARIO}: benchmarks that print figures, one JSON object a line with
 * --json. Every scenario is a subcommand with its own options; its arguments are checked
 * before the VMM opens.
 */
@Command(name = "bench", header = "Benchmarks (launch, fork, hypercall, cluster, capsule, clone, transfer).", synopsisSubcommandLabel = "SCENARIO",
        description = "Benchmarks: one figure a line, one JSON object a line with --json; every object names the"
                + " platform its VMs ran on. The README's \"The vmfork command\" says what each figure measures.",
        subcommands = {BenchCommand.Launch.class, BenchCommand.Fork.class, BenchCommand.Hypercall.class,
            BenchCommand.ClusterScenario.class, BenchCommand.Capsule.class, BenchCommand.Clone.class,
            BenchCommand.Transfer.class},
        exitCodeListHeading = "%nExit codes:%n",
        exitCodeList = {"0:measured", "64:bad usage: no or an unknown scenario, a bad option",
            "69:this host cannot run guests", "70:a step failed", "78:invalid configuration"})
final class BenchCommand implements Callable<Integer> {
    private static final Duration VM_TIMEOUT = Duration.ofSeconds(60);
    private static final String EXIT_CODES = "%nExit codes:%n";

    @Mixin
    HelpOption help;

    @Spec
    CommandSpec spec;

    @Override
    public Integer call() {
        throw Failure.usage("a SCENARIO is missing (" + String.join(", ", spec.subcommands().keySet()) + ")");
    }

    /** --json and --runs, with the scenario's own default for --runs. */
    abstract static class Scenario implements Callable<Integer> {
        @Mixin
        HelpOption help;

        @Option(names = "--json", description = "One JSON object a line.")
        boolean json;

        @Option(names = "--runs", paramLabel = "N", description = "Samples (at least 1). Default: ${DEFAULT-VALUE}.")
        int runs;

        @Override
        public final Integer call() {
            if (runs < 1) {
                throw Failure.usage("--runs must be at least 1, got " + runs);
            }
            Config config = CliConfig.load();
            VmmSettings settings = CliConfig.vmm(config);
            try (Vmm vmm = Vmm.open(settings)) {
                Stats.platform = vmm.platform().name();
                System.err.println("vmfork bench: platform " + vmm.platform());
                measure(vmm);
            }
            return 0;
        }

        abstract void measure(Vmm vmm);
    }

    @Command(name = "launch", header = "Cold-launch figures.", description = "launch.cold (hello, launch call to first hypercall) and"
            + " launch.cold_warm_worker (warm-worker, launch call to READY).",
            exitCodeListHeading = EXIT_CODES, exitCodeList = {"0:measured", "64:bad usage",
                "69:this host cannot run guests", "70:a step failed", "78:invalid configuration"})
    static final class Launch extends Scenario {
        Launch() {
            runs = 100;
        }

        @Override
        void measure(Vmm vmm) {
            launch(vmm, runs, json);
        }
    }

    @Command(name = "fork", header = "Fork figures, beside their C floor.", description = "fork.c_floor, fork.local, fork.fanout_local, fork.parent_blocked,"
            + " fork.parent_write_after_fork, fork.child_first_touch, fork.vs_cold, fork.memory_per_child,"
            + " capsule.size (needs gcc for the C floor).",
            exitCodeListHeading = EXIT_CODES, exitCodeList = {"0:measured", "64:bad usage",
                "69:this host cannot run guests", "70:a step failed", "78:invalid configuration"})
    static final class Fork extends Scenario {
        Fork() {
            runs = 200;
        }

        @Override
        void measure(Vmm vmm) {
            ForkBench.run(vmm, runs, json);
        }
    }

    @Command(name = "hypercall", header = "The hypercall round trip.", description = "hypercall.roundtrip: a guest's VCPU_INDEX hypercall and back"
            + " (2,000 a sample), beside the C floor on the process platform.",
            exitCodeListHeading = EXIT_CODES, exitCodeList = {"0:measured", "64:bad usage",
                "69:this host cannot run guests", "70:a step failed", "78:invalid configuration"})
    static final class Hypercall extends Scenario {
        Hypercall() {
            runs = 30;
        }

        @Override
        void measure(Vmm vmm) {
            HypercallBench.run(vmm, runs, json);
        }
    }

    @Command(name = "cluster", header = "Placement and remote launch on a cluster of node JVMs started here.", description = "cluster.placement, cluster.placement_throughput,"
            + " cluster.launch_remote, cluster.fork_parent_blocked over TLS (Artery and the capsule transfers; tls: true) and plain TCP, and"
            + " cluster.tls_cost (two node JVMs started here, stopped after).",
            exitCodeListHeading = EXIT_CODES, exitCodeList = {"0:measured", "64:bad usage",
                "69:this host cannot run guests", "70:a step failed", "78:invalid configuration"})
    static final class ClusterScenario extends Scenario {
        ClusterScenario() {
            runs = 200;
        }

        @Override
        void measure(Vmm vmm) {
            ClusterBench.run(vmm, runs, json);
        }
    }

    @Command(name = "capsule", header = "Capsule compression figures.", description = "capsule.compression: LZ4 on random memory and on a warm-worker's"
            + " image, and capsules written with each vmfork.capsule.compression.",
            exitCodeListHeading = EXIT_CODES, exitCodeList = {"0:measured", "64:bad usage",
                "69:this host cannot run guests", "70:a step failed", "78:invalid configuration"})
    static final class Capsule extends Scenario {
        Capsule() {
            runs = 3;
        }

        @Override
        void measure(Vmm vmm) {
            CompressionBench.run(vmm, runs, json);
        }
    }

    @Command(name = "clone", header = "Remote clones on node JVMs started here.", description = "clone.tcp_floor, clone.remote, clone.parent_blocked (64 and 1024"
            + " MiB), clone.remote_incremental, clone.fanout with the transfers over TLS (transfer_tls: true), and the 64 MiB"
            + " clone.remote over plain TCP too (passes plain, TLS, TLS, plain) with clone.tls_cost, their ratio (two node"
            + " JVMs started here; this JVM forks).",
            exitCodeListHeading = EXIT_CODES, exitCodeList = {"0:measured", "64:bad usage",
                "69:this host cannot run guests", "70:a step failed", "78:invalid configuration"})
    static final class Clone extends Scenario {
        Clone() {
            runs = 20;
        }

        @Override
        void measure(Vmm vmm) {
            CloneBench.run(runs, json);
        }
    }

    @Command(name = "transfer", header = "Bulk transfer between two JVMs on loopback (no VM).", sortOptions = false,
            description = "Bulk bytes between two JVMs on loopback (a sender JVM started here): transfer.tcp_floor, "
                    + "transfer.streams_tcp, transfer.stream_refs per size, then each with the sender killed mid-"
                    + "transfer. Needs no VM and no /dev/kvm.",
            exitCodeListHeading = EXIT_CODES, exitCodeList = {"0:measured", "64:bad usage", "70:a step failed"})
    static final class Transfer implements Callable<Integer> {
        @Mixin
        HelpOption help;

        @Option(names = "--json", description = "One JSON object a line.")
        boolean json;

        @Option(names = "--runs", paramLabel = "N", defaultValue = "5",
                description = "Samples per size and method. Default: ${DEFAULT-VALUE}.")
        int runs;

        @Option(names = "--sizes", paramLabel = "MIB", split = ",", defaultValue = "64,1024",
                description = "Sizes in MiB, comma-separated. Default: ${DEFAULT-VALUE}.")
        List<Long> sizes;

        @Option(names = "--kill", paramLabel = "on|off", arity = "1", defaultValue = "on", converter = Converters.OnOff.class,
                description = "Also measure each method with its sender killed mid-transfer. Default: ${DEFAULT-VALUE}.")
        boolean kill;

        @Option(names = "--direct-buffer", paramLabel = "SIZE", defaultValue = TransferBench.DIRECT_BUFFER,
                description = "Pekko's TCP read buffer in both JVMs. Default: ${DEFAULT-VALUE}.")
        String directBuffer;

        @Override
        public Integer call() {
            if (runs < 1) {
                throw Failure.usage("--runs must be at least 1, got " + runs);
            }
            for (long s : sizes) {
                if (s < 1) {
                    throw Failure.usage("--sizes: a size is at least 1 MiB, got " + s);
                }
            }
            try {
                new Converters.Size().convert(directBuffer);
            } catch (picocli.CommandLine.TypeConversionException e) {
                throw Failure.usage("--direct-buffer: " + e.getMessage());
            }
            TransferBench.run(runs, sizes, kill, directBuffer, json);
            return 0;
        }
    }

    private static void print(boolean json, Map<String, Object> fields) {
        System.out.println(json ? Stats.json(fields) : Stats.text(fields));
        System.out.flush();
    }

    /**
     * launch.cold: from the launch call of a hello VM to its first hypercall.
     * launch.cold_warm_worker: from the launch call of a warm-worker to its READY hypercall.
     */
    private static void launch(Vmm vmm, int runs, boolean json) {
        ElfImage hello = Guests.shipped("hello");
        long mem = vmm.settings().defaultMemory();
        for (int i = 0; i < 20; i++) {
            runHello(vmm, hello, mem); // warm up the JIT and the host's page cache
        }
        double[] cold = new double[Math.max(runs, 50)];
        for (int i = 0; i < cold.length; i++) {
            cold[i] = runHello(vmm, hello, mem);
        }
        print(json, new Stats(cold).fields("launch.cold", Map.of("guest", "hello", "memory_mib", mem >> 20)));

        ElfImage worker = Guests.shipped("warm-worker");
        long workerMem = 256L << 20;
        double[] warm = new double[Math.max(5, runs / 20)];
        for (int i = 0; i < warm.length; i++) {
            VirtualMachine vm = vmm.launch(VmSpec.of(worker, workerMem));
            long readyAt = vm.ready().join();
            warm[i] = (readyAt - vm.launchStartNanos()) / 1e6;
            vm.channel().close();
            expectExit(vm.awaitTermination(VM_TIMEOUT), "warm-worker");
        }
        print(json, new Stats(warm).fields("launch.cold_warm_worker",
                Map.of("guest", "warm-worker", "memory_mib", workerMem >> 20)));
    }

    private static double runHello(Vmm vmm, ElfImage hello, long mem) {
        VirtualMachine vm = vmm.launch(VmSpec.of(hello, mem));
        VmExit exit = vm.awaitTermination(VM_TIMEOUT);
        expectExit(exit, "hello");
        return (vm.firstExitNanos() - vm.launchStartNanos()) / 1e6;
    }

    private static void expectExit(VmExit exit, String guest) {
        if (exit.kind() != VmExit.Kind.EXITED || exit.exitCode() != 0) {
            throw new IllegalStateException(guest + " did not exit cleanly: " + exit.reason());
        }
    }
}
