package io.vmfork.cluster.host;

import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.guest.Guests;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Warms a node's fork path when it starts ({@code vmfork.node.fork-warm-up}): the shipped
 * {@code spin} guest is booted and forked from outside four times (two and four children
 * in turn), each child asked for its id (spin polls its channel) and stopped. A fresh JVM runs the fork path (pause,
 * capture, the move to a new guest process, the children's restore and first run, the
 * request and reply) interpreted and loading its classes: the first fork of a node's
 * first VM paused it 67-107 ms on the process platform where later ones took 7-20 ms
 * (four children of a 256 MiB warm-worker, measured on the development machine).
 * The forks are the VMM's alone ({@link VirtualMachine#forkHere}): no placement, no
 * admission, no lifecycle event.
 */
final class ForkWarmup {
    private static final Logger log = LoggerFactory.getLogger(ForkWarmup.class);
    private static final int ROUNDS = 4;
    /**
     * Children per round: as many as vmfork.vmm.fork.start-together-from (4) in every other
     * round, so that a fan-out's path (children launched on the launch threads, started
     * together) is compiled too, not only a single child's.
     */
    private static final int[] CHILDREN = {2, 4};
    private static final long MEMORY = 16L << 20;
    private static final Duration ANSWER_WITHIN = Duration.ofSeconds(10);

    private ForkWarmup() {
    }

    /**
     * Runs the rounds on the calling thread; never throws (a failed warm-up only costs
     * speed, and is logged). True when every child of every round answered.
     */
    static boolean run(Vmm vmm) {
        long t0 = System.nanoTime();
        VirtualMachine vm = null;
        try {
            vm = vmm.launch(VmSpec.of(Guests.shipped("spin"), MEMORY));
            for (int round = 0; round < ROUNDS; round++) {
                VirtualMachine.ForkResult r = vm.forkHere(CHILDREN[round % CHILDREN.length]);
                try {
                    for (VirtualMachine c : r.children()) {
                        byte[] id = c.channel().request("id".getBytes(StandardCharsets.US_ASCII))
                                .get(ANSWER_WITHIN.toMillis(), TimeUnit.MILLISECONDS);
                        if (!new String(id, StandardCharsets.US_ASCII).startsWith("vm=" + c.id() + " ")) {
                            throw new IllegalStateException("a warm-up child answered '"
                                    + new String(id, StandardCharsets.US_ASCII) + "'");
                        }
                    }
                } finally {
                    r.children().forEach(VirtualMachine::stop);
                }
            }
            log.debug("fork warm-up: {} rounds of {} children in {} ms", ROUNDS,
                    java.util.Arrays.toString(CHILDREN), (System.nanoTime() - t0) / 1_000_000);
            return true;
        } catch (Exception e) {
            log.warn("fork warm-up failed (the first fork will be slower): {}", e.toString());
            return false;
        } finally {
            if (vm != null) {
                vm.stop();
            }
        }
    }
}
