package io.vmfork.vmm;

import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.linux.LinuxHost;
import io.vmfork.vmm.linux.LinuxState;
import io.vmfork.vmm.linux.Syscalls;
import io.vmfork.vmm.memory.GuestMemory;

/**
 * The VM side of a Linux guest (docs/linux.md): its {@link LinuxState} and the system
 * calls its vCPU traps on, served by {@link Syscalls} the way {@link HypercallDispatcher}
 * serves hypercalls, on the vCPU's own thread, through the same trap path. What the Linux
 * personality needs of the VM (the message channel as stdin and stdout, the console, the
 * clock, the vCPU's FS base, the end) is given to it as a {@link LinuxHost}.
 */
final class LinuxGuest {
    private final VirtualMachine vm;
    private final LinuxState state;

    LinuxGuest(VirtualMachine vm, LinuxState state) {
        this.vm = vm;
        this.state = state;
    }

    LinuxState state() {
        return state;
    }

    /**
     * Serves the system call the vCPU trapped on ({@code regs}: RIP past the `syscall`, RAX
     * its number, the arguments in RDI, RSI, RDX, R10, R8, R9) and sets RAX to its result.
     * False when the vCPU must not return to the program (it exited, or the VM stops).
     */
    boolean dispatch(Vcpu vcpu, long[] regs) {
        long raw = regs[CpuState.RAX];
        int nr = raw < 0 || raw > Integer.MAX_VALUE ? -1 : (int) raw;
        long r = Syscalls.serve(state, new Host(vcpu), nr, regs[CpuState.RDI], regs[CpuState.RSI],
                regs[CpuState.RDX], regs[CpuState.R10], regs[CpuState.R8], regs[CpuState.R9]);
        if (r == Syscalls.STOP) {
            return false;
        }
        regs[CpuState.RAX] = r;
        vcpu.setRegs(regs);
        return true;
    }

    /** One vCPU's view of its VM, for the calls it makes. */
    private final class Host implements LinuxHost {
        private final Vcpu vcpu;

        Host(Vcpu vcpu) {
            this.vcpu = vcpu;
        }

        @Override
        public GuestMemory memory() {
            return vm.memory();
        }

        @Override
        public void stdoutLine(byte[] line) {
            vm.guestMessage(line);
        }

        @Override
        public void stderr(byte[] bytes) {
            vm.consoleOutput(bytes);
        }

        @Override
        public byte[] awaitRequest() {
            MessageChannel channel = vm.channel();
            RunControl control = vm.control();
            boolean wouldBlock;
            synchronized (control) {
                wouldBlock = !channel.hasRequestOrClosed();
            }
            if (wouldBlock) {
                vm.markReady(); // the program waits for work: READY, as an SDK guest's READY hypercall
            }
            synchronized (control) {
                if (!channel.hasRequestOrClosed()) {
                    if (!restartableWait(() -> control.awaitInHypercall(vcpu, channel::hasRequestOrClosed))) {
                        return null;
                    }
                }
                byte[] m = channel.peekRequest();
                if (m == null) {
                    return END_OF_INPUT;
                }
                channel.dropRequest();
                return m;
            }
        }

        @Override
        public boolean sleepUntil(long deadline) {
            vcpu.sleeping = true;
            try {
                return restartableWait(() -> vm.control().awaitInHypercall(vcpu, () -> false, deadline));
            } finally {
                vcpu.sleeping = false;
            }
        }

        /** A wait that a fork or snapshot may capture: the copy finds the vCPU back on its `syscall`. */
        private boolean restartableWait(Wait w) {
            vcpu.restartIsSyscall = true;
            vcpu.inRestartableHypercall = true;
            try {
                return w.await();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return false;
            } finally {
                vcpu.inRestartableHypercall = false;
                vcpu.restartIsSyscall = false;
            }
        }

        @Override
        public void exit(int code) {
            vm.end(VmExit.exited(code));
        }

        @Override
        public void killed(int signal, String why) {
            long rip = vcpu.regs()[CpuState.RIP];
            vm.end(VmExit.crashed(String.format("guest crashed: killed by signal %d, which the program sent itself"
                    + " (%s) at rip=0x%x", signal, why, rip - 2)));
        }

        @Override
        public long fsBase() {
            return vcpu.context().fsBase();
        }

        @Override
        public void setFsBase(long base) {
            vcpu.context().setFsBase(base);
        }

        @Override
        public long gsBase() {
            return vcpu.context().gsBase();
        }

        @Override
        public void setGsBase(long base) {
            vcpu.context().setGsBase(base);
        }

        @Override
        public void random(byte[] into) {
            vm.vmm().entropy().nextBytes(into);
        }

        @Override
        public int maxMessage() {
            return vm.channel().maxMessage();
        }

        @Override
        public long vmId() {
            return vm.id();
        }
    }

    @FunctionalInterface
    private interface Wait {
        boolean await() throws InterruptedException;
    }
}
