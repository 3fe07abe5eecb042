package io.vmfork.vmm.capsule;

import com.google.protobuf.ByteString;
import com.google.protobuf.CodedInputStream;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.UnsafeByteOperations;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.CapsuleHeader;
import io.vmfork.proto.CapsuleTrailer;
import io.vmfork.proto.ChunkCodec;
import io.vmfork.proto.MemoryChunk;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.MemorySource;
import io.vmfork.vmm.x86.GuestLayout;
import io.vmfork.vmm.x86.GuestModel;
import java.io.BufferedInputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.InterruptedIOException;
import java.util.ArrayList;
import java.util.List;
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
 * <p>Nothing in the stream is trusted: every frame's length is checked against the cap of
 * the frame kind expected next (header, state, chunk) before it is read, its buffer grows
 * only as its bytes arrive, the repeated fields of the header and the state are counted
 * against their caps before protobuf parses them (so that a frame of millions of empty
 * entries costs a scan, not the heap), the whole stream is bounded by what a capsule of
 * its memory size can hold, and the whole read by {@link CapsuleLimits#readDeadline}
 * (an {@link InterruptedIOException} once passed). Every length is checked before
 * anything is allocated for it, every chunk against the header's memory size and the
 * chunk before it, every chunk's CRC-32C before it reaches the sink, and the trailer's
 * counts and SHA-256 before {@link #read} returns. Any failure is a
 * {@link CapsuleFormatException} naming the frame and byte offset, or a
 * {@link CapsuleIncompatibleException} from the host check that runs right after the
 * header; I/O errors of the stream or the sink pass through as IOException.
 *
 * <p>Read for a restore ({@link #read(InputStream, MemorySink, HostPlatform, GuestModel.Rules)}),
 * the state must also be one a vmfork guest can have on this host ({@link GuestModel#check}):
 * anything else is refused, right after the header or the state frame, before a VM
 * exists, with a {@link CapsuleFormatException} (not a vmfork guest's state) or a
 * {@link CapsuleIncompatibleException} (over this host's limits) naming the field. And
 * memory below {@link GuestLayout#IMAGE_MIN} is the VMM's: the capsule's pages there never
 * reach the sink; its boot info page is checked field by field, and the reader writes the
 * page tables and boot info a boot of that guest has.
 *
 * <p>The sink receives pages while the capsule streams, so after a failure it may hold
 * some of them: the caller must discard it and run nothing on it. Only a normal return
 * means the whole capsule arrived unaltered.
 *
 * <p>A delta capsule (header flag DELTA) is read only with a {@link BaseResolver}, which
 * names the image it is over; it is refused right after the header otherwise, or with
 * {@link CapsuleBaseUnknownException} when the resolver holds no such image.
 * {@link #readImage} does it all and returns the finished image for both kinds.
 *
 * <p>A reader made with {@link #requireSignedBy} also refuses, after the digest and before
 * {@link #read} returns, a capsule not signed by one of its trusted keys
 * ({@link CapsuleSignatureException}); any reader checks that a signature frame is well formed.
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
    /** First size of a header or state frame's buffer; it doubles as bytes arrive. */
    private static final int INITIAL_FRAME_BUFFER = 64 << 10;

    /** Where the reader is in the frame sequence; the order is fixed. */
    private enum Expect { MAGIC, HEADER, STATE, MEMORY, SIGNATURE, END }

    private final CapsuleLimits limits;
    /** Whose signature a capsule must carry; empty: none required. */
    private final TrustedSigners signers;

    /**
     * What a capsule must be, when its reader knows (a remote clone's target: what the offer
     * was admitted for): guest RAM, vCPUs and the VM type in the state's identity. Checked
     * as soon as each is read; a difference is a {@link CapsuleNotAdmittedException}.
     */
    public record Expected(long memorySize, int vcpuCount, int vmType) {
    }

    private CapsuleReader(CapsuleLimits limits, TrustedSigners signers) {
        this.limits = limits;
        this.signers = signers;
    }

    /** A reader that refuses capsules beyond {@code limits}. */
    public static CapsuleReader create(CapsuleLimits limits) {
        return new CapsuleReader(limits, TrustedSigners.none());
    }

    /**
     * This reader, taking only capsules signed by one of {@code signers} (none if it is
     * empty): after the digest is verified and before a read returns, a capsule without a
     * signature, signed by another key, or whose signature does not verify is refused with
     * a {@link CapsuleSignatureException}.
     */
    public CapsuleReader requireSignedBy(TrustedSigners signers) {
        if (signers == null) {
            throw new IllegalArgumentException("signers is null (TrustedSigners.none() requires none)");
        }
        return new CapsuleReader(limits, signers);
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
        return read(in, sink, host, null);
    }

    /**
     * Reads a capsule to restore on {@code host}: as {@link #read(InputStream, MemorySink, HostPlatform)},
     * and with non-null {@code guest} rules also refuses a state outside the guest model or
     * this host's rules, and puts the VMM's own page tables and boot info below
     * {@link GuestLayout#IMAGE_MIN} instead of the capsule's bytes (see the class comment).
     */
    public CapsuleContents read(InputStream in, MemorySink sink, HostPlatform host, GuestModel.Rules guest)
            throws IOException {
        return read(in, sink, host, guest, null);
    }

    /**
     * Reads a full or a delta capsule: as {@link #read(InputStream, MemorySink, HostPlatform, GuestModel.Rules)},
     * and a delta's base is looked up with {@code bases} right after the header (and the
     * host and guest checks), before anything else is read. For a delta the sink receives
     * only the changed pages (zero runs not at all: the sink starts zeroed), and
     * {@link CapsuleContents#delta()} says which runs they were and holds the base, with
     * the reference the resolver gave, for the caller to release. With {@code bases} null
     * a delta is refused.
     */
    public CapsuleContents read(InputStream in, MemorySink sink, HostPlatform host, GuestModel.Rules guest,
            BaseResolver bases) throws IOException {
        return read(in, sink, host, guest, bases, null);
    }

    /**
     * As {@link #read(InputStream, MemorySink, HostPlatform, GuestModel.Rules, BaseResolver)},
     * and with non-null {@code expected} refuses a capsule that is not that VM
     * ({@link CapsuleNotAdmittedException}): its header's memory size and vCPU count right
     * after the header, before anything else is checked or read; its state's VM type right
     * after the state frame is decoded, before the guest model looks at it or any memory is read.
     */
    public CapsuleContents read(InputStream in, MemorySink sink, HostPlatform host, GuestModel.Rules guest,
            BaseResolver bases, Expected expected) throws IOException {
        if (guest != null && host == null) {
            throw new IllegalArgumentException("guest rules need the host they are for");
        }
        Pass pass = new Pass(new BufferedInputStream(in, STREAM_BUFFER_BYTES), sink, host, guest, bases, expected);
        try {
            return pass.run();
        } catch (IOException | RuntimeException | Error e) {
            pass.releaseBase();
            throw e;
        }
    }

    /**
     * Reads a full or delta capsule into a new image named {@code name}: for a full one,
     * the pages it carries ({@link ImageSink#toImage}); for a delta, a layer of the changed
     * pages over its base ({@link ImageSink#toOverlay}), which shares every other layer of
     * the base. The caller owns the result's image reference. On any failure nothing is
     * left: no file, no reference to the base.
     *
     * @param host  non-null to check compatibility right after the header
     * @param guest non-null to read for a restore on {@code host} (the guest model and the VMM's own area)
     * @param bases non-null to accept delta capsules
     */
    public ReceivedCapsule readImage(InputStream in, String name, HostPlatform host, GuestModel.Rules guest,
            BaseResolver bases) throws IOException {
        return readImage(in, name, host, guest, bases, Integer.MAX_VALUE);
    }

    /**
     * As {@link #readImage(InputStream, String, HostPlatform, GuestModel.Rules, BaseResolver)},
     * and a delta's image with more than {@code maxExtents} overlay extents (e.g.
     * vmfork.vmm.fork.max-image-extents) is compacted ({@link RuntimeImage#compact}): its
     * overlay pages copied into one layer, so that a chain of deltas does not hold a memfd
     * per delta and VMs of it need few mappings. Only overlay pages are copied, never the base.
     */
    public ReceivedCapsule readImage(InputStream in, String name, HostPlatform host, GuestModel.Rules guest,
            BaseResolver bases, int maxExtents) throws IOException {
        return readImage(in, name, host, guest, bases, maxExtents, null);
    }

    /**
     * As {@link #readImage(InputStream, String, HostPlatform, GuestModel.Rules, BaseResolver, int)},
     * refusing a capsule that is not {@code expected} (see
     * {@link #read(InputStream, MemorySink, HostPlatform, GuestModel.Rules, BaseResolver, Expected)});
     * the image sink and its file are gone when it throws.
     */
    public ReceivedCapsule readImage(InputStream in, String name, HostPlatform host, GuestModel.Rules guest,
            BaseResolver bases, int maxExtents, Expected expected) throws IOException {
        try (ImageSink sink = ImageSink.create(name, limits.maxMemoryBytes(), limits.maxChunkBytes())) {
            CapsuleContents c = read(in, sink, host, guest, bases, expected);
            if (c.delta() == null) {
                return new ReceivedCapsule(c, sink.toImage(c.state().memorySize()));
            }
            RuntimeImage image;
            try {
                image = sink.toOverlay(c.delta().base(), c.delta().runs());
            } finally {
                c.delta().base().release();
            }
            if (image.extentCount() > maxExtents) {
                try {
                    RuntimeImage compact = image.compact(name + "-compact");
                    image.release();
                    image = compact;
                } catch (RuntimeException e) {
                    image.release();
                    throw e;
                }
            }
            return new ReceivedCapsule(c, image);
        }
    }

    /** One read of one capsule. */
    private final class Pass {
        private final InputStream in;
        private final MemorySink sink;
        private final HostPlatform host;
        private final GuestModel.Rules guest;
        private final BaseResolver bases;
        private final Expected expected;
        /** A delta's base once resolved, with the resolver's reference; null once handed over. */
        private RuntimeImage base;
        private byte[] baseKey;
        /** A delta's runs so far, touching ones merged. */
        private final List<MemorySource.Run> runs = new ArrayList<>();
        private byte[] packedBuf = new byte[0];
        /** System.nanoTime() by which the read must be done; Long.MAX_VALUE for none. */
        private final long deadline;
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
        private long compressedChunks;
        /** Lowest offset the next chunk may start at. */
        private long nextFree;
        /** Most bytes the whole stream may have, known once the state is read. */
        private long streamCap = Long.MAX_VALUE;
        /** The capsule's boot info page, kept aside when reading for a restore. */
        private byte[] bootInfoPage;
        /** The header frame as read (without its length prefix): part of what a signature is over. */
        private byte[] headerFrame;
        /** The verified digest, once the trailer is read. */
        private byte[] digest;
        /** The signature frame of a signed capsule, once read. */
        private io.vmfork.proto.CapsuleSignature signature;

        Pass(InputStream in, MemorySink sink, HostPlatform host, GuestModel.Rules guest, BaseResolver bases,
                Expected expected) {
            this.expected = expected;
            this.in = in;
            this.sink = sink;
            this.host = host;
            this.guest = guest;
            this.bases = bases;
            long d = limits.readDeadline().toNanos();
            this.deadline = d == 0 ? Long.MAX_VALUE : System.nanoTime() + d;
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
                checkFrameLength(length);
                // Header and state are returned to the caller, so they get a buffer of their own;
                // parsed with aliasing, their bytes would otherwise change under the caller.
                byte[] buf = readFrame(length, expect == Expect.MEMORY);
                if (expect == Expect.HEADER || expect == Expect.STATE) {
                    FrameCounts.check(buf, length, expect == Expect.HEADER, limits, header, this::fail);
                }
                if (expect == Expect.HEADER) {
                    headerFrame = Arrays.copyOf(buf, length);
                }
                CapsuleFrame frame = parse(buf, length, expect == Expect.MEMORY);
                frameKind = describe(frame.getKindCase());
                if (expect != Expect.SIGNATURE && frame.getKindCase() != CapsuleFrame.KindCase.TRAILER) {
                    sha.update(prefix, 0, prefixLen);
                    sha.update(buf, 0, length);
                }
                onFrame(frame);
                frameIndex++;
            }
            if (in.read() != -1) {
                throw CapsuleFormatException.atByte(position, signature == null ? "trailing bytes after the trailer"
                        : "trailing bytes after the signature");
            }
            if (!signers.isEmpty()) {
                // After the digest and before anything is returned: no VM is made from an unsigned capsule.
                signers.check(signature, digest, headerFrame, header.getSourceHostName() + " (id "
                        + Long.toUnsignedString(header.getSourceHostId()) + ")");
            }
            CapsuleStats stats = new CapsuleStats(position, dataBytes, chunks, 0, compressedChunks);
            if (base != null) {
                // The base already has the VMM's area of this guest; the delta's bytes there were dropped.
                CapsuleContents.Delta d = new CapsuleContents.Delta(baseKey, base, runs);
                base = null;
                return new CapsuleContents(header, state, stats, d);
            }
            if (guest != null) {
                writeVmmArea();
            }
            return new CapsuleContents(header, state, stats);
        }

        void releaseBase() {
            if (base != null) {
                base.release();
                base = null;
            }
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
                checkDeadline();
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

        /** Refuses a frame longer than the kind expected next can legitimately be, before reading it. */
        private void checkFrameLength(int length) {
            long cap = switch (expect) {
                case HEADER -> limits.maxHeaderFrameBytes();
                case STATE -> limits.maxStateFrameBytes(header.getVcpuCount());
                case SIGNATURE -> CapsuleLimits.SIGNATURE_FRAME_MAX;
                default -> limits.maxChunkFrameBytes();
            };
            if (length > cap) {
                throw fail("frame length " + length + " is over the cap of " + cap + " bytes for a " + frameKind
                        + " frame");
            }
            if (position + length > streamCap) {
                throw fail("the capsule is longer than one of " + Long.toUnsignedString(header.getMemorySize())
                        + " bytes of RAM can be (" + streamCap + " bytes)");
            }
        }

        /**
         * Reads a frame of {@code length} bytes into a buffer that grows as its bytes
         * arrive (a length prefix alone allocates nothing); memory frames reuse one buffer.
         */
        private byte[] readFrame(int length, boolean reuse) throws IOException {
            byte[] buf = reuse ? memoryFrameBuf : new byte[Math.min(length, INITIAL_FRAME_BUFFER)];
            int have = 0;
            while (have < length) {
                if (buf.length == have) {
                    buf = Arrays.copyOf(buf, (int) Math.min(length, Math.max(INITIAL_FRAME_BUFFER, 2L * have)));
                }
                int n = in.read(buf, have, Math.min(buf.length, length) - have);
                checkDeadline();
                if (n < 0) {
                    throw fail("truncated: the stream ends " + have + " bytes into a frame of " + length + " bytes");
                }
                have += n;
                position += n;
            }
            if (reuse) {
                memoryFrameBuf = buf;
            }
            return buf;
        }

        private void checkDeadline() throws InterruptedIOException {
            if (System.nanoTime() - deadline > 0) {
                throw new InterruptedIOException("capsule read deadline of " + limits.readDeadline()
                        + " (vmfork.capsule.read-deadline) passed at byte " + position + " of the stream");
            }
        }

        private CapsuleFrame parse(byte[] buf, int length, boolean memory) {
            try {
                // Wrapped as immutable so that aliasing takes effect: chunk data is then a view of
                // the frame buffer, not a copy (the buffer outlives the frame's use of it).
                CodedInputStream cis = UnsafeByteOperations.unsafeWrap(buf, 0, length).newCodedInput();
                cis.enableAliasing(memory);
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
                        expect = (header.getFlags() & CapsuleFormat.FLAG_SIGNED) != 0 ? Expect.SIGNATURE
                                : Expect.END;
                    }
                }
                case SIGNATURE -> {
                    expectKind(kind, CapsuleFrame.KindCase.SIGNATURE, "the signature (the header has flag SIGNED)");
                    onSignature(frame);
                    expect = Expect.END;
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
            if (expected != null && (h.getMemorySize() != expected.memorySize()
                    || h.getVcpuCount() != expected.vcpuCount())) {
                throw new CapsuleNotAdmittedException("the capsule is not the VM that was admitted: it has "
                        + Long.toUnsignedString(h.getMemorySize()) + " bytes of memory and "
                        + Integer.toUnsignedString(h.getVcpuCount()) + " vCPUs, the offer was admitted for "
                        + expected.memorySize() + " bytes and " + expected.vcpuCount() + " vCPUs");
            }
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
            long unknownFlags = h.getFlags() & ~CapsuleFormat.knownFlags(version);
            if (unknownFlags != 0) {
                throw fail("header flags 0x" + Long.toHexString(unknownFlags) + " are unknown to this reader"
                        + " in format version " + version);
            }
            boolean delta = (h.getFlags() & CapsuleFormat.FLAG_DELTA) != 0;
            int keyBytes = h.getBaseImage().size();
            if (delta && (keyBytes == 0 || keyBytes > CapsuleFormat.MAX_BASE_KEY_BYTES)) {
                throw fail("a delta capsule's base_image is 1 to " + CapsuleFormat.MAX_BASE_KEY_BYTES
                        + " bytes, not " + keyBytes);
            }
            if (!delta && keyBytes != 0) {
                throw fail("base_image is set in a capsule without the DELTA flag");
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
            if (guest != null) {
                refuse(GuestModel.checkMemorySize(mem, guest), "header.");
                if (h.getVcpuCount() > guest.maxVcpus()) {
                    refuse(List.of(new GuestModel.Violation("header.vcpu_count", "= " + h.getVcpuCount()
                            + " is over this host's maximum of " + guest.maxVcpus() + " (vmfork.vmm.max-vcpus)", true)),
                            "");
                }
            }
            if (delta) {
                resolveBase(h);
            }
        }

        /** Finds a delta's base image, before anything past the header is read. */
        private void resolveBase(CapsuleHeader h) {
            byte[] key = h.getBaseImage().toByteArray();
            if (bases == null) {
                throw fail("a delta capsule over base image " + hex(key) + ", and this read takes full capsules only");
            }
            RuntimeImage b = bases.resolve(key.clone());
            if (b == null) {
                throw new CapsuleBaseUnknownException(key, "capsule from " + h.getSourceHostName() + " (id "
                        + h.getSourceHostId() + ") is a delta over base image " + hex(key)
                        + ", which this host does not hold: send a full capsule");
            }
            base = b;
            baseKey = key;
            if (b.size() != h.getMemorySize()) {
                throw fail("the delta's memory size " + Long.toUnsignedString(h.getMemorySize()) + " differs from its"
                        + " base image's " + b.size());
            }
        }

        /** Throws for {@code violations}: a format error if any is one, else incompatibility. */
        private void refuse(List<GuestModel.Violation> violations, String prefix) {
            if (violations.isEmpty()) {
                return;
            }
            List<String> model = new ArrayList<>();
            List<String> hostLimits = new ArrayList<>();
            for (GuestModel.Violation v : violations) {
                (v.hostLimit() ? hostLimits : model).add(prefix + v);
            }
            if (!model.isEmpty()) {
                throw fail("not a state a vmfork guest can have: " + String.join("; ", model));
            }
            throw new CapsuleIncompatibleException(
                    header.getSourceHostName() + " (id " + header.getSourceHostId() + ")",
                    host.hostName() + " (id " + host.hostId() + ")", hostLimits);
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
            boolean notStarted = false;
            boolean neutral = header.getFormatVersion() >= CapsuleFormat.NEUTRAL_CPU_VERSION;
            for (io.vmfork.proto.VcpuState v : p.getVcpusList()) {
                notStarted |= v.getNotStarted();
                io.vmfork.proto.FpuFormat fpu = neutral ? v.getCpu().getFpuFormat() : v.getFpuFormat();
                if (fpu != header.getFpuFormat()) {
                    throw fail("vCPU " + Integer.toUnsignedString(v.getIndex()) + " has FPU format "
                            + fpu + ", header says " + header.getFpuFormat());
                }
                if (Integer.compareUnsigned(v.getIndex(), header.getVcpuCount()) >= 0 || !indices.add(v.getIndex())) {
                    throw fail("vCPU index " + Integer.toUnsignedString(v.getIndex()) + " is repeated or not below "
                            + "the vCPU count " + header.getVcpuCount());
                }
            }
            if (notStarted != ((header.getFlags() & CapsuleFormat.FLAG_NOT_STARTED) != 0)) {
                throw fail(notStarted ? "a vCPU is not started but the header lacks the NOT_STARTED flag"
                        : "the header has the NOT_STARTED flag but every vCPU is started");
            }
            try {
                state = StateCodec.decode(p, header.getFormatVersion());
            } catch (CapsuleFormatException | IllegalArgumentException e) {
                throw fail(e.getMessage(), e);
            }
            if (expected != null && state.identity().vmType() != expected.vmType()) {
                throw new CapsuleNotAdmittedException("the capsule is not the VM that was admitted: its VM type is "
                        + state.identity().vmType() + ", the offer was admitted for VM type " + expected.vmType());
            }
            if (guest != null) {
                refuse(GuestModel.check(state, guest), "state.");
            }
            // Chunks hold at most the RAM, each in a frame of bounded overhead, and a trailer follows.
            long mem = header.getMemorySize();
            streamCap = position + mem + (mem / CapsuleFormat.PAGE_SIZE)
                    * (CapsuleLimits.CHUNK_FRAME_OVERHEAD + MAX_LENGTH_PREFIX_BYTES)
                    + CapsuleLimits.TRAILER_FRAME_MAX + MAX_LENGTH_PREFIX_BYTES
                    + CapsuleLimits.SIGNATURE_FRAME_MAX + MAX_LENGTH_PREFIX_BYTES;
        }

        private void onChunk(MemoryChunk c) throws IOException {
            long offset = c.getOffset();
            ByteString data = c.getData();
            boolean v3 = header.getFormatVersion() >= CapsuleFormat.DELTA_VERSION;
            long zeros = c.getZeroBytes();
            if (zeros != 0) {
                onZeroRun(c, offset, zeros);
                return;
            }
            int len;
            boolean lz4;
            if (c.getCodecValue() == ChunkCodec.CHUNK_CODEC_NONE_VALUE) {
                lz4 = false;
                len = data.size();
                if (c.getUncompressedLength() != 0) {
                    throw fail("chunk at 0x" + Long.toHexString(offset) + ": uncompressed_length "
                            + Integer.toUnsignedString(c.getUncompressedLength()) + " set on an uncompressed chunk");
                }
            } else if (c.getCodecValue() == ChunkCodec.CHUNK_CODEC_LZ4_VALUE && v3) {
                lz4 = true;
                len = c.getUncompressedLength();
            } else {
                throw fail("chunk at 0x" + Long.toHexString(offset) + ": codec " + c.getCodecValue()
                        + " is not one format version " + header.getFormatVersion() + " defines");
            }
            String where = "chunk at 0x" + Long.toHexString(offset) + " of " + Integer.toUnsignedString(len)
                    + " bytes" + (lz4 ? " (LZ4, " + data.size() + " bytes compressed)" : "") + ": ";
            if (offset % CapsuleFormat.PAGE_SIZE != 0 || len % CapsuleFormat.PAGE_SIZE != 0 || len == 0) {
                throw fail(where + "offset and length must be non-zero multiples of " + CapsuleFormat.PAGE_SIZE
                        + " (page aligned)");
            }
            // Before anything is decompressed: no chunk may claim more than the cap (no decompression bomb).
            if (Integer.compareUnsigned(len, limits.maxChunkBytes()) > 0) {
                throw fail(where + "over the chunk cap of " + limits.maxChunkBytes() + " bytes");
            }
            if (lz4 && (data.isEmpty() || data.size() >= len)) {
                throw fail(where + "a compressed chunk must be smaller than its pages, and not empty");
            }
            long mem = header.getMemorySize();
            if (Long.compareUnsigned(len, mem) > 0 || Long.compareUnsigned(offset, mem - len) > 0) {
                throw fail(where + "outside guest memory of " + Long.toUnsignedString(mem) + " bytes");
            }
            if (offset < nextFree) {
                throw fail(where + "overlaps or comes before the previous chunk, which ended at 0x"
                        + Long.toHexString(nextFree));
            }
            if (c.getSerializedSize() > data.size() + CapsuleLimits.CHUNK_FRAME_OVERHEAD) {
                throw fail(where + "the frame carries " + (c.getSerializedSize() - data.size())
                        + " bytes besides its data, over the " + CapsuleLimits.CHUNK_FRAME_OVERHEAD + " a chunk needs");
            }
            if (chunkBuf.length < len) {
                chunkBuf = new byte[limits.maxChunkBytes()];
            }
            if (lz4) {
                if (packedBuf.length < data.size()) {
                    packedBuf = new byte[limits.maxChunkBytes()];
                }
                data.copyTo(packedBuf, 0);
                int n = Lz4.decompress(packedBuf, 0, data.size(), chunkBuf, len);
                if (n != len) {
                    throw fail(where + "the LZ4 block " + (n < 0 ? "is malformed or decompresses to more than "
                            + len + " bytes" : "decompresses to " + n + " bytes, not " + len));
                }
                compressedChunks++;
            } else {
                data.copyTo(chunkBuf, 0);
            }
            crc.reset();
            crc.update(chunkBuf, 0, len);
            if ((int) crc.getValue() != c.getCrc32C()) {
                throw fail(where + String.format("CRC-32C 0x%08x does not match the recorded 0x%08x",
                        (int) crc.getValue(), c.getCrc32C()));
            }
            if (guest == null) {
                sink.write(offset, chunkBuf, 0, len);
            } else if (base != null) {
                writeDeltaGuestPart(offset, len);
            } else {
                writeGuestPart(offset, len);
            }
            addRun(offset, len);
            nextFree = offset + len;
            chunks++;
            dataBytes += len;
        }

        /** A delta's run of zero pages: nothing to write (the sink starts zeroed), but the run replaces the base's. */
        private void onZeroRun(MemoryChunk c, long offset, long zeros) {
            String where = "zero run at 0x" + Long.toHexString(offset) + " of " + Long.toUnsignedString(zeros)
                    + " bytes: ";
            if (base == null) {
                throw fail(where + "zero runs are only in delta capsules");
            }
            if (!c.getData().isEmpty() || c.getCodecValue() != 0 || c.getUncompressedLength() != 0
                    || c.getCrc32C() != 0) {
                throw fail(where + "a zero run has no data, codec, uncompressed length or CRC");
            }
            if (offset % CapsuleFormat.PAGE_SIZE != 0 || zeros % CapsuleFormat.PAGE_SIZE != 0) {
                throw fail(where + "offset and length must be multiples of " + CapsuleFormat.PAGE_SIZE);
            }
            long mem = header.getMemorySize();
            if (Long.compareUnsigned(zeros, mem) > 0 || Long.compareUnsigned(offset, mem - zeros) > 0) {
                throw fail(where + "outside guest memory of " + Long.toUnsignedString(mem) + " bytes");
            }
            if (offset < nextFree) {
                throw fail(where + "overlaps or comes before the previous chunk, which ended at 0x"
                        + Long.toHexString(nextFree));
            }
            if (c.getSerializedSize() > CapsuleLimits.CHUNK_FRAME_OVERHEAD) {
                throw fail(where + "the frame carries " + c.getSerializedSize() + " bytes, over the "
                        + CapsuleLimits.CHUNK_FRAME_OVERHEAD + " a zero run needs");
            }
            addRun(offset, zeros);
            nextFree = offset + zeros;
            chunks++;
        }

        /** Records a delta's covered range, merged with a touching one; the VMM's area is the base's. */
        private void addRun(long offset, long len) {
            if (base == null) {
                return;
            }
            long end = offset + len;
            if (guest != null) {
                offset = Math.max(offset, GuestLayout.IMAGE_MIN);
                if (offset >= end) {
                    return;
                }
            }
            MemorySource.Run last = runs.isEmpty() ? null : runs.get(runs.size() - 1);
            if (last != null && last.offset() + last.length() == offset) {
                runs.set(runs.size() - 1, new MemorySource.Run(last.offset(), end - last.offset()));
                return;
            }
            if (runs.size() == CapsuleLimits.MAX_DELTA_RUNS) {
                throw fail("the delta has more than " + CapsuleLimits.MAX_DELTA_RUNS + " runs of changed pages");
            }
            runs.add(new MemorySource.Run(offset, end - offset));
        }

        /** A delta read for a restore: only the part at or above {@link GuestLayout#IMAGE_MIN} reaches the sink. */
        private void writeDeltaGuestPart(long offset, int len) throws IOException {
            long end = offset + len;
            if (end > GuestLayout.IMAGE_MIN) {
                long from = Math.max(offset, GuestLayout.IMAGE_MIN);
                sink.write(from, chunkBuf, (int) (from - offset), (int) (end - from));
            }
        }

        /**
         * The part of a chunk at or above {@link GuestLayout#IMAGE_MIN} goes to the sink; below
         * it, only the boot info page is kept (to check), the rest is dropped: it is the VMM's.
         */
        private void writeGuestPart(long offset, int len) throws IOException {
            long bootInfo = GuestLayout.BOOT_INFO;
            if (offset <= bootInfo && bootInfo < offset + len) {
                int at = (int) (bootInfo - offset);
                bootInfoPage = Arrays.copyOfRange(chunkBuf, at, at + CapsuleFormat.PAGE_SIZE);
            }
            long end = offset + len;
            if (end > GuestLayout.IMAGE_MIN) {
                long from = Math.max(offset, GuestLayout.IMAGE_MIN);
                sink.write(from, chunkBuf, (int) (from - offset), (int) (end - from));
            }
        }

        /** Checks the capsule's boot info, then writes the page tables and boot info a boot of this guest has. */
        private void writeVmmArea() throws IOException {
            long mem = header.getMemorySize();
            List<GuestModel.Violation> v = new ArrayList<>();
            GuestModel.BootInfo info = GuestModel.checkBootInfo(bootInfoPage, mem, header.getVcpuCount(), v);
            frameIndex--; // the trailer's, where the whole capsule was known
            frameKind = "trailer";
            refuse(v, "");
            writeInPieces(0, GuestModel.pageTableArea(mem));
            writeInPieces(GuestLayout.BOOT_INFO, GuestModel.bootInfoPage(info));
        }

        private void writeInPieces(long offset, byte[] data) throws IOException {
            for (int off = 0; off < data.length; off += limits.maxChunkBytes()) {
                sink.write(offset + off, data, off, Math.min(limits.maxChunkBytes(), data.length - off));
            }
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
            this.digest = digest;
        }

        /**
         * The signature frame: well formed only. Whether its key is trusted and it verifies is
         * decided once the stream has ended, and only by a reader that requires a signer.
         */
        private void onSignature(CapsuleFrame frame) {
            io.vmfork.proto.CapsuleSignature s = frame.getSignature();
            // Not covered by the digest, like the trailer: no field may hide in an unknown one.
            if (!frame.getUnknownFields().asMap().isEmpty() || !s.getUnknownFields().asMap().isEmpty()) {
                throw fail("signature has fields this format version does not define");
            }
            if (s.getAlgorithm() != io.vmfork.proto.SignatureAlgorithm.SIGNATURE_ALGORITHM_ED25519) {
                throw fail("signature algorithm " + s.getAlgorithmValue() + " is not one this reader knows (Ed25519)");
            }
            if (s.getPublicKey().isEmpty() || s.getPublicKey().size() > CapsuleKeys.MAX_PUBLIC_KEY_BYTES) {
                throw fail("the signer's public key is 1 to " + CapsuleKeys.MAX_PUBLIC_KEY_BYTES + " bytes, not "
                        + s.getPublicKey().size());
            }
            if (s.getSignature().size() != CapsuleKeys.SIGNATURE_BYTES) {
                throw fail("an Ed25519 signature is " + CapsuleKeys.SIGNATURE_BYTES + " bytes, not "
                        + s.getSignature().size());
            }
            signature = s;
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
