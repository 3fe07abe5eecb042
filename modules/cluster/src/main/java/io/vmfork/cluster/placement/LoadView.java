package io.vmfork.cluster.placement;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Set;
import java.util.TreeMap;
import java.util.function.LongSupplier;

/**
 * A placement entity's view of the cluster's load: the hosts' latest reports (from the
 * replicated {@link LoadReports#KEY}; each also says the host's platform), which of their nodes may be chosen (up and
 * reachable members), and the reservations this entity made since. A plain class, so
 * that its rules are tested without actors:
 *
 * <ul>
 *   <li>a host may be chosen only while its node is an up, reachable member; an
 *       unreachable one stops being chosen at once, a removed one is forgotten;</li>
 *   <li>a reservation counts against its host until a report lists it as settled
 *       (admitted, so counted by the report, or refused), or until it is older than the
 *       reservation timeout;</li>
 *   <li>a report older than the one held (lower sequence from the same node) is ignored.</li>
 * </ul>
 */
public final class LoadView {
    private record Reservation(long id, long memory, int vcpus, long madeAtNanos) {
    }

    private final long reservationTimeoutNanos;
    private final LongSupplier nanoClock;
    private final Map<Long, HostLoad> reports = new TreeMap<>();
    private final Map<Long, List<Reservation>> reservations = new HashMap<>();
    private final Set<String> upMembers = new HashSet<>();
    private final Set<String> unreachable = new HashSet<>();

    public LoadView(Duration reservationTimeout, LongSupplier nanoClock) {
        this.reservationTimeoutNanos = reservationTimeout.toNanos();
        this.nanoClock = nanoClock;
    }

    /**
     * The hosts' reports as replicated now: every host in {@code all} is updated, and a
     * host no longer in it is forgotten with its reservations.
     */
    public void reports(Map<Long, HostLoad> all) {
        reports.keySet().retainAll(all.keySet());
        reservations.keySet().retainAll(all.keySet());
        for (HostLoad load : all.values()) {
            report(load);
        }
    }

    /** One host's report. */
    public void report(HostLoad load) {
        HostLoad held = reports.get(load.hostId());
        if (held != null && held.address().equals(load.address()) && held.sequence() > load.sequence()) {
            return;
        }
        reports.put(load.hostId(), load);
        List<Reservation> rs = reservations.get(load.hostId());
        if (rs != null && !load.settledReservations().isEmpty()) {
            Set<Long> settled = new HashSet<>(load.settledReservations());
            rs.removeIf(r -> settled.contains(r.id()));
        }
    }

    /** A node is an up member (MemberUp, MemberWeaklyUp, or up when the entity started). */
    public void memberUp(String address) {
        upMembers.add(address);
    }

    /** A node is leaving or was downed: no longer chosen, its hosts kept until removal. */
    public void memberLeaving(String address) {
        upMembers.remove(address);
    }

    /** A node was removed from the cluster: its hosts are forgotten. */
    public void memberRemoved(String address) {
        upMembers.remove(address);
        unreachable.remove(address);
        for (Iterator<HostLoad> it = reports.values().iterator(); it.hasNext(); ) {
            HostLoad l = it.next();
            if (l.address().equals(address)) {
                reservations.remove(l.hostId());
                it.remove();
            }
        }
    }

    /** The failure detector lost a node: its hosts stop being chosen at once. */
    public void unreachable(String address) {
        unreachable.add(address);
    }

    /** A node is reachable again. */
    public void reachable(String address) {
        unreachable.remove(address);
    }

    /** The hosts known (reported, not forgotten), chosen or not. */
    public Set<Long> knownHosts() {
        return Set.copyOf(reports.keySet());
    }

    /**
     * The platform host {@code hostId}'s guests run on, "kvm" or "process", as its latest
     * report says ("" from a node of an older version); empty when the host is not known.
     */
    public Optional<String> platformOf(long hostId) {
        HostLoad l = reports.get(hostId);
        return l == null ? Optional.empty() : Optional.of(l.platform());
    }

    /** The host ids whose nodes are {@code address}. */
    public List<Long> hostsAt(String address) {
        List<Long> ids = new ArrayList<>();
        for (HostLoad l : reports.values()) {
            if (l.address().equals(address)) {
                ids.add(l.hostId());
            }
        }
        return ids;
    }

    /** Reservations still counted against {@code hostId}. */
    public int reservedOn(long hostId) {
        expire();
        List<Reservation> rs = reservations.get(hostId);
        return rs == null ? 0 : rs.size();
    }

    /**
     * The room of every host that may be chosen now (up, reachable, reported), its
     * report less its reservations, in host-id order.
     */
    public List<HostRoom> rooms() {
        expire();
        List<HostRoom> rooms = new ArrayList<>();
        for (HostLoad l : reports.values()) {
            if (!upMembers.contains(l.address()) || unreachable.contains(l.address())) {
                continue;
            }
            int slots = l.freeSlots();
            long memory = l.memoryFree();
            int vcpus = l.vcpusFree();
            for (Reservation r : reservations.getOrDefault(l.hostId(), List.of())) {
                slots -= 1;
                memory -= r.memory();
                vcpus -= r.vcpus();
            }
            rooms.add(new HostRoom(l.hostId(), Math.max(0, slots), Math.max(0, memory), Math.max(0, vcpus)));
        }
        return rooms;
    }

    /** Counts a placement against {@code hostId} until a report settles it or it expires. */
    public void reserve(long hostId, long reservationId, long memory, int vcpus) {
        reservations.computeIfAbsent(hostId, h -> new ArrayList<>())
                .add(new Reservation(reservationId, memory, vcpus, nanoClock.getAsLong()));
    }

    private void expire() {
        long now = nanoClock.getAsLong();
        for (List<Reservation> rs : reservations.values()) {
            rs.removeIf(r -> now - r.madeAtNanos() >= reservationTimeoutNanos);
        }
    }
}
