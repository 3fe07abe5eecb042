package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import com.typesafe.config.ConfigFactory;
import io.vmfork.proto.CapsuleHeader;
import io.vmfork.vmm.capsule.BaseResolver;
import io.vmfork.vmm.capsule.CapsuleBaseUnknownException;
import io.vmfork.vmm.capsule.CapsuleFormatException;
import io.vmfork.vmm.capsule.CapsuleIncompatibleException;
import io.vmfork.vmm.capsule.CapsuleReader;
import io.vmfork.vmm.capsule.CapsuleStats;
import io.vmfork.vmm.capsule.CapsuleWriter;
import io.vmfork.vmm.capsule.ChunkCompression;
import io.vmfork.vmm.capsule.CpuFeatures;
import io.vmfork.vmm.capsule.HostPlatform;
import io.vmfork.vmm.capsule.ReceivedCapsule;
import io.vmfork.vmm.capsule.StateCodec;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.memory.RuntimeImage;
import io.vmfork.vmm.state.MemorySource;
import io.vmfork.vmm.state.MemorySource.Run;
import io.vmfork.vmm.x86.GuestLayout;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.Test;

/**
 * Incremental images with a real VM (issue 8): a full capsule of snapshot A, received and
 * kept; the guest changes some memory; snapshot B of the same VM; a delta of B against A
 * carries only what changed, and the receiver builds B's image as a layer over its copy
 * of A, from which a clone runs with B's memory. And a host configured to lack a CPU
 * feature the guest could observe refuses the guest's capsule naming it.
 */
class CapsuleDeltaVmTest extends VmmTestBase {
    private static final long MEMORY = 64L << 20;
    private static final byte[] KEY = "vm/a".getBytes(StandardCharsets.UTF_8);

    private static ReceivedCapsule receive(byte[] capsule, BaseResolver bases) throws Exception {
        return CapsuleReader.create(vmm.capsuleLimits()).readImage(new ByteArrayInputStream(capsule),
                "vmfork-received", vmm.hostPlatform(), vmm.guestRules(), bases);
    }

    private static BaseResolver holding(RuntimeImage image, AtomicInteger asked) {
        return key -> {
            asked.incrementAndGet();
            return Arrays.equals(key, KEY) ? image.retain() : null;
        };
    }

    private static byte[] delta(VirtualMachine.Snapshot b, List<Run> changed) throws Exception {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        CapsuleWriter.create(vmm.capsuleLimits()).writeDelta(out, b.state(), b.image(), changed, KEY,
                vmm.hostPlatform());
        return out.toByteArray();
    }

    private static void assertSameMemory(MemorySource want, MemorySource got, long from) {
        byte[] a = new byte[1 << 20];
        byte[] b = new byte[1 << 20];
        for (long off = from; off < want.size(); off += a.length) {
            int n = (int) Math.min(a.length, want.size() - off);
            want.read(off, a, 0, n);
            got.read(off, b, 0, n);
            assertEquals(-1, Arrays.mismatch(a, 0, n, b, 0, n), "memory differs in the MiB at 0x" + Long.toHexString(off));
        }
    }

