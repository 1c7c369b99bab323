/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride-kmsd's configuration file: a table of known keys per object, so that every error names
 * the key (docs/kmsd.md). Nothing is opened here: files are checked when the service starts.
 */
#include "kmsd/conf.h"

#include <errno.h>
#include <libgen.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "core/fileio.h"

#define CONFIG_MAX_SIZE (1024 * 1024)

typedef enum FieldType {
    F_STR,
    F_PATH,
    F_BOOL,
    F_UINT,
    F_INT64,
    F_SIZE,
    F_DOUBLE,
    F_PATHLIST,
    F_STRLIST,
    F_OBJECT,
} FieldType;

typedef struct Field Field;
struct Field {
    const char *name;
    FieldType type;
    size_t offset;       /* into KmsdConfig */
    size_t count_offset; /* lists: the size_t count */
    double min, max;     /* numbers */
    const Field *sub;    /* F_OBJECT */
};

#define O(m) offsetof(KmsdConfig, m)

static const Field tls_fields[] = {
    {"cert", F_PATH, O(tls_cert), 0, 0, 0, NULL},
    {"key", F_PATH, O(tls_key), 0, 0, 0, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL},
};
static const Field rate_fields[] = {
    {"per_second", F_DOUBLE, O(rate_per_s), 0, 0, 1e6, NULL},
    {"burst", F_UINT, O(rate_burst), 0, 1, 1e6, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL},
};
static const Field release_fields[] = {
    {"alg", F_STR, O(release_alg), 0, 0, 0, NULL},
    {"keys_dir", F_PATH, O(release_keys_dir), 0, 0, 0, NULL},
    {"key_files", F_PATHLIST, O(release_key_files), O(n_release_key_files), 0, 0, NULL},
    {"lifetime", F_INT64, O(release_lifetime), 0, 30, 3600, NULL},
    {"rotate_lead", F_INT64, O(rotate_lead), 0, 15, 30 * 86400, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL},
};
static const Field attestd_fields[] = {
    {"jwks_url", F_STR, O(jwks_url), 0, 0, 0, NULL},
    {"ca_file", F_PATH, O(jwks_ca_file), 0, 0, 0, NULL},
    {"jwks_file", F_PATH, O(jwks_file), 0, 0, 0, NULL},
    {"cache_ttl", F_INT64, O(jwks_ttl), 0, 10, 86400, NULL},
    {"refresh_min_interval", F_INT64, O(jwks_min_refresh), 0, 1, 3600, NULL},
    {"max_stale", F_INT64, O(jwks_max_stale), 0, 0, 7 * 86400, NULL},
    {"timeout", F_INT64, O(jwks_timeout), 0, 1, 120, NULL},
    {"issuer", F_STR, O(issuer), 0, 0, 0, NULL},
    {"audience", F_STR, O(audience), 0, 0, 0, NULL},
    {"skew", F_INT64, O(skew), 0, 0, 600, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL},
};
static const Field admin_fields[] = {
    {"bearer_token_file", F_PATH, O(admin_token_file), 0, 0, 0, NULL},
    {"client_ca", F_PATH, O(admin_client_ca), 0, 0, 0, NULL},
    {"allowed_subjects", F_STRLIST, O(admin_subjects), O(n_admin_subjects), 0, 0, NULL},
    {"denied_audit_per_minute", F_UINT, O(denied_audit_per_minute), 0, 0, 100000, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL},
};
static const Field top_fields[] = {
    {"listen", F_STR, O(listen), 0, 0, 0, NULL},
    {"tls", F_OBJECT, 0, 0, 0, 0, tls_fields},
    {"plain_http", F_BOOL, O(plain_http), 0, 0, 0, NULL},
    {"threads", F_UINT, O(threads), 0, 1, 256, NULL},
    {"max_body", F_SIZE, O(max_body), 0, 16384, 16 << 20, NULL},
    {"timeout", F_UINT, O(timeout_s), 0, 1, 3600, NULL},
    {"max_connections", F_UINT, O(max_connections), 0, 1, 65536, NULL},
    {"per_ip_connections", F_UINT, O(per_ip_connections), 0, 1, 65536, NULL},
    {"rate_limit", F_OBJECT, 0, 0, 0, 0, rate_fields},
    {"database", F_PATH, O(database), 0, 0, 0, NULL},
    {"kek_file", F_PATH, O(kek_file), 0, 0, 0, NULL},
    {"release", F_OBJECT, 0, 0, 0, 0, release_fields},
    {"attestd", F_OBJECT, 0, 0, 0, 0, attestd_fields},
    {"admin", F_OBJECT, 0, 0, 0, 0, admin_fields},
    {"log_level", F_STR, O(log_level), 0, 0, 0, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL},
};

static int cerr(char **ret_error, const char *fmt, ...) _printf_(2, 3);
static int cerr(char **ret_error, const char *fmt, ...) {
    va_list ap;
    if (ret_error) {
        va_start(ap, fmt);
        if (vasprintf(ret_error, fmt, ap) < 0)
            *ret_error = NULL;
        va_end(ap);
    }
    return -EBADMSG;
}

