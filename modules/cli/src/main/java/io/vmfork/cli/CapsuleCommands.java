package io.vmfork.cli;

import com.typesafe.config.Config;
import io.vmfork.vmm.LaunchException;
import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmEndedException;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.capsule.CapsuleFormat;
import io.vmfork.vmm.capsule.CapsuleFormatException;
import io.vmfork.vmm.capsule.CapsuleIncompatibleException;
import io.vmfork.vmm.capsule.CapsuleKeys;
import io.vmfork.vmm.capsule.CapsuleSignatureException;
import io.vmfork.vmm.capsule.CapsuleSigner;
import io.vmfork.vmm.capsule.CapsuleStats;
import io.vmfork.vmm.capsule.TrustedSigners;
import io.vmfork.vmm.config.ConfigCheck;
import io.vmfork.vmm.guest.ElfImage;
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
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;

/**
 * {@code vmfork snapshot} boots a guest, lets it initialise, and saves its clone capsule
 * to a file, signed with {@code --sign}; {@code vmfork restore} starts a clone VM from such
 * a file, only from a trusted signer with {@code --require-signer} or
 * {@value TrustedSigners#CONFIG_KEY}; {@code vmfork capsule-key} makes a signing key pair.
 */
final class CapsuleCommands {
    static final int EX_DATAERR = ExitCodes.DATAERR;
    /** sysexits' EX_NOPERM: the capsule is not signed by a signer this host trusts. */
    static final int EX_NOPERM = ExitCodes.NOPERM;
    static final String DEFAULT_KEY_NAME = "capsule-signing";
    private static final Duration DEFAULT_READY_TIMEOUT = Duration.ofSeconds(120);

    private CapsuleCommands() {
    }

    /** {@code vmfork snapshot}. */
    @Command(name = "snapshot", header = "Boot a guest and save its clone capsule to a file.", sortOptions = false,
            description = "Boot GUEST, wait until it is ready (and has served the --request messages), and save its clone "
                    + "capsule to FILE; with --sign, signed with the Ed25519 key in KEY (from capsule-key).",
            exitCodeListHeading = "%nExit codes:%n",
            exitCodeList = {"0:FILE written", "64:bad usage, or KEY is not a private key",
                "65:GUEST is not a guest image", "66:GUEST or KEY names a file that does not exist",
                "69:this host cannot run guests", "70:the guest ended before it was ready, a request failed",
                "73:FILE cannot be created (its directory is missing or not writable)", "74:writing FILE failed",
                "78:invalid configuration", "124:the guest was not ready (or idle) within --timeout"})
    static final class Snapshot implements Callable<Integer> {
        @Mixin
        HelpOption help;
        @Parameters(index = "0", paramLabel = "GUEST", description = "A shipped example or a path to an ELF.")
        String guest;
        @Option(names = "--out", paramLabel = "FILE", required = true, description = "Where the capsule goes.")
        Path out;
        @Option(names = "--memory", paramLabel = "SIZE", converter = Converters.Size.class,
                description = "Guest RAM. Default: vmfork.vmm.memory.default (256 MiB).")
        Long memory;
        @Option(names = "--request", paramLabel = "TEXT", description = "A request to serve first (repeatable).")
        List<String> requests = new ArrayList<>();
        @Option(names = "--when", paramLabel = "WHEN", defaultValue = "ready",
                description = "ready (once it said READY), idle (once it then waits for a request) or now"
                        + " (at once). Default: ${DEFAULT-VALUE}.")
        String when;
        @Option(names = "--timeout", paramLabel = "DURATION", converter = Converters.Duration.class,
                defaultValue = "120s", description = "How long to wait for ready or idle. Default: ${DEFAULT-VALUE}.")
        Duration timeout;
        @Option(names = "--sign", paramLabel = "KEY", description = "Sign the capsule with this private key file.")
        Path sign;

        @Override
        public Integer call() {
            return snapshot(this);
        }
    }

