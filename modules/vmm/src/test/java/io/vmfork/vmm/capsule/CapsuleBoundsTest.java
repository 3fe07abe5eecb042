package io.vmfork.vmm.capsule;

import static io.vmfork.vmm.capsule.CapsuleFixtures.*;
import static org.junit.jupiter.api.Assertions.*;

import com.google.protobuf.ByteString;
import com.google.protobuf.CodedOutputStream;
import com.google.protobuf.UnknownFieldSet;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.state.MemorySource.Run;
import io.vmfork.vmm.state.VcpuState;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.io.InterruptedIOException;
import java.io.SequenceInputStream;
import java.lang.management.ManagementFactory;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * What one capsule can cost a reader is bounded before the bytes are parsed: per frame
 * kind, over the whole stream, in time, and in the buffers it holds (issue 6, item 10).
 */
class CapsuleBoundsTest {
    private static final long SIZE = 8 * MIB;
    private static final com.sun.management.ThreadMXBean THREADS =
            (com.sun.management.ThreadMXBean) ManagementFactory.getThreadMXBean();
    private static byte[] capsule;
    private static List<CapsuleFrame> frames;
    /** The magic and the header frame of {@link #capsule}. */
    private static byte[] head;

    @BeforeAll
    static void makeCapsule() throws Exception {
        SyntheticMemory mem = new SyntheticMemory(SIZE, List.of(new Run(0, 8 * PAGE), new Run(4 * MIB, 64 * PAGE)),
                p -> false);
        capsule = write(state(SIZE, 1, CpuState.FpuFormat.FXSAVE), mem, limits());
        frames = frames(capsule);
        head = Arrays.copyOf(capsule, frameBoundaries(capsule).get(1));
    }

    /** Bytes the current thread allocated while {@code r} ran. */
    private static long allocatedBy(Runnable r) {
        long before = THREADS.getThreadAllocatedBytes(Thread.currentThread().getId());
        r.run();
        return THREADS.getThreadAllocatedBytes(Thread.currentThread().getId()) - before;
    }

    /** A state frame of {@code n} copies of {@code element}, a field of MachineState, in one frame. */
    private static byte[] stateFrameOf(int n, byte[] element) throws Exception {
        byte[] payload = new byte[n * element.length];
        for (int i = 0; i < n; i++) {
            System.arraycopy(element, 0, payload, i * element.length, element.length);
        }
        ByteArrayOutputStream frame = new ByteArrayOutputStream();
        CodedOutputStream c = CodedOutputStream.newInstance(frame);
        c.writeTag(2, 2); // CapsuleFrame.state
        c.writeUInt32NoTag(payload.length);
        c.writeRawBytes(payload);
        c.flush();
        return rawFrame(frame.toByteArray());
    }

    private static void assertCheaplyRefused(byte[] stream) {
        CapsuleLimits generous = limits();
        long bytes = allocatedBy(() -> assertThrows(CapsuleFormatException.class,
                () -> read(stream, new PageSink(), generous, null)));
        assertTrue(bytes < 64L << 20, "refusing a " + (stream.length >> 20) + " MiB frame allocated "
                + (bytes >> 20) + " MiB");
    }

    @Test
    void aStateFrameOfMillionsOfEmptyEntriesIsRefusedWithoutParsingIt() throws Exception {
        // ~8.4 million empty CPUID entries (field 3, length 0) in a frame just under 16 MiB.
        int n = (CapsuleLimits.DEFAULT_MAX_FRAME_BYTES - 64) / 2;
        byte[] cpuid = stateFrameOf(n, new byte[] {0x1a, 0});
        assertCheaplyRefused(concat(head, cpuid));
        // The same number of empty MSRs (VcpuState field 7) in one vCPU (MachineState field 5).
        int m = (CapsuleLimits.DEFAULT_MAX_FRAME_BYTES - 64) / 2;
        ByteArrayOutputStream vcpu = new ByteArrayOutputStream();
        CodedOutputStream c = CodedOutputStream.newInstance(vcpu);
        c.writeTag(5, 2);
        c.writeUInt32NoTag(m * 2);
        for (int i = 0; i < m; i++) {
            c.writeTag(7, 2);
            c.writeUInt32NoTag(0);
        }
        c.flush();
        assertCheaplyRefused(concat(head, stateFrameOf(1, vcpu.toByteArray())));
    }

