package io.vmfork.vmm.capsule;

/**
 * What one capsule held.
 *
 * @param capsuleBytes     bytes of the whole capsule stream, magic and trailer included
 * @param dataBytes        guest RAM bytes it carries (sum of the chunks' data)
 * @param chunkCount       number of memory chunk frames
 * @param zeroPagesSkipped pages inside the source's data runs that were all zero and left out
 *                         (the writer's count; 0 on the reading side, which cannot know it);
 *                         in a delta, the zero pages sent as zero runs
 * @param compressedChunks chunks sent as LZ4 blocks
 */
public record CapsuleStats(long capsuleBytes, long dataBytes, long chunkCount, long zeroPagesSkipped,
        long compressedChunks) {
    /** Stats without compression counted. */
    public CapsuleStats(long capsuleBytes, long dataBytes, long chunkCount, long zeroPagesSkipped) {
        this(capsuleBytes, dataBytes, chunkCount, zeroPagesSkipped, 0);
    }
}
