/**
 * Transfer of clone capsules between hosts: the bulk bytes of a remote clone, moved over
 * one Pekko Streams TCP connection per transfer (TLS when the node has credentials) ({@link io.vmfork.cluster.transfer.TransferClient}
 * on the source, {@link io.vmfork.cluster.transfer.TransferServer} on the target), with
 * backpressure end to end and the outcome coming back on the same connection. The control
 * messages around it (which capsule, which copies) are the HostActors' Protobuf messages;
 * the opening bytes of a transfer carry whatever they need to match the two.
 *
 * <h2>Frames</h2>
 * Every frame is {@code u32 n} (big-endian, the bytes that follow: the kind and the
 * payload), {@code u8 kind}, then {@code n - 1} payload bytes. A payload longer than
 * {@code vmfork.transfer.max-frame} is refused from its length alone, before anything is
 * allocated; an OPEN payload over {@code Frames.MAX_OPEN} (1 KiB) likewise.
 * <pre>
 * kind        payload                                   direction
 * 1 OPEN      u32 magic "VMFT", u16 version, opening    sender → receiver, first
 * 2 DATA      1..data-frame payload bytes               sender → receiver
 * 3 END       u64 the number of DATA payload bytes sent  sender → receiver, last
 * 4 RESULT    the Receiver's result bytes               receiver → sender, then close
 * 5 ABORT     UTF-8 reason (at most 512 bytes)          either way, then close
 * </pre>
 * The sequence: {@code OPEN DATA* END} from the sender, then {@code RESULT} (or {@code ABORT})
 * from the receiver, which then closes the connection. The sender keeps its side open until
 * the answer arrives. A sender whose writer fails sends {@code ABORT} instead of {@code END}.
 * A receiver that refuses (the Receiver threw, or a frame was wrong) sends {@code ABORT} at
 * any point, which the sender reads while it is still writing; it then reads and drops what
 * the sender still sends until the sender closes (at most the idle timeout), so that its
 * kernel's reset cannot overtake the ABORT.
 *
 * <h2>The receiver's states</h2>
 * <pre>
 * AWAIT_OPEN --OPEN (magic, version ok, admitted)--> DATA --END (count matches)--> ENDED --> RESULT sent
 *     |                                               |  \--DATA--> DATA
 *     +--anything else, or open-timeout: ABORT        +--connection ends, idle, frame over the cap,
 *                                                        wrong kind, ABORT from the sender, END with a
 *                                                        wrong count: FAILED (read throws TransferException)
 * </pre>
 * AWAIT_OPEN runs in the connection's stream ({@code OpenGate}): the OPEN frame is read and
 * the {@code TransferServer.Acceptor} asked (the token, the peer) on the stream's thread;
 * only an admitted transfer gets a thread of the blocking dispatcher for DATA onwards.
 *
 * <h2>Limits</h2>
 * Nothing is spent on a connection before it is admitted, and what is spent after is
 * bounded ({@link io.vmfork.cluster.transfer.TransferSettings.Limits}, docs/transfer.md
 * "Limits"): the opening must be complete and accepted within {@code open-timeout}; at most
 * {@code max-connections} connections in all and {@code max-connections-per-peer} from one
 * IP address (a peer the Acceptor expects passes the first); at most {@code max-receiving}
 * admitted transfers running or waiting for a thread; at most {@code receive-buffer} reads
 * buffered for a Receiver. Beyond a cap the connection is answered ABORT "busy: ..." and
 * closed.
 * A transfer is complete only in ENDED: only the END frame, with a byte count equal to what
 * arrived, makes the Receiver's stream return -1. A sender killed with SIGKILL closes its
 * socket like a clean end of stream; here that is "the connection ended after N data bytes,
 * before the end-of-data frame", never a short but complete-looking stream. (The capsule
 * inside carries its own per-chunk CRCs and SHA-256 as well.) A Receiver that returns before
 * ENDED fails the transfer too.
 *
 * <h2>Who may send</h2>
 * The server hands the Acceptor the connection's remote address with the opening; a node's
 * Acceptor (CloneTarget.accept) takes a token only from the address of the member that
 * made the offer, whose source host id was checked against that member when the offer came
 * (HostActor.onOfferClones; docs/transfer.md, "Who may send"). A node sends from its own
 * Artery hostname's address so that the check holds on multi-homed hosts.
 *
 * <h2>TLS</h2>
 * With the node's credentials ({@code vmfork.security}; {@link io.vmfork.cluster.transfer.TransferTls})
 * the connection is TLS (v1.2, see TransferTls) with mutual authentication: both sides trust the
 * cluster CA alone and require the peer's certificate to share a name with their own (the
 * cluster's name), as Artery does. The TLS layer sits below {@code OpenGate}: the handshake
 * runs within the connection's slot and its {@code open-timeout}, and a peer refused in it
 * (no certificate, another CA, another cluster's name, plain TCP) never has its OPEN frame
 * read nor the Acceptor asked; a connection whose handshake never completed is cut at the
 * deadline (the gate's ABORT cannot travel over an unfinished session). A connection over a
 * cap is closed without a handshake. The refusal is logged with the peer's address and the
 * handshake's reason. Without credentials the connection is plain TCP. The frames and the
 * version rule are the same either way (docs/transfer.md, "TLS: who may connect").
 *
 * <h2>Timeouts</h2>
 * A receiver's read that waits {@code idle-timeout} for the sender fails ("idle timeout")
 * and the receiver answers ABORT saying so; the sender's connection fails when nothing moved
 * for {@code idle-timeout + 1s} (a receiver that stopped reading); the receiver's connection
 * for {@code idle-timeout + 2s} (a backstop); a sender's write blocked under backpressure for
 * {@code idle-timeout + 3s}. The staggering makes the side that notices first the one that
 * knows why. So a Receiver must not pause reading longer than {@code idle-timeout}, and must
 * return its result within {@code idle-timeout + 1s} of the END frame.
 *
 * <h2>Version rule</h2>
 * OPEN carries the protocol version (this is version 1). A receiver accepts the current and
 * the previous version and refuses others with an ABORT that names the versions it speaks.
 * The capsule inside has its own format version with the same rule (docs/capsule.md).
 *
 * <h2>Threads and resources</h2>
 * Both ends run on the actor system's materializer; the connection's bytes pass through
 * Pekko's {@code StreamConverters.asInputStream}/{@code asOutputStream}, whose blocking side
 * is one thread of {@code vmfork.transfer.blocking-dispatcher} per transfer and side (the
 * Receiver on the target, the IoWriter on the source). The writer starts only once the
 * connection is made. When a transfer fails while its writer still runs, the writer's
 * thread is interrupted and its writes throw; {@code TransferServer.close()} aborts every
 * transfer in progress. Every path closes the connection.
 *
 * <h2>Why Pekko Streams TCP: the measurements</h2>
 * {@code ./vmfork bench transfer} (docs/transfer.md has the method and every figure): two JVMs
 * on loopback, p50 of 5 runs, on the 2-core development machine <em>under load from other
 * work</em> (figures to compare methods, to be re-run on a quiet machine):
 * <pre>
 *                                   64 MiB              1 GiB
 * plain blocking socket (floor)     20.6 ms  3111 MiB/s   328 ms  3125 MiB/s
 * this protocol, Pekko Streams TCP  46.1 ms  1389 MiB/s   455 ms  2250 MiB/s  (1.4-2.2 x floor)
 * stream refs (SourceRef, Artery)  149.6 ms   428 MiB/s  1012 ms  1012 MiB/s  (3.1-7.3 x floor)
 * </pre>
 * Pekko Streams TCP figures are with {@code pekko.io.tcp.direct-buffer-size = 1 MiB} in both
 * JVMs; with Pekko's default 128 KiB they were 196 ms and 885 ms, so a node should set it.
 * A sender killed with SIGKILL after 256 MiB of 1 GiB: over a plain socket the receiver
 * sees a clean end of stream (56 ms later); here a TransferException "the connection ended
 * after N data bytes, before the end-of-data frame" (30 ms later); a stream ref fails only
 * once the cluster downs the dead node (15 s later with stable-after = 7 s, never without a
 * downing provider). So bulk bytes take this TCP side channel, as the Akka maintainers
 * advise (akka/akka#22257, #24276); stream refs are also marked "may change".
 */
package io.vmfork.cluster.transfer;
