package io.vmfork.vmm.platform.process;


import io.vmfork.procvm.GuestProcesses;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.hypercall.Hypercalls;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.platform.ExecContext;
import io.vmfork.vmm.platform.GuestCode;
import io.vmfork.vmm.platform.Trap;
import static io.vmfork.procvm.GuestProcesses.*;

/**
 * A vCPU on the process platform: one thread of the guest process, traced by this vCPU's
 * own VMM thread. The guest runs natively at CPL3 until it traps: `out %eax,(%dx)` raises
 * #GP (IOPL is 0; no iopl/ioperm is ever granted, since Linux emulates iopl(3) with the
 * I/O bitmap and the `out` would reach real host ports), which the kernel turns into a
 * SIGSEGV that the tracer sees before any frame is pushed on the guest's stack: RSP at 0
 * or in a read-only page and the red zone below it are as safe as on KVM. The signal is
 * always suppressed. Any system call is trapped by the process's seccomp filter (SIGSYS).
 *
 * <p>Cost, measured on the development machines (a PVM guest, 2 cores): a hypercall round
 * trip through ptrace is ~24 us p50 in C (bench/proc_floor.c), against ~11 us for an
 * in-process signal handler that would then still need a futex hand-off to the VMM
 * (47-75 us between two processes); ptrace is the cheaper way out of the guest here.
 *
 * <p>Registers are cached: {@link #setRegs} from any thread only records them, and the
 * tracer thread sets them with its next resume (one PTRACE_SETREGS in the same native
 * call as the PTRACE_CONT and the wait).
 */
public final class ProcessExecContext implements ExecContext {
    private static final int SIGTRAP = 5, SIGILL = 4, SIGFPE = 8, SIGBUS = 7, SIGSEGV = 11, SIGURG = 23;
    private static final int SI_KERNEL = 0x80, SEGV_MAPERR = 1, SEGV_ACCERR = 2;
    /** struct kvm_regs index -> struct user_regs_struct index. */
    private static final int[] USER_OF_KVM = {UR_RAX, UR_RBX, UR_RCX, UR_RDX, UR_RSI, UR_RDI, UR_RSP, UR_RBP, UR_R8,
        UR_R9, UR_R10, UR_R11, UR_R12, UR_R13, UR_R14, UR_R15, UR_RIP, UR_EFLAGS};

    private enum Phase { NEW, READY, GONE }

    /** The guest process this vCPU's thread is in; a fork moves a VM to a new one. Owner thread only. */
    private GuestProcess process;
    private final int index;
    private final GuestMemory memory;
    /** The registers at the last stop (all of struct user_regs_struct). Tracer thread only, or under this. */
    private final long[] user = new long[USER_REGS];
    private final long[] info = new long[INFO_WORDS];
    /** Registers to set at the next resume (kvm_regs order), or null. Guarded by this. */
    private long[] pending;
    /** State to set once the thread stops in the stub (a restored or moved vCPU), or null. Guarded by this. */
    private byte[] pendingXstate;
    private long pendingFsBase, pendingGsBase;
    private boolean pendingBases;
    private volatile Phase phase = Phase.NEW;
    private volatile String goneReason = "the guest process is gone";
    private volatile boolean closed;
    private int tid;

    public ProcessExecContext(GuestProcess process, int index, GuestMemory memory) {
        this.process = process;
        this.index = index;
        this.memory = memory;
    }

    @Override
    public int index() {
        return index;
    }

    /**
     * On the vCPU's thread, before anything else: becomes the tracer of its guest thread
     * and waits until the stub has confined itself and stopped there.
     */
    @Override
    public void begin() {
        attach(null);
    }

    /**
     * Traces this vCPU's thread of {@link #process}, waits for the stub to stop it, then
     * sets what a restore or move left pending: the XSAVE area and FS/GS bases at once,
     * the general registers with the first resume. {@code carried}: the full registers of
     * the thread this one replaces (a move), whose segment state it keeps; null for a new
     * vCPU.
     */
    private void attach(long[] carried) {
        tid = process.tid(index);
        try {
            if (!process.tracedAhead(index)) {
                GuestProcesses.seize(tid);
            }
        } finally {
            process.seized(); // also on failure: the others must not wait for this one
        }
        stopped(carried);
    }

