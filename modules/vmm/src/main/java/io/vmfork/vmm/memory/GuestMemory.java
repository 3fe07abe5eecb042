package io.vmfork.vmm.memory;

import com.sun.jna.Memory;
import com.sun.jna.Pointer;
import io.vmfork.os.Errno;
import io.vmfork.os.HostHelper;
import io.vmfork.os.LibC;
import io.vmfork.os.Mapping;
import io.vmfork.os.Memfd;
import io.vmfork.os.NativeCallException;
import io.vmfork.os.Processes;
import io.vmfork.vmm.state.MemorySource.Run;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * A VM's RAM as the VMM sees it: guest-physical [0, size), mapped into this process.
 *
 * <p>A booted VM starts with its own memfd mapped MAP_SHARED. At its first freeze (a fork
 * or snapshot) that memfd becomes an immutable {@link RuntimeImage} and the VM switches to
 * a MAP_PRIVATE view of it, as its children do. At later freezes only the pages written
 * since the previous one (the guest's, from KVM's dirty log, and the VMM's own, tracked
 * here) are copied into a new overlay layer; untouched memory is never copied.
 *
 * <p>When more pages were written than {@code backgroundPages} (a freeze argument), the
 * copy happens after the VM resumes: the freeze write-protects those pages in the VM's
 * view (userfaultfd) and returns an image that is not yet {@linkplain RuntimeImage#isReady
 * ready}; a background thread copies the pages into the layer and lifts the protection
 * chunk by chunk, and a page the VM writes before the copier reached it is copied first,
 * while the writer waits. The VM's pause no longer grows with what it wrote; its first
 * write to each such page pays instead.
 *
 * <p>Every access from the VMM goes through a bounds check, so a guest that passes a bad
 * pointer to a hypercall gets an error, never a host crash.
 */
public final class GuestMemory implements AutoCloseable {
    public static final long PAGE_SIZE = 4096;
    /** Old views are unmapped off the fork's critical path: tearing down 1 GiB of PTEs takes tens of ms. */
    private static final ExecutorService RETIRER = Executors.newSingleThreadExecutor(r -> {
        Thread t = new Thread(r, "vmfork-unmap");
        t.setDaemon(true);
        return t;
    });

    private final String name;
    private final long size;
    private final int maxExtents;
    private volatile Mapping view;
    private volatile Pointer base;
    /**
     * On the process platform, once the guest's RAM is private to its process: that
     * process's pid, through which the VMM reads and writes it (process_vm_readv/writev);
     * 0 while the VMM's own view is the guest's RAM.
     */
    private volatile int processPid;
    /** The booted VM's own RAM file while it is still mapped shared; null once frozen. */
    private Memfd own;
    /** The image the current private view maps; null while the view is shared. */
    private RuntimeImage image;
    /** Pages the VMM wrote through this object since the last freeze (private views only). */
    private final BitSet vmmDirty = new BitSet();
    private final List<CompletableFuture<Void>> retiring = new ArrayList<>();
    private boolean closed;
    /** Background copies of freezes: one at a time per VM; a thread each, reused, gone after 1 s idle. */
    private static final ExecutorService COPIERS = new java.util.concurrent.ThreadPoolExecutor(0, Integer.MAX_VALUE,
            1, java.util.concurrent.TimeUnit.SECONDS, new java.util.concurrent.SynchronousQueue<>(), r -> {
                Thread t = new Thread(r, "vmfork-freeze-copy");
                t.setDaemon(true);
                return t;
            });
    /** Pages a background copy takes between two looks at the write faults waiting. */
    static final int COPY_CHUNK_PAGES = 16;
    /** userfaultfd for write-protect copies, opened at the first; -1 before. */
    private int uffd = -1;
    /** The view address registered with {@link #uffd}, 0 when none. */
    private long registeredView;
    /** The background copy of the last freeze, until it has finished. */
    private WriteProtectCopy copying;

    private GuestMemory(String name, long size, int maxExtents) {
        this.name = name;
        this.size = size;
        this.maxExtents = maxExtents;
    }

