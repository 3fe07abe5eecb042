package io.vmfork.cli;

import com.typesafe.config.Config;
import io.vmfork.cluster.node.HostIdConflict;
import io.vmfork.cluster.node.InvalidNodeConfigException;
import io.vmfork.cluster.node.VmforkNode;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Optional;
import java.util.concurrent.Callable;
import org.apache.pekko.actor.CoordinatedShutdown;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Option;

/**
 * {@code vmfork node --config FILE [--parent-pid PID]}: runs this host's cluster node until
 * it stops. Once started it prints one line to stderr, which tools that start nodes read
 * ({@link LocalCluster}): {@code vmfork node: host ID (NAME) at pekko://SYSTEM@HOST:PORT,
 * seeds [...], status at http://HOST:PORT/status, cluster page at http://HOST:PORT/} (the status
 * and page part only when it serves them),
 * with the ports it bound (a config may ask for port 0: any free one).
 */
@Command(name = "node", header = "Run this host's node of the vmfork cluster.", sortOptions = false,
        description = "Start this host's node of the vmfork cluster with the configuration in FILE (e.g. conf/node-1.conf) "
                + "and run until stopped (SIGINT/SIGTERM: it leaves the cluster first). Artery runs over TLS with mutual "
                + "authentication when FILE names credentials (vmfork.security; see certs). FILE, -D options and the "
                + "VMM's platform are checked before the node joins any cluster.",
        exitCodeListHeading = "%nExit codes:%n",
        exitCodeList = {"0:stopped (SIGINT, SIGTERM, or --parent-pid gone)", "64:bad usage",
            "66:FILE does not exist or cannot be read",
            "69:the node cannot start: a port in use, or this host cannot run guests",
            "70:an internal failure",
            "75:the cluster downed this node (a network partition or an operator): its VMs were stopped; start it"
                + " again to rejoin", "78:FILE (or a -D option) is invalid: an unknown key, a wrong value, an"
                + " address other than loopback without credentials; or the cluster has a node with its host id"})
final class NodeCommand implements Callable<Integer> {
    @Mixin
    HelpOption help;

    @Option(names = "--config", paramLabel = "FILE", required = true,
            description = "The node's configuration (HOCON; keys: docs/configuration.md).")
    Path file;

    @Option(names = "--parent-pid", paramLabel = "PID",
            description = "Stop once process PID is gone, even after a SIGKILL of it (tools that start nodes use it).")
    Long parentPid;

    @Override
    public Integer call() {
        if (!Files.isRegularFile(file) || !Files.isReadable(file)) {
            throw Failure.noInput("--config " + file + ": " + (Files.exists(file) ? (Files.isRegularFile(file)
                    ? "permission denied" : "not a file") : "no such file"));
        }
        if (parentPid != null) {
            watchParent(parentPid);
        }
        Config config = VmforkNode.loadConfig(file.toFile());
        VmforkNode node;
        try {
            node = VmforkNode.start(config);
        } catch (InvalidNodeConfigException e) {
            String where = CliConfig.whereKey(config, e.getMessage());
            throw Failure.config((where.isEmpty() ? file + ": " : where) + e.getMessage());
        } catch (RuntimeException e) {
            for (Throwable c = e; c != null; c = c.getCause()) {
                if (c instanceof java.net.BindException
                        || String.valueOf(c.getMessage()).contains("Address already in use")) {
                    // Pekko cannot bind its transport, or the status server its port.
                    throw Failure.unavailable("cannot start: a port is in use: " + e.getMessage()
                            + " (pick another port in " + file + ", or 0 for a free one)");
                }
            }
            throw e;
        }
        System.err.println("vmfork node: platform " + node.vmm().platform());
        System.err.println("vmfork node: " + node.settings().security().describe(node.settings().hostname()));
        System.err.println("vmfork node: host " + node.settings().hostId() + " (" + node.settings().hostName()
                + ") at " + node.system().address() + ", seeds " + node.settings().seedNodes()
                + node.statusServer().map(st -> ", status at http://" + st.address().getHostString() + ":" + st.port()
                        + "/status, cluster page at http://" + st.address().getHostString() + ":" + st.port() + "/")
                        .orElse(""));
        Optional<CoordinatedShutdown.Reason> reason;
        try {
            reason = node.awaitStopped();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return Main.EX_SOFTWARE;
        }
        if (reason.isPresent() && reason.get() instanceof HostIdConflict conflict) {
            System.err.println("vmfork node: " + conflict);
            return Main.EX_CONFIG;
        }
        if (reason.isPresent() && VmforkNode.wasDowned(reason.get())) {
            System.err.println("vmfork node: " + VmforkNode.DOWNED_MESSAGE);
            return VmforkNode.EXIT_DOWNED;
        }
        return 0;
    }

    /**
     * With {@code --parent-pid}, the node stops (as on SIGTERM: it leaves the cluster) once
     * that process is gone, even after a SIGKILL of it: a node started by a tool (demo,
     * bench) never outlives the tool.
     */
    private static void watchParent(long pid) {
        Runnable gone = () -> {
            System.err.println("vmfork node: parent process " + pid + " is gone: stopping");
            System.exit(0);
        };
        ProcessHandle.of(pid).ifPresentOrElse(p -> p.onExit().thenRun(gone), gone);
    }
}
