package io.vmfork.vmm.linux;

/**
 * One system call being served: its number, its six arguments (RDI, RSI, RDX, R10, R8, R9)
 * and what serving it may touch.
 */
record Call(int nr, long a0, long a1, long a2, long a3, long a4, long a5, LinuxHost host, LinuxState state,
        UserMemory mem) {
}