    @Test
    void chunksPaddedWithUnknownFieldsCannotMakeTheStreamLongerThanItsMemory() throws Exception {
        List<CapsuleFrame> f = new ArrayList<>(frames);
        UnknownFieldSet pad = UnknownFieldSet.newBuilder().addField(99, UnknownFieldSet.Field.newBuilder()
                .addLengthDelimited(ByteString.copyFrom(new byte[512 << 10])).build()).build();
        for (int i = 2; i < f.size() - 1; i++) {
            f.set(i, CapsuleFrame.newBuilder().setChunk(f.get(i).getChunk().toBuilder().setUnknownFields(pad)).build());
        }
        byte[] padded = assemble(f);
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class,
                () -> read(padded, new PageSink(), limits(), null));
        assertTrue(e.getMessage().contains("besides its data"), e.getMessage());
    }

    @Test
    void aDeltaHeaderWithAHugeBaseKeyIsRefusedBeforeItIsParsed() throws Exception {
        io.vmfork.proto.CapsuleHeader h = frames.get(0).getHeader().toBuilder().setFlags(CapsuleFormat.FLAG_DELTA)
                .setBaseImage(ByteString.copyFrom(new byte[8 << 20])).build();
        byte[] frame = rawFrame(CapsuleFrame.newBuilder().setHeader(h).build().toByteArray());
        byte[] stream = concat(CapsuleFormat.fileMagic(), frame);
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class,
                () -> read(stream, new PageSink(), limits(), null));
        assertTrue(e.getMessage().contains("for a header frame"), e.getMessage());
        assertCheaplyRefused(stream);
    }

    @Test
    void zeroRunsAndCompressedChunksCannotMakeTheStreamLongerThanItsMemory() throws Exception {
        SyntheticMemory mem = new SyntheticMemory(SIZE, List.of(new Run(0, 64 * PAGE)), p -> p % 5 == 0);
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        CapsuleWriter.create(limits().withCompression(ChunkCompression.LZ4)).writeDelta(out,
                state(SIZE, 1, CpuState.FpuFormat.FXSAVE), mem, List.of(new Run(0, 64 * PAGE)), new byte[] {1},
                host(hostCpuid().bytes()));
        List<CapsuleFrame> f = new ArrayList<>(frames(out.toByteArray()));
        UnknownFieldSet pad = UnknownFieldSet.newBuilder().addField(99, UnknownFieldSet.Field.newBuilder()
                .addLengthDelimited(ByteString.copyFrom(new byte[512 << 10])).build()).build();
        boolean zero = false;
        boolean lz4 = false;
        for (int i = 2; i < f.size() - 1; i++) {
            io.vmfork.proto.MemoryChunk c = f.get(i).getChunk();
            zero |= c.getZeroBytes() != 0;
            lz4 |= c.getCodec() == io.vmfork.proto.ChunkCodec.CHUNK_CODEC_LZ4;
            f.set(i, CapsuleFrame.newBuilder().setChunk(c.toBuilder().setUnknownFields(pad)).build());
        }
        assertTrue(zero && lz4, "the delta has zero runs and compressed chunks");
        byte[] padded = assemble(f);
        io.vmfork.vmm.memory.RuntimeImage held = io.vmfork.vmm.memory.RuntimeImage.fromFile(
                io.vmfork.os.Memfd.create("vmfork-test-held", SIZE));
        try {
            CapsuleFormatException e = assertThrows(CapsuleFormatException.class, () -> CapsuleReader.create(limits())
                    .readImage(new ByteArrayInputStream(padded), "vmfork-test-rx", null, null, k -> held.retain()));
            assertTrue(e.getMessage().contains("besides its data") || e.getMessage().contains("a zero run needs"),
                    e.getMessage());
        } finally {
            held.release();
        }
    }

    @Test
    void aFramesBufferGrowsOnlyAsItsBytesArrive() throws Exception {
        // A state frame announced at 15 MiB, of which 100 bytes come.
        ByteArrayOutputStream s = new ByteArrayOutputStream();
        s.write(head);
        CodedOutputStream c = CodedOutputStream.newInstance(s);
        c.writeUInt32NoTag(15 << 20);
        c.flush();
        s.write(new byte[100]);
        byte[] stream = s.toByteArray();
        long bytes = allocatedBy(() -> assertThrows(CapsuleFormatException.class,
                () -> read(stream, new PageSink(), limits(), null)));
        assertTrue(bytes < 2L << 20, "a 15 MiB length prefix alone allocated " + (bytes >> 10) + " KiB");
    }

    @Test
    void aTricklingSourceRunsIntoTheReadDeadline() {
        // The header, then a state frame of 1000 bytes that arrive one every 20 ms.
        byte[] start = concat(head, new byte[] {(byte) 0xe8, 0x07});
        InputStream trickle = new SequenceInputStream(new ByteArrayInputStream(start), new InputStream() {
            @Override
            public int read() {
                try {
                    Thread.sleep(20);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                return 0;
            }

            @Override
            public int read(byte[] b, int off, int len) {
                b[off] = (byte) read();
                return 1;
            }
        });
        CapsuleLimits l = limits().withReadDeadline(Duration.ofMillis(300));
        long t0 = System.nanoTime();
        InterruptedIOException e = assertThrows(InterruptedIOException.class,
                () -> CapsuleReader.create(l).read(trickle, new PageSink()));
        assertTrue(e.getMessage().contains("read-deadline"), e.getMessage());
        assertTrue(System.nanoTime() - t0 < 5_000_000_000L, "the deadline ended the read");
    }

    @Test
    void anImageSinkFreesItsBufferWhenClosed() throws Exception {
        ImageSink sink = ImageSink.create("vmfork-test-sink", 8 * MIB, PAGE);
        sink.write(0, new byte[PAGE], 0, PAGE);
        java.lang.reflect.Field f = ImageSink.class.getDeclaredField("buffer");
        f.setAccessible(true);
        com.sun.jna.Memory buffer = (com.sun.jna.Memory) f.get(sink);
        sink.close();
        assertFalse(buffer.valid(), "the native buffer is freed by close(), not by the garbage collector");
    }

    private static byte[] concat(byte[] a, byte[] b) {
        byte[] out = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, out, a.length, b.length);
        return out;
    }
}
