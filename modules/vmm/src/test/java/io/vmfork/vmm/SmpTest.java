package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.state.VcpuState;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * Guests with several vCPUs (docs/hypercalls.md, "Several vCPUs"), on real VMs, with the
 * test guest tests/smp.c: secondaries count in their own lanes of shared memory, checking
 * at every turn that memory and their registers agree (see smp.c).
 */
class SmpTest extends VmmTestBase {
    private static final int VCPUS = 4;
    private static final int FORKS = 10;
    private static final Pattern PARENT = Pattern.compile(
            "parent rc=1 id=(\\d+) pre=([\\d,]+) post=([\\d,]+) progress=ok errors=0");
    private static final Pattern CHILD = Pattern.compile(
            "child id=(\\d+) start=([\\d,]+) pre=([\\d,]+) first=([\\d,]+) mine=ok ring=ok errors=0 progress=ok");

    static VirtualMachine smp(int vcpus, VmListener listener) throws Exception {
        VirtualMachine vm = vmm.launch(new VmSpec(Guests.shipped("smp"), 64L << 20, vcpus, 0, listener));
        vm.ready().get(30, TimeUnit.SECONDS);
        return vm;
    }

    private static long[] longs(String csv) {
        String[] p = csv.split(",");
        long[] out = new long[p.length];
        for (int i = 0; i < p.length; i++) {
            out[i] = Long.parseLong(p[i]);
        }
        return out;
    }

    @Test
    void vcpuZeroForksTenTimesWhileTheOthersCountAndEveryCopyStartsFromOneInstant() throws Exception {
        ForkTest.Announcements a = new ForkTest.Announcements();
        VirtualMachine parent = smp(VCPUS, a);
        List<VirtualMachine> kids = new ArrayList<>();
        try {
            assertEquals("vcpus=4 identity=4 index=0", ForkTest.ask(parent, "info"));
            assertEquals("started 14", ForkTest.ask(parent, "start 4"), "vCPUs 1, 2 and 3 run");
            assertEquals("progress ok", ForkTest.ask(parent, "progress"));
            for (int f = 0; f < FORKS; f++) {
                String r = ForkTest.ask(parent, "fork");
                Matcher pm = PARENT.matcher(r);
                assertTrue(pm.matches(), "fork " + f + ": " + r);
                VirtualMachine child = vmm.vm(Long.parseLong(pm.group(1)));
                assertNotNull(child, "fork " + f + ": the child is not alive");
                kids.add(child);
                long[] pre = longs(pm.group(2));
                long[] post = longs(pm.group(3));
                String c = a.next(child);
                Matcher cm = CHILD.matcher(c);
                assertTrue(cm.matches(), "fork " + f + " child: " + c);
                assertEquals(child.id(), Long.parseLong(cm.group(1)));
                assertArrayEquals(pre, longs(cm.group(3)), "the child's memory holds what its parent read before FORK");
                long[] start = new long[VCPUS]; // the child reports lanes 1..3
                System.arraycopy(longs(cm.group(2)), 0, start, 1, VCPUS - 1);
                long[] first = longs(cm.group(4));
                for (int i = 1; i < VCPUS; i++) {
                    // The capture's instant T lies between the parent's two readings; the
                    // child's secondary starts at the top of its first turn, at T's count or
                    // one further (it was paused inside a turn and finishes it).
                    assertTrue(pre[i] <= start[i] && start[i] <= post[i] + 1, "fork " + f + " vCPU " + i
                            + ": the child starts at " + start[i] + ", outside the parent's [" + pre[i] + ", "
                            + post[i] + "] around the fork");
                    assertTrue(pre[i] <= first[i], "fork " + f + " vCPU " + i + ": the child's vCPU 0 read "
                            + first[i] + " first, behind the parent's " + pre[i] + " before the fork");
                }
                assertEquals(4, child.vcpuCount());
            }
            assertEquals(FORKS, kids.stream().map(VirtualMachine::id).distinct().count());
            // The parent kept its four vCPUs running through every fork; now it stops its
            // secondaries and writes its marker, as each child did.
            assertEquals("errors=0 running=14", ForkTest.ask(parent, "errors"));
            assertTrue(ForkTest.ask(parent, "stop").startsWith("stopped lanes="));
            // Isolation: every VM still sees its own marker and its own frozen lanes, none
            // of what its parent or siblings wrote at the same addresses.
            assertEquals("check ok", ForkTest.ask(parent, "check"));
            for (VirtualMachine k : kids) {
                assertEquals("check ok", ForkTest.ask(k, "check"), "child " + k);
            }
            // The children restart their secondaries (VCPU_START after VCPU_STOP) and count on.
            for (VirtualMachine k : kids.subList(0, 2)) {
                assertEquals("started 14", ForkTest.ask(k, "start 4"));
                assertEquals("progress ok", ForkTest.ask(k, "progress"));
                assertEquals("errors=0 running=14", ForkTest.ask(k, "errors"));
            }
        } finally {
            for (VirtualMachine k : kids) {
                k.stop();
            }
            parent.stop();
        }
    }