    /** Waits for the traced thread's stop in the stub, then sets what is pending. */
    private void stopped(long[] carried) {
        long[] regs = new long[USER_REGS];
        int kind = GuestProcesses.run(tid, null, regs, info);
        synchronized (this) {
            if (kind != STOP_SIGNAL || info[0] != SIGTRAP) {
                gone(kind);
                return;
            }
            if (carried != null) {
                regs[UR_FS_BASE] = carried[UR_FS_BASE];
                regs[UR_GS_BASE] = carried[UR_GS_BASE];
                regs[UR_EFLAGS] = carried[UR_EFLAGS];
                if (pending == null) {
                    pending = kvmRegs(carried);
                }
            }
            boolean setRegs = carried != null || pendingBases;
            if (pendingBases) {
                regs[UR_FS_BASE] = pendingFsBase;
                regs[UR_GS_BASE] = pendingGsBase;
                pendingBases = false;
            }
            System.arraycopy(regs, 0, user, 0, USER_REGS);
            if (setRegs) {
                GuestProcesses.setRegs(tid, user);
            }
            if (pendingXstate != null) {
                GuestProcesses.setXstate(tid, pendingXstate);
                pendingXstate = null;
            }
            phase = Phase.READY;
        }
    }

    /**
     * Before the vCPU's thread starts: the state it resumes with (a fork child, a clone).
     * The registers apply with its first resume, the rest once it has stopped in the stub.
     */
    public synchronized void restoreState(long[] regs, long fsBase, long gsBase, byte[] xstate) {
        pending = regs.clone();
        pendingFsBase = fsBase;
        pendingGsBase = gsBase;
        pendingBases = true;
        pendingXstate = xstate == null ? null : xstate.clone();
    }

    /** The thread's XSAVE area now; on the vCPU's own thread, the vCPU out of the guest. */
    public byte[] xstate(int size) {
        return GuestProcesses.getXstate(tid, size);
    }

    /** FS and GS bases at the last stop. */
    public synchronized long[] segmentBases() {
        return new long[] {user[UR_FS_BASE], user[UR_GS_BASE]};
    }

    /**
     * First half of a move to {@code next} (the VM was frozen and goes on from the image in
     * a new process; the old one is killed and reaped by the mover): traces this vCPU's
     * thread in the new process. Waits for nothing. On the vCPU's own thread.
     */
    public void beginMove(GuestProcess next) {
        synchronized (this) {
            carried = user.clone();
            process = next;
            phase = Phase.NEW;
            tid = next.tid(index);
        }
        try {
            GuestProcesses.seize(tid);
        } finally {
            next.seized();
        }
    }

    /**
     * Second half of a move, once every vCPU has begun it (so the new process has been let
     * go): waits for the new thread to stop in the stub and gives it the state it had, with
     * {@code xstate}. On the vCPU's own thread.
     */
    public void finishMove(byte[] xstate) {
        synchronized (this) {
            pendingXstate = xstate == null ? null : xstate.clone();
        }
        stopped(carried);
    }

    private long[] carried;


    @Override
    public Trap run() {
        if (phase != Phase.READY) {
            return Trap.crashed(goneReason);
        }
        long[] in;
        synchronized (this) {
            in = pending == null ? null : merged(pending);
            pending = null;
        }
        int kind = GuestProcesses.run(tid, in, user, info);
        return switch (kind) {
            case STOP_SIGNAL -> {
                Trap t = signal((int) info[0], (int) info[1], info[2]);
                if (t.kind() == Trap.Kind.HYPERCALL) {
                    // As on KVM, a vCPU in a hypercall has RIP past the `out` (a capture
                    // rewinds a restartable one onto it).
                    user[UR_RIP] = t.regs()[CpuState.RIP];
                }
                yield t;
            }
            case STOP_SYSCALL -> {
                String reason = syscallReason(info[2], info[3]);
                long at = info[2] - 2;
                if (info[5] == 0 && inRam(at) && GuestCode.isSyscall(memory, at)) {
                    // The system call was not made (seccomp's RET_TRAP rolled RAX back to its
                    // number). orig_rax -1 at the resume: nothing the VMM answers is ever taken
                    // by the kernel for a -ERESTART* to restart.
                    user[UR_ORIG_RAX] = -1;
                    yield Trap.syscall(kvmRegs(user), reason);
                }
                yield Trap.crashed(reason);
            }
            default -> {
                gone(kind);
                yield Trap.crashed(goneReason);
            }
        };
    }

    private void gone(int kind) {
        phase = Phase.GONE;
        goneReason = switch (kind) {
            case STOP_KILLED -> GuestDeathWatch.killedBy(process.pid(), info[0]);
            case STOP_EXITED -> GuestDeathWatch.exitedWith(process.pid(), info[0]);
            default -> String.format("guest process %d: unexpected stop %d (signal %d) of vCPU %d", process.pid(), kind,
                    info[0], index);
        };
    }

