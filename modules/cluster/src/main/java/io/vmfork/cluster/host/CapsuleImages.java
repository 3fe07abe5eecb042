package io.vmfork.cluster.host;

import io.vmfork.os.Mapping;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.capsule.BaseResolver;
import io.vmfork.vmm.capsule.CapsuleContents;
import io.vmfork.vmm.capsule.CapsuleReader;
import io.vmfork.vmm.capsule.CapsuleWriter;
import io.vmfork.vmm.capsule.ReceivedCapsule;
import io.vmfork.vmm.state.MemorySource;
import java.util.List;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.state.MachineState;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;

/** Clone capsules as the transfer writes and reads them: full, or a delta over a held image. */
final class CapsuleImages {
    private CapsuleImages() {
    }

    /**
     * What {@link #write} sent: a delta or a full capsule, and the data bytes of the full
     * image the receiver now holds (a delta's base figure stands for it).
     */
    record Written(boolean delta, long dataBytes) {
    }

    /** A verified capsule: the state and the image (the caller releases it). */
    record Received(MachineState state, RuntimeImage image, long capsuleBytes, boolean delta) {
    }

    /**
     * Writes the capsule of {@code state} and {@code image} to {@code out}: a delta against
     * {@code base} (the receiver holds it under {@code baseKey}) when both are given and
     * the two images share their lineage and the pages changed since are under half of
     * {@code baseDataBytes} (what the base's capsule carried), else a full capsule.
     */
    static Written write(Vmm vmm, MachineState state, RuntimeImage image, byte[] baseKey, RuntimeImage base,
                         long baseDataBytes, OutputStream out) throws IOException {
        CapsuleWriter writer = CapsuleWriter.create(vmm.capsuleLimits());
        List<MemorySource.Run> changed = base == null || baseKey == null ? null : image.changedSince(base);
        if (changed != null && 2 * bytes(changed) > baseDataBytes) {
            // Mostly rewritten: a full capsule moves no more, and the receiver builds a plain
            // image instead of a layer over one it must then let go of.
            changed = null;
        }
        // A view of its own for this writer, unmapped when it is done (a failed transfer
        // included): writers to several targets read one image at once, and the image
        // outlives them all (the parent's next fork builds on it).
        try (Mapping view = image.mapPrivate("capsule writer")) {
            MemorySource source = new MemorySource() {
                @Override
                public long size() {
                    return image.size();
                }

                @Override
                public List<Run> dataRuns() {
                    return image.dataRuns();
                }

                @Override
                public void read(long offset, byte[] dst, int dstOff, int length) {
                    if (offset < 0 || length < 0 || offset > image.size() - length) {
                        throw new IndexOutOfBoundsException(length + " bytes at " + offset + " outside the image");
                    }
                    view.pointer().read(offset, dst, dstOff, length);
                }
            };
            if (changed != null && changed.size() <= io.vmfork.vmm.capsule.CapsuleLimits.MAX_DELTA_RUNS) {
                writer.writeDelta(out, state, source, changed, baseKey, vmm.hostPlatform());
                return new Written(true, baseDataBytes);
            }
            return new Written(false, writer.write(out, state, source, vmm.hostPlatform()).dataBytes());
        }
    }

    /**
     * Reads and verifies a whole capsule from {@code in} (compatibility with this host first,
     * then the guest model, every chunk, the digest, the end of the stream) into a new image;
     * a delta is laid over {@code base}, the image this host kept under the delta's base key
     * (a delta naming another key is refused). With non-null {@code expected} (what the
     * offer was admitted for) a capsule of another memory size, vCPU count or VM type is
     * refused ({@link io.vmfork.vmm.capsule.CapsuleNotAdmittedException}) as soon as its
     * header or state says so. Nothing is left behind when it throws.
     */
    static Received read(Vmm vmm, InputStream in, byte[] baseKey, RuntimeImage base,
                         CapsuleReader.Expected expected) throws IOException {
        BaseResolver bases = key -> base != null && java.util.Arrays.equals(key, baseKey) ? base.retain() : null;
        ReceivedCapsule r = CapsuleReader.create(vmm.capsuleLimits()).readImage(in, "vmfork-clone",
                vmm.hostPlatform(), vmm.guestRules(), bases, vmm.settings().maxImageExtents(), expected);
        CapsuleContents c = r.contents();
        return new Received(c.state(), r.image(), c.stats().capsuleBytes(), c.delta() != null);
    }

    private static long bytes(List<MemorySource.Run> runs) {
        long n = 0;
        for (MemorySource.Run r : runs) {
            n += r.length();
        }
        return n;
    }

    /** Bytes after which the {@code -mid} failpoints hold. */
    static final long MID = 4L << 20;

    /** Counts what goes through and holds at the failpoints {@code side}-before-first-chunk and {@code side}-mid. */
    static final class Counting {
        private final Failpoints failpoints;
        private final String side;
        private long bytes;

        Counting(Failpoints failpoints, String side) {
            this.failpoints = failpoints;
            this.side = side;
        }

        long bytes() {
            return bytes;
        }

        private void before(long n) {
            if (bytes == 0 && n > 0) {
                failpoints.reach(side + "-before-first-chunk");
            }
            if (bytes < MID && bytes + n >= MID) {
                failpoints.reach(side + "-mid");
            }
        }

        OutputStream wrap(OutputStream out) {
            return new java.io.FilterOutputStream(out) {
                @Override
                public void write(int b) throws IOException {
                    before(1);
                    out.write(b);
                    bytes++;
                }

                @Override
                public void write(byte[] b, int off, int len) throws IOException {
                    before(len);
                    out.write(b, off, len);
                    bytes += len;
                }
            };
        }

        InputStream wrap(InputStream in) {
            return new java.io.FilterInputStream(in) {
                @Override
                public int read() throws IOException {
                    byte[] one = new byte[1];
                    return read(one, 0, 1) < 0 ? -1 : one[0] & 0xff;
                }

                @Override
                public int read(byte[] b, int off, int len) throws IOException {
                    if (bytes == 0) {
                        failpoints.reach(side + "-before-first-chunk");
                    }
                    int n = in.read(b, off, len);
                    if (n > 0) {
                        if (bytes < MID && bytes + n >= MID) {
                            failpoints.reach(side + "-mid");
                        }
                        bytes += n;
                    }
                    return n;
                }
            };
        }
    }
}
