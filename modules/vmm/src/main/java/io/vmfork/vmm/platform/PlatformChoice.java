package io.vmfork.vmm.platform;

/**
 * The platform a VMM runs its guests on and why: {@code vmfork.vmm.platform} as configured,
 * and for "auto" what was found on the host.
 *
 * @param name   "kvm" or "process"
 * @param reason one line for logs, status and the CLI
 */
public record PlatformChoice(String name, String reason) {
    public static final String KVM = "kvm";
    public static final String PROCESS = "process";

    /**
     * {@code configured}: "kvm" and "process" are taken as they are (the VMM then fails with
     * what is missing, if anything); "auto" is kvm when {@code kvmDevice} opens read-write,
     * process otherwise.
     */
    public static PlatformChoice decide(String configured, String kvmDevice) {
        switch (configured) {
            case KVM:
                return new PlatformChoice(KVM, "configured (vmfork.vmm.platform = kvm)");
            case PROCESS:
                return new PlatformChoice(PROCESS, "configured (vmfork.vmm.platform = process)");
            default:
                String why = HostPlatforms.kvmUnusableReason(kvmDevice);
                return why == null
                        ? new PlatformChoice(KVM, kvmDevice + " opens (vmfork.vmm.platform = auto)")
                        : new PlatformChoice(PROCESS, why + " (vmfork.vmm.platform = auto)");
        }
    }

    public boolean isProcess() {
        return PROCESS.equals(name);
    }

    @Override
    public String toString() {
        return name + ": " + reason;
    }
}
