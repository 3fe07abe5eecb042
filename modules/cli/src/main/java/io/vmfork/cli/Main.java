package io.vmfork.cli;

import java.util.Arrays;

/** The vmfork command. */
public final class Main {
    static final int EX_USAGE = 64;
    static final int EX_UNAVAILABLE = 69;
    static final int EX_SOFTWARE = 70;
    static final int EX_CANTCREAT = 73;
    static final int EX_CONFIG = 78;
    static final int EX_TIMEOUT = 124;

    private Main() {
    }

    public static void main(String[] args) {
        System.exit(run(args));
    }

    static int run(String[] args) {
        if (args.length == 0 || args[0].equals("-h") || args[0].equals("--help") || args[0].equals("help")) {
            System.out.print(usage());
            return args.length == 0 ? EX_USAGE : 0;
        }
        String[] rest = Arrays.copyOfRange(args, 1, args.length);
        try {
            return switch (args[0]) {
                case "run" -> RunCommand.run(new Args(rest));
                case "bench" -> BenchCommand.run(new Args(rest));
                case "snapshot" -> CapsuleCommands.snapshot(new Args(rest));
                case "restore" -> CapsuleCommands.restore(new Args(rest));
                case "capsule-key" -> CapsuleCommands.capsuleKey(new Args(rest));
                case "node" -> NodeCommand.run(new Args(rest));
                case "demo" -> DemoCommand.run(new Args(rest));
                case "certs" -> CertsCommand.run(new Args(rest));
                default -> {
                    System.err.println("vmfork: unknown command '" + args[0] + "'");
                    System.err.print(usage());
                    yield EX_USAGE;
                }
            };
        } catch (Args.UsageException e) {
            System.err.println("vmfork " + args[0] + ": " + e.getMessage());
            return EX_USAGE;
        }
    }

