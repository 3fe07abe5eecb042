package io.vmfork.vmm.capsule;

import io.vmfork.proto.CapsuleHeader;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.MemorySource;
import java.util.List;

/**
 * A capsule that {@link CapsuleReader} read to its end and verified: its header, the
 * decoded machine state (guest RAM went to the sink), what it held, and for a delta
 * capsule what the new image is made of.
 *
 * @param delta null for a full capsule
 */
public record CapsuleContents(CapsuleHeader header, MachineState state, CapsuleStats stats, Delta delta) {
    /** A full capsule's contents. */
    public CapsuleContents(CapsuleHeader header, MachineState state, CapsuleStats stats) {
        this(header, state, stats, null);
    }

    /**
     * What a delta capsule is over, and which pages it replaced: the new image is
     * {@code base.overlayOf(sinkFile, runs)} ({@link ImageSink#toOverlay}).
     *
     * @param baseKey the key the capsule names its base by
     * @param base    the resolver's image, with the reference the resolver gave: the caller releases it
     * @param runs    the ranges the chunks covered (data and zero runs), ascending, touching ones
     *                merged; without the VMM's area below 0x200000 when read for a restore
     */
    public record Delta(byte[] baseKey, RuntimeImage base, List<MemorySource.Run> runs) {
        public Delta {
            baseKey = baseKey.clone();
            runs = List.copyOf(runs);
        }

        @Override
        public byte[] baseKey() {
            return baseKey.clone();
        }
    }

    public boolean isDelta() {
        return delta != null;
    }
}
