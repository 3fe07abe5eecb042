package io.vmfork.cluster.placement;

import java.time.Duration;
import org.apache.pekko.actor.NoSerializationVerificationNeeded;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Behavior;
import org.apache.pekko.actor.typed.javadsl.Behaviors;

/**
 * Publishes this host's load from its {@link AdmissionLedger}: every
 * {@code load-report-interval}, and at once when told {@link ReportNow} (the host tells it
 * after every admission, refusal and release, so placement learns of changes that matter
 * without waiting for the next tick). One per node; local messages only.
 */
public final class LoadReporter {
    private LoadReporter() {
    }

    /** What the reporter does. */
    public interface Command extends NoSerializationVerificationNeeded {
    }

    /** Publish the host's load now. */
    public enum ReportNow implements Command { INSTANCE }

    private enum Tick implements Command { INSTANCE }

    /**
     * A reporter of host {@code hostId} at the node {@code address}, whose guests run on
     * {@code platform} ("kvm" or "process"), publishing through {@code publisher}.
     */
    public static Behavior<Command> create(AdmissionLedger ledger, long hostId, String hostName, String address,
                                           String platform, ActorRef<LoadReports.Command> publisher,
                                           Duration interval) {
        return Behaviors.setup(ctx -> Behaviors.withTimers(timers -> {
            timers.startTimerWithFixedDelay(Tick.INSTANCE, interval);
            Runnable publish = () -> publisher.tell(
                    new LoadReports.Publish(ledger.report(hostId, hostName, address, platform)));
            publish.run();
            return Behaviors.receive(Command.class)
                    .onMessage(ReportNow.class, m -> {
                        publish.run();
                        return Behaviors.same();
                    })
                    .onMessage(Tick.class, m -> {
                        publish.run();
                        return Behaviors.same();
                    })
                    .build();
        }));
    }
}
