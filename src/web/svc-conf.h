/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The configuration skeleton shared by Nitride's HTTP services (nitride-attestd, nitride-kmsd):
 * the members every service has (listen, tls, limits: SvcConfig), and the strict table-driven
 * JSON parser their files go through. Strict means: an unknown key, a wrong type or a number out
 * of range is an error naming the key ("tls.cert: expected a non-empty string"), so that a typo
 * in a file can never silently fall back to a default. Relative paths are resolved against the
 * file's directory.
 *
 * A service's configuration struct starts with SVC_CONFIG_HEAD (the SvcConfig members, reachable
 * both as c->listen and as c->svc), and its key tables list SVC_CONFIG_HTTP_FIELDS() first.
 */
#pragma once

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/macro.h"

/* The members every service's configuration has, in this order. */
#define SVC_CONFIG_MEMBERS                                                                         \
    char *path; /* the file (reloads, messages) */                                                 \
    char *listen;                                                                                  \
    char *tls_cert, *tls_key;                                                                      \
    bool plain_http;                                                                               \
    unsigned threads;                                                                              \
    size_t max_body;                                                                               \
    unsigned timeout_s;                                                                            \
    unsigned max_connections, per_ip_connections;                                                  \
    double rate_per_s;                                                                             \
    unsigned rate_burst;

typedef struct SvcConfig {
    SVC_CONFIG_MEMBERS
} SvcConfig;

/* First member of a service's configuration struct: the same storage named as one SvcConfig
 * (c->svc, for the shared code) and as plain members (c->listen, for the service's own). Both
 * views have the same members in the same order, so they are the same bytes. */
#define SVC_CONFIG_HEAD                                                                            \
    union {                                                                                        \
        SvcConfig svc;                                                                             \
        struct {                                                                                   \
            SVC_CONFIG_MEMBERS                                                                     \
        };                                                                                         \
    }

typedef enum SvcFieldType {
    SVC_F_STR,      /* non-empty string */
    SVC_F_PATH,     /* non-empty string, resolved against the file's directory */
    SVC_F_BOOL,     /* true or false */
    SVC_F_UINT,     /* unsigned, min..max */
    SVC_F_INT64,    /* int64_t, min..max */
    SVC_F_SIZE,     /* size_t, min..max */
    SVC_F_DOUBLE,   /* finite double, min..max */
    SVC_F_PATHLIST, /* char ** of paths + size_t count; max: most entries (0: no limit) */
    SVC_F_STRLIST,  /* char ** of strings + size_t count; max: most entries (0: no limit) */
    SVC_F_OBJECT,   /* a nested table (sub), or a member parsed by parse */
    _SVC_F_MAX,
    _SVC_F_INVALID = -EINVAL,
} SvcFieldType;

/* Parses one member that no table describes; key is its full dotted name. Returns 0, or -EBADMSG
 * with *ret_error set (svc_conf_error()), or -ENOMEM. */
typedef int SvcFieldParseFn(json_t *v, const char *key, const char *base_dir, void *conf,
                            char **ret_error);

typedef struct SvcField SvcField;
struct SvcField {
    const char *name; /* NULL ends a table */
    SvcFieldType type;
    size_t offset;          /* into the configuration struct */
    size_t count_offset;    /* lists: the size_t count */
    double min, max;        /* numbers; lists: max entries */
    const SvcField *sub;    /* SVC_F_OBJECT: the nested table */
    SvcFieldParseFn *parse; /* SVC_F_OBJECT without sub */
};

/* The "tls" and "rate_limit" tables (offsets into SvcConfig, which starts every configuration). */
extern const SvcField svc_conf_tls_fields[];
extern const SvcField svc_conf_rate_fields[];

/* The common top-level keys, in the order services list them; max_body_min differs per service.
 * Offsets are SvcConfig's: a service's struct must start with SVC_CONFIG_HEAD. */
