package io.vmfork.multijvm;

import io.vmfork.cluster.node.VmforkNode;

/**
 * The main class of a node JVM that a test starts: {@code NodeMain TEST_JVM_PID CONFIG_FILE}
 * runs {@link VmforkNode#main} with the config file (so exits as it does), and halts the
 * node at once should the test JVM die, even by SIGKILL, when no shutdown hook of the test
 * JVM runs: no node outlives the test run.
 */
public final class NodeMain {
    private NodeMain() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length != 2) {
            System.err.println("usage: NodeMain TEST_JVM_PID CONFIG_FILE");
            System.exit(64);
        }
        long parent = Long.parseLong(args[0]);
        ProcessHandle.of(parent).ifPresentOrElse(
                p -> p.onExit().thenRun(() -> {
                    System.err.println("multi-jvm: the test JVM " + parent + " is gone: halting this node");
                    Runtime.getRuntime().halt(137);
                }),
                () -> Runtime.getRuntime().halt(137));
        VmforkNode.main(new String[] {args[1]});
    }
}
