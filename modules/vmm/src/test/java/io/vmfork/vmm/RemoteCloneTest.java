package io.vmfork.vmm;

import static org.junit.jupiter.api.Assertions.*;

import com.typesafe.config.ConfigFactory;
import io.vmfork.vmm.capsule.CapsuleContents;
import io.vmfork.vmm.capsule.CapsuleReader;
import io.vmfork.vmm.capsule.ImageSink;
import io.vmfork.vmm.fork.CloneSpec;
import io.vmfork.vmm.fork.CopyPlacement;
import io.vmfork.vmm.fork.CopyTarget;
import io.vmfork.vmm.fork.RemoteFork;
import io.vmfork.vmm.guest.Guests;
import io.vmfork.vmm.hypercall.Hypercalls;
import io.vmfork.vmm.memory.RuntimeImage;
import java.io.ByteArrayInputStream;
import java.io.ByteArrayOutputStream;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.function.BiConsumer;
import java.util.function.Function;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/**
 * Remote clones between two VMMs in one JVM standing for two hosts (ids 1 and 2): the
 * parent on host A forks, placement puts copies on host B, and the test's ship() moves
 * each fork to B through a real clone capsule (written from the RemoteFork's state and
 * image, read back into a fresh image) and launches the clones there.
 */
class RemoteCloneTest {
    private static final long HOST_A = 1;
    private static final long HOST_B = 2;
    private static final Pattern RFORK = Pattern.compile(
            "parent launched=(-?\\d+) ids=([0-9,]+) errs=([-0-9,]+) now=([-0-9,]+) waited=(\\S+)");

    private Vmm a;
    private Vmm b;
    private ExecutorService shipping;
    /** Every fork shipped to the test, closed after it whatever happened (close is idempotent). */
    private static final List<RemoteFork> FORKS = new java.util.concurrent.CopyOnWriteArrayList<>();
    private final ForkTest.Announcements onA = new ForkTest.Announcements();
    private final ForkTest.Announcements onB = new ForkTest.Announcements();

    @BeforeEach
    void openHosts() {
        a = host(HOST_A);
        b = host(HOST_B);
        shipping = Executors.newSingleThreadExecutor(r -> new Thread(r, "test-shipping"));
    }

    @AfterEach
    void closeHosts() throws Exception {
        shipping.shutdownNow();
        assertTrue(shipping.awaitTermination(30, TimeUnit.SECONDS));
        FORKS.forEach(RemoteFork::close);
        FORKS.clear();
        a.close();
        b.close();
        assertEquals(0, VmmTesting.memfds(), "memfds left behind (an image of a remote fork not released)");
        assertEquals(0, VmmTesting.vmMappings(), "guest RAM or kvm_run mappings left behind");
    }

    private static Vmm host(long id) {
        return Vmm.open(VmmSettings.create(ConfigFactory.parseString("vmfork.host.id = " + id)
                .withFallback(ConfigFactory.load())));
    }

    /** Placement from a function of (vmType, count), shipping with {@code ship} on the test's own thread. */
    private static CopyPlacement placement(Function<Integer, List<CopyTarget>> place, java.util.function.Consumer<RemoteFork> ship) {
        return new CopyPlacement() {
            @Override
            public List<CopyTarget> place(VmIdentity parent, int vmType, int count) {
                return place.apply(vmType);
            }

            @Override
            public void ship(RemoteFork fork) {
                FORKS.add(fork);
                ship.accept(fork);
            }
        };
    }

    /**
     * What a target host does with a fork: the capsule of its state and image, read back
     * on host B into a new image, and one clone per copy from it (sharing it), each reported.
     */
    private List<VirtualMachine> cloneOnB(RemoteFork fork) throws Exception {
        ByteArrayOutputStream capsule = new ByteArrayOutputStream();
        a.writeCapsule(new VirtualMachine.Snapshot(fork.state(), fork.image()), capsule);
        List<VirtualMachine> clones = new ArrayList<>();
        try (ImageSink sink = ImageSink.create("vmfork-test-capsule", b.settings().maxMemory(),
                b.capsuleLimits().maxChunkBytes())) {
            CapsuleContents c = CapsuleReader.create(b.capsuleLimits())
                    .read(new ByteArrayInputStream(capsule.toByteArray()), sink, b.hostPlatform(), b.guestRules());
            RuntimeImage image = sink.toImage(c.state().memorySize());
            try {
                for (RemoteFork.Copy copy : fork.copies()) {
                    VirtualMachine clone = b.launchClone(c.state(), image,
                            new CloneSpec(fork.vmType(), fork.forkBlock(), copy.index(), onB));
                    clones.add(clone);
                    fork.started(copy.index(), clone.id());
                }
            } finally {
                image.release();
            }
        }
        return clones;
    }

