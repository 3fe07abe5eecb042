package io.vmfork.vmm.memory;

import com.sun.jna.Pointer;
import io.vmfork.kvm.memory.Mapping;
import io.vmfork.kvm.memory.Memfd;
import io.vmfork.kvm.sys.LibC;
import io.vmfork.vmm.state.MemorySource;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.NavigableMap;
import java.util.TreeMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * An immutable image of guest RAM taken at a fork or snapshot: a base memfd, plus
 * overlay layers holding only the pages that changed at later freezes. Nothing ever
 * writes to its files again; VMs map it MAP_PRIVATE, so the host shares every page until
 * someone writes it, and an encoder can read it while the VMs run on.
 *
 * <p>Reference counted: every VM made from it, and every reader, holds a reference; the
 * memfds close when the last one is released (mappings keep their pages alive anyway).
 */
public final class RuntimeImage implements MemorySource {
    /** One memfd of an image, shared by the images that build on it. */
    static final class Layer {
        final Memfd file;
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

    /** [offset, offset+length) of RAM comes from {@code layer} instead of the base. */
    record Extent(long offset, long length, Layer layer) {
    }

    private final long size;
    private final Layer base;
    private final NavigableMap<Long, Extent> extents;
    private final List<Layer> layers;
    private final AtomicInteger refs = new AtomicInteger(1);
    private Mapping readView;

    private RuntimeImage(long size, Layer base, NavigableMap<Long, Extent> extents, List<Layer> layers) {
        this.size = size;
        this.base = base;
        this.extents = extents;
        this.layers = layers;
    }

    /** An image whose every page is in {@code file} (e.g. a decoded capsule); takes ownership of the file. */
    public static RuntimeImage fromFile(Memfd file) {
        return ofBase(file);
    }

    static RuntimeImage ofBase(Memfd file) {
        Layer b = new Layer(file);
        return new RuntimeImage(file.size(), b, new TreeMap<>(), List.of(b));
    }

    /**
     * A new image: this one with {@code runs} taken from {@code file} (which it takes
     * ownership of). Shares every other layer with this image.
     */
    RuntimeImage overlay(Memfd file, List<Run> runs) {
        Layer top = new Layer(file);
        TreeMap<Long, Extent> next = new TreeMap<>(extents);
        for (Run r : runs) {
            carve(next, r.offset(), r.length());
            next.put(r.offset(), new Extent(r.offset(), r.length(), top));
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
        return new RuntimeImage(size, base, next, used);
    }

    /** Removes [off, off+len) from the extent map, splitting extents that straddle it. */
    private static void carve(TreeMap<Long, Extent> map, long off, long len) {
        long end = off + len;
        Map.Entry<Long, Extent> before = map.floorEntry(off);
        if (before != null) {
            Extent e = before.getValue();
            long eEnd = e.offset() + e.length();
            if (eEnd > off) {
                map.put(e.offset(), new Extent(e.offset(), off - e.offset(), e.layer()));
                if (e.offset() == off) {
                    map.remove(e.offset());
                }
                if (eEnd > end) {
                    map.put(end, new Extent(end, eEnd - end, e.layer()));
                }
            }
        }
        for (Map.Entry<Long, Extent> en = map.ceilingEntry(off); en != null && en.getKey() < end;
                en = map.ceilingEntry(off)) {
            Extent e = en.getValue();
            map.remove(e.offset());
            long eEnd = e.offset() + e.length();
            if (eEnd > end) {
                map.put(end, new Extent(end, eEnd - end, e.layer()));
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
        Mapping m = base.file.map(false, what);
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
     * written after the first freeze), never the base.
     */
    RuntimeImage compact(String name) {
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
        return new RuntimeImage(size, b, merged, List.of(b, top));
    }
}
