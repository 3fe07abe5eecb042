package io.vmfork.cli;

import java.io.IOException;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;

/**
 * fork.c_floor on the process platform: the floor under a local fork there, measured by
 * a plain-C program that the project ships as source (native-kvm's
 * bench/proc_fork_floor.c, in the jar), which this class compiles with gcc against the
 * host helper library (linux-x86-64/libvmforkhost.so, the same procvm.c functions the VMM
 * calls) into a temporary directory with the guest stub, runs and deletes. The program
 * does, in the bench's steady state (fork after fork), what the VMM does for one child
 * of a one-vCPU parent: capture, scan and copy of the written pages into a new layer, the
 * parent's move into a pooled process, the child's launch in another and its run to its
 * first exit; see its header comment. Its output has the same shape as the KVM floor's
 * ({@link ForkFloor#parse}), with "platform": "process" and the parts apart.
 */
final class ProcForkFloor {
    static final String SOURCE = "io/vmfork/bench/proc_fork_floor.c";
    static final String HOST_LIBRARY = "linux-x86-64/libvmforkhost.so";
    static final String STUB = "io/vmfork/platform/vmfork-stub";
    private static final long COMPILE_TIMEOUT_S = 60;
    private static final long RUN_TIMEOUT_S = 300;

    private ProcForkFloor() {
    }

    /**
     * Builds and runs the floor program: {@code runs} forks (after its own warm-up) of a
     * parent of {@code ramMib} with {@code touchMib} written. Returns its JSON object's fields.
     */
    static Map<String, Object> measure(int runs, long ramMib, long touchMib) {
        if (runs < 1 || ramMib < 16 || touchMib < 0) {
            throw new IllegalArgumentException("runs " + runs + ", ram " + ramMib + " MiB, touched " + touchMib + " MiB");
        }
        Path dir = null;
        try {
            dir = Files.createTempDirectory("vmfork-floor-");
            Path src = extract(SOURCE, dir.resolve("proc_fork_floor.c"));
            extract(HOST_LIBRARY, dir.resolve("libvmforkhost.so"));
            Path stub = extract(STUB, dir.resolve("vmfork-stub"));
            if (!stub.toFile().setExecutable(true, true)) {
                throw new IOException("cannot make " + stub + " executable");
            }
            Path exe = dir.resolve("proc_fork_floor");
            ForkFloor.run(List.of("gcc", "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", "-o",
                    exe.toString(), src.toString(), "-L" + dir, "-lvmforkhost", "-Wl,-rpath," + dir),
                    COMPILE_TIMEOUT_S, "gcc");
            String out = ForkFloor.run(List.of(exe.toString(), stub.toString(), Integer.toString(runs),
                    Long.toString(ramMib), Long.toString(touchMib)), RUN_TIMEOUT_S, "proc_fork_floor");
            Map<String, Object> m = ForkFloor.parse(out.strip());
            if (!"process".equals(m.get("platform")) || !Long.valueOf(0).equals(m.get("children_left"))) {
                throw new IllegalStateException("fork.c_floor: unexpected output: " + out.strip());
            }
            return m;
        } catch (IOException e) {
            throw new IllegalStateException("fork.c_floor: " + e, e);
        } finally {
            if (dir != null) {
                ForkFloor.deleteTree(dir);
            }
        }
    }

    private static Path extract(String resource, Path to) throws IOException {
        try (InputStream in = ProcForkFloor.class.getClassLoader().getResourceAsStream(resource)) {
            if (in == null) {
                throw new IllegalStateException(resource + " is not on the class path (is native-kvm built?)");
            }
            Files.copy(in, to);
        }
        return to;
    }
}
