/**
 * The vmfork cluster runtime: a Pekko cluster node per host around that host's VMM.
 * Layers: this module depends on the vmm module, never the reverse; what the VMM needs
 * from the cluster (where a fork's copies go) is an interface of the VMM implemented here.
 * One package per concern: {@code node} (settings, bootstrap), {@code host} (the
 * HostActor), {@code placement} (the sharded placement entities), {@code transfer}
 * (capsule streams), {@code api} (what applications use), {@code serialization} (the wire
 * format).
 */
package io.vmfork.cluster;
