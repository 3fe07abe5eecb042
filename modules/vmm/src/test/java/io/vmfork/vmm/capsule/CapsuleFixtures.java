package io.vmfork.vmm.capsule;

import com.google.protobuf.CodedInputStream;
import com.google.protobuf.CodedOutputStream;
import io.vmfork.proto.CapsuleFrame;
import io.vmfork.proto.CapsuleTrailer;
import io.vmfork.vmm.VmIdentity;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.arch.KvmCpuPart;
import io.vmfork.vmm.arch.SegmentState;
import io.vmfork.vmm.arch.SregsState;
import io.vmfork.vmm.state.DeviceState;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.MemorySource;
import io.vmfork.vmm.state.VcpuState;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.invoke.MethodHandles;
import java.lang.invoke.VarHandle;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.TreeMap;
import java.util.function.LongPredicate;

/** Realistic states, synthetic guest RAM, a recording sink and capsule surgery for the capsule tests. */
final class CapsuleFixtures {
    static final int PAGE = CapsuleFormat.PAGE_SIZE;
    static final long MIB = 1 << 20;
    static final long GIB = 1L << 30;
    static final int KVM_API = 12;
    static final long HOST_ID = 7;
    static final String HOST_NAME = "node-a";
    private static final VarHandle LONG_LE = MethodHandles.byteArrayViewVarHandle(long[].class, ByteOrder.LITTLE_ENDIAN);

    private CapsuleFixtures() {
    }

    // ---------------------------------------------------------------- cpuid

    /** A kvm_cpuid_entry2 array being built: (function, index, flags, eax, ebx, ecx, edx). */
    static final class CpuidBuilder {
        private final List<int[]> entries = new ArrayList<>();

        CpuidBuilder add(int function, int index, int flags, int eax, int ebx, int ecx, int edx) {
            entries.add(new int[] {function, index, flags, eax, ebx, ecx, edx});
            return this;
        }

        /** Clears {@code bit} of register {@code reg} (0=eax..3=edx) of leaf function/index. */
        CpuidBuilder clear(int function, int index, int reg, int bit) {
            for (int[] e : entries) {
                if (e[0] == function && e[1] == index) {
                    e[3 + reg] &= ~(1 << bit);
                }
            }
            return this;
        }

        CpuidBuilder set(int function, int index, int reg, int bit) {
            for (int[] e : entries) {
                if (e[0] == function && e[1] == index) {
                    e[3 + reg] |= 1 << bit;
                }
            }
            return this;
        }

        byte[] bytes() {
            ByteBuffer b = ByteBuffer.allocate(entries.size() * CapsuleFormat.CPUID_ENTRY_BYTES)
                    .order(ByteOrder.LITTLE_ENDIAN);
            for (int[] e : entries) {
                for (int v : e) {
                    b.putInt(v);
                }
                b.putInt(0).putInt(0).putInt(0);
            }
            return b.array();
        }
    }

    private static int vendorWord(String s, int i) {
        return ByteBuffer.wrap(s.getBytes(StandardCharsets.US_ASCII), i * 4, 4).order(ByteOrder.LITTLE_ENDIAN).getInt();
    }

