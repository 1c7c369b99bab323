/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prometheus metrics (text exposition format 0.0.4) for the HTTP services. A registry holds
 * families (counter, gauge, histogram), each with a bounded number of label sets: once a family
 * has NT_METRICS_MAX_SERIES label sets, new ones are counted under the label set
 * result="overflow" (so hostile input, e.g. a path used as a label, cannot grow memory). All
 * functions are thread-safe (one mutex per registry; updates are a lookup and an add).
 * Recording into an undeclared family is ignored (and logged at debug level).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "core/macro.h"

typedef struct NtMetrics NtMetrics;

#define NT_METRICS_MAX_SERIES 1000
#define NT_METRICS_OVERFLOW_LABELS "overflow=\"true\""

/* Returns 0 or -ENOMEM. */
int nt_metrics_new(NtMetrics **ret);
NtMetrics *nt_metrics_free(NtMetrics *m);
DEFINE_TRIVIAL_CLEANUP_FUNC(NtMetrics *, nt_metrics_free);

/* Declares a family (TYPE/HELP lines); type "counter", "gauge" or "histogram" (histogram buckets
 * in seconds given once: NULL = default 0.0005..10 s). name must match [a-zA-Z_:][a-zA-Z0-9_:]*.
 * Returns 0, -EEXIST (already declared), -EINVAL (bad name/type/buckets), -ENOMEM. */
int nt_metrics_declare(NtMetrics *m, const char *name, const char *type, const char *help,
                       const double *buckets, size_t n_buckets);
/* labels: already-formatted label pairs, e.g. "endpoint=\"attest\",result=\"ok\"" or NULL.
 * Values of label strings are escaped by the caller with nt_metrics_label_escape().
 * Thread-safe. add: counters (and gauges); set: gauges; observe: histograms. */
void nt_metrics_add(NtMetrics *m, const char *name, const char *labels, uint64_t n);
void nt_metrics_set(NtMetrics *m, const char *name, const char *labels, double value);
void nt_metrics_observe(NtMetrics *m, const char *name, const char *labels, double value);
/* Counter value (for histograms: the count of observations), 0 if absent. For tests. */
uint64_t nt_metrics_get(NtMetrics *m, const char *name, const char *labels);
/* Renders every family in declaration order; *ret is malloc'd text. Returns 0 or -ENOMEM. */
int nt_metrics_render(NtMetrics *m, char **ret);
/* Escapes a label value (backslash, double quote, newline) into out (NUL-terminated).
 * Returns the length written, or -ENOBUFS if out is too small (out is then "" when size > 0). */
int nt_metrics_label_escape(const char *in, char *out, size_t size);
