package io.vmfork.vmm.capsule;

import io.vmfork.proto.CapsuleHeader;
import io.vmfork.vmm.state.MachineState;

/**
 * A capsule that {@link CapsuleReader} read to its end and verified: its header, the
 * decoded machine state (guest RAM went to the sink) and what it held.
 */
public record CapsuleContents(CapsuleHeader header, MachineState state, CapsuleStats stats) {
}