    /** A guest CPUID as a VMM on a recent Intel server would set it (a subset of the host's). */
    static CpuidBuilder guestCpuid() {
        String v = "GenuineIntel";
        return new CpuidBuilder()
                .add(0, 0, 0, 0xd, vendorWord(v, 0), vendorWord(v, 2), vendorWord(v, 1))
                // leaf 1: sse3 pclmulqdq ssse3 fma cx16 sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c
                // rdrand hypervisor; edx: the usual x86-64 baseline.
                .add(1, 0, 0, 0x000906ea, 0x00010800, 0xf6f83203, 0x178bfbff)
                // leaf 7.0: fsgsbase bmi1 avx2 smep bmi2 erms invpcid rdseed adx smap clflushopt; ecx: umip;
                // edx: md_clear.
                .add(7, 0, CpuFeatures.FLAG_SIGNIFICANT_INDEX, 0, 0x009c07a9, 0x00000004, 0x00000400)
                .add(7, 1, CpuFeatures.FLAG_SIGNIFICANT_INDEX, 0, 0, 0, 0)
                // leaf 0xD: x87 sse avx; xsaveopt xsavec xgetbv1.
                .add(0xd, 0, CpuFeatures.FLAG_SIGNIFICANT_INDEX, 0x7, 0x340, 0x340, 0)
                .add(0xd, 1, CpuFeatures.FLAG_SIGNIFICANT_INDEX, 0x7, 0, 0, 0)
                .add(0x80000000, 0, 0, 0x80000008, 0, 0, 0)
                // lahf_lm abm 3dnowprefetch; syscall nx pdpe1gb rdtscp lm.
                .add(0x80000001, 0, 0, 0, 0, 0x00000121, 0x2c100800);
    }

    /** What KVM_GET_SUPPORTED_CPUID says on that host: the guest's bits and more (avx512f, sha_ni, …). */
    static CpuidBuilder hostCpuid() {
        return guestCpuid()
                .set(7, 0, CpuFeatures.EBX, 16).set(7, 0, CpuFeatures.EBX, 29).set(7, 0, CpuFeatures.EBX, 30)
                .set(7, 0, CpuFeatures.ECX, 1).set(7, 0, CpuFeatures.EDX, 4)
                .set(0xd, 0, CpuFeatures.EAX, 5).set(0xd, 0, CpuFeatures.EAX, 6).set(0xd, 0, CpuFeatures.EAX, 7);
    }

    /** A host whose KVM offers {@code cpuid}; its CPU, as a guest observes it, has all of hostCpuid(). */
    static HostPlatform host(byte[] cpuid) {
        return new HostPlatform(9, "node-b", KVM_API, cpuid, 16 * GIB, 8,
                java.util.EnumSet.allOf(CpuState.FpuFormat.class)).withObserved(hostCpuid().bytes(), 0xe7);
    }

    // ---------------------------------------------------------------- state

    static SegmentState segment(long base, int selector, int type, int dpl, int l) {
        return new SegmentState(base, 0xffffffff, selector, type, 1, dpl, l == 1 ? 0 : 1, 1, l, 1, 0, 0);
    }

    static SregsState sregs(int vcpu) {
        List<SegmentState> segs = List.of(
                segment(0, 0x33, 0xb, 3, 1),                        // cs: 64-bit user code
                segment(0, 0x2b, 0x3, 3, 0),                        // ds
                segment(0, 0x2b, 0x3, 3, 0),                        // es
                segment(0x7fff_f7ff_e740L + vcpu * 0x1000L, 0, 0x3, 3, 0), // fs: the thread pointer
                segment(0xffff_8880_0000_0000L, 0, 0x3, 0, 0),     // gs: a kernel-half base (negative long)
                segment(0, 0x2b, 0x3, 3, 0),                        // ss
                new SegmentState(0xffff_fe00_0000_3000L, 0x67, 0x40, 0xb, 1, 0, 0, 0, 0, 0, 0, 0), // tr
                new SegmentState(0, 0xffff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1)); // ldt: unusable
        return new SregsState(segs, 0xffff_fe00_0000_1000L, 0x7f, 0xffff_fe00_0000_0000L, 0xfff,
                0x8005_0033L, 0x7fff_dead_b000L, 0x1000, 0x3406e0, 0, 0xd01, 0xfee0_0900L,
                new long[] {0, 1L << 32, 0, Long.MIN_VALUE});
    }

