package io.vmfork.cluster.node;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.typesafe.config.ConfigFactory;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.net.Inet4Address;
import java.net.InetAddress;
import java.net.InetSocketAddress;
import java.net.NetworkInterface;
import java.net.Socket;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import org.apache.pekko.cluster.MemberStatus;
import org.apache.pekko.cluster.typed.Cluster;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;

/**
 * The status server is safe to expose: loopback by default, a {@code Host} that is not one
 * of the node's names refused (DNS rebinding), Pekko Management's write routes refused even
 * when a node's file asks for them, a bearer token required where one is configured (but
 * not for {@code /ready} and {@code /alive}), and the cluster page's feeds capped in total
 * and per client address under 100 clients at once. Real HTTP over loopback: the JDK's
 * client, and plain sockets where a request must forge its {@code Host} or come from
 * another loopback address.
 */
class StatusServerAccessTest {
    private static final String TOKEN = "t0ken-for-the-status-server-test";
    private final HttpClient http = HttpClient.newBuilder().connectTimeout(Duration.ofSeconds(5)).build();
    private VmforkNode node;

    @AfterEach
    void stop() {
        if (node != null) {
            node.system().terminate();
            node.whenTerminated().toCompletableFuture().orTimeout(30, TimeUnit.SECONDS).join();
        }
    }

    private VmforkNode start(long hostId, String extra) {
        node = VmforkNode.start(ConfigFactory.parseString("vmfork.host { id = " + hostId + ", name = h" + hostId + " }\n"
                + "vmfork.node { fork-warm-up = off, status.http-port = 0 }\nvmfork.transfer.warm-up = off\n" + extra)
                .withFallback(ConfigFactory.load()).resolve());
        return node;
    }

    private int port() {
        return node.statusServer().orElseThrow().port();
    }

