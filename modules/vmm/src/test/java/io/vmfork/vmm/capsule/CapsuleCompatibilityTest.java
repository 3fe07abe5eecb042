package io.vmfork.vmm.capsule;

import static io.vmfork.vmm.capsule.CapsuleFixtures.*;
import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.proto.CapsuleHeader;
import io.vmfork.vmm.arch.CpuState;
import io.vmfork.vmm.state.MachineState;
import io.vmfork.vmm.state.MemorySource.Run;
import java.io.ByteArrayInputStream;
import java.io.FilterInputStream;
import java.io.InputStream;
import java.util.EnumSet;
import java.util.List;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;

/** A host refuses a capsule it cannot run, naming every requirement it does not meet, right after the header. */
class CapsuleCompatibilityTest {
    private static final long SIZE = 4 * MIB;
    private static byte[] capsule;
    private static CapsuleHeader header;

    @BeforeAll
    static void makeCapsule() throws Exception {
        SyntheticMemory mem = new SyntheticMemory(SIZE, List.of(new Run(0, SIZE)), p -> false);
        capsule = write(state(SIZE, 2, CpuState.FpuFormat.XSAVE), mem, limits());
        header = frames(capsule).get(0).getHeader();
    }

    private static CapsuleIncompatibleException refusedBy(HostPlatform host) {
        return assertThrows(CapsuleIncompatibleException.class, () -> CapsuleCompatibility.check(header, host));
    }

    private static void assertMentions(Exception e, String... parts) {
        for (String p : parts) {
            assertTrue(e.getMessage().contains(p), "'" + p + "' not in: " + e.getMessage());
        }
    }

    @Test
    void aHostThatOffersEverythingAccepts() throws Exception {
        HostPlatform host = host(hostCpuid().bytes());
        CapsuleCompatibility.check(header, host);
        assertTrue(CapsuleCompatibility.mismatches(header, host).isEmpty());
        PageSink sink = new PageSink();
        read(capsule, sink, limits(), host);
        assertEquals(SIZE / PAGE, sink.pages.size());
    }

    @Test
    void aMissingCpuFeatureIsRefusedByName() {
        CapsuleIncompatibleException e = refusedBy(host(hostCpuid().clear(7, 0, CpuFeatures.EBX, 5).bytes()));
        assertMentions(e, "node-a", "node-b", "CPU features missing", "avx2 (CPUID.7.0:EBX[5])");
        assertEquals(1, e.mismatches().size());
    }

    @Test
    void everyMissingFeatureIsNamedInEveryCheckedRegister() {
        byte[] cpuid = hostCpuid()
                .clear(1, 0, CpuFeatures.ECX, 20)          // sse4_2
                .clear(1, 0, CpuFeatures.ECX, 28)          // avx
                .clear(1, 0, CpuFeatures.EDX, 26)          // sse2
                .clear(7, 0, CpuFeatures.EBX, 0)           // fsgsbase
                .clear(7, 0, CpuFeatures.EBX, 8)           // bmi2
                .clear(7, 0, CpuFeatures.ECX, 2)           // umip
                .clear(7, 0, CpuFeatures.EDX, 10)          // md_clear
                .clear(0xd, 0, CpuFeatures.EAX, 2)         // xsave state avx
                .clear(0xd, 1, CpuFeatures.EAX, 0)         // xsaveopt
                .clear(0x80000001, 0, CpuFeatures.ECX, 5)  // abm
                .clear(0x80000001, 0, CpuFeatures.EDX, 27) // rdtscp
                .bytes();
        CapsuleIncompatibleException e = refusedBy(host(cpuid));
        assertMentions(e, "sse4_2 (CPUID.1.0:ECX[20])", "avx (CPUID.1.0:ECX[28])", "sse2 (CPUID.1.0:EDX[26])",
                "fsgsbase", "bmi2", "umip (CPUID.7.0:ECX[2])", "md_clear (CPUID.7.0:EDX[10])",
                "xsave state avx (CPUID.0xD.0:EAX[2])", "xsaveopt", "abm (CPUID.0x80000001.0:ECX[5])",
                "rdtscp (CPUID.0x80000001.0:EDX[27])");
    }

