package io.vmfork.vmm.memory;

import com.sun.jna.Pointer;
import io.vmfork.os.LibC;
import io.vmfork.os.Mapping;
import io.vmfork.os.Memfd;
import io.vmfork.vmm.state.MemorySource;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.NavigableMap;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

/**
 * An immutable image of guest RAM taken at a fork or snapshot: a base memfd, plus
 * overlay layers holding only the pages that changed at later freezes. Nothing ever
 * writes to its files again; VMs map it MAP_PRIVATE, so the host shares every page until
 * someone writes it, and an encoder can read it while the VMs run on.
 *
 * <p>Reference counted: every VM made from it, and every reader, holds a reference; the
 * memfds close when the last one is released (mappings keep their pages alive anyway).
 *
 * <p>Lineage: the images built over one base (by later freezes, compaction or
 * {@link #overlayOf}) share a {@link #lineage()}, and since layers are immutable, two of
 * them differ only where a different layer provides the pages: {@link #changedSince}
 * finds those ranges from the extent maps alone, which is what an incremental capsule sends.
 */
public final class RuntimeImage implements MemorySource {
    /** Ids of images and layers, unique in this JVM. */
    private static final AtomicLong IDS = new AtomicLong();

    /** One memfd of an image, shared by the images that build on it. */
    static final class Layer {
        final Memfd file;
        final long id = IDS.incrementAndGet();
        private final AtomicInteger refs = new AtomicInteger(1);

        Layer(Memfd file) {
            this.file = file;
        }

        Layer retain() {
            if (refs.getAndIncrement() <= 0) {
                throw new IllegalStateException("layer already released");
            }
            return this;
        }

        void release() {
            if (refs.decrementAndGet() == 0) {
                file.close();
            }
        }
    }

    /**
     * [offset, offset+length) of RAM comes from {@code layer} instead of the base; its bytes
     * are those first written to the layer with id {@code origin} (the layer itself, unless
     * a compaction copied them).
     */
    record Extent(long offset, long length, Layer layer, long origin) {
        Extent(long offset, long length, Layer layer) {
            this(offset, length, layer, layer.id);
        }

        Extent resized(long newOffset, long newLength) {
            return new Extent(newOffset, newLength, layer, origin);
        }
    }

    private final long id = IDS.incrementAndGet();
    private final long size;
    private final Layer base;
    private final NavigableMap<Long, Extent> extents;
    /**
     * Where each overlay range's bytes come from, by origin: equal to {@link #extents} until
     * a compaction merges extents of several origins into one; kept apart so that
     * {@link #changedSince} still sees through compaction.
     */
    private final NavigableMap<Long, Extent> provenance;
    private final List<Layer> layers;
    private final AtomicInteger refs = new AtomicInteger(1);
    private Mapping readView;
    /**
     * Completes once every page of the image is in its files: at once, except for an image
     * whose top layer is still being filled by a write-protect copy ({@link GuestMemory}).
     * Until then a VM may map it but must not touch it, and readers wait.
     */
    private final CompletableFuture<Void> ready;
    private static final CompletableFuture<Void> READY = CompletableFuture.completedFuture(null);

    private RuntimeImage(long size, Layer base, NavigableMap<Long, Extent> extents,
            NavigableMap<Long, Extent> provenance, List<Layer> layers) {
        this(size, base, extents, provenance, layers, READY);
    }

    private RuntimeImage(long size, Layer base, NavigableMap<Long, Extent> extents,
            NavigableMap<Long, Extent> provenance, List<Layer> layers, CompletableFuture<Void> ready) {
        this.ready = ready;
        this.size = size;
        this.base = base;
        this.extents = extents;
        this.provenance = provenance;
        this.layers = layers;
    }

    /** An image whose every page is in {@code file} (e.g. a decoded capsule); takes ownership of the file. */
    public static RuntimeImage fromFile(Memfd file) {
        return ofBase(file);
    }

    static RuntimeImage ofBase(Memfd file) {
        Layer b = new Layer(file);
        return new RuntimeImage(file.size(), b, new TreeMap<>(), new TreeMap<>(), List.of(b));
    }

