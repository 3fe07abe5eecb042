package io.vmfork.vmm;

import io.vmfork.vmm.platform.kvm.VcpuStates;
import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.kvm.x86.Cpuid;
import io.vmfork.os.HostHelper;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.CapsuleHeader;
import io.vmfork.vmm.capsule.CapsuleIncompatibleException;
import io.vmfork.vmm.capsule.CapsuleReader;
import io.vmfork.vmm.capsule.CpuFeatures;
import io.vmfork.vmm.capsule.HostPlatform;
import io.vmfork.vmm.capsule.ImageSink;
import io.vmfork.vmm.capsule.StateCodec;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.arch.SregsState;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIf;

/**
 * Every row of docs/hypercalls.md's "Initial state" table, as the cpuview guest observes it
 * at entry (and, for what CPL3 code cannot see, as KVM holds it), on hardware KVM or PVM;
 * and the capsule of that guest records the CPU it could observe.
 */
class InitialStateTest {
    private static final long MEMORY = 16L << 20;
    /** PVM's module: a guest at CPL3 runs in host user mode there. */
    private static final boolean PVM = Files.exists(Path.of("/sys/module/kvm_pvm"));
    private static Vmm vmm;
    private static VirtualMachine vm;
    private static Map<String, String> seen;

    @BeforeAll
    static void launch() throws Exception {
        vmm = VmmTesting.openVmm();
        vm = vmm.launch(VmSpec.of(Guests.shipped("cpuview"), MEMORY));
        vm.ready().get(30, TimeUnit.SECONDS);
        String line = ForkTest.ask(vm, "state");
        seen = new HashMap<>();
        for (String kv : line.split(" ")) {
            int eq = kv.indexOf('=');
            seen.put(kv.substring(0, eq), kv.substring(eq + 1));
        }
    }

    @AfterAll
    static void stop() {
        if (vm != null) {
            vm.stop();
        }
        vmm.close();
    }

    private static long hex(String key) {
        String v = seen.get(key);
        assertNotNull(v, key + " not reported: " + seen);
        return Long.parseUnsignedLong(v, 16);
    }

    /** EAX, EBX, ECX, EDX of a leaf as the guest read it. */
    private static long[] guestLeaf(int fn, int sub) {
        String v = seen.get("c" + Integer.toHexString(fn) + "." + Integer.toHexString(sub));
        assertNotNull(v, "leaf " + fn + "." + sub);
        String[] p = v.split(",");
        long[] r = new long[4];
        for (int i = 0; i < 4; i++) {
            r[i] = Long.parseLong(p[i], 16);
        }
        return r;
    }

    private static final int[][] LEAVES = {{0, 0}, {1, 0}, {7, 0}, {0xd, 0}, {0xd, 1}, {0x80000000, 0},
        {0x80000001, 0}};

    @Test
    void registersAtEntry() {
        assertEquals(0x100000, hex("boot"), "RDI: the boot info");
        assertEquals(MEMORY, hex("stack_top"), "RSP starts at memory_size");
        long rsp = hex("rsp");
        assertTrue(rsp < MEMORY && rsp > MEMORY - 256, "RSP inside main, just below stack_top: " + rsp);
        for (String r : new String[] {"rbx", "rbp", "r12", "r13", "r14", "r15"}) {
            assertEquals(0, hex(r), r);
        }
        // _start's `and` changes the arithmetic flags; the system flags are the entry's.
        long system = hex("rflags") & ~0x8d5L;
        assertEquals(PVM ? 0x202 : 0x3002, system, "RFLAGS");
    }

    @Test
    void segments() {
        assertEquals(0x33, hex("cs"));
        assertEquals(0x2b, hex("ss"));
        long data = PVM ? 0 : 0x2b;
        for (String s : new String[] {"ds", "es", "fs", "gs"}) {
            assertEquals(data, hex(s), s);
        }
        if (!seen.get("fsbase").equals("-")) {
            assertEquals(0, hex("fsbase"));
            assertEquals(0, hex("gsbase"));
        }
    }

