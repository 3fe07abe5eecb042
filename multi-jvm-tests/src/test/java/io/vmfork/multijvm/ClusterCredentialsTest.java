package io.vmfork.multijvm;

import static io.vmfork.multijvm.ApiTesting.FORM;
import static io.vmfork.multijvm.ApiTesting.await;
import static io.vmfork.multijvm.ApiTesting.joinClient;
import static io.vmfork.multijvm.TestCluster.awaitStatus;
import static io.vmfork.multijvm.TestCluster.exactlyUp;
import static io.vmfork.multijvm.TestCluster.members;
import static io.vmfork.multijvm.TestCluster.reported;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import com.fasterxml.jackson.databind.JsonNode;
import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import io.vmfork.cluster.api.VmCluster;
import io.vmfork.cluster.api.VmInfo;
import io.vmfork.cluster.host.HostActor;
import io.vmfork.cluster.node.NodeSettings;
import io.vmfork.cluster.placement.AdmissionLedger;
import io.vmfork.cluster.security.ClusterCredentials;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import javax.net.ssl.SSLEngine;
import javax.net.ssl.SSLSession;
import org.apache.pekko.actor.AbstractActor;
import org.apache.pekko.actor.ActorRef;
import org.apache.pekko.actor.ActorSystem;
import org.apache.pekko.actor.Props;
import org.apache.pekko.actor.typed.javadsl.Adapter;
import org.apache.pekko.cluster.Cluster;
import org.apache.pekko.cluster.Member;
import org.apache.pekko.remote.artery.tcp.SSLEngineProvider;
import org.apache.pekko.remote.artery.tcp.ssl.RotatingKeysSSLEngineProvider;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import scala.Option;

/**
 * Only holders of the cluster's credentials join or talk to its nodes. Three node JVMs
 * with certificates of the test's CA (Artery over TLS with mutual authentication, as
 * {@link TestCluster} configures every node); in the test JVM, three foreign actor systems
 * with vmfork's own serializers, named like the cluster, that try to join it through its
 * seed and send {@code Launch} to every node's HostActor for a while: one over plain TCP
 * without credentials, two over TLS with a certificate of another CA that carries the
 * cluster's name, one of them trusting its own CA (it refuses the nodes first), one
 * trusting the cluster's CA (public), so that the nodes check its certificate and refuse it;
 * and one with a certificate of the cluster's own CA issued for another cluster's name,
 * which skips its own check of the nodes' names. Neither ever becomes a member on any node, neither is answered, no VM is
 * launched, and the seed's log says which connections it refused and why (Pekko does not
 * give the TLS engine an inbound connection's address). Then a client with a
 * certificate of the cluster's CA joins and launches a VM through the application API.
 */
@ExtendWith(MultiJvmExtension.class)
class ClusterCredentialsTest {
    /** How long the foreign systems keep trying (joins retry every few seconds). */
    private static final Duration ATTEMPTS = Duration.ofSeconds(15);
    private static final long MIB = 1L << 20;

    /** Collects whatever the nodes answer to the foreign systems' Launch. */
    static final class Replies extends AbstractActor {
        private final BlockingQueue<Object> queue;

        Replies(BlockingQueue<Object> queue) {
            this.queue = queue;
        }

        @Override
        public Receive createReceive() {
            return receiveBuilder().matchAny(queue::add).build();
        }
    }

    /**
     * An actor system that is not a vmfork node, configured as a node's would be (so that
     * Pekko's join checks of the cluster configuration let it in: the split brain resolver,
     * vmfork's serializers) and with {@code transport} in front: it runs no HostActor and
     * nothing of vmfork's own.
     */
    private static ActorSystem foreign(String transport, int port, NodeProcess seed) {
        Config vmforkLike = ConfigFactory.parseString("""
                vmfork.host { id = 4000, name = "intruder" }
                vmfork.node { hostname = "127.0.0.1", port = %d, seed-nodes = ["%s"] }
                """.formatted(port, seed.hostPort())).withFallback(ConfigFactory.load()).resolve();
        Config c = ConfigFactory.parseString(transport + """
                pekko.loglevel = WARNING
                pekko.cluster.jmx.enabled = off
                """).withFallback(NodeSettings.create(vmforkLike).pekkoConfig())
                .withFallback(ConfigFactory.parseString(TestCluster.NODE_DEFAULTS)).withFallback(vmforkLike).resolve();
        return ActorSystem.create("vmfork", c);
    }