    /** Fresh zeroed RAM: a new memfd, mapped shared so that the memfd holds the guest's writes. */
    public static GuestMemory create(String name, long size, int maxExtents) {
        GuestMemory m = new GuestMemory(name, size, maxExtents);
        Memfd fd = Memfd.create(name, size);
        try {
            m.own = fd;
            m.setView(fd.map(true, name));
            return m;
        } catch (RuntimeException e) {
            fd.close();
            throw e;
        }
    }

    /** A private copy-on-write view of {@code image}; takes a reference to it. */
    public static GuestMemory fromImage(String name, RuntimeImage image, int maxExtents) {
        return fromImage(name, image, maxExtents, null);
    }

    /**
     * As above, placed over {@code reserved} when not null (an address range of the image's
     * size that a KVM memory slot may already point at), which it takes ownership of.
     */
    public static GuestMemory fromImage(String name, RuntimeImage image, int maxExtents, Mapping reserved) {
        GuestMemory m = new GuestMemory(name, image.size(), maxExtents);
        Mapping v = reserved == null ? image.mapPrivate(name) : image.mapPrivateAt(reserved, name);
        m.image = image.retain();
        m.setView(v);
        return m;
    }

    /**
     * The process platform's RAM of a VM started from {@code image} (a fork child, a
     * clone): private to the guest process, which maps the image itself; the VMM has no
     * view and reaches the RAM through the process ({@link #attachProcess}). Takes a
     * reference to the image.
     */
    public static GuestMemory forProcess(String name, RuntimeImage image, int maxExtents) {
        GuestMemory m = new GuestMemory(name, image.size(), maxExtents);
        m.image = image.retain();
        return m;
    }

    /** From now on the VMM reads and writes this RAM in process {@code pid}, which maps it privately. */
    public void attachProcess(int pid) {
        processPid = pid;
    }

    /**
     * The process platform's freeze: the VM is paused, its RAM private to its process (or
     * still the shared RAM file, at its first freeze). {@code written}: the runs its
     * process wrote since it started, which are copied into a new overlay layer. Returns
     * the image; when {@code viewChanged}, the VM must go on in a new process mapping that
     * image privately ({@link #attachProcess} it before the VM resumes).
     */
    public synchronized Freeze freezeProcess(List<Run> written) {
        checkOpen();
        if (image == null) {
            // First freeze: the RAM file becomes the image, nothing is copied; the VMM's
            // shared view of it goes once the VM runs again (resumed()).
            image = RuntimeImage.ofBase(own);
            own = null;
            pendingOld = view;
            view = null;
            base = null;
            return new Freeze(image.retain(), true, 0, 0);
        }
        if (written.isEmpty()) {
            return new Freeze(image.retain(), false, 0, 0);
        }
        Memfd layer = takeLayerFile();
        RuntimeImage next;
        long pages = 0;
        try {
            for (Run r : written) {
                copyToLayer(layer, r.offset(), r.length());
                pages += r.length() / PAGE_SIZE;
            }
            next = image.overlay(layer, written);
        } catch (RuntimeException e) {
            layer.close();
            throw e;
        }
        if (next.extentCount() > maxExtents) {
            RuntimeImage compact = next.compact(name + "-compact");
            next.release();
            next = compact;
        }
        replace(next);
        topLayerPages = pages;
        return new Freeze(image.retain(), true, (int) pages, 0);
    }

    /**
     * Copies guest pages {@code [gpa, gpa + len)} from the guest process into {@code layer}
     * at the same offsets: process_vm_readv into a bounce buffer, then pwrite. Not through a
     * mapping of the layer: each page of that mapping would take a page fault in the VMM,
     * and a fault is dear under a PVM host's shadow paging (~15-19 us a page here: 277 ms of
     * the parent's pause for 64 MiB rewritten), where pwrite fills the file's pages in the
     * kernel without mapping them.
     */
    private void copyToLayer(Memfd layer, long gpa, long len) {
        if (bounce == null) {
            bounce = new Memory(BOUNCE_BYTES);
            bounce.clear(); // its pages faulted in once, here, not per copy
        }
        for (long done = 0; done < len; done += BOUNCE_BYTES) {
            long n = Math.min(BOUNCE_BYTES, len - done);
            readProcess(bounce, gpa + done, n);
            LibC.pwriteFully(layer.fd(), bounce, n, gpa + done, name + " layer");
        }
    }