    /**
     * A new image: this one with {@code runs} taken from {@code file}, at the same offsets
     * (a sparse file of this image's size, e.g. the pages of an incremental capsule).
     * Shares every other layer with this image, and its lineage. Takes ownership of
     * {@code file}, also when it throws; this image keeps its own reference.
     *
     * @throws IllegalArgumentException if a run is not page aligned, not ascending, or outside the image
     */
    public RuntimeImage overlayOf(Memfd file, List<Run> runs) {
        try {
            if (refs.get() <= 0) {
                throw new IllegalStateException("runtime image already released");
            }
            long next = 0;
            for (Run r : runs) {
                if (r.offset() % PAGE != 0 || r.length() % PAGE != 0 || r.length() <= 0 || r.offset() < next
                        || r.offset() > size - r.length()) {
                    throw new IllegalArgumentException("run " + r + " is not page aligned, not ascending or outside"
                            + " the image of " + size + " bytes");
                }
                next = r.offset() + r.length();
            }
            if (file.size() < size) {
                throw new IllegalArgumentException("layer file of " + file.size() + " bytes is smaller than the image ("
                        + size + ")");
            }
        } catch (RuntimeException e) {
            file.close();
            throw e;
        }
        return overlay(file, runs);
    }

    private static final long PAGE = 4096;
    /**
     * Most origin ranges a compaction keeps: the map is copied at every freeze (on a fork's
     * critical path), so it must stay small; past it, a compacted layer is its own origin.
     */
    static final int MAX_PROVENANCE = 1024;

    /**
     * A new image: this one with {@code runs} taken from {@code file} (which it takes
     * ownership of). Shares every other layer with this image.
     */
    RuntimeImage overlay(Memfd file, List<Run> runs) {
        return overlay(file, runs, READY);
    }

    /**
     * As {@link #overlay(Memfd, List)}, for a layer whose pages are still being written:
     * the new image is {@linkplain #isReady ready} when {@code filled} completes.
     */
    RuntimeImage overlay(Memfd file, List<Run> runs, CompletableFuture<Void> filled) {
        awaitReady();
        Layer top = new Layer(file);
        TreeMap<Long, Extent> next = new TreeMap<>(extents);
        TreeMap<Long, Extent> origins = new TreeMap<>(provenance);
        for (Run r : runs) {
            carve(next, r.offset(), r.length());
            next.put(r.offset(), new Extent(r.offset(), r.length(), top));
            carve(origins, r.offset(), r.length());
            origins.put(r.offset(), new Extent(r.offset(), r.length(), top));
        }
        // Only layers still referenced by an extent (or the base) are kept alive.
        List<Layer> used = new ArrayList<>();
        used.add(base.retain());
        for (Extent e : next.values()) {
            if (!used.contains(e.layer())) {
                used.add(e.layer() == top ? top : e.layer().retain());
            }
        }
        if (!used.contains(top)) {
            top.release();
        }
        return new RuntimeImage(size, base, next, origins, used, filled);
    }

    /** True once every page of the image is in its files (see {@link #whenReady}). */
    public boolean isReady() {
        return ready.isDone() && !ready.isCompletedExceptionally();
    }

    /**
     * Completes once every page is in the image's files, or exceptionally if the copy that
     * fills its top layer failed (then the image must not be used).
     */
    public CompletableFuture<Void> whenReady() {
        return ready.copy();
    }

    /**
     * Waits until the image is complete.
     *
     * @throws IllegalStateException if the copy that fills it failed
     */
    public void awaitReady() {
        try {
            ready.join();
        } catch (CompletionException e) {
            throw new IllegalStateException("runtime image " + id + " is incomplete: " + e.getCause().getMessage(),
                    e.getCause());
        }
    }

    /** Removes [off, off+len) from the extent map, splitting extents that straddle it. */
    private static void carve(TreeMap<Long, Extent> map, long off, long len) {
        long end = off + len;
        Map.Entry<Long, Extent> before = map.floorEntry(off);
        if (before != null) {
            Extent e = before.getValue();
            long eEnd = e.offset() + e.length();
            if (eEnd > off) {
                map.put(e.offset(), e.resized(e.offset(), off - e.offset()));
                if (e.offset() == off) {
                    map.remove(e.offset());
                }
                if (eEnd > end) {
                    map.put(end, e.resized(end, eEnd - end));
                }
            }
        }
        for (Map.Entry<Long, Extent> en = map.ceilingEntry(off); en != null && en.getKey() < end;
                en = map.ceilingEntry(off)) {
            Extent e = en.getValue();
            map.remove(e.offset());
            long eEnd = e.offset() + e.length();
            if (eEnd > end) {
                map.put(end, e.resized(end, eEnd - end));
                break;
            }
        }
    }

