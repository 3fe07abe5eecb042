package io.vmfork.cli;

import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.guest.Guests;
import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * {@code vmfork bench hypercall}: the round trip of a guest's hypercall to the VMM and
 * back (VCPU_INDEX, the cheapest call), beside the C floor of the same trap mechanism in
 * the same run. On the process platform the floor is native-kvm's bench/proc_floor.c
 * (the guest's `out` through ptrace, nothing of the VMM's work), compiled with gcc
 * against the host helper library; on KVM there is no floor program yet.
 *
 * <p>hypercall.roundtrip: the forker guest makes {@value #BATCH} calls back to back per
 * request; a sample is a batch's time over {@value #BATCH} (the one request and reply
 * among them cost well under 1%).
 */
final class HypercallBench {
    static final int BATCH = 2000;
    private static final int WARMUP_BATCHES = 10;
    private static final Pattern FLOOR = Pattern.compile("hypercall\\.roundtrip p50_us=([0-9.]+) p99_us=([0-9.]+) n=(\\d+).*");

    private HypercallBench() {
    }

    static void run(Vmm vmm, int runs, boolean json) {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("forker"), 64L << 20));
        double[] us;
        try {
            vm.ready().join();
            for (int i = 0; i < WARMUP_BATCHES; i++) {
                ForkBench.ask(vm, "hcloop " + BATCH);
            }
            us = new double[runs];
            for (int i = 0; i < runs; i++) {
                long t0 = System.nanoTime();
                String r = ForkBench.ask(vm, "hcloop " + BATCH);
                long t1 = System.nanoTime();
                if (!r.equals("looped " + BATCH)) {
                    throw new IllegalStateException("forker answered '" + r + "' to hcloop");
                }
                us[i] = (t1 - t0) / 1e3 / BATCH;
            }
        } finally {
            vm.stop();
        }
        Map<String, Object> extra = new LinkedHashMap<>();
        extra.put("call", "VCPU_INDEX");
        extra.put("calls_per_sample", BATCH);
        Map<String, Object> floor = vmm.platform().isProcess() ? processFloor(BATCH * runs) : null;
        Map<String, Object> f = new Stats(us).fields("hypercall.roundtrip", extra);
        // Stats keeps milliseconds; a hypercall is microseconds: say so in the names.
        Map<String, Object> out = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : f.entrySet()) {
            out.put(e.getKey().replace("_ms", "_us"), e.getValue());
        }
        if (floor != null) {
            out.put("c_floor_p50_us", floor.get("p50_us"));
            out.put("c_floor_p99_us", floor.get("p99_us"));
            out.put("ratio", Math.round((Double) out.get("p50_us") / (Double) floor.get("p50_us") * 100) / 100.0);
        } else {
            out.put("c_floor", "none on the kvm platform yet");
        }
        System.out.println(json ? Stats.json(out) : Stats.text(out));
    }

    /** Builds and runs bench/proc_floor.c: the same ptrace round trip in plain C, {@code calls} calls. */
    private static Map<String, Object> processFloor(int calls) {
        Path dir = null;
        try {
            dir = Files.createTempDirectory("vmfork-hc-floor-");
            Path src = copy("io/vmfork/bench/proc_floor.c", dir.resolve("proc_floor.c"));
            copy("linux-x86-64/libvmforkhost.so", dir.resolve("libvmforkhost.so"));
            Path stub = copy("io/vmfork/platform/vmfork-stub", dir.resolve("vmfork-stub"));
            if (!stub.toFile().setExecutable(true, true)) {
                throw new IOException("cannot make " + stub + " executable");
            }
            Path exe = dir.resolve("proc_floor");
            ForkFloor.run(List.of("gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", exe.toString(),
                    src.toString(), "-L" + dir, "-lvmforkhost", "-Wl,-rpath," + dir), 60, "gcc");
            String out = ForkFloor.run(List.of(exe.toString(), stub.toString(), Integer.toString(calls)), 300,
                    "proc_floor").strip();
            Matcher m = FLOOR.matcher(out);
            if (!m.matches()) {
                throw new IllegalStateException("hypercall floor: unexpected output: " + out);
            }
            return Map.of("p50_us", Double.parseDouble(m.group(1)), "p99_us", Double.parseDouble(m.group(2)));
        } catch (IOException e) {
            throw new IllegalStateException("hypercall floor: " + e, e);
        } finally {
            if (dir != null) {
                ForkFloor.deleteTree(dir);
            }
        }
    }

    private static Path copy(String resource, Path to) throws IOException {
        try (InputStream in = HypercallBench.class.getClassLoader().getResourceAsStream(resource)) {
            if (in == null) {
                throw new IllegalStateException(resource + " is not on the class path (is native-kvm built?)");
            }
            Files.copy(in, to);
        }
        return to;
    }
}
