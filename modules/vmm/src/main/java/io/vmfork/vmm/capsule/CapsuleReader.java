package io.vmfork.vmm.capsule;

import com.google.protobuf.ByteString;
import com.google.protobuf.CodedInputStream;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.UnsafeByteOperations;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.CapsuleHeader;
import io.vmfork.proto.CapsuleTrailer;
import io.vmfork.proto.MemoryChunk;
import io.vmfork.vmm.state.MachineState;
import java.io.BufferedInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.security.MessageDigest;
import java.util.Arrays;
import java.util.HashSet;
import java.util.Locale;
import java.util.Set;
import java.util.zip.CRC32C;

/**
 * Reads a clone capsule (the format is described at the top of {@link CapsuleWriter} and
 * in docs/capsule.md), putting guest RAM into a {@link MemorySink} and returning the header
 * and machine state.
 *
 * <p>Nothing in the stream is trusted: every length is checked against a cap before
 * anything is allocated for it, every chunk against the header's memory size and the
 * chunk before it, every chunk's CRC-32C before it reaches the sink, and the trailer's
 * counts and SHA-256 before {@link #read} returns. Any failure is a
 * {@link CapsuleFormatException} naming the frame and byte offset, or a
 * {@link CapsuleIncompatibleException} from the host check that runs right after the
 * header; I/O errors of the stream or the sink pass through as IOException.
 *
 * <p>The sink receives pages while the capsule streams, so after a failure it may hold
 * some of them: the caller must discard it and run nothing on it. Only a normal return
 * means the whole capsule arrived unaltered.
 *
 * <p>Instances are immutable; each {@link #read} call keeps its own state.
 */
public final class CapsuleReader {
    private static final int STREAM_BUFFER_BYTES = 64 << 10;
    /** A uint32 varint: 5 bytes at most. */
    private static final int MAX_LENGTH_PREFIX_BYTES = 5;
    private static final int VARINT_PAYLOAD_BITS = 7;
    private static final int VARINT_MORE = 0x80;
    private static final int VARINT_PAYLOAD = 0x7f;

    /** Where the reader is in the frame sequence; the order is fixed. */
    private enum Expect { MAGIC, HEADER, STATE, MEMORY, END }

    private final CapsuleLimits limits;

    private CapsuleReader(CapsuleLimits limits) {
        this.limits = limits;
    }

    /** A reader that refuses capsules beyond {@code limits}. */
    public static CapsuleReader create(CapsuleLimits limits) {
        return new CapsuleReader(limits);
    }

    /** Reads a capsule without a host compatibility check (tools, tests, a local restore). */
    public CapsuleContents read(InputStream in, MemorySink sink) throws IOException {
        return read(in, sink, null);
    }

    /**
     * Reads the capsule that {@code in} holds up to its end, writing its pages to
     * {@code sink}. With a non-null {@code host}, refuses the capsule right after the
     * header if that host cannot run it ({@link CapsuleCompatibility#check}).
     */
    public CapsuleContents read(InputStream in, MemorySink sink, HostPlatform host) throws IOException {
        return new Pass(new BufferedInputStream(in, STREAM_BUFFER_BYTES), sink, host).run();
    }

    /** One read of one capsule. */
    private final class Pass {
        private final InputStream in;
        private final MemorySink sink;
        private final HostPlatform host;
        private final MessageDigest sha = CapsuleWriter.newDigest();
        private final CRC32C crc = new CRC32C();
        private final byte[] prefix = new byte[MAX_LENGTH_PREFIX_BYTES];
        private Expect expect = Expect.MAGIC;
        /** Bytes consumed from the stream so far. */
        private long position;
        private int frameIndex;
        private long frameStart;
        /** What the current frame is: its parsed kind once known, else what is expected. */
        private String frameKind;
        /** Frame buffer reused for memory frames; their contents never outlive the frame. */
        private byte[] memoryFrameBuf = new byte[0];
        private byte[] chunkBuf = new byte[0];
        private CapsuleHeader header;
        private MachineState state;
        private long chunks;
        private long dataBytes;
        /** Lowest offset the next chunk may start at. */
        private long nextFree;

        Pass(InputStream in, MemorySink sink, HostPlatform host) {
            this.in = in;
            this.sink = sink;
            this.host = host;
        }

