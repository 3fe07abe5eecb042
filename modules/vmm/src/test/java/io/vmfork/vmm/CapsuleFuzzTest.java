package io.vmfork.vmm;

import static io.vmfork.vmm.CapsuleSurgery.*;
import static org.junit.jupiter.api.Assertions.*;

import com.google.protobuf.ByteString;
import com.google.protobuf.Descriptors.FieldDescriptor;
import com.google.protobuf.Message;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.CapsuleHeader;
import io.vmfork.proto.CpuidEntry;
import io.vmfork.proto.MachineState;
import io.vmfork.proto.MemoryChunk;
import io.vmfork.proto.Msr;
import io.vmfork.proto.VcpuState;
import io.vmfork.vmm.capsule.CapsuleException;
import io.vmfork.vmm.guest.Guests;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * A structure-aware capsule fuzzer: each case edits a real guest's capsule through the
 * Protobuf schema (header fields, segments, control registers, MSR lists, events, CPUID,
 * chunk offsets and the bytes below 0x200000, queued messages, anything else the schema
 * has), recomputes every CRC and the digest, and restores it. Every case must either be
 * refused with a capsule exception before any VM exists, leaving no VM, fd, memfd or
 * thread behind, or run a guest at CPL3 with the VMM's own page tables and boot area
 * (what a boot writes below 0x200000). A guest the edit made crash is allowed to end.
 *
 * <p>Delta capsules (issue 8) get the same treatment, with edits to the chunk fields a
 * delta adds (zero runs, LZ4 codec and length) and to the base key, read with a resolver
 * that holds the base: each case is refused, leaving the held base as it was, or gives
 * an image from which a guest runs inside the model.
 *
 * <p>{@code -Dvmfork.fuzz.cases=N} (300 by default, half as many deltas) and {@code -Dvmfork.fuzz.seed=S} (a
 * fixed seed by default) choose the run; a failure names the seed, the case and the edits.
 */
class CapsuleFuzzTest extends VmmTestBase {
    private static final long MEMORY = 16L << 20;
    private static final long DEFAULT_SEED = 0x6361_7073_756c_6521L;
    private static final int[] MSRS = {0x10, 0x1b, 0x3a, 0x174, 0x175, 0x176, 0x1a0, 0x1d9, 0x277, 0x6e0,
        0xc0000080, 0xc0000081, 0xc0000082, 0xc0000084, 0xc0000100, 0xc0000101, 0xc0000102, 0xc0000103,
        0x4b564d00, 0x4b564d01, 0x4b564d02, 0x4b564d03, 0x12345};

