package io.vmfork.cluster.api;

import io.vmfork.cluster.host.HostActor;
import io.vmfork.cluster.placement.AdmissionLedger;
import io.vmfork.cluster.placement.PlacementClient;
import io.vmfork.cluster.placement.PlacementEntity;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.TimeoutException;
import java.util.function.Function;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.ActorSystem;
import org.apache.pekko.actor.typed.Props;
import org.apache.pekko.actor.typed.javadsl.AskPattern;
import org.apache.pekko.actor.typed.receptionist.Receptionist;
import org.apache.pekko.actor.typed.receptionist.ServiceKey;

/**
 * The application API for Java code that is not an actor: every method returns a
 * CompletionStage that completes with the answer, or exceptionally with a
 * {@link VmClusterException} whose {@link ErrorCode} says why (unknown VM, host gone, image
 * missing, host full, VM ended, timeout). Nothing waits longer than
 * {@code vmfork.node.api.ask-timeout}.
 *
 * <p>Routing: a host is found through the Receptionist under
 * {@link HostActor#serviceKey(long)}; a VM's host is the one its id names (bits 40 and
 * up, {@link VmInfo#hostOf}). A launch without a host asks placement ({@code PlaceVm})
 * and hands the reservation to the chosen host, which admits or refuses it. Actors may
 * send {@link HostActor} messages to the same hosts themselves.
 *
 * <p>Calls are independent: two calls made without waiting for the first may reach a VM in
 * either order (each finds its host first). Wait for a call's reply when order matters, or
 * send {@link HostActor.Request}s from one actor: a host passes one sender's requests to a
 * VM in the order they came.
 */
public final class VmCluster {
    private final ActorSystem<?> system;
    private final PlacementClient placement;
    private final Duration timeout;
    private final ActorRef<ClusterView.Command> view;

    private VmCluster(ActorSystem<?> system, PlacementClient placement, Duration timeout,
                      ActorRef<ClusterView.Command> view) {
        this.system = system;
        this.placement = placement;
        this.timeout = timeout;
        this.view = view;
    }

    /**
     * The API on a node's actor system: {@code placement} is the node's placement client
     * and {@code timeout} bounds every ask. Starts the node's {@link ClusterView}.
     */
    public static VmCluster create(ActorSystem<?> system, PlacementClient placement, Duration timeout) {
        ActorRef<ClusterView.Command> view = system.systemActorOf(ClusterView.create(timeout),
                "vm-cluster-view-" + java.util.UUID.randomUUID(), Props.empty());
        return new VmCluster(system, placement, timeout, view);
    }

    /** The timeout of every ask of this API. */
    public Duration timeout() {
        return timeout;
    }

    /**
     * Launches a VM from {@code image} (a shipped guest's name or a path on the chosen
     * host) where placement puts VMs of {@code vmType}.
     *
     * @param memory guest RAM in bytes; 0: the host's default
     */
    public CompletionStage<VmInfo> launch(String image, int vmType, long memory) {
        return placement.placeVm(vmType, memory, 1).handle((reply, failure) -> {
            if (failure != null) {
                throw new VmClusterException(ErrorCode.TIMEOUT, "placement did not answer within the placement"
                        + " ask timeout: " + failure.getMessage(), failure);
            }
            if (reply instanceof PlacementEntity.Placed placed && !placed.slots().isEmpty()) {
                return placed.slots().get(0);
            }
            String why = reply instanceof PlacementEntity.NoCapacity n ? n.reason() : String.valueOf(reply);
            throw new VmClusterException(ErrorCode.HOST_FULL, why);
        }).thenCompose(slot -> launch(slot.hostId(), image, vmType, memory, slot.reservationId()));
    }

    /** Launches a VM from {@code image} on host {@code hostId}, which admits it if it has room. */
    public CompletionStage<VmInfo> launchOn(long hostId, String image, int vmType, long memory) {
        return launch(hostId, image, vmType, memory, AdmissionLedger.NO_RESERVATION);
    }

    private CompletionStage<VmInfo> launch(long hostId, String image, int vmType, long memory, long reservation) {
        return ask(hostId, "host " + hostId, r -> new HostActor.Launch(image, vmType, memory, reservation, r),
                HostActor.Launched.class).thenApply(HostActor.Launched::vm);
    }

