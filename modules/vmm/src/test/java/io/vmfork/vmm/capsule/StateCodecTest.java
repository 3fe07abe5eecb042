package io.vmfork.vmm.capsule;

import static io.vmfork.vmm.capsule.CapsuleFixtures.*;
import static org.junit.jupiter.api.Assertions.*;

import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.MessageLite;
import com.google.protobuf.Parser;
import io.vmfork.proto.CpuidEntry;
import io.vmfork.proto.Regs;
import io.vmfork.proto.Segment;
import io.vmfork.proto.Sregs;
import io.vmfork.proto.VcpuEvents;
import io.vmfork.vmm.VmIdentity;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.arch.KvmCpuPart;
import io.vmfork.vmm.arch.SegmentState;
import io.vmfork.vmm.arch.SregsState;
import io.vmfork.vmm.state.DeviceState;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.VcpuState;
import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * Every state type survives save → encode → bytes → decode unchanged, a vCPU of the previous
 * format version is read into the neutral state, and bad messages are refused by name.
 */
class StateCodecTest {

    /** Serializes a message and parses it back, as the capsule does. */
    private static <M extends MessageLite> M wire(M message, Parser<M> parser) throws InvalidProtocolBufferException {
        return parser.parseFrom(message.toByteArray());
    }

    @Test
    void segmentRoundTrips() throws Exception {
        for (SegmentState s : sregs(1).segments()) {
            assertEquals(s, StateCodec.decode(wire(StateCodec.encode(s), Segment.parser())));
        }
    }

    @Test
    void sregsRoundTripWithKernelHalfAddressesAndAFullInterruptBitmap() throws Exception {
        SregsState s = sregs(3);
        SregsState back = StateCodec.decode(wire(StateCodec.encode(s), Sregs.parser()));
        assertEquals(s, back);
        assertEquals(Long.MIN_VALUE, back.interruptBitmap()[3]);
        assertTrue(back.gdtBase() < 0, "a kernel-half address is a negative long and stays one");
    }

    @Test
    void regsRoundTripIncludingNegativeValues() throws Exception {
        long[] regs = vcpu(0, CpuState.FpuFormat.XSAVE, 1).regs();
        regs[3] = Long.MIN_VALUE;
        regs[4] = Long.MAX_VALUE;
        assertArrayEquals(regs, StateCodec.decodeRegs(wire(StateCodec.encodeRegs(regs), Regs.parser())));
    }

    @Test
    void vcpuEventsRoundTripEveryMember() throws Exception {
        byte[] raw = events(5);
        VcpuEvents p = wire(StateCodec.encodeEvents(raw), VcpuEvents.parser());
        assertEquals(14, p.getExceptionNr());
        assertEquals(0xec, p.getInterruptNr(), "a vector above 127 is not a negative byte");
        assertEquals(0xffff_ffff_dead_beefL, p.getExceptionPayload());
        assertArrayEquals(raw, StateCodec.decodeEvents(p));
    }