    @Test
    void everyEditedCapsuleIsRefusedCleanlyOrRunsInsideTheGuestModel() throws Exception {
        long seed = Long.getLong("vmfork.fuzz.seed", DEFAULT_SEED);
        int cases = Integer.getInteger("vmfork.fuzz.cases", 300);
        VirtualMachine original = vmm.launch(VmSpec.of(Guests.shipped("forker"), MEMORY));
        original.ready().get(30, TimeUnit.SECONDS);
        SnapshotContractTest.idle(original);
        byte[] capsule;
        byte[] bootLow;
        try (VirtualMachine.Snapshot s = original.snapshot()) {
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            vmm.writeCapsule(s, out);
            capsule = out.toByteArray();
            bootLow = CapsuleSurgery.lowMemory(s.image());
        }
        original.stop();
        original.awaitTermination(VmmTesting.TIMEOUT);
        List<CapsuleFrame> frames = frames(capsule);
        // Three starting points: the capsule as this host wrote it, the same with the KVM part a KVM host
        // writes (on a process host: the capture has none), and that one in format version 3's layout.
        List<CapsuleFrame> kvm = io.vmfork.vmm.capsule.KvmCapsules.withKvmPart(frames);
        List<List<CapsuleFrame>> bases = List.of(frames, kvm, io.vmfork.vmm.capsule.KvmCapsules.frames(kvm));
        int refused = 0;
        int ran = 0;
        int ended = 0;
        long t0 = System.nanoTime();
        for (int c = 0; c < cases; c++) {
            Random r = new Random(seed * 31 + c);
            List<String> edits = new ArrayList<>();
            List<CapsuleFrame> f = new ArrayList<>(bases.get(r.nextInt(bases.size())));
            int n = 1 + r.nextInt(3);
            for (int i = 0; i < n; i++) {
                edits.add(edit(f, r));
            }
            String what = "seed " + seed + " case " + c + " (format version " + f.get(0).getHeader().getFormatVersion()
                    + (f.get(1).getState().getVcpus(0).hasKvm() ? ", KVM part" : "") + "): " + edits;
            byte[] bytes = assemble(f);
            Resources before = Resources.of(vmm);
            VirtualMachine vm;
            try {
                vm = vmm.restoreCapsule(new ByteArrayInputStream(bytes), VmListener.NONE);
            } catch (CapsuleException e) {
                refused++;
                try {
                    assertNoVmAndNoLeak(vmm, before, 0);
                } catch (AssertionError a) {
                    throw new AssertionError(what + ": " + a.getMessage(), a);
                }
                continue;
            } catch (Throwable t) {
                throw new AssertionError(what + ": not refused with a capsule exception: " + t, t);
            }
            try {
                assertGuestModel(vm, bootLow);
                ran++;
            } catch (VmEndedException e) {
                assertNotEquals(VmExit.Kind.STOPPED, e.exit().kind(), what);
                ended++;
            } catch (AssertionError a) {
                throw new AssertionError(what + ": " + a.getMessage(), a);
            } finally {
                vm.stop();
                vm.awaitTermination(VmmTesting.TIMEOUT);
            }
        }
        System.out.printf("capsule fuzzer: seed %d, %d cases in %d ms: %d refused, %d ran in the guest model, "
                + "%d ended on their own%n", seed, cases, (System.nanoTime() - t0) / 1_000_000, refused, ran, ended);
        assertEquals(0, vmm.liveCount());
        if (cases >= 100) {
            assertTrue(refused > cases / 10 && ran > cases / 10, "the edits both break and keep capsules");
        }
    }

