package io.vmfork.vmm.platform.process;

import io.vmfork.os.Errno;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;

/**
 * What the host refused the process platform, as one line a person can act on: what is
 * refused, the call and errno that said so, what it means here, and how to allow it (or
 * to use KVM instead). docs/platforms.md, "Requirements", lists the same.
 *
 * <p>Required: ptrace of the platform's own child processes, seccomp filters (with
 * SECCOMP_FILTER_FLAG_TSYNC), an executable memfd for the stub, clone. Optional: each
 * namespace (the guest process gets those the host allows; see
 * {@link io.vmfork.procvm.GuestProcesses#refusedNamespaces}).
 */
final class HostRefusal {
    private static final String OR_KVM = ", or run on a host with /dev/kvm (vmfork.vmm.platform = kvm)";
    private static final Path YAMA = Path.of("/proc/sys/kernel/yama/ptrace_scope");
    private static final Path MEMFD_NOEXEC = Path.of("/proc/sys/vm/memfd_noexec");

    private HostRefusal() {
    }

    /** PTRACE_SEIZE of a guest process (the VMM's own child) failed with {@code errno}. */
    static ProcessPlatformException ptrace(int errno) {
        return ptrace(errno, sysctl(YAMA));
    }

    /** As above, with Yama's kernel.yama.ptrace_scope ("" without Yama). */
    static ProcessPlatformException ptrace(int errno, String yama) {
        String call = "PTRACE_SEIZE of a guest process: " + Errno.name(errno);
        if (errno != Errno.EPERM) {
            return new ProcessPlatformException("ptrace is unavailable (" + call + "): the process platform traces"
                    + " each guest process; use a kernel and container that allow ptrace" + OR_KVM);
        }
        String why = switch (yama) {
            case "3" -> "kernel.yama.ptrace_scope is 3, which forbids ptrace until reboot; boot with"
                    + " kernel.yama.ptrace_scope <= 1";
            case "2" -> "kernel.yama.ptrace_scope is 2 and this process lacks CAP_SYS_PTRACE; set"
                    + " kernel.yama.ptrace_scope to 1 (sysctl -w kernel.yama.ptrace_scope=1) or grant CAP_SYS_PTRACE";
            default -> "a seccomp profile or security module forbids it (a container without CAP_SYS_PTRACE"
                    + (yama.isEmpty() ? "" : "; kernel.yama.ptrace_scope is " + yama) + "); allow ptrace in the"
                    + " container's seccomp profile or grant CAP_SYS_PTRACE (docker run --cap-add SYS_PTRACE)";
        };
        return new ProcessPlatformException("ptrace is refused (" + call + "): " + why + OR_KVM);
    }

    /** The stub's seccomp(SECCOMP_SET_MODE_FILTER, TSYNC) failed with {@code errno}. */
    static ProcessPlatformException seccomp(int errno) {
        String call = "seccomp(SECCOMP_SET_MODE_FILTER, TSYNC) in a guest process: " + Errno.name(errno);
        if (errno == Errno.EPERM || errno == Errno.EACCES) {
            return new ProcessPlatformException("seccomp filters are refused (" + call + "): a seccomp profile or"
                    + " security module forbids installing them; allow seccomp(2) in the container's seccomp"
                    + " profile" + OR_KVM);
        }
        return new ProcessPlatformException("seccomp filters are unavailable (" + call + "): the kernel lacks"
                + " CONFIG_SECCOMP_FILTER or filter synchronisation (Linux 3.17); use a kernel with seccomp filters"
                + OR_KVM);
    }

    /** memfd_create(MFD_EXEC) for the stub failed with {@code errno}. */
    static ProcessPlatformException stubMemfd(int errno, String message) {
        if (errno == Errno.EACCES) {
            return new ProcessPlatformException("executable memfds are refused (memfd_create(MFD_EXEC) for the guest"
                    + " stub: EACCES): vm.memfd_noexec is " + orUnknown(sysctl(MEMFD_NOEXEC)) + " in this PID"
                    + " namespace; set vm.memfd_noexec to 0 or 1 where this PID namespace was made (it is inherited and"
                    + " can only be raised inside)" + OR_KVM);
        }
        return new ProcessPlatformException("the guest stub cannot be loaded: " + message);
    }

    /** vmfork_proc_spawn failed at {@code step} with {@code errno}. */
    static ProcessPlatformException spawn(String step, int errno) {
        String call = step + ": " + Errno.name(errno);
        if (step.startsWith("execveat") && (errno == Errno.EACCES || errno == Errno.EPERM)) {
            return new ProcessPlatformException("executing the guest stub from its memfd is refused (" + call
                    + "): vm.memfd_noexec is " + orUnknown(sysctl(MEMFD_NOEXEC)) + ", or a security module forbids"
                    + " executing memfds; set vm.memfd_noexec to 0 or 1, or allow the execution" + OR_KVM);
        }
        if (step.startsWith("clone") && (errno == Errno.EAGAIN || errno == Errno.ENOMEM)) {
            return new ProcessPlatformException("a guest process cannot be made (" + call + "): the process or"
                    + " memory limit of this user or cgroup is reached (RLIMIT_NPROC, pids.max)");
        }
        return new ProcessPlatformException("a guest process cannot be made (" + call + "): the process platform"
                + " needs clone, prctl and execveat of a memfd (docs/platforms.md, \"Requirements\")" + OR_KVM);
    }

    /** One line for the log: the namespaces refused, and what the guest process runs with instead. */
    static String namespacesNote(String refused, int got) {
        return "guest processes run without the namespaces this host refuses: " + refused + "; they have "
                + (got == 0 ? "none" : names(got)) + ((got & CLONE_NEWUSER) == 0 ? " (without a user namespace: as"
                + " uid 65534 when the VMM is root, else as its user)" : "") + "; seccomp and no-new-privs confine"
                + " them as ever (docs/platforms.md, \"Requirements\")";
    }

    static final int CLONE_NEWNS = 0x00020000, CLONE_NEWUTS = 0x04000000, CLONE_NEWIPC = 0x08000000,
            CLONE_NEWUSER = 0x10000000, CLONE_NEWPID = 0x20000000, CLONE_NEWNET = 0x40000000;

    private static String names(int ns) {
        StringBuilder b = new StringBuilder();
        int[] flags = {CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS, CLONE_NEWNS};
        String[] names = {"user", "pid", "net", "ipc", "uts", "mount"};
        for (int i = 0; i < flags.length; i++) {
            if ((ns & flags[i]) != 0) {
                b.append(b.isEmpty() ? "" : ", ").append(names[i]);
            }
        }
        return b.toString();
    }

    private static String orUnknown(String v) {
        return v.isEmpty() ? "unknown" : v;
    }

    /** A sysctl's value, or "" where the file is absent or unreadable. */
    private static String sysctl(Path p) {
        try {
            return Files.readString(p).trim();
        } catch (IOException | SecurityException e) {
            return "";
        }
    }
}