    @Test
    void anExternalForkResumesEveryVcpuAndOneNeverStartedStaysSo() throws Exception {
        VirtualMachine parent = smp(VCPUS, VmListener.NONE);
        VirtualMachine child = null;
        try {
            assertEquals("started 6", ForkTest.ask(parent, "start 3"), "vCPUs 1 and 2 run, 3 is not started");
            VirtualMachine.ForkResult r = parent.fork(1, 0);
            assertEquals(List.of(), r.errors());
            child = r.children().get(0);
            assertEquals("progress ok", ForkTest.ask(child, "progress"), "vCPUs 1 and 2 run on in the child");
            assertEquals("errors=0 running=6", ForkTest.ask(child, "errors"));
            assertEquals("progress ok", ForkTest.ask(parent, "progress"));
            // vCPU 3 was not started in the child either: VCPU_START succeeds there, and
            // fails (EINVAL) on vCPU 1, which runs.
            assertEquals("probe -1", ForkTest.ask(child, "probe 1"));
            assertEquals("probe 0", ForkTest.ask(child, "probe 3"));
            assertEquals("progress ok", ForkTest.ask(child, "progress"));
            assertEquals("errors=0 running=14", ForkTest.ask(child, "errors"));
            assertEquals("probe 0", ForkTest.ask(parent, "probe 3"), "the child's start is not the parent's");
        } finally {
            if (child != null) {
                child.stop();
            }
            parent.stop();
        }
    }

    @Test
    void aCapsuleCarriesEveryVcpuAndWhetherItWasStarted() throws Exception {
        VirtualMachine original = smp(VCPUS, VmListener.NONE);
        VirtualMachine clone = null;
        try {
            assertEquals("started 6", ForkTest.ask(original, "start 3"));
            byte[] capsule;
            try (VirtualMachine.Snapshot s = original.snapshot()) {
                assertEquals(VCPUS, s.state().vcpus().size());
                assertEquals(List.of(true, true, true, false),
                        s.state().vcpus().stream().map(VcpuState::started).toList());
                ByteArrayOutputStream out = new ByteArrayOutputStream();
                vmm.writeCapsule(s, out);
                capsule = out.toByteArray();
            }
            clone = vmm.restoreCapsule(new ByteArrayInputStream(capsule), VmListener.NONE);
            assertEquals(VCPUS, clone.vcpuCount());
            assertEquals("vcpus=4 identity=4 index=0", ForkTest.ask(clone, "info"));
            assertEquals("progress ok", ForkTest.ask(clone, "progress"), "vCPUs 1 and 2 run on in the clone");
            assertEquals("errors=0 running=6", ForkTest.ask(clone, "errors"));
            assertEquals("probe 0", ForkTest.ask(clone, "probe 3"), "vCPU 3 arrives not started");
            assertEquals("progress ok", ForkTest.ask(clone, "progress"));
            assertEquals("errors=0 running=14", ForkTest.ask(clone, "errors"));
        } finally {
            if (clone != null) {
                clone.stop();
            }
            original.stop();
        }
    }

