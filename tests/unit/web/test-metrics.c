/* SPDX-License-Identifier: Apache-2.0 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/macro.h"
#include "web/metrics.h"

/* A minimal parser of the text format 0.0.4: checks every line's syntax, that each sample
 * belongs to the family declared by the last TYPE line, and returns the value of the sample
 * "name{labels}" (exact text) or -1. */
static double sample_value(const char *text, const char *series, unsigned *ret_lines) {
    _cleanup_free_ char *copy = strdup(text);
    char *save = NULL, family[128] = "";
    double found = -1;
    unsigned n = 0;

    assert_non_null(copy);
    assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        n++;
        if (strncmp(line, "# HELP ", 7) == 0)
            continue;
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char type[32];
            assert_int_equal(sscanf(line + 7, "%127s %31s", family, type), 2);
            assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            continue;
        }
        assert_true(line[0] != '#');
        /* name, optional {labels}, one space, a value */
        size_t nl =
            strspn(line, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_:");
        assert_true(nl > 0);
        assert_true(family[0] && strncmp(line, family, strlen(family)) == 0);
        char *sp = strrchr(line, ' ');
        assert_non_null(sp);
        if (line[nl] == '{')
            assert_true(sp[-1] == '}');
        else
            assert_true(line + nl == sp);
        char *end;
        double v = strtod(sp + 1, &end);
        assert_true(*end == 0 || strcmp(sp + 1, "+Inf") == 0 || strcmp(sp + 1, "NaN") == 0);
        *sp = 0;
        if (strcmp(line, series) == 0)
            found = v;
    }
    if (ret_lines)
        *ret_lines = n;
    return found;
}

static void test_metrics_basic(void **state) {
    _cleanup_(nt_metrics_freep) NtMetrics *m = NULL;
    _cleanup_free_ char *text = NULL;
    const double buckets[] = {0.1, 1, 10};

    assert_int_equal(nt_metrics_new(&m), 0);
    assert_int_equal(
        nt_metrics_declare(m, "t_requests_total", "counter", "Requests.\nAll.", NULL, 0), 0);
    assert_int_equal(nt_metrics_declare(m, "t_requests_total", "counter", "again", NULL, 0),
                     -EEXIST);
    assert_int_equal(nt_metrics_declare(m, "t_inflight", "gauge", "In flight.", NULL, 0), 0);
    assert_int_equal(
        nt_metrics_declare(m, "t_latency_seconds", "histogram", "Latency.", buckets, 3), 0);
    assert_int_equal(nt_metrics_declare(m, "t_default_seconds", "histogram", "Default.", NULL, 0),
                     0);
    assert_int_equal(nt_metrics_declare(m, "9bad", "counter", "x", NULL, 0), -EINVAL);
    assert_int_equal(nt_metrics_declare(m, "bad-name", "counter", "x", NULL, 0), -EINVAL);
    assert_int_equal(nt_metrics_declare(m, "t_x", "summary", "x", NULL, 0), -EINVAL);
    const double unsorted[] = {1, 0.5};
    assert_int_equal(nt_metrics_declare(m, "t_y", "histogram", "x", unsorted, 2), -EINVAL);

    nt_metrics_add(m, "t_requests_total", "endpoint=\"a\",result=\"ok\"", 3);
    nt_metrics_add(m, "t_requests_total", "endpoint=\"a\",result=\"ok\"", 2);
    nt_metrics_add(m, "t_requests_total", "endpoint=\"b\",result=\"policy\"", 1);
    nt_metrics_add(m, "t_requests_total", NULL, 7);
    nt_metrics_add(m, "t_undeclared", NULL, 1); /* ignored */
    nt_metrics_set(m, "t_inflight", NULL, 4.5);
    nt_metrics_set(m, "t_requests_total", NULL, 99); /* wrong type: ignored */
    nt_metrics_observe(m, "t_latency_seconds", "endpoint=\"a\"", 0.05);
    nt_metrics_observe(m, "t_latency_seconds", "endpoint=\"a\"", 0.5);
    nt_metrics_observe(m, "t_latency_seconds", "endpoint=\"a\"", 0.7);
    nt_metrics_observe(m, "t_latency_seconds", "endpoint=\"a\"", 100);
    nt_metrics_observe(m, "t_default_seconds", NULL, 0.003);

    assert_int_equal(nt_metrics_get(m, "t_requests_total", "endpoint=\"a\",result=\"ok\""), 5);
    assert_int_equal(nt_metrics_get(m, "t_requests_total", "endpoint=\"b\",result=\"policy\""), 1);
    assert_int_equal(nt_metrics_get(m, "t_requests_total", NULL), 7);
    assert_int_equal(nt_metrics_get(m, "t_requests_total", "endpoint=\"c\""), 0);
    assert_int_equal(nt_metrics_get(m, "t_latency_seconds", "endpoint=\"a\""), 4);

    assert_int_equal(nt_metrics_render(m, &text), 0);
    assert_non_null(strstr(
        text, "# HELP t_requests_total Requests.\\nAll.\n# TYPE t_requests_total counter\n"));
    assert_non_null(strstr(text, "# TYPE t_latency_seconds histogram\n"));
    assert_true(sample_value(text, "t_requests_total{endpoint=\"a\",result=\"ok\"}", NULL) == 5);
    assert_true(sample_value(text, "t_requests_total", NULL) == 7);
    assert_true(sample_value(text, "t_inflight", NULL) == 4.5);
    /* Buckets are cumulative; +Inf equals the count. */
    assert_true(sample_value(text,
                             "t_latency_seconds_bucket{endpoint=\"a\",le=\"0.10000000000000001\"}",
                             NULL) == 1);
    assert_true(sample_value(text, "t_latency_seconds_bucket{endpoint=\"a\",le=\"1\"}", NULL) == 3);
    assert_true(sample_value(text, "t_latency_seconds_bucket{endpoint=\"a\",le=\"10\"}", NULL) ==
                3);
    assert_true(sample_value(text, "t_latency_seconds_bucket{endpoint=\"a\",le=\"+Inf\"}", NULL) ==
                4);
    assert_true(sample_value(text, "t_latency_seconds_count{endpoint=\"a\"}", NULL) == 4);
    double sum = sample_value(text, "t_latency_seconds_sum{endpoint=\"a\"}", NULL);
    assert_true(sum > 101.24 && sum < 101.26);
    assert_true(
        sample_value(text, "t_default_seconds_bucket{le=\"0.0050000000000000001\"}", NULL) == 1);
    assert_true(
        sample_value(text, "t_default_seconds_bucket{le=\"0.0025000000000000001\"}", NULL) == 0);
    assert_true(sample_value(text, "t_default_seconds_bucket{le=\"10\"}", NULL) == 1);
}

