package io.vmfork.cluster.web;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.node.InvalidNodeConfigException;
import io.vmfork.cluster.node.VmforkNode;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.CompletableFuture;
import org.apache.pekko.actor.testkit.typed.javadsl.ActorTestKit;
import org.apache.pekko.actor.testkit.typed.javadsl.TestProbe;
import org.apache.pekko.actor.typed.ActorRef;
import org.apache.pekko.actor.typed.Props;
import org.apache.pekko.http.javadsl.model.sse.ServerSentEvent;
import org.apache.pekko.stream.BoundedSourceQueue;
import org.apache.pekko.stream.javadsl.Sink;
import org.apache.pekko.stream.javadsl.Source;
import org.reactivestreams.Subscriber;
import org.reactivestreams.Subscription;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;

/**
 * The cluster page's HTTP side on one node (the browser side is the multi-JVM
 * ClusterPageTest): the page and its assets come from the jar; {@code GET /events} opens
 * with a snapshot and then streams a real VM's lifecycle; feeds beyond
 * {@code max-browsers} are refused; a feed's actor goes when its browser does; a browser
 * that reads nothing has its feed dropped once its buffer is full.
 */
class ClusterPageServerTest {
    private static final ObjectMapper JSON = new ObjectMapper();
    private static final long MIB = 1L << 20;
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    private VmforkNode node;

    @AfterEach
    void stop() {
        if (node != null) {
            node.system().terminate();
            node.whenTerminated().toCompletableFuture().orTimeout(20, TimeUnit.SECONDS).join();
        }
    }

