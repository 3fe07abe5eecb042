package io.vmfork.vmm;

import io.vmfork.vmm.platform.kvm.VmPool;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.stream.Stream;

/** Shared pieces of the VMM tests: one Vmm per test class, process resource counts. */
final class VmmTesting {
    static final Duration TIMEOUT = Duration.ofSeconds(60);

    private VmmTesting() {
    }

    static Vmm openVmm() {
        return Vmm.open(VmmSettings.load());
    }

    /**
     * Waits until the VM pool of {@code vmm} (if it has one) is full again: it refills in
     * the background after every launch, so fd and mapping counts are taken when it is still.
     */
    static void quiesce(Vmm vmm) throws InterruptedException {
        VmPool p = vmm.pool();
        if (p != null) {
            org.junit.jupiter.api.Assertions.assertTrue(p.awaitFull(Duration.ofSeconds(10)), "the VM pool did not refill");
        }
        // The process platform's pool: guest processes spawned ahead, each a child process
        // and a control socket of the VMM.
        var pp = vmm.processPlatform();
        if (pp != null) {
            org.junit.jupiter.api.Assertions.assertTrue(pp.awaitFull(Duration.ofSeconds(10)),
                    "the guest process pool did not refill");
        }
    }

    /** Guest processes the process platform's pool holds ready (0 on KVM). */
    static int pooledProcesses(Vmm vmm) {
        var pp = vmm.processPlatform();
        return pp == null ? 0 : pp.readyCount();
    }

    /** Ready VMs in the pool of {@code vmm}: each holds a KVM VM fd, a vCPU fd and a kvm_run mapping. */
    static int pooled(Vmm vmm) {
        VmPool p = vmm.pool();
        return p == null ? 0 : p.readyCount();
    }

    /** Whether the pool's thread of any VMM is alive. */
    static boolean poolThreadAlive() {
        return Thread.getAllStackTraces().keySet().stream().anyMatch(t -> t.getName().equals("vmfork-vm-pool"));
    }

    /**
     * Live threads of VMMs: pool threads, parked pooled vCPU threads, vCPU threads. Counted
     * by name: the process's task count also moves with the JVM's own (JIT compiler threads
     * come and go).
     */
    static int vmmThreads() {
        return (int) Thread.getAllStackTraces().keySet().stream().filter(Thread::isAlive).map(Thread::getName)
                .filter(n -> n.equals("vmfork-vm-pool") || n.equals("vmfork-pooled-vcpu") || n.startsWith("vcpu-")
                        || n.startsWith("vmfork-fork-launch-") || n.equals("vmfork-freeze-copy"))
                .count();
    }

    /** What a closed VMM must have left: no VM fd (not even /dev/kvm), no VM mapping, no pool, launch or vCPU thread. */
    static void assertNothingLeftAfterClose() throws InterruptedException {
        org.junit.jupiter.api.Assertions.assertEquals(0, vmFds(), "VM fds (/dev/kvm, KVM VMs and vCPUs, memfds) left");
        org.junit.jupiter.api.Assertions.assertEquals(0, vmMappings(), "guest RAM or kvm_run mappings left");
        org.junit.jupiter.api.Assertions.assertFalse(poolThreadAlive(), "the VM pool's thread is still alive");
        org.junit.jupiter.api.Assertions.assertEquals(0, settle(VmmTesting::vmmThreads, 0),
                () -> "pooled or vCPU threads left: " + Thread.getAllStackTraces().keySet().stream()
                        .map(Thread::getName).sorted().toList());
    }

    static int openFds() {
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
            return (int) s.count();
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * fds that a VM or the VMM holds: /dev/kvm, KVM VMs and vCPUs, guest RAM memfds, and the
     * userfaultfds of write-protect copies (their eventfds count among all fds).
     */
    static int vmFds() {
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
            return (int) s.filter(p -> {
                try {
                    String t = Files.readSymbolicLink(p).toString();
                    return t.equals("/dev/kvm") || t.startsWith("anon_inode:kvm") || t.startsWith("/memfd:vmfork")
                            || t.equals("anon_inode:[userfaultfd]");
                } catch (IOException e) {
                    return false;
                }
            }).count();
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    /**
     * Asserts that no VM fd is left beyond {@code vmFdsBefore}, exactly, and that the total
     * settles back to {@code fdsBefore}: the JVM's own fds (sockets, pipes, jar and cgroup
     * files) come and go on their own schedule.
     */
    static void assertNoFdLeft(int fdsBefore, int vmFdsBefore) throws InterruptedException {
        org.junit.jupiter.api.Assertions.assertEquals(vmFdsBefore, vmFds(), "VM fds left behind");
        int now = settle(VmmTesting::openFds, fdsBefore);
        org.junit.jupiter.api.Assertions.assertTrue(now <= fdsBefore, "fds left behind: " + now + " > " + fdsBefore);
    }

    static int threads() {
        try (Stream<Path> s = Files.list(Path.of("/proc/self/task"))) {
            return (int) s.count();
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Mappings of guest RAM and of kvm_run areas in this process (the JVM's own come and go). */
    static int vmMappings() {
        try (Stream<String> s = Files.lines(Path.of("/proc/self/maps"))) {
            return (int) s.filter(l -> l.contains("/memfd:vmfork") || l.contains("kvm-vcpu")).count();
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    /** memfds of this process (they show as /memfd:NAME links in /proc/self/fd). */
    static int memfds() {
        try (Stream<Path> s = Files.list(Path.of("/proc/self/fd"))) {
            return (int) s.filter(p -> {
                try {
                    return Files.readSymbolicLink(p).toString().startsWith("/memfd:vmfork");
                } catch (IOException e) {
                    return false;
                }
            }).count();
        } catch (IOException e) {
            throw new IllegalStateException(e);
        }
    }

    /** Waits until {@code probe} returns at most {@code limit}, up to a few seconds (threads take a moment to die). */
    static int settle(java.util.function.IntSupplier probe, int limit) throws InterruptedException {
        long deadline = System.nanoTime() + Duration.ofSeconds(10).toNanos();
        int v = probe.getAsInt();
        while (v > limit && System.nanoTime() < deadline) {
            Thread.sleep(20);
            v = probe.getAsInt();
        }
        return v;
    }
}
