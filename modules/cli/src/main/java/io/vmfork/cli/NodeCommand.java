package io.vmfork.cli;

import io.vmfork.cluster.node.HostIdConflict;
import io.vmfork.cluster.node.InvalidNodeConfigException;
import io.vmfork.cluster.node.VmforkNode;
import java.io.File;
import java.util.Optional;
import org.apache.pekko.actor.CoordinatedShutdown;

/**
 * {@code vmfork node --config FILE [--parent-pid PID]}: runs this host's cluster node until
 * it stops. Once started it prints one line to stderr, which tools that start nodes read
 * ({@link LocalCluster}): {@code vmfork node: host ID (NAME) at pekko://SYSTEM@HOST:PORT,
 * seeds [...], status at http://HOST:PORT/status, cluster page at http://HOST:PORT/} (the status
 * and page part only when it serves them),
 * with the ports it bound (a config may ask for port 0: any free one).
 */
final class NodeCommand {
    private NodeCommand() {
    }

    static int run(Args args) {
        args.allowOnly("config", "parent-pid");
        String file = args.option("config");
        if (file == null) {
            throw new Args.UsageException("missing --config FILE (e.g. conf/node-1.conf)");
        }
        String parent = args.option("parent-pid");
        if (parent != null) {
            watchParent(parent);
        }
        VmforkNode node;
        try {
            node = VmforkNode.start(VmforkNode.loadConfig(new File(file)));
        } catch (InvalidNodeConfigException e) {
            System.err.println("vmfork node: " + file + ": " + e.getMessage());
            return Main.EX_CONFIG;
        } catch (io.vmfork.kvm.KvmException | io.vmfork.vmm.platform.process.ProcessPlatformException e) {
            // This host cannot run guests on the platform chosen: the message says what is missing.
            System.err.println("vmfork node: cannot start: " + e.getMessage());
            return Main.EX_UNAVAILABLE;
        } catch (RuntimeException e) {
            // E.g. the port is in use: Pekko cannot bind its transport.
            System.err.println("vmfork node: cannot start: " + e);
            return Main.EX_UNAVAILABLE;
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
    private static void watchParent(String pidText) {
        long pid;
        try {
            pid = Long.parseLong(pidText);
        } catch (NumberFormatException e) {
            throw new Args.UsageException("--parent-pid takes a process id, got '" + pidText + "'");
        }
        Runnable gone = () -> {
            System.err.println("vmfork node: parent process " + pid + " is gone: stopping");
            System.exit(0);
        };
        ProcessHandle.of(pid).ifPresentOrElse(p -> p.onExit().thenRun(gone), gone);
    }
}
