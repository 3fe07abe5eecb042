package io.vmfork.cluster.web;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import io.vmfork.cluster.api.VmEvent;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.placement.HostLoad;
import java.util.Collection;
import java.util.Comparator;
import java.util.HashMap;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import org.apache.pekko.cluster.ClusterEvent;
import org.apache.pekko.cluster.Member;

/** The JSON of the cluster page's feed (the format is in {@link ClusterPage}). */
final class PageJson {
    private static final ObjectMapper JSON = new ObjectMapper();

    private PageJson() {
    }

    static ObjectNode object() {
        return JSON.createObjectNode();
    }

    static String write(ObjectNode o) {
        try {
            return JSON.writeValueAsString(o);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException("cannot write the page's JSON", e);
        }
    }

    static String id(long vmId) {
        return Long.toHexString(vmId);
    }

    static void putVm(ObjectNode o, VmInfo vm) {
        o.put("id", id(vm.vmId()));
        o.put("host_id", vm.hostId());
        o.put("state", vm.state());
        o.put("vm_type", vm.vmType());
        if (vm.parentId() == 0) {
            o.putNull("parent");
        } else {
            o.put("parent", id(vm.parentId()));
        }
        o.put("fork_generation", vm.forkGeneration());
        o.put("origin", vm.origin().name().toLowerCase(Locale.ROOT));
        o.put("image", vm.image());
        o.put("memory", vm.memory());
        o.put("ready", vm.ready());
    }

    static ObjectNode event(VmEvent e, long timeMillis) {
        ObjectNode o = object();
        o.put("kind", e.kind().name());
        o.put("vm_id", id(e.vmId()));
        o.put("host_id", e.hostId());
        if (e.vm() == null) {
            o.putNull("vm");
        } else {
            putVm(o.putObject("vm"), e.vm());
        }
        o.put("exit_code", e.exitCode());
        o.put("detail", e.detail());
        o.put("time", timeMillis);
        return o;
    }

    static void putVms(ObjectNode o, Collection<VmInfo> vms) {
        ArrayNode list = o.putArray("vms");
        vms.stream().sorted(Comparator.comparingLong(VmInfo::vmId)).forEach(vm -> putVm(list.addObject(), vm));
    }

    /**
     * {@code "hosts"}: every load report, with its member's status ("removed" when its node
     * is no member), and {@code "members"}: the members that report no load (clients).
     */
    static void putHosts(ObjectNode o, Map<Long, HostLoad> reports, ClusterEvent.CurrentClusterState state,
                         long selfHostId) {
        Map<String, Member> members = new HashMap<>();
        for (Member m : state.getMembers()) {
            members.put(m.address().toString(), m);
        }
        Set<Member> unreachable = state.getUnreachable();
        ArrayNode hosts = o.putArray("hosts");
        reports.values().stream().sorted(Comparator.comparingLong(HostLoad::hostId)).forEach(r -> {
            ObjectNode h = hosts.addObject();
            Member m = members.remove(r.address());
            h.put("host_id", r.hostId());
            h.put("host_name", r.hostName());
            h.put("address", r.address());
            h.put("platform", r.platform());
            h.put("self", r.hostId() == selfHostId);
            h.put("status", m == null ? "removed" : m.status().toString().toLowerCase(Locale.ROOT));
            h.put("reachable", m != null && !unreachable.contains(m));
            h.put("vms", r.vmCount());
            h.put("memory_used", r.memoryUsed());
            h.put("vcpus_used", r.vcpusUsed());
            ObjectNode cap = h.putObject("capacity");
            cap.put("guest_memory", r.capacity().guestMemory());
            cap.put("vm_slots", r.capacity().vmSlots());
            cap.put("vcpus", r.capacity().vcpus());
        });
        ArrayNode others = o.putArray("members");
        members.values().stream().sorted(Comparator.comparing(m -> m.address().toString())).forEach(m -> {
            ObjectNode x = others.addObject();
            x.put("address", m.address().toString());
            x.put("status", m.status().toString().toLowerCase(Locale.ROOT));
            x.put("reachable", !unreachable.contains(m));
        });
    }
}
