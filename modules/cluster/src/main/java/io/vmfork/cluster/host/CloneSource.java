package io.vmfork.cluster.host;

import com.google.protobuf.ByteString;
import io.vmfork.cluster.api.ErrorCode;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.transfer.TransferClient;
import io.vmfork.cluster.transfer.TransferSettings;
import io.vmfork.proto.host.CloneResult;
import io.vmfork.proto.host.CloneResults;
import io.vmfork.proto.host.TransferOpening;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.fork.RemoteFork;
import io.vmfork.vmm.hypercall.Hypercalls;
import io.vmfork.vmm.memory.RuntimeImage;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.apache.pekko.actor.typed.receptionist.Receptionist;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The source side of remote clones: the patent's {@code remote_VM_clone(target_pf, state)}.
 * The VMM hands it a fork's remote copies ({@link RemoteFork}) once the parent runs again;
 * from there, per target host and in parallel over the targets:
 * <ol>
 *   <li>find the target's HostActor (Receptionist, {@link HostActor#serviceKey});</li>
 *   <li>offer the copies ({@link HostActor.OfferClones}): the target admits them and
 *       answers where to send the capsule, and whether it still holds the image this host
 *       last sent it of the same parent (then only the pages changed since travel);</li>
 *   <li>stream the capsule over a transfer connection ({@link TransferClient}): one
 *       stream per target host, however many clones it starts from it;</li>
 *   <li>read the target's {@code CloneResults}: each copy started (its VM id) or not (why).</li>
 * </ol>
 * Every copy ends with exactly one outcome: {@link RemoteFork#started} or
 * {@link RemoteFork#failed} for the guest, and an {@link Outcome} for the HostActor (which
 * publishes the failures as lifecycle events and completes forks asked from outside).
 * Nothing here ever blocks the caller of {@link #ship}.
 */
final class CloneSource implements AutoCloseable {
    private static final Logger log = LoggerFactory.getLogger(CloneSource.class);

    /** What became of one remote copy. {@code cloneVm} is null when it failed. */
    record Outcome(long forkId, long parentId, int index, long targetHostId, VmInfo cloneVm, ErrorCode code,
                   String reason, long capsuleBytes, boolean delta, boolean external) {
    }

    /** The image this host last sent a target of one parent, for the next delta. */
    private record Sent(byte[] key, RuntimeImage image, long dataBytes) {
    }

    private final ActorSystem<?> system;
    /** {@link #localAddress()}, once looked up. */
    private volatile java.util.Optional<InetSocketAddress> sendFrom;
    private final Vmm vmm;
    private final long hostId;
    private final Duration askTimeout;
    private final TransferSettings transfer;
    private final Consumer<Outcome> outcomes;
    private final Failpoints failpoints;
    private final CloneStats stats;
    private final AtomicLong transferIds = new AtomicLong();
    private final Map<String, Sent> sent = new ConcurrentHashMap<>();
    private volatile boolean closed;

    CloneSource(ActorSystem<?> system, Vmm vmm, long hostId, Duration askTimeout, TransferSettings transfer,
                Consumer<Outcome> outcomes, Failpoints failpoints, CloneStats stats) {
        this.failpoints = failpoints;
        this.stats = stats;
        this.system = system;
        this.vmm = vmm;
        this.hostId = hostId;
        this.askTimeout = askTimeout;
        this.transfer = transfer;
        this.outcomes = outcomes;
    }

    /** Ships the remote copies of {@code fork}, which it owns from now on. Never blocks. */
    void ship(RemoteFork fork) {
        Map<Long, List<RemoteFork.Copy>> byHost = new LinkedHashMap<>();
        for (RemoteFork.Copy c : fork.copies()) {
            byHost.computeIfAbsent(c.hostId(), h -> new ArrayList<>()).add(c);
        }
        AtomicInteger left = new AtomicInteger(byHost.size());
        if (byHost.isEmpty()) {
            fork.close();
            return;
        }
        for (Map.Entry<Long, List<RemoteFork.Copy>> e : byHost.entrySet()) {
            long target = e.getKey();
            List<RemoteFork.Copy> copies = e.getValue();
            CompletionStage<Void> done;
            try {
                done = shipTo(fork, target, copies);
            } catch (RuntimeException ex) {
                done = CompletableFuture.failedFuture(ex);
            }
            done.whenComplete((v, f) -> {
                if (f != null) {
                    fail(fork, target, copies, codeOf(f), reasonOf(target, f));
                }
                if (left.decrementAndGet() == 0) {
                    fork.close();
                }
            });
        }
    }

    /** The parent ended: the images kept for its deltas go. */
    void parentEnded(long parentId) {
        String prefix = parentId + ":";
        for (String k : List.copyOf(sent.keySet())) {
            if (k.startsWith(prefix)) {
                Sent s = sent.remove(k);
                if (s != null) {
                    s.image().release();
                }
            }
        }
    }

    /**
     * The state the copies start from, as the capsule carries it: the parent's, with the VM
     * type of the copies (the fork's), which the target checks against the type its offer
     * was admitted for (the type its clones are then given).
     */
    private static io.vmfork.vmm.state.MachineState copiesState(RemoteFork fork) {
        io.vmfork.vmm.state.MachineState s = fork.state();
        io.vmfork.vmm.VmIdentity p = s.identity();
        return new io.vmfork.vmm.state.MachineState(new io.vmfork.vmm.VmIdentity(p.vmId(), p.parentId(), p.hostId(),
                p.forkGeneration(), fork.vmType()), s.memorySize(), s.cpuidEntries(), s.clockNs(), s.vcpus(),
                s.devices());
    }

    /**
     * The local address transfers are sent from: this node's Artery hostname, which is where
     * a target accepts them from (CloneTarget.accept), when it is an address of this machine;
     * else (a hostname of a NAT in front of it) the kernel's choice.
     */
    private InetSocketAddress localAddress() {
        java.util.Optional<InetSocketAddress> known = sendFrom;
        if (known == null) {
            known = java.util.Optional.ofNullable(findLocalAddress());
            sendFrom = known;
        }
        return known.orElse(null);
    }

    private InetSocketAddress findLocalAddress() {
        String host = system.address().getHost().orElse(null);
        if (host == null) {
            return null;
        }
        try {
            java.net.InetAddress a = java.net.InetAddress.getByName(host);
            return a.isLoopbackAddress() || java.net.NetworkInterface.getByInetAddress(a) != null
                    ? new InetSocketAddress(a, 0) : null;
        } catch (java.io.IOException e) {
            return null;
        }
    }

    private CompletionStage<Void> shipTo(RemoteFork fork, long target, List<RemoteFork.Copy> copies) {
        if (closed) {
            return CompletableFuture.failedFuture(new IllegalStateException("host " + hostId + " is stopping"));
        }
        long parentId = fork.parent().vmId();
        long transferId = transferIds.incrementAndGet();
        String sentKey = parentId + ":" + target;
        Sent base = sent.get(sentKey);
        byte[] imageKey = ByteBuffer.allocate(16).putLong(hostId).putLong(fork.image().imageId()).array();
        long memory = fork.state().memorySize();
        int vcpus = Math.max(1, fork.state().vcpus().size());
        List<HostActor.CloneSlot> slots = new ArrayList<>();
        for (RemoteFork.Copy c : copies) {
            slots.add(new HostActor.CloneSlot(c.index(), c.reservationId()));
        }
        return findHost(target).thenCompose(host -> AskPattern.<HostActor.Command, HostActor.Reply>ask(host,
                r -> new HostActor.OfferClones(transferId, hostId, parentId, fork.vmType(), fork.forkBlock(), slots,
                        memory, vcpus, imageKey, base == null ? new byte[0] : base.key(), r),
                askTimeout, system.scheduler())).thenCompose(reply -> {
                    if (reply instanceof HostActor.Failure f) {
                        throw new CopyFailure(f.code(), f.message());
                    }
                    if (!(reply instanceof HostActor.ClonesAccepted a)) {
                        throw new IllegalStateException("unexpected answer to an offer: " + reply);
                    }
                    Set<Integer> accepted = new HashSet<>(a.accepted());
                    for (var r : a.refused()) {
                        fail(fork, target, r.index(), r.code(), r.reason());
                    }
                    List<RemoteFork.Copy> going = copies.stream().filter(c -> accepted.contains(c.index())).toList();
                    if (going.isEmpty()) {
                        return CompletableFuture.<Void>completedFuture(null);
                    }
                    boolean delta = a.delta() && base != null;
                    byte[] opening = TransferOpening.newBuilder().setTransferId(transferId)
                            .setToken(ByteString.copyFrom(a.token())).build().toByteArray();
                    InetSocketAddress to = new InetSocketAddress(a.transferHost(), a.transferPort());
                    // Set by the writer's thread before the END frame, read once the result came back.
                    var written = new java.util.concurrent.atomic.AtomicReference<CapsuleImages.Written>();
                    CapsuleImages.Counting counted = new CapsuleImages.Counting(failpoints, "source");
                    long tOffered = System.nanoTime();
                    return TransferClient.send(system, to, localAddress(), opening, out -> {
                                long tConnected = System.nanoTime();
                                written.set(CapsuleImages.write(vmm, copiesState(fork), fork.image(),
                                        delta ? base.key() : null, delta ? base.image() : null,
                                        delta ? base.dataBytes() : 0, counted.wrap(out)));
                                log.debug("clone transfer {} to host {}: connected in {} us, capsule of {} bytes "
                                                + "written in {} ms", transferId, target,
                                        (tConnected - tOffered) / 1000, counted.bytes(),
                                        (System.nanoTime() - tConnected) / 1_000_000);
                                failpoints.reach("source-after-last-chunk");
                                stats.capsulesSent.incrementAndGet();
                                stats.bytesSent.addAndGet(counted.bytes());
                                if (written.get().delta()) {
                                    stats.deltasSent.incrementAndGet();
                                }
                            }, transfer)
                            .thenAccept(bytes -> {
                                CloneResults results;
                                try {
                                    results = CloneResults.parseFrom(bytes);
                                } catch (com.google.protobuf.InvalidProtocolBufferException e) {
                                    throw new CopyFailure(ErrorCode.LAUNCH_FAILED,
                                            "host " + target + " answered a transfer with bytes that are not CloneResults");
                                }
                                Set<Integer> answered = new HashSet<>();
                                for (CloneResult r : results.getResultsList()) {
                                    if (!accepted.contains(r.getIndex()) || !answered.add(r.getIndex())) {
                                        continue;
                                    }
                                    RemoteFork.Copy c = going.stream().filter(x -> x.index() == r.getIndex())
                                            .findFirst().orElseThrow();
                                    if (r.hasVm()) {
                                        VmInfo info = HostCodecs.fromProto(r.getVm());
                                        fork.started(c.index(), info.vmId());
                                        outcomes.accept(new Outcome(fork.forkId(), parentId, c.index(), target, info,
                                                null, "", results.getCapsuleBytes(), written.get().delta(), fork.forkBlock() == 0));
                                    } else {
                                        fail(fork, target, c.index(), r.getCode(), r.getReason());
                                    }
                                }
                                for (RemoteFork.Copy c : going) {
                                    if (!answered.contains(c.index())) {
                                        fail(fork, target, List.of(c), ErrorCode.LAUNCH_FAILED,
                                                "host " + target + " did not say what became of the copy");
                                    }
                                }
                                remember(sentKey, imageKey, fork.image(), written.get().dataBytes());
                            });
                });
    }

    private void remember(String sentKey, byte[] imageKey, RuntimeImage image, long dataBytes) {
        if (closed) {
            return;
        }
        Sent old = sent.put(sentKey, new Sent(imageKey, image.retain(), dataBytes));
        if (old != null) {
            old.image().release();
        }
    }

    /** How often {@link #findHost} asks the receptionist again while the target is not listed yet. */
    private static final Duration FIND_RETRY = Duration.ofMillis(100);
    /** How long a target placement chose may be missing from the receptionist before it is gone. */
    private static final Duration FIND_PATIENCE = Duration.ofSeconds(3);

    /**
     * The target's HostActor as the receptionist lists it. Placement learns a host from its
     * load reports, the receptionist from its own replicated registry, and the two do not
     * arrive together: just after a node joins, placement may choose it before this node's
     * receptionist lists it (RemoteClonesTest failed so, once, in a fresh clone). So a target
     * not listed is asked for again every {@link #FIND_RETRY} for up to {@link #FIND_PATIENCE}
     * (or the ask timeout, if shorter) before it counts as gone.
     */
    private CompletionStage<ActorRef<HostActor.Command>> findHost(long target) {
        Duration patience = askTimeout.compareTo(FIND_PATIENCE) < 0 ? askTimeout : FIND_PATIENCE;
        return findHost(target, System.nanoTime() + patience.toNanos());
    }

    private CompletionStage<ActorRef<HostActor.Command>> findHost(long target, long deadlineNanos) {
        var key = HostActor.serviceKey(target);
        return AskPattern.<Receptionist.Command, Receptionist.Listing>ask(system.receptionist(),
                r -> Receptionist.find(key, r), askTimeout, system.scheduler()).thenCompose(l -> {
                    var hosts = l.getServiceInstances(key);
                    if (!hosts.isEmpty()) {
                        return CompletableFuture.completedFuture(hosts.iterator().next());
                    }
                    if (System.nanoTime() >= deadlineNanos) {
                        throw new CopyFailure(ErrorCode.HOST_GONE, "host " + target + " is not in the cluster");
                    }
                    CompletableFuture<ActorRef<HostActor.Command>> later = new CompletableFuture<>();
                    system.scheduler().scheduleOnce(FIND_RETRY, () -> findHost(target, deadlineNanos)
                            .whenComplete((h, e) -> {
                                if (e != null) {
                                    later.completeExceptionally(e);
                                } else {
                                    later.complete(h);
                                }
                            }), system.executionContext());
                    return later;
                });
    }

    private void fail(RemoteFork fork, long target, int index, String code, String reason) {
        ErrorCode c;
        try {
            c = ErrorCode.valueOf(code);
        } catch (IllegalArgumentException e) {
            c = ErrorCode.LAUNCH_FAILED;
        }
        fail(fork, target, fork.copies().stream().filter(x -> x.index() == index).toList(), c, reason);
    }

    private void fail(RemoteFork fork, long target, List<RemoteFork.Copy> copies, ErrorCode code, String reason) {
        for (RemoteFork.Copy c : copies) {
            if (!fork.outcome(c.index()).isDone()) {
                fork.failed(c.index(), statusOf(code), reason);
                log.info("remote copy {} of VM {} on host {} failed: {}", c.index(), fork.parent().vmId(), target,
                        reason);
                stats.copiesFailed.incrementAndGet();
                outcomes.accept(new Outcome(fork.forkId(), fork.parent().vmId(), c.index(), target, null, code, reason,
                        0, false, fork.forkBlock() == 0));
            }
        }
    }

    /** The FORK status a guest sees for a copy that failed with {@code code}. */
    static long statusOf(ErrorCode code) {
        return switch (code) {
            case HOST_FULL -> Hypercalls.ELIMIT;
            default -> Hypercalls.ETRANSFER;
        };
    }

    /** A failure message that names its ErrorCode, so that it survives a transfer's abort frame. */
    static String tagged(ErrorCode code, String message) {
        return "[" + code.name() + "] " + message;
    }

    private static ErrorCode codeOf(Throwable f) {
        f = unwrap(f);
        if (f instanceof CopyFailure c) {
            return c.code;
        }
        if (f instanceof TimeoutException) {
            return ErrorCode.TIMEOUT;
        }
        String m = f.getMessage() == null ? "" : f.getMessage();
        for (ErrorCode c : ErrorCode.values()) {
            if (m.contains("[" + c.name() + "] ")) {
                return c;
            }
        }
        return ErrorCode.TRANSFER_FAILED;
    }

    private static String reasonOf(long target, Throwable f) {
        f = unwrap(f);
        if (f instanceof CopyFailure c) {
            return c.getMessage();
        }
        if (f instanceof TimeoutException) {
            return "host " + target + " did not answer the offer in time";
        }
        String m = f.getMessage() == null ? f.toString() : f.getMessage();
        if (m.matches("(?s).*\\[[A-Z_]+\\] .*")) {
            // The target's own words, e.g. why it refused the capsule.
            return m.replaceAll("\\[[A-Z_]+\\] ", "");
        }
        return "transfer to host " + target + " failed: " + m;
    }

    private static Throwable unwrap(Throwable f) {
        while (f instanceof CompletionException && f.getCause() != null) {
            f = f.getCause();
        }
        return f;
    }

    @Override
    public void close() {
        closed = true;
        for (String k : List.copyOf(sent.keySet())) {
            Sent s = sent.remove(k);
            if (s != null) {
                s.image().release();
            }
        }
    }

    /** A copy failed for a reason the application can name. */
    private static final class CopyFailure extends RuntimeException {
        final ErrorCode code;

        CopyFailure(ErrorCode code, String message) {
            super(message, null, false, false);
            this.code = code;
        }
    }
}