        CapsuleContents run() throws IOException {
            readMagic();
            expect = Expect.HEADER;
            while (expect != Expect.END) {
                frameStart = position;
                frameKind = expect == Expect.MEMORY ? "memory chunk or trailer"
                        : expect.toString().toLowerCase(Locale.ROOT);
                int prefixLen = readLengthPrefix();
                int length = decodePrefix(prefixLen);
                // Header and state are returned to the caller, so they get a buffer of their own;
                // parsed with aliasing, their bytes would otherwise change under the caller.
                byte[] buf = expect == Expect.MEMORY ? memoryBuffer(length) : new byte[length];
                readFully(buf, length);
                CapsuleFrame frame = parse(buf, length);
                frameKind = describe(frame.getKindCase());
                if (frame.getKindCase() != CapsuleFrame.KindCase.TRAILER) {
                    sha.update(prefix, 0, prefixLen);
                    sha.update(buf, 0, length);
                }
                onFrame(frame);
                frameIndex++;
            }
            if (in.read() != -1) {
                throw CapsuleFormatException.atByte(position, "trailing bytes after the trailer");
            }
            return new CapsuleContents(header, state, new CapsuleStats(position, dataBytes, chunks, 0));
        }

        private void readMagic() throws IOException {
            byte[] magic = new byte[CapsuleFormat.FILE_MAGIC.length];
            int n = in.readNBytes(magic, 0, magic.length);
            if (Arrays.mismatch(magic, 0, n, CapsuleFormat.FILE_MAGIC, 0, n) >= 0) {
                throw CapsuleFormatException.atByte(0, "bad magic " + hex(Arrays.copyOf(magic, n))
                        + ", a capsule starts with " + hex(CapsuleFormat.FILE_MAGIC) + ": not a vmfork capsule");
            }
            if (n < magic.length) {
                throw CapsuleFormatException.atByte(n, "truncated: the stream ends inside the "
                        + magic.length + "-byte file magic");
            }
            sha.update(magic);
            position = n;
        }

        /** Reads the varint length prefix into {@link #prefix}; returns its byte count. */
        private int readLengthPrefix() throws IOException {
            for (int i = 0; i < MAX_LENGTH_PREFIX_BYTES; i++) {
                int b = in.read();
                if (b < 0) {
                    throw fail(i == 0 ? "truncated: the stream ends where this frame should start"
                            : "truncated: the stream ends inside the frame's length prefix");
                }
                prefix[i] = (byte) b;
                position++;
                if ((b & VARINT_MORE) == 0) {
                    return i + 1;
                }
            }
            throw fail("frame length prefix is longer than " + MAX_LENGTH_PREFIX_BYTES + " bytes");
        }

        private int decodePrefix(int prefixLen) {
            long length = 0;
            for (int i = 0; i < prefixLen; i++) {
                length |= (long) (prefix[i] & VARINT_PAYLOAD) << (VARINT_PAYLOAD_BITS * i);
            }
            if (length > limits.maxFrameBytes()) {
                throw fail("frame length " + length + " is over the cap of " + limits.maxFrameBytes() + " bytes");
            }
            return (int) length;
        }

        private byte[] memoryBuffer(int length) {
            if (memoryFrameBuf.length < length) {
                memoryFrameBuf = new byte[length];
            }
            return memoryFrameBuf;
        }

        private void readFully(byte[] buf, int length) throws IOException {
            int n = in.readNBytes(buf, 0, length);
            position += n;
            if (n < length) {
                throw fail("truncated: the stream ends " + n + " bytes into a frame of " + length + " bytes");
            }
        }

        private CapsuleFrame parse(byte[] buf, int length) {
            try {
                // Wrapped as immutable so that aliasing takes effect: chunk data is then a view of
                // the frame buffer, not a copy (the buffer outlives the frame's use of it).
                CodedInputStream cis = UnsafeByteOperations.unsafeWrap(buf, 0, length).newCodedInput();
                cis.enableAliasing(true);
                CapsuleFrame frame = CapsuleFrame.parseFrom(cis);
                cis.checkLastTagWas(0);
                return frame;
            } catch (InvalidProtocolBufferException e) {
                throw fail("not a valid CapsuleFrame: " + e.getMessage(), e);
            } catch (IOException e) {
                // Parsing from an array does no I/O; protobuf declares it all the same.
                throw new AssertionError(e);
            }
        }

        private void onFrame(CapsuleFrame frame) throws IOException {
            CapsuleFrame.KindCase kind = frame.getKindCase();
            switch (expect) {
                case HEADER -> {
                    expectKind(kind, CapsuleFrame.KindCase.HEADER, "the header");
                    onHeader(frame.getHeader());
                    expect = Expect.STATE;
                }
                case STATE -> {
                    expectKind(kind, CapsuleFrame.KindCase.STATE, "the machine state");
                    onState(frame.getState());
                    expect = Expect.MEMORY;
                }
                case MEMORY -> {
                    if (kind == CapsuleFrame.KindCase.CHUNK) {
                        onChunk(frame.getChunk());
                    } else {
                        expectKind(kind, CapsuleFrame.KindCase.TRAILER, "a memory chunk or the trailer");
                        onTrailer(frame);
                        expect = Expect.END;
                    }
                }
                default -> throw new IllegalStateException(expect.toString());
            }
        }

