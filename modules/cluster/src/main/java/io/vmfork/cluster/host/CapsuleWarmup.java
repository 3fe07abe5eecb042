package io.vmfork.cluster.host;

import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.capsule.CapsuleReader;
import io.vmfork.vmm.capsule.CapsuleWriter;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.state.MemorySource;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.util.List;
import java.util.Random;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Warms a node's capsule path when it starts ({@code vmfork.transfer.warm-up}): the state
 * of a real VM (the shipped {@code spin} guest, booted, captured and stopped at once) with
 * 32 MiB of synthetic memory, written as a capsule and read back in memory a few times.
 * A fresh JVM runs that code (SHA-256, CRC-32C, Protobuf framing, the memfd writes) before
 * the JIT has compiled it: a node's first clone capsule was read 5 to 8 times slower
 * than later ones; with this, `./vmfork demo`'s clones answered after 648 / 779 ms instead
 * of 1,036 / 889 ms (two runs each, docs/configuration.md). The VM is the VMM's alone: no
 * placement, no admission, no lifecycle event.
 */
final class CapsuleWarmup {
    private static final Logger log = LoggerFactory.getLogger(CapsuleWarmup.class);
    private static final int ROUNDS = 3;
    private static final long DATA = 32L << 20;
    private static final long DATA_AT = 4L << 20;

    private CapsuleWarmup() {
    }

    /** Runs the rounds on the calling thread; never throws (a failed warm-up only costs speed). */
    static void run(Vmm vmm) {
        long t0 = System.nanoTime();
        VirtualMachine vm = null;
        try {
            vm = vmm.launch(VmSpec.of(Guests.resolve("spin"), DATA_AT + DATA));
            try (VirtualMachine.Snapshot snap = vm.snapshot()) {
                vm.stop();
                byte[] block = new byte[1 << 20];
                new Random(42).nextBytes(block);
                MemorySource synthetic = new MemorySource() {
                    @Override
                    public long size() {
                        return snap.state().memorySize();
                    }

                    @Override
                    public List<Run> dataRuns() {
                        return List.of(new Run(DATA_AT, DATA));
                    }

                    @Override
                    public void read(long offset, byte[] dst, int dstOff, int length) {
                        for (int done = 0; done < length; ) {
                            int at = (int) ((offset + done) % block.length);
                            int n = Math.min(length - done, block.length - at);
                            System.arraycopy(block, at, dst, dstOff + done, n);
                            done += n;
                        }
                    }
                };
                for (int r = 0; r < ROUNDS; r++) {
                    ByteArrayOutputStream capsule = new ByteArrayOutputStream((int) DATA + (1 << 20));
                    CapsuleWriter.create(vmm.capsuleLimits()).write(capsule, snap.state(), synthetic,
                            vmm.hostPlatform());
                    CapsuleReader.create(vmm.capsuleLimits()).readImage(new ByteArrayInputStream(
                                    capsule.toByteArray()), "vmfork-warm-up", vmm.hostPlatform(), vmm.guestRules(),
                            null).close();
                }
            }
            log.debug("capsule warm-up: {} rounds of {} MiB in {} ms", ROUNDS, DATA >> 20,
                    (System.nanoTime() - t0) / 1_000_000);
        } catch (Exception | LinkageError e) {
            log.info("capsule warm-up failed (the first clone capsule will be slower): {}", e.toString());
        } finally {
            if (vm != null) {
                vm.stop();
            }
        }
    }
}
