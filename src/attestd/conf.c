/* SPDX-License-Identifier: Apache-2.0 */
#include "attestd/conf.h"

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
    F_OBJECT, /* a nested table */
} FieldType;

typedef struct Field Field;
struct Field {
    const char *name;
    FieldType type;
    size_t offset;       /* into AttestdConfig */
    size_t count_offset; /* lists: the size_t count */
    double min, max;     /* numbers */
    const Field *sub;    /* F_OBJECT */
};

#define O(m) offsetof(AttestdConfig, m)

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
static const Field challenge_fields[] = {
    {"secret", F_PATH, O(challenge_secret), 0, 0, 0, NULL},
    {"lifetime", F_INT64, O(challenge_lifetime), 0, 1, 3600, NULL},
    {"replay_capacity", F_SIZE, O(replay_capacity), 0, 16, 1 << 26, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL},
};
static const Field token_fields[] = {
    {"issuer", F_STR, O(issuer), 0, 0, 0, NULL},
    {"audience", F_STR, O(audience), 0, 0, 0, NULL},
    {"lifetime", F_INT64, O(token_lifetime), 0, 10, 86400, NULL},
    {"alg", F_STR, O(token_alg), 0, 0, 0, NULL},
    {"keys_dir", F_PATH, O(keys_dir), 0, 0, 0, NULL},
    {"key_files", F_PATHLIST, O(key_files), O(n_key_files), 0, 0, NULL},
    {"rotate_lead", F_INT64, O(rotate_lead), 0, 15, 30 * 86400, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL},
};
static const Field kds_fields[] = {
    {"url", F_STR, O(kds_url), 0, 0, 0, NULL},
    {"ca_file", F_PATH, O(kds_ca_file), 0, 0, 0, NULL},
    {"cache_dir", F_PATH, O(kds_cache_dir), 0, 0, 0, NULL},
    {"offline_dir", F_PATH, O(kds_offline_dir), 0, 0, 0, NULL},
    {"timeout", F_INT64, O(kds_timeout_s), 0, 1, 300, NULL},
    {"backoff_max", F_INT64, O(kds_backoff_max_s), 0, 1, 86400, NULL},
    {"negative_ttl", F_INT64, O(kds_negative_ttl_s), 0, 0, 86400, NULL},
    {"max_concurrent_fetches", F_UINT, O(kds_max_concurrent_fetches), 0, 1, 64, NULL},
    {"max_fetches_per_s", F_DOUBLE, O(kds_max_fetches_per_s), 0, 0.01, 1000, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL},
};
static const Field revocation_fields[] = {
    {"mode", F_STR, O(revocation_mode), 0, 0, 0, NULL},
    {"max_age", F_INT64, O(crl_max_age_s), 0, 60, 30 * 86400, NULL},
    {"max_staleness", F_INT64, O(crl_max_staleness_s), 0, 0, 365 * 86400, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL},
};
static const Field evlog_fields[] = {
    {"path", F_PATH, O(evidence_log), 0, 0, 0, NULL},
    {"max_records", F_INT64, O(evidence_log_max), 0, 1, 1e9, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL},
};
static const Field top_fields[] = {
    {"listen", F_STR, O(listen), 0, 0, 0, NULL},
    {"tls", F_OBJECT, 0, 0, 0, 0, tls_fields},
    {"plain_http", F_BOOL, O(plain_http), 0, 0, 0, NULL},
    {"threads", F_UINT, O(threads), 0, 1, 256, NULL},
    {"max_body", F_SIZE, O(max_body), 0, 4096, 16 << 20, NULL},
    {"timeout", F_UINT, O(timeout_s), 0, 1, 3600, NULL},
    {"max_connections", F_UINT, O(max_connections), 0, 1, 65536, NULL},
    {"per_ip_connections", F_UINT, O(per_ip_connections), 0, 1, 65536, NULL},
    {"rate_limit", F_OBJECT, 0, 0, 0, 0, rate_fields},
    {"challenge", F_OBJECT, 0, 0, 0, 0, challenge_fields},
    {"token", F_OBJECT, 0, 0, 0, 0, token_fields},
    {"trust_anchors", F_PATHLIST, O(trust_anchors), O(n_trust_anchors), 0, 0, NULL},
    {"policies", F_OBJECT, 0, 0, 0, 0, NULL}, /* parsed by parse_policies() */
    {"default_policy", F_STR, O(default_policy), 0, 0, 0, NULL},
    {"client_policy_ids", F_STRLIST, O(client_policy_ids), O(n_client_policy_ids), 0, 0, NULL},
    {"kds", F_OBJECT, 0, 0, 0, 0, kds_fields},
    {"revocation", F_OBJECT, 0, 0, 0, 0, revocation_fields},
    {"evidence_log", F_OBJECT, 0, 0, 0, 0, evlog_fields},
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

static int parse_table(json_t *obj, const Field *table, const char *prefix, const char *base_dir,
                       AttestdConfig *c, char **ret_error);

static int parse_policies(json_t *obj, const char *base_dir, AttestdConfig *c, char **ret_error) {
    const char *id;
    json_t *v;

    if (!json_is_object(obj) || json_object_size(obj) == 0)
        return cerr(ret_error, "policies: expected an object mapping policy ids to "
                               "{\"file\", \"recommended_tcb\"}");
    c->policies = calloc(json_object_size(obj), sizeof(AttestdPolicyRef));
    if (!c->policies)
        return -ENOMEM;
    json_object_foreach(obj, id, v) {
        AttestdPolicyRef *p = &c->policies[c->n_policies++];
        const char *k;
        json_t *kv;

        if (!id[0] || strlen(id) > 64 ||
            strspn(id, "abcdefghijklmnopqrstuvwxyz"
                       "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != strlen(id))
            return cerr(ret_error, "policies: id '%.64s' must be 1-64 of [A-Za-z0-9._-]", id);
        p->id = strdup(id);
        if (!p->id)
            return -ENOMEM;
        if (!json_is_object(v))
            return cerr(ret_error, "policies.%s: expected an object", id);
        json_object_foreach(v, k, kv) {
            if (streq(k, "file")) {
                if (!json_is_string(kv) || !json_string_value(kv)[0])
                    return cerr(ret_error, "policies.%s.file: expected a path", id);
                p->file = resolve(base_dir, json_string_value(kv));
                if (!p->file)
                    return -ENOMEM;
            } else if (streq(k, "recommended_tcb")) {
                json_t *w = json_pack("{sO}", "min_tcb", kv);
                if (!w)
                    return -ENOMEM;
                p->recommended_tcb_json = json_dumps(w, JSON_COMPACT);
                json_decref(w);
                if (!p->recommended_tcb_json)
                    return -ENOMEM;
                /* Checked now, with the policy parser's own messages. */
                NtPolicy *tmp = NULL;
                char *perr = NULL;
                int r = nt_policy_parse(p->recommended_tcb_json, strlen(p->recommended_tcb_json),
                                        &tmp, &perr);
                nt_policy_free(tmp);
                if (r < 0) {
                    r = cerr(ret_error, "policies.%s.recommended_tcb: %s", id,
                             perr ? perr : "invalid");
                    free(perr);
                    return r;
                }
            } else
                return cerr(ret_error, "policies.%s: unknown key '%.64s' (file, recommended_tcb)",
                            id, k);
        }
        if (!p->file)
            return cerr(ret_error, "policies.%s: missing key 'file'", id);
    }
    return 0;
}

static int parse_list(json_t *v, const char *key, bool path, const char *base_dir, char ***ret,
                      size_t *ret_n, char **ret_error) {
    size_t i;
    json_t *e;
    char **l;

    if (!json_is_array(v))
        return cerr(ret_error, "%s: expected an array of strings", key);
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
                       AttestdConfig *c, char **ret_error) {
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
            r = f->sub ? parse_table(v, f->sub, key, base_dir, c, ret_error)
                       : parse_policies(v, base_dir, c, ret_error);
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

int attestd_config_parse(const char *text, size_t len, const char *base_dir, AttestdConfig **ret,
                         char **ret_error) {
    _cleanup_(attestd_config_freep) AttestdConfig *c = NULL;
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
    c->challenge_lifetime = 60;
    c->replay_capacity = 100000;
    c->token_lifetime = 300;
    c->rotate_lead = 600;
    c->kds_timeout_s = 10;
    c->kds_backoff_max_s = 300;
    c->kds_negative_ttl_s = 600;
    c->kds_max_concurrent_fetches = 2;
    c->kds_max_fetches_per_s = 5;
    c->crl_max_age_s = 3600;
    c->crl_max_staleness_s = 0;
    c->evidence_log_max = 20000;

    root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return cerr(ret_error, "line %d: %s", jerr.line, jerr.text);
    r = parse_table(root, top_fields, "", base_dir, c, ret_error);
    json_decref(root);
    if (r < 0)
        return r;

    if (set_default(&c->listen, "127.0.0.1:8443") < 0 || set_default(&c->token_alg, "ES384") < 0 ||
        set_default(&c->issuer, "nitride-attestd") < 0 ||
        set_default(&c->revocation_mode,
                    c->kds_url || c->kds_cache_dir || c->kds_offline_dir ? "require" : "off") < 0)
        return -ENOMEM;
    if (!streq(c->token_alg, "ES384") && !streq(c->token_alg, "ES256"))
        return cerr(ret_error, "token.alg: '%.32s' is not supported (ES384, ES256)", c->token_alg);
    if (!streq(c->revocation_mode, "off") && !streq(c->revocation_mode, "best-effort") &&
        !streq(c->revocation_mode, "require"))
        return cerr(ret_error, "revocation.mode: '%.32s' (off, best-effort, require)",
                    c->revocation_mode);
    if (!c->tls_cert != !c->tls_key)
        return cerr(ret_error, "tls: both 'cert' and 'key' are needed");
    if (c->tls_cert && c->plain_http)
        return cerr(ret_error, "plain_http: true together with tls; choose one");
    if (!c->challenge_secret)
        return cerr(ret_error, "challenge.secret: missing (a 0600 file of at least 32 random "
                               "bytes)");
    if (!c->keys_dir && c->n_key_files == 0)
        return cerr(ret_error, "token: give 'keys_dir' (keys generated and rotated there) or "
                               "'key_files'");
    if (c->n_policies == 0)
        return cerr(ret_error, "policies: at least one policy is needed");
    if (!c->default_policy) {
        if (c->n_policies != 1)
            return cerr(ret_error, "default_policy: missing (several policies are configured)");
        c->default_policy = strdup(c->policies[0].id);
        if (!c->default_policy)
            return -ENOMEM;
    }
    if (!attestd_config_policy(c, c->default_policy))
        return cerr(ret_error, "default_policy: '%.64s' is not in policies", c->default_policy);
    for (size_t i = 0; i < c->n_client_policy_ids; i++)
        if (!attestd_config_policy(c, c->client_policy_ids[i]))
            return cerr(ret_error, "client_policy_ids[%zu]: '%.64s' is not in policies", i,
                        c->client_policy_ids[i]);
    if (c->kds_url && strncmp(c->kds_url, "https://", 8) != 0 &&
        (strncmp(c->kds_url, "http://", 7) != 0 || !url_host_is_loopback(c->kds_url + 7)))
        return cerr(ret_error, "kds.url: must be an https:// URL (http:// only to a loopback "
                               "address, e.g. a local mirror or a test server)");
    *ret = TAKE_PTR(c);
    return 0;
}

int attestd_config_load(const char *path, AttestdConfig **ret, char **ret_error) {
    _cleanup_free_ uint8_t *data = NULL;
    _cleanup_free_ char *dir = NULL, *err = NULL;
    AttestdConfig *c = NULL;
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
    r = attestd_config_parse((const char *)data, len, dirname(dir), &c, &err);
    if (r < 0) {
        if (ret_error && asprintf(ret_error, "%s: %s", path, err ? err : strerror(-r)) < 0)
            *ret_error = NULL;
        return r;
    }
    c->path = strdup(path);
    if (!c->path) {
        attestd_config_free(c);
        return -ENOMEM;
    }
    *ret = c;
    return 0;
}

AttestdConfig *attestd_config_free(AttestdConfig *c) {
    if (!c)
        return NULL;
    free(c->path);
    free(c->listen);
    free(c->tls_cert);
    free(c->tls_key);
    free(c->challenge_secret);
    free(c->issuer);
    free(c->audience);
    free(c->token_alg);
    free(c->keys_dir);
    strv_free(c->key_files, c->n_key_files);
    strv_free(c->trust_anchors, c->n_trust_anchors);
    for (size_t i = 0; i < c->n_policies; i++) {
        free(c->policies[i].id);
        free(c->policies[i].file);
        free(c->policies[i].recommended_tcb_json);
    }
    free(c->policies);
    free(c->default_policy);
    strv_free(c->client_policy_ids, c->n_client_policy_ids);
    free(c->kds_url);
    free(c->kds_ca_file);
    free(c->kds_cache_dir);
    free(c->kds_offline_dir);
    free(c->revocation_mode);
    free(c->evidence_log);
    free(c);
    return NULL;
}

const AttestdPolicyRef *attestd_config_policy(const AttestdConfig *c, const char *id) {
    for (size_t i = 0; id && i < c->n_policies; i++)
        if (streq(c->policies[i].id, id))
            return &c->policies[i];
    return NULL;
}
