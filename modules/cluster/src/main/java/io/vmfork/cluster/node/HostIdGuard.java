package io.vmfork.cluster.node;

import java.time.Duration;
import java.util.Optional;
import java.util.Set;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.pekko.actor.Address;
import org.apache.pekko.actor.CoordinatedShutdown;
import org.apache.pekko.actor.NoSerializationVerificationNeeded;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.javadsl.Behaviors;
import org.apache.pekko.actor.typed.receptionist.Receptionist;
import org.apache.pekko.actor.typed.receptionist.ServiceKey;
import org.apache.pekko.cluster.Member;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.typed.Cluster;

/**
 * Keeps host ids unique in the cluster. Every node registers this actor with the cluster
 * receptionist under a key named after its host id and watches that key. When another
 * node holds the same key, the younger of the two (Pekko's member age: the later to
 * become up, or by address while neither is) leaves the cluster and stops with
 * {@link HostIdConflict} as its shutdown reason; the older one keeps serving. A member
 * that is down, leaving or gone no longer holds its id, and a previous incarnation of this
 * node at the same address is not a conflict; but a host restarted at another address
 * after a crash is refused until the old incarnation has been downed and removed
 * ({@code vmfork.node.downing.stable-after}), since until then it may only be unreachable.
 */
final class HostIdGuard {
    interface Command extends NoSerializationVerificationNeeded {
    }

    private record ListingChanged(Receptionist.Listing listing) implements Command {
    }

    private enum Recheck implements Command { INSTANCE }

    // Members that still hold their host id: a downed, leaving or removed one does not (a
    // reachable or unreachable member that is up still does: it may come back).
    private static final Set<MemberStatus> HOLDS_ID =
            Set.of(MemberStatus.joining(), MemberStatus.weaklyUp(), MemberStatus.up());

    private HostIdGuard() {
    }

    static ServiceKey<Command> keyOf(long hostId) {
        return ServiceKey.create(Command.class, "vmfork-host-id-" + hostId);
    }

    static Behavior<Command> create(long hostId, Duration checkInterval) {
        return Behaviors.setup(ctx -> {
            ServiceKey<Command> key = keyOf(hostId);
            ActorRef<Receptionist.Listing> adapter = ctx.messageAdapter(Receptionist.Listing.class, ListingChanged::new);
            ctx.getSystem().receptionist().tell(Receptionist.register(key, ctx.getSelf()));
            ctx.getSystem().receptionist().tell(Receptionist.subscribe(key, adapter));
            Cluster cluster = Cluster.get(ctx.getSystem());
            AtomicReference<Set<ActorRef<Command>>> holders = new AtomicReference<>(Set.of());
            return Behaviors.withTimers(timers -> {
                timers.startTimerWithFixedDelay(Recheck.INSTANCE, checkInterval);
                return Behaviors.receive(Command.class)
                        .onMessage(ListingChanged.class, l -> {
                            holders.set(l.listing().getServiceInstances(key));
                            return check(ctx.getSystem(), cluster, hostId, holders.get(), ctx.getSelf(), ctx.getLog());
                        })
                        .onMessage(Recheck.class, r ->
                                check(ctx.getSystem(), cluster, hostId, holders.get(), ctx.getSelf(), ctx.getLog()))
                        .build();
            });
        });
    }

    private static Behavior<Command> check(org.apache.pekko.actor.typed.ActorSystem<?> system, Cluster cluster,
                                           long hostId, Set<ActorRef<Command>> holders, ActorRef<Command> self,
                                           org.slf4j.Logger log) {
        Member me = cluster.selfMember();
        for (ActorRef<Command> other : holders) {
            if (other.equals(self)) {
                continue;
            }
            Address address = other.path().address();
            if (address.equals(me.address())) {
                // A previous incarnation of this node (same host:port), which Pekko removes.
                continue;
            }
            Optional<Member> member = memberAt(cluster, address);
            if (member.isPresent() && HOLDS_ID.contains(member.get().status()) && member.get().isOlderThan(me)) {
                HostIdConflict reason = new HostIdConflict(hostId, address.toString());
                log.error("{}", reason);
                CoordinatedShutdown.get(system).run(reason);
                return Behaviors.stopped();
            }
        }
        return Behaviors.same();
    }

    private static Optional<Member> memberAt(Cluster cluster, Address address) {
        for (Member m : cluster.state().getMembers()) {
            if (m.address().equals(address)) {
                return Optional.of(m);
            }
        }
        return Optional.empty();
    }
}
