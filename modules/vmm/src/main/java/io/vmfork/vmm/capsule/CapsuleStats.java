package io.vmfork.vmm.capsule;

/**
 * What one capsule held.
 *
 * @param capsuleBytes     bytes of the whole capsule stream, magic and trailer included
 * @param dataBytes        guest RAM bytes it carries (sum of the chunks' data)
 * @param chunkCount       number of memory chunk frames
 * @param zeroPagesSkipped pages inside the source's data runs that were all zero and left out
 *                         (the writer's count; 0 on the reading side, which cannot know it)
 */
public record CapsuleStats(long capsuleBytes, long dataBytes, long chunkCount, long zeroPagesSkipped) {
}
