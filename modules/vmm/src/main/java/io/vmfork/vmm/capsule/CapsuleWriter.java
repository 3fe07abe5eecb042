package io.vmfork.vmm.capsule;

import com.google.protobuf.CodedOutputStream;
import com.google.protobuf.UnsafeByteOperations;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.CapsuleHeader;
import io.vmfork.proto.CapsuleTrailer;
import io.vmfork.proto.ChunkCodec;
import io.vmfork.proto.CpuidEntry;
import io.vmfork.proto.MemoryChunk;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.MemorySource;
import io.vmfork.vmm.state.VcpuState;
import java.io.IOException;
import java.io.OutputStream;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.util.Arrays;
import java.util.List;
import java.util.zip.CRC32C;

/**
 * Writes a clone capsule: a VM's runtime image (machine state + guest RAM) as one stream.
 *
 * <p>Format (version 4; docs/capsule.md has every field and limit):
 * <pre>
 *   magic    8 raw bytes 0x89 'V' 'M' 'F' 'C' 'A' 'P' 0x0A
 *   frame 0  CapsuleFrame{header}    what the capsule holds and needs from a host
 *   frame 1  CapsuleFrame{state}     CPU, clock and device-model state
 *   frame 2… CapsuleFrame{chunk}     runs of non-zero pages (a delta: of changed pages, zero
 *                                    ones as zero runs), ascending, not overlapping; each
 *                                    chunk's data raw or one LZ4 block
 *   frame n  CapsuleFrame{trailer}   chunk count, data bytes, SHA-256 of all bytes before it
 *   frame n+1 CapsuleFrame{signature} only with header flag SIGNED: the signer's public key and
 *                                    its Ed25519 signature over the digest and the header
 *   end of stream
 * </pre>
 * A frame is a varint length and that many bytes of a serialized CapsuleFrame.
 *
 * <p>Ordering requirements:
 * <ul>
 * <li>The file magic comes before any frame, so that a reader can refuse something that
 *     is not a capsule before it parses a length.
 * <li>The header is the first frame: the target host decides compatibility from it alone
 *     and refuses before it reads, or allocates anything for, the rest.
 * <li>The state comes before memory, so that a target can prepare the VM descriptor while
 *     guest RAM is still streaming; its sizes must agree with the header's.
 * <li>Chunks come in ascending guest-physical order without overlap, so that the reader
 *     checks ordering with one number and writes every page at most once.
 * <li>The trailer is last but for a signature, and nothing follows those. Its digest covers
 *     every byte before it, and the reader reports success only after checking it (and the
 *     signature, where it requires one): pages are written to the sink as they arrive, but
 *     no VM may run on them before then.
 * <li>The signature follows the trailer: it is over the digest, known only at the end, and
 *     the header frame, so the writer signs without reading memory twice.
 * </ul>
 *
 * <p>Reader states: MAGIC → HEADER (checks, then the host compatibility check, then for a
 * delta its base image, through the caller's {@link BaseResolver}) → STATE → MEMORY
 * (chunks and zero runs until the trailer) → END (only end of stream is valid) → verified.
 *
 * <p>Version rule: {@link CapsuleFormat#CURRENT_VERSION} is written; a reader accepts its
 * current version and the one before it, and refuses newer ones.
 *
 * <p>Memory is bounded: three buffers of about the chunk size and the encoder's buffer,
 * whatever the guest's RAM. Pages outside the source's data runs are never read, and
 * all-zero pages inside them are left out, so untouched RAM costs nothing. A delta
 * ({@link #writeDelta}) reads only the changed runs.
 *
 * <p>Compression ({@link CapsuleLimits#compression}) is per chunk: a chunk is sent as an
 * LZ4 block only where that pays (see {@link ChunkCompression}); its CRC-32C is of the
 * pages' bytes either way.
 *
 * <p>Instances are immutable and may write several capsules at once.
 */
public final class CapsuleWriter {
    /** Buffer between the encoder and the output stream; chunk data larger than it bypasses it. */
    private static final int STREAM_BUFFER_BYTES = 64 << 10;
    private static final byte[] ZERO_PAGE = new byte[CapsuleFormat.PAGE_SIZE];

    private final CapsuleLimits limits;
    /** Null: capsules are not signed. */
    private final CapsuleSigner signer;

