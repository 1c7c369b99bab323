/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <string.h>

#include "core/macro.h"
#include "web/backoff.h"
#include "web/client.h"

/* Full jitter: every delay within [0, min(max, base * 2^k)]; over many draws the range is
 * actually used (not always the cap, not always 0). */
static void test_backoff_bounds(void **state) {
    for (unsigned k = 0; k < 40; k++) {
        unsigned max_seen = 0, min_seen = UINT_MAX;
        uint64_t cap = k >= 32 ? 30000 : MIN((uint64_t)100 << k, (uint64_t)30000);
        for (int i = 0; i < 200; i++) {
            NtBackoff b = {.base_ms = 100, .max_ms = 30000, .attempt = k};
            unsigned d = nt_backoff_next(&b, -1);
            assert_int_equal(b.attempt, k + 1);
            assert_true(d <= cap);
            max_seen = MAX(max_seen, d);
            min_seen = MIN(min_seen, d);
        }
        assert_true(max_seen >= cap / 2);
        assert_true(min_seen <= cap / 2);
    }
}

static void test_backoff_sequence(void **state) {
    NtBackoff b = {.base_ms = 50, .max_ms = 1000};
    for (int i = 0; i < 1000; i++)
        assert_true(nt_backoff_next(&b, -1) <= 1000);
    assert_int_equal(b.attempt, 1000);
    nt_backoff_reset(&b);
    assert_int_equal(b.attempt, 0);
    assert_true(nt_backoff_next(&b, -1) <= 50);
    /* A huge attempt count saturates, the delay stays capped. */
    b.attempt = UINT_MAX;
    assert_true(nt_backoff_next(&b, -1) <= 1000);
    assert_int_equal(b.attempt, UINT_MAX);
}

static void test_backoff_retry_after(void **state) {
    NtBackoff b = {.base_ms = 100, .max_ms = 60000};
    assert_int_equal(nt_backoff_next(&b, 7), 7000);
    assert_int_equal(nt_backoff_next(&b, 3600), 60000); /* capped */
    assert_int_equal(nt_backoff_next(&b, LONG_MAX), 60000);
    assert_int_equal(b.attempt, 3);
}

/* A hostile server answering "Retry-After: 0" (or a past date, parsed as 0) must not remove the
 * backoff: the delay never drops below base_ms, on any attempt. */
static void test_backoff_retry_after_zero(void **state) {
    NtBackoff b = {.base_ms = 100, .max_ms = 60000};
    for (int i = 0; i < 50; i++)
        assert_true(nt_backoff_next(&b, 0) >= 100);
    assert_int_equal(nt_backoff_next(&b, 0), 100);
    NtBackoff c = {.base_ms = 1500, .max_ms = 60000};
    assert_int_equal(nt_backoff_next(&c, 1), 1500);
    assert_int_equal(nt_backoff_next(&c, 2), 2000);
}

static void test_retry_after_parse(void **state) {
    /* Wed, 21 Oct 2015 07:28:00 GMT = 1445412480 */
    const time_t t = 1445412480;
    assert_int_equal(nt_http_parse_retry_after("120", t), 120);
    assert_int_equal(nt_http_parse_retry_after(" 5 \r\n", t), 5);
    assert_int_equal(nt_http_parse_retry_after("0", t), 0);
    assert_int_equal(nt_http_parse_retry_after("99999999999999999999999", t), LONG_MAX);
    assert_int_equal(nt_http_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", t - 30), 30);
    assert_int_equal(nt_http_parse_retry_after("Wednesday, 21-Oct-15 07:28:00 GMT", t - 45), 45);
    assert_int_equal(nt_http_parse_retry_after("Wed Oct 21 07:28:00 2015", t - 60), 60);
    /* A date in the past: retry now. */
    assert_int_equal(nt_http_parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", t + 100), 0);
    assert_int_equal(nt_http_parse_retry_after("-5", t), -1);
    assert_int_equal(nt_http_parse_retry_after("1.5", t), -1);
    assert_int_equal(nt_http_parse_retry_after("", t), -1);
    assert_int_equal(nt_http_parse_retry_after("soon", t), -1);
    assert_int_equal(nt_http_parse_retry_after(NULL, t), -1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_bounds),      cmocka_unit_test(test_backoff_sequence),
        cmocka_unit_test(test_backoff_retry_after), cmocka_unit_test(test_backoff_retry_after_zero),
        cmocka_unit_test(test_retry_after_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
