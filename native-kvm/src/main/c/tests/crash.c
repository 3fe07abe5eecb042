/*
 * crash: reads an unmapped address. There are no exception handlers in a vmfork
 * guest, so the page fault becomes a triple fault and the VMM must report the VM
 * as crashed rather than exited.
 */
#include "vmfork.h"

int main(void)
{
    vmf_printf("about to crash\n");

    /* 127 TiB: far above any guest RAM, so not in the identity map. */
    uint64_t v = *(volatile uint64_t *)0x7fff00000000ull;

    vmf_printf("crash: read %lx and survived\n", v);
    return 1;
}
