package io.vmfork.cluster.transfer;

import io.vmfork.os.LibC;
import io.vmfork.os.NativeCallException;
import java.util.concurrent.Executor;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The transfer threads' executor at a lower CPU priority ({@code vmfork.transfer.nice}): a
 * clone capsule's encoding (LZ4, CRC-32C, SHA-256) and decoding take whole cores for a
 * second or more, while fork children answer their first requests and actors deliver the
 * events of the same fork on the same cores. Each thread of the dispatcher sets its own
 * nice value once, before its first task; the dispatcher runs only transfers, so the
 * threads keep it.
 */
final class Background {
    private static final Logger log = LoggerFactory.getLogger(Background.class);
    /** The nice value each thread has set already (-1: none yet). */
    private static final ThreadLocal<int[]> SET = ThreadLocal.withInitial(() -> new int[] {-1});

    private Background() {
    }

    static Executor executor(Executor threads, int nice) {
        if (nice == 0) {
            return threads;
        }
        return task -> threads.execute(() -> {
            int[] set = SET.get();
            if (set[0] != nice) {
                set[0] = nice;
                try {
                    LibC.setThreadNice(nice);
                } catch (NativeCallException e) {
                    log.warn("transfer thread {} keeps its priority: {}", Thread.currentThread().getName(),
                            e.getMessage());
                }
            }
            task.run();
        });
    }
}