    @Test
    void vcpuStartRefusesBadRequestsInTheDocumentedOrder() throws Exception {
        VirtualMachine vm = smp(VCPUS, VmListener.NONE);
        try {
            assertEquals("started 2", ForkTest.ask(vm, "start 2"));
            // vCPU 0, no such vCPU (4, 2^32-1), flags; entry outside RAM (twice); stack top
            // outside RAM, below 0x200000 and at 8; a misaligned stack top; the block outside
            // RAM; vCPU 1 already running; VCPU_STOP on vCPU 0; VCPU_INDEX on vCPU 0.
            assertEquals("rc -1 -1 -1 -1 -2 -2 -2 -2 -2 -1 -2 -1 -1 0", ForkTest.ask(vm, "badstart"));
            assertEquals("progress ok", ForkTest.ask(vm, "progress"), "vCPU 1 runs on, undisturbed");
            assertEquals("errors=0 running=2", ForkTest.ask(vm, "errors"));
        } finally {
            vm.stop();
        }
    }

    @Test
    void theVmEndsWhenAnyVcpuExitsAndVcpuCountsAreChecked() throws Exception {
        VirtualMachine vm = smp(VCPUS, VmListener.NONE);
        assertEquals("started 14", ForkTest.ask(vm, "start 4"));
        vm.channel().send("exit".getBytes());
        VmExit e = vm.awaitTermination(VmmTesting.TIMEOUT);
        assertEquals(VmExit.Kind.EXITED, e.kind(), e.toString());
        assertEquals(0, e.exitCode());

        VirtualMachine w = smp(2, VmListener.NONE);
        w.channel().send("wexit".getBytes());
        VmExit we = w.awaitTermination(VmmTesting.TIMEOUT);
        assertEquals(VmExit.Kind.EXITED, we.kind(), we.toString());
        assertEquals(7, we.exitCode(), "a secondary's EXIT ends the VM with its code");

        int max = vmm.settings().maxVcpus();
        VirtualMachine big = smp(max, VmListener.NONE);
        assertEquals("vcpus=" + max + " identity=" + max + " index=0", ForkTest.ask(big, "info"));
        big.stop();
        assertThrows(LaunchException.class,
                () -> vmm.launch(new VmSpec(Guests.shipped("smp"), 64L << 20, max + 1, 0, VmListener.NONE)));
    }

    /** Collects a VM's console as its listener saw it, and its unsolicited messages. */
    static final class Collector implements VmListener {
        final StringBuilder console = new StringBuilder();
        final java.util.concurrent.BlockingQueue<String> messages = new java.util.concurrent.LinkedBlockingQueue<>();

        @Override
        public synchronized void onConsole(VirtualMachine vm, byte[] bytes) {
            console.append(new String(bytes, java.nio.charset.StandardCharsets.UTF_8));
        }

        @Override
        public void onUnsolicitedMessage(VirtualMachine vm, byte[] message) {
            messages.add(new String(message, java.nio.charset.StandardCharsets.UTF_8));
        }

        synchronized String console() {
            return console.toString();
        }
    }

    @Test
    void hypercallsFromEveryVcpuAtOnceAreEachServedWhole() throws Exception {
        Collector c = new Collector();
        VirtualMachine vm = smp(VCPUS, c);
        int rounds = 200;
        try {
            vm.channel().send(("hammer " + rounds).getBytes());
            java.util.Set<String> sent = new java.util.HashSet<>();
            String last;
            while (true) {
                last = c.messages.poll(60, TimeUnit.SECONDS);
                assertNotNull(last, "the guest did not finish; it sent " + sent.size());
                if (last.startsWith("hammer")) {
                    break;
                }
                assertTrue(last.matches("h[0-3]\\.\\d+"), "a SEND arrives whole: " + last);
                assertTrue(sent.add(last), "once: " + last);
            }
            assertEquals("hammer ok total=" + VCPUS * rounds, last,
                    "IDENTITY, ENTROPY, CLOCK, the atomics, the barrier and the CAS lock held on every vCPU");
            assertEquals(VCPUS * rounds, sent.size());
            String console = vm.console().text();
            assertEquals(c.console(), console, "the console buffer and the listener saw the writes in one order");
            java.util.Set<String> lines = new java.util.HashSet<>(List.of(console.split("\n")));
            assertEquals(sent, lines, "every console write arrived whole, once");
            assertEquals(VCPUS * rounds, console.split("\n").length);
            assertEquals("errors=0 running=0", ForkTest.ask(vm, "errors"));
        } finally {
            vm.stop();
        }
    }

    private static final Pattern SFORK = Pattern.compile("sfork rc=1 role=p id=(\\d+)");

