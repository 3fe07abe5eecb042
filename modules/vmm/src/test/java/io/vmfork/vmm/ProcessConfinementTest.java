package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.platform.HostPlatforms;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIf;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * The process platform's confinement, probed from inside a guest (tests/confine.c) and
 * from outside (/proc of the guest process): every way out of a vmfork guest that a
 * native process has (system calls through each gate, port I/O, privileged instructions,
 * jumps out of RAM) ends the VM as crashed, names what the guest did, reaches nothing on
 * the host and leaves nothing behind. Each assertion says which protection it guards.
 */
@EnabledIf(value = "io.vmfork.vmm.platform.HostPlatforms#vmmRunsOnProcess", disabledReason = HostPlatforms.PROCESS_ONLY)
class ProcessConfinementTest extends VmmTestBase {
    private static final long MEMORY = 8 << 20;
    /** What syscall-open would create (tests/confine.c). */
    private static final Path OPENED = Path.of("/tmp/vmfork-confine-open");
    /** The stub's code and data (stub/stub.ld links it here). */
    private static final long STUB_BASE = 0x600000000000L;
    private static final long STUB_END = 0x600100000000L;
    /** A RIP in the guest image: SDK guests are linked at 0x400000 and are small. */
    private static final String GUEST_RIP = "rip=0x4[0-9a-f]{5}\\b";

    /** Per attack, the shape of the crash reason: the cause and where. */
    private static final Map<String, String> REASONS = Map.ofEntries(
            syscall("syscall-open", 2),
            syscall("syscall-write", 1),
            syscall("syscall-fork", 57),
            syscall("syscall-socket", 41),
            syscall("syscall-exit-group", 231),
            syscall("iopl", 172),
            Map.entry("int80", "guest crashed: int \\$0x80 at " + GUEST_RIP + " \\(a vmfork guest makes no system calls.*"),
            Map.entry("sysenter", "guest crashed: sysenter at " + GUEST_RIP + " \\(a vmfork guest makes no system calls.*"),
            Map.entry("vsyscall", "guest crashed: syscall through the vsyscall page \\(system call 96\\), called from the guest,"
                    + " return address " + GUEST_RIP + " \\(a vmfork guest makes no system calls; trapped by seccomp\\)"),
            Map.entry("port-in", "bad hypercall: port I/O in port 0x60 size 1 at " + GUEST_RIP + ".*"),
            Map.entry("port-out", "bad hypercall: port I/O out port 0x80 size 1 at " + GUEST_RIP + ".*"),
            Map.entry("cli", "guest crashed: general protection fault \\(#GP.*\\) at " + GUEST_RIP),
            Map.entry("hlt", "guest crashed: general protection fault \\(#GP.*\\) at " + GUEST_RIP),
            Map.entry("far-jump", "guest crashed: access to guest-physical 0x7000000000, outside RAM, at rip=0x7000000000"),
            Map.entry("stub-jump", "guest crashed: execution left guest RAM and ran code outside RAM \\(the process platform's"
                    + " stub\\) until .* at rip=0x6000000[0-9a-f]{5}"),
            Map.entry("page0-read", "guest crashed: access to 0x8 in page 0, which the process platform cannot map"
                    + " \\(vm.mmap_min_addr\\), at " + GUEST_RIP));

    private static Map.Entry<String, String> syscall(String name, int nr) {
        return Map.entry(name, "guest crashed: syscall at " + GUEST_RIP
                + " \\(a vmfork guest makes no system calls; system call " + nr + " trapped by seccomp\\)");
    }

