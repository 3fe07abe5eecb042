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
import io.vmfork.vmm.capsule.CapsuleKeys;
import io.vmfork.vmm.capsule.CapsuleSignatureException;
import io.vmfork.vmm.capsule.CapsuleSigner;
import io.vmfork.vmm.capsule.CapsuleStats;
import io.vmfork.vmm.capsule.TrustedSigners;
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
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.PosixFilePermissions;
import java.security.KeyPair;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * {@code vmfork snapshot} boots a guest, lets it initialise, and saves its clone capsule
 * to a file, signed with {@code --sign}; {@code vmfork restore} starts a clone VM from such
 * a file, only from a trusted signer with {@code --require-signer} or
 * {@value TrustedSigners#CONFIG_KEY}; {@code vmfork capsule-key} makes a signing key pair.
 */
final class CapsuleCommands {
    static final int EX_DATAERR = 65;
    /** sysexits' EX_NOPERM: the capsule is not signed by a signer this host trusts. */
    static final int EX_NOPERM = 77;
    static final String DEFAULT_KEY_NAME = "capsule-signing";
    private static final Duration DEFAULT_READY_TIMEOUT = Duration.ofSeconds(120);

    private CapsuleCommands() {
    }

    static int snapshot(Args args) {
        args.allowOnly("out", "memory", "request", "timeout", "when", "sign");
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
        CapsuleSigner signer = null;
        if (args.option("sign") != null) {
            // Before the guest boots: a bad key costs nothing.
            try {
                signer = CapsuleSigner.load(Path.of(args.option("sign")));
            } catch (IllegalArgumentException e) {
                System.err.println("vmfork snapshot: --sign: " + e.getMessage());
                return Main.EX_USAGE;
            } catch (IOException e) {
                System.err.println("vmfork snapshot: --sign: cannot read " + args.option("sign") + ": " + reason(e));
                return Main.EX_USAGE;
            }
        }
        ElfImage image;
        try {
            image = Guests.resolve(guest);
        } catch (InvalidGuestImageException e) {
            System.err.println("vmfork snapshot: " + e.getMessage());
            return Main.EX_USAGE;
        }
        if (image.kind() == ElfImage.Kind.LINUX) {
            System.err.println("vmfork snapshot: " + guest + " is a Linux program: capsules of Linux guests are not"
                    + " implemented yet (docs/linux.md, \"State, and forks\")");
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
                stats = signer == null ? vmm.writeCapsule(snap, os) : vmm.writeCapsule(snap, os, signer);
            }
            Files.move(tmp, out, StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
            double ms = (System.nanoTime() - t0) / 1e6;
            System.err.printf(Locale.ROOT,
                    "vmfork snapshot: wrote %s: %d bytes (%d bytes of data in %d chunks, %d zero pages left out) "
                            + "of a %d MiB VM in %.1f ms%s%n",
                    out, stats.capsuleBytes(), stats.dataBytes(), stats.chunkCount(), stats.zeroPagesSkipped(),
                    memory >> 20, ms, signer == null ? "" : ", signed by " + signer.fingerprint());
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
        args.allowOnly("request", "timeout", "require-signer");
        Path file = Path.of(args.positional(0, "FILE (a capsule written by vmfork snapshot)"));
        Duration timeout = args.option("timeout") == null ? null : Args.duration("timeout", args.option("timeout"));
        List<String> requests = args.all("request");
        TrustedSigners signers;
        try {
            signers = trustedSigners(args.all("require-signer"));
        } catch (IllegalArgumentException e) {
            System.err.println("vmfork restore: " + e.getMessage());
            return Main.EX_USAGE;
        } catch (com.typesafe.config.ConfigException e) {
            System.err.println("vmfork restore: " + e.getMessage());
            return Main.EX_CONFIG;
        }
        VmSession session = new VmSession();
        try (Vmm vmm = Vmm.open(VmmSettings.load());
                InputStream in = new BufferedInputStream(Files.newInputStream(file), 1 << 20)) {
            VirtualMachine vm = vmm.restoreCapsule(in, session.listener(), signers);
            return session.attach(vm, requests, timeout, "the clone of " + file);
        } catch (CapsuleSignatureException e) {
            System.err.println("vmfork restore: " + file + " refused: " + e.getMessage());
            return EX_NOPERM;
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

    /**
     * The keys of {@code --require-signer} files and of {@value TrustedSigners#CONFIG_KEY}; a
     * file that cannot be read or holds no Ed25519 public key is an IllegalArgumentException
     * naming it.
     */
    private static TrustedSigners trustedSigners(List<String> files) {
        List<Path> paths = new ArrayList<>();
        for (String f : files) {
            paths.add(Path.of(f));
        }
        TrustedSigners fromArgs;
        try {
            fromArgs = TrustedSigners.load(paths);
        } catch (IOException e) {
            throw new IllegalArgumentException("--require-signer: cannot read " + fileOf(e) + ": " + reason(e), e);
        }
        try {
            return fromArgs.and(TrustedSigners.create(com.typesafe.config.ConfigFactory.load()));
        } catch (IOException e) {
            throw new IllegalArgumentException(TrustedSigners.CONFIG_KEY + ": cannot read " + fileOf(e) + ": "
                    + reason(e), e);
        }
    }

    private static String fileOf(IOException e) {
        return e instanceof FileSystemException f && f.getFile() != null ? f.getFile() : "a key file";
    }

    /**
     * {@code vmfork capsule-key --out DIR [--name NAME]}: a new Ed25519 key pair for signing
     * capsules, DIR/NAME.key (private key and public key, mode 0600) and DIR/NAME.pub
     * (public key, 0644). Refuses to overwrite either.
     */
    static int capsuleKey(Args args) {
        args.allowOnly("out", "name");
        if (args.option("out") == null) {
            throw new Args.UsageException("--out DIR is required");
        }
        String name = args.option("name") == null ? DEFAULT_KEY_NAME : args.option("name");
        if (name.isEmpty() || name.contains("/") || name.startsWith(".")) {
            throw new Args.UsageException("--name must be a plain file name, got '" + name + "'");
        }
        Path dir = Path.of(args.option("out"));
        Path key = dir.resolve(name + ".key");
        Path pub = dir.resolve(name + ".pub");
        KeyPair pair = CapsuleKeys.generate();
        try {
            Files.createDirectories(dir);
            if (Files.exists(pub)) {
                throw new java.nio.file.FileAlreadyExistsException(pub.toString());
            }
            // Created 0600 in one step: the private key is never readable by others, even for a moment.
            Files.createFile(key, PosixFilePermissions.asFileAttribute(PosixFilePermissions.fromString("rw-------")));
            Files.writeString(key, CapsuleKeys.signingKeyPem(pair), StandardOpenOption.TRUNCATE_EXISTING);
            Files.writeString(pub, CapsuleKeys.publicKeyPem(pair.getPublic()), StandardOpenOption.CREATE_NEW);
        } catch (java.nio.file.FileAlreadyExistsException e) {
            System.err.println("vmfork capsule-key: " + e.getFile() + " exists; it is not overwritten");
            return Main.EX_USAGE;
        } catch (IOException e) {
            System.err.println("vmfork capsule-key: cannot write the key pair in " + dir + ": " + reason(e));
            return Main.EX_SOFTWARE;
        }
        System.out.println("private key (sign with: vmfork snapshot ... --sign " + key + "): " + key);
        System.out.println("public key (trust with: vmfork restore ... --require-signer " + pub + "): " + pub);
        System.out.println("fingerprint: " + CapsuleKeys.fingerprint(pair.getPublic()));
        return 0;
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
