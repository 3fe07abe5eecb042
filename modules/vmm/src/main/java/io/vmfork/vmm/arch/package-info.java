/**
 * x86-64 CPU state in a form that does not depend on the platform that took it, as gVisor
 * keeps it in {@code pkg/sentry/arch}: {@link CpuState} (general registers, RIP, RFLAGS,
 * FS/GS base, the XSAVE area, XCR0) is what every platform saves and restores, and
 * {@link KvmCpuPart} the rest of a KVM vCPU that the guest model does not fix. Segment,
 * control-register and MSR values that the model does fix ({@link io.vmfork.vmm.x86.GuestModel})
 * are derived, not stored; {@link SregsState} and {@link SegmentState} are KVM's view of
 * them, built by the KVM platform and the model. Nothing here depends on another package
 * of the VMM.
 */
package io.vmfork.vmm.arch;
