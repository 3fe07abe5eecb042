package io.vmfork.vmm;

/**
 * Events of one VM, called on its vCPU threads: keep them short and never block in them.
 */
public interface VmListener {
    VmListener NONE = new VmListener() {
    };

    /** Bytes the guest wrote to its console. */
    default void onConsole(VirtualMachine vm, byte[] bytes) {
    }

    /** A message from the guest that no request was waiting for. */
    default void onUnsolicitedMessage(VirtualMachine vm, byte[] message) {
    }

    /** The guest said it is initialised and ready to serve. */
    default void onReady(VirtualMachine vm) {
    }

    /** {@code parent} forked, and {@code child} is launched (it gets this same listener). */
    default void onForked(VirtualMachine parent, VirtualMachine child) {
    }

    /**
     * A copy of a fork of {@code parent} placed on another host started there or failed
     * ({@code outcome}); called once per copy, on whichever thread reported it, possibly
     * after {@code parent} ended.
     */
    default void onRemoteCopy(VirtualMachine parent, io.vmfork.vmm.fork.RemoteFork.Copy copy,
            io.vmfork.vmm.fork.RemoteFork.Outcome outcome) {
    }

    /** The VM ended and every resource it held is released. */
    default void onEnded(VirtualMachine vm, VmExit exit) {
    }
}
