package io.vmfork.cluster.transfer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** Transfer threads run at vmfork.transfer.nice, read back from the kernel; 0 leaves the executor alone. */
class BackgroundTest {
    @Test
    void aTransferThreadRunsAtTheConfiguredNiceValue() throws Exception {
        ExecutorService threads = Executors.newSingleThreadExecutor();
        try {
            CompletableFuture<Integer> before = CompletableFuture.supplyAsync(BackgroundTest::niceOfThisThread, threads);
            assertEquals(0, before.get(10, TimeUnit.SECONDS));
            CompletableFuture<Integer> after = CompletableFuture.supplyAsync(BackgroundTest::niceOfThisThread,
                    Background.executor(threads, 10));
            assertEquals(10, after.get(10, TimeUnit.SECONDS));
        } finally {
            threads.shutdownNow();
        }
    }

    @Test
    void niceZeroIsTheExecutorItself() {
        ExecutorService threads = Executors.newSingleThreadExecutor();
        try {
            assertSame(threads, Background.executor(threads, 0));
        } finally {
            threads.shutdownNow();
        }
    }

    /** Field 19 of /proc/thread-self/stat: the calling thread's nice value. */
    private static int niceOfThisThread() {
        try {
            String stat = Files.readString(Path.of("/proc/thread-self/stat"));
            String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
            return Integer.parseInt(f[16]);
        } catch (java.io.IOException e) {
            throw new java.io.UncheckedIOException(e);
        }
    }
}
