/**
 * A vmfork node: its settings ({@link io.vmfork.cluster.node.NodeSettings}, the
 * {@code vmfork.node} subtree, checked at start with the offending key named) and its
 * bootstrap ({@link io.vmfork.cluster.node.VmforkNode}): the actor system with Artery (TLS
 * with the member's credentials, {@link io.vmfork.cluster.security.SecuritySettings}),
 * the seed nodes and Pekko's split brain resolver, then the node's services.
 *
 * <p>Unique host ids: each node registers a guard with the cluster receptionist under a key
 * named after its host id. When two nodes hold one key, the younger (by Pekko's member
 * age) leaves the cluster and stops with {@link io.vmfork.cluster.node.HostIdConflict} as
 * its shutdown reason; {@code vmfork node} then exits 78 with that message.
 *
 * <p>Status: {@link io.vmfork.cluster.node.NodeStatusServer} serves, on
 * {@code vmfork.node.status.http-port}, the node's JSON {@code GET /status} (this host, its
 * load, the members with their load reports, its VMs from a
 * {@link io.vmfork.cluster.node.StatusSource}), the cluster page ({@code GET /} and its
 * feed {@code GET /events}, {@link io.vmfork.cluster.web.ClusterPage}) and Pekko
 * Management's cluster routes.
 */
package io.vmfork.cluster.node;
