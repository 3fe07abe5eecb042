/*
 * spin: a guest that never stops computing, for tests that must interrupt,
 * snapshot or fork a running vCPU rather than one blocked in a hypercall.
 *
 * It increments a counter in memory forever and every 2^24 iterations polls the
 * message channel without blocking:
 *
 *   count   the counter, in decimal
 *   id      "vm=<id> parent=<id> gen=<n> host=<id> type=<n>", as warm-worker
 *   stop    "bye", then exit 0
 *   other   "error: unknown request"
 *
 * It exits 0 when the channel is closed, 4 after a request longer than its
 * buffer (answered "error: request too large"), 5 on other hypercall failures.
 */
#include "vmfork.h"

#define POLL_MASK ((1ull << 24) - 1)

/* volatile: the counter lives in guest memory, where a snapshot can see it. */
static volatile uint64_t counter;

static int matches(const char *req, size_t len, const char *word)
{
    size_t n = strlen(word);

    return len == n && memcmp(req, word, n) == 0;
}

int main(void)
{
    static char req[4096];
    char out[160];

    vmf_printf("spin: started\n");
    if (vmf_ready() < 0) {
        vmf_printf("spin: ready failed\n");
        return 5;
    }

    for (;;) {
        uint64_t c = counter + 1;

        counter = c;
        if (c & POLL_MASK)
            continue;

        size_t len;
        int64_t rc = vmf_recv(req, sizeof(req), VMF_RECV_NONBLOCK, &len);
        int stop = 0, code = 0;

        if (rc == VMF_EAGAIN)
            continue;
        if (rc == VMF_ECLOSED)
            return 0;
        if (rc == VMF_E2BIG) {
            vmf_snprintf(out, sizeof(out), "error: request too large");
            stop = 1;
            code = 4;
        } else if (rc < 0) {
            vmf_printf("spin: recv failed: %ld\n", rc);
            return 5;
        } else if (matches(req, len, "count")) {
            vmf_snprintf(out, sizeof(out), "%lu", c);
        } else if (matches(req, len, "id")) {
            struct vmf_identity id;

            if ((rc = vmf_identity(&id)) < 0)
                vmf_snprintf(out, sizeof(out), "error: identity failed (%ld)", rc);
            else
                vmf_snprintf(out, sizeof(out), "vm=%lu parent=%lu gen=%lu host=%lu type=%u",
                             id.vm_id, id.parent_id, id.fork_generation, id.host_id,
                             id.vm_type);
        } else if (matches(req, len, "stop")) {
            vmf_snprintf(out, sizeof(out), "bye");
            stop = 1;
        } else {
            vmf_snprintf(out, sizeof(out), "error: unknown request");
        }

        rc = vmf_send(out, strlen(out));
        if (rc < 0 && rc != VMF_ECLOSED) {
            vmf_printf("spin: send failed: %ld\n", rc);
            return 5;
        }
        if (stop || rc == VMF_ECLOSED)
            return code;
    }
}
