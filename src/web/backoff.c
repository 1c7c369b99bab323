/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff And
 * Jitter"): the delay is uniform in [0, min(max, base * 2^attempt)], so that many clients
 * refused at once do not retry in lockstep. A server's Retry-After wins (capped at max), but
 * never below base: "Retry-After: 0" (or a date in the past) must not turn the retry loop into
 * a flood.
 */
#include "web/backoff.h"

#include <stdint.h>

#include <openssl/rand.h>

unsigned nt_backoff_next(NtBackoff *b, long retry_after_s) {
    uint64_t cap, r;

    if (b->attempt < UINT32_MAX)
        b->attempt++;
    if (retry_after_s >= 0) {
        uint64_t ms = (uint64_t)retry_after_s > UINT64_MAX / 1000 ? UINT64_MAX
                                                                  : (uint64_t)retry_after_s * 1000;
        if (ms > b->max_ms)
            ms = b->max_ms;
        return (unsigned)(ms < b->base_ms ? b->base_ms : ms);
    }
    /* attempt was incremented above: the first delay uses 2^0. */
    unsigned shift = b->attempt - 1;
    cap = shift >= 32 ? UINT64_MAX : (uint64_t)b->base_ms << shift;
    if (cap > b->max_ms)
        cap = b->max_ms;
    if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
        return (unsigned)cap; /* no jitter beats no delay */
    return (unsigned)(r % (cap + 1));
}

void nt_backoff_reset(NtBackoff *b) {
    b->attempt = 0;
}