    private Trap signal(int signo, int code, long addr) {
        long rip = user[UR_RIP];
        if (signo == SIGURG) {
            return Trap.interrupted(); // a kick
        }
        if (signo == SIGSEGV && code == SI_KERNEL) {
            if (GuestCode.isHypercallAt(memory, rip) && (user[UR_RDX] & 0xffff) == Hypercalls.PORT) {
                long[] regs = kvmRegs(user);
                regs[CpuState.RIP] = rip + 1;
                return Trap.hypercall(regs);
            }
            String io = portIo(rip);
            if (io != null) {
                return Trap.crashed(io);
            }
            if (isInt80(rip)) { // no IA-32 emulation in this kernel: the gate is absent, so #GP
                return Trap.crashed(String.format("guest crashed: int $0x80 at rip=0x%x (a vmfork guest makes no system"
                        + " calls; the 32-bit system call gate, a general protection fault here)", rip));
            }
            if (!inRam(rip)) {
                return Trap.crashed(leftRam("a general protection fault", rip));
            }
            return Trap.crashed(String.format("guest crashed: general protection fault (#GP: a privileged instruction"
                    + " such as cli, hlt or a control-register move) at rip=0x%x", rip));
        }
        if (!inRam(rip) && !(signo == SIGSEGV && addr == rip)) { // (a fetch outside RAM is named below)
            return Trap.crashed(leftRam("signal " + signo + " (code " + code + ")", rip));
        }
        if (signo == SIGSEGV && code == SEGV_MAPERR && addr >= 0 && addr < GuestProcess.LOWEST_MAPPED) {
            // Page 0 is guest RAM (on KVM it reads zero), but the process platform cannot map it.
            return Trap.crashed(String.format("guest crashed: access to 0x%x in page 0, which the process platform"
                    + " cannot map (vm.mmap_min_addr), at rip=0x%x", addr, rip));
        }
        return Trap.crashed(switch (signo) {
            case SIGSEGV -> String.format(code == SEGV_MAPERR && (addr >= memory.size() || addr < GuestProcess.LOWEST_MAPPED)
                    ? "guest crashed: access to guest-physical 0x%x, outside RAM, at rip=0x%x"
                    : "guest crashed: page fault at 0x%x (" + (code == SEGV_ACCERR ? "protection" : "not mapped")
                            + ") at rip=0x%x", addr, rip);
            case SIGILL -> isSysenter(rip)
                    ? String.format("guest crashed: sysenter at rip=0x%x (a vmfork guest makes no system calls;"
                            + " invalid opcode)", rip)
                    : String.format("guest crashed: invalid opcode (#UD) at rip=0x%x", rip);
            case SIGFPE -> String.format("guest crashed: arithmetic exception (divide error or floating point)"
                    + " at rip=0x%x", rip);
            case SIGTRAP -> String.format("guest crashed: breakpoint or debug trap at rip=0x%x", rip);
            case SIGBUS -> String.format("guest crashed: bus error at 0x%x at rip=0x%x", addr, rip);
            default -> String.format("guest crashed: signal %d (code %d) at rip=0x%x", signo, code, rip);
        });
    }

    /** The crash reason for port I/O other than the hypercall, in KVM's words, or null if the #GP was not I/O. */
    private String portIo(long rip) {
        if (!memory.contains(rip, 2)) {
            return null;
        }
        int b = memory.readByte(rip) & 0xff;
        boolean prefix16 = b == 0x66;
        if (prefix16) {
            b = memory.readByte(rip + 1) & 0xff;
        }
        long dx = user[UR_RDX] & 0xffff;
        int width = (b & 1) == 0 ? 1 : prefix16 ? 2 : 4;
        return switch (b) {
            case 0xee, 0xef -> ioText("out", dx, width, rip);
            case 0xec, 0xed -> ioText("in", dx, width, rip);
            case 0xe6, 0xe7 -> ioText("out", memory.readByte(rip + (prefix16 ? 2 : 1)) & 0xff, width, rip);
            case 0xe4, 0xe5 -> ioText("in", memory.readByte(rip + (prefix16 ? 2 : 1)) & 0xff, width, rip);
            case 0x6e, 0x6f, 0x6c, 0x6d, 0xf3 -> String.format(
                    "bad hypercall: port I/O by a string instruction (ins/outs) at rip=0x%x"
                            + " (hypercalls are a 32-bit out %%eax to 0x%x)", rip, Hypercalls.PORT);
            default -> null;
        };
    }

    private static String ioText(String dir, long port, int width, long rip) {
        return String.format("bad hypercall: port I/O %s port 0x%x size %d at rip=0x%x (hypercalls are a 32-bit out"
                + " to 0x%x)", dir, port, width, rip, Hypercalls.PORT);
    }

    private boolean isSysenter(long rip) {
        return memory.contains(rip, 2) && memory.readByte(rip) == 0x0f && memory.readByte(rip + 1) == 0x34;
    }

    private boolean isInt80(long rip) {
        return memory.contains(rip, 2) && (memory.readByte(rip) & 0xff) == 0xcd && (memory.readByte(rip + 1) & 0xff) == 0x80;
    }