    static byte[] events(int vcpu) {
        ByteBuffer b = ByteBuffer.allocate(StateCodec.VCPU_EVENTS_BYTES).order(ByteOrder.LITTLE_ENDIAN);
        b.put(0, (byte) 1).put(1, (byte) 14).put(2, (byte) 1).put(3, (byte) 0).putInt(4, 0x6);
        b.put(8, (byte) 1).put(9, (byte) 0xec).put(10, (byte) 0).put(11, (byte) 1);
        b.put(12, (byte) 0).put(13, (byte) 1).put(14, (byte) 1);
        b.putInt(16, vcpu).putInt(20, 0x1f);
        b.put(24, (byte) 0).put(25, (byte) 1).put(26, (byte) 0).put(27, (byte) 1).put(28, (byte) 0);
        b.put(55, (byte) 1).putLong(56, 0xffff_ffff_dead_beefL);
        return b.array();
    }

    static VcpuState vcpu(int index, CpuState.FpuFormat format, long seed) {
        Random r = new Random(seed + index);
        long[] regs = new long[CpuState.REGS];
        for (int i = 0; i < regs.length; i++) {
            regs[i] = r.nextLong();
        }
        regs[0] = -1;                          // rax: an error return
        regs[6] = 0x7fff_ffff_e000L;           // rsp
        regs[CpuState.RIP] = 0x40_1234;
        regs[17] = 0x3202;                     // rflags: IF, IOPL 3
        byte[] fpu = new byte[format == CpuState.FpuFormat.XSAVE ? StateCodec.XSAVE_BYTES : StateCodec.FXSAVE_BYTES];
        r.nextBytes(fpu);
        List<SegmentState> seg = sregs(index).segments();
        CpuState cpu = new CpuState(regs, seg.get(3).base(), seg.get(4).base(), format, fpu,
                format == CpuState.FpuFormat.XSAVE ? 0x7 : 0);
        return new VcpuState(index, cpu, kvmPart(index));
    }

    /** A KVM part with every field set, values no vmfork guest has (the codec does not care). */
    static KvmCpuPart kvmPart(int index) {
        List<SegmentState> seg = sregs(index).segments();
        int[] msrIdx = {0x10, 0x174, 0xc000_0080, 0x6e0};
        long[] msrVal = {0x1234_5678_9abcL, 0x10, 0xd01, -2};
        return new KvmCpuPart(List.of(seg.get(1), seg.get(2), withBase(seg.get(3), 0), seg.get(4)),
                0x7fff_dead_b000L, msrIdx, msrVal, events(index), index == 0 ? 0 : 3);
    }

    static SegmentState withBase(SegmentState s, long base) {
        return new SegmentState(base, s.limit(), s.selector(), s.type(), s.present(), s.dpl(), s.db(), s.s(), s.l(),
                s.g(), s.avl(), s.unusable());
    }

    /**
     * vCPU {@code index} as a KVM capture of a vmfork guest has it, within the guest model:
     * a KVM part with the user data segments, IA32_MISC_ENABLE and the TSC, no event
     * (KVM_GET_VCPU_EVENTS' valid flags NMI_PENDING|SHADOW|SMM), RUNNABLE.
     */
    static VcpuState modelVcpu(int index, long seed) {
        Random r = new Random(seed + index);
        long[] regs = new long[CpuState.REGS];
        for (int i = 0; i < regs.length; i++) {
            regs[i] = r.nextLong();
        }
        regs[CpuState.RIP] = 0x40_1234;
        regs[CpuState.RFLAGS] = 0x3202;
        byte[] fpu = new byte[StateCodec.XSAVE_BYTES];
        ByteBuffer.wrap(fpu).order(ByteOrder.LITTLE_ENDIAN).putInt(24, 0x1f80).putLong(512, 0x7);
        CpuState cpu = new CpuState(regs, 0x7fff_f7ff_e740L + index * 0x1000L, 0, CpuState.FpuFormat.XSAVE, fpu, 0x7);
        return new VcpuState(index, cpu, KvmCapsules.part(0x1234_5678_9abcL + index));
    }


    static DeviceState devices() {
        return new DeviceState(123_456_789_012L, List.of("first".getBytes(StandardCharsets.UTF_8), new byte[0],
                new byte[] {0, -1, 127, -128}), false, true);
    }