    @Test
    void everyEditedDeltaCapsuleIsRefusedCleanlyOrRunsInsideTheGuestModel() throws Exception {
        long seed = Long.getLong("vmfork.fuzz.seed", DEFAULT_SEED) + 1;
        int cases = Integer.getInteger("vmfork.fuzz.cases", 300) / 2;
        byte[] key = "fuzz/base".getBytes(java.nio.charset.StandardCharsets.UTF_8);
        VirtualMachine original = vmm.launch(VmSpec.of(Guests.shipped("forker"), MEMORY));
        byte[] full;
        byte[] delta;
        byte[] bootLow;
        try {
            original.ready().get(30, TimeUnit.SECONDS);
            SnapshotContractTest.idle(original);
            try (VirtualMachine.Snapshot a = original.snapshot()) {
                ByteArrayOutputStream out = new ByteArrayOutputStream();
                vmm.writeCapsule(a, out);
                full = out.toByteArray();
                bootLow = CapsuleSurgery.lowMemory(a.image());
                assertEquals("touched 1", ForkTest.ask(original, "touch 1"));
                assertEquals("ok", ForkTest.ask(original, "write 7 7"));
                SnapshotContractTest.idle(original);
                try (VirtualMachine.Snapshot b = original.snapshot()) {
                    ByteArrayOutputStream d = new ByteArrayOutputStream();
                    // Compressed, so that the edits meet LZ4 chunks as well as raw ones and zero runs.
                    io.vmfork.vmm.capsule.CapsuleWriter.create(vmm.capsuleLimits()
                            .withCompression(io.vmfork.vmm.capsule.ChunkCompression.LZ4))
                            .writeDelta(d, b.state(), b.image(), b.image().changedSince(a.image()), key,
                                    vmm.hostPlatform());
                    delta = d.toByteArray();
                }
            }
        } finally {
            original.stop();
            original.awaitTermination(VmmTesting.TIMEOUT);
        }
        io.vmfork.vmm.capsule.CapsuleReader reader = io.vmfork.vmm.capsule.CapsuleReader.create(vmm.capsuleLimits());
        List<CapsuleFrame> frames = frames(delta);
        int refused = 0;
        int ran = 0;
        int ended = 0;
        try (io.vmfork.vmm.capsule.ReceivedCapsule base = reader.readImage(new ByteArrayInputStream(full),
                "vmfork-fuzz-base", vmm.hostPlatform(), vmm.guestRules(), null)) {
            io.vmfork.vmm.capsule.BaseResolver bases =
                    k -> java.util.Arrays.equals(k, key) ? base.image().retain() : null;
            byte[] baseDigest = SnapshotContractTest.memoryDigest(base.image());
            for (int c = 0; c < cases; c++) {
                Random r = new Random(seed * 31 + c);
                List<String> edits = new ArrayList<>();
                List<CapsuleFrame> f = new ArrayList<>(frames);
                int n = 1 + r.nextInt(3);
                for (int i = 0; i < n; i++) {
                    edits.add(r.nextInt(3) == 0 ? deltaEdit(f, r) : edit(f, r));
                }
                String what = "delta: seed " + seed + " case " + c + ": " + edits;
                byte[] bytes = assemble(f);
                Resources before = Resources.of(vmm);
                VirtualMachine vm;
                try (io.vmfork.vmm.capsule.ReceivedCapsule got = reader.readImage(new ByteArrayInputStream(bytes),
                        "vmfork-fuzz-delta", vmm.hostPlatform(), vmm.guestRules(), bases)) {
                    vm = vmm.restore(got.contents().state(), got.image(), VmListener.NONE);
                } catch (CapsuleException | io.vmfork.os.NativeCallException | io.vmfork.kvm.KvmException e) {
                    refused++;
                    try {
                        assertNoVmAndNoLeak(vmm, before, 0);
                    } catch (AssertionError a) {
                        throw new AssertionError(what + ": " + a.getMessage(), a);
                    }
                    continue;
                } catch (Throwable t) {
                    throw new AssertionError(what + ": not refused with a capsule exception: " + t, t);
                }
                try {
                    assertGuestModel(vm, bootLow);
                    ran++;
                } catch (VmEndedException e) {
                    assertNotEquals(VmExit.Kind.STOPPED, e.exit().kind(), what);
                    ended++;
                } catch (AssertionError a) {
                    throw new AssertionError(what + ": " + a.getMessage(), a);
                } finally {
                    vm.stop();
                    vm.awaitTermination(VmmTesting.TIMEOUT);
                }
            }
            assertArrayEquals(baseDigest, SnapshotContractTest.memoryDigest(base.image()),
                    "the held base went through every case unchanged");
        }
        System.out.printf("delta capsule fuzzer: seed %d, %d cases: %d refused, %d ran in the guest model, "
                + "%d ended on their own%n", seed, cases, refused, ran, ended);
        assertEquals(0, vmm.liveCount());
        if (cases >= 50) {
            assertTrue(refused > cases / 10 && ran > cases / 10, "the edits both break and keep capsules");
        }
    }

    // ---------------------------------------------------------------- edits

