/*
 * warm-worker: a guest whose initialisation is real work, then a request server.
 *
 * At boot it computes WW_KEYS values, each costing WW_ROUNDS rounds of a 64-bit
 * mixer, and indexes them in a 64 MiB open-addressing hash table in the heap;
 * that takes about a second. Then it reports ready and answers requests. A fork of
 * a ready warm-worker starts answering at once, which is the point of vmfork.
 *
 * Requests are ASCII text without a trailing newline; every one gets one reply:
 *
 *   get <k>   "<k> <value>" (decimal) if k is indexed, else "<k> miss";
 *             "error: bad key" if <k> is not a decimal number below 2^64
 *   id        "vm=<id> parent=<id> gen=<n> host=<id> type=<n>"
 *   rand      16 lowercase hex digits: 8 bytes of fresh host entropy
 *   stats     "keys=<WW_KEYS> rounds=<WW_ROUNDS> checksum=<xor of all values>"
 *   stop      "bye", then exit 0
 *   other     "error: unknown request"
 *
 * Exit codes: 0 on "stop" or when the application closes the channel; 3 if the
 * heap cannot hold the index; 4 after a request longer than the 4 KiB request
 * buffer (it is answered with "error: request too large"; the ABI leaves a
 * too-large message queued, so the worker could never make progress past it);
 * 5 on any other hypercall failure.
 */
#include "vmfork.h"

#define WW_KEYS (1u << 21)
#define WW_ROUNDS 96u

/* The value function is part of the guest's observable behaviour (tests may compute
 * the same values on the host): do not change it. */
static uint64_t ww_mix(uint64_t z) { z ^= z >> 30; z *= 0xbf58476d1ce4e5b9ull; z ^= z >> 27; z *= 0x94d049bb133111ebull; z ^= z >> 31; return z; }
static uint64_t ww_value(uint64_t k) { uint64_t x = k; for (unsigned i = 0; i < WW_ROUNDS; i++) x = ww_mix(x + 0x9e3779b97f4a7c15ull); return x; }

/* The index: 2^22 slots for 2^21 keys, so probe sequences stay short. */
#define WW_SLOTS (2ull * WW_KEYS)
#define WW_MASK (WW_SLOTS - 1)

struct ww_slot {
    uint64_t key_plus_one;  /* 0 marks an empty slot */
    uint64_t value;
};

static struct ww_slot *index_table;
static uint64_t checksum;

static void index_insert(uint64_t k, uint64_t value)
{
    uint64_t i = ww_mix(k) & WW_MASK;

    while (index_table[i].key_plus_one != 0)
        i = (i + 1) & WW_MASK;
    index_table[i].key_plus_one = k + 1;
    index_table[i].value = value;
}

/*
 * Every probe sequence ends at an empty slot because the table is at most half
 * full. For k = UINT64_MAX, k + 1 wraps to 0, which no used slot holds, so that
 * key simply misses.
 */
static int index_lookup(uint64_t k, uint64_t *value)
{
    for (uint64_t i = ww_mix(k) & WW_MASK;; i = (i + 1) & WW_MASK) {
        if (index_table[i].key_plus_one == 0)
            return 0;
        if (index_table[i].key_plus_one == k + 1) {
            *value = index_table[i].value;
            return 1;
        }
    }
}

static int64_t now_ns(void)
{
    struct vmf_clock c;

    if (vmf_clock(&c) < 0)
        return 0;
    return c.monotonic_ns;
}

