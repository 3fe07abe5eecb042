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
import io.vmfork.vmm.state.DeviceState;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.SegmentState;
import io.vmfork.vmm.state.SregsState;
import io.vmfork.vmm.state.VcpuState;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Every state type survives save → encode → bytes → decode unchanged, and bad messages are refused by name. */
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
        long[] regs = vcpu(0, VcpuState.FpuFormat.XSAVE, 1).regs();
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
        VcpuState v = vcpu(1, VcpuState.FpuFormat.XSAVE, 7);
        assertEquals(4096, v.fpu().length);
        VcpuState back = StateCodec.decode(wire(StateCodec.encode(v), io.vmfork.proto.VcpuState.parser()));
        assertEquals(v, back);
        assertArrayEquals(v.fpu(), back.fpu());
        assertArrayEquals(v.msrValues(), back.msrValues());
    }

    @Test
    void aKvmGetXsave2AreaLargerThan4KiBRoundTripsAndAnOversizedOneIsRefused() throws Exception {
        VcpuState v = vcpu(1, VcpuState.FpuFormat.XSAVE, 7);
        byte[] amx = new byte[11008];                 // x87..AVX-512 plus AMX tile config and data
        new java.util.Random(3).nextBytes(amx);
        VcpuState big = new VcpuState(1, v.regs(), v.sregs(), VcpuState.FpuFormat.XSAVE, amx, v.xcr0(),
                v.msrIndices(), v.msrValues(), v.events(), v.mpState());
        VcpuState back = StateCodec.decode(wire(StateCodec.encode(big), io.vmfork.proto.VcpuState.parser()));
        assertArrayEquals(amx, back.fpu());
        io.vmfork.proto.VcpuState p = StateCodec.encode(big).toBuilder()
                .setFpu(com.google.protobuf.ByteString.copyFrom(new byte[StateCodec.MAX_XSAVE_BYTES + 1])).build();
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(p));
        assertTrue(e.getMessage().contains("fpu is 65537 bytes, XSAVE needs 4096 to 65536"), e.getMessage());
    }

    @Test
    void fxsaveVcpuRoundTrips() throws Exception {
        VcpuState v = vcpu(0, VcpuState.FpuFormat.FXSAVE, 9);
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
        MachineState s = state(256 * MIB, 3, VcpuState.FpuFormat.XSAVE);
        MachineState back = StateCodec.decode(wire(StateCodec.encode(s), io.vmfork.proto.MachineState.parser()));
        assertEquals(s, back);
        assertEquals(-987_654_321L, back.clockNs());
        assertArrayEquals(s.cpuidEntries(), back.cpuidEntries());
    }

    @Test
    void decodingRefusesValuesWiderThanTheirKvmFieldNamingTheField() {
        io.vmfork.proto.MachineState p = StateCodec.encode(state(64 * MIB, 2, VcpuState.FpuFormat.XSAVE));
        io.vmfork.proto.MachineState.Builder b = p.toBuilder();
        b.getVcpusBuilder(1).getSregsBuilder().getCsBuilder().setDpl(300);
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(b.build()));
        assertTrue(e.getMessage().contains("state.vcpus[1].sregs.cs.dpl"), e.getMessage());

        io.vmfork.proto.MachineState.Builder b2 = p.toBuilder();
        b2.getVcpusBuilder(0).getSregsBuilder().setGdtLimit(0x10000);
        e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(b2.build()));
        assertTrue(e.getMessage().contains("gdt_limit"), e.getMessage());

        io.vmfork.proto.MachineState.Builder b3 = p.toBuilder();
        b3.getVcpusBuilder(0).getEventsBuilder().setNmiMasked(256);
        e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(b3.build()));
        assertTrue(e.getMessage().contains("events.nmi_masked"), e.getMessage());
    }

    @Test
    void decodingRefusesMissingPartsAndWrongSizes() {
        io.vmfork.proto.MachineState p = StateCodec.encode(state(64 * MIB, 1, VcpuState.FpuFormat.XSAVE));
        assertThrows(CapsuleFormatException.class,
                () -> StateCodec.decode(p.toBuilder().clearDevices().build()));
        assertThrows(CapsuleFormatException.class,
                () -> StateCodec.decode(p.toBuilder().setVcpus(0, p.getVcpus(0).toBuilder().clearRegs()).build()));
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(
                p.toBuilder().setVcpus(0, p.getVcpus(0).toBuilder().setFpu(
                        com.google.protobuf.ByteString.copyFrom(new byte[100]))).build()));
        assertTrue(e.getMessage().contains("fpu is 100 bytes"), e.getMessage());
        e = assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(
                p.toBuilder().setVcpus(0, p.getVcpus(0).toBuilder().setSregs(
                        p.getVcpus(0).getSregs().toBuilder().clearInterruptBitmap())).build()));
        assertTrue(e.getMessage().contains("interrupt_bitmap"), e.getMessage());
        assertThrows(CapsuleFormatException.class, () -> StateCodec.decode(
                p.toBuilder().setVcpus(0, p.getVcpus(0).toBuilder().setFpuFormatValue(9)).build()));
    }

    @Test
    void encodingRefusesAnFpuAreaOfTheWrongSize() {
        VcpuState v = vcpu(0, VcpuState.FpuFormat.XSAVE, 1);
        VcpuState bad = new VcpuState(0, v.regs(), v.sregs(), VcpuState.FpuFormat.XSAVE, new byte[416], 7,
                new int[0], new long[0], v.events(), 0);
        assertThrows(IllegalArgumentException.class, () -> StateCodec.encode(bad));
    }
}