static char *resolve(const char *base_dir, const char *p) {
    char *s = NULL;
    if (p[0] == '/' || !base_dir)
        return strdup(p);
    if (asprintf(&s, "%s/%s", base_dir, p) < 0)
        return NULL;
    return s;
}

static void strv_free(char **v, size_t n) {
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

static const char *names_of(const Field *t, char *buf, size_t size) {
    size_t off = 0;
    buf[0] = 0;
    for (const Field *f = t; f->name && off < size; f++)
        off += (size_t)snprintf(buf + off, size - off, "%s%s", off ? ", " : "", f->name);
    return buf;
}

static int parse_list(json_t *v, const char *key, bool path, const char *base_dir, char ***ret,
                      size_t *ret_n, char **ret_error) {
    size_t i;
    json_t *e;
    char **l;

    if (!json_is_array(v))
        return cerr(ret_error, "%s: expected an array of strings", key);
    if (json_array_size(v) > 1024)
        return cerr(ret_error, "%s: at most 1024 entries", key);
    l = calloc(json_array_size(v) + 1, sizeof(char *));
    if (!l)
        return -ENOMEM;
    strv_free(*ret, *ret_n);
    *ret = l;
    *ret_n = 0;
    json_array_foreach(v, i, e) {
        if (!json_is_string(e) || !json_string_value(e)[0])
            return cerr(ret_error, "%s[%zu]: expected a non-empty string", key, i);
        l[i] = path ? resolve(base_dir, json_string_value(e)) : strdup(json_string_value(e));
        if (!l[i])
            return -ENOMEM;
        (*ret_n)++;
    }
    return 0;
}

static int parse_table(json_t *obj, const Field *table, const char *prefix, const char *base_dir,
                       KmsdConfig *c, char **ret_error) {
    const char *k;
    json_t *v;
    char names[400], key[160];
    int r;

    if (!json_is_object(obj))
        return cerr(ret_error, "%s: expected an object", prefix[0] ? prefix : "configuration");
    json_object_foreach(obj, k, v) {
        const Field *f = NULL;
        for (const Field *t = table; t->name && !f; t++)
            if (streq(t->name, k))
                f = t;
        snprintf(key, sizeof key, "%s%s%.64s", prefix, prefix[0] ? "." : "", k);
        if (!f)
            return cerr(ret_error, "%s: unknown key (known: %s)", key,
                        names_of(table, names, sizeof names));
        void *dst = (uint8_t *)c + f->offset;
        switch (f->type) {
        case F_STR:
        case F_PATH:
            if (!json_is_string(v) || !json_string_value(v)[0])
                return cerr(ret_error, "%s: expected a non-empty string", key);
            free(*(char **)dst);
            *(char **)dst = f->type == F_PATH ? resolve(base_dir, json_string_value(v))
                                              : strdup(json_string_value(v));
            if (!*(char **)dst)
                return -ENOMEM;
            break;
        case F_BOOL:
            if (!json_is_boolean(v))
                return cerr(ret_error, "%s: expected true or false", key);
            *(bool *)dst = json_is_true(v);
            break;
        case F_UINT:
        case F_INT64:
        case F_SIZE: {
            if (!json_is_integer(v) || (double)json_integer_value(v) < f->min ||
                (double)json_integer_value(v) > f->max)
                return cerr(ret_error, "%s: expected an integer %.0f..%.0f", key, f->min, f->max);
            json_int_t n = json_integer_value(v);
            if (f->type == F_UINT)
                *(unsigned *)dst = (unsigned)n;
            else if (f->type == F_INT64)
                *(int64_t *)dst = (int64_t)n;
            else
                *(size_t *)dst = (size_t)n;
            break;
        }
        case F_DOUBLE:
            if (!json_is_number(v) || !isfinite(json_number_value(v)) ||
                json_number_value(v) < f->min || json_number_value(v) > f->max)
                return cerr(ret_error, "%s: expected a number %g..%g", key, f->min, f->max);
            *(double *)dst = json_number_value(v);
            break;
        case F_PATHLIST:
        case F_STRLIST:
            r = parse_list(v, key, f->type == F_PATHLIST, base_dir, (char ***)dst,
                           (size_t *)((uint8_t *)c + f->count_offset), ret_error);
            if (r < 0)
                return r;
            break;
        case F_OBJECT:
            r = parse_table(v, f->sub, key, base_dir, c, ret_error);
            if (r < 0)
                return r;
            break;
        }
    }
    return 0;
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

static int set_default(char **p, const char *v) {
    if (*p)
        return 0;
    *p = strdup(v);
    return *p ? 0 : -ENOMEM;
}

int kmsd_config_parse(const char *text, size_t len, const char *base_dir, KmsdConfig **ret,
                      char **ret_error) {
    _cleanup_(kmsd_config_freep) KmsdConfig *c = NULL;
    json_error_t jerr;
    json_t *root;
    int r;

    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->threads = 4;
    c->max_body = 64 * 1024;
    c->timeout_s = 10;
    c->max_connections = 1024;
    c->per_ip_connections = 64;
    c->rate_per_s = 50;
    c->rate_burst = 100;
    c->release_lifetime = 300;
    c->rotate_lead = 600;
    c->jwks_ttl = 300;
    c->jwks_min_refresh = 10;
    c->jwks_max_stale = 3600;
    c->jwks_timeout = 10;
    c->skew = 60;
    c->denied_audit_per_minute = 60;

    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return cerr(ret_error, "line %d: %s", jerr.line, jerr.text);
    r = parse_table(root, top_fields, "", base_dir, c, ret_error);
    json_decref(root);
    if (r < 0)
        return r;

    if (set_default(&c->listen, "127.0.0.1:8444") < 0 ||
        set_default(&c->release_alg, "ES384") < 0 || set_default(&c->log_level, "info") < 0)
        return -ENOMEM;
    if (!streq(c->release_alg, "ES384") && !streq(c->release_alg, "ES256"))
        return cerr(ret_error, "release.alg: '%.32s' is not supported (ES384, ES256)",
                    c->release_alg);
    if (!streq(c->log_level, "info") && !streq(c->log_level, "debug"))
        return cerr(ret_error, "log_level: '%.32s' (info, debug)", c->log_level);
    if (!c->tls_cert != !c->tls_key)
        return cerr(ret_error, "tls: both 'cert' and 'key' are needed");
    if (c->tls_cert && c->plain_http)
        return cerr(ret_error, "plain_http: true together with tls; choose one");
    if (!c->database)
        return cerr(ret_error, "database: missing (the SQLite file of secrets and audit)");
    if (!c->kek_file)
        return cerr(ret_error, "kek_file: missing (a 0600 file of 32 random bytes, the "
                               "key-encryption key; never stored in the database)");
    if (!c->release_keys_dir && c->n_release_key_files == 0)
        return cerr(ret_error, "release: give 'keys_dir' (release signing keys generated and "
                               "rotated there) or 'key_files'");
    if (c->release_keys_dir && c->n_release_key_files > 0)
        return cerr(ret_error, "release: 'keys_dir' and 'key_files' exclude each other");
    if (!c->jwks_url == !c->jwks_file)
        return cerr(ret_error, "attestd: give exactly one of 'jwks_url' (attestd's "
                               "/.well-known/jwks.json, fetched and cached) or 'jwks_file'");
    if (c->jwks_url && strncmp(c->jwks_url, "https://", 8) != 0 &&
        (strncmp(c->jwks_url, "http://", 7) != 0 || !url_host_is_loopback(c->jwks_url + 7)))
        return cerr(ret_error, "attestd.jwks_url: must be an https:// URL (http:// only to a "
                               "loopback address)");
    if (c->jwks_ca_file && !c->jwks_url)
        return cerr(ret_error, "attestd.ca_file: only with attestd.jwks_url");
    if (!c->issuer)
        return cerr(ret_error, "attestd.issuer: missing (the 'iss' of attestd's tokens, "
                               "token.issuer in its configuration)");
    if (!c->admin_token_file && !c->admin_client_ca)
        return cerr(ret_error, "admin: give 'bearer_token_file' (a 0600 file) and/or "
                               "'client_ca' (TLS client certificates)");
    if (c->admin_client_ca && !c->tls_cert)
        return cerr(ret_error, "admin.client_ca: client certificates need tls");
    if (c->n_admin_subjects > 0 && !c->admin_client_ca)
        return cerr(ret_error, "admin.allowed_subjects: only with admin.client_ca");
    *ret = TAKE_PTR(c);
    return 0;
}

int kmsd_config_load(const char *path, KmsdConfig **ret, char **ret_error) {
    _cleanup_free_ uint8_t *data = NULL;
    _cleanup_free_ char *dir = NULL, *err = NULL;
    KmsdConfig *c = NULL;
    size_t len = 0;
    int r;

    r = read_full_file(path, CONFIG_MAX_SIZE, &data, &len);
    if (r < 0) {
        if (ret_error && asprintf(ret_error, "%s: %s", path, strerror(-r)) < 0)
            *ret_error = NULL;
        return r;
    }
    dir = strdup(path);
    if (!dir)
        return -ENOMEM;
    r = kmsd_config_parse((const char *)data, len, dirname(dir), &c, &err);
    if (r < 0) {
        if (ret_error && asprintf(ret_error, "%s: %s", path, err ? err : strerror(-r)) < 0)
            *ret_error = NULL;
        return r;
    }
    c->path = strdup(path);
    if (!c->path) {
        kmsd_config_free(c);
        return -ENOMEM;
    }
    *ret = c;
    return 0;
}

KmsdConfig *kmsd_config_free(KmsdConfig *c) {
    if (!c)
        return NULL;
    free(c->path);
    free(c->listen);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->database);
    free(c->kek_file);
    free(c->release_alg);
    free(c->release_keys_dir);
    strv_free(c->release_key_files, c->n_release_key_files);
    free(c->jwks_url);
    free(c->jwks_ca_file);
    free(c->jwks_file);
    free(c->issuer);
    free(c->audience);
    free(c->admin_token_file);
    free(c->admin_client_ca);
    strv_free(c->admin_subjects, c->n_admin_subjects);
    free(c->log_level);
    free(c);
    return NULL;
}
