package io.vmfork.cluster.transfer;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.ConfigFactory;
import java.time.Duration;
import org.junit.jupiter.api.Test;

class TransferSettingsTest {
    @Test
    void readsTheDefaults() {
        TransferSettings s = TransferSettings.fromConfig(ConfigFactory.load());
        assertEquals("127.0.0.1", s.host());
        assertEquals(0, s.port());
        assertEquals(Duration.ofSeconds(5), s.connectTimeout());
        assertEquals(Duration.ofSeconds(30), s.idleTimeout());
        assertEquals(4 << 20, s.maxFrameBytes());
        assertEquals(1 << 20, s.dataFrameBytes());
        assertEquals("vmfork.transfer.blocking-dispatcher", s.blockingDispatcher());
        assertEquals(new TransferSettings.Limits(Duration.ofSeconds(5), 128, 32, 32, 4), s.limits());
    }

    @Test
    void refusesBadValuesNamingTheKey() {
        IllegalArgumentException e = assertThrows(IllegalArgumentException.class, () -> TransferSettings.fromConfig(
                ConfigFactory.parseString("vmfork.transfer { data-frame = 8 MiB }").withFallback(ConfigFactory.load())));
        assertTrue(e.getMessage().contains("vmfork.transfer.data-frame"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> TransferSettings.fromConfig(
                ConfigFactory.parseString("vmfork.transfer { max-frame = 2 GiB }").withFallback(ConfigFactory.load())));
        assertTrue(e.getMessage().contains("vmfork.transfer.max-frame"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> TransferSettings.fromConfig(
                ConfigFactory.parseString("vmfork.transfer { idle-timeout = 0s }").withFallback(ConfigFactory.load())));
        assertTrue(e.getMessage().contains("vmfork.transfer.idle-timeout"), e.getMessage());
        e = assertThrows(IllegalArgumentException.class, () -> TransferSettings.fromConfig(ConfigFactory.parseString(
                "vmfork.transfer { max-connections-per-peer = 500 }").withFallback(ConfigFactory.load())));
        assertTrue(e.getMessage().contains("vmfork.transfer.max-connections-per-peer"), e.getMessage());
    }
}