    /** The bounce buffer of {@link #copyToLayer}, made at this VM's first copy and freed at close. Under this. */
    private Memory bounce;
    private static final int BOUNCE_BYTES = 256 << 10;

    private void readProcess(Pointer dst, long gpa, long len) {
        long done = 0;
        while (done < len) {
            long n = Processes.read(processPid, gpa + done, dst.share(done), len - done);
            if (n <= 0) {
                throw new GuestAccessException(gpa + done, len - done, size);
            }
            done += n;
        }
    }

    private void writeProcess(long gpa, Pointer src, long len) {
        long done = 0;
        while (done < len) {
            long n = Processes.write(processPid, gpa + done, src.share(done), len - done);
            if (n <= 0) {
                throw new GuestAccessException(gpa + done, len - done, size);
            }
            done += n;
        }
    }

    private void setView(Mapping v) {
        view = v;
        base = v.pointer();
    }

    public long size() {
        return size;
    }

    /** The RAM file while the view is still shared (a booted VM before its first freeze); -1 after. */
    public synchronized int sharedFileDescriptor() {
        return own != null ? own.fd() : -1;
    }

    /** Host virtual address of guest-physical 0, for KVM_SET_USER_MEMORY_REGION. */
    public long hostAddress() {
        return view.address();
    }

    /** True once the view is private over a runtime image (and KVM should log dirty pages). */
    public synchronized boolean isPrivate() {
        return image != null;
    }

    /**
     * The outcome of a freeze: {@code pagesCopied} while the VM was paused,
     * {@code pagesDeferred} write-protected and copied after it resumes.
     */
    public record Freeze(RuntimeImage image, boolean viewChanged, int pagesCopied, int pagesDeferred,
            long protectNanos) {
        Freeze(RuntimeImage image, boolean viewChanged, int pagesCopied, int pagesDeferred) {
            this(image, viewChanged, pagesCopied, pagesDeferred, 0);
        }
    }

    /** Figures of a finished background copy, for logs and benchmarks. */
    public record CopyStats(long pages, long faults, long pagesCopiedForFaults, long maxFaultBatchNanos,
            long nanos) {
    }

    /**
     * Freezes RAM into a runtime image. The VM must be paused. {@code guestDirty} are the
     * pages the guest wrote since the last freeze (KVM's dirty log), ignored on the first.
     * Returns the image with a reference for the caller. When {@code viewChanged}, the
     * caller must point KVM's memory slot at {@link #hostAddress()} and then call
     * {@link #resumed} once the VM runs again.
     */
    public synchronized Freeze freeze(BitSet guestDirty) {
        return freeze(guestDirty, Integer.MAX_VALUE);
    }

    /**
     * As {@link #freeze(BitSet)}; when more than {@code backgroundPages} pages were written
     * since the last freeze, they are copied after the VM resumes, under write protection
     * (see the class comment), and the image returned is ready once they are.
     */
    public synchronized Freeze freeze(BitSet guestDirty, int backgroundPages) {
        return freeze(guestDirty, backgroundPages, new BitSet());
    }