    /**
     * Pekko's rotating-keys engine without its check of the peer's subject names: an
     * intruder runs what code it likes, so the nodes' own check is what must refuse it.
     */
    public static final class WithoutSubjectCheck implements SSLEngineProvider {
        private final RotatingKeysSSLEngineProvider engines;

        public WithoutSubjectCheck(org.apache.pekko.actor.ActorSystem system) {
            engines = new RotatingKeysSSLEngineProvider(system);
        }

        @Override
        public SSLEngine createServerSSLEngine(String hostname, int port) {
            return engines.createServerSSLEngine(hostname, port);
        }

        @Override
        public SSLEngine createClientSSLEngine(String hostname, int port) {
            return engines.createClientSSLEngine(hostname, port);
        }

        @Override
        public Option<Throwable> verifyClientSession(String hostname, SSLSession session) {
            return Option.empty();
        }

        @Override
        public Option<Throwable> verifyServerSession(String hostname, SSLSession session) {
            return Option.empty();
        }
    }

    private static String tlsWith(ClusterCredentials.MemberFiles f) {
        return tlsWith(f, RotatingKeysSSLEngineProvider.class);
    }

    private static String tlsWith(ClusterCredentials.MemberFiles f, Class<? extends SSLEngineProvider> provider) {
        String engine = "pekko.remote.artery.ssl.rotating-keys-engine";
        return "pekko.remote.artery.transport = tls-tcp\n"
                + "pekko.remote.artery.ssl.ssl-engine-provider = \"" + provider.getName() + "\"\n"
                + engine + ".key-file = \"" + f.keyFile() + "\"\n"
                + engine + ".cert-file = \"" + f.certFile() + "\"\n"
                + engine + ".ca-cert-file = \"" + f.caCertFile() + "\"\n";
    }

    private static boolean seesAnyOf(ActorSystem system, List<NodeProcess> nodes) {
        for (Member m : Cluster.get(system).state().getMembers()) {
            for (NodeProcess n : nodes) {
                if (m.address().toString().equals(n.address())) {
                    return true;
                }
            }
        }
        return false;
    }

