package io.vmfork.vmm;

import static io.vmfork.vmm.CapsuleSurgery.*;
import static org.junit.jupiter.api.Assertions.*;

import com.google.protobuf.ByteString;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.CpuidEntry;
import io.vmfork.proto.MemoryChunk;
import io.vmfork.proto.Msr;
import io.vmfork.proto.Segment;
import io.vmfork.vmm.capsule.CapsuleException;
import io.vmfork.vmm.capsule.CapsuleFormat;
import io.vmfork.vmm.capsule.CapsuleFormatException;
import io.vmfork.vmm.capsule.CapsuleIncompatibleException;
import io.vmfork.vmm.capsule.KvmCapsules;
import io.vmfork.vmm.guest.Guests;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.FilterInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.EnabledIf;

/**
 * A capsule is untrusted input: its checksums prove nothing about where it came from.
 * Whatever it says, a restored guest runs at CPL3 with the VMM's own page tables and boot
 * area, only the MSRs a fork saves, within this host's limits; anything else is refused
 * with a capsule exception before a VM exists (issue 6, items 8 and 9).
 */
class CapsuleTrustTest extends VmmTestBase {
    private static final long MEMORY = 16L << 20;
    private static byte[] capsule;
    private static List<CapsuleFrame> frames;
    /** The same capsule as a KVM host writes it (each vCPU with its KVM part), and in format version 3's layout. */
    private static List<CapsuleFrame> kvmFrames, v3;
    /** Memory below 0x200000 of the booted original: what the VMM writes there. */
    private static byte[] bootLow;

