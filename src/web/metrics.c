/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Prometheus registry. Families live in an array in declaration order; each family's series
 * (one per label set) in an array searched linearly under the registry mutex: services have a
 * handful of endpoints and results, and the series count is capped at NT_METRICS_MAX_SERIES
 * (further label sets share the overflow series), so neither memory nor lookup time grows with
 * hostile input.
 */
#include "web/metrics.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "core/log.h"

typedef enum MetricType {
    METRIC_COUNTER,
    METRIC_GAUGE,
    METRIC_HISTOGRAM,
    _METRIC_TYPE_MAX,
    _METRIC_TYPE_INVALID = -EINVAL,
} MetricType;

static const char *const metric_type_names[_METRIC_TYPE_MAX] = {
    [METRIC_COUNTER] = "counter",
    [METRIC_GAUGE] = "gauge",
    [METRIC_HISTOGRAM] = "histogram",
};

typedef struct Series {
    char *labels;     /* "" for none */
    uint64_t counter; /* counter value, histogram count */
    double value;     /* gauge value, histogram sum */
    uint64_t *bucket; /* histogram: per-bucket (non-cumulative) counts */
} Series;

typedef struct Family {
    char *name, *help;
    MetricType type;
    double *buckets;
    size_t n_buckets;
    Series *series;
    size_t n_series, n_alloc;
} Family;

struct NtMetrics {
    pthread_mutex_t lock;
    Family *families;
    size_t n_families;
};

static const double default_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10};

int nt_metrics_new(NtMetrics **ret) {
    NtMetrics *m = calloc(1, sizeof(*m));
    if (!m)
        return -ENOMEM;
    pthread_mutex_init(&m->lock, NULL);
    *ret = m;
    return 0;
}

NtMetrics *nt_metrics_free(NtMetrics *m) {
    if (!m)
        return NULL;
    for (size_t i = 0; i < m->n_families; i++) {
        Family *f = &m->families[i];
        for (size_t j = 0; j < f->n_series; j++) {
            free(f->series[j].labels);
            free(f->series[j].bucket);
        }
        free(f->series);
        free(f->name);
        free(f->help);
        free(f->buckets);
    }
    free(m->families);
    pthread_mutex_destroy(&m->lock);
    free(m);
    return NULL;
}

static void unlockp(pthread_mutex_t **l) {
    if (*l)
        pthread_mutex_unlock(*l);
}

static pthread_mutex_t *lock_metrics(NtMetrics *m) {
    pthread_mutex_lock(&m->lock);
    return &m->lock;
}

static bool name_valid(const char *name) {
    if (!name || !*name)
        return false;
    for (const char *p = name; *p; p++) {
        bool alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || *p == ':';
        if (!alpha && !(p > name && *p >= '0' && *p <= '9'))
            return false;
    }
    return true;
}

static Family *find_family(NtMetrics *m, const char *name) {
    for (size_t i = 0; i < m->n_families; i++)
        if (strcmp(m->families[i].name, name) == 0)
            return &m->families[i];
    return NULL;
}

int nt_metrics_declare(NtMetrics *m, const char *name, const char *type, const char *help,
                       const double *buckets, size_t n_buckets) {
    MetricType t = _METRIC_TYPE_INVALID;

    if (!m || !name_valid(name) || !type)
        return -EINVAL;
    for (int i = 0; i < _METRIC_TYPE_MAX; i++)
        if (strcmp(type, metric_type_names[i]) == 0)
            t = (MetricType)i;
    if (t < 0)
        return -EINVAL;
    if (t == METRIC_HISTOGRAM && buckets) {
        if (n_buckets == 0 || n_buckets > 64)
            return -EINVAL;
        for (size_t i = 0; i < n_buckets; i++)
            if (!isfinite(buckets[i]) || (i > 0 && buckets[i] <= buckets[i - 1]))
                return -EINVAL;
    } else if (t == METRIC_HISTOGRAM) {
        buckets = default_buckets;
        n_buckets = ELEMENTSOF(default_buckets);
    } else
        n_buckets = 0;

    _cleanup_(unlockp) _unused_ pthread_mutex_t *l = lock_metrics(m);
    if (find_family(m, name))
        return -EEXIST;
    Family *nf = realloc(m->families, (m->n_families + 1) * sizeof(Family));
    if (!nf)
        return -ENOMEM;
    m->families = nf;
    Family f = {.type = t, .n_buckets = n_buckets};
    f.name = strdup(name);
    f.help = strdup(help ? help : "");
    if (n_buckets > 0) {
        f.buckets = malloc(n_buckets * sizeof(double));
        if (f.buckets)
            memcpy(f.buckets, buckets, n_buckets * sizeof(double));
    }
    if (!f.name || !f.help || (n_buckets > 0 && !f.buckets)) {
        free(f.name);
        free(f.help);
        free(f.buckets);
        return -ENOMEM;
    }
    m->families[m->n_families++] = f;
    return 0;
}

