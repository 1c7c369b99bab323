/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "core/macro.h"
#include "core/ratelimit.h"

typedef struct Reports {
    unsigned n;
    uint32_t key[512];
    bool global[512];
    unsigned count[512];
} Reports;

static void record(uint32_t key, bool global, unsigned suppressed, void *userdata) {
    Reports *r = userdata;
    assert_true(r->n < ELEMENTSOF(r->key));
    r->key[r->n] = key;
    r->global[r->n] = global;
    r->count[r->n] = suppressed;
    r->n++;
}

static unsigned total_reported(const Reports *r) {
    unsigned t = 0;
    for (unsigned i = 0; i < r->n; i++)
        t += r->count[i];
    return t;
}

static void test_single(void **state) {
    RateLimit rl = RATELIMIT_INIT(10000, 5);
    unsigned dropped = 99;

    for (int i = 0; i < 5; i++) {
        assert_true(ratelimit_below(&rl, 1000 + (uint64_t)i, &dropped));
        assert_int_equal(dropped, 0);
    }
    for (int i = 0; i < 100; i++)
        assert_false(ratelimit_below(&rl, 2000, &dropped));
    assert_int_equal(ratelimit_expire(&rl, 10999), 0); /* window still open */
    assert_false(ratelimit_below(&rl, 10999, NULL));
    /* The window began at 1000: over at 11000; the next event reports 101 refused. */
    assert_true(ratelimit_below(&rl, 11000, &dropped));
    assert_int_equal(dropped, 101);
    assert_int_equal(ratelimit_expire(&rl, 30000), 0);
}

/* One noisy key gets its burst, then one summary per window; a quiet key is not affected. */
static void test_table_per_key(void **state) {
    RateLimitTable t;
    Reports r = {0};
    unsigned passed = 0;

    ratelimit_table_init(&t, 10000, 5, 60);
    for (int i = 0; i < 10000; i++)
        passed += ratelimit_table_check(&t, 1000, 500, record, &r);
    assert_int_equal(passed, 5);
    assert_true(ratelimit_table_check(&t, 1001, 600, record, &r));
    assert_int_equal(r.n, 0);
    ratelimit_table_flush(&t, 5000, record, &r);
    assert_int_equal(r.n, 0); /* nothing over yet */
    ratelimit_table_flush(&t, 10500, record, &r);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.key[0], 1000);
    assert_false(r.global[0]);
    assert_int_equal(r.count[0], 9995);
    /* Summarised once only; the key starts afresh. */
    ratelimit_table_flush(&t, 30000, record, &r);
    assert_int_equal(r.n, 1);
    assert_true(ratelimit_table_check(&t, 1000, 30001, record, &r));
}

/* The summary also comes with the key's next event after its window. */
static void test_table_summary_on_next_event(void **state) {
    RateLimitTable t;
    Reports r = {0};

    ratelimit_table_init(&t, 10000, 2, 60);
    for (int i = 0; i < 7; i++)
        (void)ratelimit_table_check(&t, 42, 0, record, &r);
    assert_true(ratelimit_table_check(&t, 42, 10000, record, &r));
    assert_int_equal(r.n, 1);
    assert_int_equal(r.key[0], 42);
    assert_int_equal(r.count[0], 5);
}

/* Many keys: at most the global budget passes per window, plus one global summary; every
 * refused event is accounted for in some summary. */
static void test_table_global(void **state) {
    RateLimitTable t;
    Reports r = {0};
    unsigned passed = 0, events = 0;

    ratelimit_table_init(&t, 10000, 5, 60);
    for (uint32_t k = 0; k < 1000; k++)
        for (int i = 0; i < 10; i++, events++)
            passed += ratelimit_table_check(&t, 5000 + k, 100 + k, record, &r);
    assert_int_equal(passed, 60);
    /* Slot reuse reported summaries within the budget? The budget was spent: none passed. */
    for (unsigned i = 0; i < r.n; i++)
        assert_true(r.global[i]);
    ratelimit_table_flush(&t, 20000, record, &r);
    /* The key summaries due at 20000 take the new window's budget (60), the rest of them goes
     * into its global summary, reported when that window is over. */
    assert_true(r.n >= 1 && r.n <= 1 + 1 + 60);
    ratelimit_table_flush(&t, 40000, record, &r);
    assert_int_equal(passed + total_reported(&r), events);
}

/* A key's summary that the global budget refuses is folded into the global summary. */
static void test_table_summary_budgeted(void **state) {
    RateLimitTable t;
    Reports r = {0};

    ratelimit_table_init(&t, 1000, 1, 2);
    assert_true(ratelimit_table_check(&t, 1, 0, record, &r));
    assert_false(ratelimit_table_check(&t, 1, 0, record, &r)); /* key 1: 1 refused */
    assert_true(ratelimit_table_check(&t, 2, 0, record, &r));
    assert_false(ratelimit_table_check(&t, 3, 0, record, &r)); /* global: 1 refused */
    for (int i = 0; i < 3; i++)
        assert_false(ratelimit_table_check(&t, 2, 0, record, &r)); /* key 2: 3 refused */
    ratelimit_table_flush(&t, 1000, record, &r);
    /* Key summaries (1 and 3) take the new window's budget of 2; the old global one (1). */
    assert_int_equal(total_reported(&r), 5);
    /* Global budget 1: the second key summary due finds it spent. */
    ratelimit_table_init(&t, 1000, 1, 1);
    memset(&r, 0, sizeof r);
    assert_true(ratelimit_table_check(&t, 1, 0, record, &r));
    assert_false(ratelimit_table_check(&t, 1, 0, record, &r));   /* key 1: 1 refused */
    assert_false(ratelimit_table_check(&t, 2, 500, record, &r)); /* global: 1 refused */
    assert_false(ratelimit_table_check(&t, 2, 500, record, &r)); /* key 2: 1 refused */
    ratelimit_table_flush(&t, 1600, record, &r);
    /* The old global window's summary, then key 1's (which takes the new budget). */
    assert_int_equal(r.n, 2);
    assert_true(r.global[0]);
    assert_int_equal(r.count[0], 1);
    assert_false(r.global[1]);
    assert_int_equal(r.key[1], 1);
    /* Key 2's summary was refused: it is in the next global summary. */
    ratelimit_table_flush(&t, 2600, record, &r);
    assert_int_equal(r.n, 3);
    assert_true(r.global[2]);
    assert_int_equal(r.count[2], 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_single),
        cmocka_unit_test(test_table_per_key),
        cmocka_unit_test(test_table_summary_on_next_event),
        cmocka_unit_test(test_table_global),
        cmocka_unit_test(test_table_summary_budgeted),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
