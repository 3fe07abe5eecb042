/**
 * The application API: {@link io.vmfork.cluster.api.VmCluster}, a CompletionStage facade
 * to launch (through placement or on a named host), fork, message, watch and stop VMs
 * anywhere in the cluster and to list them; and the values it deals in
 * ({@link io.vmfork.cluster.api.VmInfo}, {@link io.vmfork.cluster.api.VmEvent},
 * {@link io.vmfork.cluster.api.ConsoleOutput}, errors as
 * {@link io.vmfork.cluster.api.VmClusterException} with an
 * {@link io.vmfork.cluster.api.ErrorCode}). Actors use the same protocol directly: the
 * {@link io.vmfork.cluster.host.HostActor} messages, sent to the host found with the
 * Receptionist under {@code HostActor.serviceKey(hostId)} (a VM id names its host in bits
 * 40 and up). Lifecycle subscribers are served by the node's
 * {@link io.vmfork.cluster.api.ClusterView}, which also reports each VM of a host that
 * leaves the cluster as lost.
 */
package io.vmfork.cluster.api;
