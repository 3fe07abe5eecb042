package io.vmfork.multijvm;

import static io.vmfork.multijvm.TestCluster.awaitStatus;
import static io.vmfork.multijvm.TestCluster.exactlyUp;
import static io.vmfork.multijvm.TestCluster.reported;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import io.vmfork.cluster.api.VmCluster;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.api.VmOrigin;
import io.vmfork.cluster.host.HostActor;
import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Optional;
import java.util.TreeMap;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.openqa.selenium.By;
import org.openqa.selenium.JavascriptExecutor;
import org.openqa.selenium.OutputType;
import org.openqa.selenium.TimeoutException;
import org.openqa.selenium.WebDriver;
import org.openqa.selenium.WebElement;
import org.openqa.selenium.chrome.ChromeDriver;
import org.openqa.selenium.chrome.ChromeDriverService;
import org.openqa.selenium.chrome.ChromeOptions;
import org.openqa.selenium.support.ui.WebDriverWait;

/**
 * The cluster page in a real headless browser (Debian's chromium, driven through its
 * chromedriver): three node JVMs, the page of node 1 open, each host's card naming the
 * platform its node's own status names; a VM launched and forked into
 * children and remote clones through the application API appears on the page by itself
 * (hosts with their load, every VM with its host and origin, each copy under its parent
 * in the fork tree), and a VM stopped disappears from it and is logged, all without a
 * reload (a marker set in the page's window survives); a host killed takes its card and
 * VMs off the page (logged LOST); the page's own node killed, the page shows its feed lost,
 * and gets it back by itself from a node started on the same port. Leaves a screenshot of
 * the page in {@code target/cluster-page.png}.
 */
@ExtendWith(MultiJvmExtension.class)
class ClusterPageTest {
    private static final Duration FORM = Duration.ofSeconds(60);
    private static final Duration WAIT = Duration.ofSeconds(60);
    // A killed host's VMs are LOST a removal margin (stable-after 2 s + the failure
    // detector's 3 s pause) after its removal, some 12 s after the kill.
    private static final Duration PAGE = Duration.ofSeconds(30);
    private static final long MIB = 1L << 20;
    /** Selenium warns that it has no DevTools bindings for this chromium: the test uses none. */
    private static final java.util.logging.Logger DEVTOOLS_LOG = quiet("org.openqa.selenium.devtools");

    private static final String CONFIG = """
            vmfork.node.capacity { vm-slots = 12, vcpus = 64, guest-memory = 8 GiB }
            """;

