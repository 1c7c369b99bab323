/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Rate limits for log lines (and anything else counted in fixed windows). Pure bookkeeping: the
 * caller passes the time and does the locking, so the logic is testable without clocks.
 *
 * RateLimit: at most burst events per interval_ms window; the window starts with its first
 * event, and the events refused in it are counted so that one summary can report them.
 *
 * RateLimitTable: one RateLimit per key (e.g. a peer uid) in a small fixed table, plus a global
 * budget that every passing event also takes from. A key's refused count is reported once its
 * window is over (by the key's next event, by ratelimit_table_flush, or when its slot is reused
 * for another key); such a summary takes from the global budget too. What the global budget
 * refuses (events and summaries) is reported as one global summary per window, which is the only
 * thing not budgeted: at most global_burst + 1 reports per interval, however many keys.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

typedef struct RateLimit {
    uint64_t interval_ms;
    unsigned burst;
    uint64_t begin_ms;   /* start of the current window (valid if active) */
    bool active;         /* a window is open */
    unsigned num;        /* events passed in the window */
    unsigned suppressed; /* events refused in the window */
} RateLimit;

#define RATELIMIT_INIT(interval, b) ((RateLimit){.interval_ms = (interval), .burst = (b)})

/* Counts an event at now_ms. Returns true if it may pass (fewer than burst passed in the window),
 * false if it is refused (then counted as suppressed). If the event opens a new window and the
 * previous one refused events, *ret_dropped (if not NULL) gets their number, else 0. */
bool ratelimit_below(RateLimit *rl, uint64_t now_ms, unsigned *ret_dropped);
/* Closes the window if it is over at now_ms; returns the number of events it refused (0 if the
 * window is still open or none were refused). */
unsigned ratelimit_expire(RateLimit *rl, uint64_t now_ms);

#define RATELIMIT_SLOTS 64

typedef struct RateLimitSlot {
    uint32_t key;
    bool used;
    RateLimit rl;
} RateLimitSlot;

typedef struct RateLimitTable {
    RateLimit global;
    RateLimitSlot slots[RATELIMIT_SLOTS];
    uint64_t interval_ms;
    unsigned key_burst;
} RateLimitTable;

/* A summary: suppressed events of key (global false), or of the global budget (global true, key
 * 0) in the window that ended. */
typedef void (*RateLimitReport)(uint32_t key, bool global, unsigned suppressed, void *userdata);

void ratelimit_table_init(RateLimitTable *t, uint64_t interval_ms, unsigned key_burst,
                          unsigned global_burst);
/* Counts an event of key at now_ms; returns true if it may pass (both the key's and the global
 * budget allow it). Summaries that fall due are passed to report first (may be NULL). */
bool ratelimit_table_check(RateLimitTable *t, uint32_t key, uint64_t now_ms, RateLimitReport report,
                           void *userdata);
/* Reports the summaries of every window that is over at now_ms and frees the slots of idle keys.
 * Call it periodically (e.g. every second) so that a summary does not wait for the next event. */
void ratelimit_table_flush(RateLimitTable *t, uint64_t now_ms, RateLimitReport report,
                           void *userdata);