    public RuntimeImage retain() {
        if (refs.getAndIncrement() <= 0) {
            throw new IllegalStateException("runtime image already released");
        }
        return this;
    }

    public void release() {
        int left = refs.decrementAndGet();
        if (left == 0) {
            synchronized (this) {
                if (readView != null) {
                    readView.close();
                    readView = null;
                }
            }
            for (Layer l : layers) {
                l.release();
            }
        } else if (left < 0) {
            throw new IllegalStateException("runtime image released too often");
        }
    }

    @Override
    public long size() {
        return size;
    }

    /** This image's id, unique in this JVM (never reused). */
    public long imageId() {
        return id;
    }

    /**
     * The id shared by every image built over the same base file (later freezes of one VM,
     * compaction, {@link #overlayOf}); unique in this JVM.
     */
    public long lineage() {
        return base.id;
    }

    /**
     * The page ranges whose content may differ between {@code older} and this image:
     * where a different layer provides the pages (the base counts as a layer; layers are
     * immutable, so the same layer means the same bytes). Ascending, not overlapping,
     * adjacent ranges merged; empty when nothing changed. Null when the two do not share a
     * lineage (or a size): then only a full capsule describes this image. Costs
     * O(extents of both), never reads a page. Sees through compaction (which copies bytes
     * without changing them); conservative only in that a page rewritten with equal bytes
     * counts as changed.
     */
    public List<Run> changedSince(RuntimeImage older) {
        if (older.base != base || older.size != size) {
            return null;
        }
        List<Run> out = new ArrayList<>();
        List<Extent> a = List.copyOf(older.provenance.values());
        List<Extent> b = List.copyOf(provenance.values());
        int i = 0;
        int j = 0;
        long pos = 0;
        // Walk both maps at once over the breakpoints of either; between two breakpoints each
        // side has one provider (an extent's layer, or the base).
        while (pos < size) {
            while (i < a.size() && end(a.get(i)) <= pos) {
                i++;
            }
            while (j < b.size() && end(b.get(j)) <= pos) {
                j++;
            }
            Extent ea = i < a.size() && a.get(i).offset() <= pos ? a.get(i) : null;
            Extent eb = j < b.size() && b.get(j).offset() <= pos ? b.get(j) : null;
            long next = size;
            next = Math.min(next, ea != null ? end(ea) : (i < a.size() ? a.get(i).offset() : size));
            next = Math.min(next, eb != null ? end(eb) : (j < b.size() ? b.get(j).offset() : size));
            long la = ea == null ? base.id : ea.origin();
            long lb = eb == null ? base.id : eb.origin();
            if (la != lb) {
                Run last = out.isEmpty() ? null : out.get(out.size() - 1);
                if (last != null && last.offset() + last.length() == pos) {
                    out.set(out.size() - 1, new Run(last.offset(), next - last.offset()));
                } else {
                    out.add(new Run(pos, next - pos));
                }
            }
            pos = next;
        }
        return out;
    }

    private static long end(Extent e) {
        return e.offset() + e.length();
    }

    /** Overlay extents, i.e. how many extra mappings a VM of this image needs. */
    public int extentCount() {
        return extents.size();
    }

    /** Memfds this image holds open. */
    public int layerCount() {
        return layers.size();
    }

    /**
     * A new private, copy-on-write view of the whole image: the base mapped MAP_PRIVATE,
     * then each overlay extent mapped over it in place. No page is copied.
     */
    public Mapping mapPrivate(String what) {
        return overlayExtents(base.file.map(false, what));
    }

    /**
     * As {@link #mapPrivate}, placed over {@code reserved} (an address range of the image's
     * size, e.g. one a KVM memory slot already points at); takes ownership of it.
     */
    public Mapping mapPrivateAt(Mapping reserved, String what) {
        return overlayExtents(Mapping.privateAt(base.file, reserved, what));
    }

    private Mapping overlayExtents(Mapping m) {
        try {
            for (Extent e : extents.values()) {
                m.remapPrivate(e.layer().file, e.offset(), e.length());
            }
            return m;
        } catch (RuntimeException ex) {
            m.close();
            throw ex;
        }
    }

    /**
     * How a guest process maps this image privately (the process platform): the layers'
     * files and the extents to map in order, each five longs (guest address, length,
     * index into the files, file offset, 0 for private), the base first, starting at
     * {@code lowest}. The caller must not release the image before the process has mapped them.
     */
    public record ProcessMapping(int[] fds, long[] extents) {
    }

