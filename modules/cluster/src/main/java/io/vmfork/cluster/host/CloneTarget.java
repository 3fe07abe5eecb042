package io.vmfork.cluster.host;

import com.google.protobuf.InvalidProtocolBufferException;
import io.vmfork.cluster.api.ErrorCode;
import io.vmfork.cluster.placement.AdmissionLedger;
import io.vmfork.cluster.transfer.TransferException;
import io.vmfork.cluster.transfer.TransferServer;
import io.vmfork.proto.host.CloneResult;
import io.vmfork.proto.host.CloneResults;
import io.vmfork.proto.host.RefusedCopy;
import io.vmfork.proto.host.TransferOpening;
import io.vmfork.vmm.LaunchException;
import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmListener;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.capsule.CapsuleException;
import io.vmfork.vmm.memory.RuntimeImage;
import java.io.IOException;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.HexFormat;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.function.Consumer;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The target side of remote clones: the patent's {@code VM_clone(source, capsule)}.
 *
 * <p>States of one transfer on the target:
 * <pre>
 *   OFFERED   offer(): copies admitted through the ledger, a single-use token made; the
 *             source is told where to connect (ClonesAccepted)
 *   RECEIVING accept(): the connection named the token (the transfer is claimed, so an
 *             expiry can no longer free it); then its Receiver: the capsule is read and checked as it arrives:
 *             from its header, the memory size and vCPUs the offer was admitted for, then
 *             compatibility; from its state, the offer's VM type; every chunk, the digest
 *   STARTED   the verified image becomes clones (Vmm.launchClone), one per accepted copy,
 *             sharing the image copy-on-write; the source gets a CloneResults
 *   FREED     on every failure (bad or truncated capsule, source gone, idle, launch
 *             failure) and on expiry of an offer nobody claimed: the admission of every
 *             copy not started, the partial image and its file are released
 * </pre>
 * No clone runs before the whole capsule is verified: the reader returns only after the
 * trailer's digest matched and the transport's end-of-data frame arrived.
 *
 * <p>Thread-safe: offer() and expire() run on the HostActor, accept() on a stream thread of
 * the transfer server, the Receiver it returns on a transfer thread.
 */
final class CloneTarget {
    private static final Logger log = LoggerFactory.getLogger(CloneTarget.class);
    private static final SecureRandom RANDOM = new SecureRandom();

    /**
     * An offer the target accepted and waits to receive: its transfer must come from one of
     * {@code senders}, the addresses of the member that offered it.
     */
    record Pending(HostActor.OfferClones offer, List<Integer> accepted, byte[] token, RuntimeImage base,
                   Set<InetAddress> senders) {
    }

    /** A clone this target started: the HostActor registers it. */
    record Started(VirtualMachine vm, long memory, int vcpus) {
    }

    private final Vmm vmm;
    private final AdmissionLedger ledger;
    private final long hostId;
    private final ImageCache cache;
    private final Failpoints failpoints;
    private final CloneStats stats;
    private final Map<String, Pending> pending = new ConcurrentHashMap<>();
    private volatile VmListener listener = VmListener.NONE;
    private volatile Consumer<Started> started = s -> { };
    private volatile Runnable loadChanged = () -> { };

    CloneTarget(Vmm vmm, AdmissionLedger ledger, long hostId, ImageCache cache, Failpoints failpoints,
                CloneStats stats) {
        this.failpoints = failpoints;
        this.stats = stats;
        this.vmm = vmm;
        this.ledger = ledger;
        this.hostId = hostId;
        this.cache = cache;
    }

    /** Where clones' events go, who registers them, who hears of a load change. */
    void wire(VmListener listener, Consumer<Started> started, Runnable loadChanged) {
        this.listener = listener;
        this.started = started;
        this.loadChanged = loadChanged;
    }