    @EnabledIf(value = "io.vmfork.vmm.platform.HostPlatforms#vmmRunsOnKvm", disabledReason = "KVM-only by nature: the control registers and CPUID KVM holds")
    @Test
    void controlRegistersXcr0AndCpuid() throws Exception {
        // Read from KVM itself, on the vCPU's own thread while the VM is paused: a capture keeps
        // none of it (the guest model fixes it), so only KVM can say what it holds.
        SregsState sregs;
        RunControl control = vm.control();
        assertTrue(control.pause(TimeUnit.SECONDS.toNanos(10)), "paused");
        try {
            Vcpu v0 = vm.vcpuList().get(0);
            sregs = control.runOn(v0, () -> VcpuStates.fromBytes(((io.vmfork.vmm.platform.kvm.KvmExecContext) v0.context()).kvm().getSregsBytes()));
        } finally {
            control.resume();
        }
        Cpuid kvmCpuid = vmm.cpuid();
        // What CPL3 code cannot see, as KVM holds it.
        assertEquals(0x80050033L, sregs.cr0(), "CR0: PE MP ET NE WP AM PG");
        assertEquals(0x1000, sregs.cr3());
        assertEquals(0x500, sregs.efer(), "EFER: LME LMA");
        long cr4 = 0x20 | 0x200 | 0x400;
        if (kvmCpuid.hasXsave()) {
            cr4 |= 1 << 18;
        }
        if ((kvmCpuid.register(7, 0, 1) & 1) == 1) {
            cr4 |= 1 << 16;
        }
        assertEquals(cr4, sregs.cr4(), "CR4 as the VMM set it");
        assertEquals(1, hex("sse"), "CR4.OSFXSR: SSE works");
        if (PVM && !vmm.kvmPlatform().cpuidIntercepted()) {
            // The guest runs with the host's CR4, XCR0 and CPUID (a PVM host without CPUID
            // faulting: the guest's cpuid is the host CPU's own).
            long[] host1 = toLongs(HostHelper.hostCpuid(1, 0));
            assertEquals((host1[2] >> 27) & 1, hex("osxsave"), "CR4.OSXSAVE as the host's");
            assertEquals(HostHelper.hostXcr0(), hex("xcr0"), "XCR0: the host's");
            for (int[] l : LEAVES) {
                long[] want = toLongs(HostHelper.hostCpuid(l[0], l[1]));
                long[] got = guestLeaf(l[0], l[1]);
                if (l[0] == 1) {
                    want[1] &= 0x00ffffff; // the initial APIC id: of whichever CPU ran the cpuid
                    got[1] &= 0x00ffffff;
                }
                assertArrayEquals(want, got, "CPUID." + Integer.toHexString(l[0]) + "." + l[1] + ": the host's");
            }
        } else if (PVM) {
            // A PVM host with CPUID faulting: KVM answers the guest's cpuid from a view of
            // its own (here the host's less OSXSAVE and PCID), neither the host's nor the
            // CPUID the VMM set. The VMM records what its probe of a real vCPU read.
            byte[] probed = vmm.kvmPlatform().hostPlatform().observedCpuid();
            for (int[] l : LEAVES) {
                if (!io.vmfork.vmm.capsule.CpuFeatures.observedLeaves().contains(java.util.List.of(l[0], l[1]))) {
                    continue; // not probed: no capsule records it
                }
                long[] got = guestLeaf(l[0], l[1]);
                for (int reg = 0; reg < 4; reg++) {
                    long want = io.vmfork.vmm.capsule.CpuFeatures.value(probed, l[0], l[1], reg) & 0xffffffffL;
                    long seen = got[reg];
                    if (l[0] == 1 && reg == 1) {
                        want &= 0x00ffffff;
                        seen &= 0x00ffffff;
                    }
                    assertEquals(want, seen, "CPUID." + Integer.toHexString(l[0]) + "." + l[1] + " as probed");
                }
            }
        } else {
            assertEquals(kvmCpuid.hasXsave() ? 1 : 0, hex("osxsave"));
            if (kvmCpuid.hasXsave()) {
                assertEquals(0x7 & kvmCpuid.register(0xd, 0, 0), hex("xcr0"));
            }
            for (int[] l : LEAVES) {
                for (int reg = 0; reg < 4; reg++) {
                    long want = kvmCpuid.register(l[0], l[1], reg);
                    long got = guestLeaf(l[0], l[1])[reg];
                    if (l[0] == 1 && reg == 2) {
                        got &= ~(1L << 27); // OSXSAVE follows CR4
                    } else if (l[0] == 1 && reg == 1) {
                        got &= 0x00ffffff;
                        want &= 0x00ffffff;
                    }
                    assertEquals(want == -1 ? 0 : want, got, "CPUID." + Integer.toHexString(l[0]) + "." + l[1]);
                }
            }
        }
    }