    private CapsuleWriter(CapsuleLimits limits, CapsuleSigner signer) {
        this.limits = limits;
        this.signer = signer;
    }

    /** A writer whose chunks and frames stay within {@code limits}. */
    public static CapsuleWriter create(CapsuleLimits limits) {
        return new CapsuleWriter(limits, null);
    }

    /**
     * This writer, signing every capsule with {@code signer}: header flag SIGNED and a
     * signature frame after the trailer (docs/capsule.md, "Signed capsules").
     */
    public CapsuleWriter signedBy(CapsuleSigner signer) {
        if (signer == null) {
            throw new IllegalArgumentException("signer is null");
        }
        return new CapsuleWriter(limits, signer);
    }

    /**
     * Streams the capsule of {@code state} and {@code memory} to {@code out}, which is
     * flushed but not closed. Everything is checked before the first byte is written, so
     * a refused state (IllegalArgumentException) leaves {@code out} untouched.
     *
     * @param sourceHostId   this host's cluster id
     * @param sourceHostName this host's name, for messages
     * @param kvmApiVersion  KVM_GET_API_VERSION on this host
     */
    public CapsuleStats write(OutputStream out, MachineState state, MemorySource memory, long sourceHostId,
            String sourceHostName, int kvmApiVersion) throws IOException {
        // A guest that sees what it was given: the CPUID set on its vCPUs, its vCPU's XCR0.
        long xcr0 = state.vcpus().isEmpty() ? 0 : state.vcpus().get(0).cpu().xcr0();
        return write(out, state, memory, sourceHostId, sourceHostName, kvmApiVersion, state.cpuidEntries(), xcr0);
    }

    /**
     * Streams the capsule of a VM captured on {@code source}, recording what its guest could
     * observe there: the host's CPUID at CPL3 and its XCR0 (see {@link HostPlatform}).
     */
    public CapsuleStats write(OutputStream out, MachineState state, MemorySource memory, HostPlatform source)
            throws IOException {
        return write(out, state, memory, source.hostId(), source.hostName(), source.kvmApiVersion(),
                source.observedCpuid(), source.observedXcr0());
    }

    /**
     * No capsule format version carries a Linux guest's personality yet (docs/linux.md,
     * "State"): refused before anything is written, rather than a capsule whose clone would
     * start without its memory map, signal dispositions and stdin.
     */
    private static void refuseLinux(MachineState state) {
        if (state.linux() != null) {
            throw new UnsupportedOperationException("capsules of Linux guests are not implemented yet: the capsule"
                    + " format does not carry a Linux program's state (docs/linux.md)");
        }
    }

    private CapsuleStats write(OutputStream out, MachineState state, MemorySource memory, long sourceHostId,
            String sourceHostName, int kvmApiVersion, byte[] observedCpuid, long observedXcr0) throws IOException {
        return write(out, state, memory, null, null, sourceHostId, sourceHostName, kvmApiVersion, observedCpuid,
                observedXcr0);
    }

    /**
     * Streams a delta capsule (format version 3, flag DELTA) of a VM captured on
     * {@code source}: its state and only the pages of {@code memory} in {@code changed},
     * the runs that may differ from the image the target holds under {@code baseKey}
     * (typically {@code memory.changedSince(base)} of two images of one lineage). Every
     * page of a changed run is sent, all-zero ones as zero runs, since the base may hold
     * data there. The target refuses the delta, before reading memory, unless it holds an
     * image under {@code baseKey}; that image must be the one the runs were computed against.
     *
     * @param changed page-aligned runs inside memory, ascending, not overlapping, at most
     *                {@link CapsuleLimits#MAX_DELTA_RUNS} once touching ones are merged
     * @param baseKey the source's key for the base image, 1 to {@link CapsuleFormat#MAX_BASE_KEY_BYTES} bytes
     * @throws IllegalArgumentException before writing anything, for runs or a key outside those rules
     */
    public CapsuleStats writeDelta(OutputStream out, MachineState state, MemorySource memory,
            List<MemorySource.Run> changed, byte[] baseKey, HostPlatform source) throws IOException {
        if (baseKey == null || baseKey.length == 0 || baseKey.length > CapsuleFormat.MAX_BASE_KEY_BYTES) {
            throw new IllegalArgumentException("a base image key is 1 to " + CapsuleFormat.MAX_BASE_KEY_BYTES
                    + " bytes, not " + (baseKey == null ? "null" : baseKey.length));
        }
        int merged = 0;
        long end = -1;
        for (MemorySource.Run r : changed) {
            if (r.offset() != end) {
                merged++;
            }
            end = r.offset() + r.length();
        }
        if (merged > CapsuleLimits.MAX_DELTA_RUNS) {
            throw new IllegalArgumentException(merged + " changed runs are over the " + CapsuleLimits.MAX_DELTA_RUNS
                    + " a delta capsule may carry: send a full capsule");
        }
        return write(out, state, memory, List.copyOf(changed), baseKey.clone(), source.hostId(), source.hostName(),
                source.kvmApiVersion(), source.observedCpuid(), source.observedXcr0());
    }