    @Test
    void vcpuEventsWithReservedBytesAreRefusedRatherThanDropped() {
        byte[] raw = events(0);
        raw[40] = 1;
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> StateCodec.encodeEvents(raw));
        assertTrue(e.getMessage().contains("reserved"), e.getMessage());
    }

    @Test
    void xsaveVcpuRoundTripsWithItsFull4KiBArea() throws Exception {
        VcpuState v = vcpu(1, CpuState.FpuFormat.XSAVE, 7);
        assertEquals(4096, v.cpu().fpu().length);
        VcpuState back = StateCodec.decode(wire(StateCodec.encode(v), io.vmfork.proto.VcpuState.parser()));
        assertEquals(v, back);
        assertArrayEquals(v.cpu().fpu(), back.cpu().fpu());
        assertArrayEquals(v.kvm().msrValues(), back.kvm().msrValues());
    }

    @Test
    void cpuStateRoundTripsWithKernelHalfBasesAndNegativeRegisters() throws Exception {
        CpuState c = vcpu(3, CpuState.FpuFormat.XSAVE, 11).cpu();
        assertTrue(c.gsBase() < 0, "the fixture's GS base is a kernel-half address");
        CpuState back = StateCodec.decode(wire(StateCodec.encode(c), io.vmfork.proto.CpuState.parser()));
        assertEquals(c, back);
        assertEquals(c.gsBase(), back.gsBase());
        assertEquals(c.xcr0(), back.xcr0());
    }

    @Test
    void kvmPartRoundTripsEveryField() throws Exception {
        KvmCpuPart k = kvmPart(2);
        KvmCpuPart back = StateCodec.decode(wire(StateCodec.encode(k), io.vmfork.proto.KvmCpuPart.parser()));
        assertEquals(k, back);
        assertEquals(0x7fff_dead_b000L, back.cr2());
        assertArrayEquals(k.events(), back.events());
        assertEquals(3, back.mpState());
    }

    @Test
    void aVcpuWithoutKvmPartRoundTripsWithoutOne() throws Exception {
        VcpuState v = vcpu(1, CpuState.FpuFormat.XSAVE, 5).withoutKvmPart().withStarted(false);
        io.vmfork.proto.VcpuState p = wire(StateCodec.encode(v), io.vmfork.proto.VcpuState.parser());
        assertFalse(p.hasKvm(), "a state the process platform took has no KVM part");
        assertTrue(p.getNotStarted());
        assertEquals(v, StateCodec.decode(p));
    }

    @Test
    void aVersion4VcpuWithVersion3FieldsIsRefused() {
        io.vmfork.proto.VcpuState p = StateCodec.encode(vcpu(0, CpuState.FpuFormat.XSAVE, 1));
        for (io.vmfork.proto.VcpuState bad : List.of(p.toBuilder().setMpState(1).build(),
                p.toBuilder().setRegs(p.getCpu().getRegs()).build(),
                p.toBuilder().addMsrs(io.vmfork.proto.Msr.newBuilder().setIndex(0x10)).build())) {
            CapsuleFormatException e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(bad));
            assertTrue(e.getMessage().contains("fields of format version 3"), e.getMessage());
        }
    }

    @Test
    void aVersion3VcpuIsReadIntoTheNeutralStateAndItsKvmPart() throws Exception {
        byte[] cpuid = guestCpuid().bytes();
        for (int i = 0; i < 2; i++) {
            VcpuState v = modelVcpu(i, 21);
            io.vmfork.proto.VcpuState old = wire(KvmCapsules.vcpu(v, cpuid), io.vmfork.proto.VcpuState.parser());
            assertTrue(old.hasSregs() && old.getMsrsCount() > 2 && !old.hasCpu(), "the old layout: " + old);
            io.vmfork.proto.MachineState ms = StateCodec.encode(state(64 * MIB, 1, CpuState.FpuFormat.XSAVE))
                    .toBuilder().clearCpuid().addAllCpuid(StateCodec.encodeCpuid(cpuid)).clearVcpus().addVcpus(old)
                    .build();
            VcpuState back = StateCodec.decode(ms, 3).vcpus().get(0);
            assertEquals(v, back, "vCPU " + i + ": neutral state and KVM part, the rest being the model's");
        }
    }

    @Test
    void aVersion3VcpuWhoseFixedRegistersAreNotTheModelsIsRefusedNamingThem() {
        byte[] cpuid = guestCpuid().bytes();
        io.vmfork.proto.VcpuState old = KvmCapsules.vcpu(modelVcpu(0, 3), cpuid);
        io.vmfork.proto.MachineState.Builder ms = StateCodec.encode(state(64 * MIB, 1, CpuState.FpuFormat.XSAVE))
                .toBuilder().clearCpuid().addAllCpuid(StateCodec.encodeCpuid(cpuid)).clearVcpus();
        io.vmfork.proto.VcpuState.Builder b = old.toBuilder();
        b.getSregsBuilder().setCr0(0x80000011L).getCsBuilder().setDpl(0);
        for (int i = 0; i < b.getMsrsCount(); i++) {
            if (b.getMsrs(i).getIndex() == 0x277) {
                b.setMsrs(i, b.getMsrs(i).toBuilder().setValue(0));
            }
        }
        io.vmfork.proto.MachineState bad = ms.addVcpus(b).build();
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(bad, 3));
        for (String m : List.of("format version 3", "state.vcpus[0].sregs.cr0", "state.vcpus[0].sregs.cs",
                "msrs[", "(0x277)", "is not the reset value")) {
            assertTrue(e.getMessage().contains(m), "'" + m + "' not in " + e.getMessage());
        }
        io.vmfork.proto.MachineState wide = ms.clone().clearVcpus().addVcpus(old.toBuilder().setSregs(
                old.getSregs().toBuilder().setGdtLimit(0x10000))).build();
        e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(wide, 3));
        assertTrue(e.getMessage().contains("state.vcpus[0].sregs.gdt_limit"), e.getMessage());
        io.vmfork.proto.MachineState noBitmap = ms.clone().clearVcpus().addVcpus(old.toBuilder().setSregs(
                old.getSregs().toBuilder().clearInterruptBitmap())).build();
        e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(noBitmap, 3));
        assertTrue(e.getMessage().contains("interrupt_bitmap"), e.getMessage());
    }

    @Test
    void aKvmGetXsave2AreaLargerThan4KiBRoundTripsAndAnOversizedOneIsRefused() throws Exception {
        VcpuState v = vcpu(1, CpuState.FpuFormat.XSAVE, 7);
        byte[] amx = new byte[11008];                 // x87..AVX-512 plus AMX tile config and data
        new java.util.Random(3).nextBytes(amx);
        CpuState c = v.cpu();
        VcpuState big = new VcpuState(1, new CpuState(c.regs(), c.fsBase(), c.gsBase(), CpuState.FpuFormat.XSAVE, amx,
                c.xcr0()), v.kvm());
        VcpuState back = StateCodec.decode(wire(StateCodec.encode(big), io.vmfork.proto.VcpuState.parser()));
        assertArrayEquals(amx, back.cpu().fpu());
        io.vmfork.proto.VcpuState.Builder pb = StateCodec.encode(big).toBuilder();
        pb.getCpuBuilder().setFpu(com.google.protobuf.ByteString.copyFrom(new byte[StateCodec.MAX_XSAVE_BYTES + 1]));
        io.vmfork.proto.VcpuState p = pb.build();
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(p));
        assertTrue(e.getMessage().contains("fpu is 65537 bytes, XSAVE needs 4096 to 65536"), e.getMessage());
    }

    @Test
    void fxsaveVcpuRoundTrips() throws Exception {
        VcpuState v = vcpu(0, CpuState.FpuFormat.FXSAVE, 9);
        assertEquals(v, StateCodec.decode(wire(StateCodec.encode(v), io.vmfork.proto.VcpuState.parser())));
    }

    @Test
    void identityRoundTripsWithNegativeValues() throws Exception {
        VmIdentity id = new VmIdentity(-1, Long.MIN_VALUE, 0x8000_0000_0000_0001L, 42, Integer.MIN_VALUE);
        assertEquals(id, StateCodec.decode(wire(StateCodec.encode(id), io.vmfork.proto.VmIdentity.parser())));
    }

    @Test
    void devicesRoundTripWithEmptyAndBinaryRequests() throws Exception {
        DeviceState d = devices();
        assertEquals(d, StateCodec.decode(wire(StateCodec.encode(d), io.vmfork.proto.DeviceState.parser())));
        DeviceState none = new DeviceState(0, List.of(), true, false);
        assertEquals(none, StateCodec.decode(wire(StateCodec.encode(none), io.vmfork.proto.DeviceState.parser())));
    }

    @Test
    void cpuidRoundTripsEntryByEntry() throws Exception {
        byte[] cpuid = hostCpuid().bytes();
        List<CpuidEntry> entries = StateCodec.encodeCpuid(cpuid);
        assertEquals(cpuid.length / CapsuleFormat.CPUID_ENTRY_BYTES, entries.size());
        assertEquals(0x80000001, entries.get(entries.size() - 1).getFunction());
        List<CpuidEntry> back = new java.util.ArrayList<>();
        for (CpuidEntry e : entries) {
            back.add(wire(e, CpuidEntry.parser()));
        }
        assertArrayEquals(cpuid, StateCodec.decodeCpuid(back));
    }

    @Test
    void machineStateRoundTrips() throws Exception {
        MachineState s = state(256 * MIB, 3, CpuState.FpuFormat.XSAVE);
        MachineState back = StateCodec.decode(wire(StateCodec.encode(s), io.vmfork.proto.MachineState.parser()));
        assertEquals(s, back);
        assertEquals(-987_654_321L, back.clockNs());
        assertArrayEquals(s.cpuidEntries(), back.cpuidEntries());
    }

    @Test
    void decodingRefusesValuesWiderThanTheirKvmFieldNamingTheField() {
        io.vmfork.proto.MachineState p = StateCodec.encode(state(64 * MIB, 2, CpuState.FpuFormat.XSAVE));
        io.vmfork.proto.MachineState.Builder b = p.toBuilder();
        b.getVcpusBuilder(1).getKvmBuilder().getDsBuilder().setDpl(300);
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(b.build()));
        assertTrue(e.getMessage().contains("state.vcpus[1].kvm.ds.dpl"), e.getMessage());

        io.vmfork.proto.MachineState.Builder b2 = p.toBuilder();
        b2.getVcpusBuilder(0).getKvmBuilder().getGsBuilder().setSelector(0x10000);
        e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(b2.build()));
        assertTrue(e.getMessage().contains("kvm.gs.selector"), e.getMessage());

        io.vmfork.proto.MachineState.Builder b3 = p.toBuilder();
        b3.getVcpusBuilder(0).getKvmBuilder().getEventsBuilder().setNmiMasked(256);
        e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(b3.build()));
        assertTrue(e.getMessage().contains("kvm.events.nmi_masked"), e.getMessage());
    }

    @Test
    void decodingRefusesMissingPartsAndWrongSizes() {
        io.vmfork.proto.MachineState p = StateCodec.encode(state(64 * MIB, 1, CpuState.FpuFormat.XSAVE));
        assertThrows(CapsuleFormatException.class,
                () -> StateCodec.decode(p.toBuilder().clearDevices().build()));
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class,
                () -> StateCodec.decode(p.toBuilder().setVcpus(0, p.getVcpus(0).toBuilder().clearCpu()).build()));
        assertTrue(e.getMessage().contains("state.vcpus[0].cpu is missing"), e.getMessage());
        var noRegs = p.getVcpus(0).toBuilder();
        noRegs.getCpuBuilder().clearRegs();
        assertThrows(CapsuleFormatException.class,
                () -> StateCodec.decode(p.toBuilder().setVcpus(0, noRegs).build()));
        var noDs = p.getVcpus(0).toBuilder();
        noDs.getKvmBuilder().clearDs();
        e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(p.toBuilder().setVcpus(0, noDs).build()));
        assertTrue(e.getMessage().contains("kvm.ds is missing"), e.getMessage());
        var small = p.getVcpus(0).toBuilder();
        small.getCpuBuilder().setFpu(com.google.protobuf.ByteString.copyFrom(new byte[100]));
        e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(p.toBuilder().setVcpus(0, small).build()));
        assertTrue(e.getMessage().contains("fpu is 100 bytes"), e.getMessage());
        var format = p.getVcpus(0).toBuilder();
        format.getCpuBuilder().setFpuFormatValue(9);
        assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(p.toBuilder().setVcpus(0, format).build()));
    }

    @Test
    void encodingRefusesAnFpuAreaOfTheWrongSize() {
        VcpuState v = vcpu(0, CpuState.FpuFormat.XSAVE, 1);
        VcpuState bad = new VcpuState(0, new CpuState(v.regs(), 0, 0, CpuState.FpuFormat.XSAVE, new byte[416], 7),
                null);
        assertThrows(IllegalArgumentException.class, () -> StateCodec.encode(bad));
    }
}