    /** What a delta adds: its chunks' fields (zero runs, codec, lengths) and the base key. */
    private static String deltaEdit(List<CapsuleFrame> f, Random r) {
        List<Integer> c = chunks(f);
        switch (r.nextInt(4)) {
            case 0 -> {
                CapsuleHeader.Builder h = f.get(0).getHeader().toBuilder();
                byte[] k = h.getBaseImage().toByteArray();
                k[r.nextInt(k.length)] ^= 1;
                h.setBaseImage(ByteString.copyFrom(k));
                f.set(0, CapsuleFrame.newBuilder().setHeader(h).build());
                return "header.base_image flipped";
            }
            case 1 -> {
                // A zero run where a data chunk was, or a new one after the last chunk.
                int i = c.get(r.nextInt(c.size()));
                MemoryChunk ch = f.get(i).getChunk();
                long len = 4096L * (1 + r.nextInt(4));
                f.set(i, CapsuleFrame.newBuilder().setChunk(MemoryChunk.newBuilder().setOffset(ch.getOffset())
                        .setZeroBytes(len)).build());
                return String.format("chunk@0x%x = zero run of 0x%x", ch.getOffset(), len);
            }
            default -> {
                int i = c.get(r.nextInt(c.size()));
                MemoryChunk.Builder ch = f.get(i).getChunk().toBuilder();
                String e = String.format("chunk@0x%x.", ch.getOffset()) + mutate(ch, r, false);
                f.set(i, CapsuleFrame.newBuilder().setChunk(ch).build());
                return e;
            }
        }
    }

    private static String edit(List<CapsuleFrame> f, Random r) {
        if (f.get(0).getHeader().getFormatVersion() == 3) {
            return editVersion3(f, r);
        }
        return switch (r.nextInt(13)) {
            case 0 -> header(f, r);
            case 12 -> state(f, r);
            case 1 -> vcpu(f, r, "kvm.segment", v -> {
                var s = v.getKvmBuilder();
                String[] names = {"ds", "es", "fs", "gs"};
                String name = names[r.nextInt(names.length)];
                return "kvm." + name + "." + mutate((Message.Builder) s.getFieldBuilder(
                        s.getDescriptorForType().findFieldByName(name)), r, false);
            });
            case 2 -> vcpu(f, r, "cpu", v -> "cpu." + mutate(v.getCpuBuilder(), r, false));
            case 3 -> vcpu(f, r, "kvm", v -> "kvm." + (r.nextBoolean() ? msrs(v.getKvmBuilder(), r)
                    : mutate(v.getKvmBuilder(), r, false)));
            case 4 -> vcpu(f, r, "events", v -> "kvm.events." + mutate(v.getKvmBuilder().getEventsBuilder(), r, false));
            case 5 -> vcpu(f, r, "regs", v -> "cpu.regs." + mutate(v.getCpuBuilder().getRegsBuilder(), r, false));
            case 6 -> vcpu(f, r, "vcpu", v -> mutate(v, r, true));
            case 7 -> cpuid(f, r);
            case 8 -> chunkOffset(f, r);
            case 9, 10 -> editLowMemory(f, r);
            default -> queued(f, r);
        };
    }

    /** Edits of a version 3 capsule, whose vCPUs are in KVM's terms: the reader maps them through the guest model. */
    private static String editVersion3(List<CapsuleFrame> f, Random r) {
        return switch (r.nextInt(8)) {
            case 0 -> header(f, r);
            case 1 -> vcpu(f, r, "sregs.segment", v -> {
                var s = v.getSregsBuilder();
                String[] names = {"cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt"};
                String name = names[r.nextInt(names.length)];
                return "sregs." + name + "." + mutate((Message.Builder) s.getFieldBuilder(
                        s.getDescriptorForType().findFieldByName(name)), r, false);
            });
            case 2 -> vcpu(f, r, "sregs", v -> "sregs." + mutate(v.getSregsBuilder(), r, false));
            case 3 -> vcpu(f, r, "msrs", v -> msrs(v, r));
            case 4 -> vcpu(f, r, "events", v -> "events." + mutate(v.getEventsBuilder(), r, false));
            case 5 -> vcpu(f, r, "regs", v -> "regs." + mutate(v.getRegsBuilder(), r, false));
            case 6 -> vcpu(f, r, "vcpu", v -> mutate(v, r, true));
            default -> editLowMemory(f, r);
        };
    }

