package io.vmfork.cli;

import io.vmfork.kvm.KvmException;
import io.vmfork.os.NativeCallException;
import io.vmfork.vmm.LaunchException;
import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmEndedException;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.capsule.CapsuleFormatException;
import io.vmfork.vmm.capsule.CapsuleIncompatibleException;
import io.vmfork.vmm.capsule.CapsuleStats;
import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.guest.InvalidGuestImageException;
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.nio.file.AccessDeniedException;
import java.nio.file.FileSystemException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * {@code vmfork snapshot} boots a guest, lets it initialise, and saves its clone capsule
 * to a file; {@code vmfork restore} starts a clone VM from such a file.
 */
final class CapsuleCommands {
    static final int EX_DATAERR = 65;
    private static final Duration DEFAULT_READY_TIMEOUT = Duration.ofSeconds(120);

    private CapsuleCommands() {
    }

    static int snapshot(Args args) {
        args.allowOnly("out", "memory", "request", "timeout", "when");
        String guest = args.positional(0, "GUEST (hello, warm-worker, or a path to an ELF)");
        String outName = args.option("out");
        if (outName == null) {
            throw new Args.UsageException("--out FILE is required");
        }
        Path out = Path.of(outName);
        VmmSettings settings = VmmSettings.load();
        long memory = args.option("memory") == null ? settings.defaultMemory() : Args.bytes("memory", args.option("memory"));
        Duration timeout = args.option("timeout") == null ? DEFAULT_READY_TIMEOUT
                : Args.duration("timeout", args.option("timeout"));
        List<String> requests = args.all("request");
        When when = When.parse(args.option("when"));
        if (when == When.NOW && !requests.isEmpty()) {
            throw new Args.UsageException("--when now takes the snapshot at once: it cannot wait for --request replies");
        }
        ElfImage image;
        try {
            image = Guests.resolve(guest);
        } catch (InvalidGuestImageException e) {
            System.err.println("vmfork snapshot: " + e.getMessage());
            return Main.EX_USAGE;
        }
        VmSession session = new VmSession();
        try (Vmm vmm = Vmm.open(settings)) {
            VirtualMachine vm = vmm.launch(VmSpec.of(image, memory).withListener(session.listener()));
            if (when != When.NOW) {
                try {
                    vm.ready().get(timeout.toMillis(), TimeUnit.MILLISECONDS);
                } catch (ExecutionException e) {
                    System.err.println("vmfork snapshot: " + guest + " ended before it said it was ready: "
                            + (e.getCause() instanceof VmEndedException v ? v.exit().reason() : e.getCause()));
                    return Main.EX_SOFTWARE;
                } catch (TimeoutException e) {
                    System.err.println("vmfork snapshot: " + guest + " was not ready within " + timeout);
                    return Main.EX_TIMEOUT;
                }
                for (String r : requests) {
                    if (!session.exchange(vm, r)) {
                        return Main.EX_SOFTWARE;
                    }
                }
            }
            if (when == When.IDLE && !waitIdle(vm, timeout)) {
                System.err.println("vmfork snapshot: " + guest + " did not wait for a request within " + timeout
                        + " (--when idle); --when ready snapshots it while it runs");
                return Main.EX_TIMEOUT;
            }
            Path tmp = out.resolveSibling(out.getFileName() + ".partial");
            CapsuleStats stats;
            long t0 = System.nanoTime();
            try (VirtualMachine.Snapshot snap = vm.snapshot();
                    OutputStream os = new BufferedOutputStream(Files.newOutputStream(tmp), 1 << 20)) {
                stats = vmm.writeCapsule(snap, os);
            }
            Files.move(tmp, out, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            double ms = (System.nanoTime() - t0) / 1e6;
            System.err.printf(Locale.ROOT,
                    "vmfork snapshot: wrote %s: %d bytes (%d bytes of data in %d chunks, %d zero pages left out) "
                            + "of a %d MiB VM in %.1f ms%n",
                    out, stats.capsuleBytes(), stats.dataBytes(), stats.chunkCount(), stats.zeroPagesSkipped(),
                    memory >> 20, ms);
            vm.stop();
            return 0;
        } catch (KvmException e) {
            System.err.println("vmfork snapshot: " + e.getMessage());
            return Main.EX_UNAVAILABLE;
        } catch (LaunchException e) {
            System.err.println("vmfork snapshot: cannot launch " + guest + ": " + e.getMessage());
            return Main.EX_USAGE;
        } catch (IOException e) {
            System.err.println("vmfork snapshot: cannot write " + out + ": " + reason(e));
            return Main.EX_SOFTWARE;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return Main.EX_SOFTWARE;
        }
    }

    /**
     * When {@code snapshot} captures the guest. Every choice gives a consistent capsule: the
     * VM's vCPUs are stopped for the capture wherever they are.
     */
    enum When {
        /** After the guest said READY and answered the --request messages, wherever it is then. */
        READY,
        /** As READY, then once the guest waits in RECV for a request (a quiet guest). */
        IDLE,
        /** As soon as the VM runs, without waiting for READY. */
        NOW;

        static When parse(String s) {
            if (s == null) {
                return READY;
            }
            return switch (s) {
                case "ready" -> READY;
                case "idle" -> IDLE;
                case "now" -> NOW;
                default -> throw new Args.UsageException("--when must be ready, idle or now, got '" + s + "'");
            };
        }
    }

    /** Waits until the guest waits for a request again; false if it did not within {@code timeout}. */
    private static boolean waitIdle(VirtualMachine vm, Duration timeout) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!vm.awaitingRequest()) {
            if (System.nanoTime() >= deadline || vm.state().isEnded()) {
                return false;
            }
            Thread.sleep(1);
        }
        return true;
    }

    static int restore(Args args) {
        args.allowOnly("request", "timeout");
        Path file = Path.of(args.positional(0, "FILE (a capsule written by vmfork snapshot)"));
        Duration timeout = args.option("timeout") == null ? null : Args.duration("timeout", args.option("timeout"));
        List<String> requests = args.all("request");
        VmSession session = new VmSession();
        try (Vmm vmm = Vmm.open(VmmSettings.load());
                InputStream in = new BufferedInputStream(Files.newInputStream(file), 1 << 20)) {
            VirtualMachine vm = vmm.restoreCapsule(in, session.listener());
            return session.attach(vm, requests, timeout, "the clone of " + file);
        } catch (CapsuleFormatException e) {
            System.err.println("vmfork restore: " + file + " is not a valid capsule: " + e.getMessage());
            return EX_DATAERR;
        } catch (CapsuleIncompatibleException e) {
            System.err.println("vmfork restore: capsule not supported on this host: " + e.getMessage());
            return Main.EX_UNAVAILABLE;
        } catch (KvmException | NativeCallException e) {
            // Vmm.restoreCapsule turns KVM's refusals of a capsule into CapsuleIncompatibleException;
            // what is left here is the host's own trouble (no /dev/kvm, out of memory).
            System.err.println("vmfork restore: " + e.getMessage());
            return Main.EX_UNAVAILABLE;
        } catch (LaunchException e) {
            System.err.println("vmfork restore: cannot start the clone: " + e.getMessage());
            return Main.EX_SOFTWARE;
        } catch (IOException e) {
            System.err.println("vmfork restore: cannot read " + file + ": " + reason(e));
            return Main.EX_USAGE;
        }
    }

    /** Why a file operation failed, in words: "no such file", "permission denied", not just the path again. */
    static String reason(IOException e) {
        if (e instanceof NoSuchFileException) {
            return "no such file";
        }
        if (e instanceof AccessDeniedException) {
            return "permission denied";
        }
        if (e instanceof FileSystemException f) {
            return f.getReason() != null ? f.getReason() : e.getClass().getSimpleName();
        }
        return e.getMessage() != null ? e.getMessage() : e.getClass().getSimpleName();
    }
}
