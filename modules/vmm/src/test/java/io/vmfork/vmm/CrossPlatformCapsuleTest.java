package io.vmfork.vmm;

import static io.vmfork.vmm.CapsuleSurgery.*;
import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.proto.CapsuleFrame;
import io.vmfork.vmm.arch.KvmCpuPart;
import io.vmfork.vmm.arch.SegmentState;
import io.vmfork.vmm.capsule.CapsuleFormatException;
import io.vmfork.vmm.capsule.CapsuleIncompatibleException;
import io.vmfork.vmm.capsule.KvmCapsules;
import io.vmfork.vmm.guest.Guests;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.condition.DisabledIf;
import org.junit.jupiter.api.condition.EnabledIf;

/**
 * Capsules move between platforms (issue 15): a vCPU's state is architecture-neutral, with
 * an optional KVM part. On a process host, a capsule rewritten into what a KVM host writes
 * — source platform kvm, a KVM API version, each vCPU's KVM part as KVM fills it, or format
 * version 3's vCPUs in KVM's terms — restores and runs to the same result; one whose KVM
 * part holds what this platform cannot honour is refused naming it. On a KVM host, a
 * capsule as the process platform writes it (no KVM part) restores with the guest model's
 * segments and MSRs.
 */
class CrossPlatformCapsuleTest extends VmmTestBase {
    private static final long MEMORY = 16L << 20;

