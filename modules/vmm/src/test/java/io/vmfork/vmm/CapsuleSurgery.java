package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import com.google.protobuf.CodedInputStream;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.CapsuleTrailer;
import io.vmfork.proto.MemoryChunk;
import io.vmfork.vmm.capsule.CapsuleException;
import io.vmfork.vmm.capsule.CapsuleFormat;
import io.vmfork.vmm.state.VcpuState;
import io.vmfork.vmm.x86.GuestLayout;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;
import java.util.function.UnaryOperator;
import java.util.zip.CRC32C;

/**
 * Edits capsules the way an attacker can: through the schema, then with every CRC, the
 * trailer's counts and the digest recomputed, so that only the reader's other checks and
 * the restore can refuse what was changed. And the checks that a refusal left nothing.
 */
final class CapsuleSurgery {
    private CapsuleSurgery() {
    }

    /** The frames of a well-formed capsule. */
    static List<CapsuleFrame> frames(byte[] capsule) throws Exception {
        List<CapsuleFrame> out = new ArrayList<>();
        CodedInputStream in = CodedInputStream.newInstance(capsule, 8, capsule.length - 8);
        in.setSizeLimit(Integer.MAX_VALUE);
        while (!in.isAtEnd()) {
            int len = in.readRawVarint32();
            out.add(CapsuleFrame.parseFrom(in.readRawBytes(len)));
        }
        return out;
    }

    /** Frames back into a capsule: chunk CRCs, trailer counts and the digest made valid again. */
    static byte[] assemble(List<CapsuleFrame> frames) throws Exception {
        ByteArrayOutputStream body = new ByteArrayOutputStream();
        body.write(CapsuleFormat.fileMagic());
        long chunks = 0;
        long data = 0;
        for (CapsuleFrame f : frames) {
            if (f.getKindCase() == CapsuleFrame.KindCase.TRAILER) {
                continue;
            }
            if (f.getKindCase() == CapsuleFrame.KindCase.CHUNK) {
                MemoryChunk c = f.getChunk();
                chunks++;
                if (c.getZeroBytes() != 0) {
                    f.writeDelimitedTo(body); // a zero run has no data and no CRC
                    continue;
                }
                byte[] pages = c.getData().toByteArray();
                if (c.getCodec() == io.vmfork.proto.ChunkCodec.CHUNK_CODEC_LZ4) {
                    // The CRC is of the decompressed pages; a block that does not decompress keeps its CRC.
                    try {
                        pages = net.jpountz.lz4.LZ4Factory.safeInstance().safeDecompressor()
                                .decompress(pages, c.getUncompressedLength());
                    } catch (RuntimeException e) {
                        pages = null;
                    }
                }
                if (pages != null) {
                    CRC32C crc = new CRC32C();
                    crc.update(pages);
                    f = CapsuleFrame.newBuilder().setChunk(c.toBuilder().setCrc32C((int) crc.getValue())).build();
                }
                data += c.getCodec() == io.vmfork.proto.ChunkCodec.CHUNK_CODEC_LZ4 ? c.getUncompressedLength()
                        : c.getData().size();
            }
            f.writeDelimitedTo(body);
        }
        byte[] digest = MessageDigest.getInstance("SHA-256").digest(body.toByteArray());
        CapsuleFrame.newBuilder().setTrailer(CapsuleTrailer.newBuilder().setChunkCount(chunks).setDataBytes(data)
                .setSha256(com.google.protobuf.ByteString.copyFrom(digest))).build().writeDelimitedTo(body);
        return body.toByteArray();
    }

    /** The capsule with its state frame edited. */
    static byte[] withState(List<CapsuleFrame> frames, UnaryOperator<io.vmfork.proto.MachineState.Builder> edit)
            throws Exception {
        List<CapsuleFrame> f = new ArrayList<>(frames);
        f.set(1, CapsuleFrame.newBuilder().setState(edit.apply(f.get(1).getState().toBuilder())).build());
        return assemble(f);
    }

    /** The capsule with vCPU 0's state edited. */
    static byte[] withVcpu(List<CapsuleFrame> frames, UnaryOperator<io.vmfork.proto.VcpuState.Builder> edit)
            throws Exception {
        return withState(frames, s -> s.setVcpus(0, edit.apply(s.getVcpus(0).toBuilder())));
    }

    /** The capsule with its header edited. */
    static byte[] withHeader(List<CapsuleFrame> frames, UnaryOperator<io.vmfork.proto.CapsuleHeader.Builder> edit)
            throws Exception {
        List<CapsuleFrame> f = new ArrayList<>(frames);
        f.set(0, CapsuleFrame.newBuilder().setHeader(edit.apply(f.get(0).getHeader().toBuilder())).build());
        return assemble(f);
    }

