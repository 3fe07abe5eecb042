package io.vmfork.vmm.capsule;

import com.typesafe.config.Config;

/**
 * Caps against hostile or damaged capsules, and the writer's chunk size. A reader refuses
 * any capsule that exceeds one of them before it allocates or writes anything for it.
 *
 * @param maxMemoryBytes  largest guest RAM a capsule may declare (this host's vmfork.vmm.memory.max)
 * @param maxChunkBytes   largest memory chunk: what the writer emits and the reader accepts
 * @param maxFrameBytes   largest frame of any kind (the state frame can carry queued requests)
 * @param maxCpuidEntries most CPUID entries a header or state may carry
 * @param maxVcpus        most vCPUs a capsule may declare before the host's own limit is asked
 */
public record CapsuleLimits(long maxMemoryBytes, int maxChunkBytes, int maxFrameBytes, int maxCpuidEntries,
        int maxVcpus) {
    /** 1 MiB: large enough that framing costs nothing, small enough to bound both sides' memory. */
    public static final int DEFAULT_MAX_CHUNK_BYTES = 1 << 20;
    /** 16 MiB: a chunk frame is a little over 1 MiB; only a state with many queued requests is bigger. */
    public static final int DEFAULT_MAX_FRAME_BYTES = 16 << 20;
    /** KVM_MAX_CPUID_ENTRIES (arch/x86/include/asm/kvm_host.h). */
    public static final int DEFAULT_MAX_CPUID_ENTRIES = 256;
    /** KVM_MAX_VCPUS of x86 kernels (arch/x86/include/asm/kvm_host.h); more is not a real VM. */
    public static final int DEFAULT_MAX_VCPUS = 1024;
    /** Room a chunk frame needs beyond its data: tags, lengths, offset and crc. */
    static final int CHUNK_FRAME_OVERHEAD = 64;

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
        if (maxCpuidEntries < 1 || maxVcpus < 1) {
            throw new IllegalArgumentException("maxCpuidEntries and maxVcpus must be positive");
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
     * (docs/capsule.md); unset keys take the defaults above.
     */
    public static CapsuleLimits create(Config root) {
        CapsuleLimits d = defaults(root.getBytes("vmfork.vmm.memory.max"));
        String p = "vmfork.capsule.";
        return new CapsuleLimits(d.maxMemoryBytes,
                root.hasPath(p + "max-chunk") ? root.getBytes(p + "max-chunk").intValue() : d.maxChunkBytes,
                root.hasPath(p + "max-frame") ? root.getBytes(p + "max-frame").intValue() : d.maxFrameBytes,
                root.hasPath(p + "max-cpuid-entries") ? root.getInt(p + "max-cpuid-entries") : d.maxCpuidEntries,
                root.hasPath(p + "max-vcpus") ? root.getInt(p + "max-vcpus") : d.maxVcpus);
    }

    /** The same caps with another chunk size (and a frame cap that still holds it). */
    public CapsuleLimits withMaxChunkBytes(int chunkBytes) {
        return new CapsuleLimits(maxMemoryBytes, chunkBytes,
                Math.max(maxFrameBytes, chunkBytes + CHUNK_FRAME_OVERHEAD), maxCpuidEntries, maxVcpus);
    }
}
