package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.KvmVm;
import io.vmfork.kvm.x86.KvmSregs;
import io.vmfork.vmm.state.SegmentState;
import io.vmfork.vmm.state.SregsState;
import io.vmfork.vmm.x86.CpuSetup;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * The fork path reads and writes kvm_sregs as raw bytes (no JNA Structure): on a real vCPU
 * it must agree field by field with the Structure path, both ways.
 */
class SregsBytesTest {
    @Test
    void rawSregsAgreeWithTheStructureBothWays() {
        try (Vmm vmm = VmmTesting.openVmm(); KvmVm vm = vmm.kvm().createVm(); KvmVcpu v = vm.createVcpu(0)) {
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

    private static void assertSameState(SregsState a, SregsState b) {
        assertEquals(a.segments(), b.segments());
        assertEquals(List.of(a.gdtBase(), a.idtBase(), a.cr0(), a.cr2(), a.cr3(), a.cr4(), a.cr8(), a.efer(),
                a.apicBase()), List.of(b.gdtBase(), b.idtBase(), b.cr0(), b.cr2(), b.cr3(), b.cr4(), b.cr8(), b.efer(),
                b.apicBase()));
        assertEquals(a.gdtLimit(), b.gdtLimit());
        assertEquals(a.idtLimit(), b.idtLimit());
        assertTrue(Arrays.equals(a.interruptBitmap(), b.interruptBitmap()));
    }
}
