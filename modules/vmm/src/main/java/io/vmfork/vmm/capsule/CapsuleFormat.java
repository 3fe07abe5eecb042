package io.vmfork.vmm.capsule;

/**
 * The constants of the capsule format; CapsuleWriter's opening comment and docs/capsule.md
 * describe the format itself.
 */
public final class CapsuleFormat {
    /**
     * The 8 raw bytes every capsule starts with. Like PNG's, the first byte has the high bit
     * set and the last is a line feed, so 7-bit and newline-mangling channels show up as a
     * bad magic rather than as a corrupt frame later.
     */
    static final byte[] FILE_MAGIC = {(byte) 0x89, 'V', 'M', 'F', 'C', 'A', 'P', 0x0A};
    /** CapsuleHeader.magic: "VMFC". */
    public static final int HEADER_MAGIC = 0x564D4643;
    /** The format version this code writes. Not the release version. */
    public static final int CURRENT_VERSION = 4;
    /** The first version whose header records the CPUID and XCR0 the guest could observe. */
    public static final int OBSERVED_CPU_VERSION = 2;
    /** The first version with delta capsules (flag DELTA, base_image, zero runs) and compressed chunks. */
    public static final int DELTA_VERSION = 3;
    /**
     * The first version whose vCPUs hold the architecture-neutral CpuState and an optional
     * KvmCpuPart rather than KVM's registers struct by struct (read through the guest model).
     */
    public static final int NEUTRAL_CPU_VERSION = 4;
    /** Header flag: the chunks are the pages changed since the header's base_image. */
    public static final long FLAG_DELTA = 1;
    /**
     * Header flag, added within version 3: some vCPU is not started (VcpuState.not_started).
     * Set exactly then, so that a reader unaware of that field refuses the capsule (an
     * unknown flag) rather than run the vCPU; every other capsule stays readable by it.
     */
    public static final long FLAG_NOT_STARTED = 2;
    /**
     * Header flag, added within version 4: a signature frame follows the trailer. Set exactly
     * then, so that a reader that does not know that frame refuses the capsule (an unknown
     * flag) rather than call it trailing bytes, and a signature cut off whole is a truncation.
     */
    public static final long FLAG_SIGNED = 4;
    /** The first version whose capsules may be signed (FLAG_SIGNED). */
    public static final int SIGNED_VERSION = 4;
    /** What a capsule's signed message starts with: "vmfork capsule signature v1" and a zero byte. */
    static final byte[] SIGNATURE_CONTEXT = "vmfork capsule signature v1\0"
            .getBytes(java.nio.charset.StandardCharsets.US_ASCII);
    /** Most bytes of a delta's base image key. */
    public static final int MAX_BASE_KEY_BYTES = 64;
    /** The oldest version this code reads: the rule is "accept the current and the previous one". */
    public static final int OLDEST_READABLE_VERSION = Math.max(1, CURRENT_VERSION - 1);
    /** Header flag bits this version understands; a reader refuses any other bit. */
    public static final long KNOWN_FLAGS = FLAG_DELTA | FLAG_NOT_STARTED | FLAG_SIGNED;
    /** Granularity of chunks and of zero-page elision. */
    public static final int PAGE_SIZE = 4096;
    /** Bytes of one kvm_cpuid_entry2. */
    public static final int CPUID_ENTRY_BYTES = 40;
    /** Bytes of a SHA-256 digest. */
    public static final int DIGEST_BYTES = 32;
    /** The JDK name of the trailer's digest. */
    static final String DIGEST_ALGORITHM = "SHA-256";

    private CapsuleFormat() {
    }

    /** The header flags defined in format {@code version}. */
    static long knownFlags(int version) {
        if (version >= SIGNED_VERSION) {
            return KNOWN_FLAGS;
        }
        return version >= DELTA_VERSION ? FLAG_DELTA | FLAG_NOT_STARTED : 0;
    }

    /** The 8-byte file magic, for callers that sniff a stream. */
    public static byte[] fileMagic() {
        return FILE_MAGIC.clone();
    }
}
