package io.vmfork.cluster.node;

/**
 * A node's configuration cannot be used; the message names the offending key. Thrown by
 * {@link NodeSettings#create} before anything starts.
 */
public final class InvalidNodeConfigException extends RuntimeException {
    private final String key;

    public InvalidNodeConfigException(String key, String problem) {
        super("invalid node configuration: " + key + ": " + problem);
        this.key = key;
    }

    public InvalidNodeConfigException(String key, String problem, Throwable cause) {
        super("invalid node configuration: " + key + ": " + problem, cause);
        this.key = key;
    }

    /** The full path of the key at fault, such as {@code vmfork.node.port}. */
    public String key() {
        return key;
    }
}
