package io.vmfork.cluster.node;

import org.apache.pekko.actor.CoordinatedShutdown;

/**
 * Why a node left the cluster and stopped at once after joining: another member already
 * has its host id (host ids must be unique, since they form the top bits of VM ids).
 */
public final class HostIdConflict implements CoordinatedShutdown.Reason {
    private final long hostId;
    private final String otherMember;

    public HostIdConflict(long hostId, String otherMember) {
        this.hostId = hostId;
        this.otherMember = otherMember;
    }

    public long hostId() {
        return hostId;
    }

    /** The address of the older member that has the same host id. */
    public String otherMember() {
        return otherMember;
    }

    @Override
    public String toString() {
        return "host id " + hostId + " is already used by the cluster member " + otherMember
                + ": this node left the cluster (give it a vmfork.host.id of its own)";
    }
}