    /** ship(): after {@code delayMs}, clones every copy on B; then closes the fork. */
    private java.util.function.Consumer<RemoteFork> shipToB(long delayMs, BlockingQueue<RemoteFork> shipped,
            BlockingQueue<Long> shippedAt) {
        return fork -> {
            shippedAt.add(System.nanoTime());
            shipped.add(fork);
            shipping.execute(() -> {
                try (fork) {
                    Thread.sleep(delayMs);
                    cloneOnB(fork);
                } catch (Exception e) {
                    for (RemoteFork.Copy c : fork.copies()) {
                        fork.failed(c.index(), Hypercalls.ETRANSFER, e.toString());
                    }
                }
            });
        };
    }

    private VirtualMachine forkerOnA() throws Exception {
        VirtualMachine vm = a.launch(VmSpec.of(Guests.shipped("forker"), 64L << 20).withListener(onA));
        vm.ready().get(30, TimeUnit.SECONDS);
        return vm;
    }

    private static Matcher rfork(String reply) {
        Matcher m = RFORK.matcher(reply);
        assertTrue(m.matches(), reply);
        return m;
    }

    @Test
    void copiesPlacedOnAnotherHostStartThereWithoutHoldingTheParent() throws Exception {
        BlockingQueue<RemoteFork> shipped = new LinkedBlockingQueue<>();
        BlockingQueue<Long> shippedAt = new LinkedBlockingQueue<>();
        a.useCopyPlacement(placement(
                t -> List.of(CopyTarget.LOCAL, new CopyTarget.Remote(HOST_B, 77), new CopyTarget.Remote(HOST_B, 78)),
                shipToB(300, shipped, shippedAt)));
        VirtualMachine parent = forkerOnA();
        String sum = ForkTest.ask(parent, "sum");

        Matcher m = rfork(ForkTest.ask(parent, "rfork 3 5"));
        // The parent's result: one local child, two copies accepted for host B with tickets.
        assertEquals("3", m.group(1), m.group(0));
        String[] ids = m.group(2).split(",");
        assertEquals("0,-10,-10", m.group(3));
        long t1 = Long.parseLong(ids[1]), t2 = Long.parseLong(ids[2]);
        assertTrue(t1 != 0 && t2 != 0 && t1 != t2, m.group(0));
        // Right after FORK the remote copies were still in progress (ship waits 300 ms)...
        assertEquals("-,-10,-10", m.group(4));
        // ...and FORK_STATUS, waiting, gave each clone's id on host B.
        String[] waited = m.group(5).split(",");
        assertEquals("-", waited[0]);
        long c1 = Long.parseLong(waited[1].substring(2)), c2 = Long.parseLong(waited[2].substring(2));
        assertEquals("0:" + c1, waited[1]);
        assertEquals("0:" + c2, waited[2]);

        RemoteFork fork = shipped.poll(10, TimeUnit.SECONDS);
        assertNotNull(fork);
        assertEquals(parent.id(), fork.parent().vmId());
        assertEquals(5, fork.vmType());
        assertTrue(fork.forkBlock() >= 0x200000, "the fork block of a FORK hypercall");
        assertEquals(List.of(new RemoteFork.Copy(1, HOST_B, 77, t1), new RemoteFork.Copy(2, HOST_B, 78, t2)),
                fork.copies());
        assertEquals(c1, fork.outcome(1).get(10, TimeUnit.SECONDS).vmId());
        assertEquals(c2, fork.outcome(2).get(10, TimeUnit.SECONDS).vmId());

        // The parent was let go before ship() ran, and its pause does not contain the transfer.
        VirtualMachine.ForkRecord rec = parent.lastFork();
        long shipCalled = shippedAt.take();
        assertTrue(rec.resumedNanos() <= shipCalled, "ship() ran before the parent's result was written");
        assertTrue(rec.resumedNanos() - rec.exitNanos() < TimeUnit.MILLISECONDS.toNanos(250),
                "the parent was held " + (rec.resumedNanos() - rec.exitNanos()) / 1000 + " us");

        for (int i = 1; i <= 2; i++) {
            long id = i == 1 ? c1 : c2;
            VirtualMachine clone = b.vm(id);
            assertNotNull(clone, "clone " + id + " does not run on host B");
            assertNull(a.vm(id));
            assertEquals(HOST_B, id >>> 40, "a VM id of host B");
            assertTrue(clone.launchStartNanos() - rec.resumedNanos() >= TimeUnit.MILLISECONDS.toNanos(300),
                    "the clone started before the parent was let go");
            // Its fork block as a child's (role 1, index, id), its identity, the parent's memory.
            // (forker's rfork children end it with the CLOCK they read first thing: the same
            // clock as the VMM's, read after the clone's launch began.)
            String announced = onB.next(clone);
            String expected = "child index=" + i + " id=" + id + " parent=" + parent.id() + " gen=1 type=5 t=";
            assertTrue(announced.startsWith(expected), announced);
            long t = Long.parseLong(announced.substring(expected.length()));
            assertTrue(t > clone.launchStartNanos() && t < System.nanoTime(), announced);
            assertEquals("vm=" + id + " parent=" + parent.id() + " gen=1 host=" + HOST_B + " type=5",
                    ForkTest.ask(clone, "id"));
            assertEquals(sum, ForkTest.ask(clone, "sum"));
            assertEquals(new VmIdentity(id, parent.id(), HOST_B, 1, 5), clone.identity());
        }
        // Clones of one image keep their writes apart, and the parent's too.
        assertEquals("ok", ForkTest.ask(b.vm(c1), "write 5 777"));
        assertNotEquals("777", ForkTest.ask(b.vm(c2), "read 5"));
        assertNotEquals("777", ForkTest.ask(parent, "read 5"));
        assertNotEquals(ForkTest.ask(b.vm(c1), "rand"), ForkTest.ask(b.vm(c2), "rand"));
        // The local child is an ordinary child on host A.
        VirtualMachine local = a.vm(Long.parseLong(ids[0]));
        assertNotNull(local);
        assertTrue(onA.next(local).startsWith("child index=0 id=" + local.id() + " "));
        assertEquals(sum, ForkTest.ask(local, "sum"));
        assertTrue(fork.isClosed());
    }

