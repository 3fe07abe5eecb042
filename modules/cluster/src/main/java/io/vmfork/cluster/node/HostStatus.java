package io.vmfork.cluster.node;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmIdentity;
import io.vmfork.vmm.Vmm;
import java.util.concurrent.CompletableFuture;

/**
 * The {@code "vms"} of a node's {@code GET /status}: every VM alive on this host, read
 * from the VMM's registry (a snapshot that takes no lock and drives nothing).
 */
final class HostStatus {
    private HostStatus() {
    }

    static StatusSource of(Vmm vmm) {
        return () -> {
            ArrayNode out = JsonNodeFactory.instance.arrayNode();
            for (VirtualMachine vm : vmm.vms()) {
                VmIdentity id = vm.identity();
                ObjectNode o = out.addObject();
                o.put("id", Long.toHexString(id.vmId()));
                o.put("state", vm.state().toString());
                o.put("image", vm.imageName());
                o.put("vm_type", id.vmType());
                o.put("parent", id.parentId() == 0 ? null : Long.toHexString(id.parentId()));
                o.put("fork_generation", id.forkGeneration());
                o.put("made", id.parentId() == 0 ? "booted" : vm.parent() != null ? "child" : "clone");
                o.put("ready", vm.ready().isDone() && !vm.ready().isCompletedExceptionally());
            }
            return CompletableFuture.completedFuture(out);
        };
    }
}
