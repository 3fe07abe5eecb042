package io.vmfork.vmm;

import static io.vmfork.vmm.hypercall.Hypercalls.*;

import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.x86.CpuSetup;
import io.vmfork.vmm.x86.GuestLayout;
import java.util.List;

/**
 * Serves the hypercalls of one VM (docs/hypercalls.md). Every pointer the guest passes is
 * checked against guest RAM before it is used; a bad one gets EFAULT and the guest goes
 * on. Writes into the VMM-owned area below {@link GuestLayout#IMAGE_MIN} are refused the
 * same way, so a guest cannot use the VMM to rewrite its own page tables.
 */
final class HypercallDispatcher {
    private static final int IDENTITY_SIZE = 40;
    private static final int CLOCK_SIZE = 16;
    private static final int BUF_SIZE = 16;
    private static final int RECV_SIZE = 32;
    private static final int FORK_STATUS_SIZE = 32;
    private static final int VCPU_START_SIZE = 32;
    /** VCPU_START: bytes below the new stack top that must be writable, and its alignment. */
    private static final int START_STACK_BYTES = 16;

    private final VirtualMachine vm;

    HypercallDispatcher(VirtualMachine vm) {
        this.vm = vm;
    }

    /**
     * Serves the hypercall the vCPU exited on; {@code regs} holds its registers (raw
     * struct kvm_regs order, {@link io.vmfork.vmm.arch.CpuState#RAX} etc.). Returns
     * false when the vCPU must stop running (the guest exited, or the VM is stopping).
     */
    boolean dispatch(Vcpu vcpu, long[] regs) {
        long nr = regs[CpuState.RAX] & 0xffffffffL;
        long arg = regs[RDI];
        long status;
        switch ((int) nr) {
            case ABI_VERSION_CALL -> status = ABI_VERSION;
            case CONSOLE_WRITE -> status = consoleWrite(arg);
            case EXIT -> {
                vm.end(VmExit.exited((int) arg));
                return false;
            }
            case IDENTITY -> status = identity(arg);
            case ENTROPY -> status = entropy(arg);
            case CLOCK -> status = clock(arg);
            case RECV -> {
                Long r = recv(vcpu, arg);
                if (r == null) {
                    return false;
                }
                status = r;
            }
            case SEND -> status = send(arg);
            case FORK_STATUS -> {
                Long r = forkStatus(vcpu, arg);
                if (r == null) {
                    return false;
                }
                status = r;
            }
            case READY -> {
                vm.markReady();
                status = OK;
            }
            case VCPU_START -> status = vcpuStart(arg);
            case VCPU_STOP -> {
                if (vcpu.index() == 0) {
                    status = EINVAL;
                    break;
                }
                // Ordering requirements: the registers are final (RAX = 0, RIP past the `out`)
                // before the vCPU counts as stopped, since a VCPU_START from another vCPU may
                // set them from then on.
                regs[CpuState.RAX] = OK;
                vcpu.setRegs(regs);
                vm.control().stopVcpu(vcpu);
                return true;
            }
            case VCPU_INDEX -> status = vcpu.index();
            default -> status = extension(vcpu, (int) nr, arg);
        }
        if (status == STOP_VCPU) {
            return false;
        }
        regs[CpuState.RAX] = status;
        vcpu.setRegs(regs);
        return true;
    }

    private static final int RDI = CpuState.RDI;
    private static final int RSI = CpuState.RSI;
    private static final int RSP = CpuState.RSP;

    /** Marker: the vCPU must leave its loop without returning to the guest. */
    static final long STOP_VCPU = Long.MIN_VALUE;

    /** Hypercalls beyond the base set (fork), served by the VM. */
    private long extension(Vcpu vcpu, int nr, long arg) {
        return vm.extensionHypercall(vcpu, nr, arg);
    }

    private GuestMemory mem() {
        return vm.memory();
    }

    /** [gpa, gpa+len) lies in guest RAM and the guest may have the VMM write it. */
    private boolean writable(long gpa, long len) {
        return mem().contains(gpa, len) && (len == 0 || gpa >= GuestLayout.IMAGE_MIN);
    }

    private long consoleWrite(long block) {
        if (!mem().contains(block, BUF_SIZE)) {
            return EFAULT;
        }
        long addr = mem().readLong(block);
        long len = mem().readLong(block + 8);
        if (!mem().contains(addr, len)) {
            return EFAULT;
        }
        if (len > CONSOLE_MAX) {
            return EINVAL;
        }
        byte[] bytes = mem().read(addr, (int) len);
        vm.consoleOutput(bytes);
        return len;
    }

    private long identity(long block) {
        if (!writable(block, IDENTITY_SIZE)) {
            return EFAULT;
        }
        VmIdentity id = vm.identity();
        mem().writeLong(block, id.vmId());
        mem().writeLong(block + 8, id.parentId());
        mem().writeLong(block + 16, id.hostId());
        mem().writeLong(block + 24, id.forkGeneration());
        mem().writeInt(block + 32, id.vmType());
        mem().writeInt(block + 36, vm.vcpuCount());
        return OK;
    }

    private long entropy(long block) {
        if (!mem().contains(block, BUF_SIZE)) {
            return EFAULT;
        }
        long addr = mem().readLong(block);
        long len = mem().readLong(block + 8);
        if (!writable(addr, len)) {
            return EFAULT;
        }
        if (len > ENTROPY_MAX) {
            return EINVAL;
        }
        byte[] bytes = new byte[(int) len];
        vm.vmm().entropy().nextBytes(bytes);
        mem().write(addr, bytes);
        return len;
    }

