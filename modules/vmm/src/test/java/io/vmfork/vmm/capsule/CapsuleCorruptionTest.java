package io.vmfork.vmm.capsule;

import static io.vmfork.vmm.capsule.CapsuleFixtures.*;
import static org.junit.jupiter.api.Assertions.*;

import com.google.protobuf.ByteString;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.CapsuleHeader;
import io.vmfork.proto.CapsuleTrailer;
import io.vmfork.proto.MemoryChunk;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.state.MemorySource.Run;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Random;
import java.util.function.UnaryOperator;
import java.util.zip.CRC32C;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/**
 * Damaged, truncated and forged capsules are refused with a CapsuleFormatException that
 * names the problem and where it is, never accepted and never with another exception.
 */
class CapsuleCorruptionTest {
    /** Small chunks, so that the capsule has many frames and flips land in every part of it. */
    private static final CapsuleLimits SMALL_CHUNKS = limits().withMaxChunkBytes(2 * PAGE);
    private static final long SIZE = 1 * MIB;
    private static byte[] capsule;
    private static List<Integer> boundaries;
    private static List<CapsuleFrame> frames;

    @BeforeAll
    static void makeCapsule() throws Exception {
        SyntheticMemory mem = new SyntheticMemory(SIZE, List.of(new Run(0, 6 * PAGE), new Run(64 * PAGE, 5 * PAGE),
                new Run(SIZE - 2 * PAGE, 2 * PAGE)), p -> p == 2 || p == 66);
        capsule = write(state(SIZE, 1, CpuState.FpuFormat.FXSAVE), mem, SMALL_CHUNKS);
        boundaries = frameBoundaries(capsule);
        frames = frames(capsule);
        assertTrue(frames.size() >= 8, "header, state, several chunks, trailer: " + frames.size());
        read(capsule, new PageSink(), SMALL_CHUNKS, null); // the undamaged capsule is fine
    }

    private static CapsuleFormatException refused(byte[] bytes) {
        return assertThrows(CapsuleFormatException.class, () -> read(bytes, new PageSink(), SMALL_CHUNKS, null));
    }

    private static void assertMentions(CapsuleFormatException e, String... parts) {
        for (String p : parts) {
            assertTrue(e.getMessage().contains(p), "'" + p + "' not in: " + e.getMessage());
        }
    }

    private static byte[] withFrame(int index, UnaryOperator<CapsuleFrame> change) throws Exception {
        List<CapsuleFrame> f = new ArrayList<>(frames);
        f.set(index, change.apply(f.get(index)));
        return assemble(f);
    }

    private static byte[] withHeader(UnaryOperator<CapsuleHeader.Builder> change) throws Exception {
        return withFrame(0, f -> CapsuleFrame.newBuilder().setHeader(change.apply(f.getHeader().toBuilder())).build());
    }

    private static byte[] withChunk(int chunk, UnaryOperator<MemoryChunk.Builder> change) throws Exception {
        return withFrame(2 + chunk, f -> CapsuleFrame.newBuilder().setChunk(change.apply(f.getChunk().toBuilder()))
                .build());
    }

    private static int crc(ByteString data) {
        CRC32C c = new CRC32C();
        c.update(data.asReadOnlyByteBuffer());
        return (int) c.getValue();
    }

    @Test
    void surgeryWithoutAChangeGivesBackAValidCapsule() throws Exception {
        assertArrayEquals(capsule, assemble(frames));
    }

    @Test
    void truncationAtEveryFrameBoundaryIsRefused() {
        List<Integer> cuts = new ArrayList<>(List.of(0, 1, CapsuleFormat.FILE_MAGIC.length - 1));
        for (int b : boundaries) {
            cuts.add(b);
            cuts.add(b + 1); // inside the length prefix or just after it
        }
        for (int cut : cuts) {
            if (cut >= capsule.length) {
                continue;
            }
            CapsuleFormatException e = refused(Arrays.copyOf(capsule, cut));
            assertMentions(e, "truncated");
        }
        assertMentions(refused(Arrays.copyOf(capsule, boundaries.get(2))), "frame 2", "at byte " + boundaries.get(2));
    }

