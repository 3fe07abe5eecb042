package io.vmfork.cli;

import io.vmfork.cluster.node.HostIdConflict;
import io.vmfork.cluster.node.InvalidNodeConfigException;
import io.vmfork.cluster.node.VmforkNode;
import java.io.File;
import java.util.Optional;
import java.util.concurrent.ExecutionException;
import org.apache.pekko.actor.CoordinatedShutdown;

/** {@code vmfork node --config FILE}: runs this host's cluster node until it stops. */
final class NodeCommand {
    private NodeCommand() {
    }

    static int run(Args args) {
        args.allowOnly("config");
        String file = args.option("config");
        if (file == null) {
            throw new Args.UsageException("missing --config FILE (e.g. conf/node-1.conf)");
        }
        VmforkNode node;
        try {
            node = VmforkNode.start(VmforkNode.loadConfig(new File(file)));
        } catch (InvalidNodeConfigException e) {
            System.err.println("vmfork node: " + file + ": " + e.getMessage());
            return Main.EX_CONFIG;
        } catch (RuntimeException e) {
            // E.g. the port is in use: Pekko cannot bind its transport.
            System.err.println("vmfork node: cannot start: " + e);
            return Main.EX_UNAVAILABLE;
        }
        System.err.println("vmfork node: host " + node.settings().hostId() + " (" + node.settings().hostName()
                + ") at " + node.system().address() + ", seeds " + node.settings().seedNodes()
                + node.statusServer().map(st -> ", status at http://" + node.settings().hostname() + ":" + st.port()
                        + "/status, cluster page at http://" + node.settings().hostname() + ":" + st.port() + "/")
                        .orElse(""));
        try {
            node.whenTerminated().toCompletableFuture().get();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return Main.EX_SOFTWARE;
        } catch (ExecutionException e) {
            System.err.println("vmfork node: " + e.getCause());
            return Main.EX_SOFTWARE;
        }
        Optional<CoordinatedShutdown.Reason> reason = node.shutdownReason();
        if (reason.isPresent() && reason.get() instanceof HostIdConflict conflict) {
            System.err.println("vmfork node: " + conflict);
            return Main.EX_CONFIG;
        }
        return 0;
    }
}
