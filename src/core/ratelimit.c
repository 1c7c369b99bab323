/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fixed-window rate limits (design in ratelimit.h). No locks, no clock, no allocation.
 */
#include "ratelimit.h"

#include <string.h>

static bool window_over(const RateLimit *rl, uint64_t now_ms) {
    /* A clock going backwards (it should not: callers use CLOCK_MONOTONIC) closes the window. */
    return now_ms < rl->begin_ms || now_ms - rl->begin_ms >= rl->interval_ms;
}

unsigned ratelimit_expire(RateLimit *rl, uint64_t now_ms) {
    unsigned dropped;
    if (!rl->active || !window_over(rl, now_ms))
        return 0;
    dropped = rl->suppressed;
    rl->active = false;
    rl->num = rl->suppressed = 0;
    return dropped;
}

bool ratelimit_below(RateLimit *rl, uint64_t now_ms, unsigned *ret_dropped) {
    unsigned dropped = ratelimit_expire(rl, now_ms);

    if (ret_dropped)
        *ret_dropped = dropped;
    if (!rl->active) {
        rl->active = true;
        rl->begin_ms = now_ms;
    }
    if (rl->num < rl->burst) {
        rl->num++;
        return true;
    }
    if (rl->suppressed < UINT32_MAX)
        rl->suppressed++;
    return false;
}

void ratelimit_table_init(RateLimitTable *t, uint64_t interval_ms, unsigned key_burst,
                          unsigned global_burst) {
    memset(t, 0, sizeof *t);
    t->global = RATELIMIT_INIT(interval_ms, global_burst);
    t->interval_ms = interval_ms;
    t->key_burst = key_burst;
}

static void add_suppressed(RateLimit *rl, unsigned n) {
    rl->suppressed = rl->suppressed > UINT32_MAX - n ? UINT32_MAX : rl->suppressed + n;
}

/* Takes one unit of the global budget; reports the global summary of a window that ended. */
static bool global_below(RateLimitTable *t, uint64_t now_ms, RateLimitReport report,
                         void *userdata) {
    unsigned dropped;
    bool ok = ratelimit_below(&t->global, now_ms, &dropped);
    if (dropped > 0 && report)
        report(0, true, dropped, userdata);
    return ok;
}

/* A key's summary is a line like any other: it passes if the global budget allows, otherwise its
 * count goes into the global summary (nothing is lost, the attribution is). */
static void key_summary(RateLimitTable *t, uint32_t key, unsigned n, uint64_t now_ms,
                        RateLimitReport report, void *userdata) {
    if (n == 0)
        return;
    if (global_below(t, now_ms, report, userdata)) {
        if (report)
            report(key, false, n, userdata);
    } else
        add_suppressed(&t->global, n - 1); /* global_below counted one already */
}

static RateLimitSlot *slot_for(RateLimitTable *t, uint32_t key, uint64_t now_ms,
                               RateLimitReport report, void *userdata) {
    RateLimitSlot *free_slot = NULL, *oldest = NULL;

    for (size_t i = 0; i < RATELIMIT_SLOTS; i++) {
        RateLimitSlot *s = &t->slots[i];
        if (s->used && s->key == key)
            return s;
        if (!s->used) {
            if (!free_slot)
                free_slot = s;
        } else if (!oldest || s->rl.begin_ms < oldest->rl.begin_ms)
            oldest = s;
    }
    if (!free_slot) {
        /* Full: reuse the slot whose window began first; its refused count is reported now. */
        unsigned n = oldest->rl.suppressed;
        oldest->used = false;
        key_summary(t, oldest->key, n, now_ms, report, userdata);
        free_slot = oldest;
    }
    free_slot->used = true;
    free_slot->key = key;
    free_slot->rl = RATELIMIT_INIT(t->interval_ms, t->key_burst);
    return free_slot;
}

bool ratelimit_table_check(RateLimitTable *t, uint32_t key, uint64_t now_ms, RateLimitReport report,
                           void *userdata) {
    RateLimitSlot *s = slot_for(t, key, now_ms, report, userdata);
    unsigned dropped;
    bool ok = ratelimit_below(&s->rl, now_ms, &dropped);

    key_summary(t, key, dropped, now_ms, report, userdata);
    if (!ok)
        return false;
    if (global_below(t, now_ms, report, userdata))
        return true;
    /* Refused by the global budget: counted there (global summary), not as the key's. */
    return false;
}

void ratelimit_table_flush(RateLimitTable *t, uint64_t now_ms, RateLimitReport report,
                           void *userdata) {
    for (size_t i = 0; i < RATELIMIT_SLOTS; i++) {
        RateLimitSlot *s = &t->slots[i];
        if (!s->used || !s->rl.active || !window_over(&s->rl, now_ms))
            continue;
        s->used = false; /* idle since its window ended: the slot is free again */
        key_summary(t, s->key, ratelimit_expire(&s->rl, now_ms), now_ms, report, userdata);
    }
    {
        unsigned dropped = ratelimit_expire(&t->global, now_ms);
        if (dropped > 0 && report)
            report(0, true, dropped, userdata);
    }
}