    private long clock(long block) {
        if (!writable(block, CLOCK_SIZE)) {
            return EFAULT;
        }
        java.time.Instant now = java.time.Instant.now();
        mem().writeLong(block, System.nanoTime());
        mem().writeLong(block + 8, now.getEpochSecond() * 1_000_000_000L + now.getNano());
        return OK;
    }

    /** RECV; null when the vCPU must stop (the VM is stopping while it waited). */
    private Long recv(Vcpu vcpu, long block) {
        if (!writable(block, RECV_SIZE)) {
            return EFAULT;
        }
        long addr = mem().readLong(block);
        long capacity = mem().readLong(block + 8);
        long flags = mem().readLong(block + 16);
        if ((flags & ~RECV_NONBLOCK) != 0) {
            return EINVAL;
        }
        if (!writable(addr, capacity)) {
            return EFAULT;
        }
        MessageChannel channel = vm.channel();
        RunControl control = vm.control();
        synchronized (control) {
            if (!channel.hasRequestOrClosed()) {
                if ((flags & RECV_NONBLOCK) != 0) {
                    return EAGAIN;
                }
                vcpu.inRestartableHypercall = true;
                boolean go;
                try {
                    go = control.awaitInHypercall(vcpu, channel::hasRequestOrClosed);
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    go = false;
                } finally {
                    vcpu.inRestartableHypercall = false;
                }
                if (!go) {
                    return null;
                }
            }
            byte[] m = channel.peekRequest();
            if (m == null) {
                return ECLOSED;
            }
            mem().writeLong(block + 24, m.length);
            if (m.length > capacity) {
                return E2BIG;
            }
            mem().write(addr, m);
            channel.dropRequest();
            return (long) m.length;
        }
    }

    /**
     * FORK_STATUS; null when the vCPU must stop. Waits like RECV: restartable, stable for a
     * pause, so that a fork or snapshot meanwhile captures the vCPU back on its `out` (a
     * copy re-issues the call, and gets EINVAL: the tickets are the parent's).
     */
    private Long forkStatus(Vcpu vcpu, long block) {
        if (!writable(block, FORK_STATUS_SIZE)) {
            return EFAULT;
        }
        long ticket = mem().readLong(block);
        long waitNs = mem().readLong(block + 8);
        RemoteTickets tickets = vm.remoteTickets();
        RemoteTickets.Status st = tickets.status(ticket);
        if (st == null) {
            return EINVAL;
        }
        if (st.inProgress() && waitNs != 0) {
            long deadline = System.nanoTime()
                    + (Long.compareUnsigned(waitNs, FORK_STATUS_WAIT_MAX) > 0 ? FORK_STATUS_WAIT_MAX : waitNs);
            RunControl control = vm.control();
            vcpu.inRestartableHypercall = true;
            boolean go;
            try {
                go = control.awaitInHypercall(vcpu, () -> {
                    RemoteTickets.Status now = tickets.status(ticket);
                    return now == null || !now.inProgress();
                }, deadline);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                go = false;
            } finally {
                vcpu.inRestartableHypercall = false;
            }
            if (!go) {
                return null;
            }
            st = tickets.status(ticket);
            if (st == null) {
                return EINVAL; // resolved and forgotten while it waited: as if never known
            }
        }
        mem().writeLong(block + 16, st.status());
        mem().writeLong(block + 24, st.vmId());
        return OK;
    }

    /**
     * VCPU_START: sets the registers of a secondary vCPU that does not run and starts it.
     * Checks in the order of docs/hypercalls.md.
     */
    private long vcpuStart(long block) {
        if (!mem().contains(block, VCPU_START_SIZE)) {
            return EFAULT;
        }
        long index = mem().readInt(block) & 0xffffffffL;
        int flags = mem().readInt(block + 4);
        long entry = mem().readLong(block + 8);
        long stackTop = mem().readLong(block + 16);
        long arg = mem().readLong(block + 24);
        if (flags != 0) {
            return EINVAL;
        }
        List<Vcpu> all = vm.vcpuList();
        if (index == 0 || index >= all.size()) {
            return EINVAL;
        }
        if (!mem().contains(entry, 1)) {
            return EFAULT;
        }
        if (stackTop < START_STACK_BYTES || !writable(stackTop - START_STACK_BYTES, START_STACK_BYTES)) {
            return EFAULT;
        }
        if (stackTop % START_STACK_BYTES != 0) {
            return EINVAL;
        }
        Vcpu target = all.get((int) index);
        long[] r = new long[CpuState.REGS];
        r[CpuState.RIP] = entry;
        r[RSP] = stackTop;
        r[RDI] = arg;
        r[RSI] = index;
        r[CpuState.RFLAGS] = CpuSetup.RFLAGS_INITIAL;
        return vm.control().startVcpu(target, () -> target.setRegs(r)) ? OK : EINVAL;
    }

    private long send(long block) {
        if (!mem().contains(block, BUF_SIZE)) {
            return EFAULT;
        }
        long addr = mem().readLong(block);
        long len = mem().readLong(block + 8);
        if (!mem().contains(addr, len)) {
            return EFAULT;
        }
        if (len > vm.channel().maxMessage()) {
            return EINVAL;
        }
        vm.guestMessage(mem().read(addr, (int) len));
        return len;
    }
}