    @ParameterizedTest
    @ValueSource(strings = {"syscall-open", "syscall-write", "syscall-fork", "syscall-socket", "syscall-exit-group",
        "int80", "sysenter", "vsyscall", "iopl", "port-in", "port-out", "cli", "hlt", "far-jump", "stub-jump",
        "page0-read"})
    void anAttackCrashesTheVmNamesItsCauseAndReachesNothingOnTheHost(String attack) throws Exception {
        Files.deleteIfExists(OPENED);
        VmmTesting.quiesce(vmm); // the pool of guest processes spawned ahead is full
        long childrenBefore = children();
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("confine"), MEMORY));
        vm.ready().get(30, TimeUnit.SECONDS);
        int pid = vm.guestPid();
        assertTrue(pid > 0, "no guest process");
        // No fds in the guest process: were a write(1, ...) let through, it would fail with EBADF instead of
        // reaching the VMM's stdout (this JVM's fd 1, a pipe whose other end the test cannot read back).
        try (Stream<Path> fds = Files.list(Path.of("/proc/" + pid + "/fd"))) {
            assertEquals(0, fds.count(), "fds in the guest process");
        }
        vm.channel().send(attack.getBytes(StandardCharsets.UTF_8));
        VmExit exit = vm.awaitTermination(VmmTesting.TIMEOUT);
        String console = vm.console().text();

        // The guest got as far as the attack: the probe ran.
        assertTrue(console.contains("confine: about to " + attack), console);
        // seccomp (every path traps), IOPL 0 / no I/O bitmap, CPL3, the address-space layout: the guest did not go on.
        assertFalse(console.contains("SURVIVED"), console);
        // A trap is a crash, never an exit: exit_group(0) in particular must not pass for a clean exit 0.
        assertEquals(VmExit.Kind.CRASHED, exit.kind(), exit.toString());
        assertEquals(VmState.CRASHED, vm.state());
        // The reason names the cause and where the guest was (ProcessExecContext's classification).
        assertTrue(exit.reason().matches(REASONS.get(attack)), attack + ": " + exit.reason());

        // seccomp + the empty read-only root in its own mount namespace: no file made on the host.
        assertFalse(Files.exists(OPENED), OPENED + " was created");
        // seccomp: the write's bytes did not reach the console by some other path either (confine.c never prints them).
        assertFalse(console.contains("PWNED"), console);
        // The VM's end kills and reaps its process; seccomp kept fork from making another.
        assertFalse(Files.exists(Path.of("/proc/" + pid)), "guest process " + pid + " is still there");
        VmmTesting.quiesce(vmm);
        assertEquals(childrenBefore, settleChildren(childrenBefore), "child processes left: " + childList());

        // The VMM serves on.
        assertHelloRuns();
    }

    @Test
    void aRunningGuestProcessIsConfined() throws Exception {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("confine"), MEMORY));
        try {
            vm.ready().get(30, TimeUnit.SECONDS); // waiting in RECV
            int pid = vm.guestPid();
            Path proc = Path.of("/proc/" + pid);
            String status = Files.readString(proc.resolve("status"));
            // The seccomp filter is on (mode 2: filter) for the whole process.
            assertTrue(status.matches("(?s).*\\nSeccomp:\\s+2\\n.*"), status);
            // no_new_privs: nothing the process could exec would gain privileges.
            assertTrue(status.matches("(?s).*\\nNoNewPrivs:\\s+1\\n.*"), status);
            // Every capability dropped (also those it holds in its own user namespace).
            assertTrue(status.matches("(?s).*\\nCapEff:\\s+0000000000000000\\n.*"), status);
            assertTrue(status.matches("(?s).*\\nCapPrm:\\s+0000000000000000\\n.*"), status);
            // Its own namespaces: user, pid, net, ipc, uts and mount, none shared with the VMM.
            for (String ns : List.of("user", "pid", "net", "ipc", "uts", "mnt")) {
                String mine = Files.readSymbolicLink(Path.of("/proc/self/ns/" + ns)).toString();
                String its = Files.readSymbolicLink(proc.resolve("ns/" + ns)).toString();
                assertNotEquals(mine, its, ns + " namespace shared with the VMM");
            }
            // No fd at all: no socket to the VMM left, no stdio, no stub memfd.
            try (Stream<Path> fds = Files.list(proc.resolve("fd"))) {
                assertEquals(List.of(), fds.map(p -> p.getFileName().toString()).toList(), "fds of the guest process");
            }
            // Its root is empty (the read-only tmpfs): nothing of the host's file tree.
            try (Stream<Path> root = Files.list(proc.resolve("root"))) {
                assertEquals(List.of(), root.toList(), "the guest process's root");
            }
            // Its address space: guest RAM [0x1000, memory size), the stub, [vsyscall]; no vDSO,
            // vvar or stack the guest could use, nothing else.
            List<String> maps = Files.readAllLines(proc.resolve("maps"));
            long ramLow = Long.MAX_VALUE, ramHigh = 0, ramBytes = 0;
            int stub = 0, vsyscall = 0;
            List<String> other = new ArrayList<>();
            for (String line : maps) {
                String[] f = line.trim().split("\\s+", 6);
                String[] range = f[0].split("-");
                long lo = Long.parseUnsignedLong(range[0], 16), hi = Long.parseUnsignedLong(range[1], 16);
                String name = f.length > 5 ? f[5] : "";
                if (name.equals("[vsyscall]")) {
                    vsyscall++;
                } else if (lo >= STUB_BASE && hi <= STUB_END) {
                    stub++;
                } else if (hi <= MEMORY && name.startsWith("/memfd:vmfork")) {
                    ramLow = Math.min(ramLow, lo);
                    ramHigh = Math.max(ramHigh, hi);
                    ramBytes += hi - lo;
                } else {
                    other.add(line);
                }
            }
            assertEquals(List.of(), other, "mappings other than guest RAM, the stub and [vsyscall]:\n"
                    + String.join("\n", maps));
            assertEquals(0x1000, ramLow, String.join("\n", maps));
            assertEquals(MEMORY, ramHigh, String.join("\n", maps));
            assertEquals(MEMORY - 0x1000, ramBytes, "guest RAM has holes or overlaps:\n" + String.join("\n", maps));
            assertTrue(stub >= 1, "no stub mapping:\n" + String.join("\n", maps));
            assertEquals(1, vsyscall, String.join("\n", maps));
            for (String line : maps) {
                assertFalse(line.contains("[vdso]") || line.contains("[vvar]") || line.contains("[stack]")
                        || line.contains("[heap]"), line);
            }
        } finally {
            vm.stop();
        }
    }

    /** spin: killed while running guest code; confine: while its vCPU waits in RECV, the guest thread stopped. */
    @ParameterizedTest
    @ValueSource(strings = {"spin", "confine"})
    void aGuestProcessKilledFromOutsideEndsItsVmAsCrashed(String guest) throws Exception {
        VmmTesting.quiesce(vmm); // the pool of guest processes spawned ahead is full
        long childrenBefore = children();
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped(guest), MEMORY));
        vm.ready().get(30, TimeUnit.SECONDS);
        killFromOutsideEndsItAsCrashed(vm, childrenBefore, VmmTesting.TIMEOUT);
    }

    /**
     * SIGKILLs {@code vm}'s guest process from outside: the VM ends as crashed, naming the
     * signal (not an exit, not a hang), the process is reaped (no zombie, no child left)
     * and the VMM still runs a guest.
     */
    private void killFromOutsideEndsItAsCrashed(VirtualMachine vm, long childrenBefore, java.time.Duration within)
            throws Exception {
        int pid = vm.guestPid();
        assertTrue(ProcessHandle.of(pid).orElseThrow().destroyForcibly(), "SIGKILL not sent");
        VmExit exit = vm.awaitTermination(within);
        assertEquals(VmExit.Kind.CRASHED, exit.kind(), exit.toString());
        assertEquals("guest crashed: its host process " + pid + " was killed by signal 9 (SIGKILL)", exit.reason());
        assertFalse(Files.exists(Path.of("/proc/" + pid)), "guest process " + pid + " is still there");
        VmmTesting.quiesce(vmm);
        assertEquals(childrenBefore, settleChildren(childrenBefore), "child processes left: " + childList());
        assertHelloRuns();
    }

    /**
     * A guest process SIGKILLed while every vCPU of its VM waits in the VMM (RECV, its
     * threads in ptrace stops; the usual state of an idle worker): no tracer is waiting for
     * it then, yet the VM ends at once as crashed, naming the signal.
     */
    @ParameterizedTest
    @ValueSource(ints = {1, 2})
    void aGuestProcessKilledWhileItsVmWaitsForRequestsEndsItsVmAsCrashed(int vcpus) throws Exception {
        VmmTesting.quiesce(vmm);
        long childrenBefore = children();
        VirtualMachine vm = vmm.launch(new VmSpec(Guests.shipped(vcpus == 1 ? "confine" : "smp"), 64L << 20, vcpus, 0,
                VmListener.NONE));
        vm.ready().get(30, TimeUnit.SECONDS);
        long deadline = System.nanoTime() + 10_000_000_000L;
        while (!vm.awaitingRequest()) {
            assertTrue(System.nanoTime() < deadline, "the guest never waited in RECV");
            Thread.sleep(1);
        }
        killFromOutsideEndsItAsCrashed(vm, childrenBefore, java.time.Duration.ofSeconds(10));
    }

    /**
     * An SMP guest whose vCPUs all run guest code, SIGKILLed from outside while two other
     * VMs of the same VMM run (one computing, one waiting for requests): it alone ends, as
     * crashed with the signal named; the others answer before and after; once they are
     * stopped, no vCPU thread, fd, child process or zombie of any of them is left.
     */
    @Test
    void aGuestProcessKilledFromOutsideEndsOnlyItsVmAndLeavesNothing() throws Exception {
        assertHelloRuns(); // warm up: the JVM's own fds (jars, classes) opened once
        VmmTesting.quiesce(vmm);
        long childrenBefore = children();
        int fdsBefore = VmmTesting.openFds();
        int vmFdsBefore = VmmTesting.vmFds();
        int threadsBefore = VmmTesting.vmmThreads();

        VirtualMachine worker = vmm.launch(VmSpec.of(Guests.shipped("warm-worker"), 256L << 20));
        VirtualMachine spin = vmm.launch(VmSpec.of(Guests.shipped("spin"), MEMORY));
        VirtualMachine smp = vmm.launch(new VmSpec(Guests.shipped("smp"), 64L << 20, 3, 0, VmListener.NONE));
        worker.ready().get(30, TimeUnit.SECONDS);
        spin.ready().get(30, TimeUnit.SECONDS);
        smp.ready().get(30, TimeUnit.SECONDS);
        assertEquals("started 6", ForkTest.ask(smp, "start 3"), "vCPUs 1 and 2 count");
        String value = ForkTest.ask(worker, "get 42");
        assertTrue(value.matches("42 \\d+"), value);
        int pid = smp.guestPid();
        assertNotEquals(worker.guestPid(), pid);
        assertNotEquals(spin.guestPid(), pid);

        assertTrue(ProcessHandle.of(pid).orElseThrow().destroyForcibly(), "SIGKILL not sent");
        VmExit exit = smp.awaitTermination(VmmTesting.TIMEOUT);
        assertEquals(VmExit.Kind.CRASHED, exit.kind(), exit.toString());
        assertEquals("guest crashed: its host process " + pid + " was killed by signal 9 (SIGKILL)", exit.reason());
        assertEquals(VmState.CRASHED, smp.state());
        assertFalse(Files.exists(Path.of("/proc/" + pid)), "guest process " + pid + " is still there (a zombie?)");

        // The VMM keeps serving the others, which did not notice.
        assertEquals(value, ForkTest.ask(worker, "get 42"));
        assertTrue(ForkTest.ask(spin, "count").matches("\\d+"));
        assertEquals(VmState.RUNNING, worker.state());
        assertEquals(VmState.RUNNING, spin.state());
        assertHelloRuns();

        worker.stop();
        spin.stop();
        assertEquals(0, vmm.liveCount());
        assertEquals(threadsBefore, VmmTesting.settle(VmmTesting::vmmThreads, threadsBefore), () -> "vCPU threads left: "
                + Thread.getAllStackTraces().keySet().stream().map(Thread::getName).sorted().toList());
        VmmTesting.quiesce(vmm);
        assertEquals(childrenBefore, settleChildren(childrenBefore), "child processes left: " + childList());
        VmmTesting.assertNoFdLeft(fdsBefore, vmFdsBefore);
    }

    @Test
    void crashingAndExitingGuestsLeaveNoProcessAndNoFd() throws Exception {
        assertHelloRuns(); // warm up: the JVM's own fds (jars, classes) opened once
        VmmTesting.quiesce(vmm); // the pool of guest processes spawned ahead is full
        long childrenBefore = children();
        int fdsBefore = VmmTesting.openFds();
        int vmFdsBefore = VmmTesting.vmFds();
        for (int i = 0; i < 6; i++) {
            VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("confine"), MEMORY));
            vm.ready().get(30, TimeUnit.SECONDS);
            vm.channel().send((i % 2 == 0 ? "syscall-fork" : "page0-read").getBytes(StandardCharsets.UTF_8));
            assertEquals(VmExit.Kind.CRASHED, vm.awaitTermination(VmmTesting.TIMEOUT).kind());
            assertEquals(VmExit.exited(42), vmm.launch(VmSpec.of(Guests.shipped("exit42"), MEMORY))
                    .awaitTermination(VmmTesting.TIMEOUT));
        }
        // Every guest process killed and reaped (GuestProcess.release); the pool full again.
        VmmTesting.quiesce(vmm);
        assertEquals(childrenBefore, settleChildren(childrenBefore), "child processes left: " + childList());
        assertEquals(VmmTesting.pooledProcesses(vmm), childrenBefore,
                "the VMM has child processes beyond its pool when no VM runs: " + childList());
        // The spawn socket, memfds and pidfds of every launch closed.
        VmmTesting.assertNoFdLeft(fdsBefore, vmFdsBefore);
    }

    private static void assertHelloRuns() {
        VirtualMachine hello = vmm.launch(VmSpec.of(Guests.shipped("hello"), MEMORY));
        assertEquals(VmExit.exited(0), hello.awaitTermination(VmmTesting.TIMEOUT), hello.console().text());
    }

    private static long children() {
        return ProcessHandle.current().children().count();
    }

    private static List<String> childList() {
        return ProcessHandle.current().children().map(p -> p.pid() + " " + p.info().command().orElse("?")).toList();
    }

    private static long settleChildren(long limit) throws InterruptedException {
        return VmmTesting.settle(() -> (int) children(), (int) limit);
    }
}