    private CapsuleStats write(OutputStream out, MachineState state, MemorySource memory,
            List<MemorySource.Run> changed, byte[] baseKey, long sourceHostId, String sourceHostName,
            int kvmApiVersion, byte[] observedCpuid, long observedXcr0) throws IOException {
        refuseLinux(state);
        boolean delta = changed != null;
        List<MemorySource.Run> runs = delta ? changed : memory.dataRuns();
        checkMemory(state, memory, runs);
        io.vmfork.proto.MachineState stateProto = StateCodec.encode(state);
        CapsuleHeader.Builder hb = header(state, stateProto.getCpuidList(), sourceHostId, sourceHostName,
                kvmApiVersion).toBuilder()
                .addAllObservedCpuid(StateCodec.encodeCpuid(observedCpuid))
                .setObservedXcr0(observedXcr0)
                .setSourcePlatform(kvmApiVersion == 0 ? "process" : "kvm");
        if (delta) {
            hb.setFlags(hb.getFlags() | CapsuleFormat.FLAG_DELTA)
                    .setBaseImage(com.google.protobuf.ByteString.copyFrom(baseKey));
        }
        if (signer != null) {
            hb.setFlags(hb.getFlags() | CapsuleFormat.FLAG_SIGNED);
        }
        CapsuleHeader header = hb.build();
        CapsuleFrame headerFrame = CapsuleFrame.newBuilder().setHeader(header).build();
        CapsuleFrame stateFrame = CapsuleFrame.newBuilder().setState(stateProto).build();
        checkFrameSize(headerFrame, "header");
        checkFrameSize(stateFrame, "state");

        HashingStream hashed = new HashingStream(out);
        CodedOutputStream cos = CodedOutputStream.newInstance(hashed, STREAM_BUFFER_BYTES);
        cos.writeRawBytes(CapsuleFormat.FILE_MAGIC);
        writeFrame(cos, headerFrame);
        writeFrame(cos, stateFrame);

        Chunker chunker = new Chunker(cos, delta);
        byte[] readBuf = new byte[limits.maxChunkBytes()];
        for (MemorySource.Run run : runs) {
            long end = run.offset() + run.length();
            for (long pos = run.offset(); pos < end; ) {
                int n = (int) Math.min(readBuf.length, end - pos);
                memory.read(pos, readBuf, 0, n);
                for (int p = 0; p < n; p += CapsuleFormat.PAGE_SIZE) {
                    chunker.page(pos + p, readBuf, p);
                }
                pos += n;
            }
            chunker.flush();
        }

        cos.flush();
        byte[] digest = hashed.digest();
        CapsuleTrailer trailer = CapsuleTrailer.newBuilder()
                .setChunkCount(chunker.chunks)
                .setDataBytes(chunker.dataBytes)
                .setSha256(UnsafeByteOperations.unsafeWrap(digest))
                .build();
        writeFrame(cos, CapsuleFrame.newBuilder().setTrailer(trailer).build());
        if (signer != null) {
            writeFrame(cos, CapsuleFrame.newBuilder().setSignature(signer.sign(digest, headerFrame.toByteArray()))
                    .build());
        }
        cos.flush();
        out.flush();
        return new CapsuleStats(hashed.count, chunker.dataBytes, chunker.chunks, chunker.zeroPages,
                chunker.compressedChunks);
    }