    static int snapshot(Snapshot a) {
        String guest = a.guest;
        Path out = a.out;
        List<String> requests = a.requests;
        Duration timeout = a.timeout;
        When when = When.parse(a.when);
        if (when == When.NOW && !requests.isEmpty()) {
            throw Failure.usage("--when now takes the snapshot at once: it cannot wait for --request replies");
        }
        Path dir = out.toAbsolutePath().getParent();
        if (Files.isDirectory(out)) {
            throw Failure.cantCreate("--out " + out + " is a directory: name the capsule file in it");
        }
        if (dir == null || !Files.isDirectory(dir)) {
            throw Failure.cantCreate("--out " + out + ": the directory " + dir + " does not exist (create it first)");
        }
        if (!Files.isWritable(dir)) {
            throw Failure.cantCreate("--out " + out + ": the directory " + dir + " is not writable by this user");
        }
        CapsuleSigner signer = null;
        if (a.sign != null) {
            // Before the guest boots: a bad key costs nothing.
            try {
                signer = CapsuleSigner.load(a.sign);
            } catch (IllegalArgumentException e) {
                throw Failure.usage("--sign: " + e.getMessage());
            } catch (IOException e) {
                throw Failure.noInput("--sign: cannot read " + a.sign + ": " + reason(e));
            }
        }
        VmmSettings settings = CliConfig.vmm(CliConfig.load());
        long memory = a.memory == null ? settings.defaultMemory() : a.memory;
        try {
            Vmm.checkLaunch(settings, memory, 1);
        } catch (LaunchException e) {
            throw Failure.usage("--memory: " + e.getMessage());
        }
        ElfImage image = RunCommand.guestImage(guest);
        if (image.kind() == ElfImage.Kind.LINUX) {
            throw Failure.usage(guest + " is a Linux program: capsules of Linux guests are not implemented yet"
                    + " (docs/linux.md, \"State, and forks\")");
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
        } catch (LaunchException e) {
            throw Failure.usage("cannot launch " + guest + ": " + e.getMessage());
        } catch (IOException e) {
            throw Failure.of(ExitCodes.IOERR, "cannot write " + out + ": " + reason(e));
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
            return switch (s) {
                case "ready" -> READY;
                case "idle" -> IDLE;
                case "now" -> NOW;
                default -> throw Failure.usage("--when must be ready, idle or now, got '" + s + "'");
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

    /** {@code vmfork restore}. */
    @Command(name = "restore", header = "Start a clone VM from a capsule file, attached to the terminal.", sortOptions = false,
            description = "Start a clone VM from a capsule FILE (checked first: format, digest, and this host's "
                    + "compatibility), attached like run. With --require-signer (repeatable) or vmfork.capsule.trusted-"
                    + "signers, only a capsule signed by one of those public keys.",
            exitCodeListHeading = "%nExit codes:%n",
            exitCodeList = {"N:the guest's exit code", "64:bad usage, or a signer file that holds no public key",
                "65:FILE is not a valid capsule (empty, not a capsule, damaged, or a state a guest cannot have)",
                "66:FILE or a signer file does not exist or cannot be read",
                "69:this host cannot run guests, or cannot run this capsule (what does not match is named)",
                "70:the clone could not start", "74:reading FILE failed midway",
                "77:the capsule is not signed by a required signer", "78:invalid configuration",
                "124:--timeout ran out"})
    static final class Restore implements Callable<Integer> {
        @Mixin
        HelpOption help;
        @Parameters(index = "0", paramLabel = "FILE", description = "A capsule written by vmfork snapshot.")
        Path file;
        @Option(names = "--request", paramLabel = "TEXT", description = "A request for the clone (repeatable).")
        List<String> requests = new ArrayList<>();
        @Option(names = "--timeout", paramLabel = "DURATION", converter = Converters.Duration.class,
                description = "Stop the clone after DURATION and exit 124. Default: none.")
        Duration timeout;
        @Option(names = "--require-signer", paramLabel = "PUB",
                description = "Only a capsule signed by the public key in PUB (repeatable; from capsule-key).")
        List<Path> signers = new ArrayList<>();

        @Override
        public Integer call() {
            return restore(this);
        }
    }

    static int restore(Restore a) {
        Path file = a.file;
        checkCapsuleFile(file);
        TrustedSigners signers;
        Config config = CliConfig.load();
        VmmSettings settings = CliConfig.vmm(config);
        signers = trustedSigners(a.signers, config);
        VmSession session = new VmSession();
        try (Vmm vmm = Vmm.open(settings);
                InputStream in = new BufferedInputStream(Files.newInputStream(file), 1 << 20)) {
            VirtualMachine vm = vmm.restoreCapsule(in, session.listener(), signers);
            return session.attach(vm, a.requests, a.timeout, "the clone of " + file);
        } catch (CapsuleSignatureException e) {
            throw Failure.of(ExitCodes.NOPERM, file + " refused: " + e.getMessage());
        } catch (CapsuleFormatException e) {
            throw Failure.data(file + " is not a valid capsule: " + e.getMessage());
        } catch (CapsuleIncompatibleException e) {
            throw Failure.unavailable("capsule not supported on this host: " + e.getMessage());
        } catch (LaunchException e) {
            throw Failure.of(ExitCodes.SOFTWARE, "cannot start the clone: " + e.getMessage());
        } catch (IOException e) {
            throw Failure.of(ExitCodes.IOERR, "cannot read " + file + ": " + reason(e));
        }
    }

    /**
     * Before any device opens: FILE exists and can be read (else 66) and starts with the
     * capsule file magic (else 65). The whole capsule is checked as it is read.
     */
    private static void checkCapsuleFile(Path file) {
        if (!Files.exists(file)) {
            throw Failure.noInput("cannot read " + file + ": no such file");
        }
        if (!Files.isRegularFile(file)) {
            throw Failure.noInput("cannot read " + file + ": not a file");
        }
        byte[] magic = CapsuleFormat.fileMagic();
        byte[] head;
        try (InputStream in = Files.newInputStream(file)) {
            head = in.readNBytes(magic.length);
        } catch (IOException e) {
            throw Failure.noInput("cannot read " + file + ": " + reason(e));
        }
        if (head.length == 0) {
            throw Failure.data(file + " is empty: not a capsule (vmfork snapshot writes one)");
        }
        if (!java.util.Arrays.equals(head, magic)) {
            throw Failure.data(file + " is not a capsule: it does not start with the capsule file magic"
                    + " (vmfork snapshot writes one)");
        }
    }

    /**
     * The keys of {@code --require-signer} files and of {@value TrustedSigners#CONFIG_KEY}; a
     * file that cannot be read or holds no Ed25519 public key is an IllegalArgumentException
     * naming it.
     */
    private static TrustedSigners trustedSigners(List<Path> paths, Config config) {
        TrustedSigners fromArgs;
        try {
            fromArgs = TrustedSigners.load(paths);
        } catch (IOException e) {
            throw Failure.noInput("--require-signer: cannot read " + fileOf(e) + ": " + reason(e));
        } catch (IllegalArgumentException e) {
            throw Failure.usage("--require-signer: " + e.getMessage());
        }
        try {
            return fromArgs.and(TrustedSigners.create(config));
        } catch (IOException e) {
            throw Failure.config(ConfigCheck.where(config, TrustedSigners.CONFIG_KEY) + TrustedSigners.CONFIG_KEY
                    + ": cannot read " + fileOf(e) + ": " + reason(e));
        } catch (IllegalArgumentException e) {
            throw Failure.config(ConfigCheck.where(config, TrustedSigners.CONFIG_KEY) + TrustedSigners.CONFIG_KEY
                    + ": " + e.getMessage());
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
    @Command(name = "capsule-key", header = "Make an Ed25519 key pair for signing capsules.", sortOptions = false,
            description = "Make an Ed25519 key pair for signing capsules: DIR/NAME.key (private and public key, mode 0600; "
                    + "for snapshot --sign) and DIR/NAME.pub (for restore --require-signer). Never overwrites.",
            exitCodeListHeading = "%nExit codes:%n",
            exitCodeList = {"0:written", "64:bad usage (NAME not a plain file name)",
                "73:a key of that name exists, or DIR cannot be written"})
    static final class CapsuleKey implements Callable<Integer> {
        @Mixin
        HelpOption help;
        @Option(names = "--out", paramLabel = "DIR", required = true, description = "Where the two files go.")
        Path out;
        @Option(names = "--name", paramLabel = "NAME", defaultValue = DEFAULT_KEY_NAME,
                description = "The files' name. Default: ${DEFAULT-VALUE}.")
        String name;

        @Override
        public Integer call() {
            return capsuleKey(this);
        }
    }

    static int capsuleKey(CapsuleKey a) {
        String name = a.name;
        if (name.isEmpty() || name.contains("/") || name.startsWith(".")) {
            throw Failure.usage("--name must be a plain file name, got '" + name + "'");
        }
        Path dir = a.out;
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
            throw Failure.cantCreate(e.getFile() + " exists; it is not overwritten (--name gives another name)");
        } catch (IOException e) {
            throw Failure.cantCreate("cannot write the key pair in " + dir + ": " + reason(e));
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