    private HttpResponse<String> get(int port, String path) throws Exception {
        return http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path))
                .timeout(Duration.ofSeconds(5)).build(), HttpResponse.BodyHandlers.ofString());
    }

    private HttpResponse<Stream<String>> events(int port) throws Exception {
        return http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + "/events"))
                        .version(HttpClient.Version.HTTP_1_1).build(),
                HttpResponse.BodyHandlers.ofLines());
    }

    /** The lines of a feed, read on a thread of their own so that a test waits with a timeout. */
    private static BlockingQueue<String> lines(HttpResponse<Stream<String>> feed) {
        BlockingQueue<String> q = new LinkedBlockingQueue<>();
        Thread reader = new Thread(() -> {
            try {
                feed.body().forEach(q::add);
            } catch (RuntimeException e) {
                // the test closed the feed
            }
            q.add(END);
        }, "feed-reader");
        reader.setDaemon(true);
        reader.start();
        return q;
    }

    private static final String END = "\0end";

    /**
     * The next SSE message of {@code type} (other messages and heartbeats skipped), as JSON.
     * A message's fields come in any order (Pekko writes its data before its event type)
     * and end with an empty line.
     */
    private static JsonNode next(BlockingQueue<String> lines, String type) throws Exception {
        String event = null;
        String data = null;
        while (true) {
            String line = lines.poll(20, TimeUnit.SECONDS);
            if (line == null) {
                throw new AssertionError("no " + type + " message on the feed within 20 s");
            }
            if (line == END) {
                throw new AssertionError("the feed ended before a " + type + " message");
            }
            if (line.startsWith("event:")) {
                event = line.substring(6).trim();
            } else if (line.startsWith("data:")) {
                data = line.substring(5).trim();
            } else if (line.isEmpty()) {
                if (type.equals(event) && data != null) {
                    return JSON.readTree(data);
                }
                event = null;
                data = null;
            }
        }
    }

    @Test
    void servesThePageAndAFeedThatStartsWithASnapshotAndFollowsTheVms() throws Exception {
        node = VmforkNode.start(ConfigFactory.parseString("""
                vmfork.host { id = 43, name = "h43" }
                vmfork.node.status.http-port = 0
                vmfork.node.status.page { max-browsers = 1, hosts-interval = 100ms, heartbeat = 1s }
                pekko.actor.serialize-messages = on
                vmfork.node.capacity { vm-slots = 4, vcpus = 8, guest-memory = 1 GiB }
                """).withFallback(ConfigFactory.load()).resolve());
        int port = node.statusServer().orElseThrow().port();
        ClusterPage page = node.statusServer().orElseThrow().page();

        HttpResponse<String> index = get(port, "/");
        assertEquals(200, index.statusCode());
        assertTrue(index.headers().firstValue("content-type").orElse("").startsWith("text/html"), index.headers().toString());
        assertTrue(index.body().contains("id=\"tree\"") && index.body().contains("page/app.js"), index.body());
        for (String asset : new String[] {"/page/app.js", "/page/style.css"}) {
            HttpResponse<String> r = get(port, asset);
            assertEquals(200, r.statusCode(), asset);
            assertTrue(r.body().length() > 1000, asset + ": " + r.body());
        }
        assertEquals(0, page.openFeeds(), "no browser, no feed");

        HttpResponse<Stream<String>> feed = events(port);
        assertEquals(200, feed.statusCode());
        assertEquals("text/event-stream", feed.headers().firstValue("content-type").orElse(""));
        BlockingQueue<String> lines = lines(feed);
        JsonNode snapshot = next(lines, "snapshot");
        assertEquals(43, snapshot.path("self_host_id").asLong(), snapshot.toString());
        assertEquals(0, snapshot.path("vms").size(), snapshot.toString());
        assertTrue(snapshot.path("hosts").isArray(), snapshot.toString());
        assertEquals(1, page.openFeeds());

        // One feed at most: a second browser is refused.
        HttpResponse<String> second = get(port, "/events");
        assertEquals(503, second.statusCode(), second.body());
        assertTrue(second.body().contains("max-browsers"), second.body());

        // A real VM's launch reaches the feed, and its host's load follows.
        VmInfo vm = node.cluster().launchOn(43, "forker", 1, 16 * MIB).toCompletableFuture().get(30, TimeUnit.SECONDS);
        String id = Long.toHexString(vm.vmId());
        JsonNode launched;
        do {
            launched = next(lines, "vm");
        } while (!launched.path("kind").asText().equals("LAUNCHED"));
        assertEquals(id, launched.path("vm_id").asText(), launched.toString());
        assertEquals("booted", launched.path("vm").path("origin").asText(), launched.toString());
        assertEquals("forker", launched.path("vm").path("image").asText(), launched.toString());
        JsonNode hosts;
        do {
            hosts = next(lines, "hosts");
        } while (hosts.path("hosts").size() != 1 || hosts.path("hosts").get(0).path("vms").asInt() != 1);
        assertEquals(43, hosts.path("hosts").get(0).path("host_id").asLong(), hosts.toString());
        assertTrue(hosts.path("hosts").get(0).path("self").asBoolean(), hosts.toString());
        assertEquals(node.vmm().platform().name(), hosts.path("hosts").get(0).path("platform").asText(),
                hosts.toString());
        node.cluster().stop(vm.vmId()).toCompletableFuture().get(30, TimeUnit.SECONDS);
        JsonNode stopped;
        do {
            stopped = next(lines, "vm");
        } while (!stopped.path("vm_id").asText().equals(id) || stopped.path("kind").asText().equals("READY"));
        assertEquals("STOPPED", stopped.path("kind").asText(), stopped.toString());

        // The browser goes: so does its feed (at its next heartbeat at the latest), and
        // another may connect.
        feed.body().close();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (page.openFeeds() != 0) {
            if (System.nanoTime() > deadline) {
                fail("the feed of a closed connection is still open");
            }
            Thread.sleep(50);
        }
        HttpResponse<Stream<String>> again = events(port);
        assertEquals(200, again.statusCode());
        assertEquals(0, next(lines(again), "snapshot").path("vms").size());
        again.body().close();
    }

    @Test
    void aBrowserThatReadsNothingHasItsFeedDroppedOnceItsBufferIsFull() throws Exception {
        node = VmforkNode.start(ConfigFactory.parseString("""
                vmfork.host { id = 44, name = "h44" }
                vmfork.node.capacity { vm-slots = 4, vcpus = 8, guest-memory = 1 GiB }
                """).withFallback(ConfigFactory.load()).resolve());
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (!node.cluster().knowsHost(44).toCompletableFuture().get(10, TimeUnit.SECONDS)) {
            assertTrue(System.nanoTime() < deadline, "the node's HostActor is not registered");
            Thread.sleep(20);
        }
        // A response whose browser never asks for more: the feed's queue only fills.
        CompletableFuture<Throwable> ended = new CompletableFuture<>();
        Subscriber<ServerSentEvent> stalled = new Subscriber<>() {
            @Override
            public void onSubscribe(Subscription s) {
            }

            @Override
            public void onNext(ServerSentEvent e) {
            }

            @Override
            public void onError(Throwable t) {
                ended.complete(t);
            }

            @Override
            public void onComplete() {
                ended.complete(null);
            }
        };
        BoundedSourceQueue<ServerSentEvent> queue = Source.<ServerSentEvent>queue(16)
                .to(Sink.fromSubscriber(stalled)).run(node.system());
        ActorRef<PageFeed.Command> feed = node.system().systemActorOf(PageFeed.create(node.cluster(), 44,
                new PageSettings(16, 1, 1, Duration.ofMillis(100), Duration.ofSeconds(15)), queue), "stalled-feed",
                Props.empty());
        TestProbe<Object> watcher = ActorTestKit.create(node.system()).createTestProbe();

        // Each hello VM: LAUNCHED, READY, EXITED, and its host's load twice.
        for (int i = 0; i < 20 && !ended.isDone(); i++) {
            node.cluster().launchOn(44, "hello", 3, 16 * MIB).toCompletableFuture().get(30, TimeUnit.SECONDS);
            Thread.sleep(150);
        }
        Throwable why = ended.get(10, TimeUnit.SECONDS);
        assertTrue(why instanceof PageFeed.PageFeedOverflow, String.valueOf(why));
        assertTrue(why.getMessage().contains("16 messages behind"), why.getMessage());
        watcher.expectTerminated(feed, Duration.ofSeconds(10));
    }

    @Test
    void pageSettingsAreChecked() {
        PageSettings s = PageSettings.create(ConfigFactory.load());
        assertEquals(256, s.buffer());
        assertEquals(16, s.maxBrowsers());
        InvalidNodeConfigException e = org.junit.jupiter.api.Assertions.assertThrows(InvalidNodeConfigException.class,
                () -> PageSettings.create(ConfigFactory.parseString("vmfork.node.status.page.buffer = 2")
                        .withFallback(ConfigFactory.load())));
        assertTrue(e.getMessage().contains("vmfork.node.status.page.buffer"), e.getMessage());
    }
}