    @Test
    void aSecondaryVcpuForksAndOnlyItSeesTheChildRole() throws Exception {
        ForkTest.Announcements a = new ForkTest.Announcements();
        VirtualMachine parent = smp(VCPUS, a);
        VirtualMachine child = null;
        try {
            Matcher m = SFORK.matcher(ForkTest.ask(parent, "sfork"));
            assertTrue(m.matches(), m.toString());
            child = vmm.vm(Long.parseLong(m.group(1)));
            assertNotNull(child);
            // vCPU 0 spun through the fork in both; in the child, vCPU 3 returns from FORK as the child.
            assertEquals("sfork rc=0 role=c id=" + child.id(), a.next(child));
            // vCPU 3 stopped after its fork in both, vCPUs 1 and 2 were never started: all start now.
            for (VirtualMachine v : List.of(parent, child)) {
                assertEquals("started 14", ForkTest.ask(v, "start 4"), v.toString());
                assertEquals("progress ok", ForkTest.ask(v, "progress"), v.toString());
            }
        } finally {
            if (child != null) {
                child.stop();
            }
            parent.stop();
        }
    }

    @Test
    void twoVcpusForkingAtOnceAreServedOneAfterTheOther() throws Exception {
        ForkTest.Announcements a = new ForkTest.Announcements();
        VirtualMachine parent = smp(VCPUS, a);
        List<VirtualMachine> made = new ArrayList<>();
        try {
            assertEquals("dfork pp id=" + parent.id(), ForkTest.ask(parent, "dfork"));
            // One fork runs first (say vCPU 1's): its copy A has vCPU 1 as the child and vCPU 2
            // not yet forked, which forks in A (A's copy: both children). The second fork's copy B
            // has vCPU 1 returned as the parent and vCPU 2 as the child.
            List<String> roles = new ArrayList<>();
            for (int k = 0; k < 3; k++) {
                VirtualMachine v = a.forked.poll(30, TimeUnit.SECONDS);
                assertNotNull(v, "copy " + k + " of 3");
                made.add(v);
                String s = a.next(v);
                assertTrue(s.endsWith(" id=" + v.id()), s);
                roles.add(s.substring("dfork ".length(), "dfork ".length() + 2));
            }
            java.util.Collections.sort(roles);
            assertEquals(List.of("cc", "cp", "pc"), roles);
            assertEquals(2, parent.children().size(), "the parent forked twice");
            assertNull(a.forked.poll(200, TimeUnit.MILLISECONDS), "no other copy");
        } finally {
            for (VirtualMachine v : made) {
                v.stop();
            }
            parent.stop();
        }
    }

    @Test
    void aStartedVcpuBeginsWithTheDocumentedRegisters() throws Exception {
        VirtualMachine vm = smp(VCPUS, VmListener.NONE);
        try {
            // Twice: the second start follows the vCPU's own VCPU_STOP (an `out` the VMM never
            // re-entered KVM_RUN after), and must begin exactly at the entry all the same.
            String first = ForkTest.ask(vm, "regs 2");
            assertEquals(first, ForkTest.ask(vm, "regs 2"));
            Matcher m = Pattern.compile("regs rdi=(\\w+) rsi=(\\d+) rsp=(\\w+) arg=(\\w+) top=(\\w+) others=(\\w+)"
                    + " rflags=(\\w+)").matcher(first);
            assertTrue(m.matches(), m.toString());
            assertEquals(m.group(4), m.group(1), "RDI = arg");
            assertEquals("2", m.group(2), "RSI = the index");
            assertEquals(m.group(5), m.group(3), "RSP = stack_top");
            assertEquals("0", m.group(6), "every other general register is 0");
            // RFLAGS as vCPU 0 observes its own at boot (docs/hypercalls.md, "Initial state"):
            // 0x3002 where the VMM's flags show, the host's user-mode 0x202 under PVM.
            long rflags = Long.parseLong(m.group(7), 16);
            assertTrue(rflags == 0x3002 || rflags == 0x202, "RFLAGS 0x" + m.group(7));
        } finally {
            vm.stop();
        }
    }