    @Test
    void thePageShowsTheHostsTheVmsAndTheirTreeAndFollowsTheClusterLive(TestCluster cluster) throws Exception {
        Path browser = onPath("chromium", "chromium");
        Path driverBinary = onPath("chromedriver", "chromium-driver");

        NodeProcess n1 = cluster.start("node-1", 1, null, CONFIG);
        List<NodeProcess> three = List.of(n1, cluster.start("node-2", 2, n1, CONFIG),
                cluster.start("node-3", 3, n1, CONFIG));
        ClientMember client = cluster.joinAsClient(n1, CONFIG);
        awaitStatus(three, exactlyUp(three, 1).and(reported(three)), FORM,
                "the nodes and the test JVM Up, the hosts' loads reported");
        client.awaitUpWithReports(three.size(), FORM);
        VmCluster api = client.cluster();
        for (NodeProcess n : three) {
            long deadline = System.nanoTime() + FORM.toNanos();
            while (!await(api.placementKnowsHost(n.hostId()))) {
                assertTrue(System.nanoTime() < deadline, "the test JVM's placement does not know " + n);
                Thread.sleep(100);
            }
        }

        WebDriver page = chromium(browser, driverBinary);
        try {
            long opened = System.nanoTime();
            page.get("http://127.0.0.1:" + n1.httpPort() + "/");
            awaitPage(page, "the feed live", p -> "live".equals(attr(p, "feed-status", "data-state")));
            for (NodeProcess n : three) {
                awaitPage(page, "host " + n.hostId() + "'s card, up, with no VMs",
                        p -> "up".equals(attr(p, "host-" + n.hostId(), "data-status"))
                                && "0".equals(attr(p, "host-" + n.hostId(), "data-vms")));
            }
            assertEquals(3, page.findElements(By.cssSelector("#hosts article.host")).size());
            // Each card names the platform its host's guests run on, as that node's own
            // /status says (process on a machine without /dev/kvm, kvm where it opens).
            for (NodeProcess n : three) {
                String platform = platformOf(n);
                String card = "host-" + n.hostId();
                awaitPage(page, "host " + n.hostId() + "'s card naming its platform " + platform,
                        p -> platform.equals(p.findElement(By.cssSelector("#" + card + " .platform")).getText())
                                && platform.equals(attr(p, card, "data-platform")));
            }
            assertEquals(0, page.findElements(By.cssSelector("#vms tr")).size(), "no VMs yet");
            awaitPage(page, "host 1 marked as this node",
                    p -> p.findElement(By.id("host-1")).getText().contains("this node"));
            // A reload would lose this: every change below must come through the feed.
            ((JavascriptExecutor) page).executeScript("window.vmforkTestMarker = 'not reloaded';");
            System.out.println("multi-jvm: cluster page live with 3 hosts in "
                    + Duration.ofNanos(System.nanoTime() - opened).toMillis() + " ms");

            // A parent on host 1; two copies (least-loaded puts them on the empty hosts 2 and
            // 3: clones); then three more (one a host: a child on host 1 among clones); then a
            // copy of a clone (a second generation, made on the clone's host or sent on).
            VmInfo parent = await(api.launchOn(1, "forker", 1, 64 * MIB));
            List<VmInfo> copies = new ArrayList<>();
            copies.addAll(forked(await(api.fork(parent.vmId(), 2, 4)), 2));
            copies.addAll(forked(await(api.fork(parent.vmId(), 3, 4)), 3));
            VmInfo aClone = copies.stream().filter(c -> c.origin() == VmOrigin.CLONE).findFirst()
                    .orElseThrow(() -> new AssertionError("no remote clone among " + copies));
            copies.addAll(forked(await(api.fork(aClone.vmId(), 1, 5)), 1));
            List<VmInfo> all = new ArrayList<>();
            all.add(parent);
            all.addAll(copies);
            assertTrue(copies.stream().anyMatch(c -> c.origin() == VmOrigin.CHILD),
                    "placement made no child on its parent's host: " + copies);

            long shown = System.nanoTime();
            for (VmInfo vm : all) {
                String id = hex(vm.vmId());
                String origin = vm.origin().name().toLowerCase(Locale.ROOT);
                awaitPage(page, "VM " + id + "'s row (host " + vm.hostId() + ", " + origin + ")", p -> {
                    Optional<WebElement> row = byId(p, "vm-" + id);
                    return row.isPresent() && String.valueOf(vm.hostId()).equals(row.get().getAttribute("data-host-id"))
                            && origin.equals(row.get().getAttribute("data-origin"));
                });
                if (vm.parentId() != 0) {
                    String parentId = hex(vm.parentId());
                    awaitPage(page, "VM " + id + " under its parent " + parentId + " in the fork tree", p ->
                            !p.findElements(By.cssSelector("#tree-" + parentId + " > ul > li#tree-" + id
                                    + "[data-origin='" + origin + "'][data-host-id='" + vm.hostId() + "']")).isEmpty());
                }
            }
            Map<Long, Long> perHost = all.stream().collect(Collectors.groupingBy(VmInfo::hostId, TreeMap::new,
                    Collectors.counting()));
            for (NodeProcess n : three) {
                String count = String.valueOf(perHost.getOrDefault(n.hostId(), 0L));
                awaitPage(page, "host " + n.hostId() + "'s card counting " + count + " VMs",
                        p -> count.equals(attr(p, "host-" + n.hostId(), "data-vms")));
            }
            assertEquals(all.size(), page.findElements(By.cssSelector("#vms tr")).size());
            awaitPage(page, all.size() + " VMs counted",
                    p -> String.valueOf(all.size()).equals(p.findElement(By.id("vm-count")).getText()));
            assertEquals(1, page.findElements(By.cssSelector("#tree > ul.roots > li")).size(),
                    "one root: the booted parent");
            assertEquals(copies.size(), page.findElements(By.cssSelector(
                    "#log li[data-kind='FORKED']")).size(), "a FORKED line per copy in the log");
            System.out.println("multi-jvm: cluster page showed " + all.size() + " VMs on " + perHost + " within "
                    + Duration.ofNanos(System.nanoTime() - shown).toMillis() + " ms of the last fork");
            screenshot(page, Path.of("target", "cluster-page.png"));

            // A VM ends: the page drops it from the table, the tree and its host's count, and logs it.
            VmInfo ending = copies.get(0);
            String endingId = hex(ending.vmId());
            String hostCount = String.valueOf(perHost.get(ending.hostId()) - 1);
            await(api.stop(ending.vmId()));
            awaitPage(page, "VM " + endingId + " gone from the table and the tree",
                    p -> byId(p, "vm-" + endingId).isEmpty() && byId(p, "tree-" + endingId).isEmpty());
            awaitPage(page, "a STOPPED line of " + endingId + " in the log", p -> !p.findElements(By.cssSelector(
                    "#log li[data-kind='STOPPED'][data-vm-id='" + endingId + "']")).isEmpty());
            awaitPage(page, "host " + ending.hostId() + "'s card counting " + hostCount + " VMs",
                    p -> hostCount.equals(attr(p, "host-" + ending.hostId(), "data-vms")));
            assertEquals(all.size() - 1, page.findElements(By.cssSelector("#vms tr")).size());
            assertEquals("not reloaded", ((JavascriptExecutor) page).executeScript("return window.vmforkTestMarker;"),
                    "the page was reloaded: it must update through its feed");
            assertEquals("live", attr(page, "feed-status", "data-state"));

            // A host dies: the page drops it and its VMs, and logs them LOST.
            NodeProcess n3 = three.get(2);
            List<String> onHost3 = all.stream().filter(v -> v.hostId() == 3 && v.vmId() != ending.vmId())
                    .map(v -> hex(v.vmId())).toList();
            assertTrue(!onHost3.isEmpty(), "no VM left on host 3: " + all);
            n3.kill();
            awaitPage(page, "host 3's VMs " + onHost3 + " gone, each logged LOST", p -> onHost3.stream().allMatch(id ->
                    byId(p, "vm-" + id).isEmpty() && !p.findElements(By.cssSelector(
                            "#log li[data-kind='LOST'][data-vm-id='" + id + "']")).isEmpty()));
            awaitPage(page, "host 3's card gone or down", p -> byId(p, "host-3").map(
                    c -> !"up".equals(c.getAttribute("data-status")) || !"true".equals(c.getAttribute("data-reachable")))
                    .orElse(true));
            // Ordering requirements: the split brain resolver has downed and removed host 3
            // before the next node dies. A second member becoming unreachable while the first
            // is still in the reachability table is instability, and after
            // down-all-when-unstable the resolver downs every node, the replacement too.
            awaitPage(page, "host 3 removed from the cluster (2 hosts)",
                    p -> "2".equals(p.findElement(By.id("host-count")).getText()) && byId(p, "host-3").isEmpty());

            // The page's own node dies: the page says its feed is lost; a node started on the
            // same port gets it back, with a new snapshot, by itself.
            n1.kill();
            awaitPage(page, "the feed lost", p -> "lost".equals(attr(p, "feed-status", "data-state"))
                    && p.findElement(By.id("feed-banner")).isDisplayed());
            long restarted = System.nanoTime();
            NodeProcess n4 = cluster.start("node-4", 4, three.get(1), CONFIG, n1.httpPort());
            awaitPage(page, "the feed live again, from node 4, with host 4's card",
                    p -> "live".equals(attr(p, "feed-status", "data-state")) && byId(p, "host-4").isPresent()
                            && "this node".equals(p.findElement(By.cssSelector("#host-4 .self-tag")).getText()));
            String platform4 = platformOf(n4);
            awaitPage(page, "host 4's card naming its platform " + platform4,
                    p -> platform4.equals(p.findElement(By.cssSelector("#host-4 .platform")).getText()));
            List<String> onHost2 = all.stream().filter(v -> v.hostId() == 2 && v.vmId() != ending.vmId())
                    .map(v -> hex(v.vmId())).toList();
            awaitPage(page, "host 2's VMs " + onHost2 + " in node 4's snapshot",
                    p -> onHost2.stream().allMatch(id -> byId(p, "vm-" + id).isPresent()));
            System.out.println("multi-jvm: cluster page live again from node 4 "
                    + Duration.ofNanos(System.nanoTime() - restarted).toMillis() + " ms after it was started");
            assertEquals("not reloaded", ((JavascriptExecutor) page).executeScript("return window.vmforkTestMarker;"),
                    "the page was reloaded: it must reconnect by itself");
            assertTrue(n4.isAlive());
        } finally {
            page.quit();
        }
    }