    static VmIdentity identity() {
        return new VmIdentity(0x0007_0000_0000_002aL, 0x0007_0000_0000_0001L, HOST_ID, 3, -5);
    }

    static MachineState state(long memorySize, int vcpus, CpuState.FpuFormat format) {
        List<VcpuState> v = new ArrayList<>();
        for (int i = 0; i < vcpus; i++) {
            v.add(vcpu(i, format, 42));
        }
        return new MachineState(identity(), memorySize, guestCpuid().bytes(), -987_654_321L, v, devices());
    }

    // ---------------------------------------------------------------- memory

    /**
     * Guest RAM made up on the fly: pages inside the runs hold a pattern derived from their
     * index unless {@code zero} says they are all zero (one in a few pages holds a single
     * non-zero byte at its very end, which must not be taken for a zero page). A read
     * outside the runs fails, to prove the writer never reads there.
     */
    static final class SyntheticMemory implements MemorySource {
        private final long size;
        private final List<Run> runs;
        private final LongPredicate zero;
        long bytesRead;
        Runnable onRead = () -> { };

        SyntheticMemory(long size, List<Run> runs, LongPredicate zeroPage) {
            this.size = size;
            this.runs = List.copyOf(runs);
            this.zero = zeroPage;
        }

        @Override
        public long size() {
            return size;
        }

        @Override
        public List<Run> dataRuns() {
            return runs;
        }

        boolean inRuns(long page) {
            long a = page * PAGE;
            for (Run r : runs) {
                if (a >= r.offset() && a < r.offset() + r.length()) {
                    return true;
                }
            }
            return false;
        }

        /** Whether page {@code page} is zero. */
        boolean isZero(long page) {
            return !inRuns(page) || zero.test(page);
        }

        /** The bytes of page {@code page}. */
        void fill(long page, byte[] dst, int off) {
            if (isZero(page)) {
                java.util.Arrays.fill(dst, off, off + PAGE, (byte) 0);
                return;
            }
            if (page % 7 == 3) {
                java.util.Arrays.fill(dst, off, off + PAGE, (byte) 0);
                dst[off + PAGE - 1] = (byte) (page | 1);
                return;
            }
            long x = page * 0x9E37_79B9_7F4A_7C15L;
            for (int i = 0; i < PAGE; i += 8) {
                x ^= x >>> 33;
                x *= 0xff51_afd7_ed55_8ccdL;
                x ^= x >>> 29;
                x += 0x632B_E59B_D9B4_E019L;
                LONG_LE.set(dst, off + i, x);
            }
        }

        @Override
        public void read(long offset, byte[] dst, int dstOff, int length) {
            if (offset % PAGE != 0 || length % PAGE != 0) {
                throw new AssertionError("unaligned read " + offset + "+" + length);
            }
            onRead.run();
            for (int p = 0; p < length; p += PAGE) {
                long page = (offset + p) / PAGE;
                if (!inRuns(page)) {
                    throw new AssertionError("read outside the data runs: page " + page);
                }
                fill(page, dst, dstOff + p);
            }
            bytesRead += length;
        }

        /** Pages inside runs that are not zero. */
        long nonZeroPages() {
            long n = 0;
            for (Run r : runs) {
                for (long p = r.offset() / PAGE; p < (r.offset() + r.length()) / PAGE; p++) {
                    n += zero.test(p) ? 0 : 1;
                }
            }
            return n;
        }
    }

    /** A MemorySink that keeps every page written, checking alignment and order. */
    static final class PageSink implements MemorySink {
        final TreeMap<Long, byte[]> pages = new TreeMap<>();
        long writes;
        long bytes;
        int largestWrite;