    static String usage() {
        return """
                usage: vmfork COMMAND [ARGS]

                  demo [--workers N] [--requests N] [--nodes N] [--keep] [--in-flight N]
                       [--status-port PORT] [--node-config FILE]
                      The main job, on a real cluster on this machine: starts N nodes (default
                      3, each a `vmfork node` JVM on free loopback ports), launches one
                      warm-worker where placement puts it, forks it into a pool of workers
                      (default 12) that placement spreads over the hosts (children on its host,
                      clones on the others), sends a burst of requests over them (default
                      10000, --in-flight per worker, default 4) checking every reply, prints a
                      table (per worker: host, how it was made, fork generation, ask -> first
                      answer; cold vs fork vs clone, request rate, capsule bytes per host) and
                      stops every node. --keep leaves the cluster running until Ctrl-C and
                      prints each node's page. --status-port: node i serves its page at
                      PORT+i-1 (default: free ports). --node-config: HOCON appended to every
                      node's config after conf/demo.conf (placement policies, capacity, any
                      node key). Exits 69 if this host cannot run guests (no /dev/kvm for
                      platform kvm; ptrace, seccomp filters or an executable memfd refused for
                      the process platform) or a node cannot start (its log's last lines are
                      shown), 70 if a step failed or a worker ended during the burst.
                  run GUEST [--memory SIZE] [--vcpus N] [--timeout DURATION] [--vm-type N] [--request TEXT]...
                      [--env K=V]... [--root DIR] [-- ARGS...]
                      Boot GUEST (a shipped example: hello, warm-worker; or a path to an ELF:
                      an SDK guest, or a static x86-64 Linux program, docs/linux.md) in a VM.
                      Its console (a Linux program's stderr) streams to stdout. Requests for
                      its message channel come from --request (repeatable) or, without any,
                      one per line on stdin; each reply is printed (a Linux program reads
                      each request as a line of its stdin and answers with a line of its
                      stdout). A Linux program gets ARGS after "--" (argv[0] is "/" and its
                      file name), exactly the --env entries as its environment and DIR as its
                      read-only root (no files without it); the system calls it made that
                      are not served are listed on stderr at its end.
                      Exits with the guest's exit code, 69 if this host cannot run guests
                      (the line says what is refused).
                  snapshot GUEST --out FILE [--memory SIZE] [--request TEXT]... [--when ready|idle|now] [--timeout DURATION]
                           [--sign KEY]
                      Boot GUEST, wait until it is ready (and has served the requests), and
                      save its clone capsule to FILE; with --sign, signed with the Ed25519 key
                      in KEY (a file from capsule-key).
                  restore FILE [--request TEXT]... [--timeout DURATION] [--require-signer PUB]...
                      Start a clone VM from a capsule (checked first: format, digest, and
                      this host's compatibility), attached like run. With --require-signer
                      (repeatable) or vmfork.capsule.trusted-signers, only a capsule signed
                      by one of those public keys: any other exits 77 with the reason
                      (unsigned, signed by another key, signature does not verify); an
                      invalid capsule exits 65, one this host cannot run 69.
                  capsule-key --out DIR [--name NAME]
                      Make an Ed25519 key pair for signing capsules: DIR/NAME.key (private
                      and public key, mode 0600; for --sign) and DIR/NAME.pub (for
                      --require-signer); NAME defaults to capsule-signing. Never overwrites.
                  node --config FILE [--parent-pid PID]
                      Start this host's node of the vmfork cluster with the configuration
                      in FILE (e.g. conf/node-1.conf) and run until stopped (SIGINT/SIGTERM:
                      it leaves the cluster first). Artery runs over TLS with mutual
                      authentication when FILE names credentials (vmfork.security; see certs).
                      Exits 78 if FILE is invalid (the message names the key; a node at an
                      address other than loopback without credentials, unless
                      vmfork.security.insecure = on) or the cluster already has a node with its host id, 69 if
                      the node cannot start (its port in use, or this host cannot run guests). With --parent-pid it
                      stops once process PID is gone (tools that start nodes use it).
                  certs --dir DIR [--cluster NAME] [--node NAME]... [--client NAME]... [--days N]
                      The cluster's credentials, as PEM files in DIR: creates the cluster CA
                      (ca.crt, ca.key; cluster NAME, default vmfork) if DIR has none, then a
                      certificate and key (NAME.crt, NAME.key, mode 0600; valid N days, default
                      365) for each node and client member, replacing earlier ones (rotation).
                      Prints each member's vmfork.security lines. Exits 64 on a bad name or a
                      CA of another cluster, 73 if a file cannot be written.
                  bench launch|fork|hypercall|cluster|capsule|clone [--json] [--runs N]
                      Cold-launch benchmarks: launch.cold, launch.cold_warm_worker. Fork benchmarks:
                      fork.c_floor, fork.local, fork.fanout_local, fork.parent_blocked,
                      fork.parent_write_after_fork, fork.vs_cold, fork.memory_per_child, capsule.size.
                      Cluster benchmarks (two node JVMs started on this machine, killed after):
                      cluster.placement, cluster.placement_throughput, cluster.launch_remote,
                      cluster.fork_parent_blocked, each over Artery TLS (tls: true), plain TCP
                      twice (tls: false) and TLS again, and cluster.tls_cost (TLS over plain,
                      means of their passes). Capsule benchmark: capsule.compression (LZ4 on
                      random memory and on a warm-worker's image, and capsules written with each
                      vmfork.capsule.compression).
                      Clone benchmarks (two node JVMs started here; this JVM is a third host that
                      forks): clone.tcp_floor, clone.remote, clone.parent_blocked (64 and 1024 MiB),
                      clone.remote_incremental, clone.fanout.
                  bench transfer [--json] [--runs N] [--sizes MIB,...] [--kill on|off] [--direct-buffer SIZE]
                      Bulk bytes between two JVMs on loopback (a sender JVM started here):
                      transfer.tcp_floor, transfer.streams_tcp, transfer.stream_refs per size
                      (default 64,1024 MiB), then each with the sender killed mid-transfer;
                      both JVMs with Pekko's TCP read buffer at SIZE (default 1MiB).
                """;
    }
}