    public ProcessMapping processMapping(long lowest) {
        List<Layer> files = new ArrayList<>();
        files.add(base);
        List<long[]> out = new ArrayList<>();
        out.add(new long[] {lowest, size - lowest, 0, lowest, 0});
        for (Extent e : extents.values()) {
            long from = Math.max(e.offset(), lowest);
            long end = e.offset() + e.length();
            if (from >= end) {
                continue;
            }
            int i = files.indexOf(e.layer());
            if (i < 0) {
                files.add(e.layer());
                i = files.size() - 1;
            }
            out.add(new long[] {from, end - from, i, from, 0});
        }
        int[] fds = files.stream().mapToInt(l -> l.file.fd()).toArray();
        long[] flat = new long[out.size() * 5];
        for (int k = 0; k < out.size(); k++) {
            System.arraycopy(out.get(k), 0, flat, 5 * k, 5);
        }
        return new ProcessMapping(fds, flat);
    }

    @Override
    public List<Run> dataRuns() {
        List<Run> baseRuns = new ArrayList<>();
        long off = 0;
        while (off < size) {
            long data = base.file.nextData(off);
            if (data < 0 || data >= size) {
                break;
            }
            long hole = Math.min(base.file.nextHole(data), size);
            baseRuns.add(new Run(data, hole - data));
            off = hole;
        }
        List<Run> all = new ArrayList<>(baseRuns);
        for (Extent e : extents.values()) {
            all.add(new Run(e.offset(), e.length()));
        }
        all.sort((a, b) -> Long.compare(a.offset(), b.offset()));
        List<Run> merged = new ArrayList<>();
        for (Run r : all) {
            if (!merged.isEmpty()) {
                Run last = merged.get(merged.size() - 1);
                if (r.offset() <= last.offset() + last.length()) {
                    long end = Math.max(last.offset() + last.length(), r.offset() + r.length());
                    merged.set(merged.size() - 1, new Run(last.offset(), end - last.offset()));
                    continue;
                }
            }
            merged.add(r);
        }
        return merged;
    }

    @Override
    public void read(long offset, byte[] dst, int dstOff, int length) {
        if (offset < 0 || length < 0 || offset > size - length) {
            throw new IndexOutOfBoundsException("read of " + length + " bytes at " + offset + " outside the image");
        }
        awaitReady();
        Pointer p;
        synchronized (this) {
            if (refs.get() <= 0) {
                throw new IllegalStateException("runtime image already released");
            }
            if (readView == null) {
                readView = mapPrivate("runtime image (read)");
            }
            p = readView.pointer();
        }
        p.read(offset, dst, dstOff, length);
    }

    /** Drops the read view's page-table entries, e.g. after an encoder has finished. */
    public synchronized void dropReadView() {
        if (readView != null) {
            readView.close();
            readView = null;
        }
    }

    /**
     * Copies every overlay extent into one new layer file, merging extents that touch, so
     * that a VM of the image needs few mappings again. Copies only overlay data (pages
     * written after the first freeze), never the base. The new image keeps this one's
     * lineage (its base), with a reference for the caller; this one is left as it is.
     */
    public RuntimeImage compact(String name) {
        awaitReady();
        List<Run> runs = new ArrayList<>();
        for (Extent e : extents.values()) {
            Run last = runs.isEmpty() ? null : runs.get(runs.size() - 1);
            if (last != null && last.offset() + last.length() == e.offset()) {
                runs.set(runs.size() - 1, new Run(last.offset(), last.length() + e.length()));
            } else {
                runs.add(new Run(e.offset(), e.length()));
            }
        }
        Memfd f = Memfd.create(name, size);
        try (Mapping src = mapPrivate(name + " (compact)")) {
            for (Run r : runs) {
                LibC.pwriteFully(f.fd(), src.pointer().share(r.offset()), r.length(), r.offset(), name);
            }
        } catch (RuntimeException e) {
            f.close();
            throw e;
        }
        Layer b = base.retain();
        Layer top = new Layer(f);
        TreeMap<Long, Extent> merged = new TreeMap<>();
        for (Run r : runs) {
            merged.put(r.offset(), new Extent(r.offset(), r.length(), top));
        }
        // Origins survive a compaction unless there are too many of them to copy at every freeze;
        // then the compacted layer becomes their origin (changedSince turns conservative once).
        NavigableMap<Long, Extent> origins = provenance.size() <= MAX_PROVENANCE ? provenance : merged;
        return new RuntimeImage(size, b, merged, origins, List.of(b, top));
    }
}