/* Returns the series of labels in f, creating it (or using the overflow series once the family
 * is full); NULL on OOM. Caller holds the lock. */
static Series *get_series(Family *f, const char *labels) {
    if (!labels)
        labels = "";
    for (size_t i = 0; i < f->n_series; i++)
        if (strcmp(f->series[i].labels, labels) == 0)
            return &f->series[i];
    if (f->n_series >= NT_METRICS_MAX_SERIES) {
        labels = NT_METRICS_OVERFLOW_LABELS;
        for (size_t i = 0; i < f->n_series; i++)
            if (strcmp(f->series[i].labels, labels) == 0)
                return &f->series[i];
        /* The overflow series is the one allowed beyond the cap. */
    }
    if (f->n_series == f->n_alloc) {
        size_t n = f->n_alloc ? f->n_alloc * 2 : 8;
        Series *s = realloc(f->series, n * sizeof(Series));
        if (!s)
            return NULL;
        f->series = s;
        f->n_alloc = n;
    }
    Series s = {.labels = strdup(labels)};
    if (!s.labels)
        return NULL;
    if (f->n_buckets > 0) {
        s.bucket = calloc(f->n_buckets, sizeof(uint64_t));
        if (!s.bucket) {
            free(s.labels);
            return NULL;
        }
    }
    f->series[f->n_series] = s;
    return &f->series[f->n_series++];
}

static Series *lookup(NtMetrics *m, const char *name, const char *labels, MetricType want,
                      bool also_gauge) {
    Family *f = find_family(m, name);
    if (!f) {
        log_debug("Metric '%s' not declared, ignoring.", name);
        return NULL;
    }
    if (f->type != want && !(also_gauge && f->type == METRIC_GAUGE)) {
        log_debug("Metric '%s' is a %s, ignoring.", name, metric_type_names[f->type]);
        return NULL;
    }
    return get_series(f, labels);
}

void nt_metrics_add(NtMetrics *m, const char *name, const char *labels, uint64_t n) {
    if (!m || !name)
        return;
    _cleanup_(unlockp) _unused_ pthread_mutex_t *l = lock_metrics(m);
    Family *f = find_family(m, name);
    Series *s = lookup(m, name, labels, METRIC_COUNTER, true);
    if (!s)
        return;
    if (f->type == METRIC_GAUGE)
        s->value += (double)n;
    else
        s->counter += n;
}

void nt_metrics_set(NtMetrics *m, const char *name, const char *labels, double value) {
    if (!m || !name)
        return;
    _cleanup_(unlockp) _unused_ pthread_mutex_t *l = lock_metrics(m);
    Series *s = lookup(m, name, labels, METRIC_GAUGE, false);
    if (s)
        s->value = value;
}

void nt_metrics_observe(NtMetrics *m, const char *name, const char *labels, double value) {
    if (!m || !name)
        return;
    _cleanup_(unlockp) _unused_ pthread_mutex_t *l = lock_metrics(m);
    Family *f = find_family(m, name);
    Series *s = lookup(m, name, labels, METRIC_HISTOGRAM, false);
    if (!s)
        return;
    s->counter++;
    s->value += value;
    for (size_t i = 0; i < f->n_buckets; i++)
        if (value <= f->buckets[i]) {
            s->bucket[i]++;
            break;
        }
}

uint64_t nt_metrics_get(NtMetrics *m, const char *name, const char *labels) {
    if (!m || !name)
        return 0;
    _cleanup_(unlockp) _unused_ pthread_mutex_t *l = lock_metrics(m);
    Family *f = find_family(m, name);
    if (!f)
        return 0;
    for (size_t i = 0; i < f->n_series; i++)
        if (strcmp(f->series[i].labels, labels ? labels : "") == 0)
            return f->type == METRIC_GAUGE ? (uint64_t)f->series[i].value : f->series[i].counter;
    return 0;
}

