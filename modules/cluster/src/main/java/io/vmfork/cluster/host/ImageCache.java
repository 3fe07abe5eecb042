package io.vmfork.cluster.host;

import io.vmfork.vmm.memory.RuntimeImage;
import java.util.HexFormat;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Runtime images this host received as clone capsules, kept so that a later fork of the
 * same parent to this host needs only the pages changed since (a delta capsule). Bounded
 * by {@code budget} bytes of image data; the least recently used image goes first. An
 * entry holds one reference: evicting it frees the image's files once no clone maps it
 * (a clone holds its own reference), so a VM never loses memory to eviction. One entry
 * per parent: a newer image of a parent replaces the older one.
 */
final class ImageCache implements AutoCloseable {
    private record Entry(String key, long parentId, RuntimeImage image, long bytes) {
    }

    private final long budget;
    private final LinkedHashMap<String, Entry> entries = new LinkedHashMap<>(16, 0.75f, true);
    private long held;

    ImageCache(long budget) {
        this.budget = budget;
    }

    /** The image kept under {@code key}, retained for the caller, or null. */
    synchronized RuntimeImage get(byte[] key) {
        Entry e = entries.get(HexFormat.of().formatHex(key));
        return e == null ? null : e.image().retain();
    }

    /** Keeps {@code image} (retained here) as {@code parentId}'s newest image, evicting as the budget says. */
    synchronized void put(byte[] key, long parentId, RuntimeImage image) {
        if (budget <= 0 || key.length == 0) {
            return;
        }
        long bytes = dataBytes(image);
        if (bytes > budget) {
            return;
        }
        for (Iterator<Entry> it = entries.values().iterator(); it.hasNext(); ) {
            Entry e = it.next();
            if (e.parentId() == parentId) {
                it.remove();
                drop(e);
            }
        }
        Entry added = new Entry(HexFormat.of().formatHex(key), parentId, image.retain(), bytes);
        entries.put(added.key(), added);
        held += bytes;
        for (Iterator<Entry> it = entries.values().iterator(); held > budget && it.hasNext(); ) {
            Entry e = it.next();
            if (e != added) {
                it.remove();
                drop(e);
            }
        }
    }

    /** Images kept and their data bytes, for the status page. */
    synchronized long[] usage() {
        return new long[] {entries.size(), held};
    }

    private void drop(Entry e) {
        held -= e.bytes();
        e.image().release();
    }

    private static long dataBytes(RuntimeImage image) {
        long n = 0;
        for (var r : image.dataRuns()) {
            n += r.length();
        }
        return n;
    }

    @Override
    public synchronized void close() {
        for (Entry e : entries.values()) {
            e.image().release();
        }
        entries.clear();
        held = 0;
    }
}
