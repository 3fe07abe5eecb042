package io.vmfork.vmm;

import io.vmfork.os.Errno;
import io.vmfork.os.NativeCallException;
import io.vmfork.vmm.VirtualMachine.ForkRecord;
import io.vmfork.vmm.VirtualMachine.ForkResult;
import io.vmfork.vmm.VirtualMachine.RemoteCopyRef;
import io.vmfork.vmm.VirtualMachine.Snapshot;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.fork.CopyPlacement;
import io.vmfork.vmm.fork.CopyTarget;
import io.vmfork.vmm.fork.ForkBlock;
import io.vmfork.vmm.fork.Placements;
import io.vmfork.vmm.fork.RemoteFork;
import io.vmfork.vmm.hypercall.Hypercalls;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.platform.Machine;
import io.vmfork.vmm.state.DeviceState;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.VcpuState;
import io.vmfork.vmm.x86.GuestLayout;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;
import java.util.concurrent.locks.ReentrantLock;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The fork path of one VM: the patent's {@code fork(vm_type)}, read top to bottom in
 * {@link #hypercall}: block the caller (every vCPU stops at a stable point), ask
 * placement where each copy goes ({@link CopyPlacement}, the cluster's
 * {@code get_target_pf}), capture the runtime image and the machine state, launch the
 * local copies as copy-on-write children and wait until each is launched, unblock the
 * caller with the result, then ship the copies placed on other hosts to placement as one
 * {@link RemoteFork} (the patent's {@code remote_VM_clone}), the parent running again.
 *
 * <p>What is the fork's own and not the VM's lives in the {@code fork} package: the guest's
 * request ({@link ForkBlock}), the placement contract ({@link Placements}, {@link
 * CopyPlacement}), the copies sent to other hosts ({@link RemoteFork}). This class drives
 * the VM (pause, capture through its platform's machine, launch, resume) and so stays
 * beside it.
 *
 * <p>External forks ({@link #fork}) and snapshots ({@link #snapshot}) take the same lock
 * as the hypercall, so the two kinds serialise: a capture never sees a FORK half-way.
 */
final class ForkPath {
    private static final Logger log = LoggerFactory.getLogger(ForkPath.class);

    private final VirtualMachine vm;
    private final ReentrantLock lock = new ReentrantLock();
    private volatile ForkRecord lastFork;
    /**
     * Pages the FORK being served writes its result to right after the parent resumes (its
     * block, ids and errors): the next capture copies them during the pause (else those
     * writes would wait for a write-protect copy). Under the fork lock.
     */
    private BitSet resultPages = new BitSet();

    /** The kernel's per-page work in the last capture (see ForkRecord#pageWorkNanos). */
    private long lastPageWorkNanos;

    ForkPath(VirtualMachine vm) {
        this.vm = vm;
    }

    /** Timing of the last fork hypercall, or null. */
    ForkRecord lastFork() {
        return lastFork;
    }

    /**
     * FORK: blocks the calling VM (every vCPU), asks placement where the copies go,
     * captures its runtime image, launches the local children and waits until each is
     * launched, lets the caller go with their ids (and tickets for the copies accepted for
     * other hosts), and only then ships those to placement. The caller's thread is busy
     * here, its registers stable (RIP already past the `out`).
     */
    long hypercall(Vcpu caller, long blockAddress) {
        long exitNanos = caller.lastExitNanos;
        GuestMemory m = vm.memory();
        long[] status = new long[1];
        ForkBlock block = ForkBlock.read(m, blockAddress, vm.vmm().settings().forkMaxCount(), status);
        if (block == null) {
            return status[0];
        }
        int count = block.count();
        int vmType = block.vmType();
        boolean acceptRemote = block.remote();
        CopyPlacement placement = vm.vmm().copyPlacement();
        long[] childIds = new long[count];
        long[] childErrors = new long[count];
        RemoteFork remote = null;
        long result;
        // Ordering requirements: the caller counts as stable (and as restartable, so that a
        // capture by another fork rewinds it onto its `out`) from before it takes the fork
        // lock until its result is complete: fork block and ids written, RAX set. Only then
        // may an external fork capture it as a parent that has returned; and it leaves the
        // stable place only when no pause is in force (RunControl.leaveStable), so no capture
        // ever sees it half-way. Remote copies are shipped after all that, the parent running.
        caller.inRestartableHypercall = true;
        vm.control().enterStable(caller);
        lockServingTasks(caller);
        try {
            // 1. block
            boolean paused;
            try {
                paused = vm.control().pause(vm.vmm().settings().forkPauseTimeout().toNanos());
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                paused = false;
            }
            if (!paused) {
                return vm.control().stopRequested() ? HypercallDispatcher.STOP_VCPU : Hypercalls.EAGAIN;
            }
            List<VirtualMachine> launched;
            long tCaptured;
            long tLaunched;
            try {
                long tPaused = System.nanoTime();
                // 2. place
                List<CopyTarget> targets = Placements.place(placement, vm.identity(), vmType, count, vm);
                long tPlaced = System.nanoTime();
                // 3. capture
                resultPages = block.resultPages();
                Snapshot snap = capture(caller);
                tCaptured = System.nanoTime();
                try {
                    MachineState copyState = copyState(snap.state(), caller);
                    // 4. launch the local copies, and keep the image for the remote ones
                    launched = launchChildren(copyState, snap.image(), targets, vmType, childIds, childErrors, caller,
                            blockAddress);
                    tLaunched = System.nanoTime();
                    if (acceptRemote) {
                        remote = prepareRemote(copyState, snap.image(), targets, vmType, blockAddress, childIds,
                                childErrors, true);
                    } else {
                        Placements.refuseRemote(targets, childErrors, vm);
                    }
                } finally {
                    snap.close();
                }
                if (log.isDebugEnabled()) {
                    log.debug("fork of {}: pause {} us, placement {} us, capture {} us, launch of {} {} us", vm,
                            (tPaused - exitNanos) / 1000, (tPlaced - tPaused) / 1000, (tCaptured - tPlaced) / 1000,
                            launched.size(),
                            (System.nanoTime() - tCaptured) / 1000);
                }
            } finally {
                // 5. unblock
                vm.control().resume();
                afterResume(); // the copy, unmap and release the freeze left for after the pause
            }
            block.writeParent(m, childIds, childErrors, vm.id());
            result = launched.size() + (remote == null ? 0 : remote.copies().size());
            long[] regs = caller.regs();
            regs[CpuState.RAX] = result;
            caller.setRegs(regs);
            caller.inRestartableHypercall = false;
            lastFork = new ForkRecord(exitNanos, System.nanoTime(), launched, lastPageWorkNanos, tCaptured, tLaunched);
        } catch (RuntimeException | Error e) {
            if (remote != null) {
                remote.close();
            }
            throw e;
        } finally {
            caller.inRestartableHypercall = false;
            lock.unlock();
            vm.control().leaveStable(caller);
        }
        // 6. ship the remote copies, the parent's result written
        Placements.ship(placement, remote, vm);
        prepareNextFreeze(m);
        return result;
    }

    /**
     * Takes the fork lock for a FORK's caller, which is stable meanwhile: whoever holds the
     * lock may be capturing this VM, and on the process platform that needs this vCPU's own
     * thread (ptrace), so the wait serves what it is asked for.
     */
    private void lockServingTasks(Vcpu caller) {
        try {
            while (!lock.tryLock(LOCK_POLL_MICROS, java.util.concurrent.TimeUnit.MICROSECONDS)) {
                vm.control().serveTasks(caller);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            lock.lock();
        }
    }

    private static final long LOCK_POLL_MICROS = 200;

    /**
     * Forks vm VM from outside: its vCPUs are kicked out of KVM_RUN (not waited for),
     * its state captured, and {@code count} children started from it; then it resumes,
     * and copies placed on other hosts are shipped. Children resume exactly where the
     * parent was; a vCPU that was waiting in RECV re-issues the call in the child.
     */
    ForkResult fork(int count, int vmType, CopyPlacement placement) {
        if (count < 1 || count > vm.vmm().settings().forkMaxCount()) {
            throw new IllegalArgumentException("fork count must be 1.." + vm.vmm().settings().forkMaxCount() + ", got "
                    + count);
        }
        long[] childIds = new long[count];
        long[] childErrors = new long[count];
        RemoteFork remote = null;
        ForkResult result;
        awaitStarted();
        lock.lock();
        try {
            long t0 = System.nanoTime();
            pauseOrThrow();
            long pausedFor;
            List<VirtualMachine> launched;
            try {
                List<CopyTarget> targets = Placements.place(placement, vm.identity(), vmType, count, vm);
                try (Snapshot snap = capture(null)) {
                    MachineState copyState = snap.state();
                    launched = launchChildren(copyState, snap.image(), targets, vmType, childIds, childErrors, null, 0);
                    if (copyState.linux() != null) {
                        // No capsule carries a Linux guest's state yet (docs/linux.md): its
                        // copies placed on other hosts fail (EREMOTE) rather than start without it.
                        Placements.refuseRemote(targets, childErrors, vm);
                    } else {
                        remote = prepareRemote(copyState, snap.image(), targets, vmType, 0, childIds, childErrors,
                                false);
                    }
                }
            } finally {
                vm.control().resume();
                afterResume(); // the copy, unmap and release the freeze left for after the pause
                pausedFor = System.nanoTime() - t0;
            }
            List<String> errs = new ArrayList<>();
            for (long e : childErrors) {
                if (e != 0 && e != Hypercalls.EINPROGRESS) {
                    errs.add(Hypercalls.statusName(e));
                }
            }
            List<RemoteCopyRef> refs = new ArrayList<>();
            if (remote != null) {
                for (RemoteFork.Copy c : remote.copies()) {
                    refs.add(new RemoteCopyRef(c.index(), c.hostId(), c.ticket()));
                }
            }
            result = new ForkResult(launched, errs, pausedFor, remote == null ? 0 : remote.forkId(), refs);
        } catch (RuntimeException | Error e) {
            if (remote != null) {
                remote.close();
            }
            throw e;
        } finally {
            lock.unlock();
        }
        Placements.ship(placement, remote, vm);
        return result;
    }

    /**
     * Captures vm running VM without stopping it for longer than the capture: its
     * machine state and its runtime image, which the caller may encode while the VM runs
     * on. Close the snapshot to release the image.
     */
    Snapshot snapshot() {
        awaitStarted();
        lock.lock();
        try {
            pauseOrThrow();
            try {
                return capture(null);
            } finally {
                vm.control().resume();
                afterResume(); // the copy, unmap and release the freeze left for after the pause
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * A child launched while its image was still being filled has not started yet: its
     * vCPUs cannot be paused until they have. Waits for that (the copy's end).
     */
    private void awaitStarted() {
        try {
            vm.started().join();
        } catch (java.util.concurrent.CompletionException e) {
            if (e.getCause() instanceof VmEndedException ended) {
                throw new VmEndedException(ended.exit());
            }
            throw e;
        }
    }

    private void pauseOrThrow() {
        boolean paused;
        try {
            paused = vm.control().pause(vm.vmm().settings().forkPauseTimeout().toNanos());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted while pausing " + vm, e);
        }
        if (!paused) {
            VmExit e = vm.exit();
            if (e != null) {
                throw new VmEndedException(e);
            }
            throw new IllegalStateException("the vCPUs of " + vm + " did not stop within "
                    + vm.vmm().settings().forkPauseTimeout());
        }
    }

    /**
     * Freezes RAM into a runtime image and captures every vCPU and the device model. The
     * VM is paused; {@code caller}, if any, is the vCPU whose fork hypercall is being
     * served (captured as it is, RIP past the `out`). Any other vCPU waiting in a
     * restartable hypercall is captured with RIP back on its `out`, so that a copy
     * re-issues the call instead of seeing a result meant for the parent.
     */
    private Snapshot capture(Vcpu caller) {
        GuestMemory memory = vm.memory();
        List<Vcpu> all = vm.vcpuList();
        boolean[] started = new boolean[all.size()];
        for (int i = 0; i < started.length; i++) {
            // Paused: only a vCPU serving a hypercall starts or stops a vCPU, and none is.
            started[i] = all.get(i).started;
        }
        Machine.Capture c = vm.machine().capture(started, resultPages, vm.vcpuThreads());
        resultPages = new BitSet();
        try {
            List<VcpuState> states = new ArrayList<>();
            for (int i = 0; i < all.size(); i++) {
                states.add(rewound(all.get(i), caller, c.vcpus().get(i), memory));
            }
            DeviceState devices = new DeviceState(vm.console().bytesWritten(), vm.channel().queuedRequests(),
                    vm.channel().isClosed(), vm.isReady());
            MachineState ms = new MachineState(vm.identity(), memory.size(), c.cpuidEntries(), c.clockNs(), states,
                    devices, vm.linuxStateCopy());
            lastPageWorkNanos = c.pageWorkNanos();
            return new Snapshot(ms, c.image());
        } catch (RuntimeException e) {
            c.image().release();
            throw e;
        }
    }

    /** What a capture leaves for after the pause, once the VM runs again (the platform's: {@link Machine#resumed}). */
    private void afterResume() {
        vm.machine().resumed();
    }

    /**
     * A vCPU other than the caller waiting in a restartable hypercall is captured with RIP
     * back on its `out`, so that a copy re-issues the call.
     */
    private static VcpuState rewound(Vcpu v, Vcpu caller, VcpuState st, GuestMemory memory) {
        if (v == caller || !v.inRestartableHypercall) {
            return st;
        }
        long[] regs = st.regs();
        long rip = regs[CpuState.RIP];
        if (v.restartIsSyscall) {
            // A Linux guest waiting in a system call (a read of stdin, a sleep): RIP is past its
            // `syscall` and RAX still its number (seccomp rolled it back), so the copy makes it again.
            if (!io.vmfork.vmm.platform.GuestCode.isSyscall(memory, rip - 2)) {
                throw new IllegalStateException(String.format(
                        "vCPU %d waits in a system call but rip-2 (0x%x) is not its syscall instruction", v.index(),
                        rip - 2));
            }
            regs[CpuState.RIP] = rip - 2;
            return st.withRegs(regs);
        }
        if (memory.readByte(rip - 1) != Hypercalls.OUT_EAX_DX) {
            throw new IllegalStateException(String.format(
                    "vCPU %d waits in a hypercall but rip-1 (0x%x) is not its out instruction", v.index(), rip - 1));
        }
        regs[CpuState.RIP] = rip - 1;
        return st.withRegs(regs);
    }

    /**
     * Starts the copies placed on this host as children of a capture ({@code state} as
     * {@link #copyState} made it); per copy either its id or an error code. A child of a
     * fork hypercall gets its fork block filled in as a child (role 1, its index, its id)
     * before it runs. Copies placed elsewhere are left to {@link #prepareRemote}.
     */
    private List<VirtualMachine> launchChildren(MachineState state, RuntimeImage image, List<CopyTarget> targets,
            int vmType, long[] ids, long[] errors, Vcpu caller, long block) {
        VmmSettings s = vm.vmm().settings();
        // First, on this thread: which copies are launched here, each with its VM slot and id.
        List<Integer> local = new ArrayList<>();
        List<VmIdentity> childIds = new ArrayList<>();
        int children = vm.childSet().size();
        for (int i = 0; i < targets.size(); i++) {
            CopyTarget target = targets.get(i);
            if (target instanceof CopyTarget.Refused r) {
                errors[i] = r.status();
                log.debug("fork of {} copy {}: placement refused it: {}", vm, i, r.reason());
                continue;
            }
            if (target instanceof CopyTarget.Remote) {
                continue; // prepareRemote's or refuseRemote's
            }
            if (children + local.size() >= s.forkMaxChildrenPerVm() || !vm.vmm().tryReserveSlot()) {
                errors[i] = Hypercalls.ELIMIT;
                continue;
            }
            local.add(i);
            childIds.add(new VmIdentity(vm.vmm().newVmId(), vm.id(), s.hostId(), vm.identity().forkGeneration() + 1,
                    vmType));
        }
        // Then the launches, on this thread and, for a fan-out, the VMM's launch threads too
        // (each child's launch is independent: its own KVM VM, vCPU, mapping and thread).
        vm.vmm().expectLaunches(local.size());
        VirtualMachine[] made = new VirtualMachine[local.size()];
        java.util.concurrent.atomic.AtomicInteger next = new java.util.concurrent.atomic.AtomicInteger();
        // A fan-out's children start together once the last is launched: started one by one,
        // their first runs would take the CPU from the launches still to come.
        java.util.concurrent.CompletableFuture<Void> hold = made.length >= s.startTogetherFrom()
                ? new java.util.concurrent.CompletableFuture<>() : null;
        Runnable worker = () -> {
            for (int k = next.getAndIncrement(); k < made.length; k = next.getAndIncrement()) {
                made[k] = launchChild(state, image, childIds.get(k), local.get(k), errors, caller, block, hold);
            }
        };
        try {
            vm.vmm().runParallel(worker, made.length);
        } finally {
            if (hold != null) {
                hold.complete(null);
            }
        }
        List<VirtualMachine> launched = new ArrayList<>();
        for (int k = 0; k < made.length; k++) {
            if (made[k] != null) {
                launched.add(made[k]);
                ids[local.get(k)] = made[k].id();
            }
        }
        return launched;
    }

    /** Launches copy {@code index} (its slot reserved), or sets its error and gives the slot back. */
    private VirtualMachine launchChild(MachineState state, RuntimeImage image, VmIdentity childId, int index,
            long[] errors, Vcpu caller, long block, java.util.concurrent.CompletableFuture<Void> hold) {
        try {
            VirtualMachine child = VirtualMachine.restore(vm.vmm(), state, image, childId, vm.imageName(),
                    vm.listener(), vm, false, c -> {
                        if (caller != null) {
                            ForkBlock.writeChild(c.memory(), block, index, c.id());
                        }
                    }, hold);
            vm.listener().onForked(vm, child);
            return child;
        } catch (NativeCallException e) {
            vm.vmm().releaseSlot();
            errors[index] = isOutOfMemory(e.errno()) ? Hypercalls.ENOMEM : Hypercalls.ELIMIT;
            log.warn("fork of {} copy {} failed: {}", vm, index, e.getMessage());
        } catch (LaunchException e) {
            vm.vmm().releaseSlot();
            errors[index] = Hypercalls.ELIMIT;
            log.debug("fork of {} copy {} refused: {}", vm, index, e.getMessage());
        } catch (RuntimeException e) {
            vm.vmm().releaseSlot();
            errors[index] = Hypercalls.ELIMIT;
            log.warn("fork of {} copy {} failed", vm, index, e);
        }
        return null;
    }

    /**
     * The state every copy starts from: the capture, with the calling vCPU's RAX = 0
     * (VMF_OK) for a fork hypercall.
     */
    private static MachineState copyState(MachineState state, Vcpu caller) {
        if (caller == null) {
            return state;
        }
        List<VcpuState> vs = new ArrayList<>();
        for (VcpuState v : state.vcpus()) {
            if (v.index() == caller.index()) {
                long[] regs = v.regs();
                regs[CpuState.RAX] = Hypercalls.OK;
                v = v.withRegs(regs);
            }
            vs.add(v);
        }
        return new MachineState(state.identity(), state.memorySize(), state.cpuidEntries(), state.clockNs(), vs,
                state.devices(), state.linux());
    }

    /**
     * Accepts the copies placed on other hosts: per copy a ticket (in the guest's ticket
     * table for a fork hypercall, {@code inGuestTable}) and EINPROGRESS; all of them in one
     * {@link RemoteFork} holding its own reference to the image. Null when there are none.
     */
    private RemoteFork prepareRemote(MachineState state, RuntimeImage image, List<CopyTarget> targets, int vmType,
            long block, long[] ids, long[] errors, boolean inGuestTable) {
        List<RemoteFork.Copy> copies = new ArrayList<>();
        RemoteTickets tickets = vm.remoteTickets();
        for (int i = 0; i < targets.size(); i++) {
            if (targets.get(i) instanceof CopyTarget.Remote r) {
                long ticket = inGuestTable ? tickets.open() : tickets.newTicket();
                copies.add(new RemoteFork.Copy(i, r.hostId(), r.reservationId(), ticket));
                ids[i] = ticket;
                errors[i] = Hypercalls.EINPROGRESS;
            }
        }
        if (copies.isEmpty()) {
            return null;
        }
        VmListener listener = vm.listener();
        return new RemoteFork(vm.vmm().newForkId(), vm.identity(), vmType, state, image.retain(), block, copies,
                (copy, outcome) -> {
                    tickets.resolve(copy.ticket(), outcome.status(), outcome.vmId());
                    listener.onRemoteCopy(vm, copy, outcome);
                });
    }

    /** Off the pause: the next freeze's layer file, made now. */
    private void prepareNextFreeze(GuestMemory m) {
        try {
            m.freezer().prepareLayerFile();
        } catch (RuntimeException e) {
            log.debug("{}: no layer file made ahead ({}); the next fork makes its own", vm, e.getMessage());
        }
    }

    private static boolean isOutOfMemory(int errno) {
        return errno == Errno.ENOMEM || errno == Errno.ENOSPC || errno == Errno.EMFILE || errno == Errno.ENFILE;
    }
}
