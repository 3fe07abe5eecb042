package io.vmfork.vmm.capsule;

import static io.vmfork.vmm.capsule.CapsuleFixtures.*;
import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.proto.CapsuleHeader;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.MemorySource.Run;
import io.vmfork.vmm.state.VcpuState;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.OutputStream;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** A capsule carries the machine state and exactly the non-zero pages of guest RAM, and nothing else. */
class CapsuleRoundTripTest {

    /** Checks that the sink holds exactly the non-zero pages of {@code mem}, each with the right bytes. */
    private static void assertSameMemory(SyntheticMemory mem, PageSink sink) {
        byte[] expected = new byte[PAGE];
        for (Map.Entry<Long, byte[]> e : sink.pages.entrySet()) {
            mem.fill(e.getKey(), expected, 0);
            assertArrayEquals(expected, e.getValue(), "page " + e.getKey());
            assertFalse(mem.isZero(e.getKey()), "zero page " + e.getKey() + " was carried");
        }
        assertEquals(mem.nonZeroPages(), sink.pages.size(), "every non-zero page arrives");
    }

    @Test
    void aFewMiBWithRunsAndZeroPagesRoundTrip() throws Exception {
        long size = 8 * MIB;
        // Three data runs; inside them every fifth page is all zero.
        SyntheticMemory mem = new SyntheticMemory(size, List.of(new Run(0, 2 * MIB),
                new Run(3 * MIB, 3 * MIB / 2), new Run(6 * MIB, 2 * MIB)), p -> p % 5 == 0);
        MachineState state = state(size, 2, CpuState.FpuFormat.XSAVE);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        CapsuleStats written = CapsuleWriter.create(limits()).write(out, state, mem, HOST_ID, HOST_NAME, KVM_API);
        byte[] capsule = out.toByteArray();

        PageSink sink = new PageSink();
        CapsuleContents got = read(capsule, sink, limits(), null);
        assertEquals(state, got.state());
        assertSameMemory(mem, sink);

        long dataPages = mem.nonZeroPages();
        long runPages = (2 * MIB + 3 * MIB / 2 + 2 * MIB) / PAGE;
        assertEquals(capsule.length, written.capsuleBytes());
        assertEquals(dataPages * PAGE, written.dataBytes());
        assertEquals(runPages - dataPages, written.zeroPagesSkipped());
        assertEquals(written.capsuleBytes(), got.stats().capsuleBytes());
        assertEquals(written.dataBytes(), got.stats().dataBytes());
        assertEquals(written.chunkCount(), got.stats().chunkCount());
        assertEquals(written.chunkCount(), sink.writes);
        // A zero page ends a chunk, so runs of four pages: one chunk each.
        assertTrue(written.chunkCount() >= dataPages / 4, written.toString());
        // Framing costs little: the capsule is its data plus a few KiB of state and frame headers.
        assertTrue(capsule.length < written.dataBytes() + 64 * 1024, written.toString());
        assertTrue(capsule.length < size, "zero pages and holes are not in the capsule");

        CapsuleHeader h = got.header();
        assertEquals(CapsuleFormat.CURRENT_VERSION, h.getFormatVersion());
        assertEquals(CapsuleFormat.HEADER_MAGIC, h.getMagic());
        assertEquals(HOST_ID, h.getSourceHostId());
        assertEquals(HOST_NAME, h.getSourceHostName());
        assertEquals(KVM_API, h.getKvmApiVersion());
        assertEquals(size, h.getMemorySize());
        assertEquals(2, h.getVcpuCount());
        assertEquals(io.vmfork.proto.FpuFormat.FPU_FORMAT_XSAVE, h.getFpuFormat());
        assertArrayEquals(state.cpuidEntries(), StateCodec.decodeCpuid(h.getRequiredCpuidList()));
    }

