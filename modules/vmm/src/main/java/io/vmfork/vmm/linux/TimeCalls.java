package io.vmfork.vmm.linux;

import static io.vmfork.vmm.linux.LinuxErrno.*;

import java.time.Instant;

/**
 * Time (docs/linux.md, "Time"): CLOCK_REALTIME is the host's wall clock, CLOCK_MONOTONIC
 * and CLOCK_BOOTTIME the VMM's System.nanoTime() (a clone on another host reads that
 * host's: monotonic only within one host, as the CLOCK hypercall). The CPU-time clocks read
 * the monotonic clock too (the VMM does not account the program's CPU). Sleeps block the
 * vCPU in the VMM, restartably: a fork meanwhile gives a copy that sleeps again.
 */
final class TimeCalls {
    static final int CLOCK_REALTIME = 0, CLOCK_MONOTONIC = 1, CLOCK_PROCESS_CPUTIME_ID = 2,
            CLOCK_THREAD_CPUTIME_ID = 3, CLOCK_MONOTONIC_RAW = 4, CLOCK_REALTIME_COARSE = 5,
            CLOCK_MONOTONIC_COARSE = 6, CLOCK_BOOTTIME = 7, CLOCK_REALTIME_ALARM = 8, CLOCK_BOOTTIME_ALARM = 9,
            CLOCK_TAI = 11;
    static final long TIMER_ABSTIME = 1;
    static final long NANOS = 1_000_000_000L;

    private TimeCalls() {
    }

    /** Nanoseconds on {@code clock}, or -1 for a clock that does not exist. */
    private static long now(long clock) {
        return switch ((int) clock) {
            case CLOCK_REALTIME, CLOCK_REALTIME_COARSE, CLOCK_REALTIME_ALARM, CLOCK_TAI -> {
                Instant i = Instant.now();
                yield i.getEpochSecond() * NANOS + i.getNano();
            }
            case CLOCK_MONOTONIC, CLOCK_MONOTONIC_RAW, CLOCK_MONOTONIC_COARSE, CLOCK_BOOTTIME, CLOCK_BOOTTIME_ALARM,
                    CLOCK_PROCESS_CPUTIME_ID, CLOCK_THREAD_CPUTIME_ID -> System.nanoTime();
            default -> -1;
        };
    }

    private static boolean known(long clock) {
        return clock >= 0 && clock <= CLOCK_TAI && clock != 10;
    }

    /** clock_gettime(clock, tp). EINVAL: an unknown clock; EFAULT: tp. */
    static long clockGettime(Call c) {
        if (!known(c.a0())) {
            return err(EINVAL);
        }
        long t = now(c.a0());
        return c.mem().putLongs(c.a1(), t / NANOS, t % NANOS) ? 0 : err(EFAULT);
    }

    /** clock_getres(clock, res): 1 ns (res may be null). EINVAL: an unknown clock; EFAULT: res. */
    static long clockGetres(Call c) {
        if (!known(c.a0())) {
            return err(EINVAL);
        }
        if (c.a1() == 0) {
            return 0;
        }
        return c.mem().putLongs(c.a1(), 0, 1) ? 0 : err(EFAULT);
    }

    /** gettimeofday(tv, tz): either may be null; tz is written as zeros (UTC). EFAULT: either pointer. */
    static long gettimeofday(Call c) {
        long t = now(CLOCK_REALTIME);
        if (c.a0() != 0 && !c.mem().putLongs(c.a0(), t / NANOS, (t % NANOS) / 1000)) {
            return err(EFAULT);
        }
        if (c.a1() != 0 && !c.mem().putLongs(c.a1(), 0)) {
            return err(EFAULT);
        }
        return 0;
    }

    /** time(tloc): seconds since the epoch, also stored at tloc unless it is null. EFAULT: tloc. */
    static long time(Call c) {
        long s = now(CLOCK_REALTIME) / NANOS;
        if (c.a0() != 0 && !c.mem().putLongs(c.a0(), s)) {
            return err(EFAULT);
        }
        return s;
    }

    /** nanosleep(req, rem): sleeps; rem is never written (nothing interrupts). EFAULT: req; EINVAL: a bad timespec. */
    static long nanosleep(Call c) {
        long[] ts = c.mem().getLongs(c.a0(), 2);
        if (ts == null) {
            return err(EFAULT);
        }
        if (ts[0] < 0 || ts[1] < 0 || ts[1] >= NANOS) {
            return err(EINVAL);
        }
        return sleep(c, relative(ts));
    }

    /**
     * clock_nanosleep(clock, flags, req, rem): relative, or absolute with TIMER_ABSTIME on
     * that clock. EINVAL: an unknown clock or the thread's CPU clock, a bad timespec;
     * EFAULT: req.
     */
    static long clockNanosleep(Call c) {
        long clock = c.a0();
        if (!known(clock) || clock == CLOCK_THREAD_CPUTIME_ID) {
            return err(EINVAL);
        }
        long[] ts = c.mem().getLongs(c.a2(), 2);
        if (ts == null) {
            return err(EFAULT);
        }
        if (ts[0] < 0 || ts[1] < 0 || ts[1] >= NANOS) {
            return err(EINVAL);
        }
        long wait = relative(ts);
        if ((c.a1() & TIMER_ABSTIME) != 0) {
            wait = ts[0] > Long.MAX_VALUE / NANOS ? Long.MAX_VALUE : ts[0] * NANOS + ts[1] - now(clock);
        }
        return sleep(c, Math.max(0, wait));
    }

    private static long relative(long[] ts) {
        return ts[0] > Long.MAX_VALUE / NANOS - 1 ? Long.MAX_VALUE : ts[0] * NANOS + ts[1];
    }

    private static long sleep(Call c, long nanos) {
        long start = System.nanoTime();
        long deadline = nanos > Long.MAX_VALUE - start ? Long.MAX_VALUE : start + nanos;
        return c.host().sleepUntil(deadline) ? 0 : Syscalls.STOP;
    }
}
