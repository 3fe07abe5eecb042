package io.vmfork.vmm;

import io.vmfork.kvm.KvmRun;
import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.sys.Errno;
import io.vmfork.kvm.sys.HostHelper;
import io.vmfork.kvm.x86.KvmRegs;
import io.vmfork.vmm.hypercall.Hypercalls;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One vCPU and the thread that runs it: the KVM_RUN loop and its exits. The thread is
 * the only one that enters the guest; others touch the vCPU only while it is parked.
 */
final class Vcpu implements Runnable {
    private static final Logger log = LoggerFactory.getLogger(Vcpu.class);

    final KvmVcpu kvm;
    private final VirtualMachine vm;
    private final RunControl control;
    private final HypercallDispatcher dispatcher;
    private final int kickSignal;
    private final Thread thread;
    /** pthread_t of the vCPU thread, 0 until it has started. */
    private volatile long pthread;
    /** Guarded by the RunControl monitor. */
    RunControl.Place place = RunControl.Place.RUNNING;
    /**
     * Whether the vCPU runs guest code (docs/hypercalls.md, "Several vCPUs"): vCPU 0 from
     * launch; a secondary once VCPU_START started it, until VCPU_STOP. A vCPU that is not
     * started waits in {@link RunControl#mayEnterGuest} and counts as stopped for a pause.
     * Written under the RunControl monitor; set before the thread starts at launch.
     */
    volatile boolean started;
    /** Set while the thread waits in a restartable blocking hypercall: a snapshot rewinds RIP. */
    volatile boolean inRestartableHypercall;
    /** System.nanoTime() when KVM_RUN last returned. */
    long lastExitNanos;

    /** The pooled thread that will run this vCPU, or null when it has a thread of its own. */
    private final ParkedThread parked;
    private final String name;

    /** {@code parked}: a thread started ahead (from the VM pool) to run this vCPU, or null for a new one. */
    Vcpu(VirtualMachine vm, KvmVcpu kvm, RunControl control, HypercallDispatcher dispatcher, int kickSignal,
            ParkedThread parked) {
        this.vm = vm;
        this.kvm = kvm;
        this.control = control;
        this.dispatcher = dispatcher;
        this.kickSignal = kickSignal;
        this.parked = parked;
        this.name = "vcpu-" + Long.toHexString(vm.id()) + "-" + kvm.index();
        if (parked != null) {
            this.thread = parked.thread();
        } else {
            this.thread = new Thread(this, name);
            this.thread.setDaemon(true);
        }
    }

    int index() {
        return kvm.index();
    }

    void start() {
        if (parked != null) {
            if (!parked.run(this, name)) {
                throw new IllegalStateException("the pooled thread of vCPU " + index() + " was cancelled");
            }
        } else {
            thread.start();
        }
    }

    /** Ends a pooled thread that this vCPU will not run on (its launch failed before start). */
    void abandonThread() {
        if (parked != null) {
            parked.cancel();
        }
    }

    Thread thread() {
        return thread;
    }

    /**
     * Makes the vCPU leave KVM_RUN soon: immediate_exit covers the window before the
     * thread enters KVM_RUN, the signal the time inside it (KVM_RUN returns EINTR).
     */
    synchronized void kick() {
        if (kvmClosed) {
            return; // the thread has ended and unmapped kvm_run: nothing to kick
        }
        kvm.run().setImmediateExit(true);
        long t = pthread;
        if (t != 0 && thread.isAlive()) {
            HostHelper.kick(t, kickSignal);
        }
    }

    private boolean kvmClosed;

    /** Closes the vCPU fd and unmaps kvm_run; after this, kicks do nothing. */
    synchronized void closeKvm() {
        kvmClosed = true;
        kvm.close();
    }

    /** Called by the vCPU thread itself, under the control monitor, before it re-enters. */
    void clearKick() {
        kvm.run().setImmediateExit(false);
    }

    @Override
    public void run() {
        pthread = HostHelper.selfThread();
        try {
            loop();
        } catch (InterruptedException e) {
            vm.end(VmExit.stopped("vCPU " + index() + " thread interrupted"));
        } catch (Throwable t) {
            log.warn("vCPU {} of VM {} failed", index(), Long.toHexString(vm.id()), t);
            vm.end(VmExit.crashed("VMM error on vCPU " + index() + ": " + t));
        } finally {
            control.ended(this);
            vm.vcpuFinished(this);
        }
    }