    @Test
    void vcpusNotStartedRoundTripAndOnlyTheyFlagTheHeader() throws Exception {
        long size = 4 * MIB;
        SyntheticMemory mem = new SyntheticMemory(size, List.of(new Run(0, MIB)), p -> false);
        MachineState all = state(size, 4, CpuState.FpuFormat.XSAVE);
        List<VcpuState> vs = new java.util.ArrayList<>(all.vcpus());
        vs.set(2, vs.get(2).withStarted(false));
        MachineState some = new MachineState(all.identity(), all.memorySize(), all.cpuidEntries(), all.clockNs(), vs,
                all.devices());
        assertNotEquals(all, some, "whether a vCPU is started is part of its state");

        CapsuleContents got = read(write(some, mem, limits()), new PageSink(), limits(), null);
        assertEquals(some, got.state());
        assertEquals(List.of(true, true, false, true), got.state().vcpus().stream().map(VcpuState::started).toList());
        assertEquals(CapsuleFormat.FLAG_NOT_STARTED, got.header().getFlags());

        CapsuleContents running = read(write(all, mem, limits()), new PageSink(), limits(), null);
        assertEquals(all, running.state());
        assertEquals(0, running.header().getFlags(), "a capsule whose vCPUs all run is what older readers take");
    }

    @Test
    void aSparseGibCostsOnlyItsDataAndHolesAreNeverRead() throws Exception {
        long size = GIB;
        SyntheticMemory mem = new SyntheticMemory(size, List.of(new Run(0, 64 * 1024),
                new Run(512 * MIB, 128 * 1024), new Run(GIB - 2 * MIB, 2 * MIB)), p -> p % 64 == 1);
        MachineState state = state(size, 1, CpuState.FpuFormat.FXSAVE);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        CapsuleStats written = CapsuleWriter.create(limits()).write(out, state, mem, HOST_ID, HOST_NAME, KVM_API);
        byte[] capsule = out.toByteArray();

        assertEquals(64 * 1024 + 128 * 1024 + 2 * MIB, mem.bytesRead, "only the data runs are read");
        assertTrue(capsule.length < 3 * MIB, "a 1 GiB guest with 2.2 MiB of data: " + capsule.length + " bytes");
        System.out.printf("capsule: 1 GiB guest, %d data runs -> %d capsule bytes (%d data, %d chunks, %d zero pages"
                + " skipped)%n", mem.dataRuns().size(), written.capsuleBytes(), written.dataBytes(),
                written.chunkCount(), written.zeroPagesSkipped());

        PageSink sink = new PageSink();
        CapsuleContents got = read(capsule, sink, limits(), null);
        assertEquals(state, got.state());
        assertSameMemory(mem, sink);
        assertEquals(GIB - PAGE, sink.pages.lastKey() * PAGE, "the last page of RAM arrives");
    }

    @Test
    void theWriterStreamsInsteadOfBufferingTheCapsule() throws Exception {
        long size = 16 * MIB;
        SyntheticMemory mem = new SyntheticMemory(size, List.of(new Run(0, size)), p -> false);
        long[] writtenBeforeLastRead = {0};
        long[] out = {0};
        OutputStream counting = new OutputStream() {
            @Override
            public void write(int b) {
                out[0]++;
            }

            @Override
            public void write(byte[] b, int off, int len) {
                out[0] += len;
            }
        };
        mem.onRead = () -> writtenBeforeLastRead[0] = out[0];
        CapsuleWriter.create(limits()).write(counting, state(size, 1, CpuState.FpuFormat.XSAVE), mem, HOST_ID,
                HOST_NAME, KVM_API);
        assertTrue(writtenBeforeLastRead[0] > 14 * MIB,
                "the first 15 MiB were on the wire before the last MiB was read: " + writtenBeforeLastRead[0]);
    }

    @Test
    void smallerChunksRoundTripAndStayUnderTheirSize() throws Exception {
        long size = 4 * MIB;
        SyntheticMemory mem = new SyntheticMemory(size, List.of(new Run(0, size)), p -> p % 9 == 8);
        CapsuleLimits small = limits().withMaxChunkBytes(2 * PAGE);
        byte[] capsule = write(state(size, 1, CpuState.FpuFormat.XSAVE), mem, small);
        PageSink sink = new PageSink();
        read(capsule, sink, small, null);
        assertSameMemory(mem, sink);
        assertEquals(2 * PAGE, sink.largestWrite);
    }