    @Test
    void aCapsuleRecordsTheCpuTheGuestCouldObserveAndAHostWithoutItRefusesIt() throws Exception {
        byte[] capsule;
        SnapshotContractTest.idle(vm);
        try (VirtualMachine.Snapshot s = vm.snapshot()) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            vmm.writeCapsule(s, out);
            capsule = out.toByteArray();
        }
        ByteArrayInputStream in = new ByteArrayInputStream(capsule);
        in.skip(8);
        CapsuleHeader h = CapsuleFrame.parseDelimitedFrom(in).getHeader();
        byte[] observed = StateCodec.decodeCpuid(h.getObservedCpuidList());
        for (int[] l : new int[][] {{1, 0}, {7, 0}, {0xd, 0}, {0x80000001, 0}}) {
            long[] got = guestLeaf(l[0], l[1]);
            for (int reg = l[0] == 1 ? 2 : 0; reg < 4; reg++) {
                assertEquals(got[reg], CpuFeatures.value(observed, l[0], l[1], reg) & 0xffffffffL,
                        "the header's CPUID." + Integer.toHexString(l[0]) + " is the guest's");
            }
        }
        if (!seen.get("xcr0").equals("-")) {
            assertEquals(hex("xcr0"), h.getObservedXcr0(), "the header's XCR0 is the guest's");
        }
        // A host like this one whose CPU lacks AVX-512 (and its state components) refuses the clone.
        long guest7 = guestLeaf(7, 0)[1];
        if ((guest7 & (1 << 16)) == 0) {
            return; // nothing to take away on a CPU without AVX-512
        }
        HostPlatform here = vmm.hostPlatform();
        byte[] lacking = here.observedCpuid();
        ByteBuffer b = ByteBuffer.wrap(lacking).order(ByteOrder.LITTLE_ENDIAN);
        for (int off = 0; off < lacking.length; off += 40) {
            if (b.getInt(off) == 7 && b.getInt(off + 4) == 0) {
                b.putInt(off + 16, b.getInt(off + 16) & ~(1 << 16));
            }
        }
        HostPlatform noAvx512 = here.withObserved(lacking, here.observedXcr0() & ~0xe0L);
        int live = vmm.liveCount();
        try (ImageSink sink = ImageSink.create("vmfork-test", MEMORY, vmm.capsuleLimits().maxChunkBytes())) {
            CapsuleIncompatibleException e = assertThrows(CapsuleIncompatibleException.class, () -> CapsuleReader
                    .create(vmm.capsuleLimits()).read(new ByteArrayInputStream(capsule), sink, noAvx512));
            assertTrue(e.getMessage().contains("avx512f (CPUID.7.0:EBX[16])"), e.getMessage());
            assertTrue(e.getMessage().contains("xsave state opmask (XCR0[5])"), e.getMessage());
        }
        assertEquals(live, vmm.liveCount());
        // This host itself takes it.
        VirtualMachine clone = vmm.restoreCapsule(new ByteArrayInputStream(capsule), VmListener.NONE);
        try {
            assertTrue(ForkTest.ask(clone, "state").startsWith("rflags="));
        } finally {
            clone.stop();
        }
    }

    private static long[] toLongs(int[] r) {
        long[] l = new long[r.length];
        for (int i = 0; i < r.length; i++) {
            l[i] = r[i] & 0xffffffffL;
        }
        return l;
    }
}
