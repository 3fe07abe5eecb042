package io.vmfork.vmm.platform.kvm;

import com.sun.jna.Memory;
import io.vmfork.kvm.KvmVcpu;
import io.vmfork.kvm.KvmVm;
import io.vmfork.kvm.x86.Cpuid;
import io.vmfork.vmm.memory.GuestMemory;
import io.vmfork.vmm.memory.MemoryFreezer;
import io.vmfork.vmm.platform.ExecContext;
import io.vmfork.vmm.platform.Machine;
import io.vmfork.vmm.platform.ParkedThread;
import io.vmfork.vmm.state.VcpuState;
import java.util.ArrayList;
import java.util.BitSet;
import java.util.List;

/**
 * A VM on KVM: the KVM VM, memory slot 0 over guest RAM (dirty-logged once the RAM is a
 * private view of an image), one KVM vCPU per vCPU.
 */
final class KvmMachine implements Machine {
    private final KvmPlatform platform;
    private final KvmVm kvmVm;
    private final GuestMemory memory;
    private final List<ExecContext> contexts = new ArrayList<>();
    private final List<KvmVcpu> vcpus;
    /** The CPUID the VM runs with (the host's for a VM booted here). */
    private final Cpuid cpuid;
    /** The pooled thread that runs vCPU 0, until it is taken. */
    private ParkedThread thread0;

    /** Takes ownership of all it is given. */
    KvmMachine(KvmPlatform platform, KvmVm kvmVm, GuestMemory memory, List<KvmVcpu> vcpus, ParkedThread thread0,
            Cpuid cpuid) {
        this.platform = platform;
        this.kvmVm = kvmVm;
        this.memory = memory;
        this.vcpus = List.copyOf(vcpus);
        this.thread0 = thread0;
        this.cpuid = cpuid;
        for (KvmVcpu v : vcpus) {
            contexts.add(new KvmExecContext(v, memory, platform.settingsKickSignal()));
        }
    }

    @Override
    public GuestMemory memory() {
        return memory;
    }

    @Override
    public List<ExecContext> contexts() {
        return contexts;
    }

    @Override
    public synchronized ParkedThread takeThread(int index) {
        if (index != 0) {
            return null;
        }
        ParkedThread t = thread0;
        thread0 = null;
        return t;
    }

    /**
     * Ordering requirements: KVM's dirty log is read (and so re-protected) before the
     * freeze, which copies or write-protects what the guest wrote; when the freeze mapped a
     * new view, the memory slot moves to it before any vCPU runs again, and the old view is
     * unmapped only after KVM has let go of it (in {@link #resumed}); the vCPUs are read
     * last, paused.
     */
    @Override
    public Capture capture(boolean[] started, BitSet resultPages, VcpuThreads threads) {
        BitSet guestDirty = new BitSet();
        long t0 = System.nanoTime();
        if (memory.isPrivate()) {
            long pages = memory.size() / GuestMemory.PAGE_SIZE;
            Memory bitmap = new Memory(((pages + 63) / 64) * 8);
            bitmap.clear();
            kvmVm.getDirtyLog(0, bitmap);
            guestDirty = MemoryFreezer.bitmapToPages(bitmap, pages);
        }
        long tLogged = System.nanoTime();
        MemoryFreezer.Freeze f = memory.freezer().freeze(guestDirty, platform.pagesCopiedPaused(), resultPages);
        long pageWork = (tLogged - t0) + f.protectNanos();
        try {
            if (f.viewChanged()) {
                long tSlot = System.nanoTime();
                kvmVm.setUserMemoryRegion(0, 0, 0, 0, 0);
                kvmVm.setUserMemoryRegion(0, KvmVm.MEM_LOG_DIRTY_PAGES, 0, memory.size(), memory.hostAddress());
                pageWork += System.nanoTime() - tSlot; // the old view goes in memory.freezer().resumed()
            }
            byte[] cpuidEntries = cpuid.entryBytes();
            List<VcpuState> states = new ArrayList<>();
            for (KvmVcpu v : vcpus) {
                // Paused: only a vCPU serving a hypercall starts or stops a vCPU, and none is.
                states.add(VcpuStates.capture(v, platform.caps(), cpuidEntries, started[v.index()]));
            }
            return new Capture(states, f.image(), cpuidEntries, kvmVm.getClockNs(), pageWork);
        } catch (RuntimeException e) {
            f.image().release();
            throw e;
        }
    }

    @Override
    public void resumed() {
        memory.freezer().resumed();
    }

    @Override
    public void release() {
        ParkedThread t = takeThread(0);
        if (t != null) {
            t.cancel();
        }
        try {
            for (ExecContext c : contexts) {
                c.close(); // closed already by the vCPU threads that ran them, unless the launch failed
            }
            kvmVm.close();
        } finally {
            memory.close();
        }
    }
}
