package io.vmfork.vmm.platform.process;

import static org.junit.jupiter.api.Assertions.*;

import io.vmfork.os.Errno;
import org.junit.jupiter.api.Test;

/**
 * The words of each refusal this host cannot produce for real (RefusalTest, in the cli
 * module, runs the CLI under the refusals it can): Yama's scopes, a kernel without seccomp
 * filters, a clone refused for want of processes. Each names the call and errno, the
 * cause and the fix, on one line.
 */
class HostRefusalTest {
    private static final String OR_KVM = ", or run on a host with /dev/kvm (vmfork.vmm.platform = kvm)";

    @Test
    void ptraceNamesYamasScopeWhenThereIsOne() {
        assertEquals("ptrace is refused (PTRACE_SEIZE of a guest process: EPERM): kernel.yama.ptrace_scope is 3, which"
                + " forbids ptrace until reboot; boot with kernel.yama.ptrace_scope <= 1" + OR_KVM,
                HostRefusal.ptrace(Errno.EPERM, "3").getMessage());
        assertEquals("ptrace is refused (PTRACE_SEIZE of a guest process: EPERM): kernel.yama.ptrace_scope is 2 and"
                + " this process lacks CAP_SYS_PTRACE; set kernel.yama.ptrace_scope to 1 (sysctl -w"
                + " kernel.yama.ptrace_scope=1) or grant CAP_SYS_PTRACE" + OR_KVM,
                HostRefusal.ptrace(Errno.EPERM, "2").getMessage());
        assertEquals("ptrace is refused (PTRACE_SEIZE of a guest process: EPERM): a seccomp profile or security module"
                + " forbids it (a container without CAP_SYS_PTRACE; kernel.yama.ptrace_scope is 1); allow ptrace in the"
                + " container's seccomp profile or grant CAP_SYS_PTRACE (docker run --cap-add SYS_PTRACE)" + OR_KVM,
                HostRefusal.ptrace(Errno.EPERM, "1").getMessage());
        assertTrue(HostRefusal.ptrace(Errno.ENOSYS, "").getMessage().startsWith(
                "ptrace is unavailable (PTRACE_SEIZE of a guest process: ENOSYS): "));
    }

    @Test
    void seccompTellsAProfileFromAKernelWithoutFilters() {
        assertTrue(HostRefusal.seccomp(Errno.EPERM).getMessage().startsWith("seccomp filters are refused (seccomp("
                + "SECCOMP_SET_MODE_FILTER, TSYNC) in a guest process: EPERM): a seccomp profile"));
        assertEquals("seccomp filters are unavailable (seccomp(SECCOMP_SET_MODE_FILTER, TSYNC) in a guest process:"
                + " EINVAL): the kernel lacks CONFIG_SECCOMP_FILTER or filter synchronisation (Linux 3.17); use a"
                + " kernel with seccomp filters" + OR_KVM, HostRefusal.seccomp(Errno.EINVAL).getMessage());
    }

    @Test
    void aSpawnNamesItsStep() {
        assertTrue(HostRefusal.spawn("clone", Errno.EAGAIN).getMessage().startsWith("a guest process cannot be made"
                + " (clone: EAGAIN): the process or memory limit of this user or cgroup is reached"));
        assertTrue(HostRefusal.spawn("execveat of the stub", Errno.EACCES).getMessage().startsWith(
                "executing the guest stub from its memfd is refused (execveat of the stub: EACCES): vm.memfd_noexec"));
        assertTrue(HostRefusal.spawn("prctl(PR_SET_PDEATHSIG)", Errno.EINVAL).getMessage().startsWith(
                "a guest process cannot be made (prctl(PR_SET_PDEATHSIG): EINVAL): "));
        for (String m : new String[] {HostRefusal.ptrace(Errno.EPERM, "3").getMessage(),
            HostRefusal.seccomp(Errno.EPERM).getMessage(), HostRefusal.stubMemfd(Errno.EACCES, "x").getMessage()}) {
            assertFalse(m.contains("\n"), m);
        }
    }
}
