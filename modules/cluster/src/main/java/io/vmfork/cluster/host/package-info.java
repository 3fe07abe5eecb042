/**
 * The host: the HostActor that owns this host's VMM, runs its blocking calls off the
 * actor's thread, reports the host's load for placement ({@link
 * io.vmfork.cluster.placement.LoadReports}) and has the final word on admission. (To come.)
 */
package io.vmfork.cluster.host;