    @Test
    void failedCopiesAreReportedThroughForkStatusAndCloseReleasesTheImage() throws Exception {
        BlockingQueue<RemoteFork> held = new LinkedBlockingQueue<>();
        a.useCopyPlacement(placement(t -> List.of(new CopyTarget.Remote(HOST_B, 1), new CopyTarget.Remote(HOST_B, 2)),
                fork -> {
                    held.add(fork);
                    shipping.execute(() -> fork.failed(0, Hypercalls.ETRANSFER, "target refused the capsule"));
                }));
        VirtualMachine parent = forkerOnA();
        // Copy 0 fails at once; copy 1 is never resolved, so the parent waits in FORK_STATUS.
        var reply = parent.channel().request("rfork 2".getBytes(java.nio.charset.StandardCharsets.UTF_8));
        RemoteFork fork = held.poll(10, TimeUnit.SECONDS);
        assertNotNull(fork);
        assertEquals(Hypercalls.ETRANSFER, fork.outcome(0).get(10, TimeUnit.SECONDS).status());
        Thread.sleep(200);
        assertFalse(reply.isDone(), "FORK_STATUS must wait while copy 1 is in progress");
        // A vCPU waiting in FORK_STATUS does not hold up stop; the open fork's image outlives the parent.
        parent.stop();
        assertTrue(VmmTesting.memfds() > 0, "the remote fork's image is already gone");
        fork.close();
        fork.close();
        assertEquals(Hypercalls.EREMOTE, fork.outcome(1).get().status(), "unresolved at close: EREMOTE");
        assertEquals("not launched", fork.outcome(1).get().reason());
        fork.failed(1, Hypercalls.ENOMEM, "later");
        assertEquals(Hypercalls.EREMOTE, fork.outcome(1).get().status(), "the first outcome wins");
        assertEquals(0, VmmTesting.memfds(), "closing the remote fork did not release its image");
        assertThrows(IllegalStateException.class, fork::image);
    }

