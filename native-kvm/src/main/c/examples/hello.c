/*
 * hello: the smallest useful vmfork guest. Prints who it is, the host's wall
 * clock and a few bytes of fresh entropy, then exits with status 0.
 */
#include "vmfork.h"

int main(void)
{
    struct vmf_identity id;
    struct vmf_clock clock;
    uint8_t random[8];
    int64_t rc;

    if ((rc = vmf_identity(&id)) < 0) {
        vmf_printf("hello: identity failed: %ld\n", rc);
        return 1;
    }
    vmf_printf("hello from vmfork guest vm %lu (abi %u) on host %lu\n",
               id.vm_id, vmf_boot->abi_version, id.host_id);

    if ((rc = vmf_clock(&clock)) < 0) {
        vmf_printf("hello: clock failed: %ld\n", rc);
        return 1;
    }
    vmf_printf("wall clock: %ld s since the epoch\n", clock.wall_ns / 1000000000);

    if ((rc = vmf_entropy(random, sizeof(random))) != (int64_t)sizeof(random)) {
        vmf_printf("hello: entropy failed: %ld\n", rc);
        return 1;
    }
    char hex[2 * sizeof(random) + 1];

    for (size_t i = 0; i < sizeof(random); i++)
        vmf_snprintf(hex + 2 * i, 3, "%02x", random[i]);
    vmf_printf("entropy: %s\n", hex);
    return 0;
}
