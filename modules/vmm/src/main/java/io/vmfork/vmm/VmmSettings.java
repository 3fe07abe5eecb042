package io.vmfork.vmm;

import com.typesafe.config.Config;
import com.typesafe.config.ConfigFactory;
import java.time.Duration;

/**
 * The {@code vmfork.vmm} and {@code vmfork.host} configuration subtrees (defaults in this
 * module's reference.conf; docs/configuration.md describes every key).
 */
public record VmmSettings(
        String platform,
        String kvmDevice,
        long hostId,
        String hostName,
        long defaultMemory,
        long minMemory,
        long maxMemory,
        long stackSize,
        int maxVms,
        int maxVcpus,
        int kickSignal,
        int maxMessageBytes,
        int maxQueuedRequests,
        int consoleBufferBytes,
        Duration stopTimeout,
        int forkMaxCount,
        int forkMaxChildrenPerVm,
        Duration forkPauseTimeout,
        int maxImageExtents,
        long copyAfterResumeAbove,
        int forkLaunchThreads,
        int forkStartTogetherFrom,
        int poolSize,
        int poolMaxSize,
        Duration poolShrinkAfter,
        Duration poolRetryAfter,
        Duration poolRefillAfter,
        io.vmfork.vmm.capsule.CapsuleLimits capsuleLimits) {

    /** The values {@code vmfork.vmm.platform} takes. */
    public static final java.util.List<String> PLATFORMS = java.util.List.of("auto", "kvm", "process");

    public VmmSettings {
        if (!PLATFORMS.contains(platform)) {
            throw new IllegalArgumentException("vmfork.vmm.platform must be one of " + String.join(", ", PLATFORMS)
                    + ", got \"" + platform + "\"");
        }
        if (consoleBufferBytes < 1) {
            throw new IllegalArgumentException("vmfork.vmm.console.buffer must be at least 1 byte");
        }
        if (forkMaxCount < 1 || forkMaxChildrenPerVm < 0 || maxImageExtents < 1) {
            throw new IllegalArgumentException("vmfork.vmm.fork limits must be positive");
        }
        if (forkLaunchThreads < 0) {
            throw new IllegalArgumentException("vmfork.vmm.fork.launch-threads must be 0 or more, got "
                    + forkLaunchThreads);
        }
        if (copyAfterResumeAbove < 0) {
            throw new IllegalArgumentException("vmfork.vmm.fork.copy-after-resume-above must not be negative, got "
                    + copyAfterResumeAbove);
        }
        if (forkStartTogetherFrom < 0) {
            throw new IllegalArgumentException("vmfork.vmm.fork.start-together-from must be 0 (never) or more, got "
                    + forkStartTogetherFrom);
        }
        if (poolSize < 0) {
            throw new IllegalArgumentException("vmfork.vmm.pool.size must be 0 (no pool) or more, got " + poolSize);
        }
        if (poolMaxSize < poolSize) {
            throw new IllegalArgumentException("vmfork.vmm.pool.max-size (" + poolMaxSize + ") must be at least"
                    + " vmfork.vmm.pool.size (" + poolSize + ")");
        }
        if (poolRefillAfter.isNegative()) {
            throw new IllegalArgumentException("vmfork.vmm.pool.refill-after must not be negative, got " + poolRefillAfter);
        }
        if (poolRetryAfter.isNegative() || poolRetryAfter.isZero()) {
            throw new IllegalArgumentException("vmfork.vmm.pool.retry-after must be positive, got " + poolRetryAfter);
        }
    }

    public static VmmSettings create(Config root) {
        Config host = root.getConfig("vmfork.host");
        Config c = root.getConfig("vmfork.vmm");
        return new VmmSettings(
                c.getString("platform"),
                c.getString("kvm-device"),
                host.getLong("id"),
                host.getString("name"),
                c.getBytes("memory.default"),
                c.getBytes("memory.min"),
                c.getBytes("memory.max"),
                c.getBytes("stack-size"),
                c.getInt("max-vms"),
                c.getInt("max-vcpus"),
                c.getInt("vcpu.kick-signal"),
                c.getBytes("channel.max-message").intValue(),
                c.getInt("channel.max-queued"),
                c.getBytes("console.buffer").intValue(),
                c.getDuration("stop-timeout"),
                c.getInt("fork.max-count"),
                c.getInt("fork.max-children-per-vm"),
                c.getDuration("fork.pause-timeout"),
                c.getInt("fork.max-image-extents"),
                c.getIsNull("fork.copy-after-resume-above") ? Long.MAX_VALUE
                        : c.getBytes("fork.copy-after-resume-above"),
                c.getInt("fork.launch-threads"),
                c.getInt("fork.start-together-from"),
                c.getInt("pool.size"),
                c.getInt("pool.max-size"),
                c.getDuration("pool.shrink-after"),
                c.getDuration("pool.retry-after"),
                c.getDuration("pool.refill-after"),
                io.vmfork.vmm.capsule.CapsuleLimits.create(root));
    }

    /**
     * Most pages a fork copies while the VM is paused; more are copied after it resumes,
     * under write protection.
     */
    /** Children from which a fork starts them together (never when configured 0). */
    public int startTogetherFrom() {
        return forkStartTogetherFrom == 0 ? Integer.MAX_VALUE : forkStartTogetherFrom;
    }

    public int pagesCopiedPaused() {
        return (int) Math.min(Integer.MAX_VALUE, copyAfterResumeAbove / 4096);
    }

    /** From the default configuration (application.conf over reference.conf). */
    public static VmmSettings load() {
        return create(ConfigFactory.load());
    }
}
