package io.vmfork.cli;

import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmEndedException;
import io.vmfork.vmm.VmExit;
import io.vmfork.vmm.VmListener;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * A VM attached to the terminal: its console streams to stdout, requests go to its
 * message channel from the command line or stdin with each reply printed, and the
 * command ends with the guest's exit code.
 */
final class VmSession {
    /** Where requests come from without --request: the stdin the command started with. */
    private final java.io.InputStream stdin = System.in;
    private final PrintStream out = System.out;
    private final Object lock = new Object();

    /** Streams the console and unsolicited messages of a VM (and its copies) to stdout. */
    VmListener listener() {
        return new VmListener() {
            @Override
            public void onConsole(VirtualMachine vm, byte[] bytes) {
                synchronized (lock) {
                    out.write(bytes, 0, bytes.length);
                    out.flush();
                }
            }

            @Override
            public void onUnsolicitedMessage(VirtualMachine vm, byte[] message) {
                println("message: " + new String(message, StandardCharsets.UTF_8));
            }
        };
    }

    void println(String line) {
        synchronized (lock) {
            out.println(line);
            out.flush();
        }
    }

    /**
     * Feeds {@code requests} (or stdin's lines when there are none), closes the channel,
     * waits for the VM to end and returns the command's exit code.
     */
    int attach(VirtualMachine vm, List<String> requests, Duration timeout, String what) {
        Thread feeder = new Thread(() -> feed(vm, requests), "vmfork-requests");
        feeder.setDaemon(true);
        feeder.start();
        VmExit exit;
        try {
            exit = timeout == null ? vm.termination().get() : vm.termination().get(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (TimeoutException e) {
            vm.stop();
            System.err.println("vmfork: " + what + " did not end within " + timeout + "; stopped it");
            return Main.EX_TIMEOUT;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            vm.stop();
            return Main.EX_SOFTWARE;
        } catch (ExecutionException e) {
            throw new IllegalStateException(e.getCause());
        }
        return exitCode(exit);
    }

    static int exitCode(VmExit exit) {
        return switch (exit.kind()) {
            case EXITED -> exit.exitCode();
            case CRASHED -> {
                System.err.println("vmfork: VM crashed: " + exit.reason());
                yield Main.EX_SOFTWARE;
            }
            case STOPPED -> {
                System.err.println("vmfork: VM stopped: " + exit.reason());
                yield Main.EX_SOFTWARE;
            }
        };
    }

    private void feed(VirtualMachine vm, List<String> requests) {
        try {
            if (!requests.isEmpty()) {
                for (String r : requests) {
                    if (!exchange(vm, r)) {
                        return;
                    }
                }
            } else {
                BufferedReader in = new BufferedReader(new InputStreamReader(stdin, StandardCharsets.UTF_8));
                String line;
                while ((line = in.readLine()) != null) {
                    if (!exchange(vm, line)) {
                        return;
                    }
                }
            }
        } catch (java.io.IOException e) {
            // stdin went away: treat it as the end of the requests
        }
        vm.channel().close();
    }

    /** Sends one request and prints its reply; false when the VM is gone. */
    boolean exchange(VirtualMachine vm, String request) {
        try {
            byte[] reply = vm.channel().request(request.getBytes(StandardCharsets.UTF_8)).get();
            println(new String(reply, StandardCharsets.UTF_8));
            return true;
        } catch (ExecutionException e) {
            if (!(e.getCause() instanceof VmEndedException)) {
                System.err.println("vmfork: request '" + request + "' failed: " + e.getCause().getMessage());
            }
            return false;
        } catch (RuntimeException e) {
            System.err.println("vmfork: request '" + request + "' refused: " + e.getMessage());
            return false;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        }
    }
}