#define SVC_CONFIG_HTTP_FIELDS(max_body_min)                                                       \
    {"listen", SVC_F_STR, offsetof(SvcConfig, listen), 0, 0, 0, NULL, NULL},                       \
        {"tls", SVC_F_OBJECT, 0, 0, 0, 0, svc_conf_tls_fields, NULL},                              \
        {"plain_http", SVC_F_BOOL, offsetof(SvcConfig, plain_http), 0, 0, 0, NULL, NULL},          \
        {"threads", SVC_F_UINT, offsetof(SvcConfig, threads), 0, 1, 256, NULL, NULL},              \
        {"max_body", SVC_F_SIZE, offsetof(SvcConfig, max_body), 0, (max_body_min), 16 << 20,       \
         NULL,       NULL},                                                                        \
        {"timeout", SVC_F_UINT, offsetof(SvcConfig, timeout_s), 0, 1, 3600, NULL, NULL},           \
        {"max_connections",                                                                        \
         SVC_F_UINT,                                                                               \
         offsetof(SvcConfig, max_connections),                                                     \
         0,                                                                                        \
         1,                                                                                        \
         65536,                                                                                    \
         NULL,                                                                                     \
         NULL},                                                                                    \
        {"per_ip_connections",                                                                     \
         SVC_F_UINT,                                                                               \
         offsetof(SvcConfig, per_ip_connections),                                                  \
         0,                                                                                        \
         1,                                                                                        \
         65536,                                                                                    \
         NULL,                                                                                     \
         NULL},                                                                                    \
    {                                                                                              \
        "rate_limit", SVC_F_OBJECT, 0, 0, 0, 0, svc_conf_rate_fields, NULL                         \
    }

/* Sets *ret_error to the formatted message (when ret_error is not NULL) and returns r. */
int svc_errf(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);
/* Same with r = -EBADMSG: a configuration error. */
#define svc_conf_error(ret_error, ...) svc_errf(ret_error, -EBADMSG, __VA_ARGS__)

/* p, or base_dir/p when p is relative and base_dir is set. malloc'd; NULL on OOM. */
char *svc_conf_resolve(const char *base_dir, const char *p);
/* Frees the first n strings of v, and v. */
void svc_strv_free(char **v, size_t n);
/* *p = strdup(v) unless *p is set. Returns 0 or -ENOMEM. */
int svc_conf_default(char **p, const char *v);
/* url is https://..., or http:// to a loopback host (127.0.0.0/8, [::1], localhost). */
bool svc_conf_url_allowed(const char *url);

/* Parses the object obj against table into conf (members found are replaced; others keep their
 * defaults). prefix names obj in messages ("" for the top level). Returns 0, -EBADMSG with "key:
 * problem" in *ret_error, or -ENOMEM. */
int svc_conf_parse_table(json_t *obj, const SvcField *table, const char *prefix,
                         const char *base_dir, void *conf, char **ret_error);
/* Parses JSON text (duplicate keys refused) against table. Same returns. */
int svc_conf_parse_text(const char *text, size_t len, const SvcField *table, const char *base_dir,
                        void *conf, char **ret_error);

/* The defaults of the SvcConfig members (listen excepted: svc_conf_check() sets it). */
void svc_conf_init(SvcConfig *c);
/* After parsing: listen defaults to default_listen; tls needs cert and key, and excludes
 * plain_http. Returns 0, -EBADMSG with *ret_error, or -ENOMEM. */
int svc_conf_check(SvcConfig *c, const char *default_listen, char **ret_error);
/* Frees the SvcConfig members. */
void svc_conf_done(SvcConfig *c);

/* Reads the file path (at most 1 MiB) and hands its text and directory to parse, which returns
 * the configuration in *(void **)ret; its SvcConfig (at offset 0) gets path. Returns 0, or the
 * negative errno with "PATH: problem" in *ret_error. */
typedef int SvcConfParseFn(const char *text, size_t len, const char *base_dir, void **ret,
                           char **ret_error);
typedef void SvcConfFreeFn(void *conf);
int svc_conf_load(const char *path, SvcConfParseFn *parse, SvcConfFreeFn *free_conf, void **ret,
                  char **ret_error);

/* Defines "int PREFIX_load(const char *path, TYPE **ret, char **ret_error)" on svc_conf_load() over
 * PREFIX_parse() and PREFIX_free(), the service's own functions. */
#define SVC_CONF_DEFINE_LOAD(prefix, type)                                                         \
    static int prefix##_parse_any(const char *text, size_t len, const char *base_dir, void **ret,  \
                                  char **ret_error) {                                              \
        type *c = NULL;                                                                            \
        int r = prefix##_parse(text, len, base_dir, &c, ret_error);                                \
        *ret = c;                                                                                  \
        return r;                                                                                  \
    }                                                                                              \
    static void prefix##_free_any(void *c) {                                                       \
        prefix##_free(c);                                                                          \
    }                                                                                              \
    int prefix##_load(const char *path, type **ret, char **ret_error) {                            \
        void *c = NULL;                                                                            \
        int r = svc_conf_load(path, prefix##_parse_any, prefix##_free_any, &c, ret_error);         \
        if (r >= 0)                                                                                \
            *ret = c;                                                                              \
        return r;                                                                                  \
    }
