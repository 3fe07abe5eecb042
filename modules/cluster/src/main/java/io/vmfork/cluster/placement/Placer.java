package io.vmfork.cluster.placement;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.TreeMap;

/**
 * The placement policies, as a plain class (no actors; unit-tested alone). It chooses a
 * host for each copy in turn, taking each chosen copy out of that host's room before
 * choosing the next, so that one request never over-commits a host and a batch spreads
 * as the policy says. The only state is the round-robin position of {@code spread}.
 */
public final class Placer {
    /** The forking host of a request for new VMs, which have none. */
    public static final long NO_HOST = -1;

    private long spreadLast = Long.MIN_VALUE;

    /**
     * Chooses hosts for up to {@code count} VMs of the given size.
     *
     * @param rooms the hosts that may be chosen, each with its room
     * @return the chosen host ids, one per VM, in order; shorter than {@code count} when
     *         the hosts ran out of room
     */
    public List<Long> place(PlacementPolicy policy, List<HostRoom> rooms, int count, long forkingHostId,
                            long memoryPerVm, int vcpusPerVm) {
        if (count < 0 || memoryPerVm < 0 || vcpusPerVm < 0) {
            throw new IllegalArgumentException("negative request: " + count + " VMs of " + memoryPerVm
                    + " bytes, " + vcpusPerVm + " vCPUs");
        }
        TreeMap<Long, HostRoom> left = new TreeMap<>();
        for (HostRoom r : rooms) {
            left.put(r.hostId(), r);
        }
        List<Long> chosen = new ArrayList<>(Math.min(count, 1024));
        for (int i = 0; i < count; i++) {
            List<HostRoom> fit = new ArrayList<>();
            for (HostRoom r : left.values()) {
                if (r.fits(memoryPerVm, vcpusPerVm)) {
                    fit.add(r);
                }
            }
            if (fit.isEmpty()) {
                break;
            }
            HostRoom pick = switch (policy) {
                case LEAST_LOADED -> leastLoaded(fit);
                case PACK -> fit.stream()
                        .min(Comparator.comparingInt(HostRoom::freeSlots).thenComparingLong(HostRoom::hostId))
                        .orElseThrow();
                case SPREAD -> spread(fit);
                case LOCAL_FIRST -> fit.stream().filter(r -> r.hostId() == forkingHostId).findFirst()
                        .orElseGet(() -> leastLoaded(fit));
            };
            chosen.add(pick.hostId());
            left.put(pick.hostId(), pick.less(memoryPerVm, vcpusPerVm));
        }
        return chosen;
    }

    private static HostRoom leastLoaded(List<HostRoom> fit) {
        return fit.stream()
                .min(Comparator.comparingInt(HostRoom::freeSlots).reversed()
                        .thenComparing(Comparator.comparingLong(HostRoom::freeMemory).reversed())
                        .thenComparingLong(HostRoom::hostId))
                .orElseThrow();
    }

    // fit is in host-id order: the first host after the last one chosen, else the first.
    private HostRoom spread(List<HostRoom> fit) {
        HostRoom pick = fit.stream().filter(r -> r.hostId() > spreadLast).findFirst().orElse(fit.get(0));
        spreadLast = pick.hostId();
        return pick;
    }
}
