package io.vmfork.vmm;

import io.vmfork.vmm.hypercall.Hypercalls;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

/**
 * One VM's tickets for the copies of its forks that went to other hosts: what FORK_STATUS
 * answers. A ticket is made (in progress) while the VM is paused in its fork and resolved
 * once, from whichever thread learns the copy's outcome; resolving wakes a vCPU waiting
 * in FORK_STATUS. At most {@link #MAX_RESOLVED} resolved tickets are kept, the oldest
 * forgotten first (FORK_STATUS then answers EINVAL for them).
 */
final class RemoteTickets {
    static final int MAX_RESOLVED = 4096;

    /** Where one ticket stands: EINPROGRESS, OK with the clone's id, or a failure status. */
    record Status(long status, long vmId) {
        static final Status IN_PROGRESS = new Status(Hypercalls.EINPROGRESS, 0);

        boolean inProgress() {
            return status == Hypercalls.EINPROGRESS;
        }
    }

    private final RunControl control;
    private final AtomicLong next = new AtomicLong(1);
    private final Map<Long, Status> tickets = new LinkedHashMap<>();
    private int resolved;

    RemoteTickets(RunControl control) {
        this.control = control;
    }

    /** A new ticket, unique in this VM, not in the table (a fork from outside: no guest asks for it). */
    long newTicket() {
        return next.getAndIncrement();
    }

    /** A new ticket in the table, in progress. */
    synchronized long open() {
        long t = newTicket();
        tickets.put(t, Status.IN_PROGRESS);
        return t;
    }

    /** Resolves {@code ticket} (once; later calls are ignored) and wakes FORK_STATUS waiters. */
    void resolve(long ticket, long status, long vmId) {
        synchronized (this) {
            Status s = tickets.get(ticket);
            if (s == null || !s.inProgress()) {
                return;
            }
            tickets.put(ticket, new Status(status, vmId));
            if (++resolved > MAX_RESOLVED) {
                forgetOldestResolved();
            }
        }
        control.signalChange();
    }

    /** The ticket's status, or null if this VM has no such ticket. */
    synchronized Status status(long ticket) {
        return tickets.get(ticket);
    }

    private void forgetOldestResolved() {
        for (Iterator<Status> it = tickets.values().iterator(); it.hasNext();) {
            if (!it.next().inProgress()) {
                it.remove();
                resolved--;
                return;
            }
        }
    }
}
