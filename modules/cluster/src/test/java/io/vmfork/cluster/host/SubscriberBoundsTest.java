package io.vmfork.cluster.host;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.api.ConsoleOutput;
import io.vmfork.cluster.api.ErrorCode;
import io.vmfork.cluster.api.VmEvent;
import io.vmfork.cluster.node.VmforkNode;
import io.vmfork.cluster.placement.AdmissionLedger;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorRefResolver;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * A host keeps at most {@code vmfork.node.subscribers.max} subscriptions in all and
 * {@code max-per-member} of one member; more are refused, a subscriber that stops frees its
 * place, and a subscriber whose address is not a member of the cluster is refused.
 */
class SubscriberBoundsTest {
    private static final Duration WAIT = Duration.ofSeconds(30);
    private VmforkNode node;

    @AfterEach
    void stop() {
        if (node != null) {
            node.system().terminate();
            node.whenTerminated().toCompletableFuture().orTimeout(30, TimeUnit.SECONDS).join();
        }
    }

    private void scenario(long hostId, String limits) {
        node = VmforkNode.start(ConfigFactory.parseString("vmfork.host { id = " + hostId + ", name = h" + hostId + " }\n"
                + "vmfork.node { fork-warm-up = off, subscribers { " + limits + " } }\n"
                + "vmfork.transfer.warm-up = off\n").withFallback(ConfigFactory.load()).resolve());
        ActorTestKit kit = ActorTestKit.create(node.system());
        // The node's own cluster view is the host's first subscriber: a LAUNCHED event reaches
        // the view only through its subscription.
        TestProbe<VmEvent> view = kit.createTestProbe();
        node.cluster().subscribe(view.getRef());
        TestProbe<HostActor.Reply> replies = kit.createTestProbe();
        long spin = 0;
        java.util.List<Long> launched = new java.util.ArrayList<>();
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (spin == 0) {
            node.host().tell(new HostActor.Launch("spin", 0, 16L << 20, AdmissionLedger.NO_RESERVATION,
                    replies.getRef()));
            long id = assertInstanceOf(HostActor.Launched.class, replies.expectMessageClass(HostActor.Reply.class, WAIT))
                    .vm().vmId();
            launched.add(id);
            VmEvent e = view.fishForMessage(Duration.ofSeconds(3), "an event of " + id, ev -> ev.vmId() == id
                    ? org.apache.pekko.actor.testkit.typed.javadsl.FishingOutcomes.complete()
                    : org.apache.pekko.actor.testkit.typed.javadsl.FishingOutcomes.continueAndIgnore()).get(0);
            if (e.kind() == VmEvent.Kind.LAUNCHED) {
                spin = id;
            }
            assertTrue(System.nanoTime() < deadline, "the view never subscribed to its host");
        }

        // The view and two more: the limit.
        TestProbe<VmEvent> p1 = kit.createTestProbe();
        TestProbe<VmEvent> p2 = kit.createTestProbe();
        for (TestProbe<VmEvent> p : java.util.List.of(p1, p2)) {
            node.host().tell(new HostActor.Subscribe(p.getRef()));
            assertEquals(VmEvent.Kind.KNOWN, p.expectMessageClass(VmEvent.class, WAIT).kind());
        }
        TestProbe<VmEvent> p3 = kit.createTestProbe();
        node.host().tell(new HostActor.Subscribe(p3.getRef()));
        p3.expectNoMessage(Duration.ofMillis(500));
        TestProbe<ConsoleOutput> console = kit.createTestProbe();
        node.host().tell(new HostActor.SubscribeConsole(spin, console.getRef(), replies.getRef()));
        HostActor.Failure full = assertInstanceOf(HostActor.Failure.class,
                replies.expectMessageClass(HostActor.Reply.class, WAIT));
        assertEquals(ErrorCode.INVALID, full.code());
        assertTrue(full.message().contains("vmfork.node.subscribers"), full.message());

        // A subscriber that stops frees its place (once the host has seen it go).
        p1.stop();
        deadline = System.nanoTime() + WAIT.toNanos();
        java.util.List<VmEvent> got = java.util.List.of();
        while (got.isEmpty()) {
            assertTrue(System.nanoTime() < deadline, "p1's place was never freed");
            node.host().tell(new HostActor.Subscribe(p3.getRef()));
            try {
                got = java.util.List.of(p3.expectMessageClass(VmEvent.class, Duration.ofMillis(500)));
            } catch (AssertionError none) {
                // not yet
            }
        }
        assertEquals(VmEvent.Kind.KNOWN, got.get(0).kind());
        assertTrue(launched.contains(got.get(0).vmId()), got.toString());
        for (long id : launched) {
            node.host().tell(new HostActor.Stop(id, replies.getRef()));
            assertInstanceOf(HostActor.Stopped.class, replies.expectMessageClass(HostActor.Reply.class, WAIT));
        }
    }

    @Test
    void subscriptionsOfOneMemberAreBounded() {
        scenario(71, "max = 64, max-per-member = 3");
    }

    @Test
    void subscriptionsInAllAreBounded() {
        scenario(72, "max = 3, max-per-member = 64");
    }

    @Test
    void aSubscriberThatIsNotAMemberIsRefused() {
        node = VmforkNode.start(ConfigFactory.parseString("vmfork.host { id = 73, name = h73 }\n"
                + "vmfork.node.fork-warm-up = off\nvmfork.transfer.warm-up = off\n")
                .withFallback(ConfigFactory.load()).resolve());
        ActorTestKit kit = ActorTestKit.create(node.system());
        TestProbe<HostActor.Reply> replies = kit.createTestProbe();
        node.host().tell(new HostActor.Launch("spin", 0, 16L << 20, AdmissionLedger.NO_RESERVATION, replies.getRef()));
        long spin = assertInstanceOf(HostActor.Launched.class, replies.expectMessageClass(HostActor.Reply.class, WAIT))
                .vm().vmId();
        // A reference to an actor of a system that is no member: the host must never send to it.
        ActorRef<ConsoleOutput> foreign = ActorRefResolver.get(node.system())
                .resolveActorRef("pekko://vmfork@127.0.0.1:9/user/collector");
        node.host().tell(new HostActor.SubscribeConsole(spin, foreign, replies.getRef()));
        HostActor.Failure f = assertInstanceOf(HostActor.Failure.class,
                replies.expectMessageClass(HostActor.Reply.class, WAIT));
        assertEquals(ErrorCode.INVALID, f.code());
        assertTrue(f.message().contains("is not a member of the cluster"), f.message());
        // A local subscriber is taken.
        TestProbe<ConsoleOutput> local = kit.createTestProbe();
        node.host().tell(new HostActor.SubscribeConsole(spin, local.getRef(), replies.getRef()));
        assertInstanceOf(HostActor.ConsoleSubscribed.class, replies.expectMessageClass(HostActor.Reply.class, WAIT));
        node.host().tell(new HostActor.Stop(spin, replies.getRef()));
        assertInstanceOf(HostActor.Stopped.class, replies.expectMessageClass(HostActor.Reply.class, WAIT));
    }
}