    @Test
    void aBitWithoutANameIsShownByItsPlace() {
        byte[] guest = guestCpuid().set(7, 0, CpuFeatures.EDX, 0).bytes();
        List<String> missing = CpuFeatures.missing(guest, hostCpuid().bytes());
        assertEquals(List.of("CPUID.7.0:EDX[0]"), missing);
    }

    @Test
    void aLeafTheHostLacksEntirelyMeansAllItsFeaturesAreMissing() {
        CpuidBuilder noLeaf7 = new CpuidBuilder();
        byte[] host = hostCpuid().bytes();
        java.nio.ByteBuffer b = java.nio.ByteBuffer.wrap(host).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        for (int off = 0; off < host.length; off += CapsuleFormat.CPUID_ENTRY_BYTES) {
            if (b.getInt(off) != 7) {
                noLeaf7.add(b.getInt(off), b.getInt(off + 4), b.getInt(off + 8), b.getInt(off + 12),
                        b.getInt(off + 16), b.getInt(off + 20), b.getInt(off + 24));
            }
        }
        assertMentions(refusedBy(host(noLeaf7.bytes())), "avx2", "smap", "bmi1");
    }

    /**
     * A capsule captured on a PVM host, where the guest read the host CPU's own CPUID
     * (avx512f and its XSAVE components) although KVM's list that the VMM set lacks them.
     */
    private static byte[] capsuleFromAPvmHost() throws Exception {
        SyntheticMemory mem = new SyntheticMemory(SIZE, List.of(new Run(0, SIZE)), p -> false);
        HostPlatform source = host(guestCpuid().bytes()).withObserved(hostCpuid().bytes(), 0xe7);
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        CapsuleWriter.create(limits()).write(out, state(SIZE, 1, CpuState.FpuFormat.XSAVE), mem, source);
        return out.toByteArray();
    }

    @Test
    void theHeaderRecordsWhatTheGuestCouldObserve() throws Exception {
        CapsuleHeader h = frames(capsuleFromAPvmHost()).get(0).getHeader();
        assertEquals(CapsuleFormat.CURRENT_VERSION, h.getFormatVersion());
        assertEquals(0xe7, h.getObservedXcr0());
        byte[] observed = StateCodec.decodeCpuid(h.getObservedCpuidList());
        assertEquals(1 << 16, CpuFeatures.value(observed, 7, 0, CpuFeatures.EBX) & (1 << 16), "avx512f observed");
        assertEquals(0, CpuFeatures.value(StateCodec.decodeCpuid(h.getRequiredCpuidList()), 7, 0, CpuFeatures.EBX)
                & (1 << 16), "though not in the CPUID the VMM set");
    }

    @Test
    void aHostLackingAFeatureTheGuestCouldObserveIsRefusedByName() throws Exception {
        byte[] capsule = capsuleFromAPvmHost();
        CapsuleHeader h = frames(capsule).get(0).getHeader();
        // KVM on the target offers all the guest was started with; its CPU lacks AVX-512.
        HostPlatform target = host(hostCpuid().bytes()).withObserved(
                hostCpuid().clear(7, 0, CpuFeatures.EBX, 16).clear(0xd, 0, CpuFeatures.EAX, 5)
                        .clear(0xd, 0, CpuFeatures.EAX, 6).clear(0xd, 0, CpuFeatures.EAX, 7).bytes(), 0x7);
        CapsuleIncompatibleException e = assertThrows(CapsuleIncompatibleException.class,
                () -> CapsuleCompatibility.check(h, target));
        assertMentions(e, "could observe where it was captured", "avx512f (CPUID.7.0:EBX[16])",
                "xsave state opmask (CPUID.0xD.0:EAX[5])", "XCR0 0xe7", "host (XCR0 0x7)",
                "xsave state opmask (XCR0[5])", "xsave state hi16_zmm (XCR0[7])");
        assertEquals(2, e.mismatches().size(), e.mismatches().toString());
        assertThrows(CapsuleIncompatibleException.class, () -> read(capsule, new PageSink(), limits(), target));
        // The same host with AVX-512 takes it.
        read(capsule, new PageSink(), limits(), host(hostCpuid().bytes()).withObserved(hostCpuid().bytes(), 0xe7));
    }

