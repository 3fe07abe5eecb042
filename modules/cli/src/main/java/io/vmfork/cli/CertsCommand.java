package io.vmfork.cli;

import io.vmfork.cluster.security.ClusterCredentials;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

/**
 * {@code vmfork certs --dir DIR [--cluster NAME] [--node NAME]... [--client NAME]... [--days N]}:
 * the cluster's credentials ({@link ClusterCredentials}). Creates the cluster CA in DIR
 * when DIR has none, then issues a certificate and key for every {@code --node} and
 * {@code --client}, replacing those issued before (rotation: nodes reload them within
 * {@code pekko.remote.artery.ssl.rotating-keys-engine.ssl-context-cache-ttl}). Prints the
 * {@code vmfork.security} lines of each member's config.
 */
final class CertsCommand {
    private CertsCommand() {
    }

    static int run(Args args) {
        args.allowOnly("dir", "cluster", "node", "client", "days");
        String dirText = args.option("dir");
        if (dirText == null) {
            throw new Args.UsageException("missing --dir DIR (where the CA and the members' files are)");
        }
        Path dir = Path.of(dirText).toAbsolutePath();
        String clusterName = args.option("cluster");
        List<String> nodes = args.all("node");
        List<String> clients = args.all("client");
        int days = args.intOption("days", (int) ClusterCredentials.MEMBER_VALIDITY.toDays());
        if (days < 1) {
            throw new Args.UsageException("--days must be at least 1");
        }
        boolean haveCa = Files.exists(dir.resolve(ClusterCredentials.CA_CERT));
        if (haveCa && nodes.isEmpty() && clients.isEmpty()) {
            throw new Args.UsageException(dir + " has a cluster CA already: name the members to issue certificates"
                    + " for with --node NAME or --client NAME");
        }
        try {
            ClusterCredentials.Authority ca;
            if (haveCa) {
                ca = ClusterCredentials.loadAuthority(dir);
                if (clusterName != null && !clusterName.equals(ca.clusterName())) {
                    System.err.println("vmfork certs: the CA in " + dir + " is cluster '" + ca.clusterName()
                            + "', not '" + clusterName + "'");
                    return Main.EX_USAGE;
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
            System.err.println("vmfork certs: " + e.getMessage());
            return Main.EX_USAGE;
        } catch (UncheckedIOException e) {
            System.err.println("vmfork certs: " + e.getCause().getMessage());
            return Main.EX_CANTCREAT;
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