    /**
     * As above; {@code copyNow}: pages the caller will write right after the VM resumes
     * (a FORK's result): copied during the pause even when the rest is deferred, so that
     * those writes do not wait for the copier.
     */
    public synchronized Freeze freeze(BitSet guestDirty, int backgroundPages, BitSet copyNow) {
        checkOpen();
        awaitCopy();
        if (image == null) {
            // First freeze: the RAM file itself becomes the image; nothing is copied.
            image = RuntimeImage.ofBase(own);
            own = null;
            pendingOld = view;
            setView(image.mapPrivate(name));
            vmmDirty.clear();
            // One write (of the byte already there) now, while the VM is paused: the first
            // write fault in a private mapping sets up its anonymous memory under the memory
            // map lock, which the unmap of the old view (after the pause) holds for tens of
            // ms at 1 GiB; later faults take only their mapping's own lock.
            base.setByte(0, base.getByte(0));
            vmmDirty.set(0);
            return new Freeze(image.retain(), true, 0, 0);
        }
        BitSet dirty = (BitSet) guestDirty.clone();
        dirty.or(vmmDirty);
        if (dirty.isEmpty()) {
            return new Freeze(image.retain(), false, 0, 0);
        }
        int pages = dirty.cardinality();
        if (pages > backgroundPages) {
            Freeze f = freezeInBackground(dirty, pages, copyNow);
            if (f != null) {
                return f;
            }
        }
        // Later freezes copy only the pages written since the previous one into a thin
        // overlay layer. The VM keeps its current view: its own copies of those pages are
        // already private to it, so it neither re-faults its working set nor stalls on
        // an unmap. (Those pages then exist twice: in the VM and in the image.)
        List<Run> runs = runsOf(dirty);
        Memfd layer = takeLayerFile();
        RuntimeImage next;
        try {
            copyInto(layer, runs);
            next = image.overlay(layer, runs);
        } catch (RuntimeException e) {
            layer.close();
            throw e;
        }
        boolean compacted = next.extentCount() > maxExtents;
        if (compacted) {
            RuntimeImage compact = next.compact(name + "-compact");
            next.release();
            next = compact;
        }
        replace(next);
        topLayerPages = compacted ? Long.MAX_VALUE : pages;
        vmmDirty.clear();
        return new Freeze(image.retain(), false, pages, 0);
    }

    /**
     * The write-protect freeze, or null when the image would need compaction (too many
     * extents: that copies every overlay page, so it stays on the paused path).
     */
    private Freeze freezeInBackground(BitSet dirty, int pages, BitSet copyNow) {
        List<Run> runs = runsOf(dirty);
        // Extents after this freeze: at most the current ones, split by the new runs, plus them.
        if (image.extentCount() + 2L * runs.size() > maxExtents) {
            return null;
        }
        BitSet now = (BitSet) dirty.clone();
        now.and(copyNow);
        BitSet later = (BitSet) dirty.clone();
        later.andNot(now);
        List<Run> deferred = runsOf(later);
        long[] flat = new long[deferred.size() * 2];
        for (int i = 0; i < deferred.size(); i++) {
            flat[2 * i] = deferred.get(i).offset();
            flat[2 * i + 1] = deferred.get(i).length();
        }
        if (uffd < 0) {
            uffd = HostHelper.uffdOpen();
        }
        if (registeredView != view.address()) {
            HostHelper.uffdRegisterWriteProtect(uffd, view.address(), size);
            registeredView = view.address();
        }
        Memfd layer = takeLayerFile();
        int stopFd;
        try {
            copyInto(layer, runsOf(now));
            stopFd = HostHelper.stopFd();
        } catch (RuntimeException e) {
            layer.close();
            throw e;
        }
        long t0 = System.nanoTime();
        try {
            HostHelper.uffdProtectRuns(uffd, view.address(), flat);
            lastProtectNanos = System.nanoTime() - t0;
        } catch (RuntimeException e) {
            layer.close();
            LibC.closeQuietly(stopFd);
            throw e;
        }
        // From here on the pages are protected: the copy must run, whatever happens.
        CompletableFuture<Void> filled = new CompletableFuture<>();
        RuntimeImage next = image.overlay(layer, runs, filled);
        WriteProtectCopy job = new WriteProtectCopy(this, next.retain(), layer.fd(), stopFd, flat, filled);
        copying = job; // started by resumed(), or by whoever must wait for it
        replace(next);
        topLayerPages = pages;
        vmmDirty.clear();
        return new Freeze(image.retain(), false, now.cardinality(), later.cardinality(), lastProtectNanos);
    }

    /** Copies {@code runs} of the current view into {@code layer}, at the same offsets. */
    private void copyInto(Memfd layer, List<Run> runs) {
        for (Run r : runs) {
            LibC.pwriteFully(layer.fd(), base.share(r.offset()), r.length(), r.offset(), name + " layer");
        }
    }

