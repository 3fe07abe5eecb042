package io.vmfork.vmm.platform.process;

import io.vmfork.os.LibC;
import io.vmfork.os.Processes;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Consumer;

/**
 * Learns that a guest process died when none of its tracers is waiting for it: SIGKILLed
 * from outside while every vCPU of its VM waits in the VMM (RECV: each guest thread in a
 * ptrace stop, each vCPU thread on the VM's run control). A tracer that is in its wait sees
 * the death itself (ProcessExecContext); this covers the rest, so that the VM ends as
 * crashed with the reason either way, and its process is reaped by the VM's release.
 *
 * <p>One thread per platform ({@code vmfork-guest-watch}), blocked in epoll_wait on one
 * pidfd per watched process: a thread's pidfd (PIDFD_THREAD), readable once that thread
 * has exited (a zombie). Every thread of a process is watched, and the first whose pidfd
 * turns readable stands for the process (a guest thread cannot end alone: it makes no
 * system call); the crash reason is its exit status, or the main thread's when that thread
 * is gone already. Watching one thread did not do: with two vCPUs killed while idle, now
 * and then under load (Linux 6.18), the watched thread's pidfd turned readable when the
 * thread was reaped already and the main thread stayed a zombie, and the VM never ended.
 * Cost: one fd per vCPU of a running VM and nothing per trap; a death is seen within the
 * wakeup of one thread.
 */
final class GuestDeathWatch implements AutoCloseable {
    private static final org.slf4j.Logger log = org.slf4j.LoggerFactory.getLogger(GuestDeathWatch.class);

    /** One watched thread of a process; the entries of one process share {@code done}. */
    private record Entry(GuestProcess process, int tid, int pidfd, Consumer<String> onDeath, long[] keys,
            java.util.concurrent.atomic.AtomicBoolean done) {
    }

    private final int epoll;
    private final int wake;
    private final Map<Long, Entry> entries = new ConcurrentHashMap<>();
    private final AtomicLong nextKey = new AtomicLong(1);
    private final Thread thread;
    private volatile boolean closed;

    GuestDeathWatch() {
        int[] fds = Processes.watchCreate();
        epoll = fds[0];
        wake = fds[1];
        thread = new Thread(this::loop, "vmfork-guest-watch");
        thread.setDaemon(true);
        thread.start();
    }

    /**
     * Calls {@code onDeath} with the crash reason, on the watch's thread, if {@code process}
     * ends without having been killed by the VMM ({@link GuestProcess#kill}). Each process
     * is watched until it ends (a VM's release kills it), then forgotten.
     */
    synchronized void watch(GuestProcess process, int[] tids, Consumer<String> onDeath) {
        if (closed) {
            throw new ProcessPlatformException("the process platform is closed");
        }
        long[] keys = new long[tids.length];
        java.util.concurrent.atomic.AtomicBoolean done = new java.util.concurrent.atomic.AtomicBoolean();
        try {
            for (int i = 0; i < tids.length; i++) {
                int fd = Processes.pidfd(process.pid(), tids[i]);
                keys[i] = nextKey.getAndIncrement();
                entries.put(keys[i], new Entry(process, tids[i], fd, onDeath, keys, done));
                Processes.watchAdd(epoll, fd, keys[i]);
            }
        } catch (RuntimeException e) {
            forget(keys);
            throw e;
        }
    }

    /**
     * Stops watching {@code process} now (its VM released it): its pidfds are closed before
     * this returns, not when the watch's thread next wakes.
     */
    void unwatch(GuestProcess process) {
        for (Entry e : entries.values()) {
            if (e.process() == process) {
                e.done().set(true);
                forget(e.keys());
            }
        }
    }

    /** Stops watching the threads of one process: their entries go, their pidfds close. */
    private void forget(long[] keys) {
        for (long k : keys) {
            Entry e = k == 0 ? null : entries.remove(k);
            if (e != null) {
                LibC.closeQuietly(e.pidfd()); // closing it takes it out of the epoll set too
            }
        }
    }

    private void loop() {
        long[] keys = new long[64];
        while (!closed) {
            int n;
            try {
                n = Processes.watchWait(epoll, wake, keys, -1);
            } catch (RuntimeException e) {
                log.error("the guest death watch stops: {}", e.getMessage());
                return;
            }
            for (int i = 0; i < n; i++) {
                Entry e = keys[i] == 0 ? null : entries.get(keys[i]);
                if (e == null || e.done().get()) {
                    continue;
                }
                int pid = e.process().pid();
                if (e.process().isKilled()) {
                    e.done().set(true);
                    forget(e.keys());
                    continue;
                }
                // The thread's exit status, or the main thread's when this one is reaped
                // already (a sibling's end can take it with it); null when both are.
                String reason = reason(pid, e.tid());
                if (reason == null && e.tid() != pid) {
                    reason = reason(pid, pid);
                }
                if (reason == null) {
                    forget(new long[] {keys[i]}); // the others may still tell; if none does, its tracers did
                    continue;
                }
                e.done().set(true);
                try {
                    e.onDeath().accept(reason);
                } catch (RuntimeException ex) {
                    log.warn("guest process {} died; ending its VM failed", pid, ex);
                } finally {
                    forget(e.keys());
                }
            }
        }
    }

    /**
     * The crash reason for the ended process {@code pid}, from the exit code of its thread
     * {@code tid} (field 52 of its stat, in waitpid's form; the thread is a zombie until the
     * VM's release reaps it), or null if it is already reaped: then its tracer saw the end
     * and said so.
     */
    static String reason(int pid, int tid) {
        String stat;
        try {
            stat = Files.readString(Path.of("/proc/" + pid + "/task/" + tid + "/stat"));
        } catch (IOException e) {
            return null;
        }
        String[] f = stat.substring(stat.lastIndexOf(')') + 2).trim().split(" ");
        int code = Integer.parseInt(f[f.length - 1]);
        return (code & 0x7f) != 0 ? killedBy(pid, code & 0x7f) : exitedWith(pid, (code >> 8) & 0xff);
    }

    /** A guest process's death by a signal, in the words of every path that sees one. */
    static String killedBy(int pid, long signal) {
        return "guest crashed: its host process " + pid + " was killed by signal " + signal
                + (signal == 9 ? " (SIGKILL)" : "");
    }

    static String exitedWith(int pid, long status) {
        return "guest crashed: its host process " + pid + " exited with status " + status;
    }

    /** Stops the thread and closes every pidfd still watched. Idempotent. */
    @Override
    public synchronized void close() {
        if (closed) {
            return; // closing the fds again would close numbers that are others' by then
        }
        closed = true;
        try {
            Processes.watchWake(wake);
            thread.join(5_000);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (RuntimeException e) {
            log.warn("waking the guest death watch: {}", e.getMessage());
        }
        for (Entry e : entries.values()) {
            LibC.closeQuietly(e.pidfd());
        }
        entries.clear();
        LibC.closeQuietly(wake);
        LibC.closeQuietly(epoll);
    }
}