    /** The platform node {@code n} runs its guests on, from its own {@code GET /status}. */
    private static String platformOf(NodeProcess n) {
        String name = n.status().orElseThrow(() -> new AssertionError(n + " does not answer GET /status"))
                .path("host").path("platform").path("name").asText();
        assertTrue(name.equals("kvm") || name.equals("process"), n + "'s /status names no platform: " + name);
        return name;
    }

    private static java.util.logging.Logger quiet(String name) {
        java.util.logging.Logger logger = java.util.logging.Logger.getLogger(name);
        logger.setLevel(java.util.logging.Level.SEVERE);
        return logger;
    }

    private static List<VmInfo> forked(HostActor.Forked f, int count) {
        assertEquals(List.of(), f.errors(), f.toString());
        assertEquals(count, f.children().size(), f.toString());
        return f.children();
    }

    /** A program on PATH, or a failure naming the Debian package that has it. */
    private static Path onPath(String program, String debianPackage) {
        return Stream.of(System.getenv().getOrDefault("PATH", "").split(File.pathSeparator))
                .filter(d -> !d.isEmpty())
                .map(d -> Path.of(d, program))
                .filter(Files::isExecutable)
                .findFirst()
                .orElseGet(() -> fail("the cluster page's browser test needs " + program + " on PATH: install"
                        + " Debian's " + debianPackage + " package (apt-get install chromium chromium-driver;"
                        + " .ci/run does)"));
    }