    @Test
    void anAllZeroGuestHasNoChunks() throws Exception {
        long size = 4 * MIB;
        SyntheticMemory mem = new SyntheticMemory(size, List.of(new Run(0, size)), p -> true);
        byte[] capsule = write(state(size, 1, CpuState.FpuFormat.XSAVE), mem, limits());
        PageSink sink = new PageSink();
        CapsuleContents got = read(capsule, sink, limits(), null);
        assertEquals(0, got.stats().chunkCount());
        assertEquals(0, sink.writes);
    }

    @Test
    void theWriterRefusesBadInputBeforeWritingAnything() {
        SyntheticMemory mem = new SyntheticMemory(4 * MIB, List.of(new Run(PAGE / 2, PAGE)), p -> false);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        assertThrows(IllegalArgumentException.class, () -> CapsuleWriter.create(limits()).write(out,
                state(4 * MIB, 1, CpuState.FpuFormat.XSAVE), mem, HOST_ID, HOST_NAME, KVM_API));
        SyntheticMemory other = new SyntheticMemory(8 * MIB, List.of(), p -> false);
        assertThrows(IllegalArgumentException.class, () -> CapsuleWriter.create(limits()).write(out,
                state(4 * MIB, 1, CpuState.FpuFormat.XSAVE), other, HOST_ID, HOST_NAME, KVM_API));
        assertEquals(0, out.size());
    }

    @Test
    void throughput() throws Exception {
        long size = 256 * MIB;
        SyntheticMemory mem = new SyntheticMemory(size, List.of(new Run(0, size)), p -> p % 16 == 15);
        MachineState state = state(size, 2, CpuState.FpuFormat.XSAVE);
        // Generate the guest's bytes once, so that the measurement is of the capsule, not of the pattern.
        byte[] ram = new byte[(int) size];
        mem.read(0, ram, 0, ram.length);
        io.vmfork.vmm.state.MemorySource source = new io.vmfork.vmm.state.MemorySource() {
            @Override
            public long size() {
                return size;
            }

            @Override
            public List<Run> dataRuns() {
                return mem.dataRuns();
            }

            @Override
            public void read(long offset, byte[] dst, int dstOff, int length) {
                System.arraycopy(ram, (int) offset, dst, dstOff, length);
            }
        };
        CapsuleWriter writer = CapsuleWriter.create(limits());
        CapsuleReader reader = CapsuleReader.create(limits());
        class Buffer extends ByteArrayOutputStream {
            Buffer(int n) {
                super(n);
            }

            byte[] array() {
                return buf;
            }
        }
        Buffer out = new Buffer((int) size);
        MemorySink discard = (offset, bytes, off, len) -> { };
        double bestEncode = 0;
        double bestDecode = 0;
        CapsuleStats stats = null;
        for (int round = 0; round < 3; round++) {
            out.reset();
            long t0 = System.nanoTime();
            stats = writer.write(out, state, source, HOST_ID, HOST_NAME, KVM_API);
            long t1 = System.nanoTime();
            reader.read(new ByteArrayInputStream(out.array(), 0, out.size()), discard, null);
            long t2 = System.nanoTime();
            bestEncode = Math.max(bestEncode, stats.dataBytes() / 1e6 / ((t1 - t0) / 1e9));
            bestDecode = Math.max(bestDecode, stats.dataBytes() / 1e6 / ((t2 - t1) / 1e9));
        }
        System.out.printf("capsule throughput (%d MB of data in %d chunks, SHA-256 + CRC-32C, best of 3):"
                + " encode %.0f MB/s, decode %.0f MB/s%n", stats.dataBytes() / 1_000_000, stats.chunkCount(),
                bestEncode, bestDecode);
    }
}
