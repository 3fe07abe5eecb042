package io.vmfork.vmm.platform.kvm;

import io.vmfork.kvm.KvmRun;
import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.VcpuThreads;
import io.vmfork.kvm.x86.KvmRegs;
import io.vmfork.os.Errno;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.hypercall.Hypercalls;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.platform.ExecContext;
import io.vmfork.vmm.platform.GuestCode;
import io.vmfork.vmm.platform.Trap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * A KVM vCPU as an execution context: KVM_RUN and its exits. A kick is
 * kvm_run.immediate_exit (the window before the thread enters KVM_RUN) plus a signal to
 * the vCPU thread (the time inside it: KVM_RUN returns EINTR).
 */
public final class KvmExecContext implements ExecContext {
    private static final Logger log = LoggerFactory.getLogger(KvmExecContext.class);
    private static final int SYSCALL_LENGTH = 2;

    private final KvmVcpu kvm;
    private final GuestMemory memory;
    private final int kickSignal;
    /** pthread_t of the vCPU thread, 0 until it runs; and the thread, to tell whether it is alive. */
    private volatile long pthread;
    private volatile Thread thread;
    private boolean closed;

    public KvmExecContext(KvmVcpu kvm, GuestMemory memory, int kickSignal) {
        this.kvm = kvm;
        this.memory = memory;
        this.kickSignal = kickSignal;
    }

    /** The KVM vCPU, for what only KVM has (its full state for a capture or restore). */
    public KvmVcpu kvm() {
        return kvm;
    }

    @Override
    public int index() {
        return kvm.index();
    }

    @Override
    public Trap run() {
        if (thread == null) {
            pthread = VcpuThreads.selfThread();
            thread = Thread.currentThread();
        }
        int rc = kvm.runOnce();
        if (rc == -Errno.EINTR) {
            return Trap.interrupted();
        }
        if (rc < 0) {
            return Trap.crashed("KVM_RUN failed: " + Errno.name(-rc) + " at " + ripText());
        }
        KvmRun run = kvm.run();
        int reason = run.exitReason();
        if (log.isTraceEnabled()) {
            log.trace("vCPU {} exit {} {}", index(), KvmRun.exitName(reason), ripText());
        }
        return switch (reason) {
            case KvmRun.EXIT_IO -> portIo(run);
            case KvmRun.EXIT_SHUTDOWN -> Trap.crashed(shutdownReason());
            case KvmRun.EXIT_HLT -> Trap.crashed("guest halted (HLT) at " + ripText());
            case KvmRun.EXIT_MMIO -> Trap.crashed(String.format(
                    "guest crashed: access to guest-physical 0x%x, outside RAM, at %s", run.mmioPhysAddr(), ripText()));
            case KvmRun.EXIT_FAIL_ENTRY -> Trap.crashed(String.format("KVM_EXIT_FAIL_ENTRY, hardware reason 0x%x at %s",
                    run.failEntryReason(), ripText()));
            case KvmRun.EXIT_INTERNAL_ERROR -> Trap.crashed("KVM_EXIT_INTERNAL_ERROR, suberror "
                    + run.internalSuberror() + " at " + ripText());
            case KvmRun.EXIT_INTR -> Trap.interrupted();
            default -> Trap.crashed("unexpected " + KvmRun.exitName(reason) + " at " + ripText());
        };
    }

    private Trap portIo(KvmRun run) {
        if (run.ioPort() != Hypercalls.PORT || run.ioDirection() != KvmRun.IO_OUT || run.ioSize() != 4
                || run.ioCount() != 1) {
            return Trap.crashed(String.format(
                    "bad hypercall: port I/O %s port 0x%x size %d at %s (hypercalls are a 32-bit out to 0x%x)",
                    run.ioDirection() == KvmRun.IO_OUT ? "out" : "in", run.ioPort(), run.ioSize(), ripText(),
                    Hypercalls.PORT));
        }
        long[] regs = kvm.getRegsArray();
        long rip = regs[CpuState.RIP];
        if (!GuestCode.isHypercallBefore(memory, rip)) {
            return Trap.crashed(String.format(
                    "bad hypercall: port I/O out port 0x%x by a string instruction (outs) at rip=0x%x"
                            + " (hypercalls are a 32-bit out %%eax to 0x%x)",
                    run.ioPort(), rip, Hypercalls.PORT));
        }
        return Trap.hypercall(regs);
    }

    /**
     * Why the guest triple-faulted, naming the instruction. A `syscall` (EFER.SCE is clear
     * in a vmfork guest) is delivered by PVM to MSR_LSTAR, 0, where the guest faults with
     * RIP 0 and RCX holding the address after the `syscall`: name that instruction instead.
     */
    private String shutdownReason() {
        try {
            KvmRegs r = kvm.getRegs();
            long at = r.rcx - SYSCALL_LENGTH;
            if (r.rip == 0 && GuestCode.isSyscall(memory, at)) {
                return String.format("guest crashed: syscall at rip=0x%x (a vmfork guest makes no system calls;"
                        + " triple fault, KVM_EXIT_SHUTDOWN)", at);
            }
            return String.format("guest crashed: triple fault (KVM_EXIT_SHUTDOWN) at rip=0x%x", r.rip);
        } catch (RuntimeException e) {
            return "guest crashed: triple fault (KVM_EXIT_SHUTDOWN) at " + ripText();
        }
    }

    /** "rip=0x..." of this vCPU, for crash reasons; never throws. */
    private String ripText() {
        try {
            return String.format("rip=0x%x", kvm.getRegs().rip);
        } catch (RuntimeException e) {
            return "rip unknown (" + e.getMessage() + ")";
        }
    }

    @Override
    public long[] regs() {
        return kvm.getRegsArray();
    }

    @Override
    public void setRegs(long[] regs) {
        kvm.setRegsArray(regs);
    }

    @Override
    public synchronized void kick() {
        if (closed) {
            return; // the thread has ended and unmapped kvm_run: nothing to kick
        }
        kvm.run().setImmediateExit(true);
        long t = pthread;
        Thread th = thread;
        if (t != 0 && th != null && th.isAlive()) {
            VcpuThreads.kick(t, kickSignal);
        }
    }

    @Override
    public void clearKick() {
        kvm.run().setImmediateExit(false);
    }

    @Override
    public synchronized void close() {
        if (closed) {
            return;
        }
        closed = true;
        kvm.close();
    }
}
