package io.vmfork.vmm.capsule;

import com.typesafe.config.Config;
import java.time.Duration;
import java.util.List;

/**
 * The {@code vmfork.capsule} configuration: caps against hostile or damaged capsules, the
 * writer's chunk size and compression, and CPU features this host hides from capsules. A
 * reader refuses any capsule that exceeds one of the caps before it allocates or writes
 * anything for it.
 *
 * @param maxMemoryBytes  largest guest RAM a capsule may declare (this host's vmfork.vmm.memory.max)
 * @param maxChunkBytes   largest memory chunk: what the writer emits and the reader accepts
 * @param maxFrameBytes   largest frame of any kind (the state frame can carry queued requests)
 * @param maxCpuidEntries most CPUID entries a header or state may carry
 * @param maxVcpus        most vCPUs a capsule may declare before the host's own limit is asked
 * @param maxXsaveBytes   largest FPU/XSAVE area of one vCPU (bounds the state frame)
 * @param maxQueuedRequests most queued message-channel requests a state may carry
 * @param maxMessageBytes largest queued request
 * @param readDeadline    longest a reader may take over one capsule, checked whenever bytes arrive
 *                        (a silent source is the transport's to time out); zero for none
 * @param compression     whether the writer compresses chunks
 * @param hiddenCpuFeatures CPU features (named as {@link CpuFeatures} names them) that this host's
 *                        {@link HostPlatform} reports absent, so that capsules using them are refused
 */
