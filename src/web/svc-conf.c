/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The strict configuration parser of the HTTP services (svc-conf.h). Every error names the key
 * with its dotted path; an unknown key lists the known ones. Nothing is opened here but the
 * configuration file itself: the services check the files it names when they start.
 */
#include "web/svc-conf.h"

#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fileio.h"

#define CONFIG_MAX_SIZE (1024 * 1024)

#define O(m) offsetof(SvcConfig, m)

const SvcField svc_conf_tls_fields[] = {
    {"cert", SVC_F_PATH, O(tls_cert), 0, 0, 0, NULL, NULL},
    {"key", SVC_F_PATH, O(tls_key), 0, 0, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};
const SvcField svc_conf_rate_fields[] = {
    {"per_second", SVC_F_DOUBLE, O(rate_per_s), 0, 0, 1e6, NULL, NULL},
    {"burst", SVC_F_UINT, O(rate_burst), 0, 1, 1e6, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};

int svc_errf(char **ret_error, int r, const char *fmt, ...) {
    va_list ap;
    if (ret_error) {
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
            *ret_error = NULL;
        va_end(ap);
    }
    return r;
}

char *svc_conf_resolve(const char *base_dir, const char *p) {
    char *s = NULL;
    if (p[0] == '/' || !base_dir)
        return strdup(p);
    if (asprintf(&s, "%s/%s", base_dir, p) < 0)
        return NULL;
    return s;
}

void svc_strv_free(char **v, size_t n) {
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

int svc_conf_default(char **p, const char *v) {
    if (*p)
        return 0;
    *p = strdup(v);
    return *p ? 0 : -ENOMEM;
}

/* The host of "HOST[:PORT][/...]" is 127.0.0.0/8, [::1] or localhost. */
static bool url_host_is_loopback(const char *rest) {
    size_t n = strcspn(rest, "/?#");
    char host[64];

    if (n == 0 || n >= sizeof host || memchr(rest, '@', n))
        return false;
    memcpy(host, rest, n);
    host[n] = 0;
    if (host[0] == '[')
        return strncmp(host, "[::1]", 5) == 0 && (host[5] == 0 || host[5] == ':');
    host[strcspn(host, ":")] = 0;
    if (streq(host, "localhost"))
        return true;
    unsigned a, b, c, d;
    char extra;
    return sscanf(host, "%u.%u.%u.%u%c", &a, &b, &c, &d, &extra) == 4 && a == 127 && b < 256 &&
           c < 256 && d < 256 && strspn(host, "0123456789.") == strlen(host);
}

bool svc_conf_url_allowed(const char *url) {
    return strncmp(url, "https://", 8) == 0 ||
           (strncmp(url, "http://", 7) == 0 && url_host_is_loopback(url + 7));
}

static const char *names_of(const SvcField *t, char *buf, size_t size) {
    size_t off = 0;
    buf[0] = 0;
    for (const SvcField *f = t; f->name && off < size; f++)
        off += (size_t)snprintf(buf + off, size - off, "%s%s", off ? ", " : "", f->name);
    return buf;
}

static int parse_list(json_t *v, const char *key, bool path, size_t max, const char *base_dir,
                      char ***ret, size_t *ret_n, char **ret_error) {
    size_t i;
    json_t *e;
    char **l;

    if (!json_is_array(v))
        return svc_conf_error(ret_error, "%s: expected an array of strings", key);
    if (max > 0 && json_array_size(v) > max)
        return svc_conf_error(ret_error, "%s: at most %zu entries", key, max);
    l = calloc(json_array_size(v) + 1, sizeof(char *));
    if (!l)
        return -ENOMEM;
    svc_strv_free(*ret, *ret_n);
    *ret = l;
    *ret_n = 0;
    json_array_foreach(v, i, e) {
        if (!json_is_string(e) || !json_string_value(e)[0])
            return svc_conf_error(ret_error, "%s[%zu]: expected a non-empty string", key, i);
        l[i] =
            path ? svc_conf_resolve(base_dir, json_string_value(e)) : strdup(json_string_value(e));
        if (!l[i])
            return -ENOMEM;
        (*ret_n)++;
    }
    return 0;
}

static int parse_member(json_t *v, const SvcField *f, const char *key, const char *base_dir,
                        void *conf, char **ret_error) {
    void *dst = (uint8_t *)conf + f->offset;

    switch (f->type) {
    case SVC_F_STR:
    case SVC_F_PATH:
        if (!json_is_string(v) || !json_string_value(v)[0])
            return svc_conf_error(ret_error, "%s: expected a non-empty string", key);
        free(*(char **)dst);
        *(char **)dst = f->type == SVC_F_PATH ? svc_conf_resolve(base_dir, json_string_value(v))
                                              : strdup(json_string_value(v));
        return *(char **)dst ? 0 : -ENOMEM;
    case SVC_F_BOOL:
        if (!json_is_boolean(v))
            return svc_conf_error(ret_error, "%s: expected true or false", key);
        *(bool *)dst = json_is_true(v);
        return 0;
    case SVC_F_UINT:
    case SVC_F_INT64:
    case SVC_F_SIZE: {
        if (!json_is_integer(v) || (double)json_integer_value(v) < f->min ||
            (double)json_integer_value(v) > f->max)
            return svc_conf_error(ret_error, "%s: expected an integer %.0f..%.0f", key, f->min,
                                  f->max);
        json_int_t n = json_integer_value(v);
        if (f->type == SVC_F_UINT)
            *(unsigned *)dst = (unsigned)n;
        else if (f->type == SVC_F_INT64)
            *(int64_t *)dst = (int64_t)n;
        else
            *(size_t *)dst = (size_t)n;
        return 0;
    }
    case SVC_F_DOUBLE:
        if (!json_is_number(v) || !isfinite(json_number_value(v)) ||
            json_number_value(v) < f->min || json_number_value(v) > f->max)
            return svc_conf_error(ret_error, "%s: expected a number %g..%g", key, f->min, f->max);
        *(double *)dst = json_number_value(v);
        return 0;
    case SVC_F_PATHLIST:
    case SVC_F_STRLIST:
        return parse_list(v, key, f->type == SVC_F_PATHLIST, (size_t)f->max, base_dir,
                          (char ***)dst, (size_t *)((uint8_t *)conf + f->count_offset), ret_error);
    case SVC_F_OBJECT:
        if (f->sub)
            return svc_conf_parse_table(v, f->sub, key, base_dir, conf, ret_error);
        return f->parse(v, key, base_dir, conf, ret_error);
    default:
        return -EINVAL;
    }
}

int svc_conf_parse_table(json_t *obj, const SvcField *table, const char *prefix,
                         const char *base_dir, void *conf, char **ret_error) {
    const char *k;
    json_t *v;
    char names[400], key[160];
    int r;

    if (!json_is_object(obj))
        return svc_conf_error(ret_error, "%s: expected an object",
                              prefix[0] ? prefix : "configuration");
    json_object_foreach(obj, k, v) {
        const SvcField *f = NULL;
        for (const SvcField *t = table; t->name && !f; t++)
            if (streq(t->name, k))
                f = t;
        snprintf(key, sizeof key, "%s%s%.64s", prefix, prefix[0] ? "." : "", k);
        if (!f)
            return svc_conf_error(ret_error, "%s: unknown key (known: %s)", key,
                                  names_of(table, names, sizeof names));
        r = parse_member(v, f, key, base_dir, conf, ret_error);
        if (r < 0)
            return r;
    }
    return 0;
}

int svc_conf_parse_text(const char *text, size_t len, const SvcField *table, const char *base_dir,
                        void *conf, char **ret_error) {
    json_error_t jerr;
    json_t *root;
    int r;

    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return svc_conf_error(ret_error, "line %d: %s", jerr.line, jerr.text);
    r = svc_conf_parse_table(root, table, "", base_dir, conf, ret_error);
    json_decref(root);
    return r;
}

void svc_conf_init(SvcConfig *c) {
    c->threads = 4;
    c->max_body = 64 * 1024;
    c->timeout_s = 10;
    c->max_connections = 1024;
    c->per_ip_connections = 64;
    c->rate_per_s = 50;
    c->rate_burst = 100;
}

int svc_conf_check(SvcConfig *c, const char *default_listen, char **ret_error) {
    if (svc_conf_default(&c->listen, default_listen) < 0)
        return -ENOMEM;
    if (!c->tls_cert != !c->tls_key)
        return svc_conf_error(ret_error, "tls: both 'cert' and 'key' are needed");
    if (c->tls_cert && c->plain_http)
        return svc_conf_error(ret_error, "plain_http: true together with tls; choose one");
    return 0;
}

void svc_conf_done(SvcConfig *c) {
    free(c->path);
    free(c->listen);
    free(c->tls_cert);
    free(c->tls_key);
    c->path = c->listen = c->tls_cert = c->tls_key = NULL;
}

int svc_conf_load(const char *path, SvcConfParseFn *parse, SvcConfFreeFn *free_conf, void **ret,
                  char **ret_error) {
    _cleanup_free_ uint8_t *data = NULL;
    _cleanup_free_ char *dir = NULL, *err = NULL;
    void *c = NULL;
    size_t len = 0;
    int r;

    r = read_full_file(path, CONFIG_MAX_SIZE, &data, &len);
    if (r < 0)
        return svc_errf(ret_error, r, "%s: %s", path, strerror(-r));
    dir = strdup(path);
    if (!dir)
        return -ENOMEM;
    r = parse((const char *)data, len, dirname(dir), &c, &err);
    if (r < 0)
        return svc_errf(ret_error, r, "%s: %s", path, err ? err : strerror(-r));
    ((SvcConfig *)c)->path = strdup(path);
    if (!((SvcConfig *)c)->path) {
        free_conf(c);
        return -ENOMEM;
    }
    *ret = c;
    return 0;
}
