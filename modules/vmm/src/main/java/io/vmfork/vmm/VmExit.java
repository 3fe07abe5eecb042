package io.vmfork.vmm;

/** How and why a VM ended. */
public record VmExit(Kind kind, int exitCode, String reason) {
    public enum Kind {
        /** The guest called EXIT. */
        EXITED,
        /** The guest faulted, or broke the ABI so that it could not go on. */
        CRASHED,
        /** The host stopped it. */
        STOPPED
    }

    public static VmExit exited(int code) {
        return new VmExit(Kind.EXITED, code, "guest exited with code " + code);
    }

    public static VmExit crashed(String reason) {
        return new VmExit(Kind.CRASHED, -1, reason);
    }

    public static VmExit stopped(String reason) {
        return new VmExit(Kind.STOPPED, -1, reason);
    }

    @Override
    public String toString() {
        return reason;
    }
}
