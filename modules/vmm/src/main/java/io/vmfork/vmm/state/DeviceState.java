package io.vmfork.vmm.state;

import java.util.List;

/**
 * The VMM's device model of one VM: console position, the message channel's queued
 * requests, and hypercall state (whether the guest has said READY).
 */
public record DeviceState(long consoleBytesWritten, List<byte[]> queuedRequests, boolean channelClosed,
        boolean ready) {
    public DeviceState {
        queuedRequests = queuedRequests.stream().map(byte[]::clone).toList();
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof DeviceState x) || consoleBytesWritten != x.consoleBytesWritten
                || channelClosed != x.channelClosed || ready != x.ready
                || queuedRequests.size() != x.queuedRequests.size()) {
            return false;
        }
        for (int i = 0; i < queuedRequests.size(); i++) {
            if (!java.util.Arrays.equals(queuedRequests.get(i), x.queuedRequests.get(i))) {
                return false;
            }
        }
        return true;
    }

    @Override
    public int hashCode() {
        return Long.hashCode(consoleBytesWritten) + queuedRequests.size();
    }
}
