/**
 * Placement, the patent's {@code get_target_pf(vm_type)}: which host gets each new VM and
 * each copy of a fork.
 *
 * <ul>
 *   <li>{@link io.vmfork.cluster.placement.PlacementEntity}: one cluster-sharded entity per
 *       vm_type; its class comment gives the protocol (placement proposes with a
 *       reservation, the host admits or refuses, a refused copy is re-placed once).</li>
 *   <li>{@link io.vmfork.cluster.placement.LoadReports}: the hosts' {@link
 *       io.vmfork.cluster.placement.HostLoad} reports in a Distributed Data LWWMap keyed by
 *       host id, from which every entity rebuilds its view.</li>
 *   <li>{@link io.vmfork.cluster.placement.LoadView} (reports, reachable members,
 *       reservations) and {@link io.vmfork.cluster.placement.Placer} (the policies:
 *       least-loaded, spread, pack, local-first): plain classes, tested without actors.</li>
 *   <li>{@link io.vmfork.cluster.placement.AdmissionLedger}: the host's side: admission
 *       against its capacity (the final word), and its load reports, which
 *       {@link io.vmfork.cluster.placement.LoadReporter} publishes every
 *       {@code load-report-interval} and whenever the host says its load changed.</li>
 *   <li>{@link io.vmfork.cluster.placement.PlacementClient}: the entry point for Java code
 *       that is not an actor, including the answer in the VMM's CopyTarget terms.</li>
 * </ul>
 */
package io.vmfork.cluster.placement;