    /** Whether {@code rip} lies in guest RAM (as mapped in the process: from {@link GuestProcess#LOWEST_MAPPED}). */
    private boolean inRam(long rip) {
        return rip >= GuestProcess.LOWEST_MAPPED && memory.contains(rip, 1);
    }

    /**
     * A trap with RIP outside guest RAM that was not a fetch fault there: the guest jumped
     * into code of the process that is not its own (the stub's, mapped at 0x600000000000
     * and up) and that code ran until this trap. Named as such, not as the guest's own act.
     */
    private static String leftRam(String what, long rip) {
        return String.format("guest crashed: execution left guest RAM and ran code outside RAM%s until %s at rip=0x%x",
                rip >= STUB_BASE && rip < STUB_END ? " (the process platform's stub)" : "", what, rip);
    }

    /** Where stub/stub.ld links the stub, and a bound on its extent. */
    private static final long STUB_BASE = 0x600000000000L, STUB_END = 0x600100000000L;
    /** The legacy vsyscall page; a call into it is emulated by the kernel, through the seccomp filter. */
    private static final long VSYSCALL_PAGE = 0xffffffffff600000L;

    /** si_call_addr is the address after the trapping instruction: name the `syscall` itself where it is one. */
    private String syscallReason(long callAddr, long nr) {
        long at = callAddr - 2;
        if (GuestCode.isSyscall(memory, at)) {
            return String.format("guest crashed: syscall at rip=0x%x (a vmfork guest makes no system calls;"
                    + " system call %d trapped by seccomp)", at, nr);
        }
        if (isInt80(at)) { // a kernel with IA-32 emulation: int $0x80 reaches the filter
            return String.format("guest crashed: int $0x80 at rip=0x%x (a vmfork guest makes no system calls;"
                    + " 32-bit system call %d trapped by seccomp)", at, nr);
        }
        if ((callAddr & ~0xfffL) == VSYSCALL_PAGE) {
            // The kernel emulates the call and, the filter having refused it, its `ret`: RIP is the return address.
            return String.format("guest crashed: syscall through the vsyscall page (system call %d), called from"
                    + " the guest, return address rip=0x%x (a vmfork guest makes no system calls; trapped by seccomp)", nr,
                    user[UR_RIP]);
        }
        if (!inRam(callAddr)) {
            return leftRam("system call " + nr + " (trapped by seccomp)", callAddr);
        }
        return String.format("guest crashed: syscall at rip=0x%x (a vmfork guest makes no system calls;"
                + " system call %d, through the vsyscall page or another gate, trapped by seccomp)", callAddr, nr);
    }

    private long[] merged(long[] kvm) {
        long[] u = user.clone();
        for (int i = 0; i < USER_OF_KVM.length; i++) {
            u[USER_OF_KVM[i]] = kvm[i];
        }
        return u;
    }

    private static long[] kvmRegs(long[] u) {
        long[] r = new long[CpuState.REGS];
        for (int i = 0; i < USER_OF_KVM.length; i++) {
            r[i] = u[USER_OF_KVM[i]];
        }
        return r;
    }

    @Override
    public synchronized long[] regs() {
        return pending != null ? pending.clone() : kvmRegs(user);
    }

    @Override
    public synchronized void setRegs(long[] regs) {
        if (regs.length != CpuState.REGS) {
            throw new IllegalArgumentException("kvm_regs has 18 registers, got " + regs.length);
        }
        pending = regs.clone();
    }

    @Override
    public synchronized long fsBase() {
        return user[UR_FS_BASE];
    }

    /** Sets the traced thread's FS base with its next resume (one PTRACE_SETREGS with the rest). */
    @Override
    public synchronized void setFsBase(long base) {
        user[UR_FS_BASE] = base;
        if (pending == null) {
            pending = kvmRegs(user);
        }
    }

    @Override
    public synchronized long gsBase() {
        return user[UR_GS_BASE];
    }

    @Override
    public synchronized void setGsBase(long base) {
        user[UR_GS_BASE] = base;
        if (pending == null) {
            pending = kvmRegs(user);
        }
    }

    @Override
    public void kick() {
        if (!closed && phase == Phase.READY) {
            GuestProcesses.kick(process.pid(), tid);
        }
    }

    @Override
    public void clearKick() {
        // A kick is a signal that stops the guest thread once: nothing stays set.
    }

    /**
     * Kills the guest process (every vCPU of the VM ends with it); the VM reaps it once all
     * its vCPU threads are done ({@link GuestProcess#release}).
     */
    @Override
    public void close() {
        closed = true;
        process.kill();
    }

    /** The guest process this vCPU is in now. */
    public GuestProcess process() {
        return process;
    }
}