int nt_metrics_label_escape(const char *in, char *out, size_t size) {
    size_t o = 0;

    if (!in || !out || size == 0)
        return -ENOBUFS;
    for (const char *p = in; *p; p++) {
        const char *rep = NULL;
        char c[2] = {*p, 0};
        if (*p == '\\')
            rep = "\\\\";
        else if (*p == '"')
            rep = "\\\"";
        else if (*p == '\n')
            rep = "\\n";
        else
            rep = c;
        size_t n = strlen(rep);
        if (o + n >= size || o + n > INT32_MAX) {
            out[0] = 0;
            return -ENOBUFS;
        }
        memcpy(out + o, rep, n);
        o += n;
    }
    out[o] = 0;
    return (int)o;
}

typedef struct Buf {
    char *p;
    size_t len, alloc;
    bool oom;
} Buf;

static void buf_printf(Buf *b, const char *fmt, ...) _printf_(2, 3);
static void buf_printf(Buf *b, const char *fmt, ...) {
    va_list ap;

    if (b->oom)
        return;
    for (;;) {
        va_start(ap, fmt);
        int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->alloc - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if (b->p && b->len + (size_t)n < b->alloc) {
            b->len += (size_t)n;
            return;
        }
        size_t want = MAX(b->alloc * 2, b->len + (size_t)n + 1024);
        char *np = realloc(b->p, want);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->alloc = want;
    }
}

/* HELP text escaping: backslash and newline. */
static void buf_help(Buf *b, const char *help) {
    for (const char *p = help; *p; p++) {
        if (*p == '\\')
            buf_printf(b, "\\\\");
        else if (*p == '\n')
            buf_printf(b, "\\n");
        else
            buf_printf(b, "%c", *p);
    }
}

static void buf_double(Buf *b, double v) {
    if (isnan(v))
        buf_printf(b, "NaN");
    else if (isinf(v))
        buf_printf(b, v > 0 ? "+Inf" : "-Inf");
    else
        buf_printf(b, "%.17g", v);
}

/* name{labels[,extra]} */
static void buf_sample(Buf *b, const char *name, const char *suffix, const char *labels,
                       const char *extra) {
    bool has = labels && *labels;
    buf_printf(b, "%s%s", name, suffix);
    if (has || extra)
        buf_printf(b, "{%s%s%s}", has ? labels : "", has && extra ? "," : "", extra ? extra : "");
    buf_printf(b, " ");
}

int nt_metrics_render(NtMetrics *m, char **ret) {
    Buf b = {};

    if (!m || !ret)
        return -EINVAL;
    {
        _cleanup_(unlockp) _unused_ pthread_mutex_t *l = lock_metrics(m);
        buf_printf(&b, "%s", "");
        for (size_t i = 0; i < m->n_families; i++) {
            const Family *f = &m->families[i];
            buf_printf(&b, "# HELP %s ", f->name);
            buf_help(&b, f->help);
            buf_printf(&b, "\n# TYPE %s %s\n", f->name, metric_type_names[f->type]);
            for (size_t j = 0; j < f->n_series; j++) {
                const Series *s = &f->series[j];
                switch (f->type) {
                case METRIC_COUNTER:
                    buf_sample(&b, f->name, "", s->labels, NULL);
                    buf_printf(&b, "%" PRIu64 "\n", s->counter);
                    break;
                case METRIC_GAUGE:
                    buf_sample(&b, f->name, "", s->labels, NULL);
                    buf_double(&b, s->value);
                    buf_printf(&b, "\n");
                    break;
                case METRIC_HISTOGRAM: {
                    uint64_t cum = 0;
                    char le[64];
                    for (size_t k = 0; k < f->n_buckets; k++) {
                        cum += s->bucket[k];
                        (void)snprintf(le, sizeof(le), "le=\"%.17g\"", f->buckets[k]);
                        buf_sample(&b, f->name, "_bucket", s->labels, le);
                        buf_printf(&b, "%" PRIu64 "\n", cum);
                    }
                    buf_sample(&b, f->name, "_bucket", s->labels, "le=\"+Inf\"");
                    buf_printf(&b, "%" PRIu64 "\n", s->counter);
                    buf_sample(&b, f->name, "_sum", s->labels, NULL);
                    buf_double(&b, s->value);
                    buf_printf(&b, "\n");
                    buf_sample(&b, f->name, "_count", s->labels, NULL);
                    buf_printf(&b, "%" PRIu64 "\n", s->counter);
                    break;
                }
                default:
                    break;
                }
            }
        }
    }
    if (b.oom) {
        free(b.p);
        return -ENOMEM;
    }
    *ret = b.p;
    return 0;
}
