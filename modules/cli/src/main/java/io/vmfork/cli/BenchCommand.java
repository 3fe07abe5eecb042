package io.vmfork.cli;

import io.vmfork.kvm.KvmException;
import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmExit;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.guest.Guests;
import java.time.Duration;
import java.util.Map;

/** {@code vmfork bench SCENARIO}: benchmarks that print figures, one JSON object a line with --json. */
final class BenchCommand {
    private static final Duration VM_TIMEOUT = Duration.ofSeconds(60);

    private BenchCommand() {
    }

    static int run(Args args) {
        String scenario = args.positional(0, "SCENARIO (launch, fork, hypercall, cluster, capsule, clone, transfer)");
        boolean json = args.flag("json");
        if (scenario.equals("transfer")) {
            // Two JVMs and sockets, no VM: no /dev/kvm needed.
            args.allowOnly("json", "runs", "sizes", "kill", "direct-buffer");
            TransferBench.run(args, json);
            return 0;
        }
        args.allowOnly("json", "runs");
        try (Vmm vmm = Vmm.open(VmmSettings.load())) {
            Stats.platform = vmm.platform().name();
            System.err.println("vmfork bench: platform " + vmm.platform());
            switch (scenario) {
                case "launch" -> launch(vmm, args, json);
                case "fork" -> ForkBench.run(vmm, args, json);
                case "hypercall" -> HypercallBench.run(vmm, args, json);
                case "cluster" -> ClusterBench.run(vmm, args, json);
                case "capsule" -> CompressionBench.run(vmm, args, json);
                case "clone" -> CloneBench.run(args, json);
                default -> throw new Args.UsageException("unknown scenario '" + scenario
                        + "' (launch, fork, hypercall, cluster, capsule, clone, transfer)");
            }
            return 0;
        } catch (KvmException | io.vmfork.vmm.platform.process.ProcessPlatformException e) {
            System.err.println("vmfork bench: " + e.getMessage());
            return Main.EX_UNAVAILABLE;
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
    private static void launch(Vmm vmm, Args args, boolean json) {
        int runs = args.intOption("runs", 100);
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
