package io.vmfork.cluster.placement;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The placement policies, without actors. */
class PlacerTest {
    private static final long MIB = 1L << 20;

    private static HostRoom room(long host, int slots) {
        return new HostRoom(host, slots, slots * 256 * MIB, slots);
    }

    private static Map<Long, Integer> count(List<Long> hosts) {
        Map<Long, Integer> m = new HashMap<>();
        hosts.forEach(h -> m.merge(h, 1, Integer::sum));
        return m;
    }

    @Test
    void leastLoadedPicksTheHostWithTheMostRoomAndEvensOut() {
        Placer p = new Placer();
        List<HostRoom> rooms = List.of(room(1, 2), room(2, 5), room(3, 4));
        assertEquals(List.of(2L), p.place(PlacementPolicy.LEAST_LOADED, rooms, 1, Placer.NO_HOST, MIB, 1));
        // Most free slots first; on a tie the most free memory (host 2 started with more).
        assertEquals(List.of(2L, 2L, 3L, 2L, 3L, 2L), p.place(PlacementPolicy.LEAST_LOADED, rooms, 6,
                Placer.NO_HOST, MIB, 1));
    }

    @Test
    void spreadGoesRoundRobinAcrossCallsAndSkipsFullHosts() {
        Placer p = new Placer();
        List<HostRoom> rooms = List.of(room(1, 8), room(2, 0), room(3, 8), room(4, 8));
        assertEquals(List.of(1L, 3L), p.place(PlacementPolicy.SPREAD, rooms, 2, Placer.NO_HOST, MIB, 1));
        assertEquals(List.of(4L, 1L, 3L), p.place(PlacementPolicy.SPREAD, rooms, 3, Placer.NO_HOST, MIB, 1));
    }

    @Test
    void packFillsOneHostFirst() {
        Placer p = new Placer();
        List<HostRoom> rooms = List.of(room(1, 3), room(2, 1), room(3, 3));
        // host 2 is the fullest with room: it gets the first, then host 1 (lowest id at 3 free) fills.
        assertEquals(List.of(2L, 1L, 1L, 1L, 3L), p.place(PlacementPolicy.PACK, rooms, 5, Placer.NO_HOST, MIB, 1));
    }

    @Test
    void localFirstUsesTheForkingHostWhileItHasRoom() {
        Placer p = new Placer();
        List<HostRoom> rooms = List.of(room(1, 8), room(2, 3), room(3, 8));
        assertEquals(List.of(2L, 2L, 2L, 1L, 3L), p.place(PlacementPolicy.LOCAL_FIRST, rooms, 5, 2, MIB, 1));
        // No forking host (a new VM), or one that is not among the hosts with room: least-loaded.
        assertEquals(List.of(1L), p.place(PlacementPolicy.LOCAL_FIRST, rooms, 1, Placer.NO_HOST, MIB, 1));
        assertEquals(List.of(1L), p.place(PlacementPolicy.LOCAL_FIRST, rooms, 1, 99, MIB, 1));
    }

    @Test
    void neverPlacesPastAnyDimensionOfRoom() {
        Placer p = new Placer();
        // Host 1 has slots but not memory, host 2 not vCPUs, host 3 room for two.
        List<HostRoom> rooms = List.of(new HostRoom(1, 10, 100 * MIB, 10), new HostRoom(2, 10, 10_000 * MIB, 1),
                new HostRoom(3, 2, 1024 * MIB, 4));
        for (PlacementPolicy policy : PlacementPolicy.values()) {
            assertEquals(List.of(3L, 3L), new Placer().place(policy, rooms, 5, 1, 256 * MIB, 2), policy.name());
        }
        assertEquals(List.of(), p.place(PlacementPolicy.LEAST_LOADED, List.of(), 3, Placer.NO_HOST, MIB, 1));
    }

    @Test
    void aBurstOf32OverThreeHostsOf8NeverOverCommitsAndSpreadsPerPolicy() {
        List<HostRoom> rooms = List.of(room(1, 8), room(2, 8), room(3, 8));
        for (PlacementPolicy policy : PlacementPolicy.values()) {
            Placer p = new Placer();
            List<Long> all = new ArrayList<>();
            List<HostRoom> left = rooms;
            for (int i = 0; i < 32; i++) {
                List<Long> one = p.place(policy, left, 1, 1, MIB, 1);
                all.addAll(one);
                List<HostRoom> next = new ArrayList<>();
                for (HostRoom r : left) {
                    next.add(one.contains(r.hostId()) ? r.less(MIB, 1) : r);
                }
                left = next;
            }
            assertEquals(24, all.size(), policy.name());
            assertEquals(Map.of(1L, 8, 2L, 8, 3L, 8), count(all), policy.name());
            List<Long> first3 = all.subList(0, 3);
            switch (policy) {
                case LEAST_LOADED, SPREAD -> assertEquals(List.of(1L, 2L, 3L), first3, policy.name());
                case PACK, LOCAL_FIRST -> assertEquals(List.of(1L, 1L, 1L), first3, policy.name());
            }
        }
    }

    @Test
    void aNegativeRequestIsRefused() {
        assertThrows(IllegalArgumentException.class,
                () -> new Placer().place(PlacementPolicy.PACK, List.of(), -1, Placer.NO_HOST, 0, 0));
    }
}
