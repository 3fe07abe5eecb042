package io.vmfork.cluster.host;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.api.ErrorCode;
import io.vmfork.cluster.node.InvalidNodeConfigException;
import io.vmfork.cluster.node.VmforkNode;
import io.vmfork.cluster.placement.AdmissionLedger;
import java.io.InputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A {@link HostActor.Launch}, which any member may send, boots only a shipped guest or an
 * image under the node's {@code vmfork.node.images}: a host path, {@code ..} or a symlink
 * out is answered {@link ErrorCode#IMAGE_NOT_FOUND} with one message, and nothing is
 * admitted or launched.
 */
class LaunchImagesTest {
    private static final Duration WAIT = Duration.ofSeconds(30);
    @TempDir
    Path root;
    private VmforkNode node;

    @AfterEach
    void stop() {
        if (node != null) {
            node.system().terminate();
            node.whenTerminated().toCompletableFuture().orTimeout(30, TimeUnit.SECONDS).join();
            assertEquals(0, node.vmm().liveCount(), "a VM outlived its node");
        }
    }

    private static byte[] hello() throws Exception {
        try (InputStream in = LaunchImagesTest.class.getResourceAsStream("/io/vmfork/guests/hello.elf")) {
            return in.readAllBytes();
        }
    }

    private VmforkNode start(String images) {
        return VmforkNode.start(ConfigFactory.parseString("vmfork.host { id = 51, name = h51 }\n"
                + "vmfork.node { fork-warm-up = off, images = " + images + " }\n"
                + "vmfork.transfer.warm-up = off\n").withFallback(ConfigFactory.load()).resolve());
    }

    private HostActor.Reply launch(TestProbe<HostActor.Reply> probe, String image) {
        node.host().tell(new HostActor.Launch(image, 0, 16L << 20, AdmissionLedger.NO_RESERVATION, probe.getRef()));
        return probe.expectMessageClass(HostActor.Reply.class, WAIT);
    }

    @Test
    void aLaunchOfAHostPathOrAWayOutOfTheImageDirectoriesIsRefusedAndLaunchesNothing() throws Exception {
        Path images = Files.createDirectories(root.resolve("images"));
        Path outside = Files.write(Files.createDirectories(root.resolve("outside")).resolve("app.elf"), hello());
        Files.write(images.resolve("app.elf"), hello());
        Files.createSymbolicLink(images.resolve("escape.elf"), outside);
        node = start("[\"" + images + "\"]");
        TestProbe<HostActor.Reply> probe = ActorTestKit.create(node.system()).createTestProbe();

        for (String name : new String[] {"/etc/passwd", "/etc/no-such-file", "../outside/app.elf", "../x",
                "escape.elf", outside.toString(), images.resolve("app.elf").toString()}) {
            HostActor.Failure f = assertInstanceOf(HostActor.Failure.class, launch(probe, name), name);
            assertEquals(ErrorCode.IMAGE_NOT_FOUND, f.code(), name);
            assertEquals("host 51: guest image '" + name + "' is not one of this node's guest images"
                    + " (shipped guests: hello, warm-worker, ...; or a file under vmfork.node.images)", f.message());
            assertEquals(0, node.vmm().liveCount(), name + " launched a VM");
            assertEquals(0, node.admission().vmCount(), name + " left an admission");
        }

        // The image under the directory (hello: it prints and exits), and a shipped guest, are
        // launched by name.
        HostActor.Launched app = assertInstanceOf(HostActor.Launched.class, launch(probe, "app"));
        assertEquals("app", app.vm().image());
        HostActor.Launched spin = assertInstanceOf(HostActor.Launched.class, launch(probe, "spin"));
        node.host().tell(new HostActor.Stop(spin.vm().vmId(), probe.getRef()));
        assertInstanceOf(HostActor.Stopped.class, probe.expectMessageClass(HostActor.Reply.class, WAIT));
    }

    @Test
    void imageDirectoriesMustBeAbsoluteDirectories() {
        InvalidNodeConfigException relative = org.junit.jupiter.api.Assertions.assertThrows(
                InvalidNodeConfigException.class, () -> start("[\"images\"]"));
        assertTrue(relative.getMessage().contains("vmfork.node.images[0]"), relative.getMessage());
        assertTrue(relative.getMessage().contains("not an absolute path"), relative.getMessage());
        InvalidNodeConfigException missing = org.junit.jupiter.api.Assertions.assertThrows(
                InvalidNodeConfigException.class, () -> start("[\"" + root.resolve("none") + "\"]"));
        assertTrue(missing.getMessage().contains("not a directory"), missing.getMessage());
    }
}
