package io.vmfork.cluster.api;

import io.vmfork.cluster.serialization.ClusterMessage;
import java.util.Arrays;

/** Bytes a VM wrote to its console, as a console subscriber receives them. */
public record ConsoleOutput(long vmId, byte[] bytes) implements ClusterMessage {
    public ConsoleOutput {
        bytes = bytes.clone();
    }

    @Override
    public byte[] bytes() {
        return bytes.clone();
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof ConsoleOutput c && c.vmId == vmId && Arrays.equals(c.bytes, bytes);
    }

    @Override
    public int hashCode() {
        return Long.hashCode(vmId) * 31 + Arrays.hashCode(bytes);
    }

    @Override
    public String toString() {
        return "ConsoleOutput[vmId=" + Long.toHexString(vmId) + ", " + bytes.length + " bytes]";
    }
}
