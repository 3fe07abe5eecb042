package io.vmfork.cli;

import io.vmfork.cluster.security.ClusterCredentials;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code vmfork certs --dir DIR [--cluster NAME] [--node NAME]... [--client NAME]... [--days N]}:
 * the cluster's credentials ({@link ClusterCredentials}). Creates the cluster CA in DIR
 * when DIR has none, then issues a certificate and key for every {@code --node} and
 * {@code --client}, replacing those issued before (rotation: nodes reload them within
 * {@code pekko.remote.artery.ssl.rotating-keys-engine.ssl-context-cache-ttl}). Prints the
 * {@code vmfork.security} lines of each member's config.
 */
@Command(name = "certs", header = "Create the cluster's CA and its members' certificates and keys.", sortOptions = false,
        description = "The cluster's credentials, as PEM files in DIR: creates the cluster CA (ca.crt, ca.key) if DIR has "
                + "none, then a certificate and key (NAME.crt, NAME.key, mode 0600) for each node and client member, "
                + "replacing earlier ones (rotation). Prints each member's vmfork.security lines.",
        exitCodeListHeading = "%nExit codes:%n",
        exitCodeList = {"0:written", "64:bad usage: a name that is not a DNS label, a CA of another cluster, no member"
                + " named for an existing CA", "73:a file cannot be written"})
final class CertsCommand implements Callable<Integer> {
    @Mixin
    HelpOption help;

    @Option(names = "--dir", paramLabel = "DIR", required = true,
            description = "Where the CA and the members' files are (created if missing).")
    Path dirOption;

    @Option(names = "--cluster", paramLabel = "NAME",
            description = "The cluster's name, for a new CA (default vmfork); must match an existing CA's.")
    String clusterName;

    @Option(names = "--node", paramLabel = "NAME", description = "Issue a node certificate (repeatable).")
    List<String> nodes = new ArrayList<>();

    @Option(names = "--client", paramLabel = "NAME", description = "Issue a client certificate (repeatable).")
    List<String> clients = new ArrayList<>();

    @Option(names = "--days", paramLabel = "N", description = "Validity of the members' certificates, in days."
            + " Default: 365.")
    Integer daysOption;

    @Override
    public Integer call() {
        Path dir = dirOption.toAbsolutePath();
        int days = daysOption == null ? (int) ClusterCredentials.MEMBER_VALIDITY.toDays() : daysOption;
        if (days < 1) {
            throw Failure.usage("--days must be at least 1");
        }
        boolean haveCa = Files.exists(dir.resolve(ClusterCredentials.CA_CERT));
        if (haveCa && nodes.isEmpty() && clients.isEmpty()) {
            throw Failure.usage(dir + " has a cluster CA already: name the members to issue certificates"
                    + " for with --node NAME or --client NAME");
        }
        try {
            ClusterCredentials.Authority ca;
            if (haveCa) {
                ca = ClusterCredentials.loadAuthority(dir);
                if (clusterName != null && !clusterName.equals(ca.clusterName())) {
                    throw Failure.usage("the CA in " + dir + " is cluster '" + ca.clusterName() + "', not '"
                            + clusterName + "'");
                }
            } else {
                ca = ClusterCredentials.createAuthority(dir, clusterName == null ? "vmfork" : clusterName);
                System.out.println("created the CA of cluster '" + ca.clusterName() + "': " + dir.resolve(
                        ClusterCredentials.CA_CERT) + " (its key " + dir.resolve(ClusterCredentials.CA_KEY)
                        + " signs members' certificates: keep it off the nodes)");
            }
            for (String n : nodes) {
                issue(ca, dir, n, ClusterCredentials.Role.NODE, days);
            }
            for (String c : clients) {
                issue(ca, dir, c, ClusterCredentials.Role.CLIENT, days);
            }
            return 0;
        } catch (IllegalArgumentException e) {
            throw Failure.usage(e.getMessage());
        } catch (UncheckedIOException e) {
            throw Failure.cantCreate(e.getCause().getMessage());
        }
    }

    private static void issue(ClusterCredentials.Authority ca, Path dir, String name, ClusterCredentials.Role role,
                              int days) {
        ClusterCredentials.MemberFiles f = ClusterCredentials.issue(ca, dir, name, role, Duration.ofDays(days));
        System.out.println(role.unit() + " " + name + " (valid " + days + " days):");
        System.out.println("  vmfork.security { key-file = \"" + f.keyFile() + "\", cert-file = \"" + f.certFile()
                + "\", ca-cert-file = \"" + f.caCertFile() + "\" }");
    }
}
