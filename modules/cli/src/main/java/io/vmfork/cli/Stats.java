package io.vmfork.cli;

import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/** Order statistics of a sample of durations, and the one-line JSON the benchmarks print. */
final class Stats {
    private final double[] sortedMs;

    Stats(double[] ms) {
        this.sortedMs = ms.clone();
        Arrays.sort(sortedMs);
    }

    int n() {
        return sortedMs.length;
    }

    /** Nearest-rank percentile, p in (0, 100]. */
    double percentile(double p) {
        int rank = (int) Math.ceil(p / 100.0 * sortedMs.length);
        return sortedMs[Math.max(0, Math.min(sortedMs.length - 1, rank - 1))];
    }

    double median() {
        int n = sortedMs.length;
        return n % 2 == 1 ? sortedMs[n / 2] : (sortedMs[n / 2 - 1] + sortedMs[n / 2]) / 2;
    }

    double min() {
        return sortedMs[0];
    }

    double max() {
        return sortedMs[sortedMs.length - 1];
    }

    /** bench, n, p50_ms, p99_ms, min_ms, max_ms, then {@code extra}. */
    /** The platform the VMs of this JVM's benches run on ("kvm", "process"), named in every figure; null for none. */
    static volatile String platform;
    /**
     * Whether the figures of this JVM's cluster benches were taken over Artery TLS, named in
     * every figure after the platform; null: not a cluster bench.
     */
    static volatile Boolean tls;

    Map<String, Object> fields(String bench, Map<String, Object> extra) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("bench", bench);
        if (platform != null) {
            m.put("platform", platform);
        }
        if (tls != null) {
            m.put("tls", tls);
        }
        m.put("n", n());
        m.put("p50_ms", median());
        m.put("p99_ms", percentile(99));
        m.put("min_ms", min());
        m.put("max_ms", max());
        m.putAll(extra);
        return m;
    }

    static String json(Map<String, Object> fields) {
        StringBuilder sb = new StringBuilder("{");
        boolean first = true;
        for (Map.Entry<String, Object> e : fields.entrySet()) {
            if (!first) {
                sb.append(", ");
            }
            first = false;
            sb.append('"').append(e.getKey()).append("\": ");
            Object v = e.getValue();
            if (v instanceof Double d) {
                sb.append(String.format(Locale.ROOT, "%.3f", d));
            } else if (v instanceof Number || v instanceof Boolean) {
                sb.append(v);
            } else {
                sb.append('"').append(String.valueOf(v).replace("\\", "\\\\").replace("\"", "\\\"")).append('"');
            }
        }
        return sb.append('}').toString();
    }

    static String text(Map<String, Object> fields) {
        StringBuilder sb = new StringBuilder();
        for (Map.Entry<String, Object> e : fields.entrySet()) {
            Object v = e.getValue();
            sb.append(e.getKey()).append('=')
                    .append(v instanceof Double d ? String.format(Locale.ROOT, "%.3f", d) : String.valueOf(v)).append("  ");
        }
        return sb.toString().trim();
    }
}
