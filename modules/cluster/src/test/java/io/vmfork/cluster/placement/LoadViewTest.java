package io.vmfork.cluster.placement;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import org.junit.jupiter.api.Test;

/** The load view's rules, without actors, on a clock the test moves. */
class LoadViewTest {
    private static final String A = "pekko://vmfork@127.0.0.1:1";
    private static final String B = "pekko://vmfork@127.0.0.1:2";
    private static final long MIB = 1L << 20;

    private final AtomicLong now = new AtomicLong();
    private final LoadView view = new LoadView(Duration.ofSeconds(5), now::get);

    private static HostLoad load(long host, String address, long seq, int vms, List<Long> settled) {
        return load(host, address, "process", seq, vms, settled);
    }

    private static HostLoad load(long host, String address, String platform, long seq, int vms, List<Long> settled) {
        return new HostLoad(host, "h" + host, address, platform, seq, vms, vms * 100 * MIB, vms,
                new Capacity(800 * MIB, 8, 8), settled);
    }

    private static HostRoom room(long host, int slots) {
        return new HostRoom(host, slots, slots * 100 * MIB, slots);
    }

    @Test
    void onlyUpReachableMembersWithAReportAreChosen() {
        view.reports(Map.of(1L, load(1, A, 1, 0, List.of()), 2L, load(2, B, 1, 3, List.of())));
        assertEquals(List.of(), view.rooms());
        view.memberUp(A);
        assertEquals(List.of(room(1, 8)), view.rooms());
        view.memberUp(B);
        assertEquals(List.of(room(1, 8), room(2, 5)), view.rooms());
        view.unreachable(B);
        assertEquals(List.of(room(1, 8)), view.rooms());
        view.reachable(B);
        assertEquals(2, view.rooms().size());
        view.memberLeaving(A);
        assertEquals(List.of(room(2, 5)), view.rooms());
    }

    @Test
    void aRemovedNodesHostsAreForgotten() {
        view.memberUp(A);
        view.memberUp(B);
        view.reports(Map.of(1L, load(1, A, 1, 0, List.of()), 2L, load(2, B, 1, 0, List.of())));
        view.reserve(2, 77, 100 * MIB, 1);
        view.memberRemoved(B);
        assertEquals(java.util.Set.of(1L), view.knownHosts());
        assertEquals(0, view.reservedOn(2));
        // The node comes back (a new incarnation: same host id, new address) and reports.
        String b2 = B + "0";
        view.memberUp(b2);
        view.report(load(2, b2, 1, 0, List.of()));
        assertEquals(List.of(room(1, 8), room(2, 8)), view.rooms());
    }

    @Test
    void reservationsCountUntilAReportSettlesThem() {
        view.memberUp(A);
        view.report(load(1, A, 1, 0, List.of()));
        view.reserve(1, 10, 100 * MIB, 1);
        view.reserve(1, 11, 100 * MIB, 1);
        assertEquals(List.of(room(1, 6)), view.rooms());
        // A report that counts VM 10 (admitted) and says so; 11 is not settled yet.
        view.report(load(1, A, 2, 1, List.of(10L)));
        assertEquals(1, view.reservedOn(1));
        assertEquals(List.of(room(1, 6)), view.rooms());
        // 11 refused by the host: settled, not counted.
        view.report(load(1, A, 3, 1, List.of(10L, 11L)));
        assertEquals(List.of(room(1, 7)), view.rooms());
    }

    @Test
    void reservationsExpireAfterTheTimeout() {
        view.memberUp(A);
        view.report(load(1, A, 1, 0, List.of()));
        view.reserve(1, 10, 100 * MIB, 1);
        now.addAndGet(Duration.ofSeconds(4).toNanos());
        view.reserve(1, 11, 100 * MIB, 1);
        assertEquals(2, view.reservedOn(1));
        now.addAndGet(Duration.ofSeconds(1).toNanos());
        assertEquals(1, view.reservedOn(1));
        assertEquals(List.of(room(1, 7)), view.rooms());
        now.addAndGet(Duration.ofSeconds(4).toNanos());
        assertEquals(List.of(room(1, 8)), view.rooms());
    }

    @Test
    void aStaleReportIsIgnoredAndAHostGoneFromTheMapIsForgotten() {
        view.memberUp(A);
        view.report(load(1, A, 5, 4, List.of()));
        view.report(load(1, A, 4, 0, List.of()));
        assertEquals(List.of(room(1, 4)), view.rooms());
        view.reserve(1, 1, 0, 0);
        view.reports(Map.of());
        assertEquals(List.of(), view.rooms());
        assertEquals(0, view.reservedOn(1));
    }

    @Test
    void eachKnownHostsPlatformIsKeptFromItsLatestReport() {
        view.memberUp(A);
        view.reports(Map.of(1L, load(1, A, "kvm", 1, 0, List.of()), 2L, load(2, B, "process", 1, 0, List.of()),
                3L, load(3, B, "", 1, 0, List.of())));
        view.unreachable(B);
        assertEquals(java.util.Optional.of("kvm"), view.platformOf(1));
        // Known though not chosen (B is unreachable), and "" from a node that does not say.
        assertEquals(java.util.Optional.of("process"), view.platformOf(2));
        assertEquals(java.util.Optional.of(""), view.platformOf(3));
        assertEquals(java.util.Optional.empty(), view.platformOf(4));
        // A node restarted on the other platform (a new incarnation at a new address).
        view.report(load(1, A + "0", "process", 1, 0, List.of()));
        assertEquals(java.util.Optional.of("process"), view.platformOf(1));
        view.memberRemoved(B);
        assertEquals(java.util.Optional.empty(), view.platformOf(2));
    }

    @Test
    void roomNeverGoesNegative() {
        view.memberUp(A);
        view.report(load(1, A, 1, 7, List.of()));
        view.reserve(1, 1, 100 * MIB, 1);
        view.reserve(1, 2, 100 * MIB, 1);
        assertEquals(List.of(new HostRoom(1, 0, 0, 0)), view.rooms());
    }
}
