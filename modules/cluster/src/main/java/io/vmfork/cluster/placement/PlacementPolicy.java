package io.vmfork.cluster.placement;

import java.util.Arrays;
import java.util.stream.Collectors;

/** How the placement entity of a {@code vm_type} chooses among the hosts with room. */
public enum PlacementPolicy {
    /** The host with the most free VM slots (then free memory, then lowest id). */
    LEAST_LOADED("least-loaded"),
    /** Round-robin over the hosts with room, in host-id order. */
    SPREAD("spread"),
    /** Fill one host first: the fullest host that still has room (then lowest id). */
    PACK("pack"),
    /**
     * The forking VM's own host while it has room (its copies then share memory
     * copy-on-write); least-loaded once it is full, or when there is no forking host.
     */
    LOCAL_FIRST("local-first");

    private final String configName;

    PlacementPolicy(String configName) {
        this.configName = configName;
    }

    /** The name used in configuration, such as {@code least-loaded}. */
    public String configName() {
        return configName;
    }

    /**
     * The policy named {@code name} in configuration.
     *
     * @throws IllegalArgumentException naming the known policies
     */
    public static PlacementPolicy fromConfigName(String name) {
        for (PlacementPolicy p : values()) {
            if (p.configName.equals(name)) {
                return p;
            }
        }
        throw new IllegalArgumentException("unknown placement policy '" + name + "' (known: "
                + Arrays.stream(values()).map(PlacementPolicy::configName).collect(Collectors.joining(", ")) + ")");
    }
}
