package io.vmfork.vmm;

/** The VM ended before it could do what was asked. */
public final class VmEndedException extends RuntimeException {
    private final VmExit exit;

    public VmEndedException(VmExit exit) {
        super("the VM ended: " + exit.reason());
        this.exit = exit;
    }

    public VmExit exit() {
        return exit;
    }
}