static void test_metrics_escape(void **state) {
    char out[32];
    assert_int_equal(nt_metrics_label_escape("a\"b\\c\nd", out, sizeof(out)), 10);
    assert_string_equal(out, "a\\\"b\\\\c\\nd");
    assert_int_equal(nt_metrics_label_escape("", out, sizeof(out)), 0);
    assert_string_equal(out, "");
    assert_int_equal(nt_metrics_label_escape("0123456789", out, 10), -ENOBUFS);
    assert_string_equal(out, "");
    assert_int_equal(nt_metrics_label_escape("012345678", out, 10), 9);
    assert_int_equal(nt_metrics_label_escape("\"\"\"\"\"", out, 10), -ENOBUFS);
}

/* Hostile label values cannot grow a family beyond NT_METRICS_MAX_SERIES series: the rest is
 * counted, exactly, under the overflow label set. */
static void test_metrics_overflow(void **state) {
    _cleanup_(nt_metrics_freep) NtMetrics *m = NULL;
    _cleanup_free_ char *text = NULL;
    unsigned lines = 0;
    char labels[64];

    assert_int_equal(nt_metrics_new(&m), 0);
    assert_int_equal(nt_metrics_declare(m, "t_total", "counter", "x", NULL, 0), 0);
    assert_int_equal(nt_metrics_declare(m, "t_hist", "histogram", "x", NULL, 0), 0);
    for (unsigned i = 0; i < 5000; i++) {
        (void)snprintf(labels, sizeof(labels), "path=\"/evil/%u\"", i);
        nt_metrics_add(m, "t_total", labels, 1);
        nt_metrics_observe(m, "t_hist", labels, 0.001);
    }
    assert_int_equal(nt_metrics_get(m, "t_total", "path=\"/evil/999\""), 1);
    assert_int_equal(nt_metrics_get(m, "t_total", "path=\"/evil/1000\""), 0);
    assert_int_equal(nt_metrics_get(m, "t_total", NT_METRICS_OVERFLOW_LABELS), 4000);
    assert_int_equal(nt_metrics_get(m, "t_hist", NT_METRICS_OVERFLOW_LABELS), 4000);
    /* Existing series keep counting after the cap. */
    nt_metrics_add(m, "t_total", "path=\"/evil/5\"", 1);
    assert_int_equal(nt_metrics_get(m, "t_total", "path=\"/evil/5\""), 2);
    assert_int_equal(nt_metrics_render(m, &text), 0);
    /* 2 families x (HELP + TYPE) + 1001 counter lines + 1001 x (14 buckets + Inf + sum + count) */
    assert_int_equal(sample_value(text, "t_total{overflow=\"true\"}", &lines), 4000);
    assert_int_equal(lines, 4 + 1001 + 1001 * 17);
}

typedef struct ThreadArg {
    NtMetrics *m;
    unsigned id;
} ThreadArg;

static void *adder(void *p) {
    ThreadArg *a = p;
    char labels[64];
    for (unsigned i = 0; i < 20000; i++) {
        (void)snprintf(labels, sizeof(labels), "result=\"r%u\"", i % 4);
        nt_metrics_add(a->m, "t_total", labels, 1);
        nt_metrics_observe(a->m, "t_hist", NULL, (double)a->id);
    }
    return NULL;
}

static void test_metrics_threads(void **state) {
    _cleanup_(nt_metrics_freep) NtMetrics *m = NULL;
    pthread_t t[4];
    ThreadArg args[4];

    assert_int_equal(nt_metrics_new(&m), 0);
    assert_int_equal(nt_metrics_declare(m, "t_total", "counter", "x", NULL, 0), 0);
    assert_int_equal(nt_metrics_declare(m, "t_hist", "histogram", "x", NULL, 0), 0);
    for (unsigned i = 0; i < 4; i++) {
        args[i] = (ThreadArg){m, i};
        assert_int_equal(pthread_create(&t[i], NULL, adder, &args[i]), 0);
    }
    for (unsigned i = 0; i < 4; i++)
        assert_int_equal(pthread_join(t[i], NULL), 0);
    for (unsigned r = 0; r < 4; r++) {
        char labels[64];
        (void)snprintf(labels, sizeof(labels), "result=\"r%u\"", r);
        assert_int_equal(nt_metrics_get(m, "t_total", labels), 20000);
    }
    assert_int_equal(nt_metrics_get(m, "t_hist", NULL), 80000);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_metrics_basic),
        cmocka_unit_test(test_metrics_escape),
        cmocka_unit_test(test_metrics_overflow),
        cmocka_unit_test(test_metrics_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
