/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Retry delays for HTTP clients: exponential with full jitter, or the server's Retry-After.
 */
#pragma once

typedef struct NtBackoff {
    unsigned base_ms, max_ms;
    unsigned attempt;
} NtBackoff;

/* Next delay: Retry-After (seconds, if >= 0) capped at max_ms and never below base_ms, else
 * base*2^attempt with full jitter (RAND_bytes; uniform in [0, min(max, base*2^attempt)]), capped.
 * Increments attempt. */
unsigned nt_backoff_next(NtBackoff *b, long retry_after_s);
void nt_backoff_reset(NtBackoff *b);