        @Override
        public void write(long offset, byte[] src, int off, int len) {
            if (offset % PAGE != 0 || len % PAGE != 0) {
                throw new AssertionError("unaligned write");
            }
            writes++;
            bytes += len;
            largestWrite = Math.max(largestWrite, len);
            for (int p = 0; p < len; p += PAGE) {
                if (pages.put((offset + p) / PAGE, java.util.Arrays.copyOfRange(src, off + p, off + p + PAGE)) != null) {
                    throw new AssertionError("page written twice: " + (offset + p));
                }
            }
        }
    }

    // ---------------------------------------------------------------- capsules

    static CapsuleLimits limits() {
        return CapsuleLimits.defaults(16 * GIB);
    }

    static byte[] write(MachineState state, MemorySource memory, CapsuleLimits limits) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        CapsuleWriter.create(limits).write(out, state, memory, HOST_ID, HOST_NAME, KVM_API);
        return out.toByteArray();
    }

    static CapsuleContents read(byte[] capsule, MemorySink sink, CapsuleLimits limits, HostPlatform host)
            throws IOException {
        return CapsuleReader.create(limits).read(new ByteArrayInputStream(capsule), sink, host);
    }

    /** Byte offsets at which each frame starts (its length prefix), then the capsule's length. */
    static List<Integer> frameBoundaries(byte[] capsule) throws IOException {
        List<Integer> out = new ArrayList<>();
        int pos = CapsuleFormat.FILE_MAGIC.length;
        while (pos < capsule.length) {
            out.add(pos);
            CodedInputStream in = CodedInputStream.newInstance(capsule, pos, capsule.length - pos);
            int len = in.readRawVarint32();
            pos += in.getTotalBytesRead() + len;
        }
        out.add(pos);
        return out;
    }

    /** The frames of a well-formed capsule. */
    static List<CapsuleFrame> frames(byte[] capsule) throws IOException {
        List<CapsuleFrame> out = new ArrayList<>();
        List<Integer> b = frameBoundaries(capsule);
        for (int i = 0; i + 1 < b.size(); i++) {
            CodedInputStream in = CodedInputStream.newInstance(capsule, b.get(i), b.get(i + 1) - b.get(i));
            int len = in.readRawVarint32();
            out.add(CapsuleFrame.parseFrom(in.readRawBytes(len)));
        }
        return out;
    }

    /**
     * Reassembles frames into a capsule whose trailer digest is valid for the new bytes, so
     * that only the reader's other checks can refuse what was changed. The last frame
     * must be a trailer; its counts are kept as given.
     */
    static byte[] assemble(List<CapsuleFrame> frames) throws Exception {
        ByteArrayOutputStream body = new ByteArrayOutputStream();
        body.write(CapsuleFormat.FILE_MAGIC);
        for (CapsuleFrame f : frames.subList(0, frames.size() - 1)) {
            f.writeDelimitedTo(body);
        }
        byte[] digest = MessageDigest.getInstance("SHA-256").digest(body.toByteArray());
        CapsuleTrailer t = frames.get(frames.size() - 1).getTrailer().toBuilder()
                .setSha256(com.google.protobuf.ByteString.copyFrom(digest)).build();
        CapsuleFrame.newBuilder().setTrailer(t).build().writeDelimitedTo(body);
        return body.toByteArray();
    }

    /** Reassembles frames as they are, trailer included, so its digest is stale if anything changed. */
    static byte[] assembleKeepingTrailer(List<CapsuleFrame> frames) throws IOException {
        ByteArrayOutputStream body = new ByteArrayOutputStream();
        body.write(CapsuleFormat.FILE_MAGIC);
        for (CapsuleFrame f : frames) {
            f.writeDelimitedTo(body);
        }
        return body.toByteArray();
    }

    /** A raw frame with a length prefix, for hand-made streams. */
    static byte[] rawFrame(byte[] payload) throws IOException {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        CodedOutputStream c = CodedOutputStream.newInstance(out);
        c.writeUInt32NoTag(payload.length);
        c.writeRawBytes(payload);
        c.flush();
        return out.toByteArray();
    }
}