    private static String header(List<CapsuleFrame> f, Random r) {
        CapsuleHeader.Builder h = f.get(0).getHeader().toBuilder();
        String e = "header." + mutate(h, r, false);
        f.set(0, CapsuleFrame.newBuilder().setHeader(h).build());
        return e;
    }

    /** Identity, clock, memory size, or any other field of the machine state. */
    private static String state(List<CapsuleFrame> f, Random r) {
        MachineState.Builder s = f.get(1).getState().toBuilder();
        String e = "state." + mutate(s, r, true);
        f.set(1, CapsuleFrame.newBuilder().setState(s).build());
        return e;
    }

    private static String vcpu(List<CapsuleFrame> f, Random r, String what,
            java.util.function.Function<VcpuState.Builder, String> change) {
        MachineState.Builder s = f.get(1).getState().toBuilder();
        String e = "vcpus[0]." + change.apply(s.getVcpusBuilder(0));
        f.set(1, CapsuleFrame.newBuilder().setState(s).build());
        return e;
    }

    private static String msrs(io.vmfork.proto.KvmCpuPart.Builder v, Random r) {
        int op = r.nextInt(4);
        if (op == 0 || v.getMsrsCount() == 0) {
            int index = MSRS[r.nextInt(MSRS.length)];
            long value = interestingLong(r, 0);
            v.addMsrs(Msr.newBuilder().setIndex(index).setValue(value));
            return String.format("msrs += 0x%x=0x%x", index, value);
        }
        int i = r.nextInt(v.getMsrsCount());
        return switch (op) {
            case 1 -> {
                v.removeMsrs(i);
                yield "msrs -= [" + i + "]";
            }
            case 2 -> {
                v.addMsrs(v.getMsrs(i));
                yield "msrs += copy of [" + i + "]";
            }
            default -> {
                long value = interestingLong(r, v.getMsrs(i).getValue());
                v.setMsrs(i, v.getMsrs(i).toBuilder().setValue(value));
                yield String.format("msrs[%d] (0x%x) = 0x%x", i, v.getMsrs(i).getIndex(), value);
            }
        };
    }

    private static String msrs(VcpuState.Builder v, Random r) {
        int op = r.nextInt(4);
        if (op == 0 || v.getMsrsCount() == 0) {
            int index = MSRS[r.nextInt(MSRS.length)];
            long value = interestingLong(r, 0);
            v.addMsrs(Msr.newBuilder().setIndex(index).setValue(value));
            return String.format("msrs += 0x%x=0x%x", index, value);
        }
        int i = r.nextInt(v.getMsrsCount());
        return switch (op) {
            case 1 -> {
                v.removeMsrs(i);
                yield "msrs -= [" + i + "]";
            }
            case 2 -> {
                v.addMsrs(v.getMsrs(i));
                yield "msrs += copy of [" + i + "]";
            }
            default -> {
                long value = interestingLong(r, v.getMsrs(i).getValue());
                v.setMsrs(i, v.getMsrs(i).toBuilder().setValue(value));
                yield String.format("msrs[%d] (0x%x) = 0x%x", i, v.getMsrs(i).getIndex(), value);
            }
        };
    }

    private static String cpuid(List<CapsuleFrame> f, Random r) {
        CapsuleHeader.Builder h = f.get(0).getHeader().toBuilder();
        MachineState.Builder s = f.get(1).getState().toBuilder();
        int i = r.nextInt(h.getRequiredCpuidCount());
        CpuidEntry.Builder e = h.getRequiredCpuid(i).toBuilder();
        String m = mutate(e, r, false);
        h.setRequiredCpuid(i, e);
        boolean both = r.nextInt(4) != 0;
        if (both) {
            s.setCpuid(i, e);
        }
        f.set(0, CapsuleFrame.newBuilder().setHeader(h).build());
        f.set(1, CapsuleFrame.newBuilder().setState(s).build());
        return "cpuid[" + i + "]." + m + (both ? " (header and state)" : " (header only)");
    }

