package io.vmfork.vmm;

import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Who may run: the one monitor of a VM that its vCPU threads, its message channel and
 * its controllers (pause, resume, stop) synchronise on.
 *
 * <p>A vCPU is in one of four places. RUNNING: in or around KVM_RUN, handling an exit.
 * PARKED: stopped at the top of its run loop because a pause was asked for, or because
 * it is a secondary vCPU the guest has not started (VCPU_START) or has stopped. BLOCKED:
 * waiting inside a blocking hypercall (RECV) that is restartable, so its state is
 * stable too. ENDED: its thread has left the loop. A pause completes when no vCPU is
 * RUNNING; vCPUs inside KVM_RUN are kicked out by signal (see {@link Vcpu#kick()}).
 */
final class RunControl {
    enum Place { RUNNING, PARKED, BLOCKED, ENDED }

    private final List<Vcpu> vcpus = new ArrayList<>();
    private boolean pauseRequested;
    private boolean stopRequested;
    private int running;

    synchronized void register(Vcpu v) {
        vcpus.add(v);
        running++;
    }

    synchronized boolean stopRequested() {
        return stopRequested;
    }

    synchronized boolean pauseRequested() {
        return pauseRequested;
    }

    /**
     * Called by a vCPU thread before each KVM_RUN: parks while a pause is asked for or the
     * vCPU is not started. Returns false when the vCPU must end.
     */
    boolean mayEnterGuest(Vcpu v) throws InterruptedException {
        for (;;) {
            runTasks(v);
            synchronized (this) {
                if (!((pauseRequested || !v.started) && !stopRequested)) {
                    moveTo(v, Place.RUNNING);
                    v.clearKick();
                    return !stopRequested;
                }
                moveTo(v, Place.PARKED);
                if (v.tasks.isEmpty()) {
                    wait();
                }
            }
        }
    }

    /**
     * Called by a vCPU thread inside a blocking hypercall: waits until {@code ready} holds
     * and no pause is asked for, counting as stable meanwhile. Returns false on stop.
     */
    boolean awaitInHypercall(Vcpu v, java.util.function.BooleanSupplier ready)
            throws InterruptedException {
        for (;;) {
            runTasks(v);
            synchronized (this) {
                if (stopRequested || (!pauseRequested && ready.getAsBoolean())) {
                    moveTo(v, Place.RUNNING);
                    return !stopRequested;
                }
                moveTo(v, Place.BLOCKED);
                if (v.tasks.isEmpty()) {
                    wait();
                }
            }
        }
    }

    /**
     * As {@link #awaitInHypercall(Vcpu, java.util.function.BooleanSupplier)}, but gives up
     * waiting for {@code ready} at {@code deadlineNanos} (System.nanoTime()); it still never
     * returns while a pause is in force. Returns false on stop; the caller checks
     * {@code ready} again.
     */
    boolean awaitInHypercall(Vcpu v, java.util.function.BooleanSupplier ready, long deadlineNanos)
            throws InterruptedException {
        for (;;) {
            runTasks(v);
            synchronized (this) {
                long left = deadlineNanos - System.nanoTime();
                if (stopRequested || (!pauseRequested && (left <= 0 || ready.getAsBoolean()))) {
                    moveTo(v, Place.RUNNING);
                    return !stopRequested;
                }
                moveTo(v, Place.BLOCKED);
                if (!v.tasks.isEmpty()) {
                    continue;
                }
                if (pauseRequested || left <= 0) {
                    wait();
                } else {
                    TimeUnit.NANOSECONDS.timedWait(this, left);
                }
            }
        }
    }

    /** The calling vCPU's thread is busy in the VMM (a fork) with its state stable: it does not hold up a pause. */
    synchronized void enterStable(Vcpu v) {
        moveTo(v, Place.BLOCKED);
    }

    /**
     * The calling vCPU's thread is done with its VMM work: it waits while a pause is in
     * force, so that whoever paused the VM captures it either before the work or after
     * it, never in between.
     */
    void leaveStable(Vcpu v) {
        boolean interrupted = false;
        for (;;) {
            runTasks(v);
            synchronized (this) {
                if (!pauseRequested || stopRequested) {
                    moveTo(v, Place.RUNNING);
                    break;
                }
                if (v.tasks.isEmpty()) {
                    try {
                        wait();
                    } catch (InterruptedException e) {
                        interrupted = true;
                    }
                }
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * VCPU_START: starts {@code target} if it is not running, with {@code setRegs} run
     * first. Under this monitor, so a pause sees the vCPU either not started or started
     * with its new registers; its thread waits in {@link #mayEnterGuest} meanwhile and is
     * not in KVM_RUN, so another thread may set its registers. Returns false if it runs.
     */
    synchronized boolean startVcpu(Vcpu target, Runnable setRegs) {
        if (stopRequested) {
            return true; // the VM is ending: nothing runs again, and the caller does not see the result
        }
        if (target.started) {
            return false;
        }
        setRegs.run();
        target.started = true;
        notifyAll();
        return true;
    }

    /**
     * VCPU_STOP, by the vCPU's own thread once its registers are final (a VCPU_START of it
     * may set them as soon as this returns): it parks at the top of its loop until started.
     */
    synchronized void stopVcpu(Vcpu v) {
        v.started = false;
    }

    synchronized void ended(Vcpu v) {
        moveTo(v, Place.ENDED);
        // Whatever was left for it runs now, on this thread (and fails, if it needed the vCPU
        // thread), so that no caller waits for ever.
        for (Runnable r = v.tasks.poll(); r != null; r = v.tasks.poll()) {
            r.run();
        }
    }

    /**
     * Runs {@code task} on {@code v}'s own thread and returns its result: at once if this is
     * that thread, else as soon as the thread waits here (parked, blocked in a hypercall,
     * stable in a fork), which it does while the VM is paused. For what only a vCPU's own
     * thread may do (ptrace on the process platform). The caller must not hold this monitor.
     */
    <T> T runOn(Vcpu v, java.util.concurrent.Callable<T> task) {
        if (Thread.currentThread() == v.thread()) {
            try {
                return task.call();
            } catch (RuntimeException e) {
                throw e;
            } catch (Exception e) {
                throw new IllegalStateException(e);
            }
        }
        java.util.concurrent.Future<T> f = post(v, task);
        try {
            return f.get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new IllegalStateException("interrupted waiting for vCPU " + v.index(), e);
        } catch (java.util.concurrent.ExecutionException e) {
            if (e.getCause() instanceof RuntimeException r) {
                throw r;
            }
            throw new IllegalStateException(e.getCause());
        }
    }

    /**
     * Leaves {@code task} for {@code v}'s own thread, which runs it as soon as it waits here,
     * and returns at once; the vCPU must not be the calling thread's.
     */
    <T> java.util.concurrent.Future<T> post(Vcpu v, java.util.concurrent.Callable<T> task) {
        java.util.concurrent.FutureTask<T> f = new java.util.concurrent.FutureTask<>(task);
        synchronized (this) {
            if (v.place == Place.ENDED) {
                throw new IllegalStateException("vCPU " + v.index() + " has ended");
            }
            v.tasks.add(f);
            notifyAll();
        }
        return f;
    }

    /** On v's own thread, waiting for something other than this monitor: runs what was left for it. */
    void serveTasks(Vcpu v) {
        runTasks(v);
    }

    /**
     * On v's own thread, not holding this monitor (a task may wait for the kernel, and
     * what it waits for may need another vCPU's thread to take this monitor): what
     * {@link #runOn} and {@link #post} left for it. Its place stays what it was, stable.
     */
    private void runTasks(Vcpu v) {
        for (Runnable r = v.tasks.poll(); r != null; r = v.tasks.poll()) {
            r.run();
        }
    }

    /** Something a blocked vCPU may be waiting for has changed. */
    synchronized void signalChange() {
        notifyAll();
    }

    /**
     * Asks every vCPU to stop at a stable point and waits until all have; returns false if
     * the VM ended meanwhile or the wait timed out.
     */
    boolean pause(long timeoutNanos) throws InterruptedException {
        List<Vcpu> toKick;
        synchronized (this) {
            if (stopRequested) {
                return false;
            }
            pauseRequested = true;
            // Only a vCPU that may be in KVM_RUN needs a kick; the others (parked, blocked in
            // or stable around a hypercall, such as a FORK's caller) check pauseRequested
            // before they move on. Kicking the caller itself would cost it a signal now and an
            // empty KVM_RUN after.
            toKick = vcpus.stream().filter(v -> v.place == Place.RUNNING).toList();
        }
        for (Vcpu v : toKick) {
            v.kick();
        }
        long deadline = System.nanoTime() + timeoutNanos;
        synchronized (this) {
            while (running > 0 && !stopRequested) {
                long left = deadline - System.nanoTime();
                if (left <= 0) {
                    pauseRequested = false;
                    notifyAll();
                    return false;
                }
                TimeUnit.NANOSECONDS.timedWait(this, left);
            }
            if (stopRequested) {
                pauseRequested = false;
                return false;
            }
            return true;
        }
    }

    synchronized void resume() {
        pauseRequested = false;
        notifyAll();
    }

    /** Asks every vCPU to end; returns the ones to kick. */
    List<Vcpu> requestStop() {
        synchronized (this) {
            stopRequested = true;
            notifyAll();
            return List.copyOf(vcpus);
        }
    }

    synchronized boolean allEnded() {
        return vcpus.stream().allMatch(v -> v.place == Place.ENDED);
    }

    private void moveTo(Vcpu v, Place to) {
        Place from = v.place;
        if (from == to) {
            return;
        }
        if (from == Place.RUNNING) {
            running--;
        }
        if (to == Place.RUNNING) {
            running++;
        }
        v.place = to;
        notifyAll();
    }
}