static int build_index(void)
{
    const uint64_t bytes = WW_SLOTS * sizeof(struct ww_slot);

    if (vmf_boot->heap_end < vmf_boot->heap_start ||
        vmf_boot->heap_end - vmf_boot->heap_start < bytes) {
        vmf_printf("warm-worker: heap too small: need %lu bytes, have %lu\n",
                   bytes, vmf_boot->heap_end - vmf_boot->heap_start);
        return -1;
    }
    /* Guest memory is zero at start (ABI), so every slot is already empty. */
    index_table = (struct ww_slot *)(uintptr_t)vmf_boot->heap_start;

    vmf_printf("warm-worker: building index of %u keys\n", WW_KEYS);
    int64_t start = now_ns();

    for (uint64_t k = 0; k < WW_KEYS; k++) {
        uint64_t v = ww_value(k);

        index_insert(k, v);
        checksum ^= v;
    }

    uint64_t ms = (uint64_t)(now_ns() - start) / 1000000;

    vmf_printf("warm-worker: ready (%u keys, %lu ms)\n", WW_KEYS, ms);
    return 0;
}

static int matches(const char *req, size_t len, const char *word)
{
    size_t n = strlen(word);

    return len == n && memcmp(req, word, n) == 0;
}

/*
 * Formats the reply to one request into out (always NUL terminated, truncated if
 * need be; every reply fits the caller's buffer). Returns 1 to stop afterwards.
 */
static int handle(const char *req, size_t len, char *out, size_t size)
{
    if (len >= 3 && memcmp(req, "get", 3) == 0 && (len == 3 || req[3] == ' ')) {
        int ok;
        uint64_t value;
        uint64_t k = vmf_parse_u64(req + 4, len > 4 ? len - 4 : 0, &ok);

        if (!ok)
            vmf_snprintf(out, size, "error: bad key");
        else if (index_lookup(k, &value))
            vmf_snprintf(out, size, "%lu %lu", k, value);
        else
            vmf_snprintf(out, size, "%lu miss", k);
    } else if (matches(req, len, "id")) {
        struct vmf_identity id;
        int64_t rc = vmf_identity(&id);

        if (rc < 0)
            vmf_snprintf(out, size, "error: identity failed (%ld)", rc);
        else
            vmf_snprintf(out, size, "vm=%lu parent=%lu gen=%lu host=%lu type=%u",
                         id.vm_id, id.parent_id, id.fork_generation, id.host_id,
                         id.vm_type);
    } else if (matches(req, len, "rand")) {
        uint8_t bytes[8];
        int64_t rc = vmf_entropy(bytes, sizeof(bytes));

        if (rc != (int64_t)sizeof(bytes)) {
            vmf_snprintf(out, size, "error: entropy failed (%ld)", rc);
        } else {
            for (size_t i = 0; i < sizeof(bytes); i++)
                vmf_snprintf(out + 2 * i, size - 2 * i, "%02x", bytes[i]);
        }
    } else if (matches(req, len, "stats")) {
        vmf_snprintf(out, size, "keys=%u rounds=%u checksum=%lu",
                     WW_KEYS, WW_ROUNDS, checksum);
    } else if (matches(req, len, "stop")) {
        vmf_snprintf(out, size, "bye");
        return 1;
    } else {
        vmf_snprintf(out, size, "error: unknown request");
    }
    return 0;
}

int main(void)
{
    static char req[4096];
    char out[160];  /* the longest reply, "id", is under 130 bytes */

    if (build_index() < 0)
        return 3;
    if (vmf_ready() < 0) {
        vmf_printf("warm-worker: ready failed\n");
        return 5;
    }

    for (;;) {
        size_t len;
        int64_t rc = vmf_recv(req, sizeof(req), 0, &len);
        int stop, code = 0;

        if (rc == VMF_ECLOSED)
            return 0;
        if (rc == VMF_E2BIG) {
            vmf_printf("warm-worker: request of %lu bytes is too large\n", len);
            vmf_snprintf(out, sizeof(out), "error: request too large");
            stop = 1;
            code = 4;
        } else if (rc < 0) {
            vmf_printf("warm-worker: recv failed: %ld\n", rc);
            return 5;
        } else {
            stop = handle(req, len, out, sizeof(out));
        }

        rc = vmf_send(out, strlen(out));
        if (rc < 0 && rc != VMF_ECLOSED) {
            vmf_printf("warm-worker: send failed: %ld\n", rc);
            return 5;
        }
        if (stop || rc == VMF_ECLOSED)
            return code;
    }
}