    @Test
    void aDeltaOfTheChangedPagesGivesACloneWithTheNewerMemory() throws Exception {
        VmmTesting.quiesce(vmm);
        // Threads are not compared here: a first snapshot in this JVM starts the VMM's unmap thread for good.
        int fds = VmmTesting.openFds();
        int vmFds = VmmTesting.vmFds();
        int memfds = VmmTesting.memfds();
        int live = vmm.liveCount();
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("forker"), MEMORY));
        vm.ready().get(30, TimeUnit.SECONDS);
        SnapshotContractTest.idle(vm);
        try (VirtualMachine.Snapshot a = vm.snapshot()) {
            ByteArrayOutputStream full = new ByteArrayOutputStream();
            vmm.writeCapsule(a, full);
            try (ReceivedCapsule ra = receive(full.toByteArray(), null)) {
                assertFalse(ra.contents().isDelta());
                // The guest writes two words of its buffer and one word in each of 256 pages of its heap.
                assertEquals("ok", ForkTest.ask(vm, "write 5 777"));
                assertEquals("ok", ForkTest.ask(vm, "write 300000 4242"));
                assertEquals("touched 1", ForkTest.ask(vm, "touch 1"));
                SnapshotContractTest.idle(vm);
                try (VirtualMachine.Snapshot b = vm.snapshot()) {
                    assertEquals(a.image().lineage(), b.image().lineage(), "one VM, one lineage");
                    List<Run> changed = b.image().changedSince(a.image());
                    long pages = changed.stream().mapToLong(Run::length).sum() / 4096;
                    long dataPages = a.image().dataRuns().stream().mapToLong(Run::length).sum() / 4096;
                    System.out.printf("delta: %d changed pages in %d runs (the guest wrote 258), image %d pages%n",
                            pages, changed.size(), dataPages);
                    assertTrue(pages >= 258 && pages <= 258 + 64, pages + " changed pages for 258 written");

                    byte[] d = delta(b, changed);
                    assertTrue(d.length < (pages + 8) * 4096 + 64 * 1024, "the delta holds the changed pages: "
                            + d.length + " bytes");
                    assertTrue(d.length * 4L < full.size(), d.length + " bytes of delta, full " + full.size());
                    AtomicInteger asked = new AtomicInteger();
                    try (ReceivedCapsule rb = receive(d, holding(ra.image(), asked))) {
                        assertEquals(1, asked.get());
                        assertTrue(rb.contents().isDelta());
                        assertEquals(ra.image().lineage(), rb.image().lineage(), "built over the held image");
                        assertSameMemory(b.image(), rb.image(), GuestLayout.IMAGE_MIN);
                        assertArrayEquals(CapsuleSurgery.lowMemory(ra.image()), CapsuleSurgery.lowMemory(rb.image()),
                                "the VMM's area is the held image's");
                        VirtualMachine clone = vmm.restore(rb.contents().state(), rb.image(), VmListener.NONE);
                        try {
                            assertEquals("777", ForkTest.ask(clone, "read 5"));
                            assertEquals("4242", ForkTest.ask(clone, "read 300000"));
                            assertEquals(ForkTest.ask(vm, "readall 1"), ForkTest.ask(clone, "readall 1"));
                            assertEquals(ForkTest.ask(vm, "sum"), ForkTest.ask(clone, "sum"));
                        } finally {
                            clone.stop();
                            clone.awaitTermination(VmmTesting.TIMEOUT);
                        }
                    }
                }
            }
        } finally {
            vm.stop();
            vm.awaitTermination(VmmTesting.TIMEOUT);
        }
        assertEquals(live, vmm.liveCount(), "every VM gave back its slot");
        VmmTesting.quiesce(vmm);
        VmmTesting.assertNoFdLeft(fds, vmFds);
        assertEquals(memfds, VmmTesting.memfds(), "no memfd was left behind: images and layers released");
    }

    @Test
    void aDeltaOverAnUnknownBaseOrCutShortIsRefusedAndLeavesNothing() throws Exception {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("forker"), MEMORY));
        byte[] full;
        byte[] d;
        byte[] compressed;
        try {
            vm.ready().get(30, TimeUnit.SECONDS);
            SnapshotContractTest.idle(vm);
            try (VirtualMachine.Snapshot a = vm.snapshot()) {
                ByteArrayOutputStream out = new ByteArrayOutputStream();
                vmm.writeCapsule(a, out);
                full = out.toByteArray();
                assertEquals("touched 2", ForkTest.ask(vm, "touch 2"));
                SnapshotContractTest.idle(vm);
                try (VirtualMachine.Snapshot b = vm.snapshot()) {
                    d = delta(b, b.image().changedSince(a.image()));
                    ByteArrayOutputStream c = new ByteArrayOutputStream();
                    CapsuleStats s = CapsuleWriter.create(vmm.capsuleLimits().withCompression(ChunkCompression.LZ4))
                            .write(c, b.state(), b.image(), vmm.hostPlatform());
                    assertTrue(s.compressedChunks() > 0, s.toString());
                    compressed = c.toByteArray();
                }
            }
        } finally {
            vm.stop();
            vm.awaitTermination(VmmTesting.TIMEOUT);
        }
        VmmTesting.quiesce(vmm);
        CapsuleSurgery.Resources before = CapsuleSurgery.Resources.of(vmm);
        int vms = vmm.vms().size();
        try (ReceivedCapsule ra = receive(full, null)) {
            CapsuleBaseUnknownException e = assertThrows(CapsuleBaseUnknownException.class,
                    () -> receive(d, key -> null));
            assertTrue(e.getMessage().contains("does not hold"), e.getMessage());
            assertThrows(CapsuleFormatException.class, () -> receive(d, null), "full capsules only");
            for (int cut : new int[] {d.length / 2, d.length - 1, d.length - 40}) {
                byte[] part = Arrays.copyOf(d, cut);
                assertThrows(CapsuleFormatException.class, () -> receive(part, holding(ra.image(), new AtomicInteger())),
                        "cut at " + cut);
            }
            // A compressed full capsule of a real guest restores like any other.
            try (ReceivedCapsule rc = receive(compressed, null)) {
                VirtualMachine clone = vmm.restore(rc.contents().state(), rc.image(), VmListener.NONE);
                assertTrue(ForkTest.ask(clone, "readall 2").startsWith("read 2 "));
                clone.stop();
                clone.awaitTermination(VmmTesting.TIMEOUT);
            }
        }
        CapsuleSurgery.assertNoVmAndNoLeak(vmm, before, vms);
    }

    @Test
    void aHostConfiguredToLackACpuFeatureTheGuestCouldObserveRefusesItsCapsule() throws Exception {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("forker"), MEMORY));
        byte[] capsule;
        try {
            vm.ready().get(30, TimeUnit.SECONDS);
            SnapshotContractTest.idle(vm);
            try (VirtualMachine.Snapshot s = vm.snapshot()) {
                ByteArrayOutputStream out = new ByteArrayOutputStream();
                vmm.writeCapsule(s, out);
                capsule = out.toByteArray();
            }
        } finally {
            vm.stop();
            vm.awaitTermination(VmmTesting.TIMEOUT);
        }
        CapsuleHeader h = CapsuleSurgery.frames(capsule).get(0).getHeader();
        byte[] observed = StateCodec.decodeCpuid(h.getObservedCpuidList());
        String feature = null;
        for (String f : List.of("avx512f", "avx2", "sse4_2", "sse2")) {
            CpuFeatures.Register r = CpuFeatures.registerOf(f);
            if ((CpuFeatures.value(observed, r.function(), r.index(), r.reg()) & (1 << CpuFeatures.bitOf(f))) != 0) {
                feature = f;
                break;
            }
        }
        assertNotNull(feature, "the guest observed one of the candidate features");
        VmmSettings settings = VmmSettings.create(ConfigFactory.parseString(
                "vmfork.capsule.hide-cpu-features = [" + feature + "]\nvmfork.vmm.pool.size = 0")
                .withFallback(ConfigFactory.load()));
        try (Vmm lacking = Vmm.open(settings)) {
            HostPlatform host = lacking.hostPlatform();
            CpuFeatures.Register r = CpuFeatures.registerOf(feature);
            assertEquals(0, CpuFeatures.value(host.observedCpuid(), r.function(), r.index(), r.reg())
                    & (1 << CpuFeatures.bitOf(feature)), "hidden from the observed CPUID");
            int fds = VmmTesting.openFds();
            int vmFds = VmmTesting.vmFds();
            CapsuleIncompatibleException e = assertThrows(CapsuleIncompatibleException.class,
                    () -> lacking.restoreCapsule(new ByteArrayInputStream(capsule), VmListener.NONE));
            assertTrue(e.getMessage().contains(feature + " (CPUID."), e.getMessage());
            assertEquals(0, lacking.liveCount(), "no VM was started");
            VmmTesting.assertNoFdLeft(fds, vmFds);
        }
        // This host, which hides nothing, runs it.
        VirtualMachine clone = vmm.restoreCapsule(new ByteArrayInputStream(capsule), VmListener.NONE);
        assertTrue(ForkTest.ask(clone, "sum").startsWith("sum="));
        clone.stop();
        clone.awaitTermination(VmmTesting.TIMEOUT);
    }
}
