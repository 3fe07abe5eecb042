package io.vmfork.vmm;

import java.util.ArrayDeque;
import java.util.concurrent.CompletableFuture;

/**
 * A VM's message channel: requests from the application to the guest (RECV), and the
 * guest's messages back (SEND). Each message the guest sends answers the oldest request
 * still waiting for a reply, in order; one that answers nothing goes to
 * {@link VmListener#onUnsolicitedMessage}.
 *
 * <p>The queue is guarded by the VM's {@link RunControl} monitor, so that a vCPU blocked
 * in RECV wakes on a new request and a pause never lets one through half-received.
 */
public final class MessageChannel {
    /** Thrown when a request is too large, the queue is full, or the channel is closed. */
    public static final class ChannelException extends RuntimeException {
        ChannelException(String message) {
            super(message);
        }
    }

    private final RunControl control;
    private final int maxMessage;
    private final int maxQueued;
    private final ArrayDeque<byte[]> requests = new ArrayDeque<>();
    private final ArrayDeque<CompletableFuture<byte[]>> awaitingReply = new ArrayDeque<>();
    private boolean closed;

    MessageChannel(RunControl control, int maxMessage, int maxQueued) {
        this.control = control;
        this.maxMessage = maxMessage;
        this.maxQueued = maxQueued;
    }

    /** Queues a request for the guest; the future completes with the guest's reply. */
    public CompletableFuture<byte[]> request(byte[] message) {
        CompletableFuture<byte[]> reply = new CompletableFuture<>();
        synchronized (control) {
            enqueue(message);
            awaitingReply.add(reply);
        }
        return reply;
    }

    /** Queues a message for the guest that expects no reply. */
    public void send(byte[] message) {
        synchronized (control) {
            enqueue(message);
        }
    }

    private void enqueue(byte[] message) {
        if (message.length > maxMessage) {
            throw new ChannelException("message of " + message.length + " bytes exceeds the channel's limit of "
                    + maxMessage);
        }
        if (closed) {
            throw new ChannelException("the message channel is closed");
        }
        if (requests.size() >= maxQueued) {
            throw new ChannelException("the guest has " + requests.size() + " requests queued already (limit "
                    + maxQueued + ")");
        }
        requests.add(message);
        control.notifyAll();
    }

    /** No more requests: a guest waiting in RECV gets ECLOSED once the queue is empty. */
    public void close() {
        synchronized (control) {
            closed = true;
            control.notifyAll();
        }
    }

    public boolean isClosed() {
        synchronized (control) {
            return closed;
        }
    }

    // ---- guest side, called on a vCPU thread holding the control monitor ----

    boolean hasRequestOrClosed() {
        return !requests.isEmpty() || closed;
    }

    byte[] peekRequest() {
        return requests.peek();
    }

    void dropRequest() {
        requests.poll();
    }

    /** Completes the oldest waiting request, or returns false if none was waiting. */
    boolean deliverReply(byte[] message) {
        CompletableFuture<byte[]> f;
        synchronized (control) {
            f = awaitingReply.poll();
        }
        if (f == null) {
            return false;
        }
        f.complete(message);
        return true;
    }

    int maxMessage() {
        return maxMessage;
    }

    /** The VM ended: every request still waiting fails with the reason. */
    void fail(VmExit exit) {
        java.util.List<CompletableFuture<byte[]>> pending;
        synchronized (control) {
            closed = true;
            pending = java.util.List.copyOf(awaitingReply);
            awaitingReply.clear();
            requests.clear();
        }
        for (CompletableFuture<byte[]> f : pending) {
            f.completeExceptionally(new VmEndedException(exit));
        }
    }

    /** Queued requests, oldest first, for a snapshot of the device state. */
    java.util.List<byte[]> queuedRequests() {
        synchronized (control) {
            return java.util.List.copyOf(requests);
        }
    }
}
