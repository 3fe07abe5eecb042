package io.vmfork.vmm.linux;

import static io.vmfork.vmm.linux.LinuxErrno.*;

/**
 * Signals, recorded (docs/linux.md, "Signals"): dispositions, the mask and the alternate
 * stack are kept in the VM's state and given back, but nothing is delivered yet: a
 * synchronous fault ends the VM as crashed naming the signal and RIP, and a signal the
 * program sends itself ends it with that signal.
 */
final class SignalCalls {
    static final int NSIG = 64;
    static final int SIGKILL = 9, SIGSTOP = 19;
    static final long SIG_BLOCK = 0, SIG_UNBLOCK = 1, SIG_SETMASK = 2;
    static final long SS_ONSTACK = 1, SS_DISABLE = 2, SS_AUTODISARM = 1L << 31;
    static final long MINSIGSTKSZ = 2048;
    static final long SIGSET_SIZE = 8;
    /** SIGKILL and SIGSTOP can be neither caught nor blocked. */
    static final long UNBLOCKABLE = (1L << (SIGKILL - 1)) | (1L << (SIGSTOP - 1));

    private SignalCalls() {
    }

    /**
     * rt_sigaction(sig, act, oact, sigsetsize): records act (handler, flags, restorer, mask)
     * and writes the previous one to oact. EINVAL: sigsetsize not 8, sig outside 1..64, a new
     * action for SIGKILL or SIGSTOP; EFAULT: act or oact.
     */
    static long rtSigaction(Call c) {
        long sig = c.a0(), act = c.a1(), oact = c.a2();
        if (c.a3() != SIGSET_SIZE || sig < 1 || sig > NSIG || (act != 0 && (sig == SIGKILL || sig == SIGSTOP))) {
            return err(EINVAL);
        }
        long[] next = null;
        if (act != 0) {
            next = c.mem().getLongs(act, 4);
            if (next == null) {
                return err(EFAULT);
            }
            next[3] &= ~UNBLOCKABLE;
        }
        LinuxState s = c.state();
        synchronized (s) {
            long[] old = s.sigactions.getOrDefault((int) sig, new long[4]);
            if (oact != 0 && !c.mem().ok(oact, 32)) {
                return err(EFAULT);
            }
            if (next != null) {
                s.sigactions.put((int) sig, next);
            }
            if (oact != 0) {
                c.mem().putLongs(oact, old);
            }
        }
        return 0;
    }

    /**
     * rt_sigprocmask(how, set, oset, sigsetsize). EINVAL: sigsetsize not 8, an unknown how;
     * EFAULT: set or oset.
     */
    static long rtSigprocmask(Call c) {
        long how = c.a0(), set = c.a1(), oset = c.a2();
        if (c.a3() != SIGSET_SIZE) {
            return err(EINVAL);
        }
        long[] n = null;
        if (set != 0) {
            n = c.mem().getLongs(set, 1);
            if (n == null) {
                return err(EFAULT);
            }
            if (how != SIG_BLOCK && how != SIG_UNBLOCK && how != SIG_SETMASK) {
                return err(EINVAL);
            }
        }
        LinuxState s = c.state();
        synchronized (s) {
            long old = s.signalMask;
            if (oset != 0 && !c.mem().putLongs(oset, old)) {
                return err(EFAULT);
            }
            if (n != null) {
                long m = how == SIG_BLOCK ? old | n[0] : how == SIG_UNBLOCK ? old & ~n[0] : n[0];
                s.signalMask = m & ~UNBLOCKABLE;
            }
        }
        return 0;
    }

    /**
     * sigaltstack(ss, oss): records ss (sp, flags, size) and writes the previous one to oss.
     * EINVAL: flags other than SS_DISABLE or SS_AUTODISARM; ENOMEM: a size below
     * MINSIGSTKSZ; EFAULT: ss or oss.
     */
    static long sigaltstack(Call c) {
        long ss = c.a0(), oss = c.a1();
        long[] n = null;
        if (ss != 0) {
            n = c.mem().getLongs(ss, 3);
            if (n == null) {
                return err(EFAULT);
            }
            long flags = n[1] & 0xffffffffL;
            if ((flags & ~(SS_DISABLE | SS_AUTODISARM)) != 0) {
                return err(EINVAL);
            }
            if ((flags & SS_DISABLE) == 0 && n[2] < MINSIGSTKSZ) {
                return err(ENOMEM);
            }
        }
        LinuxState s = c.state();
        synchronized (s) {
            if (oss != 0 && !c.mem().putLongs(oss, s.altStackSp, s.altStackFlags, s.altStackSize)) {
                return err(EFAULT);
            }
            if (n != null) {
                boolean off = ((n[1] & 0xffffffffL) & SS_DISABLE) != 0;
                s.altStackSp = off ? 0 : n[0];
                s.altStackFlags = off ? SS_DISABLE : n[1] & 0xffffffffL;
                s.altStackSize = off ? 0 : n[2];
            }
        }
        return 0;
    }
}