    @Test
    void forkStatusReportsEachFailureAndTicketsAreTheParentsOwn() throws Exception {
        BlockingQueue<RemoteFork> held = new LinkedBlockingQueue<>();
        a.useCopyPlacement(placement(
                t -> List.of(new CopyTarget.Remote(HOST_B, 1), new CopyTarget.Remote(HOST_B, 2), CopyTarget.LOCAL),
                fork -> {
                    held.add(fork);
                    shipping.execute(() -> {
                        fork.failed(0, Hypercalls.ETRANSFER, "target refused the capsule");
                        fork.started(0, 12345); // ignored: the first outcome wins
                        fork.close(); // copy 1 never resolved: EREMOTE, "not launched"
                    });
                }));
        VirtualMachine parent = forkerOnA();
        Matcher m = rfork(ForkTest.ask(parent, "rfork 3"));
        assertEquals("3", m.group(1));
        assertEquals("-11:0,-9:0,-", m.group(5));
        RemoteFork fork = held.take();
        assertEquals("not launched", fork.outcome(1).get().reason());
        String[] ids = m.group(2).split(",");
        assertEquals("status=-11 vm=0", ForkTest.ask(parent, "fstatus " + ids[0] + " 0"));
        assertEquals("error=-1", ForkTest.ask(parent, "fstatus 999999 0"), "an unknown ticket");
        // The local child has no tickets: its parent's are not its own.
        VirtualMachine child = a.vm(Long.parseLong(ids[2]));
        onA.next(child);
        assertEquals("error=-1", ForkTest.ask(child, "fstatus " + ids[0] + " 0"));

        // Without VMF_FORK_REMOTE the copy fails at once with EREMOTE, and nothing is shipped.
        String r = ForkTest.ask(parent, "fork 3");
        assertTrue(r.matches("parent launched=1 ids=0,0,[1-9][0-9]* errs=-9,-9,0"), r);
        assertNull(held.poll(200, TimeUnit.MILLISECONDS), "a fork without VMF_FORK_REMOTE shipped copies");
    }

    @Test
    void theDefaultShipFailsEveryCopyWithEremote() throws Exception {
        a.useCopyPlacement((parent, vmType, count) -> List.of(new CopyTarget.Remote(HOST_B, 3)));
        VirtualMachine parent = forkerOnA();
        Matcher m = rfork(ForkTest.ask(parent, "rfork 1"));
        assertEquals("1", m.group(1));
        assertEquals("-10", m.group(3));
        assertEquals("-9:0", m.group(5));
    }

    @Test
    void aForkFromOutsideReportsItsRemoteCopies() throws Exception {
        BlockingQueue<RemoteFork> shipped = new LinkedBlockingQueue<>();
        a.useCopyPlacement(placement(t -> List.of(CopyTarget.LOCAL, new CopyTarget.Remote(HOST_B, 9)),
                shipToB(0, shipped, new LinkedBlockingQueue<>())));
        VirtualMachine parent = forkerOnA();
        String sum = ForkTest.ask(parent, "sum");
        VirtualMachine.ForkResult r = parent.fork(2, 3);
        assertEquals(1, r.children().size());
        assertEquals(List.of(), r.errors());
        RemoteFork fork = shipped.poll(10, TimeUnit.SECONDS);
        assertNotNull(fork);
        assertEquals(fork.forkId(), r.forkId());
        assertNotEquals(0, r.forkId());
        assertEquals(List.of(new VirtualMachine.RemoteCopyRef(1, HOST_B, fork.copies().get(0).ticket())), r.remote());
        assertEquals(0, fork.forkBlock());
        long id = fork.outcome(1).get(30, TimeUnit.SECONDS).vmId();
        VirtualMachine clone = b.vm(id);
        assertNotNull(clone);
        // The clone resumes where the parent was: waiting in RECV, re-issued; its channel starts empty.
        assertEquals("vm=" + id + " parent=" + parent.id() + " gen=1 host=" + HOST_B + " type=3",
                ForkTest.ask(clone, "id"));
        assertEquals(sum, ForkTest.ask(clone, "sum"));
        // A second fork of the parent is not disturbed by the first one's image.
        assertEquals("ok", ForkTest.ask(parent, "write 7 4242"));
        VirtualMachine.ForkResult r2 = parent.fork(2, 3);
        assertNotEquals(r.forkId(), r2.forkId());
        long id2 = shipped.poll(10, TimeUnit.SECONDS).outcome(1).get(30, TimeUnit.SECONDS).vmId();
        assertEquals("4242", ForkTest.ask(b.vm(id2), "read 7"));
        assertNotEquals("4242", ForkTest.ask(clone, "read 7"));
    }

