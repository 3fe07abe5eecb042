package io.vmfork.vmm.linux;

import io.vmfork.vmm.memory.GuestMemory;

/**
 * What the Linux personality needs of the VM and of the vCPU whose system call it serves;
 * the VMM implements it (one per call, on the vCPU's own thread).
 */
public interface LinuxHost {
    GuestMemory memory();

    /** One line the program wrote to stdout (without its newline): the reply to the oldest waiting request. */
    void stdoutLine(byte[] line);

    /** Bytes the program wrote to stderr: the VM's console. */
    void stderr(byte[] bytes);

    /**
     * Waits for the next request (the program reads stdin and has nothing buffered): its
     * bytes, {@link #END_OF_INPUT} once the channel is closed and empty, or null when the VM
     * stops meanwhile. The first such wait makes the VM READY. The wait is restartable: a
     * fork or snapshot meanwhile captures the vCPU back on its {@code syscall}.
     */
    byte[] awaitRequest();

    /** The marker {@link #awaitRequest} returns for end of input. */
    byte[] END_OF_INPUT = new byte[0];

    /** Sleeps until System.nanoTime() reaches {@code deadline}, restartably; false when the VM stops meanwhile. */
    boolean sleepUntil(long deadline);

    /** Ends the VM as exited with {@code code}. */
    void exit(int code);

    /** Ends the VM as crashed: the program killed itself with {@code signal}. */
    void killed(int signal, String why);

    long fsBase();

    void setFsBase(long base);

    long gsBase();

    void setGsBase(long base);

    /** Fresh random bytes from the VMM (never a parent's). */
    void random(byte[] into);

    /** The largest message the channel carries: a longer stdout line is sent in pieces of this size. */
    int maxMessage();

    /** This VM's id, for logs. */
    long vmId();
}
