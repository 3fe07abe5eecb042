package io.vmfork.vmm.memory;

import com.sun.jna.Memory;
import io.vmfork.os.Errno;
import io.vmfork.os.HostHelper;
import io.vmfork.os.LibC;
import io.vmfork.os.Mapping;
import io.vmfork.os.Memfd;
import io.vmfork.os.NativeCallException;
import io.vmfork.vmm.state.MemorySource.Run;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * Freezing and copying a VM's RAM ({@link GuestMemory}): what a fork or snapshot does to
 * it, apart from how the VMM reads and writes it.
 *
 * <p>A booted VM starts with its own memfd mapped MAP_SHARED. At its first freeze that
 * memfd becomes an immutable {@link RuntimeImage} and the VM switches to a MAP_PRIVATE view
 * of it, as its children do (on the process platform, its process maps it). At later
 * freezes only the pages written since the previous one (the guest's, from the platform's
 * dirty log, and the VMM's own, tracked by {@link GuestMemory}) are copied into a new
 * overlay layer; untouched memory is never copied.
 *
 * <p>When more pages were written than {@code backgroundPages} (a freeze argument), the
 * copy happens after the VM resumes: the freeze write-protects those pages in the VM's
 * view (userfaultfd) and returns an image that is not yet {@linkplain RuntimeImage#isReady
 * ready}; a background thread copies the pages into the layer and lifts the protection
 * chunk by chunk, and a page the VM writes before the copier reached it is copied first,
 * while the writer waits. The VM's pause no longer grows with what it wrote; its first
 * write to each such page pays instead.
 */
public final class MemoryFreezer {
    /** Old views are unmapped off the fork's critical path: tearing down 1 GiB of PTEs takes tens of ms. */
    private static final ExecutorService RETIRER = Executors.newSingleThreadExecutor(r -> {
        Thread t = new Thread(r, "vmfork-unmap");
        t.setDaemon(true);
        return t;
    });
    /** Background copies of freezes: one at a time per VM; a thread each, reused, gone after 1 s idle. */
    private static final ExecutorService COPIERS = new java.util.concurrent.ThreadPoolExecutor(0, Integer.MAX_VALUE,
            1, java.util.concurrent.TimeUnit.SECONDS, new java.util.concurrent.SynchronousQueue<>(), r -> {
                Thread t = new Thread(r, "vmfork-freeze-copy");
                t.setDaemon(true);
                return t;
            });
    /** Pages a background copy takes between two looks at the write faults waiting. */
    static final int COPY_CHUNK_PAGES = 16;

    private final GuestMemory memory;
    private final int maxExtents;
    /** The booted VM's own RAM file while it is still mapped shared; null once frozen. */
    private Memfd own;
    /** The image the current private view maps; null while the view is shared. Written under this. */
    private volatile RuntimeImage image;
    private final List<CompletableFuture<Void>> retiring = new ArrayList<>();
    /** userfaultfd for write-protect copies, opened at the first; -1 before. */
    private int uffd = -1;
    /** The view address registered with {@link #uffd}, 0 when none. */
    private long registeredView;
    /** The background copy of the last freeze, until it has finished. */
    private WriteProtectCopy copying;

    /** {@code own}: the booted VM's RAM file, or null; {@code image}: the image a private view maps (a reference taken), or null. */
    MemoryFreezer(GuestMemory memory, int maxExtents, Memfd own, RuntimeImage image) {
        this.memory = memory;
        this.maxExtents = maxExtents;
        this.own = own;
        this.image = image;
    }

    /** The RAM file while the view is still shared (a booted VM before its first freeze); -1 after. */
    public synchronized int sharedFileDescriptor() {
        return own != null ? own.fd() : -1;
    }

    /** True once the RAM is private over a runtime image (and the platform should log dirty pages). */
    public boolean isPrivate() {
        return image != null;
    }

    /**
     * The process platform's freeze: the VM is paused, its RAM private to its process (or
     * still the shared RAM file, at its first freeze). {@code written}: the runs its
     * process wrote since the last freeze ({@code tracked}: its write tracker re-protected
     * them, so the process can go on) or since it started, which are copied into a new
     * overlay layer. Returns the image; when {@code viewChanged}, the VM must go on in a new
     * process mapping that image privately ({@link GuestMemory#attachProcess} it before the
     * VM resumes): at the first freeze, and at every freeze that copied pages of a process
     * whose writes are not tracked.
     */
    public synchronized Freeze freezeProcess(List<Run> written, boolean tracked) {
        memory.checkOpen();
        if (image == null) {
            // First freeze: the RAM file becomes the image, nothing is copied; the VMM's
            // shared view of it goes once the VM runs again (resumed()).
            image = RuntimeImage.ofBase(own);
            own = null;
            pendingOld = memory.detachView();
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
                pages += r.length() / GuestMemory.PAGE_SIZE;
            }
            next = image.overlay(layer, written);
        } catch (RuntimeException e) {
            layer.close();
            throw e;
        }
        if (next.extentCount() > maxExtents) {
            RuntimeImage compact = next.compact(memory.name() + "-compact");
            next.release();
            next = compact;
        }
        replace(next);
        topLayerPages = pages;
        return new Freeze(image.retain(), !tracked, (int) pages, 0);
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
            memory.readProcess(bounce, gpa + done, n);
            LibC.pwriteFully(layer.fd(), bounce, n, gpa + done, memory.name() + " layer");
        }
    }

    /** The bounce buffer of {@link #copyToLayer}, made at this VM's first copy and freed at close. Under this. */
    private Memory bounce;
    private static final int BOUNCE_BYTES = 256 << 10;

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
        memory.checkOpen();
        awaitCopy();
        if (image == null) {
            // First freeze: the RAM file itself becomes the image; nothing is copied.
            image = RuntimeImage.ofBase(own);
            own = null;
            pendingOld = memory.swapView(image.mapPrivate(memory.name()));
            memory.clearVmmDirty();
            // One write (of the byte already there) now, while the VM is paused: the first
            // write fault in a private mapping sets up its anonymous memory under the memory
            // map lock, which the unmap of the old view (after the pause) holds for tens of
            // ms at 1 GiB; later faults take only their mapping's own lock.
            memory.touchFirstPage();
            memory.markVmmDirty(0);
            return new Freeze(image.retain(), true, 0, 0);
        }
        BitSet dirty = (BitSet) guestDirty.clone();
        memory.addVmmDirty(dirty);
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
            RuntimeImage compact = next.compact(memory.name() + "-compact");
            next.release();
            next = compact;
        }
        replace(next);
        topLayerPages = compacted ? Long.MAX_VALUE : pages;
        memory.clearVmmDirty();
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
        if (registeredView != memory.hostAddress()) {
            HostHelper.uffdRegisterWriteProtect(uffd, memory.hostAddress(), memory.size());
            registeredView = memory.hostAddress();
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
            HostHelper.uffdProtectRuns(uffd, memory.hostAddress(), flat);
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
        memory.clearVmmDirty();
        return new Freeze(image.retain(), false, now.cardinality(), later.cardinality(), lastProtectNanos);
    }

    /** Copies {@code runs} of the current view into {@code layer}, at the same offsets. */
    private void copyInto(Memfd layer, List<Run> runs) {
        for (Run r : runs) {
            LibC.pwriteFully(layer.fd(), memory.hostPointer(r.offset()), r.length(), r.offset(), memory.name() + " layer");
        }
    }

    /** An empty file for a new overlay layer: the one made ahead ({@link #prepareLayerFile}), or a new one. */
    private Memfd takeLayerFile() {
        Memfd f = spareLayer;
        spareLayer = null;
        return f != null ? f : Memfd.create(memory.name() + "-layer", memory.size());
    }

    /**
     * Makes the file the next freeze's layer will be, if there is none yet: memfd_create and
     * ftruncate cost a freeze (the VM paused) some 30 us otherwise. Called after a fork,
     * once the VM runs again.
     */
    public synchronized void prepareLayerFile() {
        if (!memory.isClosed() && spareLayer == null && image != null) {
            spareLayer = Memfd.create(memory.name() + "-layer", memory.size());
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
        private final MemoryFreezer freezer;
        private final RuntimeImage image;
        private final int layerFd;
        private final int stopFd;
        private final long[] runs;
        private final CompletableFuture<Void> filled;
        private final long queued = System.nanoTime();
        final CompletableFuture<Void> done = new CompletableFuture<>();

        WriteProtectCopy(MemoryFreezer freezer, RuntimeImage image, int layerFd, int stopFd, long[] runs,
                CompletableFuture<Void> filled) {
            this.freezer = freezer;
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
                rc = HostHelper.wpCopy(freezer.uffd, stopFd, freezer.memory.hostAddress(), freezer.memory.size(), layerFd, runs,
                        COPY_CHUNK_PAGES, stats);
            } catch (Throwable t) {
                rc = -Errno.EIO;
                filled.completeExceptionally(t);
            }
            freezer.lastCopyStats = new CopyStats(stats[2], stats[0], stats[1], stats[3], System.nanoTime() - queued);
            if (rc == 0) {
                filled.complete(null);
            } else {
                filled.completeExceptionally(new NativeCallException(
                        "write-protect copy of " + freezer.memory.name() + " (" + (rc == -Errno.ECANCELED ? "stopped" : "failed")
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
            runs.add(new Run(p * GuestMemory.PAGE_SIZE, (end - p) * GuestMemory.PAGE_SIZE));
            p = pages.nextSetBit(end);
        }
        return runs;
    }

    /** Reads a KVM dirty-log bitmap (one bit a page, little-endian 64-bit words) into a BitSet. */
    public static BitSet bitmapToPages(Memory bitmap, long pages) {
        long[] words = bitmap.getLongArray(0, (int) ((pages + 63) / 64));
        return BitSet.valueOf(words);
    }

    /**
     * Releases what the freezes hold, when the VM's memory closes: the background copy
     * first (it reads the view, which must stay mapped until every page is writable
     * again), then the views and images retired, the image, the RAM file, the userfaultfd,
     * the spare layer and the bounce buffer.
     */
    void close() {
        WriteProtectCopy job;
        synchronized (this) {
            job = copying;
            copying = null;
        }
        if (job != null) {
            job.start(); // if never started: it sees the stop at once and lifts the protection
            job.stop();
            job.finish();
        }
        List<CompletableFuture<Void>> pending;
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
        synchronized (this) {
            if (bounce != null) {
                bounce.close();
                bounce = null;
            }
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