    @Test
    void truncationAtRandomOffsetsIsRefused() {
        Random r = new Random(1);
        for (int i = 0; i < 400; i++) {
            int cut = r.nextInt(capsule.length);
            assertMentions(refused(Arrays.copyOf(capsule, cut)), "truncated");
        }
        assertMentions(refused(Arrays.copyOf(capsule, capsule.length - 1)), "truncated");
    }

    /**
     * One flipped bit anywhere is refused: in chunk data by the CRC (or the digest), in a
     * length prefix by the framing or the digest, in a tag by the parser, in the trailer by
     * its own checks. Every byte gets a flip, and every bit of the framing-heavy parts.
     */
    @Test
    void aFlippedBitAnywhereIsRefused() {
        Random r = new Random(2);
        int tested = 0;
        for (int pos = 0; pos < capsule.length; pos++) {
            boolean structural = pos < boundaries.get(1) || pos >= boundaries.get(boundaries.size() - 2)
                    || boundaries.contains(pos) || boundaries.contains(pos - 1) || isChunkHeader(pos);
            int[] bits = structural ? new int[] {0, 1, 2, 3, 4, 5, 6, 7} : new int[] {r.nextInt(8)};
            for (int bit : bits) {
                byte[] bad = capsule.clone();
                bad[pos] ^= (byte) (1 << bit);
                try {
                    read(bad, new PageSink(), SMALL_CHUNKS, null);
                    fail("flipping bit " + bit + " of byte " + pos + " was accepted");
                } catch (CapsuleFormatException expected) {
                    tested++;
                } catch (Throwable t) {
                    throw new AssertionError("flipping bit " + bit + " of byte " + pos + " threw " + t, t);
                }
            }
        }
        System.out.printf("capsule: %d single-bit flips over %d bytes, all refused%n", tested, capsule.length);
    }

    /** The first 16 bytes of a chunk frame: its prefix, the offset and the data length. */
    private static boolean isChunkHeader(int pos) {
        for (int i = 2; i + 2 < boundaries.size(); i++) {
            if (pos >= boundaries.get(i) && pos < boundaries.get(i) + 16) {
                return true;
            }
        }
        return false;
    }

