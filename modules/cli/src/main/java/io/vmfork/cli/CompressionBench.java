package io.vmfork.cli;

import io.vmfork.vmm.VirtualMachine;
import io.vmfork.vmm.Vmm;
import io.vmfork.vmm.VmSpec;
import io.vmfork.vmm.capsule.CapsuleStats;
import io.vmfork.vmm.capsule.CapsuleWriter;
import io.vmfork.vmm.capsule.ChunkCompression;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.state.MemorySource;
import java.io.OutputStream;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import net.jpountz.lz4.LZ4Compressor;
import net.jpountz.lz4.LZ4Factory;
import net.jpountz.lz4.LZ4SafeDecompressor;

/**
 * {@code vmfork bench capsule}: is compressing capsule chunks worth it? For two kinds of
 * memory, LZ4 block compression and decompression throughput over 1 MiB chunks (the
 * capsule chunk size) and the ratio, then a whole capsule written to a null stream with
 * compression none, lz4 and auto (guest data MiB/s and capsule bytes):
 * <ul>
 * <li>{@code random}: 64 MiB of random bytes, incompressible;
 * <li>{@code warm-worker}: the runtime image of a ready warm-worker (its data pages: a
 *     64 MiB hash table, code, stack), a typical image.
 * </ul>
 * The figures go into docs/capsule.md against the loopback transfer speed.
 */
final class CompressionBench {
    private static final int CHUNK = 1 << 20;
    private static final long RANDOM_MIB = 64;

    private final Vmm vmm;
    private final boolean json;
    private final int runs;
    private final LZ4Factory factory = LZ4Factory.fastestInstance();

    private CompressionBench(Vmm vmm, boolean json, int runs) {
        this.vmm = vmm;
        this.json = json;
        this.runs = runs;
    }

    static void run(Vmm vmm, int runs, boolean json) {
        try {
            new CompressionBench(vmm, json, runs).all();
        } catch (Exception e) {
            throw new IllegalStateException("capsule.compression failed: " + e, e);
        }
    }

    private void all() throws Exception {
        byte[][] random = new byte[(int) RANDOM_MIB][CHUNK];
        Random r = new Random(1);
        for (byte[] c : random) {
            r.nextBytes(c);
        }
        measure("random", chunksOf(random), new ArrayMemory(random));

        VirtualMachine worker = vmm.launch(VmSpec.of(Guests.shipped("warm-worker"), 256L << 20));
        try {
            worker.ready().get(120, TimeUnit.SECONDS);
            while (!worker.awaitingRequest()) {
                Thread.sleep(1);
            }
            try (VirtualMachine.Snapshot s = worker.snapshot()) {
                byte[][] data = readData(s.image());
                measure("warm-worker", data, s.image(), s);
            }
        } finally {
            worker.stop();
            worker.awaitTermination(java.time.Duration.ofSeconds(60));
        }
    }

    private void measure(String what, byte[][] chunks, MemorySource memory) throws Exception {
        measure(what, chunks, memory, null);
    }