        private void expectKind(CapsuleFrame.KindCase kind, CapsuleFrame.KindCase wanted, String what) {
            if (kind != wanted) {
                throw fail("expected " + what + ", found a frame of kind " + describe(kind));
            }
        }

        private void onHeader(CapsuleHeader h) {
            if (h.getMagic() != CapsuleFormat.HEADER_MAGIC) {
                throw fail(String.format("header magic 0x%08x is not 0x%08x", h.getMagic(), CapsuleFormat.HEADER_MAGIC));
            }
            int version = h.getFormatVersion();
            if (Integer.compareUnsigned(version, CapsuleFormat.CURRENT_VERSION) > 0) {
                throw fail("format version " + Integer.toUnsignedString(version)
                        + " is newer than this reader supports (it reads versions "
                        + CapsuleFormat.OLDEST_READABLE_VERSION + " to " + CapsuleFormat.CURRENT_VERSION + ")");
            }
            if (version < CapsuleFormat.OLDEST_READABLE_VERSION) {
                throw fail("format version " + version + " is older than this reader supports (it reads versions "
                        + CapsuleFormat.OLDEST_READABLE_VERSION + " to " + CapsuleFormat.CURRENT_VERSION + ")");
            }
            long unknownFlags = h.getFlags() & ~CapsuleFormat.KNOWN_FLAGS;
            if (unknownFlags != 0) {
                throw fail("header flags 0x" + Long.toHexString(unknownFlags) + " are unknown to this reader");
            }
            long mem = h.getMemorySize();
            if (mem == 0 || mem % CapsuleFormat.PAGE_SIZE != 0) {
                throw fail("memory size " + Long.toUnsignedString(mem) + " is not a positive multiple of "
                        + CapsuleFormat.PAGE_SIZE);
            }
            if (Long.compareUnsigned(mem, limits.maxMemoryBytes()) > 0) {
                throw fail("memory size " + Long.toUnsignedString(mem) + " is over the limit of "
                        + limits.maxMemoryBytes() + " bytes");
            }
            if (h.getVcpuCount() == 0 || Integer.compareUnsigned(h.getVcpuCount(), limits.maxVcpus()) > 0) {
                throw fail("vCPU count " + Integer.toUnsignedString(h.getVcpuCount()) + " is not between 1 and "
                        + limits.maxVcpus());
            }
            if (h.getRequiredCpuidCount() > limits.maxCpuidEntries()) {
                throw fail(h.getRequiredCpuidCount() + " cpuid entries is over the cap of "
                        + limits.maxCpuidEntries());
            }
            if (h.getObservedCpuidCount() > limits.maxCpuidEntries()) {
                throw fail(h.getObservedCpuidCount() + " observed cpuid entries is over the cap of "
                        + limits.maxCpuidEntries());
            }
            if (version >= CapsuleFormat.OBSERVED_CPU_VERSION && h.getObservedCpuidCount() == 0) {
                throw fail("observed_cpuid is missing (format version " + version
                        + " records what the guest could observe of the CPU)");
            }
            if (h.getFpuFormat() != io.vmfork.proto.FpuFormat.FPU_FORMAT_XSAVE
                    && h.getFpuFormat() != io.vmfork.proto.FpuFormat.FPU_FORMAT_FXSAVE) {
                throw fail("FPU format " + h.getFpuFormat() + " is not one this reader knows");
            }
            if (Integer.compareUnsigned(h.getMaxChunkBytes(), limits.maxChunkBytes()) > 0) {
                throw fail("the writer's chunks of up to " + Integer.toUnsignedString(h.getMaxChunkBytes())
                        + " bytes are over this reader's cap of " + limits.maxChunkBytes());
            }
            header = h;
            if (host != null) {
                CapsuleCompatibility.check(h, host);
            }
        }

