/*
 * confine: a test guest that attacks its confinement on request (ProcessConfinementTest).
 *
 * It calls READY, waits for one request on its message channel naming an attack, prints
 * "confine: about to <what>", then does it with inline assembly. A vmfork guest makes no
 * system calls and does no port I/O but the hypercall, so every attack must end the VM as
 * crashed; if one returns, the guest prints "SURVIVED <name>" and exits 99. An unknown
 * name is answered "error: unknown attack" (exit 98); a closed channel exits 0.
 *
 *   syscall-open        open("/tmp/vmfork-confine-open", O_CREAT|O_WRONLY, 0644) via syscall
 *   syscall-write       write(1, <6 bytes>, 6) via syscall (the bytes spell a marker the
 *                       test looks for on the host; this file's text never prints it)
 *   syscall-fork        fork (57) via syscall
 *   syscall-socket      socket(AF_INET, SOCK_STREAM, 0) via syscall
 *   syscall-exit-group  exit_group(0) via syscall (must not look like a clean exit)
 *   int80               int $0x80 with eax=4: the 32-bit write(1, ...)
 *   sysenter            sysenter with eax=4
 *   vsyscall            call *0xffffffffff600000: the legacy gettimeofday
 *   iopl                iopl(3) (172) via syscall
 *   port-in             in $0x60,%al
 *   port-out            out %al,$0x80
 *   cli, hlt            the instructions
 *   far-jump            jmp to 0x7000000000, far above RAM
 *   stub-jump           jmp to 0x600000000000, where the process platform's stub is
 *   page0-read          a read of address 8
 */
#include "vmfork.h"

/* In guest memory (.rodata / .bss, all below 4 GiB): what the system calls would use. */
static const char open_path[] = "/tmp/vmfork-confine-open";
static const char marker[6] = { 'P', 'W', 'N', 'E', 'D', '\n' };
static uint64_t timeval[2];

static int is(const char *req, const char *word)
{
    size_t n = strlen(word);

    return strlen(req) == n && memcmp(req, word, n) == 0;
}

static long syscall3(long nr, long a, long b, long c)
{
    long ret;

    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(nr), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return ret;
}

static void attack(const char *name)
{
    if (is(name, "syscall-open")) {
        syscall3(2, (long)open_path, 0101 /* O_CREAT|O_WRONLY */, 0644);
    } else if (is(name, "syscall-write")) {
        syscall3(1, 1, (long)marker, sizeof marker);
    } else if (is(name, "syscall-fork")) {
        syscall3(57, 0, 0, 0);
    } else if (is(name, "syscall-socket")) {
        syscall3(41, 2 /* AF_INET */, 1 /* SOCK_STREAM */, 0);
    } else if (is(name, "syscall-exit-group")) {
        syscall3(231, 0, 0, 0);
    } else if (is(name, "int80")) {
        long ret;
        __asm__ volatile("int $0x80"
                         : "=a"(ret)
                         : "a"(4L), "b"(1L), "c"((long)marker), "d"((long)sizeof marker)
                         : "memory");
    } else if (is(name, "sysenter")) {
        __asm__ volatile("sysenter" : : "a"(4L), "b"(1L), "c"((long)marker), "d"((long)sizeof marker)
                         : "memory");
    } else if (is(name, "vsyscall")) {
        long ret;
        __asm__ volatile("mov $0xffffffffff600000, %%rax\n\t"
                         "call *%%rax"
                         : "=a"(ret)
                         : "D"((long)timeval), "S"(0L)
                         : "rcx", "rdx", "r8", "r9", "r10", "r11", "memory");
    } else if (is(name, "iopl")) {
        syscall3(172, 3, 0, 0);
    } else if (is(name, "port-in")) {
        unsigned char v;
        __asm__ volatile("in $0x60, %0" : "=a"(v) : : "memory");
    } else if (is(name, "port-out")) {
        __asm__ volatile("out %0, $0x80" : : "a"((unsigned char)0x42) : "memory");
    } else if (is(name, "cli")) {
        __asm__ volatile("cli" ::: "memory");
    } else if (is(name, "hlt")) {
        __asm__ volatile("hlt" ::: "memory");
    } else if (is(name, "far-jump")) {
        __asm__ volatile("mov $0x7000000000, %%rax\n\tjmp *%%rax" ::: "rax", "memory");
    } else if (is(name, "stub-jump")) {
        __asm__ volatile("mov $0x600000000000, %%rax\n\tjmp *%%rax" ::: "rax", "memory");
    } else if (is(name, "page0-read")) {
        uint64_t v;
        __asm__ volatile("mov 8, %0" : "=r"(v) : : "memory");
    } else {
        vmf_send("error: unknown attack", 21);
        vmf_exit(98);
    }
}

int main(void)
{
    static char req[64];
    size_t len = 0;

    vmf_printf("confine: waiting\n");
    if (vmf_ready() < 0)
        return 5;
    int64_t rc = vmf_recv(req, sizeof req - 1, 0, &len);
    if (rc == VMF_ECLOSED)
        return 0;
    if (rc < 0)
        return 4;
    req[len] = 0;

    vmf_printf("confine: about to %s\n", req);
    attack(req);
    vmf_printf("SURVIVED %s\n", req);
    return 99;
}
