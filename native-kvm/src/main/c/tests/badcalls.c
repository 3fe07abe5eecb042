/*
 * badcalls: feeds the VMM bad hypercall arguments and checks each status.
 *
 * Prints "ok <name>" or "FAIL <name>: got <status>" for every check and returns
 * the number of failures. Each check is built so that exactly one rule of the
 * ABI is broken: pointers that must be valid point into the heap, lengths that
 * must be valid are small, so the expected status is unambiguous whatever order
 * the VMM checks things in. The application must not send this guest anything.
 */
#include "vmfork.h"

static int failures;

static void check(const char *name, int64_t got, int64_t want)
{
    if (got == want) {
        vmf_printf("ok %s\n", name);
    } else {
        vmf_printf("FAIL %s: got %ld\n", name, got);
        failures++;
    }
}

static uint64_t gpa(const void *p)
{
    return (uint64_t)(uintptr_t)p;
}

int main(void)
{
    const uint64_t ram = vmf_boot->memory_size;
    /* A RAM buffer big enough for the over-long lengths below, so that those
     * checks can only fail on the length limit, not on the range. */
    const uint64_t heap = vmf_boot->heap_start;

    if (vmf_boot->heap_end - heap < VMF_CONSOLE_MAX + 1) {
        vmf_printf("badcalls: heap too small (%lu bytes)\n", vmf_boot->heap_end - heap);
        return 100;
    }

    struct vmf_buf b;

    check("abi-version", vmf_hypercall(VMF_HC_ABI_VERSION, 0), VMF_ABI_VERSION);

    b = (struct vmf_buf){ .addr = ram, .len = 1 };
    check("console-addr-beyond-ram", vmf_hypercall(VMF_HC_CONSOLE_WRITE, gpa(&b)), VMF_EFAULT);

    b = (struct vmf_buf){ .addr = ram - 4, .len = 8 };
    check("console-straddles-end-of-ram",
          vmf_hypercall(VMF_HC_CONSOLE_WRITE, gpa(&b)), VMF_EFAULT);

    b = (struct vmf_buf){ .addr = UINT64_MAX - 15, .len = 32 };
    check("console-addr-len-overflow", vmf_hypercall(VMF_HC_CONSOLE_WRITE, gpa(&b)), VMF_EFAULT);

    b = (struct vmf_buf){ .addr = heap, .len = VMF_CONSOLE_MAX + 1 };
    check("console-len-too-big", vmf_hypercall(VMF_HC_CONSOLE_WRITE, gpa(&b)), VMF_EINVAL);

    check("console-block-beyond-ram", vmf_hypercall(VMF_HC_CONSOLE_WRITE, ram), VMF_EFAULT);

    check("unknown-hypercall", vmf_hypercall(999, 0), VMF_ENOSYS);

    check("identity-block-beyond-ram", vmf_hypercall(VMF_HC_IDENTITY, ram), VMF_EFAULT);

    /* The block is 40 bytes: its first 8 are RAM, the rest are not. */
    check("identity-block-straddles-end-of-ram",
          vmf_hypercall(VMF_HC_IDENTITY, ram - 8), VMF_EFAULT);

    b = (struct vmf_buf){ .addr = heap, .len = VMF_ENTROPY_MAX + 1 };
    check("entropy-len-too-big", vmf_hypercall(VMF_HC_ENTROPY, gpa(&b)), VMF_EINVAL);

    b = (struct vmf_buf){ .addr = ram, .len = 8 };
    check("entropy-addr-beyond-ram", vmf_hypercall(VMF_HC_ENTROPY, gpa(&b)), VMF_EFAULT);

    check("clock-block-beyond-ram", vmf_hypercall(VMF_HC_CLOCK, ram), VMF_EFAULT);

    uint8_t small[16];

    check("recv-nonblock-empty",
          vmf_recv(small, sizeof(small), VMF_RECV_NONBLOCK, NULL), VMF_EAGAIN);

    /* NONBLOCK so that a VMM that looked at the queue first could not block us;
     * the ABI has it check the pointers first. */
    struct vmf_recv r = { .addr = ram, .capacity = 16, .flags = VMF_RECV_NONBLOCK };

    check("recv-buffer-beyond-ram", vmf_hypercall(VMF_HC_RECV, gpa(&r)), VMF_EFAULT);
    check("recv-block-beyond-ram", vmf_hypercall(VMF_HC_RECV, ram), VMF_EFAULT);

    vmf_printf("badcalls: %d failure(s)\n", failures);
    return failures;
}