    /** An empty file for a new overlay layer: the one made ahead ({@link #prepareLayerFile}), or a new one. */
    private Memfd takeLayerFile() {
        Memfd f = spareLayer;
        spareLayer = null;
        return f != null ? f : Memfd.create(name + "-layer", size);
    }

    /**
     * Makes the file the next freeze's layer will be, if there is none yet: memfd_create and
     * ftruncate cost a freeze (the VM paused) some 30 us otherwise. Called after a fork,
     * once the VM runs again.
     */
    public synchronized void prepareLayerFile() {
        if (!closed && spareLayer == null && image != null) {
            spareLayer = Memfd.create(name + "-layer", size);
        }
    }

    private Memfd spareLayer;

    /** The image becomes {@code next}; the one it replaces is released by {@link #resumed}. */
    private void replace(RuntimeImage next) {
        if (replaced != null) {
            releaseLater(replaced); // resumed() was not called after the previous freeze
        }
        replaced = image;
        image = next;
    }

    /** An image a freeze replaced, still to be released once the VM runs again. */
    private RuntimeImage replaced;

    /**
     * The VM runs again after a freeze (and its copies are launched): starts the background
     * copy of a write-protect freeze (until it runs, a write of the VM's to a protected page
     * waits), unmaps the view a first freeze replaced and releases the image a freeze
     * replaced. Each competes for the CPU and the memory map lock with the pause and the
     * launches, so none happens before. Idempotent; the fork path calls it right after it
     * resumes the VM, on every path.
     */
    public synchronized void resumed() {
        WriteProtectCopy job = copying;
        if (job != null) {
            job.start();
        }
        retireOldView();
        if (replaced != null) {
            releaseLater(replaced);
            replaced = null;
        }
    }

    /** Waits for the background copy of the previous freeze, if one still runs. */
    private void awaitCopy() {
        WriteProtectCopy job = copying;
        if (job != null) {
            job.start();
            job.finish();
            copying = null;
        }
    }

    /** Figures of the last background copy once it has finished, else null. */
    public CopyStats lastCopy() {
        return lastCopyStats;
    }

    private volatile CopyStats lastCopyStats;
    private volatile long lastProtectNanos;

    /**
     * How long the kernel took to write-protect the pages of the last freeze that deferred
     * its copy (UFFDIO_WRITEPROTECT, inside the VM's pause); 0 before any.
     */
    public long lastProtectNanos() {
        return lastProtectNanos;
    }

    /**
     * One background copy: runs {@link HostHelper#wpCopy} on a copier thread, then
     * completes the image's readiness (or fails it) and lets go of the image.
     */
    private static final class WriteProtectCopy implements Runnable {
        private final GuestMemory memory;
        private final RuntimeImage image;
        private final int layerFd;
        private final int stopFd;
        private final long[] runs;
        private final CompletableFuture<Void> filled;
        private final long queued = System.nanoTime();
        final CompletableFuture<Void> done = new CompletableFuture<>();

        WriteProtectCopy(GuestMemory memory, RuntimeImage image, int layerFd, int stopFd, long[] runs,
                CompletableFuture<Void> filled) {
            this.memory = memory;
            this.image = image;
            this.layerFd = layerFd;
            this.stopFd = stopFd;
            this.runs = runs;
            this.filled = filled;
        }

        @Override
        public void run() {
            long[] stats = new long[4];
            int rc;
            try {
                rc = HostHelper.wpCopy(memory.uffd, stopFd, memory.view.address(), memory.size, layerFd, runs,
                        COPY_CHUNK_PAGES, stats);
            } catch (Throwable t) {
                rc = -Errno.EIO;
                filled.completeExceptionally(t);
            }
            memory.lastCopyStats = new CopyStats(stats[2], stats[0], stats[1], stats[3], System.nanoTime() - queued);
            if (rc == 0) {
                filled.complete(null);
            } else {
                filled.completeExceptionally(new NativeCallException(
                        "write-protect copy of " + memory.name + " (" + (rc == -Errno.ECANCELED ? "stopped" : "failed")
                                + ")", -rc));
            }
            image.release();
            done.complete(null);
        }

