package io.vmfork.cli;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * What the shipped {@code warm-worker} guest answers, computed on this side: its index maps
 * every key below {@link #KEYS} to {@link #value} (native-kvm's warm-worker.c, whose value
 * function is part of its observable behaviour), so a reply to {@code get K} can be checked
 * without asking anyone else; and its {@code id} reply.
 */
final class WarmWorkerReplies {
    /** Keys 0 .. KEYS-1 are indexed (WW_KEYS); every other key misses. */
    static final long KEYS = 1L << 21;
    private static final int ROUNDS = 96;
    private static final Pattern ID = Pattern.compile("vm=(\\d+) parent=(\\d+) gen=(\\d+) host=(\\d+) type=(\\d+)");

    private WarmWorkerReplies() {
    }

    /** The guest's {@code ww_mix}: a 64-bit finaliser (unsigned arithmetic). */
    static long mix(long z) {
        z ^= z >>> 30;
        z *= 0xbf58476d1ce4e5b9L;
        z ^= z >>> 27;
        z *= 0x94d049bb133111ebL;
        z ^= z >>> 31;
        return z;
    }

    /** The guest's {@code ww_value}: the value indexed under key {@code k}. */
    static long value(long k) {
        long x = k;
        for (int i = 0; i < ROUNDS; i++) {
            x = mix(x + 0x9e3779b97f4a7c15L);
        }
        return x;
    }

    /** The reply {@code get k} must give: {@code "k value"}, or {@code "k miss"} past the index. */
    static String expectedGet(long k) {
        String key = Long.toUnsignedString(k);
        return Long.compareUnsigned(k, KEYS) < 0 ? key + " " + Long.toUnsignedString(value(k)) : key + " miss";
    }

    /** The identity in an {@code id} reply. */
    record Identity(long vmId, long parentId, long generation, long hostId, int vmType) {
    }

    /** Parses an {@code id} reply; null when it is not one. */
    static Identity identity(String reply) {
        Matcher m = ID.matcher(reply);
        if (!m.matches()) {
            return null;
        }
        return new Identity(Long.parseUnsignedLong(m.group(1)), Long.parseUnsignedLong(m.group(2)),
                Long.parseLong(m.group(3)), Long.parseLong(m.group(4)), Integer.parseInt(m.group(5)));
    }
}
