package io.vmfork.cluster.placement;

import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Deque;
import java.util.List;
import java.util.function.LongSupplier;

/**
 * A host's side of placement: what its VMs use against its capacity, the final word on
 * admission, and the load reports it publishes. The host (its HostActor) calls
 * {@link #admit} before it launches a VM that placement proposed, {@link #release} when a
 * VM is gone, and publishes {@link #report} through {@link LoadReports}.
 *
 * <p>Admission is checked against what the host really has, never against placement's
 * view: two placement entities (or one with a stale view) may propose the same last slot,
 * and only one gets it. Every reservation id admitted or refused is listed as settled in
 * the reports for {@code settledRetention} (the entities' reservation timeout is enough:
 * past it they stop counting the reservation anyway), so the entities stop counting it as
 * soon as a report covers it.
 *
 * <p>Thread-safe (each method is synchronized), though a HostActor calls it from its own
 * thread only.
 */
public final class AdmissionLedger {
    /** The reservation id of a VM that placement did not propose (e.g. a named host). */
    public static final long NO_RESERVATION = 0;

    private record Settled(long reservationId, long atNanos) {
    }

    private final Capacity capacity;
    private final long settledRetentionNanos;
    private final LongSupplier nanoClock;
    private final Deque<Settled> settled = new ArrayDeque<>();
    private int vms;
    private long memory;
    private int vcpus;
    private long sequence;

    public AdmissionLedger(Capacity capacity, Duration settledRetention, LongSupplier nanoClock) {
        this.capacity = capacity;
        this.settledRetentionNanos = settledRetention.toNanos();
        this.nanoClock = nanoClock;
    }

    /**
     * Admits one VM of this size if it fits the host's capacity now, and counts it.
     *
     * @param reservationId the placement's reservation, or {@link #NO_RESERVATION}
     * @return false (nothing counted) when it would exceed the VM slots, the guest memory
     *         or the vCPUs of this host
     */
    public synchronized boolean admit(long reservationId, long vmMemory, int vmVcpus) {
        if (vmMemory < 0 || vmVcpus < 0) {
            throw new IllegalArgumentException("negative VM size: " + vmMemory + " bytes, " + vmVcpus + " vCPUs");
        }
        boolean fits = vms + 1 <= capacity.vmSlots() && memory + vmMemory <= capacity.guestMemory()
                && vcpus + vmVcpus <= capacity.vcpus();
        if (fits) {
            vms += 1;
            memory += vmMemory;
            vcpus += vmVcpus;
        }
        if (reservationId != NO_RESERVATION) {
            settled.addLast(new Settled(reservationId, nanoClock.getAsLong()));
        }
        return fits;
    }

    /** A VM admitted earlier is gone (exited, crashed, stopped, or its launch failed). */
    public synchronized void release(long vmMemory, int vmVcpus) {
        if (vms == 0 || memory < vmMemory || vcpus < vmVcpus) {
            throw new IllegalStateException("release of a VM that was never admitted: " + vms + " VMs, "
                    + memory + " bytes, " + vcpus + " vCPUs in use");
        }
        vms -= 1;
        memory -= vmMemory;
        vcpus -= vmVcpus;
    }

    /** VMs counted now. */
    public synchronized int vmCount() {
        return vms;
    }

    /**
     * This host's load now, for status: like {@link #report} but changing nothing (the
     * sequence number is the last report's, and settled reservations stay listed).
     */
    public synchronized HostLoad current(long hostId, String hostName, String address, String platform) {
        List<Long> ids = new ArrayList<>(settled.size());
        for (Settled s : settled) {
            ids.add(s.reservationId());
        }
        return new HostLoad(hostId, hostName, address, platform, sequence, vms, memory, vcpus, capacity, ids);
    }

    /**
     * The next load report of this host (each has a higher sequence number), naming the host
     * ({@code hostId}, {@code hostName}), its node's {@code address} and the {@code platform}
     * its guests run on.
     */
    public synchronized HostLoad report(long hostId, String hostName, String address, String platform) {
        long now = nanoClock.getAsLong();
        while (!settled.isEmpty() && now - settled.peekFirst().atNanos() > settledRetentionNanos) {
            settled.removeFirst();
        }
        List<Long> ids = new ArrayList<>(settled.size());
        for (Settled s : settled) {
            ids.add(s.reservationId());
        }
        sequence += 1;
        return new HostLoad(hostId, hostName, address, platform, sequence, vms, memory, vcpus, capacity, ids);
    }
}