    @Test
    void snapshotRestoreSnapshotOfAnSmpVmGivesTheFirstSnapshotBack() throws Exception {
        VirtualMachine original = smp(VCPUS, VmListener.NONE);
        try {
            // vCPUs 1 and 2 ran and stopped, 3 never ran, vCPU 0 waits in RECV: a still VM.
            assertEquals("started 6", ForkTest.ask(original, "start 3"));
            assertTrue(ForkTest.ask(original, "stop").startsWith("stopped"));
            SnapshotContractTest.idle(original);
            try (VirtualMachine.Snapshot first = original.snapshot()) {
                assertEquals(List.of(true, false, false, false),
                        first.state().vcpus().stream().map(VcpuState::started).toList());
                // A state whose vCPU 0 does not run is no vmfork guest's, and starts nothing.
                List<VcpuState> idle0 = new ArrayList<>(first.state().vcpus());
                idle0.set(0, idle0.get(0).withStarted(false));
                io.vmfork.vmm.state.MachineState bad = new io.vmfork.vmm.state.MachineState(
                        first.state().identity(), first.state().memorySize(), first.state().cpuidEntries(),
                        first.state().clockNs(), idle0, first.state().devices());
                int live = vmm.liveCount();
                LaunchException e = assertThrows(LaunchException.class,
                        () -> vmm.restore(bad, first.image(), VmListener.NONE));
                assertTrue(e.getMessage().contains("vCPU 0"), e.getMessage());
                assertEquals(live, vmm.liveCount());
                VirtualMachine clone = vmm.restore(first.state(), first.image(), VmListener.NONE);
                try {
                    SnapshotContractTest.idle(clone);
                    try (VirtualMachine.Snapshot second = clone.snapshot()) {
                        assertEquals(VCPUS, second.state().vcpus().size());
                        for (int i = 0; i < VCPUS; i++) {
                            assertEquals(SnapshotContractTest.withoutTsc(first.state().vcpus().get(i)),
                                    SnapshotContractTest.withoutTsc(second.state().vcpus().get(i)), "vCPU " + i);
                        }
                        assertArrayEquals(SnapshotContractTest.memoryDigest(first.image()),
                                SnapshotContractTest.memoryDigest(second.image()), "guest RAM");
                    }
                    assertEquals("check ok", ForkTest.ask(original, "check"));
                    assertEquals("started 14", ForkTest.ask(clone, "start 4"));
                    assertEquals("progress ok", ForkTest.ask(clone, "progress"));
                } finally {
                    clone.stop();
                }
            }
        } finally {
            original.stop();
        }
    }

    /** Sends {@code prefix + k} for k in [from, to) and collects the answers "r<i> <message>" of {@code vm}. */
    private static java.util.Set<String> exchange(VirtualMachine vm, ForkTest.Announcements a, String prefix, int from,
            int to) throws Exception {
        for (int k = from; k < to; k++) {
            vm.channel().send((prefix + k).getBytes());
        }
        java.util.Set<String> got = new java.util.HashSet<>();
        for (int n = from; n < to; n++) {
            String r = a.next(vm);
            assertTrue(r.matches("r[1-3] " + prefix + "\\d+"), vm + ": " + r);
            assertTrue(got.add(r.substring(3)), vm + ": a message taken twice: " + r);
        }
        java.util.Set<String> want = new java.util.HashSet<>();
        for (int k = from; k < to; k++) {
            want.add(prefix + k);
        }
        assertEquals(want, got, vm + ": every message taken by exactly one vCPU");
        return got;
    }

    @Test
    void eachMessageGoesToOneVcpuWaitingInRecvAndAForkRestartsEveryWaitingRecv() throws Exception {
        ForkTest.Announcements a = new ForkTest.Announcements();
        VirtualMachine parent = smp(VCPUS, a);
        VirtualMachine child = null;
        try {
            parent.channel().send("recvers".getBytes());
            exchange(parent, a, "m", 0, 300);
            // The secondaries wait in RECV (or are about to): a fork captures each back on its
            // `out`, and in the child each re-issues the call on an empty channel of its own.
            child = parent.fork(1, 0).children().get(0);
            exchange(parent, a, "p", 0, 60);
            exchange(child, a, "c", 0, 60);
            for (VirtualMachine v : List.of(parent, child)) {
                for (int q = 1; q < VCPUS; q++) {
                    v.channel().send("quit".getBytes());
                }
                assertEquals("recvers done", a.next(v), v.toString());
                assertEquals("errors=0 running=0", ForkTest.ask(v, "errors"), "vCPU 0 serves requests again");
            }
        } finally {
            if (child != null) {
                child.stop();
            }
            parent.stop();
        }
    }
}
