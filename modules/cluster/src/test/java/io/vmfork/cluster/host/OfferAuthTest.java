package io.vmfork.cluster.host;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.api.ErrorCode;
import io.vmfork.cluster.node.VmforkNode;
import io.vmfork.cluster.transfer.TransferClient;
import io.vmfork.cluster.transfer.TransferException;
import io.vmfork.cluster.transfer.TransferSettings;
import io.vmfork.proto.host.TransferOpening;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.receptionist.Receptionist;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.typed.Cluster;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * Remote clone offers bound to who made them, between two real nodes (issue 16, finding
 * 4): an offer whose source_host_id is not the sending member's own is refused (INVALID);
 * a genuine offer's token is refused from another address (127.0.0.2) and not spent by
 * it, a wrong token is refused, the right one is taken once from the offering member's
 * address, and shown again it is refused.
 */
class OfferAuthTest {
    private static final Duration WAIT = Duration.ofSeconds(30);
    private final List<VmforkNode> nodes = new ArrayList<>();

    @AfterEach
    void stopNodes() {
        for (int i = nodes.size() - 1; i >= 0; i--) {
            nodes.get(i).system().terminate();
            nodes.get(i).whenTerminated().toCompletableFuture().orTimeout(30, TimeUnit.SECONDS).join();
        }
    }

    private VmforkNode start(long hostId, String seed) {
        Config c = ConfigFactory.parseString("vmfork.host { id = " + hostId + ", name = h" + hostId + " }\n"
                        + (seed == null ? "" : "vmfork.node.seed-nodes = [\"" + seed + "\"]\n")
                        + "vmfork.node.fork-warm-up = off\nvmfork.transfer.warm-up = off\n")
                .withFallback(ConfigFactory.load()).resolve();
        VmforkNode n = VmforkNode.start(c);
        nodes.add(n);
        return n;
    }

    private static void awaitUp(VmforkNode n) throws InterruptedException {
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (Cluster.get(n.system()).selfMember().status() != MemberStatus.up()) {
            assertTrue(System.nanoTime() < deadline, "node did not become up");
            Thread.sleep(50);
        }
    }

    /** The HostActor of {@code hostId} as {@code kit}'s node finds it: sent to over the network. */
    private static ActorRef<HostActor.Command> find(ActorTestKit kit, long hostId) {
        TestProbe<Receptionist.Listing> listings = kit.createTestProbe();
        long deadline = System.nanoTime() + WAIT.toNanos();
        while (true) {
            kit.system().receptionist().tell(Receptionist.find(HostActor.serviceKey(hostId), listings.getRef()));
            Set<ActorRef<HostActor.Command>> found = listings.expectMessageClass(Receptionist.Listing.class, WAIT)
                    .getServiceInstances(HostActor.serviceKey(hostId));
            if (!found.isEmpty()) {
                return found.iterator().next();
            }
            assertTrue(System.nanoTime() < deadline, "host " + hostId + " never found");
            try {
                Thread.sleep(100);
            } catch (InterruptedException e) {
                throw new AssertionError(e);
            }
        }
    }

    private static HostActor.OfferClones offer(long transferId, long sourceHostId, ActorRef<HostActor.Reply> replyTo) {
        return new HostActor.OfferClones(transferId, sourceHostId, 42, 1, 0, List.of(new HostActor.CloneSlot(0, 0)),
                64L << 20, 1, new byte[] {1}, new byte[0], replyTo);
    }

    private static byte[] opening(long transferId, byte[] token) {
        return TransferOpening.newBuilder().setTransferId(transferId).setToken(ByteString.copyFrom(token)).build()
                .toByteArray();
    }

    private static String sendFailure(VmforkNode from, InetSocketAddress to, String local, byte[] opening) {
        TransferSettings s = TransferSettings.create(from.system());
        ExecutionException e = assertThrows(ExecutionException.class, () -> TransferClient.send(from.system(), to,
                new InetSocketAddress(local, 0), opening, out -> out.write(new byte[] {(byte) 0x89, 'V', 'M'}), s)
                .toCompletableFuture().get(WAIT.toSeconds(), TimeUnit.SECONDS));
        return assertInstanceOf(TransferException.class, e.getCause()).getMessage();
    }

    @Test
    void offersAreTakenOnlyFromTheMemberThatHoldsTheirHostIdAndTransfersOnlyFromItsAddress() throws Exception {
        VmforkNode target = start(91, null);
        awaitUp(target);
        VmforkNode source = start(92, "127.0.0.1:" + target.system().address().getPort().get());
        awaitUp(source);
        ActorTestKit atSource = ActorTestKit.create(source.system());
        find(atSource, 92); // the source's own registration, as the source sees it
        ActorRef<HostActor.Command> targetHost = find(atSource, 91);
        TestProbe<HostActor.Reply> replies = atSource.createTestProbe();

        // Claiming the target's own host id, or one nobody holds: refused.
        targetHost.tell(offer(1, 91, replies.getRef()));
        HostActor.Failure forged = assertInstanceOf(HostActor.Failure.class,
                replies.expectMessageClass(HostActor.Reply.class, WAIT));
        assertEquals(ErrorCode.INVALID, forged.code());
        assertTrue(forged.message().contains("host id 91 is held by the member at"), forged.message());
        targetHost.tell(offer(2, 93, replies.getRef()));
        HostActor.Failure nobody = assertInstanceOf(HostActor.Failure.class,
                replies.expectMessageClass(HostActor.Reply.class, WAIT));
        assertEquals(ErrorCode.INVALID, nobody.code());
        assertTrue(nobody.message().contains("no member of the cluster holds host id 93"), nobody.message());
        assertEquals(0, target.admission().current(91, "h91", "", "").vmCount(), "nothing was admitted");

        // The source's own id: admitted, and a token for it.
        long deadline = System.nanoTime() + WAIT.toNanos();
        HostActor.Reply reply;
        do {
            targetHost.tell(offer(3, 92, replies.getRef()));
            reply = replies.expectMessageClass(HostActor.Reply.class, WAIT);
            // Until the target's receptionist knows host 92 (a member that just joined).
        } while (reply instanceof HostActor.Failure f && f.message().contains("no member") && System.nanoTime() < deadline);
        HostActor.ClonesAccepted ok = assertInstanceOf(HostActor.ClonesAccepted.class, reply);
        assertEquals(List.of(0), ok.accepted());
        assertEquals(1, target.admission().current(91, "h91", "", "").vmCount());
        InetSocketAddress to = new InetSocketAddress(ok.transferHost(), ok.transferPort());

        // The token from another address than the source's (127.0.0.1): refused, not spent.
        String other = sendFailure(source, to, "127.0.0.2", opening(3, ok.token()));
        assertTrue(other.contains("only from the host that offered it"), other);
        // A wrong token: refused.
        byte[] wrong = ok.token();
        wrong[15] ^= 1;
        String bad = sendFailure(source, to, "127.0.0.1", opening(3, wrong));
        assertTrue(bad.contains("unknown or expired token"), bad);
        // The right one from the source's address: taken (the capsule is then refused, a
        // three-byte stub), and its admission freed.
        String taken = sendFailure(source, to, "127.0.0.1", opening(3, ok.token()));
        assertTrue(taken.contains(ErrorCode.CAPSULE_REFUSED.name()), taken);
        assertFalse(taken.contains("token"), taken);
        // Replayed: refused.
        String replayed = sendFailure(source, to, "127.0.0.1", opening(3, ok.token()));
        assertTrue(replayed.contains("unknown or expired token"), replayed);
        assertEquals(0, target.admission().current(91, "h91", "", "").vmCount(), "the admission was freed");
    }
}
