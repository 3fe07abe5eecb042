/**
 * The application API: typed messages to launch, fork, message, watch and stop VMs
 * anywhere in the cluster, and a CompletionStage facade for code that is not an actor.
 * (To come.)
 */
package io.vmfork.cluster.api;