    @Test
    void aFlippedBitInChunkDataIsCaughtByTheCrcBeforeTheSinkSeesIt() {
        int at = boundaries.get(3) + 100;
        byte[] bad = capsule.clone();
        bad[at] ^= 0x10;
        PageSink sink = new PageSink();
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class,
                () -> read(bad, sink, SMALL_CHUNKS, null));
        assertMentions(e, "frame 3", "CRC-32C");
        assertEquals(1, sink.writes, "only the chunk before the damaged one reached the sink");
    }

    @Test
    void wrongMagicIsRefused() {
        byte[] bad = capsule.clone();
        bad[1] = 'X';
        assertMentions(refused(bad), "bad magic", "at byte 0");
        assertMentions(refused("PK\3\4 a zip file, not a capsule".getBytes()), "bad magic");
        assertMentions(refused("PK".getBytes()), "bad magic");
        assertMentions(refused(new byte[0]), "truncated");
    }

    @Test
    void aNewerFormatVersionIsRefusedByTheVersionCheckAlone() throws Exception {
        byte[] newer = withHeader(h -> h.setFormatVersion(CapsuleFormat.CURRENT_VERSION + 1));
        assertMentions(refused(newer), "frame 0 (header)",
                "format version " + (CapsuleFormat.CURRENT_VERSION + 1) + " is newer");
        assertMentions(refused(withHeader(h -> h.setFormatVersion(0))), "format version 0");
    }

    @Test
    void unknownHeaderFlagsAndABadHeaderMagicAreRefused() throws Exception {
        assertMentions(refused(withHeader(h -> h.setFlags(8))), "flags 0x8");
        assertMentions(refused(withHeader(h -> h.setMagic(0x12345678))), "header magic");
    }

    @Test
    void aHeaderLyingAboutMemorySizeIsRefused() throws Exception {
        // Over the caller's limit: refused before anything is allocated for it.
        assertMentions(refused(withHeader(h -> h.setMemorySize(64 * GIB))), "memory size 68719476736",
                "over the limit");
        // Within the limit, but not what the state says.
        assertMentions(refused(withHeader(h -> h.setMemorySize(2 * MIB))), "frame 1", "memory size");
        assertMentions(refused(withHeader(h -> h.setMemorySize(SIZE + 100))), "multiple of 4096");
    }

    @Test
    void aHeaderLyingAboutVcpusOrCpuidIsRefused() throws Exception {
        assertMentions(refused(withHeader(h -> h.setVcpuCount(2))), "frame 1", "1 vCPUs, header says 2");
        assertMentions(refused(withHeader(h -> h.setVcpuCount(1_000_000))), "vCPU count 1000000");
        assertMentions(refused(withHeader(h -> {
            for (int i = 0; i < 300; i++) {
                h.addRequiredCpuid(h.getRequiredCpuid(0));
            }
            return h;
        })), "required_cpuid has more than 256 elements");
        assertMentions(refused(withHeader(h -> h.removeRequiredCpuid(1))), "cpuid differs");
        assertMentions(refused(withHeader(h -> h.setFpuFormat(io.vmfork.proto.FpuFormat.FPU_FORMAT_XSAVE))),
                "FPU format");
    }

    @Test
    void aChunkOutsideMemoryIsRefused() throws Exception {
        assertMentions(refused(withChunk(0, c -> c.setOffset(SIZE))), "frame 2 (chunk)", "outside guest memory");
        assertMentions(refused(withChunk(0, c -> c.setOffset(SIZE - PAGE))), "outside guest memory");
        assertMentions(refused(withChunk(0, c -> c.setOffset(-PAGE))), "outside guest memory");
    }

    @Test
    void aChunkLargerThanAllOfMemoryIsRefused() throws Exception {
        List<CapsuleFrame> f = new ArrayList<>(frames);
        f.set(0, CapsuleFrame.newBuilder().setHeader(f.get(0).getHeader().toBuilder().setMemorySize(PAGE)).build());
        f.set(1, CapsuleFrame.newBuilder().setState(f.get(1).getState().toBuilder().setMemorySize(PAGE)).build());
        assertEquals(2 * PAGE, f.get(2).getChunk().getData().size());
        // Refused before it is read: no capsule of 4096 bytes of RAM is that long.
        assertMentions(refused(assemble(f)), "frame 2", "longer than one of 4096 bytes of RAM can be");
    }

    @Test
    void misplacedChunksAreRefused() throws Exception {
        assertMentions(refused(withChunk(1, c -> c.setOffset(0))), "frame 3", "overlaps or comes before");
        assertMentions(refused(withChunk(0, c -> c.setOffset(100))), "page aligned");
        assertMentions(refused(withChunk(0, c -> c.setData(c.getData().substring(0, 100))
                .setCrc32C(crc(c.getData().substring(0, 100))))), "page aligned");
        assertMentions(refused(withChunk(0, c -> c.setData(ByteString.EMPTY).setCrc32C(0))), "page aligned");
        ByteString big = ByteString.copyFrom(new byte[3 * PAGE]);
        assertMentions(refused(withChunk(0, c -> c.setData(big).setCrc32C(crc(big)))), "frame 2",
                "over the cap of 8256 bytes for a memory chunk or trailer frame");
    }

    @Test
    void aCrcMismatchIsRefusedEvenWithAValidDigest() throws Exception {
        assertMentions(refused(withChunk(2, c -> c.setCrc32C(c.getCrc32C() + 1))), "frame 4", "CRC-32C");
    }

    @Test
    void aDigestMismatchIsRefused() throws Exception {
        // A chunk moved by one page keeps its CRC and stays in order: only the digest can tell.
        List<CapsuleFrame> f = new ArrayList<>(frames);
        CapsuleFrame last = f.get(f.size() - 2);
        f.set(f.size() - 2, CapsuleFrame.newBuilder().setChunk(last.getChunk().toBuilder()
                .setOffset(last.getChunk().getOffset() - PAGE)).build());
        assertMentions(refused(assembleKeepingTrailer(f)), "SHA-256", "altered");

        byte[] zeroDigest = withFrame(frames.size() - 1, t -> t);
        int digestAt = zeroDigest.length - CapsuleFormat.DIGEST_BYTES;
        Arrays.fill(zeroDigest, digestAt, zeroDigest.length, (byte) 0);
        assertMentions(refused(zeroDigest), "SHA-256");
    }

    @Test
    void trailerCountsThatDoNotMatchAreRefused() throws Exception {
        int t = frames.size() - 1;
        assertMentions(refused(withFrame(t, f -> CapsuleFrame.newBuilder().setTrailer(f.getTrailer().toBuilder()
                .setChunkCount(f.getTrailer().getChunkCount() - 1)).build())), "trailer says", "chunks");
        assertMentions(refused(withFrame(t, f -> CapsuleFrame.newBuilder().setTrailer(f.getTrailer().toBuilder()
                .setDataBytes(f.getTrailer().getDataBytes() + PAGE)).build())), "data bytes");
    }

    @Test
    void framesOutOfOrderAreRefused() throws Exception {
        List<CapsuleFrame> f = new ArrayList<>(frames);
        f.remove(1); // no state
        assertMentions(refused(assemble(f)), "frame 1", "expected the machine state, found a frame of kind chunk");
        List<CapsuleFrame> g = new ArrayList<>(frames);
        g.add(3, frames.get(0)); // a second header among the chunks
        assertMentions(refused(assemble(g)), "frame 3", "found a frame of kind header");
        List<CapsuleFrame> h = new ArrayList<>(frames);
        h.add(2, CapsuleFrame.getDefaultInstance());
        assertMentions(refused(assemble(h)), "unknown kind");
    }

    @Test
    void trailingGarbageIsRefused() {
        byte[] bad = Arrays.copyOf(capsule, capsule.length + 1);
        assertMentions(refused(bad), "trailing bytes", "at byte " + capsule.length);
        byte[] twice = Arrays.copyOf(capsule, capsule.length * 2);
        System.arraycopy(capsule, 0, twice, capsule.length, capsule.length);
        assertMentions(refused(twice), "trailing bytes");
    }

    @Test
    void aFrameLongerThanTheCapIsRefusedBeforeItIsRead() throws Exception {
        byte[] head = Arrays.copyOf(capsule, boundaries.get(0));
        byte[] huge = new byte[] {(byte) 0xff, (byte) 0xff, (byte) 0xff, (byte) 0xff, 0x0f};
        byte[] bad = Arrays.copyOf(head, head.length + huge.length);
        System.arraycopy(huge, 0, bad, head.length, huge.length);
        assertMentions(refused(bad), "frame 0", "frame length 4294967295 is over the cap");
        byte[] endless = Arrays.copyOf(head, head.length + 6);
        Arrays.fill(endless, head.length, endless.length, (byte) 0x80);
        assertMentions(refused(endless), "length prefix is longer");
        // A frame of garbage under the cap: not a CapsuleFrame.
        byte[] junk = rawFrame(new byte[] {(byte) 0xff, (byte) 0xff, (byte) 0xff});
        byte[] bad2 = Arrays.copyOf(head, head.length + junk.length);
        System.arraycopy(junk, 0, bad2, head.length, junk.length);
        assertMentions(refused(bad2), "not a valid CapsuleFrame");
    }

    @Test
    void trailerWithUnknownFieldsIsRefused() throws Exception {
        int t = frames.size() - 1;
        CapsuleTrailer tr = frames.get(t).getTrailer();
        CapsuleTrailer withExtra = CapsuleTrailer.newBuilder(tr).setUnknownFields(
                com.google.protobuf.UnknownFieldSet.newBuilder().addField(9,
                        com.google.protobuf.UnknownFieldSet.Field.newBuilder().addVarint(1).build()).build()).build();
        assertMentions(refused(withFrame(t, f -> CapsuleFrame.newBuilder().setTrailer(withExtra).build())),
                "fields this format version does not define");
    }
}
