package io.vmfork.vmm.capsule;

import com.google.protobuf.ByteString;
import io.vmfork.kvm.x86.Msr;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.vmm.arch.KvmCpuPart;
import io.vmfork.vmm.arch.SegmentState;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.VcpuState;
import io.vmfork.vmm.x86.GuestModel;
import io.vmfork.vmm.x86.KvmCpuStates;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;

/**
 * Capsules as a KVM host writes them, made from any capsule, for tests that run on every
 * host: {@link #withKvmPart} gives each vCPU the KVM part a KVM vCPU of a vmfork guest has
 * at a capture point and the header a KVM host's; {@link #frames} rewrites a capsule into
 * format version 3, each vCPU in KVM's terms (kvm_regs, kvm_sregs, the MSR list,
 * kvm_vcpu_events, mp_state) as a KVM host with every guest-visible MSR wrote them, through
 * {@link KvmCpuStates#join}.
 */
public final class KvmCapsules {
    /** KVM_GET_API_VERSION of every KVM. */
    public static final int KVM_API_VERSION = 12;

    private KvmCapsules() {
    }

    /**
     * The KVM part KVM reports for a vmfork vCPU at a capture point: the user data segments
     * (FS/GS bases in the CPU state), CR2 0, IA32_MISC_ENABLE with fast strings and the TSC
     * {@code tsc}, no event (KVM_GET_VCPU_EVENTS' valid flags NMI_PENDING|SHADOW|SMM), RUNNABLE.
     */
    public static KvmCpuPart part(long tsc) {
        SegmentState d = GuestModel.USER_DATA;
        byte[] events = new byte[KvmCpuPart.EVENTS_BYTES];
        ByteBuffer.wrap(events).order(ByteOrder.LITTLE_ENDIAN).putInt(20, 0x1 | 0x4 | 0x8);
        return new KvmCpuPart(List.of(d, d, d, d), 0, new int[] {0x1a0, 0x10}, new long[] {0x1, tsc}, events, 0);
    }

    /** The same part with kvm_vcpu_events edited by {@code edit} (the 64 raw bytes). */
    public static KvmCpuPart withEvents(KvmCpuPart k, java.util.function.Consumer<ByteBuffer> edit) {
        byte[] e = k.events();
        edit.accept(ByteBuffer.wrap(e).order(ByteOrder.LITTLE_ENDIAN));
        return new KvmCpuPart(k.dataSegments(), k.cr2(), k.msrIndices(), k.msrValues(), e, k.mpState());
    }

    /**
     * The capsule as a KVM host writes it: source platform "kvm", KVM API version 12, and
     * every vCPU with {@code part.apply(index)} as its KVM part.
     */
    public static List<CapsuleFrame> withKvmPart(List<CapsuleFrame> current,
            java.util.function.IntFunction<KvmCpuPart> part) {
        List<CapsuleFrame> out = new ArrayList<>(current);
        out.set(0, CapsuleFrame.newBuilder().setHeader(current.get(0).getHeader().toBuilder()
                .setSourcePlatform("kvm").setKvmApiVersion(KVM_API_VERSION)).build());
        io.vmfork.proto.MachineState.Builder s = current.get(1).getState().toBuilder();
        for (int i = 0; i < s.getVcpusCount(); i++) {
            s.setVcpus(i, s.getVcpus(i).toBuilder().setKvm(StateCodec.encode(part.apply(i))));
        }
        out.set(1, CapsuleFrame.newBuilder().setState(s).build());
        return out;
    }

    /** {@link #withKvmPart(List, java.util.function.IntFunction)} with {@link #part}, vCPU i's TSC 1e12 + i. */
    public static List<CapsuleFrame> withKvmPart(List<CapsuleFrame> current) {
        return withKvmPart(current, i -> part(1_000_000_000_000L + i));
    }

    /** vCPU {@code v} of a guest with CPUID {@code cpuid} as a version 3 message. */
    public static io.vmfork.proto.VcpuState vcpu(VcpuState v, byte[] cpuid) {
        KvmCpuStates.KvmView k = KvmCpuStates.join(v, cpuid, Msr.GUEST_VISIBLE);
        io.vmfork.proto.VcpuState.Builder b = io.vmfork.proto.VcpuState.newBuilder()
                .setIndex(v.index())
                .setRegs(StateCodec.encodeRegs(k.regs()))
                .setSregs(StateCodec.encode(k.sregs()))
                .setFpuFormat(StateCodec.encode(k.fpuFormat()))
                .setFpu(ByteString.copyFrom(k.fpu()))
                .setXcr0(k.xcr0())
                .setEvents(StateCodec.encodeEvents(k.events()))
                .setMpState(k.mpState())
                .setNotStarted(!v.started());
        int[] idx = k.msrIndices();
        long[] val = k.msrValues();
        for (int i = 0; i < idx.length; i++) {
            b.addMsrs(io.vmfork.proto.Msr.newBuilder().setIndex(idx[i]).setValue(val[i]));
        }
        return b.build();
    }

    /** A current state message as version 3 has it. */
    public static io.vmfork.proto.MachineState state(io.vmfork.proto.MachineState current) {
        MachineState s = StateCodec.decode(current);
        io.vmfork.proto.MachineState.Builder b = current.toBuilder().clearVcpus();
        for (VcpuState v : s.vcpus()) {
            b.addVcpus(vcpu(v, s.cpuidEntries()));
        }
        return b.build();
    }

    /** The frames of a current capsule as version 3 has them (header version 3, vCPUs in KVM's terms). */
    public static List<CapsuleFrame> frames(List<CapsuleFrame> current) {
        List<CapsuleFrame> out = new ArrayList<>(current);
        out.set(0, CapsuleFrame.newBuilder().setHeader(current.get(0).getHeader().toBuilder().setFormatVersion(3))
                .build());
        out.set(1, CapsuleFrame.newBuilder().setState(state(current.get(1).getState())).build());
        return out;
    }
}
