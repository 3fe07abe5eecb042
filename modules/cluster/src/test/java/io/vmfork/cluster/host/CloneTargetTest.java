package io.vmfork.cluster.host;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.ByteString;
import io.vmfork.cluster.placement.AdmissionLedger;
import io.vmfork.cluster.placement.Capacity;
import io.vmfork.proto.host.RefusedCopy;
import io.vmfork.proto.host.TransferOpening;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmmSettings;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * The target's side of an offer, on a real VMM: a target that runs out of room admits what
 * fits and refuses the rest (HOST_FULL), an offer nobody claims gives its room back, a
 * connection that names no offer, or a spent token, is refused, and a capsule cut short
 * frees the copies it had admitted.
 */
class CloneTargetTest {
    private static final long MIB = 1L << 20;
    private static final java.net.InetSocketAddress FROM_SOURCE = new java.net.InetSocketAddress("127.0.0.1", 40000);
    /** The offering member's addresses (its Artery hostname's). */
    private static final java.util.Set<java.net.InetAddress> SOURCE = java.util.Set.of(FROM_SOURCE.getAddress());

    private Vmm vmm;
    private AdmissionLedger ledger;
    private CloneTarget target;

    @BeforeEach
    void setUp() {
        vmm = Vmm.open(VmmSettings.load());
        ledger = new AdmissionLedger(new Capacity(256 * MIB, 2, 8), Duration.ofSeconds(5), System::nanoTime);
        target = new CloneTarget(vmm, ledger, 2, new ImageCache(0), Failpoints.NONE, new CloneStats());
    }

    @AfterEach
    void tearDown() {
        vmm.close();
    }

    private static HostActor.OfferClones offer(long transferId, int copies) {
        List<HostActor.CloneSlot> slots = new ArrayList<>();
        for (int i = 0; i < copies; i++) {
            slots.add(new HostActor.CloneSlot(i, 0));
        }
        return new HostActor.OfferClones(transferId, 1, 42, 1, 0, slots, 64 * MIB, 1, new byte[] {1}, new byte[0],
                null);
    }

    private int used() {
        return ledger.current(2, "h", "", "").vmCount();
    }

    @Test
    void aTargetOutOfRoomAdmitsWhatFitsAndRefusesTheRest() {
        List<RefusedCopy> refused = new ArrayList<>();
        CloneTarget.Pending p = target.offer(offer(7, 3), SOURCE, refused);
        assertNotNull(p);
        assertEquals(List.of(0, 1), p.accepted());
        assertEquals(1, refused.size());
        assertEquals(2, refused.get(0).getIndex());
        assertEquals("HOST_FULL", refused.get(0).getCode());
        assertEquals(2, used());

        // Full now: the next offer gets nothing, and says why.
        List<RefusedCopy> none = new ArrayList<>();
        assertNull(target.offer(offer(8, 1), SOURCE, none));
        assertEquals("HOST_FULL", none.get(0).getCode());

        // Nobody comes for the first offer: its room is given back; its token is spent.
        target.expire(p.token());
        assertEquals(0, used());
        IOException late = assertThrows(IOException.class, () -> receive(opening(7, p.token()),
                new ByteArrayInputStream(new byte[0])));
        assertTrue(late.getMessage().contains("unknown or expired token"), late.getMessage());
    }

    @Test
    void aVmTooLargeForThisHostIsRefusedAsInvalid() {
        List<RefusedCopy> refused = new ArrayList<>();
        HostActor.OfferClones huge = new HostActor.OfferClones(9, 1, 42, 1, 0,
                List.of(new HostActor.CloneSlot(0, 0)), vmm.settings().maxMemory() + 4096, 1, new byte[] {1},
                new byte[0], null);
        assertNull(target.offer(huge, SOURCE, refused));
        assertEquals("INVALID", refused.get(0).getCode());
        assertEquals(0, used());
    }

    @Test
    void aTruncatedCapsuleFreesTheCopiesItHadAdmitted() {
        CloneTarget.Pending p = target.offer(offer(11, 2), SOURCE, new ArrayList<>());
        assertEquals(2, used());
        // Not even a capsule's magic: the read fails, nothing is started, the room goes back.
        assertThrows(IOException.class, () -> receive(opening(11, p.token()),
                new ByteArrayInputStream(new byte[] {(byte) 0x89, 'V', 'M'})));
        assertEquals(0, used());
        assertEquals(0, vmm.liveCount());
        // The token was used up by that connection.
        assertThrows(IOException.class, () -> receive(opening(11, p.token()),
                new ByteArrayInputStream(new byte[0])));
    }

    @Test
    void aTokenShownFromAnotherAddressIsRefusedAndNotSpent() throws Exception {
        CloneTarget.Pending p = target.offer(offer(12, 1), SOURCE, new ArrayList<>());
        assertTrue(target.expects(FROM_SOURCE.getAddress()));
        java.net.InetSocketAddress elsewhere = new java.net.InetSocketAddress("127.0.0.2", 40000);
        assertTrue(!target.expects(elsewhere.getAddress()));
        io.vmfork.cluster.transfer.TransferException e = assertThrows(
                io.vmfork.cluster.transfer.TransferException.class, () -> target.accept(opening(12, p.token()), elsewhere));
        assertTrue(e.getMessage().contains("only from the host that offered it"), e.getMessage());
        assertEquals(1, used(), "the admission stands");
        // A wrong token is refused; the right one from the offering host is taken, once.
        byte[] wrong = p.token().clone();
        wrong[0] ^= 1;
        e = assertThrows(io.vmfork.cluster.transfer.TransferException.class,
                () -> target.accept(opening(12, wrong), FROM_SOURCE));
        assertTrue(e.getMessage().contains("unknown or expired token"), e.getMessage());
        assertNotNull(target.accept(opening(12, p.token()), FROM_SOURCE));
        e = assertThrows(io.vmfork.cluster.transfer.TransferException.class,
                () -> target.accept(opening(12, p.token()), FROM_SOURCE));
        assertTrue(e.getMessage().contains("unknown or expired token"), e.getMessage());
        assertTrue(!target.expects(FROM_SOURCE.getAddress()));
        target.expireAll();
    }