    /** Forks VM {@code vmId} from outside into {@code count} copies of {@code vmType} (-1: the parent's). */
    public CompletionStage<HostActor.Forked> fork(long vmId, int count, int vmType) {
        return askVm(vmId, r -> new HostActor.Fork(vmId, count, vmType, r), HostActor.Forked.class);
    }

    /** Sends {@code request} to VM {@code vmId}; completes with the guest's reply. */
    public CompletionStage<byte[]> request(long vmId, byte[] request) {
        return askVm(vmId, r -> new HostActor.Request(vmId, request, r), HostActor.Response.class)
                .thenApply(HostActor.Response::payload);
    }

    /** Stops VM {@code vmId}; completes with how it ended once it has released everything. */
    public CompletionStage<String> stop(long vmId) {
        return askVm(vmId, r -> new HostActor.Stop(vmId, r), HostActor.Stopped.class).thenApply(HostActor.Stopped::exit);
    }

    /**
     * Console output of VM {@code vmId} goes to {@code subscriber} from now on, until the
     * VM ends; completes with the output kept so far.
     */
    public CompletionStage<byte[]> subscribeConsole(long vmId, ActorRef<ConsoleOutput> subscriber) {
        return askVm(vmId, r -> new HostActor.SubscribeConsole(vmId, subscriber, r), HostActor.ConsoleSubscribed.class)
                .thenApply(HostActor.ConsoleSubscribed::soFar);
    }

    /**
     * Lifecycle events of every VM of the cluster (launched, ready, forked, exited,
     * crashed, stopped, lost with its host; known: a VM this node learnt of from a host
     * that joined its view later, and each VM the view knows already when the subscriber
     * comes) go to {@code subscriber} until it stops.
     */
    public void subscribe(ActorRef<VmEvent> subscriber) {
        view.tell(new ClusterView.AddSubscriber(subscriber));
    }

    /**
     * Every VM of the cluster as this node's view knows it now ({@link ClusterView}: the
     * hosts' lists and their lifecycle events since), at once, without asking the hosts: a
     * host that died but is not yet removed keeps nothing waiting. Called right after
     * {@link #subscribe} from the same thread, the list and the events that follow it leave
     * nothing out. A VM's {@code state} is as its host last listed or announced it.
     */
    public CompletionStage<List<VmInfo>> known() {
        return AskPattern.<ClusterView.Command, List<VmInfo>>ask(view, ClusterView.GetVms::new, timeout,
                system.scheduler());
    }

    /**
     * Every VM of the cluster, by id: each host's own list, asked at once. A host that
     * does not answer within the timeout is left out.
     */
    public CompletionStage<List<VmInfo>> list() {
        return hostsOf(HostActor.ALL_HOSTS).thenCompose(hosts -> {
            List<CompletableFuture<List<VmInfo>>> lists = new ArrayList<>();
            for (ActorRef<HostActor.Command> h : hosts) {
                lists.add(AskPattern.<HostActor.Command, HostActor.Reply>ask(h, HostActor.ListVms::new, timeout,
                                system.scheduler()).toCompletableFuture()
                        .handle((r, f) -> r instanceof HostActor.VmList l ? l.vms() : List.<VmInfo>of()));
            }
            return CompletableFuture.allOf(lists.toArray(CompletableFuture[]::new)).thenApply(v -> {
                List<VmInfo> all = new ArrayList<>();
                lists.forEach(l -> all.addAll(l.join()));
                all.sort(Comparator.comparingLong(VmInfo::vmId));
                return all;
            });
        });
    }

    /**
     * Whether host {@code hostId} is in the cluster as this node sees it now (its HostActor
     * is registered with the Receptionist; a node that just started takes a moment).
     */
    public CompletionStage<Boolean> knowsHost(long hostId) {
        return hostsOf(HostActor.serviceKey(hostId)).thenApply(hosts -> !hosts.isEmpty());
    }