    private static List<Integer> chunks(List<CapsuleFrame> f) {
        List<Integer> out = new ArrayList<>();
        for (int i = 0; i < f.size(); i++) {
            if (f.get(i).getKindCase() == CapsuleFrame.KindCase.CHUNK) {
                out.add(i);
            }
        }
        return out;
    }

    private static String chunkOffset(List<CapsuleFrame> f, Random r) {
        List<Integer> c = chunks(f);
        int i = c.get(r.nextInt(c.size()));
        MemoryChunk ch = f.get(i).getChunk();
        long offset = switch (r.nextInt(4)) {
            case 0 -> ch.getOffset() + 4096;
            case 1 -> ch.getOffset() - 4096;
            case 2 -> 4096L * r.nextInt(0x200);
            default -> interestingLong(r, ch.getOffset());
        };
        f.set(i, CapsuleFrame.newBuilder().setChunk(ch.toBuilder().setOffset(offset)).build());
        return String.format("chunk@0x%x.offset = 0x%x", ch.getOffset(), offset);
    }

    /** Bytes below 0x200000: page tables, boot info, or a new chunk where none was. */
    private static String editLowMemory(List<CapsuleFrame> f, Random r) {
        List<Integer> low = new ArrayList<>();
        for (int i : chunks(f)) {
            // Chunks with bytes to flip (a delta's zero runs carry none).
            if (f.get(i).getChunk().getOffset() < 0x200000 && !f.get(i).getChunk().getData().isEmpty()) {
                low.add(i);
            }
        }
        if (r.nextInt(3) == 0 || low.isEmpty()) {
            long offset = 4096L * r.nextInt(0x200);
            byte[] page = new byte[4096];
            r.nextBytes(page);
            // Into its place in ascending order, if it overlaps nothing; else the reader refuses the order.
            int at = 2;
            while (at < f.size() - 1 && f.get(at).getChunk().getOffset() < offset) {
                at++;
            }
            f.add(at, CapsuleFrame.newBuilder().setChunk(MemoryChunk.newBuilder().setOffset(offset)
                    .setData(ByteString.copyFrom(page))).build());
            return String.format("chunk += 0x%x (random page)", offset);
        }
        int i = low.get(r.nextInt(low.size()));
        MemoryChunk ch = f.get(i).getChunk();
        byte[] d = ch.getData().toByteArray();
        int flips = 1 + r.nextInt(8);
        StringBuilder where = new StringBuilder();
        for (int k = 0; k < flips; k++) {
            int at = r.nextInt(4) == 0 ? r.nextInt(d.length) : r.nextInt(Math.min(d.length, 64)) + 4096 * r.nextInt(
                    Math.max(1, d.length / 4096));
            at = Math.min(at, d.length - 1);
            d[at] ^= (byte) (1 << r.nextInt(8));
            where.append(String.format(" 0x%x", ch.getOffset() + at));
        }
        f.set(i, CapsuleFrame.newBuilder().setChunk(ch.toBuilder().setData(ByteString.copyFrom(d))).build());
        return "low memory bits flipped at" + where;
    }

    private static String queued(List<CapsuleFrame> f, Random r) {
        MachineState.Builder s = f.get(1).getState().toBuilder();
        var d = s.getDevicesBuilder();
        String e;
        switch (r.nextInt(5)) {
            case 0 -> {
                int n = vmm.settings().maxQueuedRequests() + 1;
                for (int i = 0; i < n; i++) {
                    d.addQueuedRequests(ByteString.copyFromUtf8("sum"));
                }
                e = "queued += " + n + " requests";
            }
            case 1 -> {
                d.addQueuedRequests(ByteString.copyFrom(new byte[vmm.settings().maxMessageBytes() + 1]));
                e = "queued += one request over max-message";
            }
            case 2 -> {
                d.addQueuedRequests(ByteString.copyFromUtf8("sum"));
                e = "queued += sum";
            }
            default -> e = "devices." + mutate(d, r, false);
        }
        f.set(1, CapsuleFrame.newBuilder().setState(s).build());
        return e;
    }