    private CapsuleHeader header(MachineState state, List<CpuidEntry> cpuid, long hostId, String hostName,
            int kvmApiVersion) {
        CapsuleHeader.Builder b = CapsuleHeader.newBuilder()
                .setMagic(CapsuleFormat.HEADER_MAGIC)
                .setFormatVersion(CapsuleFormat.CURRENT_VERSION)
                .setSourceHostId(hostId)
                .setSourceHostName(hostName)
                .setKvmApiVersion(kvmApiVersion)
                .setMemorySize(state.memorySize())
                .setVcpuCount(state.vcpus().size())
                .addAllRequiredCpuid(cpuid)
                .setFpuFormat(StateCodec.encode(state.vcpus().get(0).cpu().fpuFormat()))
                // a full capsule; writeDelta adds DELTA
                .setFlags(state.vcpus().stream().allMatch(VcpuState::started) ? 0 : CapsuleFormat.FLAG_NOT_STARTED)
                .setMaxChunkBytes(limits.maxChunkBytes());
        String release = CapsuleWriter.class.getPackage().getImplementationVersion();
        if (release != null) {
            b.setWriterRelease(release);
        }
        return b.build();
    }

    private void checkMemory(MachineState state, MemorySource memory, List<MemorySource.Run> runs) {
        long size = memory.size();
        if (size != state.memorySize()) {
            throw new IllegalArgumentException("memory source is " + size + " bytes, the state says "
                    + state.memorySize());
        }
        if (size <= 0 || size % CapsuleFormat.PAGE_SIZE != 0) {
            throw new IllegalArgumentException("memory size " + size + " is not a positive multiple of 4096");
        }
        if (state.vcpus().isEmpty() || state.vcpus().size() > limits.maxVcpus()) {
            throw new IllegalArgumentException("a capsule holds 1 to " + limits.maxVcpus() + " vCPUs, not "
                    + state.vcpus().size());
        }
        CpuState.FpuFormat fpu = state.vcpus().get(0).cpu().fpuFormat();
        for (VcpuState v : state.vcpus()) {
            if (v.cpu().fpuFormat() != fpu) {
                throw new IllegalArgumentException("vCPUs differ in FPU format: " + fpu + " and "
                        + v.cpu().fpuFormat());
            }
        }
        int cpuidEntries = state.cpuidEntries().length / CapsuleFormat.CPUID_ENTRY_BYTES;
        if (cpuidEntries > limits.maxCpuidEntries()) {
            throw new IllegalArgumentException(cpuidEntries + " cpuid entries, over the cap of "
                    + limits.maxCpuidEntries());
        }
        long next = 0;
        for (MemorySource.Run r : runs) {
            if (r.offset() % CapsuleFormat.PAGE_SIZE != 0 || r.length() % CapsuleFormat.PAGE_SIZE != 0
                    || r.length() < 0 || r.offset() < next || r.offset() > size - r.length()) {
                throw new IllegalArgumentException("data run " + r + " is not page aligned, not ascending or"
                        + " outside memory of " + size + " bytes");
            }
            next = r.offset() + r.length();
        }
    }

    private void checkFrameSize(CapsuleFrame frame, String kind) {
        if (frame.getSerializedSize() > limits.maxFrameBytes()) {
            throw new IllegalArgumentException("the " + kind + " frame is " + frame.getSerializedSize()
                    + " bytes, over the frame cap of " + limits.maxFrameBytes() + " that readers enforce");
        }
    }

    private static void writeFrame(CodedOutputStream cos, CapsuleFrame frame) throws IOException {
        cos.writeUInt32NoTag(frame.getSerializedSize());
        frame.writeTo(cos);
    }

    /**
     * Gathers contiguous non-zero pages into chunks of at most the chunk size, and in a
     * delta contiguous zero pages into zero runs; compresses chunks where that pays.
     */
    private final class Chunker {
        /** Auto mode: after this many chunks in a row that did not compress well... */
        private static final int AUTO_MISSES = 4;
        /** ...it sends this many as they are before it tries again. */
        private static final int AUTO_SKIP = 15;
        private final CodedOutputStream cos;
        private final boolean delta;
        private final ChunkCompression compression = limits.compression();
        private final byte[] buf = new byte[limits.maxChunkBytes()];
        private final byte[] packed = compression == ChunkCompression.NONE ? null
                : new byte[Lz4.maxCompressedLength(limits.maxChunkBytes())];
        private final CRC32C crc = new CRC32C();
        private long start;
        private int length;
        private long zeroStart;
        private long zeroLength;
        private int misses;
        private int skip;
        long chunks;
        long dataBytes;
        long zeroPages;
        long compressedChunks;

