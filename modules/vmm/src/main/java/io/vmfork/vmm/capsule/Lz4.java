package io.vmfork.vmm.capsule;

import net.jpountz.lz4.LZ4Compressor;
import net.jpountz.lz4.LZ4Exception;
import net.jpountz.lz4.LZ4Factory;
import net.jpountz.lz4.LZ4SafeDecompressor;

/**
 * The LZ4 block codec of capsule chunks (lz4-java: its JNI binding where it loads, its
 * pure-Java one elsewhere). Both are stateless and shared by every writer and reader.
 */
final class Lz4 {
    private static final LZ4Factory FACTORY = LZ4Factory.fastestInstance();
    private static final LZ4Compressor COMPRESSOR = FACTORY.fastCompressor();
    /** The safe decompressor checks every match against its input and output bounds. */
    private static final LZ4SafeDecompressor DECOMPRESSOR = FACTORY.safeDecompressor();

    private Lz4() {
    }

    static int maxCompressedLength(int length) {
        return COMPRESSOR.maxCompressedLength(length);
    }

    /** Compresses {@code src[0..length)} into {@code dst}; returns the compressed length. */
    static int compress(byte[] src, int length, byte[] dst) {
        return COMPRESSOR.compress(src, 0, length, dst, 0, dst.length);
    }

    /**
     * Decompresses the block {@code src[off..off+length)} into {@code dst[0..)}, writing at
     * most {@code maxOut} bytes; returns the decompressed length, or -1 for a malformed
     * block or one that decompresses to more than {@code maxOut}.
     */
    static int decompress(byte[] src, int off, int length, byte[] dst, int maxOut) {
        try {
            return DECOMPRESSOR.decompress(src, off, length, dst, 0, maxOut);
        } catch (LZ4Exception e) {
            return -1;
        }
    }

    /** Which binding is in use, for measurements. */
    static String implementation() {
        return FACTORY.toString();
    }
}