    /**
     * Admits what it can of an offer. Returns the accepted copies (empty when none: the
     * reasons are in {@code refused}) and, when some are, the pending transfer's token.
     */
    Pending offer(HostActor.OfferClones m, Set<InetAddress> senders, List<RefusedCopy> refused) {
        long max = vmm.settings().maxMemory();
        if (m.memory() <= 0 || m.memory() > max || m.vcpus() < 1 || m.vcpus() > vmm.settings().maxVcpus()) {
            for (HostActor.CloneSlot s : m.copies()) {
                refused.add(refusal(s.index(), ErrorCode.INVALID, "host " + hostId + " cannot run a VM of "
                        + m.memory() + " bytes and " + m.vcpus() + " vCPUs"));
            }
            return null;
        }
        List<Integer> accepted = new ArrayList<>();
        for (HostActor.CloneSlot s : m.copies()) {
            if (ledger.admit(s.reservationId(), m.memory(), m.vcpus())) {
                accepted.add(s.index());
            } else {
                refused.add(refusal(s.index(), ErrorCode.HOST_FULL, "host " + hostId + " has no room for the copy"));
            }
        }
        loadChanged.run();
        if (accepted.isEmpty()) {
            return null;
        }
        byte[] token = new byte[16];
        RANDOM.nextBytes(token);
        RuntimeImage base = m.baseKey().length == 0 ? null : cache.get(m.baseKey());
        Pending p = new Pending(m, List.copyOf(accepted), token, base, Set.copyOf(senders));
        pending.put(HexFormat.of().formatHex(token), p);
        return p;
    }

    /** An offer nobody claimed in time: frees its admissions. */
    void expire(byte[] token) {
        Pending p = pending.remove(HexFormat.of().formatHex(token));
        if (p != null) {
            log.info("clone transfer {} from host {} never came: its {} admitted copies are released",
                    p.offer().transferId(), p.offer().sourceHostId(), p.accepted().size());
            free(p, p.accepted().size());
            dropBase(p);
        }
    }

    /** Frees every offer not yet claimed (the host is stopping). */
    void expireAll() {
        for (String k : List.copyOf(pending.keySet())) {
            Pending p = pending.remove(k);
            if (p != null) {
                free(p, p.accepted().size());
                dropBase(p);
            }
        }
    }

    /**
     * A transfer connection's opening, on the transfer server's stream thread (quick, never
     * blocking): it must name a pending offer by its token and transfer id, and come from
     * the address of the member that made the offer (its Artery hostname's). The token is
     * spent here, so that it is good for one connection only; the returned Receiver reads
     * the capsule. Throws TransferException (the sender's ABORT says why) otherwise; a token
     * shown from another address is refused and not spent (the offering member may still
     * come with it).
     */
    TransferServer.Receiver accept(byte[] opening, InetSocketAddress peer) throws TransferException {
        TransferOpening o;
        try {
            o = TransferOpening.parseFrom(opening);
        } catch (InvalidProtocolBufferException e) {
            throw new TransferException("the opening is not a clone transfer's");
        }
        String key = HexFormat.of().formatHex(o.getToken().toByteArray());
        Pending p = pending.get(key);
        if (p == null || p.offer().transferId() != o.getTransferId()) {
            throw new TransferException("no clone transfer " + o.getTransferId() + " is expected by host " + hostId
                    + " (unknown or expired token)");
        }
        if (!p.senders().contains(peer.getAddress())) {
            // Logged by the transfer server with its other refusals (at most one WARN a second).
            throw new TransferException("clone transfer " + o.getTransferId() + " is not taken from "
                    + peer.getAddress().getHostAddress() + ": only from the host that offered it");
        }
        if (!pending.remove(key, p)) {
            throw new TransferException("no clone transfer " + o.getTransferId() + " is expected by host " + hostId
                    + " (unknown or expired token)");
        }
        return (op, in) -> receive(p, in);
    }

    /** Whether an offer waits for a transfer from {@code peer} (the transfer server lets it in past its total cap). */
    boolean expects(InetAddress peer) {
        for (Pending p : pending.values()) {
            if (p.senders().contains(peer)) {
                return true;
            }
        }
        return false;
    }