        private void onState(io.vmfork.proto.MachineState p) {
            if (p.getMemorySize() != header.getMemorySize()) {
                throw fail("state says memory size " + Long.toUnsignedString(p.getMemorySize()) + ", header says "
                        + Long.toUnsignedString(header.getMemorySize()));
            }
            if (p.getVcpusCount() != header.getVcpuCount()) {
                throw fail("state has " + p.getVcpusCount() + " vCPUs, header says "
                        + Integer.toUnsignedString(header.getVcpuCount()));
            }
            if (!p.getCpuidList().equals(header.getRequiredCpuidList())) {
                throw fail("state's cpuid differs from the header's required cpuid");
            }
            Set<Integer> indices = new HashSet<>();
            for (io.vmfork.proto.VcpuState v : p.getVcpusList()) {
                if (v.getFpuFormat() != header.getFpuFormat()) {
                    throw fail("vCPU " + Integer.toUnsignedString(v.getIndex()) + " has FPU format "
                            + v.getFpuFormat() + ", header says " + header.getFpuFormat());
                }
                if (Integer.compareUnsigned(v.getIndex(), header.getVcpuCount()) >= 0 || !indices.add(v.getIndex())) {
                    throw fail("vCPU index " + Integer.toUnsignedString(v.getIndex()) + " is repeated or not below "
                            + "the vCPU count " + header.getVcpuCount());
                }
            }
            try {
                state = StateCodec.decode(p);
            } catch (CapsuleFormatException | IllegalArgumentException e) {
                throw fail(e.getMessage(), e);
            }
        }

        private void onChunk(MemoryChunk c) throws IOException {
            long offset = c.getOffset();
            ByteString data = c.getData();
            int len = data.size();
            String where = "chunk at 0x" + Long.toHexString(offset) + " of " + len + " bytes: ";
            if (offset % CapsuleFormat.PAGE_SIZE != 0 || len % CapsuleFormat.PAGE_SIZE != 0 || len == 0) {
                throw fail(where + "offset and length must be non-zero multiples of " + CapsuleFormat.PAGE_SIZE
                        + " (page aligned)");
            }
            if (len > limits.maxChunkBytes()) {
                throw fail(where + "over the chunk cap of " + limits.maxChunkBytes() + " bytes");
            }
            long mem = header.getMemorySize();
            if (Long.compareUnsigned(len, mem) > 0 || Long.compareUnsigned(offset, mem - len) > 0) {
                throw fail(where + "outside guest memory of " + Long.toUnsignedString(mem) + " bytes");
            }
            if (offset < nextFree) {
                throw fail(where + "overlaps or comes before the previous chunk, which ended at 0x"
                        + Long.toHexString(nextFree));
            }
            if (chunkBuf.length < len) {
                chunkBuf = new byte[limits.maxChunkBytes()];
            }
            data.copyTo(chunkBuf, 0);
            crc.reset();
            crc.update(chunkBuf, 0, len);
            if ((int) crc.getValue() != c.getCrc32C()) {
                throw fail(where + String.format("CRC-32C 0x%08x does not match the recorded 0x%08x",
                        (int) crc.getValue(), c.getCrc32C()));
            }
            sink.write(offset, chunkBuf, 0, len);
            nextFree = offset + len;
            chunks++;
            dataBytes += len;
        }

        private void onTrailer(CapsuleFrame frame) {
            CapsuleTrailer t = frame.getTrailer();
            // The trailer is the one frame its digest does not cover, so it must hold exactly
            // what this version writes: a damaged tag must not turn a field into an unknown one.
            if (!frame.getUnknownFields().asMap().isEmpty() || !t.getUnknownFields().asMap().isEmpty()) {
                throw fail("trailer has fields this format version does not define");
            }
            if (t.getChunkCount() != chunks) {
                throw fail("trailer says " + Long.toUnsignedString(t.getChunkCount()) + " chunks, the capsule had "
                        + chunks);
            }
            if (t.getDataBytes() != dataBytes) {
                throw fail("trailer says " + Long.toUnsignedString(t.getDataBytes()) + " data bytes, the chunks held "
                        + dataBytes);
            }
            byte[] digest = sha.digest();
            if (t.getSha256().size() != CapsuleFormat.DIGEST_BYTES
                    || !MessageDigest.isEqual(digest, t.getSha256().toByteArray())) {
                throw fail("SHA-256 of the capsule is " + hex(digest) + ", the trailer records "
                        + hex(t.getSha256().toByteArray()) + ": the capsule was altered");
            }
        }

        private CapsuleFormatException fail(String what) {
            return CapsuleFormatException.inFrame(frameIndex, frameKind, frameStart, what);
        }

        private CapsuleFormatException fail(String what, Throwable cause) {
            CapsuleFormatException e = fail(what);
            e.initCause(cause);
            return e;
        }

    }

    private static String describe(CapsuleFrame.KindCase kind) {
        return kind == CapsuleFrame.KindCase.KIND_NOT_SET ? "unknown kind" : kind.toString().toLowerCase(Locale.ROOT);
    }

    private static String hex(byte[] b) {
        StringBuilder s = new StringBuilder(b.length * 2);
        for (byte x : b) {
            s.append(String.format("%02x", x));
        }
        return s.toString();
    }
}