        private final java.util.concurrent.atomic.AtomicBoolean started = new java.util.concurrent.atomic.AtomicBoolean();

        /** Starts the copy on a copier thread (once). */
        void start() {
            if (started.compareAndSet(false, true)) {
                COPIERS.execute(this);
            }
        }

        /** Asks the copy to stop early; the stop fd stays open until {@link #finish}. */
        void stop() {
            HostHelper.stopSignal(stopFd);
        }

        /** Waits for the copy to end and closes its stop fd (the owner's, so never closed twice). */
        void finish() {
            done.join();
            LibC.closeQuietly(stopFd);
        }
    }

    private Mapping pendingOld;

    /**
     * Drops this object's reference to an image it has replaced, in the background: when it
     * is the last one, its layers' memfds close, and freeing a layer of 1 GiB takes a
     * quarter of a second, which must not happen while the VM is paused. close() waits.
     */
    private void releaseLater(RuntimeImage old) {
        long layerPages = topLayerPages;
        if (layerPages <= RELEASE_INLINE_PAGES) {
            // What this can free is at most the last freeze's few pages: quicker here than
            // waking another thread (which would then compete with the copies being launched).
            old.release();
            return;
        }
        retiring.removeIf(CompletableFuture::isDone);
        retiring.add(CompletableFuture.runAsync(old::release, RETIRER));
    }

    /** Pages in the image's newest layer (those a replacement may free); the base counts as large. */
    private long topLayerPages = Long.MAX_VALUE;
    private static final long RELEASE_INLINE_PAGES = 256;

    /** Unmaps the view a freeze replaced, in the background; close() waits for it. */
    public synchronized void retireOldView() {
        Mapping old = pendingOld;
        pendingOld = null;
        if (old != null) {
            retiring.removeIf(CompletableFuture::isDone);
            retiring.add(CompletableFuture.runAsync(old::close, RETIRER));
        }
    }

    private static List<Run> runsOf(BitSet pages) {
        List<Run> runs = new ArrayList<>();
        for (int p = pages.nextSetBit(0); p >= 0; ) {
            int end = pages.nextClearBit(p);
            runs.add(new Run(p * PAGE_SIZE, (end - p) * PAGE_SIZE));
            p = pages.nextSetBit(end);
        }
        return runs;
    }

    /** Reads a KVM dirty-log bitmap (one bit a page, little-endian 64-bit words) into a BitSet. */
    public static BitSet bitmapToPages(Memory bitmap, long pages) {
        long[] words = bitmap.getLongArray(0, (int) ((pages + 63) / 64));
        return BitSet.valueOf(words);
    }

    private void checkOpen() {
        if (closed) {
            throw new IllegalStateException("guest memory " + name + " is closed");
        }
    }

    // ---- bounds-checked access ---------------------------------------------------------

    /** True if {@code [gpa, gpa+len)} lies inside guest RAM (no overflow, len may be 0). */
    public boolean contains(long gpa, long len) {
        return gpa >= 0 && len >= 0 && gpa <= size && len <= size - gpa;
    }

    private void check(long gpa, long len) {
        if (!contains(gpa, len)) {
            throw new GuestAccessException(gpa, len, size);
        }
    }

    private void written(long gpa, long len) {
        if (len > 0 && image != null) {
            synchronized (vmmDirty) {
                vmmDirty.set((int) (gpa / PAGE_SIZE), (int) ((gpa + len - 1) / PAGE_SIZE) + 1);
            }
        }
    }

    /**
     * A native buffer per thread for reads and writes through a guest process: a JNA
     * Memory per access (malloc plus a cleaner registration) cost more than the
     * process_vm_readv itself on the hypercall path.
     */
    private static final int SCRATCH_BYTES = 64 << 10;
    private static final ThreadLocal<Memory> SCRATCH = ThreadLocal.withInitial(() -> new Memory(SCRATCH_BYTES));