        Chunker(CodedOutputStream cos, boolean delta) {
            this.cos = cos;
            this.delta = delta;
        }

        void page(long gpa, byte[] src, int off) throws IOException {
            if (Arrays.mismatch(src, off, off + CapsuleFormat.PAGE_SIZE, ZERO_PAGE, 0, CapsuleFormat.PAGE_SIZE) < 0) {
                zeroPages++;
                flushData();
                if (delta) {
                    if (zeroLength > 0 && zeroStart + zeroLength != gpa) {
                        flushZeros();
                    }
                    if (zeroLength == 0) {
                        zeroStart = gpa;
                    }
                    zeroLength += CapsuleFormat.PAGE_SIZE;
                }
                return;
            }
            flushZeros();
            if (length > 0 && start + length != gpa) {
                flushData();
            }
            if (length == 0) {
                start = gpa;
            }
            System.arraycopy(src, off, buf, length, CapsuleFormat.PAGE_SIZE);
            length += CapsuleFormat.PAGE_SIZE;
            if (length == buf.length) {
                flushData();
            }
        }

        void flush() throws IOException {
            flushData();
            flushZeros();
        }

        private void flushZeros() throws IOException {
            if (zeroLength == 0) {
                return;
            }
            MemoryChunk chunk = MemoryChunk.newBuilder().setOffset(zeroStart).setZeroBytes(zeroLength).build();
            writeFrame(cos, CapsuleFrame.newBuilder().setChunk(chunk).build());
            chunks++;
            zeroLength = 0;
        }

        private void flushData() throws IOException {
            if (length == 0) {
                return;
            }
            crc.reset();
            crc.update(buf, 0, length);
            // The wrapped buffers are serialized before they are reused, so they need not be copied.
            MemoryChunk.Builder chunk = MemoryChunk.newBuilder()
                    .setOffset(start)
                    .setCrc32C((int) crc.getValue());
            int packedLength = compress();
            if (packedLength > 0) {
                chunk.setCodec(ChunkCodec.CHUNK_CODEC_LZ4).setUncompressedLength(length)
                        .setData(UnsafeByteOperations.unsafeWrap(packed, 0, packedLength));
                compressedChunks++;
            } else {
                chunk.setData(UnsafeByteOperations.unsafeWrap(buf, 0, length));
            }
            writeFrame(cos, CapsuleFrame.newBuilder().setChunk(chunk).build());
            chunks++;
            dataBytes += length;
            length = 0;
        }

        /** The LZ4 block of the chunk in {@link #packed} and its length where it pays, else 0. */
        private int compress() {
            if (compression == ChunkCompression.NONE) {
                return 0;
            }
            if (skip > 0) {
                skip--;
                return 0;
            }
            int n = Lz4.compress(buf, length, packed);
            boolean pays = compression == ChunkCompression.LZ4 ? n < length
                    : n <= length - (length >> ChunkCompression.AUTO_MIN_SAVING_SHIFT);
            if (compression == ChunkCompression.AUTO) {
                misses = pays ? 0 : misses + 1;
                if (misses >= AUTO_MISSES) {
                    misses = 0;
                    skip = AUTO_SKIP;
                }
            }
            return pays ? n : 0;
        }
    }

    /** Counts every byte and hashes them for the trailer's digest. */
    private static final class HashingStream extends OutputStream {
        private final OutputStream out;
        private final MessageDigest sha;
        long count;

        HashingStream(OutputStream out) {
            this.out = out;
            this.sha = newDigest();
        }

        @Override
        public void write(int b) throws IOException {
            out.write(b);
            sha.update((byte) b);
            count++;
        }

        @Override
        public void write(byte[] b, int off, int len) throws IOException {
            out.write(b, off, len);
            sha.update(b, off, len);
            count += len;
        }

        @Override
        public void flush() throws IOException {
            out.flush();
        }

        /** The digest of everything written so far (it resets the hash; the trailer after it is only counted). */
        byte[] digest() {
            return sha.digest();
        }
    }

    static MessageDigest newDigest() {
        try {
            return MessageDigest.getInstance(CapsuleFormat.DIGEST_ALGORITHM);
        } catch (NoSuchAlgorithmException e) {
            throw new AssertionError("every JDK has " + CapsuleFormat.DIGEST_ALGORITHM, e);
        }
    }
}