    private HttpResponse<String> send(String method, String path, String token) throws Exception {
        HttpRequest.Builder b = HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port() + path))
                .timeout(Duration.ofSeconds(10)).method(method, HttpRequest.BodyPublishers.noBody());
        if (token != null) {
            b.header("Authorization", "Bearer " + token);
        }
        return http.send(b.build(), HttpResponse.BodyHandlers.ofString());
    }

    /** The status code of a request written by hand: a forged Host, a chosen source address. */
    private static int rawStatus(Socket s, int port, String host, String path) throws IOException {
        if (!s.isConnected()) {
            s.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 5000);
        }
        s.setSoTimeout(10_000);
        OutputStream out = s.getOutputStream();
        out.write(("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nAccept: text/event-stream\r\n\r\n")
                .getBytes(StandardCharsets.US_ASCII));
        out.flush();
        String line = new BufferedReader(new InputStreamReader(s.getInputStream(), StandardCharsets.US_ASCII))
                .readLine();
        assertTrue(line != null && line.startsWith("HTTP/1.1 "), "no status line: " + line);
        return Integer.parseInt(line.substring(9, 12));
    }

    private int rawStatus(String host, String path) throws IOException {
        try (Socket s = new Socket()) {
            return rawStatus(s, port(), host, path);
        }
    }

    private void awaitUp() throws InterruptedException {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (Cluster.get(node.system()).selfMember().status() != MemberStatus.up()) {
            assertTrue(System.nanoTime() < deadline, "the node did not become Up");
            Thread.sleep(50);
        }
    }

    @Test
    void aHostHeaderThatIsNotOneOfTheNodesNamesIsRefused() throws Exception {
        start(61, "");
        int port = port();
        // What a page of evil.example reads after rebinding its name to 127.0.0.1.
        assertEquals(421, rawStatus("evil.example:" + port, "/status"));
        assertEquals(421, rawStatus("evil.example", "/cluster/members"));
        assertEquals(421, rawStatus("127.0.0.1.evil.example:" + port, "/"));
        assertEquals(421, rawStatus("evil.example:" + port, "/events"));
        assertEquals(0, node.statusServer().orElseThrow().page().openFeeds());
        // The node's own names, with any port or none.
        assertEquals(200, rawStatus("127.0.0.1:" + port, "/status"));
        assertEquals(200, rawStatus("localhost:" + port, "/status"));
        assertEquals(200, rawStatus("LOCALHOST", "/status"));
        assertEquals(200, rawStatus("[::1]:" + port, "/status"));
        assertEquals(200, send("GET", "/status", null).statusCode());
    }

    @Test
    void configuredHostNamesReplaceTheDefaults() throws Exception {
        start(62, "vmfork.node.status.allowed-hosts = [\"status.example\"]");
        assertEquals(200, rawStatus("status.example:" + port(), "/status"));
        assertEquals(421, rawStatus("localhost:" + port(), "/status"));
    }

    @Test
    void aTokenIsRequiredWhereConfiguredButNotForReadyAndAlive() throws Exception {
        start(63, "vmfork.node.status.token = \"" + TOKEN + "\"");
        awaitUp();
        for (String path : new String[] {"/status", "/", "/events", "/page/app.js", "/cluster/members"}) {
            HttpResponse<String> none = send("GET", path, null);
            assertEquals(401, none.statusCode(), path + ": " + none.body());
            assertEquals("Bearer realm=\"vmfork\"", none.headers().firstValue("www-authenticate").orElse(""), path);
            assertEquals(401, send("GET", path, TOKEN + "x").statusCode(), path);
            assertEquals(401, send("GET", path, TOKEN.substring(1)).statusCode(), path);
            assertEquals(401, send("GET", path, "").statusCode(), path);
        }
        assertTrue(send("GET", "/status", null).body().contains("vmfork.node.status.token"));
        assertEquals(0, node.statusServer().orElseThrow().page().openFeeds());
        assertEquals(200, send("GET", "/status", TOKEN).statusCode());
        assertEquals(200, send("GET", "/cluster/members", TOKEN).statusCode());
        // Health checks stay open to a load balancer without credentials.
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(20);
        while (send("GET", "/ready", null).statusCode() != 200) {
            assertTrue(System.nanoTime() < deadline, "/ready: " + send("GET", "/ready", null).body());
            Thread.sleep(100);
        }
        assertEquals(200, send("GET", "/alive", null).statusCode());
        // The Host check comes first: a token does not make a foreign name acceptable.
        assertEquals(421, rawStatus("evil.example", "/ready"));
    }

    @Test
    void managementWriteRoutesAreRefusedEvenWhenTheNodesFileAsksForThem() throws Exception {
        start(64, "pekko.management.http.route-providers-read-only = false");
        awaitUp();
        String self = node.system().address().toString();
        String member = "/cluster/members/" + java.net.URLEncoder.encode(self, StandardCharsets.UTF_8);
        assertEquals(200, send("GET", member, null).statusCode());
        HttpResponse<String> leave = send("DELETE", member, null);
        assertTrue(leave.statusCode() == 405 || leave.statusCode() == 404, leave.statusCode() + " " + leave.body());
        HttpResponse<String> down = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port() + member))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .PUT(HttpRequest.BodyPublishers.ofString("operation=Down")).timeout(Duration.ofSeconds(10)).build(),
                HttpResponse.BodyHandlers.ofString());
        assertTrue(down.statusCode() == 405 || down.statusCode() == 404, down.statusCode() + " " + down.body());
        HttpResponse<String> join = http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port()
                        + "/cluster/members")).header("Content-Type", "application/x-www-form-urlencoded")
                .POST(HttpRequest.BodyPublishers.ofString("address=" + self)).timeout(Duration.ofSeconds(10)).build(),
                HttpResponse.BodyHandlers.ofString());
        assertTrue(join.statusCode() == 405 || join.statusCode() == 404, join.statusCode() + " " + join.body());
        Thread.sleep(1000);
        assertEquals(MemberStatus.up(), Cluster.get(node.system()).selfMember().status(), "the node was made to leave");
        assertTrue(node.system().settings().config().getBoolean("pekko.management.http.route-providers-read-only"));
    }

    @Test
    void theStatusServerBindsLoopbackEvenWhenTheNodeDoesNot() throws Exception {
        Optional<InetAddress> external = Collections.list(NetworkInterface.getNetworkInterfaces()).stream()
                .filter(i -> {
                    try {
                        return i.isUp() && !i.isLoopback();
                    } catch (java.net.SocketException e) {
                        return false;
                    }
                })
                .flatMap(i -> Collections.list(i.getInetAddresses()).stream())
                .filter(a -> a instanceof Inet4Address && !a.isLoopbackAddress() && !a.isLinkLocalAddress())
                .findFirst();
        Assumptions.assumeTrue(external.isPresent(), "no non-loopback IPv4 address on this host");
        // Artery off loopback needs credentials or an explicit insecure = on; this test is
        // about where the status server binds, not about Artery's protection.
        start(65, "vmfork.node.hostname = \"" + external.get().getHostAddress() + "\"\n"
                + "vmfork.security.insecure = on");
        InetSocketAddress bound = node.statusServer().orElseThrow().address();
        assertTrue(bound.getAddress().isLoopbackAddress(), "bound at " + bound);
        assertEquals(200, send("GET", "/status", null).statusCode());
    }

    /**
     * 100 clients ask for a feed at once; the status codes they get, by client address
     * (each address's clients connect from it).
     */
    private Map<InetAddress, List<Integer>> feedsAtOnce(List<InetAddress> from, List<Socket> open) throws Exception {
        int port = port();
        ExecutorService pool = Executors.newFixedThreadPool(from.size());
        CountDownLatch go = new CountDownLatch(1);
        try {
            List<Future<Integer>> codes = new ArrayList<>();
            for (InetAddress a : from) {
                Socket s = new Socket();
                open.add(s);
                s.bind(new InetSocketAddress(a, 0));
                s.connect(new InetSocketAddress(InetAddress.getLoopbackAddress(), port), 5000);
                codes.add(pool.submit(() -> {
                    go.await();
                    return rawStatus(s, port, "127.0.0.1:" + port, "/events");
                }));
            }
            go.countDown();
            Map<InetAddress, List<Integer>> byClient = new HashMap<>();
            for (int i = 0; i < from.size(); i++) {
                byClient.computeIfAbsent(from.get(i), k -> new ArrayList<>()).add(codes.get(i).get(30, TimeUnit.SECONDS));
            }
            return byClient;
        } finally {
            pool.shutdownNow();
        }
    }

    private static long count(List<Integer> codes, int code) {
        return codes.stream().filter(c -> c == code).count();
    }

    private void closeAllAndAwaitNoFeed(List<Socket> open) throws Exception {
        for (Socket s : open) {
            s.close();
        }
        open.clear();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(15);
        while (node.statusServer().orElseThrow().page().openFeeds() != 0) {
            assertTrue(System.nanoTime() < deadline, "feeds of closed connections are still counted: "
                    + node.statusServer().orElseThrow().page().openFeeds());
            Thread.sleep(50);
        }
    }

    @Test
    void feedsAreCappedInTotalAndPerClientUnder100ClientsAtOnce() throws Exception {
        start(66, "vmfork.node.status.page { max-browsers = 10, max-browsers-per-client = 6, heartbeat = 500ms }");
        InetAddress one = InetAddress.getByName("127.0.0.1");
        InetAddress two = InetAddress.getByName("127.0.0.2");
        List<Socket> open = new ArrayList<>();
        try {
            // One client address: exactly its cap, the others 429.
            List<Integer> codes = feedsAtOnce(Collections.nCopies(100, one), open).get(one);
            assertEquals(6, count(codes, 200), codes.toString());
            assertEquals(94, count(codes, 429), codes.toString());
            assertEquals(6, node.statusServer().orElseThrow().page().openFeeds());
            closeAllAndAwaitNoFeed(open);

            // Two addresses, 50 each: exactly the node's cap in all, neither past its own.
            List<InetAddress> from = new ArrayList<>();
            for (int i = 0; i < 50; i++) {
                from.add(one);
                from.add(two);
            }
            Map<InetAddress, List<Integer>> byClient = feedsAtOnce(from, open);
            long granted = count(byClient.get(one), 200) + count(byClient.get(two), 200);
            assertEquals(10, granted, byClient.toString());
            assertTrue(count(byClient.get(one), 200) <= 6 && count(byClient.get(two), 200) <= 6, byClient.toString());
            for (List<Integer> c : byClient.values()) {
                assertEquals(c.size(), count(c, 200) + count(c, 429) + count(c, 503), c.toString());
            }
            assertEquals(10, node.statusServer().orElseThrow().page().openFeeds());
            closeAllAndAwaitNoFeed(open);

            // Given back: a browser gets a feed again.
            try (Socket s = new Socket()) {
                assertEquals(200, rawStatus(s, port(), "127.0.0.1:" + port(), "/events"));
            }
        } finally {
            for (Socket s : open) {
                s.close();
            }
        }
    }

    @Test
    void statusSettingsDefaultToLoopbackAndCheckTheToken() {
        StatusSettings d = StatusSettings.create(ConfigFactory.load());
        assertEquals("127.0.0.1", d.bind());
        assertEquals(java.util.Set.of("127.0.0.1", "localhost", "::1"), d.allowedHosts());
        assertTrue(!d.tokenRequired() && !d.tokenMatches(""));
        InvalidNodeConfigException shortToken = org.junit.jupiter.api.Assertions.assertThrows(
                InvalidNodeConfigException.class, () -> StatusSettings.create(ConfigFactory.parseString(
                        "vmfork.node.status.token = short").withFallback(ConfigFactory.load())));
        assertTrue(shortToken.getMessage().contains("vmfork.node.status.token"), shortToken.getMessage());
        StatusSettings t = StatusSettings.create(ConfigFactory.parseString("vmfork.node.status.token = \"" + TOKEN
                + "\"").withFallback(ConfigFactory.load()));
        assertTrue(t.tokenMatches(TOKEN) && !t.tokenMatches(TOKEN + " ") && !t.tokenMatches(null));
        assertTrue(!t.toString().contains(TOKEN), t.toString());
    }
}