    /** One claimed transfer: {@code in} carries the capsule. Returns the CloneResults bytes for the source. */
    private byte[] receive(Pending p, InputStream in) throws IOException {
        HostActor.OfferClones offer = p.offer();
        // Copies whose admission is settled here (started, or failed and released), and those running.
        int settled = 0;
        int running = 0;
        RuntimeImage image = null;
        CapsuleImages.Counting counted = new CapsuleImages.Counting(failpoints, "target");
        boolean ok = false;
        long t0 = System.nanoTime();
        try {
            // Only the VM the offer was admitted for: refused at its header or state otherwise.
            CapsuleImages.Received r = CapsuleImages.read(vmm, counted.wrap(in), offer.baseKey(), p.base(),
                    new io.vmfork.vmm.capsule.CapsuleReader.Expected(offer.memory(), offer.vcpus(), offer.vmType()));
            image = r.image();
            long tRead = System.nanoTime();
            failpoints.reach("target-after-last-chunk");
            stats.capsulesReceived.incrementAndGet();
            stats.bytesReceived.addAndGet(counted.bytes());
            if (r.delta()) {
                stats.deltasReceived.incrementAndGet();
            }
            CloneResults.Builder results = CloneResults.newBuilder().setCapsuleBytes(r.capsuleBytes());
            for (int index : p.accepted()) {
                CloneResult.Builder cr = CloneResult.newBuilder().setIndex(index);
                try {
                    VirtualMachine vm = vmm.launchClone(r.state(), image,
                            new io.vmfork.vmm.fork.CloneSpec(offer.vmType(), offer.forkBlock(), index, listener));
                    settled++;
                    running++;
                    stats.clonesStarted.incrementAndGet();
                    started.accept(new Started(vm, offer.memory(), offer.vcpus()));
                    cr.setVm(HostCodecs.toProto(HostActor.cloneInfo(vm, offer.memory())));
                } catch (LaunchException | io.vmfork.os.NativeCallException e) {
                    ledger.release(offer.memory(), offer.vcpus());
                    settled++; // its admission released just above
                    cr.setCode(ErrorCode.LAUNCH_FAILED.name()).setReason("host " + hostId + ": " + e.getMessage());
                }
                results.addResults(cr);
            }
            cache.put(offer.imageKey(), offer.parentId(), image);
            loadChanged.run();
            ok = true;
            log.info("clone transfer {} from host {}: {} capsule of {} bytes read and verified in {} ms, {} of {} "
                            + "clones started in {} ms", offer.transferId(), offer.sourceHostId(),
                    r.delta() ? "delta" : "full", counted.bytes(), (tRead - t0) / 1_000_000, running,
                    p.accepted().size(), (System.nanoTime() - tRead) / 1_000_000);
            return results.build().toByteArray();
        } catch (CapsuleException e) {
            log.info("clone transfer {} from host {} refused: {}", offer.transferId(), offer.sourceHostId(),
                    e.getMessage());
            throw new IOException(CloneSource.tagged(ErrorCode.CAPSULE_REFUSED, "host " + hostId
                    + " refused the capsule: " + e.getMessage()), e);
        } catch (IOException | RuntimeException e) {
            log.info("clone transfer {} from host {} failed: {}", offer.transferId(), offer.sourceHostId(),
                    e.toString());
            throw e;
        } finally {
            if (!ok) {
                stats.transfersFailed.incrementAndGet();
            }
            if (image != null) {
                image.release();
            }
            free(p, p.accepted().size() - settled);
            dropBase(p);
        }
    }

    private static void dropBase(Pending p) {
        if (p.base() != null) {
            p.base().release();
        }
    }

    private void free(Pending p, int copies) {
        for (int i = 0; i < copies; i++) {
            ledger.release(p.offer().memory(), p.offer().vcpus());
        }
        if (copies > 0) {
            loadChanged.run();
        }
    }

    private static RefusedCopy refusal(int index, ErrorCode code, String reason) {
        return RefusedCopy.newBuilder().setIndex(index).setCode(code.name()).setReason(reason).build();
    }
}