    private static byte[] capsuleOf(VirtualMachine vm) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (VirtualMachine.Snapshot s = vm.snapshot()) {
            vmm.writeCapsule(s, out);
        }
        return out.toByteArray();
    }

    private static VirtualMachine forker() throws Exception {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("forker"), MEMORY));
        vm.ready().get(30, TimeUnit.SECONDS);
        return vm;
    }

    private static String sumOfClone(List<CapsuleFrame> frames) throws Exception {
        VirtualMachine clone = vmm.restoreCapsule(new ByteArrayInputStream(assemble(frames)), VmListener.NONE);
        try {
            return ForkTest.ask(clone, "sum");
        } finally {
            clone.stop();
            clone.awaitTermination(VmmTesting.TIMEOUT);
        }
    }

    /** A null selector in a data segment, as KVM reports one a CPL3 guest loaded: unusable, not present. */
    private static final SegmentState NULL_DATA = new SegmentState(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1);

    @Test
    void aCapsuleAsAKvmHostWritesItRestoresHereAndRunsToTheSameResult() throws Exception {
        VirtualMachine original = forker();
        List<CapsuleFrame> frames;
        String sum;
        try {
            sum = ForkTest.ask(original, "sum");
            assertTrue(sum.startsWith("sum="), sum);
            SnapshotContractTest.idle(original);
            frames = frames(capsuleOf(original));
        } finally {
            original.stop();
            original.awaitTermination(VmmTesting.TIMEOUT);
        }
        List<CapsuleFrame> kvm = KvmCapsules.withKvmPart(frames);
        assertEquals("kvm", kvm.get(0).getHeader().getSourcePlatform());
        assertTrue(kvm.get(1).getState().getVcpus(0).hasKvm());
        assertEquals(sum, sumOfClone(frames), "as this host wrote it");
        assertEquals(sum, sumOfClone(kvm), "as a KVM host writes it");
        assertEquals(sum, sumOfClone(KvmCapsules.frames(kvm)), "as a KVM host of format version 3 wrote it");
        // A guest that loaded null selectors into DS and ES: KVM reports them, a process host drops them.
        KvmCpuPart p = KvmCapsules.part(7);
        List<SegmentState> d = p.dataSegments();
        KvmCpuPart nulls = new KvmCpuPart(List.of(NULL_DATA, NULL_DATA, d.get(2), d.get(3)), 0x7000, p.msrIndices(),
                p.msrValues(), p.events(), p.mpState());
        assertEquals(sum, sumOfClone(KvmCapsules.withKvmPart(frames, i -> nulls)), "with null data selectors");
    }

    @Test
    void vectorRegistersOfAGuestCapturedMidLoopSurviveAKvmShapedCapsule() throws Exception {
        VirtualMachine original = vmm.launch(VmSpec.of(Guests.shipped("xstate"), MEMORY));
        VirtualMachine clone = null;
        try {
            original.ready().get(30, TimeUnit.SECONDS);
            assertEquals("spinning", ForkTest.ask(original, "spin"));
            Thread.sleep(30);
            List<CapsuleFrame> kvm = KvmCapsules.withKvmPart(frames(capsuleOf(original)));
            clone = vmm.restoreCapsule(new ByteArrayInputStream(assemble(kvm)), VmListener.NONE);
            String got = ForkTest.ask(clone, "check");
            assertTrue(got.matches("spin rounds=[0-9]+ ok"), "clone: " + got);
        } finally {
            if (clone != null) {
                clone.stop();
            }
            original.stop();
        }
    }

    @DisabledIf(value = "io.vmfork.vmm.platform.HostPlatforms#vmmRunsOnKvm",
            disabledReason = "a KVM host restores an interrupt shadow")
    @Test
    void anInterruptShadowInTheKvmPartIsRefusedOnTheProcessPlatform() throws Exception {
        List<CapsuleFrame> frames = idleCapsule();
        // MOV SS just executed (KVM_X86_SHADOW_INT_MOV_SS): within the guest model, but only KVM restores it.
        byte[] shadow = assemble(KvmCapsules.withKvmPart(frames,
                i -> KvmCapsules.withEvents(KvmCapsules.part(1), e -> e.put(11, (byte) 1))));
        refused(vmm, shadow, CapsuleIncompatibleException.class, "state.vcpus[0].kvm.events.interrupt_shadow = 1 (MOV SS)",
                "the process platform cannot restore", "runs on a KVM host only");
    }

    @Test
    void aPendingExceptionInTheKvmPartIsRefusedOnEveryHost() throws Exception {
        List<CapsuleFrame> frames = idleCapsule();
        // A #PF pending with its error code and CR2 payload: no vmfork guest has one at a capture point.
        byte[] pending = assemble(KvmCapsules.withKvmPart(frames, i -> KvmCapsules.withEvents(KvmCapsules.part(1),
                e -> e.put(3, (byte) 1).put(1, (byte) 14).put(2, (byte) 1).putInt(4, 6).put(55, (byte) 1)
                        .putLong(56, 0x1000))));
        refused(vmm, pending, CapsuleFormatException.class, "state.vcpus[0].kvm.events",
                "pending or injected exception");
        // The same in format version 3's layout.
        refused(vmm, assemble(KvmCapsules.frames(frames(pending))), CapsuleFormatException.class,
                "state.vcpus[0].kvm.events", "pending or injected exception");
    }

    @EnabledIf(value = "io.vmfork.vmm.platform.HostPlatforms#vmmRunsOnKvm",
            disabledReason = "KVM-only by nature: a KVM vCPU given the guest model's segments and MSRs")
    @Test
    void aCapsuleAsTheProcessPlatformWritesItRestoresOnKvm() throws Exception {
        VirtualMachine original = forker();
        List<CapsuleFrame> frames;
        String sum;
        try {
            sum = ForkTest.ask(original, "sum");
            SnapshotContractTest.idle(original);
            frames = frames(capsuleOf(original));
        } finally {
            original.stop();
            original.awaitTermination(VmmTesting.TIMEOUT);
        }
        var header = frames.get(0).getHeader().toBuilder().setSourcePlatform("process").setKvmApiVersion(0);
        var state = frames.get(1).getState().toBuilder();
        for (int i = 0; i < state.getVcpusCount(); i++) {
            state.setVcpus(i, state.getVcpus(i).toBuilder().clearKvm());
        }
        List<CapsuleFrame> process = new java.util.ArrayList<>(frames);
        process.set(0, CapsuleFrame.newBuilder().setHeader(header).build());
        process.set(1, CapsuleFrame.newBuilder().setState(state).build());
        assertEquals(sum, sumOfClone(process));
    }

    /** A forker guest's capsule, idle in RECV. */
    private static List<CapsuleFrame> idleCapsule() throws Exception {
        VirtualMachine original = forker();
        try {
            SnapshotContractTest.idle(original);
            return frames(capsuleOf(original));
        } finally {
            original.stop();
            original.awaitTermination(VmmTesting.TIMEOUT);
        }
    }
}
