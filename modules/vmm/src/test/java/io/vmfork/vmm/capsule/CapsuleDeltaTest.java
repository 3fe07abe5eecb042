package io.vmfork.vmm.capsule;

import static io.vmfork.vmm.capsule.CapsuleFixtures.*;
import static org.junit.jupiter.api.Assertions.*;

import com.google.protobuf.ByteString;
import io.vmfork.os.Mapping;
import io.vmfork.os.Memfd;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.ChunkCodec;
import io.vmfork.proto.MemoryChunk;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.MemorySource;
import io.vmfork.vmm.state.MemorySource.Run;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.IntFunction;
import java.util.zip.CRC32C;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Delta capsules (only the pages changed since an image the reader holds, built there as
 * a layer over it), image lineage, and compressed chunks (issue 8: incremental images,
 * compression where it pays), on memfd-backed images.
 */
class CapsuleDeltaTest {
    private static final long SIZE = 8 * MIB;
    private static final int BASE_PAGES = 64;
    private static final byte[] KEY = "parent-7/image-1".getBytes(StandardCharsets.UTF_8);
    private static final MachineState STATE = state(SIZE, 1, CpuState.FpuFormat.XSAVE);
    /** Changed since the base: three rewritten pages, one zeroed, two new where the base had none. */
    private static final List<Run> CHANGED = List.of(new Run(10 * PAGE, 3 * PAGE), new Run(20 * PAGE, PAGE),
            new Run(1000 * PAGE, 2 * PAGE));

    private final List<RuntimeImage> images = new ArrayList<>();
    private int memfdsBefore;

    @BeforeEach
    void countMemfds() {
        memfdsBefore = memfds();
    }

    @AfterEach
    void releaseAndCheck() {
        images.forEach(RuntimeImage::release);
        images.clear();
        assertEquals(memfdsBefore, memfds(), "no memfd was left behind");
    }

    /** The base's page {@code p}: pages below BASE_PAGES hold data, the rest are zero. */
    private static byte[] basePage(int p) {
        byte[] b = new byte[PAGE];
        if (p < BASE_PAGES) {
            Arrays.fill(b, (byte) (p + 1));
            b[p] = 0x7f;
        }
        return b;
    }

    /** The newer image's page {@code p}. */
    private static byte[] nextPage(int p) {
        if (p == 20) {
            return new byte[PAGE];
        }
        if ((p >= 10 && p < 13) || p == 1000 || p == 1001) {
            byte[] b = new byte[PAGE];
            new Random(p).nextBytes(b);
            return b;
        }
        return basePage(p);
    }

    private static Memfd fileOf(String name, int pages, IntFunction<byte[]> page, List<Run> only) {
        Memfd f = Memfd.create(name, SIZE);
        try (Mapping m = f.map(true, name)) {
            for (int p = 0; p < SIZE / PAGE; p++) {
                final long at = (long) p * PAGE;
                boolean in = only == null ? p < pages
                        : only.stream().anyMatch(r -> at >= r.offset() && at < r.offset() + r.length());
                byte[] b = in ? page.apply(p) : null;
                if (b != null && Arrays.mismatch(b, new byte[PAGE]) >= 0) {
                    m.pointer().write(at, b, 0, PAGE);
                }
            }
        }
        return f;
    }

    private RuntimeImage keep(RuntimeImage i) {
        images.add(i);
        return i;
    }

    private RuntimeImage base(String name) {
        return keep(RuntimeImage.fromFile(fileOf(name, BASE_PAGES, CapsuleDeltaTest::basePage, null)));
    }

    /** The newer image, as a freeze makes it: a layer of the changed pages over the base. */
    private RuntimeImage next(RuntimeImage base) {
        return keep(base.overlayOf(fileOf("vmfork-test-layer", 0, CapsuleDeltaTest::nextPage, CHANGED), CHANGED));
    }

    private static void assertPages(MemorySource image, IntFunction<byte[]> expected) {
        byte[] got = new byte[PAGE];
        for (int p = 0; p < SIZE / PAGE; p++) {
            image.read((long) p * PAGE, got, 0, PAGE);
            assertArrayEquals(expected.apply(p), got, "page " + p);
        }
    }