    public byte[] read(long gpa, int len) {
        check(gpa, len);
        if (processPid != 0) {
            if (len == 0) {
                return new byte[0];
            }
            if (len <= SCRATCH_BYTES) {
                Memory m = SCRATCH.get();
                readProcess(m, gpa, len);
                return m.getByteArray(0, len);
            }
            try (Memory m = new Memory(len)) {
                readProcess(m, gpa, len);
                return m.getByteArray(0, len);
            }
        }
        return base.getByteArray(gpa, len);
    }

    public void write(long gpa, byte[] data) {
        write(gpa, data, 0, data.length);
    }

    public void write(long gpa, byte[] data, int off, int len) {
        check(gpa, len);
        if (processPid != 0) {
            if (len > 0 && len <= SCRATCH_BYTES) {
                Memory m = SCRATCH.get();
                m.write(0, data, off, len);
                writeProcess(gpa, m, len);
            } else if (len > 0) {
                try (Memory m = new Memory(len)) {
                    m.write(0, data, off, len);
                    writeProcess(gpa, m, len);
                }
            }
            return; // the process's own written pages are its dirty log
        }
        base.write(gpa, data, off, len);
        written(gpa, len);
    }

    public long readLong(long gpa) {
        check(gpa, 8);
        if (processPid != 0) {
            return java.nio.ByteBuffer.wrap(read(gpa, 8)).order(java.nio.ByteOrder.LITTLE_ENDIAN).getLong();
        }
        return base.getLong(gpa);
    }

    public void writeLong(long gpa, long value) {
        check(gpa, 8);
        if (processPid != 0) {
            write(gpa, java.nio.ByteBuffer.allocate(8).order(java.nio.ByteOrder.LITTLE_ENDIAN).putLong(value).array());
            return;
        }
        base.setLong(gpa, value);
        written(gpa, 8);
    }

    public int readInt(long gpa) {
        check(gpa, 4);
        if (processPid != 0) {
            return java.nio.ByteBuffer.wrap(read(gpa, 4)).order(java.nio.ByteOrder.LITTLE_ENDIAN).getInt();
        }
        return base.getInt(gpa);
    }

    public void writeInt(long gpa, int value) {
        check(gpa, 4);
        if (processPid != 0) {
            write(gpa, java.nio.ByteBuffer.allocate(4).order(java.nio.ByteOrder.LITTLE_ENDIAN).putInt(value).array());
            return;
        }
        base.setInt(gpa, value);
        written(gpa, 4);
    }

    public byte readByte(long gpa) {
        check(gpa, 1);
        if (processPid != 0) {
            return read(gpa, 1)[0];
        }
        return base.getByte(gpa);
    }

    /** Releases the view (waiting for retired ones), the image reference and the RAM file. */
    @Override
    public void close() {
        List<CompletableFuture<Void>> pending;
        WriteProtectCopy job;
        synchronized (this) {
            if (closed) {
                return;
            }
            closed = true;
            job = copying;
            copying = null;
            if (bounce != null) {
                bounce.close();
                bounce = null;
            }
        }
        if (job != null) {
            // The copier reads this view: it must have stopped (every page writable again) first.
            job.start(); // if never started: it sees the stop at once and lifts the protection
            job.stop();
            job.finish();
        }
        synchronized (this) {
            pending = List.copyOf(retiring);
            if (pendingOld != null) {
                pendingOld.close();
                pendingOld = null;
            }
        }
        for (CompletableFuture<Void> f : pending) {
            f.join();
        }
        try {
            if (view != null) {
                view.close();
            }
        } finally {
            synchronized (this) {
                if (image != null) {
                    image.release();
                    image = null;
                }
                if (own != null) {
                    own.close();
                    own = null;
                }
                if (uffd >= 0) {
                    LibC.closeQuietly(uffd);
                    uffd = -1;
                }
                if (spareLayer != null) {
                    spareLayer.close();
                    spareLayer = null;
                }
                if (replaced != null) {
                    replaced.release();
                    replaced = null;
                }
            }
        }
    }
}