    // ---------------------------------------------------------------- schema-driven mutation

    /** Changes one field of {@code b}, chosen through its descriptor; {@code deep} may descend into sub-messages. */
    private static String mutate(Message.Builder b, Random r, boolean deep) {
        List<FieldDescriptor> fields = b.getDescriptorForType().getFields();
        FieldDescriptor f = fields.get(r.nextInt(fields.size()));
        String name = f.getName();
        if (f.getJavaType() == FieldDescriptor.JavaType.MESSAGE) {
            if (f.isRepeated()) {
                int count = b.getRepeatedFieldCount(f);
                if (count > 0 && r.nextBoolean()) {
                    b.addRepeatedField(f, b.getRepeatedField(f, r.nextInt(count)));
                    return name + " += copy";
                }
                if (count > 0) {
                    return name + "[0]." + mutate(b.getRepeatedFieldBuilder(f, 0), r, false);
                }
                return name + " (empty, unchanged)";
            }
            if (!deep && r.nextInt(4) != 0) {
                return mutate(b, r, deep);
            }
            return name + "." + mutate(b.getFieldBuilder(f), r, false);
        }
        if (f.isRepeated()) {
            int count = b.getRepeatedFieldCount(f);
            if (count > 0 && r.nextBoolean()) {
                int i = r.nextInt(count);
                Object v = scalar(f, b.getRepeatedField(f, i), r);
                b.setRepeatedField(f, i, v);
                return name + "[" + i + "] = " + show(v);
            }
            b.addRepeatedField(f, scalar(f, null, r));
            return name + " += one";
        }
        Object v = scalar(f, b.getField(f), r);
        b.setField(f, v);
        return name + " = " + show(v);
    }

    private static Object scalar(FieldDescriptor f, Object old, Random r) {
        return switch (f.getJavaType()) {
            case LONG -> interestingLong(r, old instanceof Long l ? l : 0);
            case INT -> (int) interestingLong(r, old instanceof Integer i ? i : 0);
            case BOOLEAN -> !(old instanceof Boolean b && b);
            case STRING -> r.nextBoolean() ? "" : "x".repeat(r.nextInt(300));
            case ENUM -> {
                if (old == null) {
                    yield f.getEnumType().getValues().get(0);
                }
                var values = f.getEnumType().getValues();
                yield values.get(r.nextInt(values.size()));
            }
            case BYTE_STRING -> {
                byte[] d = old == null ? new byte[0] : ((ByteString) old).toByteArray();
                if (d.length > 0 && r.nextInt(3) != 0) {
                    int at = r.nextInt(4) == 0 ? 24 + r.nextInt(4) : r.nextInt(d.length);
                    at = Math.min(at, d.length - 1);
                    d[at] ^= (byte) (1 << r.nextInt(8));
                    yield ByteString.copyFrom(d);
                }
                yield ByteString.copyFrom(new byte[r.nextInt(3) == 0 ? 0 : r.nextInt(8192)]);
            }
            default -> old;
        };
    }

    private static long interestingLong(Random r, long old) {
        return switch (r.nextInt(12)) {
            case 0 -> 0;
            case 1 -> 1;
            case 2 -> -1;
            case 3 -> old ^ (1L << r.nextInt(64));
            case 4 -> old + 1;
            case 5 -> old - 1;
            case 6 -> 3;
            case 7 -> 0x1000;
            case 8 -> 0x200000;
            case 9 -> 1L << 47;
            case 10 -> Long.MIN_VALUE;
            default -> r.nextLong();
        };
    }

    private static String show(Object v) {
        return v instanceof Long l ? "0x" + Long.toHexString(l) : v instanceof Integer i ? "0x" + Integer.toHexString(i)
                : v instanceof ByteString b ? b.size() + " bytes" : String.valueOf(v);
    }
}
