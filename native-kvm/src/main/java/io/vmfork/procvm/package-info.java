/**
 * The process platform's native side: {@link GuestProcesses} spawns, launches and traces
 * (ptrace) the guest processes that run the stub (src/main/c/stub), through the host helper
 * library ({@link io.vmfork.os.HostLibrary}). The plain OS calls it shares with the rest of
 * the VMM are in {@code io.vmfork.os}.
 */
package io.vmfork.procvm;
