package io.vmfork.cli;

import io.vmfork.kvm.KvmException;
import io.vmfork.vmm.LaunchException;
import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmEndedException;
import io.vmfork.vmm.VmExit;
import io.vmfork.vmm.VmListener;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmmSettings;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.guest.ElfImage;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.guest.InvalidGuestImageException;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/** {@code vmfork run}: one VM, its console on stdout, its message channel on the command line or stdin. */
final class RunCommand {
    private RunCommand() {
    }

    static int run(Args args) {
        args.allowOnly("memory", "timeout", "request", "vm-type");
        String guest = args.positional(0, "GUEST (hello, warm-worker, or a path to an ELF)");
        VmmSettings settings = VmmSettings.load();
        long memory = args.option("memory") == null ? settings.defaultMemory() : Args.bytes("memory", args.option("memory"));
        Duration timeout = args.option("timeout") == null ? null : Args.duration("timeout", args.option("timeout"));
        int vmType = args.intOption("vm-type", 0);
        List<String> requests = args.all("request");

        ElfImage image;
        try {
            image = Guests.resolve(guest);
        } catch (InvalidGuestImageException e) {
            System.err.println("vmfork run: " + e.getMessage());
            return Main.EX_USAGE;
        }
        PrintStream out = System.out;
        Object outLock = new Object();
        VmListener listener = new VmListener() {
            @Override
            public void onConsole(VirtualMachine vm, byte[] bytes) {
                synchronized (outLock) {
                    out.write(bytes, 0, bytes.length);
                    out.flush();
                }
            }

            @Override
            public void onUnsolicitedMessage(VirtualMachine vm, byte[] message) {
                printLine(out, outLock, "message: " + new String(message, StandardCharsets.UTF_8));
            }
        };
        try (Vmm vmm = Vmm.open(settings)) {
            VirtualMachine vm = vmm.launch(new VmSpec(image, memory, 1, vmType, listener));
            long deadline = timeout == null ? Long.MAX_VALUE : System.nanoTime() + timeout.toNanos();
            Thread feeder = new Thread(() -> feed(vm, requests, out, outLock), "vmfork-requests");
            feeder.setDaemon(true);
            feeder.start();
            VmExit exit;
            try {
                long wait = deadline == Long.MAX_VALUE ? Long.MAX_VALUE : Math.max(0, deadline - System.nanoTime());
                exit = vm.termination().get(wait, TimeUnit.NANOSECONDS);
            } catch (TimeoutException e) {
                vm.stop();
                System.err.println("vmfork run: " + guest + " did not end within " + timeout + "; stopped it");
                return Main.EX_TIMEOUT;
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                vm.stop();
                return Main.EX_SOFTWARE;
            } catch (ExecutionException e) {
                throw new IllegalStateException(e.getCause());
            }
            return switch (exit.kind()) {
                case EXITED -> exit.exitCode();
                case CRASHED -> {
                    System.err.println("vmfork run: VM crashed: " + exit.reason());
                    yield Main.EX_SOFTWARE;
                }
                case STOPPED -> {
                    System.err.println("vmfork run: VM stopped: " + exit.reason());
                    yield Main.EX_SOFTWARE;
                }
            };
        } catch (KvmException e) {
            System.err.println("vmfork run: " + e.getMessage());
            return Main.EX_UNAVAILABLE;
        } catch (LaunchException e) {
            System.err.println("vmfork run: cannot launch " + guest + ": " + e.getMessage());
            return Main.EX_USAGE;
        }
    }

    /** Sends each request in turn, waiting for its reply; closes the channel at the end. */
    private static void feed(VirtualMachine vm, List<String> requests, PrintStream out, Object outLock) {
        try {
            if (!requests.isEmpty()) {
                for (String r : requests) {
                    if (!exchange(vm, r, out, outLock)) {
                        return;
                    }
                }
            } else {
                BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
                String line;
                while ((line = in.readLine()) != null) {
                    if (!exchange(vm, line, out, outLock)) {
                        return;
                    }
                }
            }
            vm.channel().close();
        } catch (java.io.IOException e) {
            vm.channel().close();
        }
    }

    private static boolean exchange(VirtualMachine vm, String request, PrintStream out, Object outLock) {
        try {
            byte[] reply = vm.channel().request(request.getBytes(StandardCharsets.UTF_8)).get();
            printLine(out, outLock, new String(reply, StandardCharsets.UTF_8));
            return true;
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof VmEndedException)) {
                System.err.println("vmfork run: request '" + request + "' failed: " + e.getCause().getMessage());
            }
            return false;
        } catch (RuntimeException e) {
            System.err.println("vmfork run: request '" + request + "' refused: " + e.getMessage());
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }

    private static void printLine(PrintStream out, Object lock, String line) {
        synchronized (lock) {
            out.println(line);
            out.flush();
        }
    }
}