    /**
     * A real capsule: the shipped spin guest of {@code memory} bytes and {@code vcpus},
     * launched, captured with its copies' VM type {@code vmType}, and stopped.
     */
    private byte[] capsule(long memory, int vcpus, int vmType) throws Exception {
        io.vmfork.vmm.VirtualMachine vm = vmm.launch(io.vmfork.vmm.VmSpec.of(
                io.vmfork.vmm.guest.Guests.shipped("spin"), memory).withVcpus(vcpus).withVmType(vmType));
        try (io.vmfork.vmm.VirtualMachine.Snapshot snap = vm.snapshot()) {
            vm.stop();
            java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
            CapsuleImages.write(vmm, snap.state(), snap.image(), null, null, 0, out);
            return out.toByteArray();
        }
    }

    /** The capsule's first {@code frames} frames after its 8-byte magic (varint-prefixed), the rest cut off. */
    private static byte[] firstFrames(byte[] capsule, int frames) {
        int at = 8;
        for (int f = 0; f < frames; f++) {
            int len = 0;
            for (int shift = 0; ; shift += 7) {
                byte b = capsule[at++];
                len |= (b & 0x7f) << shift;
                if (b >= 0) {
                    break;
                }
            }
            at += len;
        }
        return java.util.Arrays.copyOf(capsule, at);
    }

    private static HostActor.OfferClones admitted(long transferId, long memory, int vcpus, int vmType) {
        return new HostActor.OfferClones(transferId, 1, 42, vmType, 0, List.of(new HostActor.CloneSlot(0, 0)), memory,
                vcpus, new byte[] {1}, new byte[0], null);
    }

    /** Receives {@code capsule} for an offer of {@code offer}: the refusal's message; nothing may be left. */
    private String refusal(HostActor.OfferClones offer, byte[] capsule) throws Exception {
        long memfdsBefore = CapsuleWarmupTest.memfds();
        CloneTarget.Pending p = target.offer(offer, SOURCE, new ArrayList<>());
        assertEquals(1, used());
        IOException e = assertThrows(IOException.class, () -> receive(opening(offer.transferId(), p.token()),
                new ByteArrayInputStream(capsule)));
        assertEquals(0, used(), "the admission was freed");
        assertEquals(0, vmm.liveCount(), "no clone was started");
        assertEquals(memfdsBefore, CapsuleWarmupTest.memfds(), "the image sink's memfd was freed");
        assertTrue(e.getMessage().startsWith("[CAPSULE_REFUSED] "), e.getMessage());
        return e.getMessage();
    }

    @Test
    void aCapsuleOtherThanTheOneAdmittedIsRefusedBeforeItsStateIsUsed() throws Exception {
        byte[] big = capsule(1L << 30, 1, 1);
        // Admitted for 64 MiB; the capsule says 1 GiB. Cut right after its header: the
        // refusal must come from the header alone (else it would say the stream was cut).
        String m = refusal(admitted(21, 64 * MIB, 1, 1), firstFrames(big, 1));
        assertTrue(m.contains("the capsule is not the VM that was admitted: it has 1073741824 bytes of memory"), m);
        assertTrue(refusal(admitted(22, 64 * MIB, 1, 1), big).contains("admitted for 67108864 bytes"));

        // More vCPUs than admitted: refused at the header too.
        byte[] two = capsule(64 * MIB, 2, 1);
        m = refusal(admitted(23, 64 * MIB, 1, 1), firstFrames(two, 1));
        assertTrue(m.contains("and 2 vCPUs, the offer was admitted for 67108864 bytes and 1 vCPUs"), m);

        // Another VM type: refused right after the state frame, before any memory is read.
        byte[] other = capsule(64 * MIB, 1, 7);
        m = refusal(admitted(24, 64 * MIB, 1, 1), firstFrames(other, 2));
        assertTrue(m.contains("its VM type is 7, the offer was admitted for VM type 1"), m);

        // The VM that was admitted: its clone starts.
        CloneTarget.Pending p = target.offer(admitted(25, 64 * MIB, 1, 7), SOURCE, new ArrayList<>());
        io.vmfork.proto.host.CloneResults results = io.vmfork.proto.host.CloneResults.parseFrom(
                receive(opening(25, p.token()), new ByteArrayInputStream(other)));
        assertTrue(results.getResults(0).hasVm(), results.toString());
        assertEquals(1, vmm.liveCount());
    }

    /** What the transfer server does with a connection from the offering host. */
    private byte[] receive(byte[] opening, java.io.InputStream in) throws Exception {
        return target.accept(opening, FROM_SOURCE).receive(opening, in);
    }

    private static byte[] opening(long transferId, byte[] token) {
        return TransferOpening.newBuilder().setTransferId(transferId).setToken(ByteString.copyFrom(token)).build()
                .toByteArray();
    }
}
