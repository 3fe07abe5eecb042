package io.vmfork.vmm;

import io.vmfork.vmm.platform.ExecContext;
import io.vmfork.vmm.platform.ParkedThread;
import io.vmfork.vmm.platform.Trap;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One vCPU and the thread that runs it: enter the guest, serve what it trapped on, on
 * whichever platform its {@link ExecContext} is. The thread is the only one that enters
 * the guest; others touch the vCPU only while it is parked.
 */
final class Vcpu implements Runnable {
    private static final Logger log = LoggerFactory.getLogger(Vcpu.class);

    private final ExecContext context;
    private final VirtualMachine vm;
    private final RunControl control;
    private final HypercallDispatcher dispatcher;
    private final Thread thread;
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
    /** With {@link #inRestartableHypercall}: the wait is a Linux system call's, RIP is past a `syscall` (2 bytes). */
    volatile boolean restartIsSyscall;
    /** With {@link #inRestartableHypercall}: a Linux guest's sleep, not a wait for a request. */
    volatile boolean sleeping;
    /** Work only this vCPU's thread may do, left by {@link RunControl#runOn}. */
    final java.util.concurrent.ConcurrentLinkedQueue<Runnable> tasks = new java.util.concurrent.ConcurrentLinkedQueue<>();
    /** System.nanoTime() when KVM_RUN last returned. */
    long lastExitNanos;

    /** The pooled thread that will run this vCPU, or null when it has a thread of its own. */
    private final ParkedThread parked;
    private final String name;

    /** {@code parked}: a thread started ahead (from the VM pool) to run this vCPU, or null for a new one. */
    Vcpu(VirtualMachine vm, ExecContext context, RunControl control, HypercallDispatcher dispatcher,
            ParkedThread parked) {
        this.vm = vm;
        this.context = context;
        this.control = control;
        this.dispatcher = dispatcher;
        this.parked = parked;
        this.name = "vcpu-" + Long.toHexString(vm.id()) + "-" + context.index();
        if (parked != null) {
            this.thread = parked.thread();
        } else {
            this.thread = new Thread(this, name);
            this.thread.setDaemon(true);
        }
    }

    int index() {
        return context.index();
    }

    /** The platform context of this vCPU. */
    ExecContext context() {
        return context;
    }

    /** The registers in struct kvm_regs order; the vCPU must not be in the guest. */
    long[] regs() {
        return context.regs();
    }

    /** Sets the registers it resumes with; from its own thread, or while it is held out of the guest. */
    void setRegs(long[] regs) {
        context.setRegs(regs);
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

    /** Makes the vCPU leave the guest soon (see {@link ExecContext#kick}). */
    void kick() {
        context.kick();
    }

    /** Releases the vCPU's platform context; after this, kicks do nothing. */
    void closeContext() {
        context.close();
    }

    /** Called by the vCPU thread itself, under the control monitor, before it re-enters. */
    void clearKick() {
        context.clearKick();
    }

    @Override
    public void run() {
        try {
            context.begin();
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
        while (control.mayEnterGuest(this)) {
            Trap trap = context.run();
            lastExitNanos = System.nanoTime();
            switch (trap.kind()) {
                case INTERRUPTED -> {
                    // Kicked: loop back to the pause/stop check.
                }
                case HYPERCALL -> {
                    vm.noteExit(lastExitNanos);
                    if (!dispatcher.dispatch(this, trap.regs())) {
                        return;
                    }
                }
                case SYSCALL -> {
                    vm.noteExit(lastExitNanos);
                    LinuxGuest linux = vm.linux();
                    if (linux == null) {
                        vm.end(VmExit.crashed(trap.reason()));
                        return;
                    }
                    if (!linux.dispatch(this, trap.regs())) {
                        return;
                    }
                }
                case CRASHED -> {
                    vm.noteExit(lastExitNanos);
                    vm.end(VmExit.crashed(trap.reason()));
                    return;
                }
            }
        }
    }
}