    private void loop() throws InterruptedException {
        KvmRun run = kvm.run();
        while (control.mayEnterGuest(this)) {
            int rc = kvm.runOnce();
            lastExitNanos = System.nanoTime();
            if (rc == -Errno.EINTR) {
                continue;
            }
            if (rc < 0) {
                vm.end(VmExit.crashed("KVM_RUN failed: " + Errno.name(-rc) + " at " + ripText()));
                return;
            }
            int reason = run.exitReason();
            vm.noteExit(lastExitNanos);
            if (log.isTraceEnabled()) {
                log.trace("vCPU {} exit {} {}", index(), KvmRun.exitName(reason), ripText());
            }
            switch (reason) {
                case KvmRun.EXIT_IO -> {
                    if (run.ioPort() != Hypercalls.PORT || run.ioDirection() != KvmRun.IO_OUT || run.ioSize() != 4
                            || run.ioCount() != 1) {
                        vm.end(VmExit.crashed(String.format(
                                "bad hypercall: port I/O %s port 0x%x size %d at %s (hypercalls are a 32-bit out to 0x%x)",
                                run.ioDirection() == KvmRun.IO_OUT ? "out" : "in", run.ioPort(), run.ioSize(),
                                ripText(), Hypercalls.PORT)));
                        return;
                    }
                    long[] regs = kvm.getRegsArray();
                    long rip = regs[io.vmfork.vmm.state.VcpuState.RIP];
                    if (!vm.isHypercallInstruction(rip)) {
                        vm.end(VmExit.crashed(String.format(
                                "bad hypercall: port I/O out port 0x%x by a string instruction (outs) at rip=0x%x"
                                        + " (hypercalls are a 32-bit out %%eax to 0x%x)",
                                run.ioPort(), rip, Hypercalls.PORT)));
                        return;
                    }
                    if (!dispatcher.dispatch(this, regs)) {
                        return;
                    }
                }
                case KvmRun.EXIT_SHUTDOWN -> {
                    vm.end(VmExit.crashed(shutdownReason()));
                    return;
                }
                case KvmRun.EXIT_HLT -> {
                    vm.end(VmExit.crashed("guest halted (HLT) at " + ripText()));
                    return;
                }
                case KvmRun.EXIT_MMIO -> {
                    vm.end(VmExit.crashed(String.format(
                            "guest crashed: access to guest-physical 0x%x, outside RAM, at %s", run.mmioPhysAddr(),
                            ripText())));
                    return;
                }
                case KvmRun.EXIT_FAIL_ENTRY -> {
                    vm.end(VmExit.crashed(String.format("KVM_EXIT_FAIL_ENTRY, hardware reason 0x%x at %s",
                            run.failEntryReason(), ripText())));
                    return;
                }
                case KvmRun.EXIT_INTERNAL_ERROR -> {
                    vm.end(VmExit.crashed("KVM_EXIT_INTERNAL_ERROR, suberror " + run.internalSuberror() + " at "
                            + ripText()));
                    return;
                }
                case KvmRun.EXIT_INTR -> {
                    // Kicked: loop back to the pause/stop check.
                }
                default -> {
                    vm.end(VmExit.crashed("unexpected " + KvmRun.exitName(reason) + " at " + ripText()));
                    return;
                }
            }
        }
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
            if (r.rip == 0 && vm.isSyscallInstruction(at)) {
                return String.format("guest crashed: syscall at rip=0x%x (a vmfork guest makes no system calls;"
                        + " triple fault, KVM_EXIT_SHUTDOWN)", at);
            }
            return String.format("guest crashed: triple fault (KVM_EXIT_SHUTDOWN) at rip=0x%x", r.rip);
        } catch (RuntimeException e) {
            return "guest crashed: triple fault (KVM_EXIT_SHUTDOWN) at " + ripText();
        }
    }

    private static final int SYSCALL_LENGTH = 2;

    /** "rip=0x..." of this vCPU, for crash reasons; never throws. */
    String ripText() {
        try {
            return String.format("rip=0x%x", kvm.getRegs().rip);
        } catch (RuntimeException e) {
            return "rip unknown (" + e.getMessage() + ")";
        }
    }
}