    /**
     * Whether placement can choose host {@code hostId} now, as this node sees it: its
     * HostActor is registered, its node is up, and its load report has reached this node's
     * replica (which placement entities read). A node that just started takes a moment;
     * until then placement answers "no capacity" for it.
     */
    public CompletionStage<Boolean> placementKnowsHost(long hostId) {
        return knowsHost(hostId).thenCompose(known -> {
            if (!known) {
                return CompletableFuture.completedFuture(false);
            }
            return AskPattern.<org.apache.pekko.cluster.ddata.typed.javadsl.Replicator.Command,
                            org.apache.pekko.cluster.ddata.typed.javadsl.Replicator.GetResponse<
                                    org.apache.pekko.cluster.ddata.LWWMap<Long, io.vmfork.cluster.placement.HostLoad>>>ask(
                            org.apache.pekko.cluster.ddata.typed.javadsl.DistributedData.get(system).replicator(),
                            r -> new org.apache.pekko.cluster.ddata.typed.javadsl.Replicator.Get<>(
                                    io.vmfork.cluster.placement.LoadReports.KEY,
                                    org.apache.pekko.cluster.ddata.typed.javadsl.Replicator.readLocal(), r),
                            timeout, system.scheduler())
                    .thenApply(response -> {
                        if (!(response instanceof org.apache.pekko.cluster.ddata.typed.javadsl.Replicator.GetSuccess<
                                org.apache.pekko.cluster.ddata.LWWMap<Long, io.vmfork.cluster.placement.HostLoad>> ok)) {
                            return false;
                        }
                        io.vmfork.cluster.placement.HostLoad load =
                                ok.get(io.vmfork.cluster.placement.LoadReports.KEY).getEntries().get(hostId);
                        if (load == null) {
                            return false;
                        }
                        for (org.apache.pekko.cluster.Member m : org.apache.pekko.cluster.typed.Cluster.get(system)
                                .state().getMembers()) {
                            if (m.address().toString().equals(load.address())
                                    && m.status() == org.apache.pekko.cluster.MemberStatus.up()) {
                                return true;
                            }
                        }
                        return false;
                    });
        });
    }

    // ---- routing ----

    private <R extends HostActor.Reply> CompletionStage<R> askVm(long vmId,
            Function<ActorRef<HostActor.Reply>, HostActor.Command> message, Class<R> expected) {
        long hostId = VmInfo.hostOf(vmId);
        return ask(hostId, "VM " + vmId + "'s host " + hostId, message, expected);
    }

    private <R extends HostActor.Reply> CompletionStage<R> ask(long hostId, String what,
            Function<ActorRef<HostActor.Reply>, HostActor.Command> message, Class<R> expected) {
        return hostsOf(HostActor.serviceKey(hostId)).thenCompose(hosts -> {
            if (hosts.isEmpty()) {
                throw new VmClusterException(ErrorCode.HOST_GONE, what + " is not in the cluster");
            }
            ActorRef<HostActor.Command> host = hosts.get(0);
            return AskPattern.ask(host, message::apply, timeout, system.scheduler());
        }).handle((reply, failure) -> {
            if (failure != null) {
                Throwable f = unwrap(failure);
                if (f instanceof VmClusterException v) {
                    throw v;
                }
                if (f instanceof TimeoutException) {
                    throw new VmClusterException(ErrorCode.TIMEOUT, what + " did not answer within " + timeout, f);
                }
                throw new VmClusterException(ErrorCode.HOST_GONE, what + ": " + f, f);
            }
            if (reply instanceof HostActor.Failure fail) {
                throw new VmClusterException(fail.code(), fail.message());
            }
            if (!expected.isInstance(reply)) {
                throw new IllegalStateException("unexpected reply from " + what + ": " + reply);
            }
            return expected.cast(reply);
        });
    }

    private CompletionStage<List<ActorRef<HostActor.Command>>> hostsOf(ServiceKey<HostActor.Command> key) {
        return AskPattern.<Receptionist.Command, Receptionist.Listing>ask(system.receptionist(),
                        r -> Receptionist.find(key, r), timeout, system.scheduler())
                .thenApply(l -> List.copyOf(l.getServiceInstances(key)));
    }

    private static Throwable unwrap(Throwable f) {
        while (f instanceof CompletionException && f.getCause() != null) {
            f = f.getCause();
        }
        return f;
    }
}
