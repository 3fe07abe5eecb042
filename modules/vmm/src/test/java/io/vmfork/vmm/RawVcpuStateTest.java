package io.vmfork.vmm;

import io.vmfork.vmm.platform.kvm.VcpuStates;
import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.KvmVm;
import io.vmfork.kvm.x86.KvmSregs;
import io.vmfork.vmm.arch.SegmentState;
import io.vmfork.vmm.arch.SregsState;
import io.vmfork.vmm.x86.CpuSetup;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIf;

/**
 * The fork path reads and writes kvm_sregs, kvm_regs, kvm_vcpu_events and kvm_mp_state
 * raw (no JNA Structure): on a real vCPU it must agree with the Structure path, both ways.
 */
@EnabledIf(value = "io.vmfork.vmm.platform.HostPlatforms#vmmRunsOnKvm", disabledReason = "KVM-only by nature: raw KVM ioctls against their JNA Structures")
class RawVcpuStateTest {
    @Test
    void rawSregsAgreeWithTheStructureBothWays() {
        try (Vmm vmm = VmmTesting.openVmm(); KvmVm vm = vmm.kvmPlatform().kvm().createVm(); KvmVcpu v = vm.createVcpu(0)) {
            v.setCpuid(vmm.cpuid());
            CpuSetup.setLongModeUser(v, vmm.cpuid());
            SregsState viaStructure = VcpuStates.toState(v.getSregs());
            SregsState viaBytes = VcpuStates.fromBytes(v.getSregsBytes());
            assertSameState(viaStructure, viaBytes);

            // Every field a CPL3 guest or a capture can change, written raw and read back both ways.
            List<SegmentState> segs = new ArrayList<>(viaBytes.segments());
            SegmentState fs = segs.get(3);
            segs.set(3, new SegmentState(0x7fff_1234_5000L, fs.limit(), fs.selector(), fs.type(), fs.present(),
                    fs.dpl(), fs.db(), fs.s(), fs.l(), fs.g(), fs.avl(), fs.unusable()));
            SegmentState gs = segs.get(4);
            segs.set(4, new SegmentState(0x6000_0000L, gs.limit(), 0, gs.type(), gs.present(), gs.dpl(), gs.db(),
                    gs.s(), gs.l(), gs.g(), gs.avl(), 1));
            SregsState changed = new SregsState(segs, viaBytes.gdtBase(), viaBytes.gdtLimit(), viaBytes.idtBase(),
                    viaBytes.idtLimit(), viaBytes.cr0(), 0x40_1000L, viaBytes.cr3(), viaBytes.cr4(), viaBytes.cr8(),
                    viaBytes.efer(), viaBytes.apicBase(), viaBytes.interruptBitmap());
            v.setSregsBytes(VcpuStates.toBytes(changed));
            assertSameState(changed, VcpuStates.toState(v.getSregs()));
            assertSameState(changed, VcpuStates.fromBytes(v.getSregsBytes()));
            assertArrayEquals(VcpuStates.toBytes(changed), v.getSregsBytes());
            assertThrows(IllegalArgumentException.class, () -> v.setSregsBytes(new byte[KvmSregs.SIZE - 1]));
        }
    }

    @Test
    void rawRegsEventsAndMpStateAgreeWithTheStructures() {
        try (Vmm vmm = VmmTesting.openVmm(); KvmVm vm = vmm.kvmPlatform().kvm().createVm(); KvmVcpu v = vm.createVcpu(0)) {
            v.setCpuid(vmm.cpuid());
            CpuSetup.setLongModeUser(v, vmm.cpuid());
            CpuSetup.setEntry(v, 0x400000, 0x800000, 0x100000);
            assertArrayEquals(v.getRegs().toArray(), v.getRegsArray());
            long[] regs = new long[18];
            for (int i = 0; i < regs.length; i++) {
                regs[i] = 0x1111_0000L * (i + 1);
            }
            regs[17] = 0x3202; // rflags: IOPL 3, IF, bit 1
            v.setRegsArray(regs);
            assertArrayEquals(regs, v.getRegs().toArray());
            assertArrayEquals(regs, v.getRegsArray());
            assertThrows(IllegalArgumentException.class, () -> v.setRegsArray(new long[17]));

            assertArrayEquals(v.getVcpuEvents().bytes, v.getVcpuEventsBytes());
            byte[] events = v.getVcpuEventsBytes();
            v.setVcpuEventsBytes(events);
            assertArrayEquals(events, v.getVcpuEvents().bytes);
            assertThrows(IllegalArgumentException.class, () -> v.setVcpuEventsBytes(new byte[65]));

            assertEquals(v.getMpState(), v.getMpStateRaw());
            v.setMpStateRaw(0);
            assertEquals(0, v.getMpState());
        }
    }

    private static void assertSameState(SregsState a, SregsState b) {
        assertEquals(a.segments(), b.segments());
        assertEquals(List.of(a.gdtBase(), a.idtBase(), a.cr0(), a.cr2(), a.cr3(), a.cr4(), a.cr8(), a.efer(),
                a.apicBase()), List.of(b.gdtBase(), b.idtBase(), b.cr0(), b.cr2(), b.cr3(), b.cr4(), b.cr8(), b.efer(),
                b.apicBase()));
        assertEquals(a.gdtLimit(), b.gdtLimit());
        assertEquals(a.idtLimit(), b.idtLimit());
        assertTrue(Arrays.equals(a.interruptBitmap(), b.interruptBitmap()));
    }

    @Test
    void rawXcr0AndClockAgreeWithTheStructures() {
        try (Vmm vmm = VmmTesting.openVmm(); KvmVm vm = vmm.kvmPlatform().kvm().createVm(); KvmVcpu v = vm.createVcpu(0)) {
            v.setCpuid(vmm.cpuid());
            CpuSetup.setLongModeUser(v, vmm.cpuid());
            io.vmfork.kvm.x86.KvmXcrs x = v.getXcrs();
            long viaStructure = 0;
            for (int i = 0; i < x.nrXcrs; i++) {
                if (x.xcrs[i].xcr == 0) {
                    viaStructure = x.xcrs[i].value;
                }
            }
            assertNotEquals(0, viaStructure, "a long-mode vCPU has XCR0 set");
            assertEquals(viaStructure, v.getXcr0());
            v.setXcr0(0x3); // x87 and SSE only
            assertEquals(0x3, v.getXcr0());
            v.setXcr0(viaStructure);
            assertEquals(viaStructure, v.getXcr0());

            vm.setClock(123_456_789_000L);
            long raw = vm.getClockNs();
            long viaClockStructure = vm.getClock().clock;
            assertTrue(raw >= 123_456_789_000L && raw < 123_456_789_000L + 1_000_000_000L, "clock " + raw);
            assertTrue(viaClockStructure >= raw && viaClockStructure < raw + 1_000_000_000L, viaClockStructure + " vs " + raw);
        }
    }
}