    /** Resources of the process that a refused restore must give back. */
    record Resources(int live, int fds, int memfds, int threads, List<String> fdTargets) {
        static Resources of(Vmm vmm) throws InterruptedException {
            VmmTesting.quiesce(vmm);
            return new Resources(vmm.liveCount(), VmmTesting.openFds(), VmmTesting.memfds(), VmmTesting.threads(),
                    CapsuleSurgery.fdTargets());
        }
    }

    /**
     * Restores {@code capsule}, expecting a refusal of type {@code type} that names
     * {@code mentions}, and that no VM was registered and nothing leaked.
     */
    static <T extends CapsuleException> T refused(Vmm vmm, byte[] capsule, Class<T> type, String... mentions)
            throws Exception {
        Resources before = Resources.of(vmm);
        int vms = vmm.vms().size();
        T e = assertThrows(type, () -> vmm.restoreCapsule(new ByteArrayInputStream(capsule), VmListener.NONE));
        for (String m : mentions) {
            assertTrue(e.getMessage().contains(m), "'" + m + "' not in: " + e.getMessage());
        }
        assertNoVmAndNoLeak(vmm, before, vms);
        return e;
    }

    static void assertNoVmAndNoLeak(Vmm vmm, Resources before, int vms) throws InterruptedException {
        assertEquals(vms, vmm.vms().size(), "no VM was registered");
        assertEquals(before.live(), vmm.liveCount(), "no VM slot was kept");
        VmmTesting.quiesce(vmm); // a restore that KVM refused took a pooled VM; the pool makes another
        // Every fd a VM or a capsule read holds (KVM objects, memfds, /dev/kvm) must be gone at once; the JVM's
        // own (sockets, pipes, cgroup files) come and go on their own schedule, so the count may take a moment.
        List<String> added = new ArrayList<>(fdTargets());
        before.fdTargets().forEach(added::remove);
        added.removeIf(t -> !(t.startsWith("anon_inode:") || t.startsWith("/memfd:") || t.equals("/dev/kvm")));
        assertEquals(List.of(), added, "no VM fd was left behind");
        assertTrue(VmmTesting.settle(VmmTesting::openFds, before.fds()) <= before.fds(), "no fd was left behind");
        assertEquals(before.memfds(), VmmTesting.memfds(), "no memfd was left behind");
        assertTrue(VmmTesting.settle(VmmTesting::threads, before.threads()) <= before.threads(), "no thread was left");
    }

    /** The restored VM runs at CPL3 with the VMM's page tables and boot area: what a boot of it has below 0x200000. */
    static void assertGuestModel(VirtualMachine vm, byte[] bootLowMemory) {
        try (VirtualMachine.Snapshot s = vm.snapshot()) {
            for (VcpuState v : s.state().vcpus()) {
                // What a KVM vCPU is given is the model's, whatever the capsule said (KvmCpuStates.join).
                io.vmfork.vmm.arch.SregsState sregs = io.vmfork.vmm.x86.KvmCpuStates.join(v, s.state().cpuidEntries(),
                        new int[0]).sregs();
                assertEquals(3, sregs.segments().get(0).dpl(), "CS.DPL: " + v);
                assertEquals(3, sregs.segments().get(0).selector() & 3, "CS.RPL: " + v);
                assertEquals(3, sregs.segments().get(5).dpl(), "SS.DPL: " + v);
                assertEquals(GuestLayout.PML4, sregs.cr3(), "CR3");
            }
            byte[] low = lowMemory(s.image());
            // heap_start and heap_end depend on the guest image, which a capsule does not carry: they may be
            // any page-aligned range a boot could write. Everything else is what this boot wrote.
            java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(low).order(java.nio.ByteOrder.LITTLE_ENDIAN);
            int info = (int) GuestLayout.BOOT_INFO;
            long heapStart = b.getLong(info + 24);
            long heapEnd = b.getLong(info + 32);
            long size = s.state().memorySize();
            assertTrue(heapStart >= GuestLayout.IMAGE_MIN && heapStart % 4096 == 0 && heapEnd % 4096 == 0
                    && heapStart <= heapEnd && heapEnd <= size, String.format("heap [0x%x, 0x%x)", heapStart, heapEnd));
            System.arraycopy(bootLowMemory, info + 24, low, info + 24, 16);
            assertArrayEquals(bootLowMemory, low, "memory below 0x200000 is what a boot writes");
        }
    }

    static List<String> fdTargets() {
        List<String> out = new ArrayList<>();
        try (var s = java.nio.file.Files.list(java.nio.file.Path.of("/proc/self/fd"))) {
            s.forEach(p -> {
                try {
                    out.add(java.nio.file.Files.readSymbolicLink(p).toString());
                } catch (java.io.IOException e) {
                    out.add("?");
                }
            });
        } catch (java.io.IOException e) {
            out.add(e.toString());
        }
        return out;
    }

    static byte[] lowMemory(io.vmfork.vmm.state.MemorySource image) {
        byte[] low = new byte[(int) GuestLayout.IMAGE_MIN];
        image.read(0, low, 0, low.length);
        return low;
    }
}