    @Test
    void membersWithoutTheClustersCertificateAreRefusedAndAClientWithOneJoins(TestCluster cluster) throws Exception {
        NodeProcess n1 = cluster.start("node-1", 1, null, "");
        NodeProcess n2 = cluster.start("node-2", 2, n1, "");
        NodeProcess n3 = cluster.start("node-3", 3, n1, "");
        List<NodeProcess> three = List.of(n1, n2, n3);
        awaitStatus(three, exactlyUp(three, 0).and(reported(three)), FORM, "3 members Up over TLS");
        for (NodeProcess n : three) {
            String log = Files.readString(n.log());
            assertTrue(log.contains("Artery over TLS with mutual authentication as CN=" + n.toString().split(" ")[0]),
                    log);
        }

        // Another CA, certificates otherwise like ours (the cluster's name among their subject names).
        Path otherDir = Files.createTempDirectory(cluster.dir(), "other-ca-");
        ClusterCredentials.Authority other = ClusterCredentials.createAuthority(otherDir, "vmfork");
        ClusterCredentials.MemberFiles otherFiles = ClusterCredentials.issue(other, otherDir, "intruder",
                ClusterCredentials.Role.NODE, Duration.ofDays(1));

        // The cluster's CA certificate is no secret: the third trusts it, so the nodes see its certificate.
        ClusterCredentials.MemberFiles trustingOurs = new ClusterCredentials.MemberFiles(otherFiles.keyFile(),
                otherFiles.certFile(), cluster.dir().resolve("certs").resolve(ClusterCredentials.CA_CERT));


        // The cluster's own CA, but for another cluster's name: the nodes' subject check refuses it.
        Path certs = cluster.dir().resolve("certs");
        ClusterCredentials.Authority ours = ClusterCredentials.loadAuthority(certs);
        ClusterCredentials.MemberFiles otherCluster = ClusterCredentials.issue(new ClusterCredentials.Authority(
                        "staging", ours.certificate(), ours.key(), ours.certFile()), otherDir, "stranger",
                ClusterCredentials.Role.NODE, Duration.ofDays(1));
        otherCluster = new ClusterCredentials.MemberFiles(otherCluster.keyFile(), otherCluster.certFile(),
                certs.resolve(ClusterCredentials.CA_CERT));

        List<Integer> ports = List.of(TestCluster.freePort(), TestCluster.freePort(), TestCluster.freePort(),
                TestCluster.freePort());
        List<ActorSystem> intruders = List.of(
                foreign("pekko.remote.artery.transport = tcp\n", ports.get(0), n1),
                foreign(tlsWith(otherFiles), ports.get(1), n1),
                foreign(tlsWith(trustingOurs), ports.get(2), n1),
                foreign(tlsWith(otherCluster, WithoutSubjectCheck.class), ports.get(3), n1));
        try {
            BlockingQueue<Object> replies = new LinkedBlockingQueue<>();
            List<ActorRef> replyTo = intruders.stream()
                    .map(s -> s.actorOf(Props.create(Replies.class, () -> new Replies(replies)), "replies")).toList();
            long deadline = System.nanoTime() + ATTEMPTS.toNanos();
            while (System.nanoTime() < deadline) {
                for (int i = 0; i < intruders.size(); i++) {
                    for (NodeProcess n : three) {
                        intruders.get(i).actorSelection(n.address() + "/system/host").tell(new HostActor.Launch("spin",
                                1, 16 * MIB, AdmissionLedger.NO_RESERVATION, Adapter.toTyped(replyTo.get(i))),
                                ActorRef.noSender());
                    }
                }
                for (NodeProcess n : three) {
                    JsonNode s = n.status().orElseThrow(() -> new AssertionError(n + " has no status"));
                    for (int port : ports) {
                        assertFalse(members(s).contains("pekko://vmfork@127.0.0.1:" + port),
                                "the foreign system at port " + port + " is a member: " + s);
                    }
                    assertEquals(0, s.path("vms").size(), "a VM was launched: " + s);
                }
                for (int i = 0; i < intruders.size(); i++) {
                    assertFalse(seesAnyOf(intruders.get(i), three), "foreign system " + i + " sees a node as a member");
                }
                Thread.sleep(1000);
            }
            Object reply = replies.poll(1, TimeUnit.SECONDS);
            if (reply != null) {
                fail("a node answered a foreign system's Launch: " + reply);
            }
            awaitStatus(three, exactlyUp(three, 0), Duration.ofSeconds(5), "the cluster still the 3 nodes only");
            // The seed, which both tried to join through, logged each refusal and why.
            String log = Files.readString(n1.log());
            String refused = "vmfork: Artery TLS refused an inbound connection (peer address unknown): ";
            assertTrue(log.contains(refused + "not TLS"), log);
            assertTrue(log.contains(refused + "the peer does not accept this member's certificate"), log);
            assertTrue(log.contains(refused + "its certificate is not issued by this cluster's CA"), log);
            assertTrue(log.contains("peer certificate subject CN=stranger,OU=node,O=vmfork, issuer CN=vmfork CA,OU=ca,"
                    + "O=vmfork"), log);
        } finally {
            intruders.forEach(ActorSystem::terminate);
        }

        // The same from a member holding a client certificate of the cluster's CA: it joins and works.
        ClientMember client = joinClient(cluster, three, "");
        VmCluster api = client.cluster();
        VmInfo vm = await(api.launch("spin", 1, 16 * MIB));
        awaitStatus(three, s -> s.path("host").path("id").asLong() != vm.hostId() || s.path("vms").size() == 1,
                Duration.ofSeconds(30), "the client's VM listed on its host");
        await(api.stop(vm.vmId()));
    }
}
