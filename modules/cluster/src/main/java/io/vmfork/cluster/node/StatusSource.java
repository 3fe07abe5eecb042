package io.vmfork.cluster.node;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionStage;

/**
 * What a node's {@code GET /status} says about this host's VMs: the {@code "vms"} field,
 * a JSON array with one object per VM. The HostActor fills it in
 * ({@link VmforkNode#vmStatus(StatusSource)}); until then it is {@link #NONE}, an empty
 * list. Called on the HTTP server's threads: answer with a stage (an ask of an actor, for
 * example) rather than block; a stage that fails or does not complete within
 * {@code vmfork.node.ask-timeout} makes the status say so instead of the list.
 */
@FunctionalInterface
public interface StatusSource {
    /** No VMs to report. */
    StatusSource NONE = () -> CompletableFuture.completedFuture(JsonNodeFactory.instance.arrayNode());

    /** This host's VMs, as a JSON array. */
    CompletionStage<JsonNode> vms();
}