    @Test
    void aHostConfiguredToHideAFeatureRefusesCapsulesThatUseIt() throws Exception {
        byte[] capsule = capsuleFromAPvmHost();
        CapsuleHeader h = frames(capsule).get(0).getHeader();
        HostPlatform full = host(hostCpuid().bytes()).withObserved(hostCpuid().bytes(), 0xe7);
        CapsuleCompatibility.check(h, full);
        CapsuleLimits configured = CapsuleLimits.create(com.typesafe.config.ConfigFactory.parseString(
                "vmfork.capsule.hide-cpu-features = [avx512f, \"xsave state opmask\"]\n"
                        + "vmfork.capsule.compression = auto\nvmfork.vmm.memory.max = 1G"));
        assertEquals(List.of("avx512f", "xsave state opmask"), configured.hiddenCpuFeatures());
        assertEquals(ChunkCompression.AUTO, configured.compression());
        HostPlatform hiding = full.hiding(configured.hiddenCpuFeatures());
        assertEquals(0xe7 & ~0x20, hiding.observedXcr0());
        CapsuleIncompatibleException e = assertThrows(CapsuleIncompatibleException.class,
                () -> CapsuleCompatibility.check(h, hiding));
        assertMentions(e, "avx512f (CPUID.7.0:EBX[16])", "xsave state opmask (XCR0[5])");
        IllegalArgumentException bad = assertThrows(IllegalArgumentException.class,
                () -> CapsuleLimits.create(com.typesafe.config.ConfigFactory.parseString(
                        "vmfork.capsule.hide-cpu-features = [avx513]\nvmfork.vmm.memory.max = 1G")));
        assertTrue(bad.getMessage().contains("avx513"), bad.getMessage());
        assertThrows(IllegalArgumentException.class, () -> CapsuleLimits.create(com.typesafe.config.ConfigFactory
                .parseString("vmfork.capsule.compression = zip\nvmfork.vmm.memory.max = 1G")));
    }

    @Test
    void aHeaderWithoutObservedCpuidIsRefusedAVersion3OneIsReadAndVersion2IsTooOld() throws Exception {
        List<io.vmfork.proto.CapsuleFrame> f = frames(capsule);
        CapsuleHeader full = f.get(0).getHeader();
        CapsuleHeader bare = full.toBuilder().clearObservedCpuid().clearObservedXcr0().build();
        f.set(0, io.vmfork.proto.CapsuleFrame.newBuilder().setHeader(bare).build());
        CapsuleFormatException e = assertThrows(CapsuleFormatException.class,
                () -> read(assemble(f), new PageSink(), limits(), host(hostCpuid().bytes())));
        assertMentions(e, "observed_cpuid is missing");
        // The previous version is read (its vCPUs in KVM's terms, which a KVM host wrote within the guest
        // model)...
        MachineState model = new MachineState(identity(), SIZE, guestCpuid().bytes(), 5, List.of(modelVcpu(0, 1),
                modelVcpu(1, 1)), devices());
        List<io.vmfork.proto.CapsuleFrame> v3 = KvmCapsules.frames(frames(write(model,
                new SyntheticMemory(SIZE, List.of(new Run(0, SIZE)), p -> false), limits())));
        CapsuleContents c = read(assemble(v3), new PageSink(), limits(), host(hostCpuid().bytes()));
        assertEquals(model.vcpus(), c.state().vcpus());
        // ...the one before it is not.
        f.set(0, io.vmfork.proto.CapsuleFrame.newBuilder().setHeader(full.toBuilder().setFormatVersion(2)).build());
        assertMentions(assertThrows(CapsuleFormatException.class,
                () -> read(assemble(f), new PageSink(), limits(), host(hostCpuid().bytes()))),
                "format version 2 is older than this reader supports (it reads versions 3 to 4)");
    }

