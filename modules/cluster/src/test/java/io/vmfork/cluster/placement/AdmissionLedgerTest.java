package io.vmfork.cluster.placement;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.List;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/** The host's final word on admission, and its reports. */
class AdmissionLedgerTest {
    private static final long MIB = 1L << 20;
    private final AtomicLong now = new AtomicLong();

    @Test
    void admitsOnlyWhatFitsEveryDimension() {
        AdmissionLedger l = new AdmissionLedger(new Capacity(1024 * MIB, 3, 4), Duration.ofSeconds(5), now::get);
        assertTrue(l.admit(1, 512 * MIB, 2));
        assertFalse(l.admit(2, 768 * MIB, 1), "memory");
        assertFalse(l.admit(3, 256 * MIB, 3), "vCPUs");
        assertTrue(l.admit(4, 256 * MIB, 1));
        assertTrue(l.admit(5, 0, 0));
        assertFalse(l.admit(6, 0, 0), "slots");
        assertEquals(3, l.vmCount());
        l.release(0, 0);
        assertTrue(l.admit(AdmissionLedger.NO_RESERVATION, 0, 1));
        assertThrows(IllegalStateException.class, () -> {
            AdmissionLedger empty = new AdmissionLedger(new Capacity(1, 1, 1), Duration.ofSeconds(1), now::get);
            empty.release(0, 0);
        });
    }

    @Test
    void reportsCountTheVmsAndListSettledReservationsForTheRetention() {
        AdmissionLedger l = new AdmissionLedger(new Capacity(1024 * MIB, 1, 4), Duration.ofSeconds(5), now::get);
        assertTrue(l.admit(10, 256 * MIB, 1));
        assertFalse(l.admit(11, 256 * MIB, 1));
        HostLoad r1 = l.report(7, "h7", "pekko://vmfork@h:1", "kvm");
        assertEquals(1, r1.vmCount());
        assertEquals(256 * MIB, r1.memoryUsed());
        assertEquals(0, r1.freeSlots());
        assertEquals(List.of(10L, 11L), r1.settledReservations());
        assertEquals("kvm", r1.platform());
        now.addAndGet(Duration.ofSeconds(6).toNanos());
        HostLoad r2 = l.report(7, "h7", "pekko://vmfork@h:1", "kvm");
        assertEquals(List.of(), r2.settledReservations());
        assertTrue(r2.sequence() > r1.sequence());
    }

    @Test
    void concurrentAdmissionsNeverOverCommit() throws Exception {
        AdmissionLedger l = new AdmissionLedger(new Capacity(8 * 256 * MIB, 8, 8), Duration.ofSeconds(5), now::get);
        ExecutorService pool = Executors.newFixedThreadPool(4);
        AtomicInteger admitted = new AtomicInteger();
        try {
            for (int i = 0; i < 32; i++) {
                long id = i + 1;
                pool.execute(() -> {
                    if (l.admit(id, 256 * MIB, 1)) {
                        admitted.incrementAndGet();
                    }
                });
            }
        } finally {
            pool.shutdown();
            assertTrue(pool.awaitTermination(10, TimeUnit.SECONDS));
        }
        assertEquals(8, admitted.get());
        assertEquals(8, l.vmCount());
        assertEquals(32, l.report(1, "h", "a", "process").settledReservations().size());
    }
}