    @BeforeAll
    static void captureAGuest() throws Exception {
        VirtualMachine original = vmm.launch(VmSpec.of(Guests.shipped("forker"), MEMORY));
        original.ready().get(30, TimeUnit.SECONDS);
        SnapshotContractTest.idle(original);
        try (VirtualMachine.Snapshot s = original.snapshot()) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            vmm.writeCapsule(s, out);
            capsule = out.toByteArray();
            bootLow = lowMemory(s.image());
        }
        original.stop();
        original.awaitTermination(VmmTesting.TIMEOUT);
        frames = frames(capsule);
        kvmFrames = KvmCapsules.withKvmPart(frames);
        v3 = KvmCapsules.frames(kvmFrames);
    }

    private static Segment.Builder seg(io.vmfork.proto.VcpuState.Builder v, String which) {
        var s = v.getSregsBuilder();
        return switch (which) {
            case "cs" -> s.getCsBuilder();
            case "ss" -> s.getSsBuilder();
            case "ds" -> s.getDsBuilder();
            default -> throw new IllegalArgumentException(which);
        };
    }

    @Test
    void theUntouchedCapsuleRestoresToTheGuestModel() throws Exception {
        VirtualMachine clone = vmm.restoreCapsule(new ByteArrayInputStream(assemble(frames)), VmListener.NONE);
        assertTrue(ForkTest.ask(clone, "sum").startsWith("sum="));
        assertGuestModel(clone, bootLow);
        clone.stop();
    }

    // ---------------------------------------------------------------- item 8

    @Test
    void aGuestCannotBeMadeToRunAtCpl0() throws Exception {
        refused(vmm, withVcpu(v3, v -> { seg(v, "cs").setDpl(0); return v; }), CapsuleFormatException.class,
                "sregs.cs");
        refused(vmm, withVcpu(v3, v -> { seg(v, "cs").setDpl(0).setSelector(0x30); seg(v, "ss").setDpl(0)
                .setSelector(0x28); return v; }), CapsuleFormatException.class, "sregs.cs", "sregs.ss");
        refused(vmm, withVcpu(v3, v -> { seg(v, "ss").setDpl(0); return v; }), CapsuleFormatException.class,
                "sregs.ss");
        // Every other field a vmfork guest cannot change: a 32-bit code segment, a data segment of DPL 0.
        refused(vmm, withVcpu(v3, v -> { seg(v, "cs").setL(0).setDb(1); return v; }),
                CapsuleFormatException.class, "sregs.cs");
        refused(vmm, withVcpu(v3, v -> { seg(v, "ds").setDpl(0); return v; }), CapsuleFormatException.class,
                "sregs.ds");
        refused(vmm, withVcpu(v3, v -> { v.getSregsBuilder().setIdtBase(0x300000).setIdtLimit(0xfff); return v; }),
                CapsuleFormatException.class, "sregs.idt_base", "sregs.idt_limit");
        // Since format version 4 a capsule holds no CS, SS or descriptor tables at all; what it holds of KVM's
        // segments are the data segments, user data or null.
        refused(vmm, withVcpu(kvmFrames, v -> { v.getKvmBuilder().getDsBuilder().setDpl(0); return v; }),
                CapsuleFormatException.class, "kvm.ds");
        refused(vmm, withVcpu(kvmFrames, v -> { v.getKvmBuilder().getFsBuilder().setBase(0x1000).setSelector(0x2b);
            return v; }), CapsuleFormatException.class, "kvm.fs");
        refused(vmm, withVcpu(kvmFrames, v -> v.setSregs(v3.get(1).getState().getVcpus(0).getSregs())),
                CapsuleFormatException.class, "fields of format version 3");
    }

    @Test
    void memoryBelow2MiBIsTheVmmsNotTheCapsules() throws Exception {
        // Make the page table entry of the boot info page writable, and scribble on page 0.
        List<CapsuleFrame> f = new ArrayList<>(frames);
        int edited = 0;
        for (int i = 0; i < f.size(); i++) {
            if (f.get(i).getKindCase() != CapsuleFrame.KindCase.CHUNK) {
                continue;
            }
            MemoryChunk c = f.get(i).getChunk();
            long pte = 0x3000 + 8 * (0x100000 / 4096);
            if (c.getOffset() <= pte && pte < c.getOffset() + c.getData().size()) {
                byte[] d = c.getData().toByteArray();
                d[(int) (pte - c.getOffset())] |= 2; // RW
                f.set(i, CapsuleFrame.newBuilder().setChunk(c.toBuilder().setData(ByteString.copyFrom(d))).build());
                edited++;
            }
        }
        assertEquals(1, edited, "the capsule holds the low page table");
        byte[] page0 = new byte[4096];
        page0[0] = 0x42;
        f.add(2, CapsuleFrame.newBuilder().setChunk(MemoryChunk.newBuilder().setOffset(0)
                .setData(ByteString.copyFrom(page0))).build());
        VirtualMachine clone = vmm.restoreCapsule(new ByteArrayInputStream(assemble(f)), VmListener.NONE);
        assertTrue(ForkTest.ask(clone, "sum").startsWith("sum="));
        assertGuestModel(clone, bootLow);
        clone.stop();
    }

    @Test
    void aBootInfoPageThatNoBootWritesIsRefused() throws Exception {
        List<CapsuleFrame> f = new ArrayList<>(frames);
        for (int i = 0; i < f.size(); i++) {
            MemoryChunk c = f.get(i).getChunk();
            if (f.get(i).getKindCase() == CapsuleFrame.KindCase.CHUNK && c.getOffset() == 0x100000) {
                byte[] d = c.getData().toByteArray();
                d[16] ^= 0x40; // memory_size
                f.set(i, CapsuleFrame.newBuilder().setChunk(c.toBuilder().setData(ByteString.copyFrom(d))).build());
            }
        }
        refused(vmm, assemble(f), CapsuleFormatException.class, "boot info", "memory_size");
    }

    @Test
    void aGuestGetsNoMoreVcpusThanTheHostAllowsAndEachIsOneAVmforkGuestCanHave() throws Exception {
        // A second vCPU is an application processor, not a copy of the bootstrap one.
        // (Format version 3, which held KVM's registers: a copy of vCPU 0's has the BSP's APIC base.)
        byte[] two = assemble(List.of(
                CapsuleFrame.newBuilder().setHeader(v3.get(0).getHeader().toBuilder().setVcpuCount(2)).build(),
                CapsuleFrame.newBuilder().setState(v3.get(1).getState().toBuilder()
                        .addVcpus(v3.get(1).getState().getVcpus(0).toBuilder().setIndex(1))).build(),
                frames.get(frames.size() - 1)));
        refused(vmm, two, CapsuleFormatException.class, "vcpus[1].sregs.apic_base", "0xfee00800");
        // vCPU 0 always runs; the header's NOT_STARTED flag says exactly whether a vCPU does not.
        var header = frames.get(0).getHeader().toBuilder();
        var idle = frames.get(1).getState().toBuilder()
                .setVcpus(0, frames.get(1).getState().getVcpus(0).toBuilder().setNotStarted(true));
        byte[] vcpu0Idle = assemble(List.of(
                CapsuleFrame.newBuilder().setHeader(header.clone().setFlags(CapsuleFormat.FLAG_NOT_STARTED)).build(),
                CapsuleFrame.newBuilder().setState(idle).build(), frames.get(frames.size() - 1)));
        refused(vmm, vcpu0Idle, CapsuleFormatException.class, "vcpus[0].not_started", "always runs");
        byte[] noFlag = assemble(List.of(CapsuleFrame.newBuilder().setHeader(header.clone()).build(),
                CapsuleFrame.newBuilder().setState(idle).build(), frames.get(frames.size() - 1)));
        refused(vmm, noFlag, CapsuleFormatException.class, "lacks the NOT_STARTED flag");
        byte[] flagOnly = assemble(List.of(
                CapsuleFrame.newBuilder().setHeader(header.clone().setFlags(CapsuleFormat.FLAG_NOT_STARTED)).build(),
                frames.get(1), frames.get(frames.size() - 1)));
        refused(vmm, flagOnly, CapsuleFormatException.class, "NOT_STARTED flag but every vCPU is started");
        int max = vmm.settings().maxVcpus();
        var state = frames.get(1).getState().toBuilder();
        for (int i = 1; i <= max; i++) {
            state.addVcpus(frames.get(1).getState().getVcpus(0).toBuilder().setIndex(i));
        }
        byte[] many = assemble(List.of(
                CapsuleFrame.newBuilder().setHeader(frames.get(0).getHeader().toBuilder().setVcpuCount(max + 1))
                        .build(),
                CapsuleFrame.newBuilder().setState(state).build(), frames.get(frames.size() - 1)));
        refused(vmm, many, CapsuleIncompatibleException.class, "vCPUs is over the host's maximum of " + max);
    }

    @Test
    void onlyTheMsrsAForkSavesAreRestoredAndOnlyWithValuesAGuestCanHave() throws Exception {
        int[] foreign = {0x1b /* APIC base */, 0x4b564d01 /* KVM_SYSTEM_TIME_NEW */, 0x4b564d02 /* async PF */,
            0x3a /* feature control */, 0x1d9 /* debug control */, 0xc0000080 /* EFER */};
        for (int msr : foreign) {
            refused(vmm, withVcpu(v3, v -> v.addMsrs(Msr.newBuilder().setIndex(msr).setValue(0x44001))),
                    CapsuleFormatException.class, String.format("0x%x", msr), "not an MSR a vmfork guest can observe");
        }
        // SYSENTER_CS would let SYSENTER enter CPL0; only CPL0 code can write it.
        refused(vmm, withVcpu(v3, v -> setMsr(v, 0x174, 0x10)), CapsuleFormatException.class, "0x174");
        refused(vmm, withVcpu(v3, v -> setMsr(v, 0x277, 0)), CapsuleFormatException.class, "0x277");
        // EFER with SCE (SYSCALL to CPL0), with reserved bits.
        refused(vmm, withVcpu(v3, v -> { v.getSregsBuilder().setEfer(0x501); return v; }),
                CapsuleFormatException.class, "sregs.efer");
        refused(vmm, withVcpu(v3, v -> { v.getSregsBuilder().setEfer(0x500 | 1L << 40); return v; }),
                CapsuleFormatException.class, "sregs.efer");
        refused(vmm, withVcpu(v3, v -> { v.getSregsBuilder().setApicBase(0xfee00000L); return v; }),
                CapsuleFormatException.class, "sregs.apic_base");
        // Since format version 4 the KVM part holds only the MSRs the model leaves open.
        for (int msr : foreign) {
            refused(vmm, withVcpu(kvmFrames, v -> { v.getKvmBuilder().addMsrs(Msr.newBuilder().setIndex(msr)
                    .setValue(0x44001)); return v; }), CapsuleFormatException.class, String.format("0x%x", msr),
                    "not an MSR a vmfork guest can observe");
        }
        refused(vmm, withVcpu(kvmFrames, v -> { v.getKvmBuilder().addMsrs(Msr.newBuilder().setIndex(0x174)
                .setValue(0x10)); return v; }), CapsuleFormatException.class, "kvm.msrs[2] (0x174)",
                "fixed by the guest model");
        refused(vmm, withVcpu(kvmFrames, v -> { v.getKvmBuilder().setMsrs(0, Msr.newBuilder().setIndex(0x1a0)
                .setValue(0x80)); return v; }), CapsuleFormatException.class, "kvm.msrs[0] (0x1a0)", "has bits outside");
    }

    private static io.vmfork.proto.VcpuState.Builder setMsr(io.vmfork.proto.VcpuState.Builder v, int msr, long value) {
        for (int i = 0; i < v.getMsrsCount(); i++) {
            if (v.getMsrs(i).getIndex() == msr) {
                v.setMsrs(i, Msr.newBuilder().setIndex(msr).setValue(value));
                return v;
            }
        }
        return v.addMsrs(Msr.newBuilder().setIndex(msr).setValue(value));
    }

    // ---------------------------------------------------------------- item 9

    @Test
    void registerValuesKvmWouldRefuseAreCapsuleErrors() throws Exception {
        refused(vmm, withVcpu(v3, v -> { v.getSregsBuilder().setCr4(-1L); return v; }),
                CapsuleFormatException.class, "sregs.cr4");
        refused(vmm, withVcpu(v3, v -> { v.getSregsBuilder().setCr3(1L << 52); return v; }),
                CapsuleFormatException.class, "sregs.cr3");
        refused(vmm, withVcpu(v3, v -> { v.getSregsBuilder().setEfer(0); return v; }),
                CapsuleFormatException.class, "sregs.efer");
        refused(vmm, withVcpu(v3, v -> {
            for (int i = 0; i < 3000; i++) {
                v.addMsrs(Msr.newBuilder().setIndex(0x10).setValue(i));
            }
            return v;
        }), CapsuleFormatException.class, "msrs");
        refused(vmm, withVcpu(v3, v -> v.setMpState(99)), CapsuleFormatException.class, "mp_state");
        refused(vmm, withVcpu(v3, v -> { v.getEventsBuilder().setExceptionInjected(1).setExceptionNr(99); return v; }),
                CapsuleFormatException.class, "events");
        refused(vmm, withVcpu(v3, v -> { v.getEventsBuilder().setSmiSmm(1); return v; }),
                CapsuleFormatException.class, "events");
        refused(vmm, withVcpu(v3, v -> { v.getRegsBuilder().setRflags(0x20202); return v; }),
                CapsuleFormatException.class, "rflags");
        refused(vmm, withVcpu(kvmFrames, v -> { v.getKvmBuilder().setMpState(99); return v; }),
                CapsuleFormatException.class, "kvm.mp_state");
        refused(vmm, withVcpu(kvmFrames, v -> { v.getKvmBuilder().getEventsBuilder().setSmiSmm(1); return v; }),
                CapsuleFormatException.class, "kvm.events");
        refused(vmm, withVcpu(frames, v -> { v.getCpuBuilder().getRegsBuilder().setRflags(0x20202); return v; }),
                CapsuleFormatException.class, "cpu.regs.rflags");
        refused(vmm, withVcpu(frames, v -> { v.getCpuBuilder().setFsBase(1L << 50); return v; }),
                CapsuleFormatException.class, "cpu.fs_base", "not canonical");
    }

    @Test
    void anXsaveAreaLargerThanThisHostsVcpusTakeIsIncompatibleNotALaunchFailure() throws Exception {
        // Found by the fuzzer: such an area passed the reader and failed in KVM_SET_XSAVE's wrapper.
        int hostSize = vmm.guestRules().maxXsaveBytes();
        refused(vmm, withVcpu(frames, v -> { v.getCpuBuilder().setFpu(v.getCpu().getFpu().concat(
                ByteString.copyFrom(new byte[4096]))); return v; }),
                io.vmfork.vmm.capsule.CapsuleIncompatibleException.class, "larger than the " + hostSize);
    }

    @Test
    void queuedMessagesOverThisHostsLimitsAreRefusedByTheReader() throws Exception {
        int maxMessage = vmm.settings().maxMessageBytes();
        refused(vmm, withState(frames, s -> { s.getDevicesBuilder().addQueuedRequests(
                ByteString.copyFrom(new byte[maxMessage + 1])); return s; }), CapsuleException.class, "max-message");
        int maxQueued = vmm.settings().maxQueuedRequests();
        refused(vmm, withState(frames, s -> {
            for (int i = 0; i <= maxQueued; i++) {
                s.getDevicesBuilder().addQueuedRequests(ByteString.copyFromUtf8("sum"));
            }
            return s;
        }), CapsuleException.class);
    }

    @Test
    void memorySizesOffTheGridOrOutsideTheHostsRangeAreRefusedRightAfterTheHeader() throws Exception {
        byte[] offGrid = assemble(List.of(
                CapsuleFrame.newBuilder().setHeader(frames.get(0).getHeader().toBuilder().setMemorySize(MEMORY + 4096))
                        .build(),
                CapsuleFrame.newBuilder().setState(frames.get(1).getState().toBuilder().setMemorySize(MEMORY + 4096))
                        .build(), frames.get(frames.size() - 1)));
        refused(vmm, offGrid, CapsuleFormatException.class, "frame 0", "memory_size", "2 MiB");
        long small = 4L << 20;
        byte[] under = withHeader(frames, h -> h.setMemorySize(small));
        refused(vmm, under, CapsuleIncompatibleException.class, "memory_size", "vmfork.vmm.memory.min");
    }

    @Test
    void anUnknownMsrIsRefusedBeforeAnyMemoryIsRead() throws Exception {
        byte[] bad = withVcpu(kvmFrames, v -> {
            v.getKvmBuilder().addMsrs(Msr.newBuilder().setIndex(0x12345).setValue(1));
            return v;
        });
        long[] read = {0};
        InputStream counting = new FilterInputStream(new ByteArrayInputStream(bad)) {
            @Override
            public int read(byte[] b, int off, int len) throws IOException {
                int n = super.read(b, off, Math.min(len, 4096));
                read[0] += Math.max(n, 0);
                return n;
            }
        };
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class,
                () -> vmm.restoreCapsule(counting, VmListener.NONE));
        assertTrue(e.getMessage().contains("frame 1 (state)") && e.getMessage().contains("0x12345"), e.getMessage());
        assertTrue(read[0] < bad.length / 2, "refused after " + read[0] + " of " + bad.length + " bytes");
    }

    @EnabledIf(value = "io.vmfork.vmm.platform.HostPlatforms#vmmRunsOnKvm", disabledReason = "KVM-only by nature: a state that KVM itself refuses")
    @Test
    void aStateKvmRefusesAfterAllIsACapsuleErrorAndLeavesNothing() throws Exception {
        // CPUID.0x80000008:EAX[15:8], the linear address width, must be 48 or 57 (KVM's kvm_check_cpuid);
        // no feature bit the compatibility check looks at.
        java.util.function.UnaryOperator<List<CpuidEntry>> narrow = list -> {
            List<CpuidEntry> out = new ArrayList<>(list);
            boolean found = false;
            for (int i = 0; i < out.size(); i++) {
                if (out.get(i).getFunction() == 0x80000008) {
                    out.set(i, out.get(i).toBuilder().setEax((out.get(i).getEax() & ~0xff00) | (40 << 8)).build());
                    found = true;
                }
            }
            assertTrue(found, "the capsule's CPUID has leaf 0x80000008");
            return out;
        };
        var h = frames.get(0).getHeader().toBuilder();
        List<CpuidEntry> cpuid = narrow.apply(h.getRequiredCpuidList());
        h.clearRequiredCpuid().addAllRequiredCpuid(cpuid);
        var s = frames.get(1).getState().toBuilder().clearCpuid().addAllCpuid(cpuid);
        List<CapsuleFrame> f = new ArrayList<>(frames);
        f.set(0, CapsuleFrame.newBuilder().setHeader(h).build());
        f.set(1, CapsuleFrame.newBuilder().setState(s).build());
        refused(vmm, assemble(f), CapsuleIncompatibleException.class, "KVM refused", "KVM_SET_CPUID2");
    }
}