    @Test
    void bitsKvmComputesFromGuestStateAreNotRequirements() {
        byte[] guest = guestCpuid().set(1, 0, CpuFeatures.ECX, 27).set(7, 0, CpuFeatures.ECX, 4).bytes();
        assertEquals(List.of(), CpuFeatures.missing(guest, hostCpuid().bytes()), "osxsave and ospke");
    }

    @Test
    void aKvmApiMismatchIsRefused() {
        HostPlatform h = host(hostCpuid().bytes());
        HostPlatform other = new HostPlatform(h.hostId(), h.hostName(), 13, h.supportedCpuid(), h.maxMemoryBytes(),
                h.maxVcpus(), h.fpuFormats());
        assertMentions(refusedBy(other), "KVM API version 12, host has 13");
    }

    @Test
    void hostLimitsAndFpuFormatAreChecked() {
        HostPlatform h = host(hostCpuid().bytes());
        HostPlatform small = new HostPlatform(h.hostId(), h.hostName(), KVM_API, h.supportedCpuid(), 2 * MIB, 1,
                EnumSet.of(CpuState.FpuFormat.FXSAVE));
        CapsuleIncompatibleException e = refusedBy(small);
        assertEquals(3, e.mismatches().size(), e.mismatches().toString());
        assertMentions(e, "memory size 4194304 bytes is over the host's maximum of 2097152",
                "2 vCPUs is over the host's maximum of 1", "FPU format XSAVE cannot be restored");
    }

    @Test
    void aVendorMismatchIsRefused() {
        byte[] amd = hostCpuid().bytes();
        byte[] name = "AuthenticAMD".getBytes(java.nio.charset.StandardCharsets.US_ASCII);
        // leaf 0 is the first entry: ebx at 16, ecx at 20, edx at 24 hold "Auth" "cAMD" "enti".
        System.arraycopy(name, 0, amd, 16, 4);
        System.arraycopy(name, 8, amd, 20, 4);
        System.arraycopy(name, 4, amd, 24, 4);
        assertMentions(refusedBy(host(amd)), "CPU vendor GenuineIntel, host has AuthenticAMD");
    }

    @Test
    void theReaderRefusesRightAfterTheHeaderBeforeAnyPageIsWritten() {
        long[] consumed = {0};
        InputStream counting = new FilterInputStream(new ByteArrayInputStream(capsule)) {
            @Override
            public int read() throws java.io.IOException {
                int b = super.read();
                consumed[0] += b < 0 ? 0 : 1;
                return b;
            }

            @Override
            public int read(byte[] b, int off, int len) throws java.io.IOException {
                int n = super.read(b, off, len);
                consumed[0] += Math.max(n, 0);
                return n;
            }
        };
        PageSink sink = new PageSink();
        HostPlatform lacking = host(hostCpuid().clear(1, 0, CpuFeatures.ECX, 30).bytes());
        CapsuleIncompatibleException e = assertThrows(CapsuleIncompatibleException.class,
                () -> CapsuleReader.create(limits()).read(counting, sink, lacking));
        assertMentions(e, "rdrand");
        assertEquals(0, sink.writes, "no page was written");
        assertTrue(consumed[0] < capsule.length / 8, "read " + consumed[0] + " of " + capsule.length + " bytes");
    }
}