    @Test
    void aVcpuWaitingInForkStatusDoesNotHoldUpAForkAndItsCopyReissuesTheCall() throws Exception {
        BlockingQueue<RemoteFork> held = new LinkedBlockingQueue<>();
        a.useCopyPlacement(placement(t -> t == 5 ? List.of(new CopyTarget.Remote(HOST_B, 1)) : List.of(CopyTarget.LOCAL),
                held::add));
        VirtualMachine parent = forkerOnA();
        var reply = parent.channel().request("rfork 1 5".getBytes(java.nio.charset.StandardCharsets.UTF_8));
        RemoteFork fork = held.poll(10, TimeUnit.SECONDS);
        assertNotNull(fork);
        Thread.sleep(100); // the parent is now waiting in FORK_STATUS
        assertFalse(reply.isDone());
        VirtualMachine.ForkResult r = parent.fork(1, 0);
        assertTrue(r.pausedNanos() < TimeUnit.SECONDS.toNanos(2), "the fork waited for FORK_STATUS");
        VirtualMachine copy = r.children().get(0);
        // The copy re-issued FORK_STATUS and got EINVAL: the ticket is its parent's.
        String fromCopy = onA.next(copy);
        assertTrue(fromCopy.endsWith(" waited=error-1"), fromCopy);
        // The parent still waits, and hears the outcome as soon as it comes.
        assertFalse(reply.isDone());
        long t0 = System.nanoTime();
        fork.failed(0, Hypercalls.ELIMIT, "host B is full");
        String out = new String(reply.get(5, TimeUnit.SECONDS), java.nio.charset.StandardCharsets.UTF_8);
        assertTrue(System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(3));
        assertEquals("-7:0", rfork(out).group(5));
        fork.close();
    }

    @Test
    void aCloneWhoseForkBlockLiesOutsideItsRamIsRefusedAndLeavesNothing() throws Exception {
        BlockingQueue<RemoteFork> held = new LinkedBlockingQueue<>();
        a.useCopyPlacement(placement(t -> List.of(new CopyTarget.Remote(HOST_B, 1)), held::add));
        VirtualMachine parent = forkerOnA();
        parent.fork(1, 0);
        try (RemoteFork fork = held.poll(10, TimeUnit.SECONDS)) {
            assertNotNull(fork);
            int fds = VmmTesting.vmFds();
            for (long block : new long[] {0x1000, (64L << 20) - 40, -64}) {
                LaunchException e = assertThrows(LaunchException.class,
                        () -> b.launchClone(fork.state(), fork.image(), new CloneSpec(0, block, 0, null)));
                assertTrue(e.getMessage().contains("fork block"), e.getMessage());
            }
            assertEquals(0, b.liveCount(), "a refused clone kept its VM slot");
            assertEquals(fds, VmmTesting.vmFds(), "a refused clone left fds behind");
            // The same state and image make a clone once the block is right.
            VirtualMachine clone = b.launchClone(fork.state(), fork.image(), new CloneSpec(0, 0, 0, null));
            fork.started(0, clone.id());
            assertEquals(1, b.liveCount());
        }
    }
}
