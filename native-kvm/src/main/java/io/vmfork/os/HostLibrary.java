package io.vmfork.os;

import com.sun.jna.NativeLibrary;

/**
 * The host helper library that ships in this jar (libvmforkhost.so, built from
 * src/main/c/host), loaded once. Its bindings, one class per concern, each register
 * against this one load: {@link HostHelper} (the host CPU, userfaultfd write protection),
 * {@link Processes} (other processes' memory and ends), {@code io.vmfork.kvm.VcpuThreads}
 * (the KVM vCPU kick signal) and {@code io.vmfork.procvm.GuestProcesses} (the process
 * platform's guest processes).
 */
public final class HostLibrary {
    private static final NativeLibrary LIBRARY = NativeLibrary.getInstance("vmforkhost");

    private HostLibrary() {
    }

    /** The library, for {@code Native.register} in a binding's static initialiser. */
    public static NativeLibrary get() {
        return LIBRARY;
    }
}