    private void measure(String what, byte[][] chunks, MemorySource memory, VirtualMachine.Snapshot snap)
            throws Exception {
        LZ4Compressor c = factory.fastCompressor();
        LZ4SafeDecompressor d = factory.safeDecompressor();
        byte[] packed = new byte[c.maxCompressedLength(CHUNK)];
        byte[] out = new byte[CHUNK];
        long raw = 0;
        for (byte[] ch : chunks) {
            raw += ch.length;
        }
        byte[][] compressed = new byte[chunks.length][];
        long packedBytes = 0;
        double compressMs = Double.MAX_VALUE;
        double decompressMs = Double.MAX_VALUE;
        for (int run = 0; run < runs + 1; run++) { // the first run warms up the JIT
            long t0 = System.nanoTime();
            packedBytes = 0;
            for (int i = 0; i < chunks.length; i++) {
                int n = c.compress(chunks[i], 0, chunks[i].length, packed, 0, packed.length);
                packedBytes += n;
                if (run == 0) {
                    compressed[i] = java.util.Arrays.copyOf(packed, n);
                }
            }
            double ms = (System.nanoTime() - t0) / 1e6;
            long t1 = System.nanoTime();
            for (int i = 0; i < chunks.length; i++) {
                int n = d.decompress(compressed[i], 0, compressed[i].length, out, 0, chunks[i].length);
                if (n != chunks[i].length) {
                    throw new IllegalStateException("LZ4 round trip lost bytes");
                }
            }
            double dms = (System.nanoTime() - t1) / 1e6;
            if (run > 0) {
                compressMs = Math.min(compressMs, ms);
                decompressMs = Math.min(decompressMs, dms);
            }
        }
        double mib = raw / (double) (1 << 20);
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("bench", "capsule.compression");
        m.put("n", runs);
        m.put("data", what);
        m.put("data_mib", mib);
        m.put("codec", "lz4 block (" + factory + ")");
        m.put("ratio", (double) packedBytes / raw);
        m.put("compress_mib_s", mib / (compressMs / 1000));
        m.put("decompress_mib_s", mib / (decompressMs / 1000));
        for (ChunkCompression mode : ChunkCompression.values()) {
            CapsuleWriter w = CapsuleWriter.create(vmm.capsuleLimits().withCompression(mode));
            double best = Double.MAX_VALUE;
            CapsuleStats stats = null;
            for (int run = 0; run < runs + 1; run++) {
                long t0 = System.nanoTime();
                stats = snap != null ? w.write(OutputStream.nullOutputStream(), snap.state(), memory, vmm.hostPlatform())
                        : w.write(OutputStream.nullOutputStream(), stateFor(memory), memory, vmm.hostPlatform());
                double ms = (System.nanoTime() - t0) / 1e6;
                if (run > 0) {
                    best = Math.min(best, ms);
                }
            }
            String k = mode.name().toLowerCase(java.util.Locale.ROOT);
            m.put("capsule_" + k + "_bytes", stats.capsuleBytes());
            m.put("capsule_" + k + "_encode_mib_s", stats.dataBytes() / (double) (1 << 20) / (best / 1000));
        }
        System.out.println(json ? Stats.json(m) : Stats.text(m));
        System.out.flush();
    }

    /** A machine state for synthetic memory: a snapshot of a throwaway VM of its size. */
    private io.vmfork.vmm.state.MachineState stateFor(MemorySource memory) throws Exception {
        if (syntheticState == null) {
            VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("forker"), memory.size()));
            try {
                vm.ready().get(60, TimeUnit.SECONDS);
                while (!vm.awaitingRequest()) {
                    Thread.sleep(1);
                }
                try (VirtualMachine.Snapshot s = vm.snapshot()) {
                    syntheticState = s.state();
                }
            } finally {
                vm.stop();
                vm.awaitTermination(java.time.Duration.ofSeconds(60));
            }
        }
        return syntheticState;
    }

    private io.vmfork.vmm.state.MachineState syntheticState;

    private static byte[][] chunksOf(byte[][] a) {
        return a;
    }

    /** The data pages of an image, in 1 MiB chunks (as a capsule reads them). */
    private static byte[][] readData(MemorySource image) {
        List<byte[]> out = new ArrayList<>();
        for (MemorySource.Run run : image.dataRuns()) {
            for (long off = run.offset(); off < run.offset() + run.length(); off += CHUNK) {
                int n = (int) Math.min(CHUNK, run.offset() + run.length() - off);
                byte[] b = new byte[n];
                image.read(off, b, 0, n);
                out.add(b);
            }
        }
        return out.toArray(new byte[0][]);
    }

    /** Random memory: RANDOM_MIB of data from guest-physical 2 MiB on, in a RAM of twice that. */
    private static final class ArrayMemory implements MemorySource {
        private static final long BASE = 2 << 20;
        private final byte[][] chunks;

        ArrayMemory(byte[][] chunks) {
            this.chunks = chunks;
        }

        @Override
        public long size() {
            return 2 * RANDOM_MIB << 20;
        }

        @Override
        public List<Run> dataRuns() {
            return List.of(new Run(BASE, (long) chunks.length * CHUNK));
        }

        @Override
        public void read(long offset, byte[] dst, int dstOff, int length) {
            long at = offset - BASE;
            while (length > 0) {
                int c = (int) (at / CHUNK);
                int o = (int) (at % CHUNK);
                int n = Math.min(length, CHUNK - o);
                System.arraycopy(chunks[c], o, dst, dstOff, n);
                at += n;
                dstOff += n;
                length -= n;
            }
        }
    }
}
