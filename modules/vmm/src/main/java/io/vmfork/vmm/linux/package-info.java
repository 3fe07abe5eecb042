/**
 * The Linux personality: what makes a static x86-64 Linux program a vmfork guest
 * (docs/linux.md). {@link io.vmfork.vmm.linux.ProcessStart} loads the program into guest
 * RAM and lays out its stack as the kernel would; {@link io.vmfork.vmm.linux.Syscalls} is
 * the system call table, whose calls are served by one class per family ({@link
 * io.vmfork.vmm.linux.MemoryCalls}, {@link io.vmfork.vmm.linux.IoCalls}, {@link
 * io.vmfork.vmm.linux.ProcessCalls}, {@link io.vmfork.vmm.linux.TimeCalls}, {@link
 * io.vmfork.vmm.linux.SignalCalls}), each call documented with the errno cases it answers,
 * the way gVisor's {@code pkg/sentry/syscalls/linux} reads. The per-VM state is one plain
 * object, {@link io.vmfork.vmm.linux.LinuxState}, which a fork copies.
 *
 * <p>This package knows nothing of the VMM's classes: what it needs of the VM (its memory,
 * the message channel as standard input and output, the console, the clock, FS base, the
 * end of the VM) is {@link io.vmfork.vmm.linux.LinuxHost}, which the VMM implements.
 */
package io.vmfork.vmm.linux;
