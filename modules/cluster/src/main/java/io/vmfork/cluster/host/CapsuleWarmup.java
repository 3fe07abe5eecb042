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
 * of a real VM (the shipped {@code spin} guest, booted, captured and stopped at once) and its
 * memory with a 32 MiB window of random bytes, written as a capsule and read back (and
 * verified) in memory a few times.
 * A fresh JVM runs that code (SHA-256, CRC-32C, Protobuf framing, the memfd writes) before
 * the JIT has compiled it: a node's first clone capsule was read 5 to 8 times slower
 * than later ones; with this, `./vmfork demo`'s clones answered after 840 / 747 ms instead
 * of 1,161 / 1,642 ms (two runs each, docs/configuration.md). The VM is the VMM's alone: no
 * placement, no admission, no lifecycle event.
 */
final class CapsuleWarmup {
    private static final Logger log = LoggerFactory.getLogger(CapsuleWarmup.class);
    private static final int ROUNDS = 3;
    private static final long DATA = 32L << 20;
    private static final long DATA_AT = 4L << 20;

    private CapsuleWarmup() {
    }

    /**
     * Runs the rounds on the calling thread; never throws (a failed warm-up only costs
     * speed, and is logged). True when every round's capsule was read back and verified.
     */
    static boolean run(Vmm vmm) {
        long t0 = System.nanoTime();
        VirtualMachine vm = null;
        try {
            vm = vmm.launch(VmSpec.of(Guests.shipped("spin"), DATA_AT + DATA + (16L << 20)));
            try (VirtualMachine.Snapshot snap = vm.snapshot()) {
                vm.stop();
                byte[] block = new byte[1 << 20];
                new Random(42).nextBytes(block);
                // The VM's own pages, with the window [DATA_AT, DATA_AT + DATA) replaced by
                // random bytes: a capsule the reader accepts (boot info and all), of some size.
                io.vmfork.vmm.memory.RuntimeImage real = snap.image();
                long end = DATA_AT + DATA;
                List<MemorySource.Run> runs = new java.util.ArrayList<>();
                for (MemorySource.Run r : real.dataRuns()) {
                    long rEnd = r.offset() + r.length();
                    if (r.offset() < DATA_AT) {
                        runs.add(new MemorySource.Run(r.offset(), Math.min(rEnd, DATA_AT) - r.offset()));
                    }
                    if (rEnd > end) {
                        long from = Math.max(r.offset(), end);
                        runs.add(new MemorySource.Run(from, rEnd - from));
                    }
                }
                runs.add(new MemorySource.Run(DATA_AT, DATA));
                runs.sort(java.util.Comparator.comparingLong(MemorySource.Run::offset));
                MemorySource synthetic = new MemorySource() {
                    @Override
                    public long size() {
                        return real.size();
                    }

                    @Override
                    public List<Run> dataRuns() {
                        return runs;
                    }

                    @Override
                    public void read(long offset, byte[] dst, int dstOff, int length) {
                        for (int done = 0; done < length; ) {
                            long at = offset + done;
                            int n;
                            if (at >= DATA_AT && at < end) {
                                int in = (int) ((at - DATA_AT) % block.length);
                                n = (int) Math.min(Math.min(length - done, block.length - in), end - at);
                                System.arraycopy(block, in, dst, dstOff + done, n);
                            } else {
                                n = (int) Math.min(length - done, at < DATA_AT ? DATA_AT - at : Long.MAX_VALUE);
                                real.read(at, dst, dstOff + done, n);
                            }
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
            return true;
        } catch (Exception | LinkageError e) {
            log.warn("capsule warm-up failed (the first clone capsule will be slower): {}", e.toString());
            return false;
        } finally {
            if (vm != null) {
                vm.stop();
            }
        }
    }
}
