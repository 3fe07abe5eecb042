package io.vmfork.cli;

import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.VmListener;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.capsule.CapsuleReader;
import io.vmfork.vmm.capsule.CapsuleStats;
import io.vmfork.vmm.capsule.ImageSink;
import io.vmfork.vmm.guest.Guests;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.TimeUnit;

/**
 * capsule.size: the capsule of a forker parent (8 MiB initialised, then 64 MiB touched, in
 * 128 MiB of RAM), against the memory it touched (the data its runtime image holds); and encode (to memory, streamed) and decode (verified, into a memfd) throughput.
 */
final class CapsuleBench {
    private static final long TOUCHED_MIB = 64;
    private static final int RUNS = 5;

    private CapsuleBench() {
    }

    static Map<String, Object> run(Vmm vmm) throws Exception {
        VirtualMachine parent = vmm.launch(VmSpec.of(Guests.shipped("forker"), 128L << 20));
        try {
            parent.ready().get(60, TimeUnit.SECONDS);
            String touched = new String(parent.channel().request(("touch " + TOUCHED_MIB).getBytes(StandardCharsets.UTF_8))
                    .get(60, TimeUnit.SECONDS), StandardCharsets.UTF_8);
            if (!touched.equals("touched " + TOUCHED_MIB)) {
                throw new IllegalStateException("forker did not touch its memory: " + touched);
            }
            while (!parent.awaitingRequest()) {
                Thread.sleep(1);
            }
            double[] encodeMs = new double[RUNS];
            double[] decodeMs = new double[RUNS];
            byte[] capsule = null;
            CapsuleStats stats = null;
            long touchedBytes;
            try (VirtualMachine.Snapshot snap = parent.snapshot()) {
                // Pages the guest ever wrote (or read) are the ones its memfd holds; holes were never touched.
                touchedBytes = snap.image().dataRuns().stream().mapToLong(r -> r.length()).sum();
                for (int i = 0; i < RUNS; i++) {
                    ByteArrayOutputStream out = new ByteArrayOutputStream(96 << 20);
                    long t0 = System.nanoTime();
                    stats = vmm.writeCapsule(snap, out);
                    encodeMs[i] = (System.nanoTime() - t0) / 1e6;
                    capsule = out.toByteArray();
                }
            }
            for (int i = 0; i < RUNS; i++) {
                long t0 = System.nanoTime();
                try (ImageSink sink = ImageSink.create("bench-capsule", vmm.settings().maxMemory(),
                        vmm.capsuleLimits().maxChunkBytes())) {
                    CapsuleReader.create(vmm.capsuleLimits()).read(new ByteArrayInputStream(capsule), sink,
                            vmm.hostPlatform());
                }
                decodeMs[i] = (System.nanoTime() - t0) / 1e6;
            }
            double mib = stats.dataBytes() / (double) (1 << 20);
            double enc = new Stats(encodeMs).median();
            double dec = new Stats(decodeMs).median();
            Map<String, Object> m = new LinkedHashMap<>();
            m.put("bench", "capsule.size");
            m.put("n", RUNS);
            m.put("memory_mib", 128);
            m.put("touched_bytes", touchedBytes);
            m.put("capsule_bytes", stats.capsuleBytes());
            m.put("data_bytes", stats.dataBytes());
            m.put("zero_pages_skipped", stats.zeroPagesSkipped());
            m.put("encode_p50_ms", enc);
            m.put("decode_p50_ms", dec);
            m.put("encode_mib_s", mib / (enc / 1000));
            m.put("decode_mib_s", mib / (dec / 1000));
            return m;
        } finally {
            parent.stop();
        }
    }
}
