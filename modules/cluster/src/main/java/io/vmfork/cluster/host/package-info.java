/**
 * The host: {@link io.vmfork.cluster.host.HostActor}, one per node, owns this host's VMM.
 * Its blocking VMM calls run on the {@code vmfork.node.host-dispatcher}, never on the
 * actor's thread; the VMM's lifecycle events reach it as private messages; it admits every
 * VM through the node's {@link io.vmfork.cluster.placement.AdmissionLedger} (the final word
 * on admission) and has the load reporter publish each change; and its
 * {@link io.vmfork.cluster.host.HostCopyPlacement} makes every fork ask placement where its
 * copies go (local copies admitted here, remote ones failing with VMF_EREMOTE until remote
 * clones exist). HostActors register with the Receptionist under
 * {@link io.vmfork.cluster.host.HostActor#ALL_HOSTS} and a key per host id. Their messages
 * cross the network: {@link io.vmfork.cluster.host.HostCodecs} (host.proto).
 */
package io.vmfork.cluster.host;
