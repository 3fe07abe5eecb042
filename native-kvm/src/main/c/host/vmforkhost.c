/*
 * vmforkhost: the host-side C that Java cannot express through JNA alone.
 *
 * A vCPU thread spends its time blocked in the KVM_RUN ioctl. To take it back
 * (to pause, snapshot or stop the VM) another thread sends it a signal: KVM_RUN
 * then returns -1 with errno EINTR (exit reason KVM_EXIT_INTR). That needs a
 * handler installed without SA_RESTART, because the default action of most
 * signals would end the process and an ignored signal does not interrupt the
 * ioctl at all. The handler itself has nothing to do.
 *
 * A kick that lands while the thread is not inside KVM_RUN is simply lost, so
 * callers set kvm_run->immediate_exit (or check their own flag) before kicking;
 * KVM_RUN returns EINTR at once while immediate_exit is set.
 *
 * Pick a signal nobody else uses: HotSpot uses SIGUSR2 on Linux (thread
 * suspend/resume), and glibc reserves the first two real-time signals, so a
 * real-time signal such as SIGRTMIN + 4 is a good choice.
 */
#include <cpuid.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* JNA passes pthread_t as a Java long: it must be an integer of that size. */
_Static_assert(sizeof(pthread_t) == sizeof(unsigned long), "pthread_t is not an unsigned long");

static void kick_handler(int signo)
{
    (void)signo;
}

/* Installs the do-nothing handler for signo. Returns 0 or -errno. */
int vmfork_install_kick_signal(int signo)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = kick_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;    /* deliberately no SA_RESTART: KVM_RUN must fail with EINTR */
    if (sigaction(signo, &sa, NULL) != 0)
        return -errno;
    return 0;
}

/* Sends signo to a thread of this process. Returns 0 or an errno value. */
int vmfork_kick_thread(unsigned long pthread_id, int signo)
{
    return pthread_kill((pthread_t)pthread_id, signo);
}

/* The calling thread's pthread_t, for vmfork_kick_thread(). */
unsigned long vmfork_self_thread(void)
{
    return (unsigned long)pthread_self();
}

/*
 * What this host's CPU shows a program at CPL3: on PVM hosts that is also what a vmfork
 * guest sees, since CPUID and XGETBV at CPL3 reach the hardware (see DESIGN.md, "The
 * guest model"). out[0..3] = EAX, EBX, ECX, EDX of leaf/subleaf; all 0 for a leaf above
 * the CPU's highest basic or extended leaf.
 */
void vmfork_host_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t *out)
{
    unsigned int a, b, c, d;

    if (!__get_cpuid_count(leaf, subleaf, &a, &b, &c, &d)) {
        out[0] = out[1] = out[2] = out[3] = 0;
        return;
    }
    out[0] = a;
    out[1] = b;
    out[2] = c;
    out[3] = d;
}

/* XCR0 in force for this process, or 0 where the OS has not enabled XSAVE (CR4.OSXSAVE). */
uint64_t vmfork_host_xcr0(void)
{
    unsigned int a, b, c, d, lo, hi;

    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE))
        return 0;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

/*
 * arch_prctl(ARCH_REQ_XCOMP_GUEST_PERM, feature): lets this process's vCPUs carry a
 * dynamically enabled XSAVE component (18, AMX tile data). It must come before the first
 * vCPU is created: KVM sizes a vCPU's XSAVE area from the permission in force then.
 * Returns 0 or -errno (-EOPNOTSUPP or -EINVAL where the CPU or kernel lacks it).
 */
int vmfork_request_guest_xstate(int feature)
{
    if (syscall(SYS_arch_prctl, 0x1025, (unsigned long)feature) != 0)
        return -errno;
    return 0;
}