    /** Headless chromium through the given chromedriver (no Selenium Manager: no network here). */
    private static WebDriver chromium(Path browser, Path driverBinary) {
        ChromeOptions options = new ChromeOptions();
        options.setBinary(browser.toFile());
        // --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
        options.addArguments("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1440,1250", "--force-device-scale-factor=1");
        ChromeDriverService service = new ChromeDriverService.Builder()
                .usingDriverExecutable(driverBinary.toFile())
                .usingAnyFreePort()
                .build();
        WebDriver driver = new ChromeDriver(service, options);
        driver.manage().timeouts().pageLoadTimeout(PAGE);
        return driver;
    }

    private static void awaitPage(WebDriver page, String what, Function<WebDriver, Boolean> condition) {
        try {
            // The page re-renders rows as events come: an element found a moment ago may be
            // gone when its attribute is read; the condition is then simply asked again.
            new WebDriverWait(page, PAGE, Duration.ofMillis(100))
                    .ignoring(org.openqa.selenium.StaleElementReferenceException.class)
                    .until(p -> condition.apply(p) ? Boolean.TRUE : null);
        } catch (TimeoutException e) {
            fail("the cluster page did not show " + what + " within " + PAGE + "; feed: "
                    + attr(page, "feed-status", "data-state") + "; page text:\n" + page.findElement(By.tagName("body")).getText());
        }
    }

    private static Optional<WebElement> byId(WebDriver page, String id) {
        return page.findElements(By.id(id)).stream().findFirst();
    }

    private static String attr(WebDriver page, String id, String attribute) {
        return byId(page, id).map(e -> e.getAttribute(attribute)).orElse(null);
    }

    private static void screenshot(WebDriver page, Path to) throws Exception {
        Path shot = ((org.openqa.selenium.TakesScreenshot) page).getScreenshotAs(OutputType.FILE).toPath();
        Files.createDirectories(to.toAbsolutePath().getParent());
        Files.copy(shot, to, StandardCopyOption.REPLACE_EXISTING);
        Files.delete(shot);
        System.out.println("multi-jvm: cluster page screenshot in " + to.toAbsolutePath());
    }

    private static String hex(long vmId) {
        return Long.toHexString(vmId);
    }

    private static <T> T await(CompletionStage<T> stage) throws Exception {
        return stage.toCompletableFuture().get(WAIT.toSeconds(), TimeUnit.SECONDS);
    }
}