    private static byte[] delta(MemorySource next, List<Run> changed, CapsuleLimits limits) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        CapsuleWriter.create(limits).writeDelta(out, STATE, next, changed, KEY, host(hostCpuid().bytes()));
        return out.toByteArray();
    }

    private static BaseResolver holding(RuntimeImage image, AtomicInteger asked) {
        return key -> {
            asked.incrementAndGet();
            return Arrays.equals(key, KEY) ? image.retain() : null;
        };
    }

    private static ReceivedCapsule readImage(byte[] capsule, BaseResolver bases) throws Exception {
        return CapsuleReader.create(limits()).readImage(new ByteArrayInputStream(capsule), "vmfork-test-rx",
                host(hostCpuid().bytes()), null, bases);
    }

    static int memfds() {
        try (var s = Files.list(Path.of("/proc/self/fd"))) {
            return (int) s.filter(p -> {
                try {
                    return Files.readSymbolicLink(p).toString().startsWith("/memfd:vmfork");
                } catch (java.io.IOException e) {
                    return false;
                }
            }).count();
        } catch (java.io.IOException e) {
            throw new AssertionError(e);
        }
    }

    // ---------------------------------------------------------------- lineage

    @Test
    void imagesOfOneBaseShareALineageAndKnowWhatChanged() {
        RuntimeImage a = base("vmfork-test-a");
        RuntimeImage b = next(a);
        assertNotEquals(a.imageId(), b.imageId());
        assertEquals(a.lineage(), b.lineage());
        assertEquals(CHANGED, b.changedSince(a));
        assertEquals(CHANGED, a.changedSince(b), "symmetric");
        assertEquals(List.of(), b.changedSince(b));
        // A later layer over part of an earlier one: only what the two differ in.
        List<Run> more = List.of(new Run(11 * PAGE, PAGE), new Run(30 * PAGE, 2 * PAGE));
        RuntimeImage c = keep(b.overlayOf(fileOf("vmfork-test-layer", 0, CapsuleDeltaTest::nextPage, more), more));
        assertEquals(more, c.changedSince(b));
        assertEquals(List.of(new Run(10 * PAGE, 3 * PAGE), new Run(20 * PAGE, PAGE), new Run(30 * PAGE, 2 * PAGE),
                new Run(1000 * PAGE, 2 * PAGE)), c.changedSince(a));
        RuntimeImage compact = keep(c.compact("vmfork-test-compact"));
        assertEquals(a.lineage(), compact.lineage(), "compaction keeps the lineage");
        assertEquals(List.of(), compact.changedSince(c), "compaction copies bytes, it does not change them");
        assertEquals(c.changedSince(a), compact.changedSince(a));
        assertEquals(more, compact.changedSince(b));
        List<Run> after = List.of(new Run(12 * PAGE, 2 * PAGE));
        RuntimeImage d = keep(compact.overlayOf(fileOf("vmfork-test-layer", 0, CapsuleDeltaTest::nextPage, after),
                after));
        assertEquals(after, d.changedSince(compact));
        assertEquals(List.of(new Run(11 * PAGE, 3 * PAGE), new Run(30 * PAGE, 2 * PAGE)), d.changedSince(b));
        RuntimeImage other = base("vmfork-test-other");
        assertNotEquals(a.lineage(), other.lineage());
        assertNull(other.changedSince(a), "no common base: only a full capsule");
    }

    @Test
    void aCompactionOfTooManyOriginsMakesTheNextDeltaConservativeNotWrong() {
        long size = 16 * MIB;
        RuntimeImage a = keep(RuntimeImage.fromFile(Memfd.create("vmfork-test-a", size)));
        List<Run> scattered = new ArrayList<>();
        for (long p = 0; p < 2 * 1100; p += 2) {
            scattered.add(new Run(p * PAGE, PAGE));
        }
        RuntimeImage b = keep(a.overlayOf(Memfd.create("vmfork-test-layer", size), scattered));
        assertEquals(scattered, b.changedSince(a));
        RuntimeImage compact = keep(b.compact("vmfork-test-compact"));
        // Past 1,024 origins the compacted layer is their origin: every overlay page counts as changed.
        assertEquals(scattered, compact.changedSince(b));
        assertEquals(scattered, compact.changedSince(a));
    }

    @Test
    void anOverlayRefusesRunsOutsideTheImageAndClosesTheFile() {
        RuntimeImage a = base("vmfork-test-a");
        for (List<Run> bad : List.of(List.of(new Run(SIZE, PAGE)), List.of(new Run(3, PAGE)),
                List.of(new Run(2 * PAGE, PAGE), new Run(PAGE, PAGE)))) {
            assertThrows(IllegalArgumentException.class,
                    () -> a.overlayOf(Memfd.create("vmfork-test-bad", SIZE), bad));
        }
    }

    // ---------------------------------------------------------------- delta capsules

    @Test
    void aDeltaCarriesOnlyTheChangedPagesAndBuildsTheNewImageOverTheHeldOne() throws Exception {
        RuntimeImage sourceBase = base("vmfork-test-a");
        RuntimeImage next = next(sourceBase);
        // The receiver holds its own copy of the base (it received it earlier).
        RuntimeImage held = base("vmfork-test-held");
        byte[] full = write(STATE, next, limits());
        byte[] capsule = delta(next, next.changedSince(sourceBase), limits());
        assertTrue(capsule.length < full.length / 10, capsule.length + " bytes of delta, full " + full.length);
        List<CapsuleFrame> f = frames(capsule);
        assertEquals(CapsuleFormat.FLAG_DELTA, f.get(0).getHeader().getFlags());
        assertEquals(ByteString.copyFrom(KEY), f.get(0).getHeader().getBaseImage());
        assertTrue(f.stream().anyMatch(x -> x.hasChunk() && x.getChunk().getZeroBytes() == PAGE),
                "the zeroed page travels as a zero run");

        AtomicInteger asked = new AtomicInteger();
        try (ReceivedCapsule r = readImage(capsule, holding(held, asked))) {
            assertEquals(1, asked.get());
            assertTrue(r.contents().isDelta());
            assertEquals(CHANGED, r.contents().delta().runs());
            assertEquals(5 * PAGE, r.contents().stats().dataBytes());
            assertEquals(held.lineage(), r.image().lineage(), "a layer over the held image");
            assertEquals(CHANGED, r.image().changedSince(held));
            assertPages(r.image(), CapsuleDeltaTest::nextPage);
        }
        assertPages(held, CapsuleDeltaTest::basePage);
    }

    @Test
    void aChainOfDeltasIsCompactedPastTheExtentCap() throws Exception {
        RuntimeImage a = base("vmfork-test-a");
        RuntimeImage b = next(a);
        List<Run> more = List.of(new Run(40 * PAGE, PAGE), new Run(2000 * PAGE, PAGE));
        RuntimeImage c = keep(b.overlayOf(fileOf("vmfork-test-layer", 0, p -> nextPage(p + 1), more), more));
        RuntimeImage held = base("vmfork-test-held");
        try (ReceivedCapsule rb = readImage(delta(b, b.changedSince(a), limits()),
                holding(held, new AtomicInteger()))) {
            // Over the cap of 4 extents: the two overlay layers become one; the base stays shared.
            byte[] d = delta(c, c.changedSince(b), limits());
            try (ReceivedCapsule rc = CapsuleReader.create(limits()).readImage(new ByteArrayInputStream(d),
                    "vmfork-test-rx", host(hostCpuid().bytes()), null, k -> rb.image().retain(), 4)) {
                assertEquals(5, rc.image().extentCount());
                assertEquals(2, rc.image().layerCount(), "the base and one compacted layer");
                assertEquals(held.lineage(), rc.image().lineage());
                assertPages(rc.image(), p -> p == 40 || p == 2000 ? nextPage(p + 1) : nextPage(p));
            }
            try (ReceivedCapsule rc = CapsuleReader.create(limits()).readImage(new ByteArrayInputStream(d),
                    "vmfork-test-rx", host(hostCpuid().bytes()), null, k -> rb.image().retain())) {
                assertEquals(3, rc.image().layerCount(), "uncompacted: a layer per delta");
            }
        }
    }

    @Test
    void aDeltaOverAnUnknownBaseIsRefusedAfterTheHeader() throws Exception {
        RuntimeImage a = base("vmfork-test-a");
        byte[] capsule = delta(next(a), CHANGED, limits());
        // Only the magic and the header: refused for the base, not for the truncation after it.
        byte[] head = Arrays.copyOf(capsule, frameBoundaries(capsule).get(1));
        AtomicInteger asked = new AtomicInteger();
        CapsuleBaseUnknownException e = assertThrows(CapsuleBaseUnknownException.class,
                () -> readImage(head, k -> { asked.incrementAndGet(); return null; }));
        assertTrue(e.getMessage().contains(hex(KEY)) && e.getMessage().contains("does not hold"), e.getMessage());
        assertArrayEquals(KEY, e.baseKey());
        assertEquals(1, asked.get());
        // A read that takes full capsules only refuses it too, naming the base.
        PageSink sink = new PageSink();
        CapsuleFormatException f = assertThrows(CapsuleFormatException.class,
                () -> read(capsule, sink, limits(), host(hostCpuid().bytes())));
        assertTrue(f.getMessage().contains("takes full capsules only") && f.getMessage().contains(hex(KEY)),
                f.getMessage());
        assertEquals(0, sink.writes);
    }

    @Test
    void aTruncatedDeltaIsRefusedAndLeavesTheBaseAsItWas() throws Exception {
        RuntimeImage a = base("vmfork-test-a");
        RuntimeImage held = base("vmfork-test-held");
        byte[] capsule = delta(next(a), CHANGED, limits().withCompression(ChunkCompression.LZ4));
        List<Integer> cuts = new ArrayList<>(frameBoundaries(capsule));
        cuts.remove(cuts.size() - 1);
        cuts.add(capsule.length - 1);
        cuts.add(cuts.get(2) + 7);
        for (int cut : cuts) {
            byte[] part = Arrays.copyOf(capsule, cut);
            CapsuleFormatException e = assertThrows(CapsuleFormatException.class,
                    () -> readImage(part, holding(held, new AtomicInteger())), "cut at " + cut);
            assertTrue(e.getMessage().contains("truncated"), e.getMessage());
        }
        assertEquals(memfdsBefore + 3, memfds(), "the refused reads kept no file and no reference");
        assertPages(held, CapsuleDeltaTest::basePage);
    }

    @Test
    void theReaderRefusesDeltaFieldsOutOfPlace() throws Exception {
        RuntimeImage a = base("vmfork-test-a");
        RuntimeImage held = base("vmfork-test-held");
        RuntimeImage next = next(a);
        List<CapsuleFrame> d = frames(delta(next, CHANGED, limits()));
        List<CapsuleFrame> full = frames(write(STATE, next, limits()));
        BaseResolver bases = holding(held, new AtomicInteger());
        // A zero run in a full capsule.
        List<CapsuleFrame> f = new ArrayList<>(full);
        f.add(2, CapsuleFrame.newBuilder().setChunk(MemoryChunk.newBuilder().setOffset(SIZE - PAGE)
                .setZeroBytes(PAGE)).build());
        f.remove(3);
        assertRefused(f, bases, "zero runs are only in delta capsules");
        // base_image without the flag; a version 2 header (which had no flags) is too old now.
        assertRefused(withHeader(full, h -> h.setBaseImage(ByteString.copyFrom(KEY))), bases,
                "base_image is set in a capsule without the DELTA flag");
        assertRefused(withHeader(d, h -> h.setFormatVersion(2)), bases, "format version 2 is older");
        assertRefused(withHeader(d, h -> h.setBaseImage(ByteString.copyFrom(new byte[65]))), bases,
                "base_image is 1 to 64 bytes");
        assertRefused(withHeader(d, h -> h.clearBaseImage()), bases, "base_image is 1 to 64 bytes, not 0");
        // Zero runs: with data, outside memory, overlapping the chunk before.
        assertRefused(withChunk(d, true, c -> c.setData(ByteString.copyFrom(new byte[PAGE]))), bases,
                "a zero run has no data");
        assertRefused(withChunk(d, true, c -> c.setZeroBytes(SIZE)), bases, "outside guest memory");
        assertRefused(withChunk(d, true, c -> c.setZeroBytes(-PAGE)), bases, "outside guest memory");
        assertRefused(withChunk(d, true, c -> c.setOffset(10 * PAGE)), bases, "overlaps or comes before");
        assertRefused(withChunk(d, true, c -> c.setZeroBytes(100)), bases, "multiples of 4096");
        // A delta whose base has another size.
        RuntimeImage small = keep(RuntimeImage.fromFile(Memfd.create("vmfork-test-small", SIZE / 2)));
        assertRefused(d, holding(small, new AtomicInteger()), "differs from its base image's");
    }

    @Test
    void aDeltaOfTooManyRunsIsRefusedByTheWriterAndTheReader() throws Exception {
        RuntimeImage a = base("vmfork-test-a");
        List<Run> many = new ArrayList<>();
        for (long p = 0; p < 2L * (CapsuleLimits.MAX_DELTA_RUNS + 1); p += 2) {
            many.add(new Run(p * PAGE, PAGE));
        }
        long size = 2L * (CapsuleLimits.MAX_DELTA_RUNS + 1) * PAGE;
        MachineState big = state(size, 1, CpuState.FpuFormat.XSAVE);
        SyntheticMemory mem = new SyntheticMemory(size, List.of(new Run(0, size)), p -> true);
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> CapsuleWriter
                .create(limits()).writeDelta(new ByteArrayOutputStream(), big, mem, many, KEY, host(hostCpuid().bytes())));
        assertTrue(e.getMessage().contains("send a full capsule"), e.getMessage());
        // The same capsule made by hand: the reader stops at the run over the cap.
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        CapsuleWriter.create(limits()).writeDelta(out, big, mem, many.subList(0, 2), KEY, host(hostCpuid().bytes()));
        List<CapsuleFrame> f = new ArrayList<>(frames(out.toByteArray()));
        CapsuleFrame trailer = f.remove(f.size() - 1);
        f.subList(2, f.size()).clear();
        for (Run r : many) {
            f.add(CapsuleFrame.newBuilder().setChunk(MemoryChunk.newBuilder().setOffset(r.offset())
                    .setZeroBytes(PAGE)).build());
        }
        f.add(CapsuleFrame.newBuilder().setTrailer(trailer.getTrailer().toBuilder().setChunkCount(many.size())
                .setDataBytes(0)).build());
        RuntimeImage held = keep(RuntimeImage.fromFile(Memfd.create("vmfork-test-held", size)));
        CapsuleFormatException r = assertThrows(CapsuleFormatException.class, () -> CapsuleReader.create(limits())
                .readImage(new ByteArrayInputStream(assemble(f)), "vmfork-test-rx", null, null,
                        holding(held, new AtomicInteger())));
        assertTrue(r.getMessage().contains("more than " + CapsuleLimits.MAX_DELTA_RUNS + " runs"), r.getMessage());
    }

    // ---------------------------------------------------------------- compression

    @Test
    void compressedChunksRoundTripAndPayWhereTheDataCompresses() throws Exception {
        // Every seventh page is nearly empty (compresses well), the others random (do not).
        SyntheticMemory mixed = new SyntheticMemory(SIZE, List.of(new Run(0, 4 * MIB)), p -> false);
        byte[] plain = write(STATE, mixed, limits());
        for (ChunkCompression c : List.of(ChunkCompression.LZ4, ChunkCompression.AUTO)) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            CapsuleStats s = CapsuleWriter.create(limits().withCompression(c).withMaxChunkBytes(4 * PAGE))
                    .write(out, STATE, mixed, HOST_ID, HOST_NAME, KVM_API);
            byte[] capsule = out.toByteArray();
            assertTrue(s.compressedChunks() > 0, c + ": " + s);
            assertTrue(capsule.length < plain.length, c + ": " + capsule.length + " vs " + plain.length);
            PageSink a = new PageSink();
            PageSink b = new PageSink();
            CapsuleContents got = read(capsule, a, limits(), null);
            assertEquals(s.compressedChunks(), got.stats().compressedChunks());
            read(plain, b, limits(), null);
            assertEquals(b.pages.keySet(), a.pages.keySet());
            b.pages.forEach((p, bytes) -> assertArrayEquals(bytes, a.pages.get(p), "page " + p));
        }
        // Incompressible memory: auto sends it as it is, and soon stops trying.
        MemorySource random = new MemorySource() {
            @Override
            public long size() {
                return SIZE;
            }

            @Override
            public List<Run> dataRuns() {
                return List.of(new Run(0, 4 * MIB));
            }

            @Override
            public void read(long offset, byte[] dst, int dstOff, int length) {
                byte[] b = new byte[length];
                new Random(offset).nextBytes(b);
                System.arraycopy(b, 0, dst, dstOff, length);
            }
        };
        CapsuleStats s = CapsuleWriter.create(limits().withCompression(ChunkCompression.AUTO))
                .write(new ByteArrayOutputStream(), STATE, random, HOST_ID, HOST_NAME, KVM_API);
        assertEquals(0, s.compressedChunks());
    }

    @Test
    void aHostileCompressedChunkIsRefusedBeforeItIsDecompressed() throws Exception {
        SyntheticMemory mem = new SyntheticMemory(SIZE, List.of(new Run(0, 64 * PAGE)), p -> p % 7 != 3);
        List<CapsuleFrame> f = frames(write(STATE, mem, limits().withCompression(ChunkCompression.LZ4)));
        assertTrue(f.stream().anyMatch(x -> x.hasChunk() && x.getChunk().getCodec() == ChunkCodec.CHUNK_CODEC_LZ4));
        // Claims a huge size: refused on the number, nothing allocated for it.
        assertRefusedFull(withLz4Chunk(f, c -> c.setUncompressedLength(1 << 30)), "over the chunk cap");
        assertRefusedFull(withLz4Chunk(f, c -> c.setUncompressedLength(-PAGE)), "over the chunk cap");
        // A block that expands past what it claims (a bomb: 1 MiB of zeros, 4 KiB compressed, claiming two pages).
        byte[] bomb = new byte[Lz4.maxCompressedLength(1 << 20)];
        int n = Lz4.compress(new byte[1 << 20], 1 << 20, bomb);
        assertRefusedFull(withLz4Chunk(f, c -> c.setUncompressedLength(2 * PAGE)
                .setData(ByteString.copyFrom(bomb, 0, n))), "malformed or decompresses to more than 8192");
        // Garbage, a block that falls short, one no smaller than its pages, an unknown codec.
        assertRefusedFull(withLz4Chunk(f, c -> c.setData(ByteString.copyFrom(new byte[] {(byte) 0xff, 1, 2}))),
                "malformed");
        byte[] one = new byte[Lz4.maxCompressedLength(PAGE)];
        int m = Lz4.compress(new byte[PAGE], PAGE, one);
        assertRefusedFull(withLz4Chunk(f, c -> c.setUncompressedLength(2 * PAGE)
                .setData(ByteString.copyFrom(one, 0, m))), "decompresses to 4096 bytes, not 8192");
        assertRefusedFull(withLz4Chunk(f, c -> c.setData(ByteString.copyFrom(new byte[c.getUncompressedLength()]))),
                "must be smaller than its pages");
        assertRefusedFull(withLz4Chunk(f, c -> c.setCodecValue(7)), "codec 7");
        // The CRC is of the decompressed pages.
        assertRefusedFull(withLz4Chunk(f, c -> c.setCrc32C(c.getCrc32C() ^ 1)), "CRC-32C");
        // And a version 2 capsule (which could not have compressed chunks) is too old now.
        assertRefusedFull(withHeader(f, h -> h.setFormatVersion(2)), "format version 2 is older");
    }

    // ---------------------------------------------------------------- helpers

    private void assertRefused(List<CapsuleFrame> frames, BaseResolver bases, String mention) throws Exception {
        byte[] capsule = assemble(recount(frames));
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class, () -> readImage(capsule, bases));
        assertTrue(e.getMessage().contains(mention), "'" + mention + "' not in: " + e.getMessage());
    }

    private static void assertRefusedFull(List<CapsuleFrame> frames, String mention) throws Exception {
        byte[] capsule = assemble(recount(frames));
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class,
                () -> read(capsule, new PageSink(), limits(), null));
        assertTrue(e.getMessage().contains(mention), "'" + mention + "' not in: " + e.getMessage());
    }

    private static List<CapsuleFrame> withHeader(List<CapsuleFrame> frames,
            java.util.function.UnaryOperator<io.vmfork.proto.CapsuleHeader.Builder> edit) {
        List<CapsuleFrame> f = new ArrayList<>(frames);
        f.set(0, CapsuleFrame.newBuilder().setHeader(edit.apply(f.get(0).getHeader().toBuilder())).build());
        return f;
    }

    /** Edits the first zero run ({@code zero}) or data chunk. */
    private static List<CapsuleFrame> withChunk(List<CapsuleFrame> frames, boolean zero,
            java.util.function.UnaryOperator<MemoryChunk.Builder> edit) {
        List<CapsuleFrame> f = new ArrayList<>(frames);
        for (int i = 0; i < f.size(); i++) {
            if (f.get(i).hasChunk() && (f.get(i).getChunk().getZeroBytes() != 0) == zero) {
                f.set(i, CapsuleFrame.newBuilder().setChunk(edit.apply(f.get(i).getChunk().toBuilder())).build());
                return f;
            }
        }
        throw new AssertionError("no such chunk");
    }

    /** Edits the first LZ4 chunk, then makes its CRC match its decompressed data again unless the edit set it. */
    private static List<CapsuleFrame> withLz4Chunk(List<CapsuleFrame> frames,
            java.util.function.UnaryOperator<MemoryChunk.Builder> edit) {
        List<CapsuleFrame> f = new ArrayList<>(frames);
        for (int i = 0; i < f.size(); i++) {
            if (f.get(i).hasChunk() && f.get(i).getChunk().getCodec() == ChunkCodec.CHUNK_CODEC_LZ4) {
                f.set(i, CapsuleFrame.newBuilder().setChunk(edit.apply(f.get(i).getChunk().toBuilder())).build());
                return f;
            }
        }
        throw new AssertionError("no LZ4 chunk");
    }

    /** The trailer's counts made to match the chunks (the digest is made valid by assemble). */
    private static List<CapsuleFrame> recount(List<CapsuleFrame> frames) {
        List<CapsuleFrame> f = new ArrayList<>(frames);
        long chunks = 0;
        long data = 0;
        for (CapsuleFrame x : f) {
            if (x.hasChunk()) {
                chunks++;
                MemoryChunk c = x.getChunk();
                data += c.getZeroBytes() != 0 ? 0
                        : c.getCodec() == ChunkCodec.CHUNK_CODEC_LZ4 ? c.getUncompressedLength() : c.getData().size();
            }
        }
        int last = f.size() - 1;
        f.set(last, CapsuleFrame.newBuilder().setTrailer(f.get(last).getTrailer().toBuilder().setChunkCount(chunks)
                .setDataBytes(data)).build());
        return f;
    }

    private static String hex(byte[] b) {
        StringBuilder s = new StringBuilder();
        for (byte x : b) {
            s.append(String.format("%02x", x));
        }
        return s.toString();
    }

    @SuppressWarnings("unused")
    private static int crc(byte[] b) {
        CRC32C c = new CRC32C();
        c.update(b);
        return (int) c.getValue();
    }
}
