package io.vmfork.vmm.capsule;

import com.google.protobuf.CodedOutputStream;
import com.google.protobuf.UnsafeByteOperations;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.CapsuleHeader;
import io.vmfork.proto.CapsuleTrailer;
import io.vmfork.proto.CpuidEntry;
import io.vmfork.proto.MemoryChunk;
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
 * <p>Format (version 2; docs/capsule.md has every field and limit):
 * <pre>
 *   magic    8 raw bytes 0x89 'V' 'M' 'F' 'C' 'A' 'P' 0x0A
 *   frame 0  CapsuleFrame{header}    what the capsule holds and needs from a host
 *   frame 1  CapsuleFrame{state}     CPU, clock and device-model state
 *   frame 2… CapsuleFrame{chunk}     runs of non-zero pages, ascending, not overlapping
 *   frame n  CapsuleFrame{trailer}   chunk count, data bytes, SHA-256 of all bytes before it
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
 * <li>The trailer is last and nothing follows it. Its digest covers every byte before it,
 *     and the reader reports success only after checking it: pages are written to the
 *     sink as they arrive, but no VM may run on them before then.
 * </ul>
 *
 * <p>Reader states: MAGIC → HEADER (checks, then the host compatibility check) → STATE →
 * MEMORY (chunks until the trailer) → END (only end of stream is valid) → verified.
 *
 * <p>Version rule: {@link CapsuleFormat#CURRENT_VERSION} is written; a reader accepts its
 * current version and the one before it, and refuses newer ones.
 *
 * <p>Memory is bounded: two buffers of the chunk size and the encoder's buffer, whatever
 * the guest's RAM. Pages outside the source's data runs are never read, and all-zero
 * pages inside them are left out, so untouched RAM costs nothing.
 *
 * <p>Instances are immutable and may write several capsules at once.
 */
public final class CapsuleWriter {
    /** Buffer between the encoder and the output stream; chunk data larger than it bypasses it. */
    private static final int STREAM_BUFFER_BYTES = 64 << 10;
    private static final byte[] ZERO_PAGE = new byte[CapsuleFormat.PAGE_SIZE];

    private final CapsuleLimits limits;

    private CapsuleWriter(CapsuleLimits limits) {
        this.limits = limits;
    }

    /** A writer whose chunks and frames stay within {@code limits}. */
    public static CapsuleWriter create(CapsuleLimits limits) {
        return new CapsuleWriter(limits);
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
        long xcr0 = state.vcpus().isEmpty() ? 0 : state.vcpus().get(0).xcr0();
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

    private CapsuleStats write(OutputStream out, MachineState state, MemorySource memory, long sourceHostId,
            String sourceHostName, int kvmApiVersion, byte[] observedCpuid, long observedXcr0) throws IOException {
        List<MemorySource.Run> runs = memory.dataRuns();
        checkMemory(state, memory, runs);
        io.vmfork.proto.MachineState stateProto = StateCodec.encode(state);
        CapsuleHeader header = header(state, stateProto.getCpuidList(), sourceHostId, sourceHostName, kvmApiVersion)
                .toBuilder()
                .addAllObservedCpuid(StateCodec.encodeCpuid(observedCpuid))
                .setObservedXcr0(observedXcr0)
                .build();
        CapsuleFrame headerFrame = CapsuleFrame.newBuilder().setHeader(header).build();
        CapsuleFrame stateFrame = CapsuleFrame.newBuilder().setState(stateProto).build();
        checkFrameSize(headerFrame, "header");
        checkFrameSize(stateFrame, "state");

        HashingStream hashed = new HashingStream(out);
        CodedOutputStream cos = CodedOutputStream.newInstance(hashed, STREAM_BUFFER_BYTES);
        cos.writeRawBytes(CapsuleFormat.FILE_MAGIC);
        writeFrame(cos, headerFrame);
        writeFrame(cos, stateFrame);

        Chunker chunker = new Chunker(cos);
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
        cos.flush();
        out.flush();
        return new CapsuleStats(hashed.count, chunker.dataBytes, chunker.chunks, chunker.zeroPages);
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
                .setFpuFormat(StateCodec.encode(state.vcpus().get(0).fpuFormat()))
                .setFlags(0) // no flag is defined in format versions 1 and 2
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
        VcpuState.FpuFormat fpu = state.vcpus().get(0).fpuFormat();
        for (VcpuState v : state.vcpus()) {
            if (v.fpuFormat() != fpu) {
                throw new IllegalArgumentException("vCPUs differ in FPU format: " + fpu + " and " + v.fpuFormat());
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

    /** Gathers contiguous non-zero pages into chunks of at most the chunk size. */
    private final class Chunker {
        private final CodedOutputStream cos;
        private final byte[] buf = new byte[limits.maxChunkBytes()];
        private final CRC32C crc = new CRC32C();
        private long start;
        private int length;
        long chunks;
        long dataBytes;
        long zeroPages;

        Chunker(CodedOutputStream cos) {
            this.cos = cos;
        }

        void page(long gpa, byte[] src, int off) throws IOException {
            if (Arrays.mismatch(src, off, off + CapsuleFormat.PAGE_SIZE, ZERO_PAGE, 0, CapsuleFormat.PAGE_SIZE) < 0) {
                zeroPages++;
                flush();
                return;
            }
            if (length == 0) {
                start = gpa;
            }
            System.arraycopy(src, off, buf, length, CapsuleFormat.PAGE_SIZE);
            length += CapsuleFormat.PAGE_SIZE;
            if (length == buf.length) {
                flush();
            }
        }

        void flush() throws IOException {
            if (length == 0) {
                return;
            }
            crc.reset();
            crc.update(buf, 0, length);
            // The wrapped buffer is serialized before it is reused, so it need not be copied.
            MemoryChunk chunk = MemoryChunk.newBuilder()
                    .setOffset(start)
                    .setData(UnsafeByteOperations.unsafeWrap(buf, 0, length))
                    .setCrc32C((int) crc.getValue())
                    .build();
            writeFrame(cos, CapsuleFrame.newBuilder().setChunk(chunk).build());
            chunks++;
            dataBytes += length;
            length = 0;
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
