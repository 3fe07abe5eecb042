package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.vmm.guest.Guests;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/** The warm worker builds its index, says it is ready, then answers requests correctly. */
class WarmWorkerTest extends VmmTestBase {
    /** Mirrors examples/warm-worker.c. */
    static final int KEYS = 1 << 21;
    static final int ROUNDS = 96;


    static long mix(long z) {
        z ^= z >>> 30;
        z *= 0xbf58476d1ce4e5b9L;
        z ^= z >>> 27;
        z *= 0x94d049bb133111ebL;
        z ^= z >>> 31;
        return z;
    }

    static long value(long k) {
        long x = k;
        for (int i = 0; i < ROUNDS; i++) {
            x = mix(x + 0x9e3779b97f4a7c15L);
        }
        return x;
    }

    static String ask(VirtualMachine vm, String request) throws Exception {
        return new String(vm.channel().request(request.getBytes(StandardCharsets.UTF_8)).get(30, TimeUnit.SECONDS),
                StandardCharsets.UTF_8);
    }

    @Test
    void initialisesThenServesLookups() throws Exception {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("warm-worker"), 256L << 20));
        vm.ready().get(60, TimeUnit.SECONDS);
        assertTrue(vm.console().text().contains("warm-worker: ready (" + KEYS + " keys"), vm.console().text());
        for (long k : new long[] {0, 1, 7, 123456, KEYS - 1}) {
            assertEquals(k + " " + Long.toUnsignedString(value(k)), ask(vm, "get " + k));
        }
        assertEquals(KEYS + " miss", ask(vm, "get " + KEYS));
        long checksum = 0;
        for (long k = 0; k < KEYS; k++) {
            checksum ^= value(k);
        }
        assertEquals("keys=" + KEYS + " rounds=" + ROUNDS + " checksum=" + Long.toUnsignedString(checksum),
                ask(vm, "stats"));
        assertEquals("vm=" + vm.id() + " parent=0 gen=0 host=" + vmm.settings().hostId() + " type=0", ask(vm, "id"));
        assertNotEquals(ask(vm, "rand"), ask(vm, "rand"));
        assertEquals("error: unknown request", ask(vm, "frobnicate"));
        assertEquals("bye", ask(vm, "stop"));
        VmExit exit = vm.awaitTermination(VmmTesting.TIMEOUT);
        assertEquals(VmExit.exited(0), exit);
    }

    @Test
    void closingTheChannelEndsTheWorker() throws Exception {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("warm-worker"), 256L << 20));
        vm.ready().get(60, TimeUnit.SECONDS);
        assertEquals("5 " + Long.toUnsignedString(value(5)), ask(vm, "get 5"));
        vm.channel().close();
        assertEquals(VmExit.exited(0), vm.awaitTermination(VmmTesting.TIMEOUT));
    }

    @Test
    void requestsQueuedBeforeReadyAreServedInOrder() throws Exception {
        VirtualMachine vm = vmm.launch(VmSpec.of(Guests.shipped("warm-worker"), 256L << 20));
        var first = vm.channel().request("get 1".getBytes(StandardCharsets.UTF_8));
        var second = vm.channel().request("get 2".getBytes(StandardCharsets.UTF_8));
        assertEquals("1 " + Long.toUnsignedString(value(1)), new String(first.get(60, TimeUnit.SECONDS)));
        assertEquals("2 " + Long.toUnsignedString(value(2)), new String(second.get(60, TimeUnit.SECONDS)));
        vm.stop();
    }
}