public record CapsuleLimits(long maxMemoryBytes, int maxChunkBytes, int maxFrameBytes, int maxCpuidEntries,
        int maxVcpus, int maxXsaveBytes, int maxQueuedRequests, int maxMessageBytes, Duration readDeadline,
        ChunkCompression compression, List<String> hiddenCpuFeatures) {
    /** 1 MiB: large enough that framing costs nothing, small enough to bound both sides' memory. */
    public static final int DEFAULT_MAX_CHUNK_BYTES = 1 << 20;
    /** 16 MiB: a chunk frame is a little over 1 MiB; only a state with many queued requests is bigger. */
    public static final int DEFAULT_MAX_FRAME_BYTES = 16 << 20;
    /** KVM_MAX_CPUID_ENTRIES (arch/x86/include/asm/kvm_host.h). */
    public static final int DEFAULT_MAX_CPUID_ENTRIES = 256;
    /** KVM_MAX_VCPUS of x86 kernels (arch/x86/include/asm/kvm_host.h); more is not a real VM. */
    public static final int DEFAULT_MAX_VCPUS = 1024;
    /**
     * 64 KiB: the largest XSAVE area of x86 CPUs so far (with AMX tile data) is about
     * 11 KiB; KVM_GET_XSAVE2 returns what the host's XCR0 needs.
     */
    public static final int DEFAULT_MAX_XSAVE_BYTES = 64 << 10;
    /** As vmfork.vmm.channel.max-queued and max-message by default. */
    public static final int DEFAULT_MAX_QUEUED_REQUESTS = 4096;
    public static final int DEFAULT_MAX_MESSAGE_BYTES = 1 << 20;
    /** 10 minutes: a 16 GiB capsule at under 30 MB/s. */
    public static final Duration DEFAULT_READ_DEADLINE = Duration.ofMinutes(10);
    /** The writer's compression unless configured (docs/capsule.md has the measurements). */
    public static final ChunkCompression DEFAULT_COMPRESSION = ChunkCompression.NONE;
    /**
     * Most runs (ranges of contiguous changed pages) a delta capsule may carry: each becomes
     * an extent of the received image, i.e. a mapping in every VM made from it. A writer
     * sends a full capsule instead.
     */
    public static final int MAX_DELTA_RUNS = 1 << 16;
    /** Room a chunk frame needs beyond its data: tags, lengths, offset and crc. */
    static final int CHUNK_FRAME_OVERHEAD = 64;
    /** Room the header needs beyond its CPUID entries: fixed fields, the two strings and a delta's base key. */
    static final int HEADER_FRAME_OVERHEAD = 4096;
    /** Most bytes one encoded CPUID entry takes: 7 varints of up to 5 bytes with tags, and its envelope. */
    static final int CPUID_ENTRY_MAX_BYTES = 64;
    /** Most bytes a vCPU state takes besides its FPU area: registers, segments, MSRs, events. */
    static final int VCPU_STATE_OVERHEAD = 4096;
    /** Most bytes of a state besides its vCPUs, CPUID and queued requests: identity, clock, flags. */
    static final int STATE_FRAME_OVERHEAD = 1024;
    /** Most bytes a queued request takes beyond its payload: tag and length. */
    static final int QUEUED_REQUEST_OVERHEAD = 8;
    /** Most bytes of the trailer frame: two counts and a 32-byte digest with tags. */
    static final int TRAILER_FRAME_MAX = 128;
    /** Most bytes of the signature frame: the algorithm, a public key of at most 128 bytes and a 64-byte signature with tags. */
    static final int SIGNATURE_FRAME_MAX = 256;

    /** The five caps above with the other defaults. */
    public CapsuleLimits(long maxMemoryBytes, int maxChunkBytes, int maxFrameBytes, int maxCpuidEntries, int maxVcpus) {
        this(maxMemoryBytes, maxChunkBytes, maxFrameBytes, maxCpuidEntries, maxVcpus, DEFAULT_MAX_XSAVE_BYTES,
                DEFAULT_MAX_QUEUED_REQUESTS, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_READ_DEADLINE, DEFAULT_COMPRESSION,
                List.of());
    }

    public CapsuleLimits {
        if (maxMemoryBytes <= 0 || maxMemoryBytes % CapsuleFormat.PAGE_SIZE != 0) {
            throw new IllegalArgumentException("maxMemoryBytes must be a positive multiple of 4096: " + maxMemoryBytes);
        }
        if (maxChunkBytes < CapsuleFormat.PAGE_SIZE || maxChunkBytes % CapsuleFormat.PAGE_SIZE != 0) {
            throw new IllegalArgumentException("maxChunkBytes must be a multiple of 4096, at least one page: "
                    + maxChunkBytes);
        }
        if (maxFrameBytes < maxChunkBytes + CHUNK_FRAME_OVERHEAD) {
            throw new IllegalArgumentException("maxFrameBytes " + maxFrameBytes + " cannot hold a chunk of "
                    + maxChunkBytes + " bytes");
        }
        if (maxCpuidEntries < 1 || maxVcpus < 1 || maxXsaveBytes < 1 || maxQueuedRequests < 0 || maxMessageBytes < 0) {
            throw new IllegalArgumentException("maxCpuidEntries, maxVcpus and maxXsaveBytes must be positive, "
                    + "maxQueuedRequests and maxMessageBytes not negative");
        }
        if (readDeadline == null || readDeadline.isNegative()) {
            throw new IllegalArgumentException("readDeadline must be zero (none) or positive: " + readDeadline);
        }
        if (compression == null) {
            throw new IllegalArgumentException("compression must be set");
        }
        hiddenCpuFeatures = List.copyOf(hiddenCpuFeatures);
        for (String f : hiddenCpuFeatures) {
            CpuFeatures.registerOf(f); // refuses a name CpuFeatures does not know
        }
    }

    /** The default caps with the given memory limit. */
    public static CapsuleLimits defaults(long maxMemoryBytes) {
        return new CapsuleLimits(maxMemoryBytes, DEFAULT_MAX_CHUNK_BYTES, DEFAULT_MAX_FRAME_BYTES,
                DEFAULT_MAX_CPUID_ENTRIES, DEFAULT_MAX_VCPUS);
    }

    /**
     * From configuration: {@code vmfork.vmm.memory.max} and, where set, the
     * {@code vmfork.capsule} keys max-chunk, max-frame, max-cpuid-entries and max-vcpus
     * (docs/capsule.md), max-xsave, read-deadline, compression and hide-cpu-features; the
     * queued-request caps are vmfork.vmm.channel.max-queued and max-message where set.
     * Unset keys take the defaults above.
     */
    public static CapsuleLimits create(Config root) {
        CapsuleLimits d = defaults(root.getBytes("vmfork.vmm.memory.max"));
        String p = "vmfork.capsule.";
        String c = "vmfork.vmm.channel.";
        return new CapsuleLimits(d.maxMemoryBytes,
                root.hasPath(p + "max-chunk") ? root.getBytes(p + "max-chunk").intValue() : d.maxChunkBytes,
                root.hasPath(p + "max-frame") ? root.getBytes(p + "max-frame").intValue() : d.maxFrameBytes,
                root.hasPath(p + "max-cpuid-entries") ? root.getInt(p + "max-cpuid-entries") : d.maxCpuidEntries,
                root.hasPath(p + "max-vcpus") ? root.getInt(p + "max-vcpus") : d.maxVcpus,
                root.hasPath(p + "max-xsave") ? root.getBytes(p + "max-xsave").intValue() : d.maxXsaveBytes,
                root.hasPath(c + "max-queued") ? root.getInt(c + "max-queued") : d.maxQueuedRequests,
                root.hasPath(c + "max-message") ? root.getBytes(c + "max-message").intValue() : d.maxMessageBytes,
                root.hasPath(p + "read-deadline") ? root.getDuration(p + "read-deadline") : d.readDeadline,
                root.hasPath(p + "compression") ? ChunkCompression.parse(root.getString(p + "compression"))
                        : d.compression,
                root.hasPath(p + "hide-cpu-features") ? root.getStringList(p + "hide-cpu-features")
                        : d.hiddenCpuFeatures);
    }

    /** The same caps with another chunk size (and a frame cap that still holds it). */
    public CapsuleLimits withMaxChunkBytes(int chunkBytes) {
        return new CapsuleLimits(maxMemoryBytes, chunkBytes,
                Math.max(maxFrameBytes, chunkBytes + CHUNK_FRAME_OVERHEAD), maxCpuidEntries, maxVcpus, maxXsaveBytes,
                maxQueuedRequests, maxMessageBytes, readDeadline, compression, hiddenCpuFeatures);
    }

    /** The same caps with another read deadline (zero: none). */
    public CapsuleLimits withReadDeadline(Duration deadline) {
        return new CapsuleLimits(maxMemoryBytes, maxChunkBytes, maxFrameBytes, maxCpuidEntries, maxVcpus,
                maxXsaveBytes, maxQueuedRequests, maxMessageBytes, deadline, compression, hiddenCpuFeatures);
    }

    /** The same with another chunk compression for writers. */
    public CapsuleLimits withCompression(ChunkCompression c) {
        return new CapsuleLimits(maxMemoryBytes, maxChunkBytes, maxFrameBytes, maxCpuidEntries, maxVcpus,
                maxXsaveBytes, maxQueuedRequests, maxMessageBytes, readDeadline, c, hiddenCpuFeatures);
    }

    /** The same with other CPU features hidden from capsules ({@link HostPlatform#of}). */
    public CapsuleLimits withHiddenCpuFeatures(List<String> features) {
        return new CapsuleLimits(maxMemoryBytes, maxChunkBytes, maxFrameBytes, maxCpuidEntries, maxVcpus,
                maxXsaveBytes, maxQueuedRequests, maxMessageBytes, readDeadline, compression, features);
    }

    /** Largest header frame: its fixed fields and strings, and {@link #maxCpuidEntries} CPUID entries. */
    public long maxHeaderFrameBytes() {
        return Math.min(maxFrameBytes, HEADER_FRAME_OVERHEAD + (long) maxCpuidEntries * CPUID_ENTRY_MAX_BYTES);
    }

    /**
     * Largest state frame of a capsule with {@code vcpus} vCPUs: the CPUID entries, per vCPU
     * its registers, MSRs, events and an FPU area of up to {@link #maxXsaveBytes}, and up to
     * {@link #maxQueuedRequests} requests of up to {@link #maxMessageBytes}; never over the
     * frame cap.
     */
    public long maxStateFrameBytes(int vcpus) {
        long b = STATE_FRAME_OVERHEAD + (long) maxCpuidEntries * CPUID_ENTRY_MAX_BYTES
                + (long) vcpus * (VCPU_STATE_OVERHEAD + maxXsaveBytes)
                + (long) maxQueuedRequests * (QUEUED_REQUEST_OVERHEAD + maxMessageBytes);
        return Math.min(maxFrameBytes, b);
    }

    /** Largest memory frame: a chunk with its envelope (the trailer is smaller). */
    public long maxChunkFrameBytes() {
        return Math.min(maxFrameBytes, (long) maxChunkBytes + CHUNK_FRAME_OVERHEAD);
    }
}
