/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride-kmsd's HTTP API (docs/kmsd.md):
 *   POST   /v1/secrets/{id}/release       Bearer EAR token -> {"release": signed JWE, ...}
 *   POST   /v1/secrets                     admin: create (value, or generated here)
 *   GET    /v1/secrets[?after=ID&limit=N]  admin: list (metadata only)
 *   GET    /v1/secrets/{id}                admin: show (metadata only)
 *   PUT    /v1/secrets/{id}/value          admin: replace (a new version)
 *   DELETE /v1/secrets/{id}                admin: delete
 *   PUT    /v1/secrets/{id}/policy         admin: set the release policy
 *   POST   /v1/secrets/{id}/policy/test    admin: evaluate a token against it, release nothing
 *   GET    /v1/audit[?after=SEQ&limit=N]   admin: audit rows
 *   GET    /v1/audit/head                  the chain head, signed with the release key
 *   GET    /v1/release-keys                JWKS of the release keys (vhsmd pins them)
 *   GET    /healthz, GET /metrics
 *
 * Order of a release: token (signature, exp, iat, iss, aud) before anything else, so that an
 * unauthenticated caller learns nothing about which secrets exist; then the secret, its policy,
 * the seal to cnf.jwk, the audit row, and only then the reply. Audit rows cost disk, so they are
 * written for requests that carry an authentic token (a token whose signature verified, even if
 * it then failed exp/iss/aud) and for every admin action; forged or junk tokens are counted in
 * the metrics only, and refused admin requests are audited up to a rate (the excess is counted in
 * the next row).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jose/jose.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "core/encoding.h"
#include "core/fileio.h"
#include "core/jcs.h"
#include "core/log.h"
#include "core/openssl-util.h"
#include "kmsd/kmsd.h"
#include "kmsd/policy.h"
#include "token/ear.h"
#include "token/release.h"
#include "web/svc-main.h"

#define LIST_DEFAULT 100
#define LIST_MAX KMS_STORE_LIST_MAX
#define AUDIT_PAGE_DEFAULT 500
#define AUDIT_PAGE_MAX KMS_STORE_LIST_MAX
#define RAW_MAX 4096

/* ---- set-up ---- */

static int declare_metrics(NtMetrics *m) {
    static const SvcMetricFamily fams[] = {
        {"nitride_kmsd_releases_total", "counter",
         "Release requests by result (ok, refused, error)"},
        {"nitride_kmsd_release_refusals_total", "counter",
         "Releases refused by a policy, by the rule that failed"},
        {"nitride_kmsd_token_failures_total", "counter",
         "Release requests whose token was refused, by the check that failed"},
        {"nitride_kmsd_admin_requests_total", "counter", "Admin requests by action and result"},
        {"nitride_kmsd_jwks_events_total", "counter",
         "attestd JWKS cache: fetch_ok, fetch_error, unknown_kid_refresh, refresh_rate_limited"},
        {"nitride_kmsd_jwks_age_seconds", "gauge", "Age of the attestd JWKS in use (-1: none)"},
        {"nitride_kmsd_audit_head_seq", "gauge", "Sequence number of the last audit row"},
    };
    return svc_metrics_declare(m, fams, ELEMENTSOF(fams));
}

static void jwks_count(void *ud, const char *event) {
    Kmsd *k = ud;
    char labels[96];
    snprintf(labels, sizeof labels, "event=\"%s\"", event);
    nt_metrics_add(k->metrics, "nitride_kmsd_jwks_events_total", labels, 1);
}

/* On failure the configuration stays the caller's. */
static void kmsd_abandon(Kmsd **k) {
    if (*k) {
        (*k)->cfg = NULL;
        kmsd_free(*k);
    }
}

int kmsd_new(KmsdConfig *cfg, bool serve, Kmsd **ret, char **ret_error) {
    _cleanup_(kmsd_abandon) Kmsd *k = NULL;
    _cleanup_(secret_freep) Secret *kek = NULL;
    NtJwsAlg alg = streq(cfg->release_alg, "ES256") ? NT_JWS_ES256 : NT_JWS_ES384;
    int r;

    k = calloc(1, sizeof *k);
    if (!k)
        return -ENOMEM;
    svc_keys_refresh_init(&k->keys_refresh, 0);
    pthread_mutex_init(&k->denied_lock, NULL);
    k->cfg = cfg;
    k->denied_rl = RATELIMIT_INIT(60 * 1000, cfg->denied_audit_per_minute);

    r = nt_metrics_new(&k->metrics);
    if (r < 0)
        return r;
    r = declare_metrics(k->metrics);
    if (r < 0)
        return r;

    /* The KEK is checked in every mode; the database is opened only to serve (check-config
     * creates nothing). */
    r = kms_kek_load(cfg->kek_file, &kek, ret_error);
    if (r < 0)
        return r;
    r = kmsd_auth_new(cfg->admin_token_file, cfg->admin_client_ca != NULL, cfg->admin_subjects,
                      cfg->n_admin_subjects, &k->auth, ret_error);
    if (r < 0)
        return r;

    if (cfg->n_release_key_files > 0)
        r = nt_signing_keys_load_files(cfg->release_key_files, cfg->n_release_key_files, alg,
                                       &k->keys, ret_error);
    else if (serve) {
        r = mkdir_p(cfg->release_keys_dir, 0700);
        if (r < 0)
            return svc_errf(ret_error, r, "release.keys_dir %s: %s", cfg->release_keys_dir,
                            strerror(-r));
        r = nt_signing_keys_open_dir(cfg->release_keys_dir, alg, &k->keys, ret_error);
    }
    if (r < 0)
        return r;
    k->keys_refresh.last = time(NULL);

    if (serve || cfg->jwks_file) {
        KmsdJwksConfig jc = {
            .url = serve ? cfg->jwks_url : NULL,
            .ca_file = cfg->jwks_ca_file,
            .file = cfg->jwks_file,
            .ttl_s = cfg->jwks_ttl,
            .min_refresh_s = cfg->jwks_min_refresh,
            .max_stale_s = cfg->jwks_max_stale,
            .timeout_s = cfg->jwks_timeout,
            .count = jwks_count,
            .userdata = k,
        };
        if (jc.url || jc.file) {
            r = kmsd_jwks_new(&jc, &k->jwks, ret_error);
            if (r < 0)
                return r;
        }
    }

    if (serve) {
        _cleanup_free_ char *err = NULL;
        r = kms_store_open_sqlite(cfg->database, kek, &k->store, &err);
        if (r == -EKEYREJECTED)
            return svc_errf(
                ret_error, r,
                "database %s: the key-encryption key in %s is not the one this database "
                "was created with%s%s",
                cfg->database, cfg->kek_file, err ? ": " : "", err ? err : "");
        if (r < 0)
            return svc_errf(ret_error, r, "database %s: %s", cfg->database,
                            err ? err : strerror(-r));
    }
    *ret = TAKE_PTR(k);
    return 0;
}

Kmsd *kmsd_free(Kmsd *k) {
    if (!k)
        return NULL;
    nt_web_server_free(k->web);
    kms_store_free(k->store);
    nt_signing_keys_free(k->keys);
    kmsd_jwks_free(k->jwks);
    kmsd_auth_free(k->auth);
    nt_metrics_free(k->metrics);
    kmsd_config_free(k->cfg);
    svc_keys_refresh_done(&k->keys_refresh);
    pthread_mutex_destroy(&k->denied_lock);
    free(k);
    return NULL;
}

/* Keys rotated by `nitride-kmsd keys rotate` show up within 10 seconds. */
static void keys_maybe_refresh(Kmsd *k, time_t now) {
    (void)svc_keys_refresh_maybe(&k->keys_refresh, k->keys, k->cfg->release_keys_dir, "release",
                                 now);
}

/* ---- replies ---- */

static int reply_err(NtWebReply *reply, unsigned status, const char *result, const char *error,
                     const char *check) {
    reply->result = result;
    return nt_web_reply_error(reply, status, error, check, NULL, NULL);
}

static int reply_errf(NtWebReply *reply, unsigned status, const char *result, const char *check,
                      const char *fmt, ...) _printf_(5, 6);
static int reply_errf(NtWebReply *reply, unsigned status, const char *result, const char *check,
                      const char *fmt, ...) {
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return reply_err(reply, status, result, msg, check);
}

static void count_admin(Kmsd *k, const char *action, const char *result) {
    char labels[128];
    snprintf(labels, sizeof labels, "action=\"%s\",result=\"%s\"", action, result);
    nt_metrics_add(k->metrics, "nitride_kmsd_admin_requests_total", labels, 1);
}

static int store_error(NtWebReply *reply, int r, const char *id) {
    switch (r) {
    case -ENOENT:
        return reply_errf(reply, 404, "not_found", "id", "no secret '%s'", id);
    case -EEXIST:
        return reply_errf(reply, 409, "exists", "id", "secret '%s' exists already", id);
    case -EINVAL:
    case -EBADMSG:
        return reply_errf(reply, 400, "malformed", "request", "the store refused it: %s",
                          strerror(-r));
    default:
        log_error_errno(r, "Secret store failure for '%s': %m", id);
        return r;
    }
}

/* ---- validation ---- */

static bool valid_id(const char *s) {
    return s && kms_secret_id_is_valid(s);
}

typedef struct SecretType {
    const char *name;
    size_t len;        /* fixed length of a symmetric key; 0: raw or PKCS#8 */
    const char *alg;   /* OpenSSL key type for PKCS#8 ("EC", "RSA", "ED25519"), NULL otherwise */
    const char *group; /* EC curve */
    int bits;          /* RSA */
} SecretType;

static const SecretType types[] = {
    {"aes256", 32, NULL, NULL, 0},      {"hmac-sha256", 32, NULL, NULL, 0},
    {"hmac-sha384", 48, NULL, NULL, 0}, {"raw", 0, NULL, NULL, 0},
    {"ec-p256", 0, "EC", "P-256", 0},   {"ec-p384", 0, "EC", "P-384", 0},
    {"ed25519", 0, "ED25519", NULL, 0}, {"rsa2048", 0, "RSA", NULL, 2048},
    {"rsa3072", 0, "RSA", NULL, 3072},  {"rsa4096", 0, "RSA", NULL, 4096},
};

static const SecretType *type_find(const char *name) {
    for (size_t i = 0; name && i < ELEMENTSOF(types); i++)
        if (streq(types[i].name, name))
            return &types[i];
    return NULL;
}

/* A fresh value of type t (raw: length bytes). Returns 0, -EINVAL (raw without a length), or an
 * OpenSSL failure. */
static int value_generate(const SecretType *t, size_t length, Secret **ret) {
    _cleanup_(secret_freep) Secret *v = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pk = NULL;
    PKCS8_PRIV_KEY_INFO *p8;
    unsigned char *out;
    int n, r;

    if (t->len || !t->alg) {
        size_t len = t->len ? t->len : length;
        if (len < 1 || len > RAW_MAX)
            return -EINVAL;
        r = secret_new(len, &v);
        if (r < 0)
            return r;
        if (RAND_priv_bytes(secret_data(v), (int)len) != 1)
            return nt_openssl_error(-EIO, "RAND_priv_bytes");
        *ret = TAKE_PTR(v);
        return 0;
    }
    if (streq(t->alg, "EC"))
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", t->group);
    else if (streq(t->alg, "RSA"))
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)t->bits);
    else
        pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!pk)
        return nt_openssl_error(-EIO, "key generation");
    p8 = EVP_PKEY2PKCS8(pk);
    if (!p8)
        return nt_openssl_error(-EIO, "EVP_PKEY2PKCS8");
    n = i2d_PKCS8_PRIV_KEY_INFO(p8, NULL);
    r = n > 0 ? secret_new((size_t)n, &v) : -EIO;
    if (r >= 0) {
        out = secret_data(v);
        if (i2d_PKCS8_PRIV_KEY_INFO(p8, &out) != n)
            r = -EIO;
    }
    PKCS8_PRIV_KEY_INFO_free(p8); /* clears the key material it held */
    if (r < 0)
        return nt_openssl_error(r, "PKCS#8 encoding");
    *ret = TAKE_PTR(v);
    return 0;
}

/* base64url (unpadded) into a Secret, by libjose. */
static int value_decode(const json_t *s, Secret **ret) {
    _cleanup_(secret_freep) Secret *v = NULL;
    const char *text = json_string_value(s);
    size_t n, len;
    int r;

    if (!text)
        return -EBADMSG;
    n = json_string_length(s);
    if (n == 0 || n > 4 * 16384 / 3 + 4)
        return -EBADMSG;
    len = jose_b64_dec_buf(text, n, NULL, 0);
    if (len == SIZE_MAX || len == 0)
        return -EBADMSG;
    r = secret_new(len, &v);
    if (r < 0)
        return r;
    if (jose_b64_dec_buf(text, n, secret_data(v), len) != len)
        return -EBADMSG;
    *ret = TAKE_PTR(v);
    return 0;
}

static bool printable(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s == 0x7f)
            return false;
    return true;
}

/* The vHSM attributes of a secret with their defaults ("policy": "local"; "max_age": 3600 for
 * "attested"), checked by the store's rules (kms_secret_attributes_check: policy, max_age, label,
 * acl and nothing else). Returns 0 and the normalised object, or -EINVAL with the reason. */
static int attributes_parse(const json_t *in, json_t **ret, char err[static 256]) {
    json_auto_t *out = NULL;
    const json_t *policy;
    int r;

    if (in && !json_is_object(in)) {
        snprintf(err, 256, "attributes: expected an object");
        return -EINVAL;
    }
    out = in ? json_deep_copy(in) : json_object();
    if (!out)
        return -ENOMEM;
    policy = json_object_get(out, "policy");
    if (!policy && json_object_set_new(out, "policy", json_string("local")) < 0)
        return -ENOMEM;
    if (json_is_string(policy) && streq(json_string_value(policy), "attested") &&
        !json_object_get(out, "max_age") &&
        json_object_set_new(out, "max_age", json_integer(3600)) < 0)
        return -ENOMEM;
    r = kms_secret_attributes_check(out, err);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(out);
    return 0;
}

/* Parses a release policy (kmsd/policy.h) strictly. Returns 0 and the normalised document (what
 * is stored), -EBADMSG with the reason, or -ENOMEM. */
static int policy_normalize(const json_t *doc, json_t **ret, char err[static 256]) {
    _cleanup_(kms_policy_freep) KmsPolicy *p = NULL;
    json_t *n;
    int r;
    if (!json_is_object(doc)) {
        snprintf(err, 256, "policy: expected a JSON object {\"version\": 1, \"rules\": {...}}");
        return -EBADMSG;
    }
    r = kms_policy_parse(doc, &p, err);
    if (r < 0)
        return r == -EINVAL ? -EBADMSG : r;
    n = kms_policy_to_json(p);
    if (!n)
        return -ENOMEM;
    *ret = n;
    return 0;
}

static json_t *meta_json(const KmsSecretMeta *m) {
    char vname[160];
    snprintf(vname, sizeof vname, "kms/%s", m->name);
    return json_pack("{ss ss ss ss sI sO* sO* sI sI}", "id", m->id, "name", m->name, "vhsm_name",
                     vname, "type", m->type, "version", (json_int_t)m->version, "attributes",
                     m->attributes, "policy", m->policy, "created", (json_int_t)m->created,
                     "updated", (json_int_t)m->updated);
}

/* ---- admin authentication ---- */

typedef struct AdminCtx {
    char actor[KMSD_ACTOR_MAX];
} AdminCtx;

/* Returns 1 when the request is an admin's (actor filled), 0 when the reply (401) is filled,
 * or a negative errno. The refusal is audited (rate-limited). */
static int admin_check(Kmsd *k, const NtWebRequest *req, NtWebReply *reply, const char *action,
                       AdminCtx *a) {
    char reason[KMSD_AUTH_REASON_MAX], detail[400];
    unsigned dropped = 0;
    bool audit;
    int r;

    r = kmsd_auth_admin(k->auth, req, a->actor, reason);
    if (r == 0)
        return 1;
    if (r != -EACCES)
        return r;
    count_admin(k, action, "denied");

    pthread_mutex_lock(&k->denied_lock);
    audit = k->cfg->denied_audit_per_minute > 0 &&
            ratelimit_below(&k->denied_rl, (uint64_t)time(NULL) * 1000, &dropped);
    if (!audit)
        k->denied_suppressed++;
    else {
        dropped = k->denied_suppressed;
        k->denied_suppressed = 0;
    }
    pthread_mutex_unlock(&k->denied_lock);
    if (audit) {
        if (dropped)
            snprintf(detail, sizeof detail,
                     "%s %.100s from %s: %s (+%u refused admin requests "
                     "not recorded, over the rate)",
                     req->method, req->path, req->client_addr, reason, dropped);
        else
            snprintf(detail, sizeof detail, "%s %.100s from %s: %s", req->method, req->path,
                     req->client_addr, reason);
        KmsAuditEvent ev = {
            .action = "admin-denied",
            .actor = a->actor,
            .result = "refused",
            .rule = "admin-auth",
            .detail = detail,
        };
        r = kms_store_audit(k->store, &ev);
        if (r < 0)
            log_warning_errno(r, "Recording a refused admin request failed: %m");
    }
    log_notice("Refused admin request %s %s from %s: %s", req->method, req->path, req->client_addr,
               reason);
    nt_web_reply_header(reply, "WWW-Authenticate", "Bearer realm=\"nitride-kmsd admin\"");
    r = reply_err(reply, 401, "denied", reason, "admin");
    return r < 0 ? r : 0;
}

/* ---- admin: secrets ---- */

static int body_json(const NtWebRequest *req, NtWebReply *reply, json_t **ret) {
    char err[200];
    int r = nt_web_request_json(req, ret, err);
    if (r == -EBADMSG)
        return reply_err(reply, 400, "malformed", err, "body") < 0 ? -ENOMEM : 0;
    return r < 0 ? r : 1;
}

/* Rejects members not in the NULL-terminated list. Returns true if all are known. */
static bool only_members(const json_t *o, const char *const *known, char err[static 200]) {
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)o, key, v) {
        bool ok = false;
        for (size_t i = 0; known[i] && !ok; i++)
            ok = streq(known[i], key);
        if (!ok) {
            snprintf(err, 200, "unknown member '%.48s'", key);
            return false;
        }
    }
    return true;
}

/* The value of a create/replace body: "value" (base64url) or "generate": true (+ "length" for
 * raw). Returns 1 with *ret, 0 with the reply filled, or a negative errno. */
static int body_value(const json_t *body, const SecretType *t, NtWebReply *reply, Secret **ret) {
    const json_t *value = json_object_get(body, "value"), *gen = json_object_get(body, "generate"),
                 *length = json_object_get(body, "length");
    char err[256];
    int r;

    if (gen && !json_is_boolean(gen))
        return reply_err(reply, 400, "malformed", "generate: expected true or false", "generate");
    if (!value == !json_is_true(gen))
        return reply_err(reply, 400, "malformed",
                         "give either \"value\" (base64url) or \"generate\": true", "value");
    if (length && (!json_is_true(gen) || t->len || t->alg || !json_is_integer(length) ||
                   json_integer_value(length) < 1 || json_integer_value(length) > RAW_MAX))
        return reply_errf(reply, 400, "malformed", "length",
                          "length: only to generate a raw value, 1..%d bytes", RAW_MAX);
    if (json_is_true(gen)) {
        if (!t->len && !t->alg && !length)
            return reply_err(reply, 400, "malformed",
                             "length: needed to generate a raw value (1..4096 bytes)", "length");
        r = value_generate(t, length ? (size_t)json_integer_value(length) : 0, ret);
        return r < 0 ? r : 1;
    }
    r = value_decode(value, ret);
    if (r == -EBADMSG)
        return reply_err(reply, 400, "malformed", "value: expected unpadded base64url", "value");
    if (r < 0)
        return r;
    r = kms_secret_value_check(t->name, *ret, err);
    if (r < 0) {
        *ret = secret_free(*ret);
        return reply_err(reply, 400, "malformed", err, "value");
    }
    return 1;
}

static int handle_create(void *ud, const NtWebRequest *req, NtWebReply *reply) {
    static const char *const known[] = {"id",     "name",       "type",   "value",   "generate",
                                        "length", "attributes", "policy", "version", NULL};
    Kmsd *k = ud;
    AdminCtx a;
    json_auto_t *body = NULL, *attrs = NULL, *policy = NULL;
    _cleanup_(secret_freep) Secret *value = NULL;
    const char *id, *name, *type;
    const SecretType *t;
    char err[256];
    int r;

    if ((r = admin_check(k, req, reply, "create", &a)) <= 0)
        return r;
    if ((r = body_json(req, reply, &body)) <= 0)
        return r;
    if (!only_members(body, known, err))
        return reply_err(reply, 400, "malformed", err, "request");
    id = json_string_value(json_object_get(body, "id"));
    name = json_string_value(json_object_get(body, "name"));
    type = json_string_value(json_object_get(body, "type"));
    if (!valid_id(id))
        return reply_err(reply, 400, "malformed",
                         "id: 1..64 of [a-z0-9._-], starting with a letter or digit", "id");
    if (!name)
        name = id;
    if (!kms_secret_name_is_valid(name))
        return reply_err(reply, 400, "malformed",
                         "name: the vHSM key name under kms/, 1..128 of [A-Za-z0-9._:@-], not "
                         "starting with . or -",
                         "name");
    t = type_find(type);
    if (!t)
        return reply_err(reply, 400, "malformed",
                         "type: aes256, hmac-sha256, hmac-sha384, raw, ec-p256, ec-p384, "
                         "ed25519, rsa2048, rsa3072 or rsa4096",
                         "type");
    r = attributes_parse(json_object_get(body, "attributes"), &attrs, err);
    if (r == -EINVAL || r == -EBADMSG)
        return reply_err(reply, 400, "malformed", err, "attributes");
    if (r < 0)
        return r;
    if (!json_object_get(body, "policy"))
        return reply_err(reply, 400, "malformed",
                         "policy: missing (a release policy, docs/kmsd-policy.md)", "policy");
    r = policy_normalize(json_object_get(body, "policy"), &policy, err);
    if (r == -EBADMSG)
        return reply_err(reply, 400, "malformed", err, "policy");
    if (r < 0)
        return r;
    if ((r = body_value(body, t, reply, &value)) <= 0)
        return r;

    time_t now = time(NULL);
    KmsSecretMeta m = {
        .id = (char *)id,
        .name = (char *)name,
        .type = (char *)t->name,
        .version = 1,
        .attributes = attrs,
        .policy = policy,
        .created = now,
        .updated = now,
    };
    KmsAuditEvent ev = {
        .action = "create",
        .actor = a.actor,
        .secret_id = id,
        .version = 1,
        .result = "ok",
        .detail = json_is_true(json_object_get(body, "generate")) ? "value generated by kmsd"
                                                                  : "value given",
    };
    /* A re-created id continues its version numbers: answer with the version written. */
    r = kms_store_create_version(k->store, &m, value, &ev, &m.version);
    if (r < 0) {
        count_admin(k, "create", "error");
        return store_error(reply, r, id);
    }
    count_admin(k, "create", "ok");
    log_info("Secret '%s' (kms/%s, %s) created by %s.", id, name, t->name, a.actor);
    reply->result = "ok";
    return nt_web_reply_json(reply, 201, meta_json(&m));
}

static int handle_list(void *ud, const NtWebRequest *req, NtWebReply *reply) {
    Kmsd *k = ud;
    AdminCtx a;
    const char *after = nt_web_request_query(req, "after"),
               *limit_s = nt_web_request_query(req, "limit");
    KmsSecretMeta *list = NULL;
    size_t n = 0, limit = LIST_DEFAULT;
    json_auto_t *arr = NULL;
    int r;

    if ((r = admin_check(k, req, reply, "list", &a)) <= 0)
        return r;
    if (after && !valid_id(after))
        return reply_err(reply, 400, "malformed", "after: a secret id", "after");
    if (limit_s) {
        char *end = NULL;
        unsigned long v = strtoul(limit_s, &end, 10);
        if (!*limit_s || *end || v < 1 || v > LIST_MAX)
            return reply_errf(reply, 400, "malformed", "limit", "limit: 1..%d", LIST_MAX);
        limit = v;
    }
    r = kms_store_list(k->store, after, limit, &list, &n);
    if (r < 0)
        return store_error(reply, r, after ? after : "");
    arr = json_array();
    for (size_t i = 0; i < n; i++)
        if (arr && json_array_append_new(arr, meta_json(&list[i])) < 0)
            json_decref(TAKE_PTR(arr));
    kms_secret_meta_array_free(list, n);
    if (!arr)
        return -ENOMEM;
    count_admin(k, "list", "ok");
    reply->result = "ok";
    json_t *out = json_pack("{sO}", "secrets", arr);
    if (out && n == limit && n > 0)
        json_object_set_new(out, "next",
                            json_incref(json_object_get(json_array_get(arr, n - 1), "id")));
    return nt_web_reply_json(reply, 200, out);
}

static int handle_show(Kmsd *k, const char *id, const NtWebRequest *req, NtWebReply *reply) {
    AdminCtx a;
    KmsSecretMeta m = {};
    int r;

    if ((r = admin_check(k, req, reply, "show", &a)) <= 0)
        return r;
    r = kms_store_get(k->store, id, &m, NULL);
    if (r < 0)
        return store_error(reply, r, id);
    count_admin(k, "show", "ok");
    reply->result = "ok";
    r = nt_web_reply_json(reply, 200, meta_json(&m));
    kms_secret_meta_clear(&m);
    return r;
}

static int handle_replace(Kmsd *k, const char *id, const NtWebRequest *req, NtWebReply *reply) {
    static const char *const known[] = {"value", "generate", "length", "version", NULL};
    AdminCtx a;
    json_auto_t *body = NULL;
    _cleanup_(secret_freep) Secret *value = NULL;
    KmsSecretMeta m = {};
    const SecretType *t;
    uint32_t version = 0;
    char err[200];
    int r;

    if ((r = admin_check(k, req, reply, "replace", &a)) <= 0)
        return r;
    if ((r = body_json(req, reply, &body)) <= 0)
        return r;
    if (!only_members(body, known, err))
        return reply_err(reply, 400, "malformed", err, "request");
    r = kms_store_get(k->store, id, &m, NULL);
    if (r < 0)
        return store_error(reply, r, id);
    t = type_find(m.type);
    kms_secret_meta_clear(&m);
    if (!t)
        return -EBADMSG; /* the store holds only known types */
    if ((r = body_value(body, t, reply, &value)) <= 0)
        return r;
    KmsAuditEvent ev = {
        .action = "replace",
        .actor = a.actor,
        .secret_id = id,
        .result = "ok",
        .detail = json_is_true(json_object_get(body, "generate")) ? "value generated by kmsd"
                                                                  : "value given",
    };
    r = kms_store_replace(k->store, id, value, &ev, &version);
    if (r < 0) {
        count_admin(k, "replace", "error");
        return store_error(reply, r, id);
    }
    count_admin(k, "replace", "ok");
    log_info("Secret '%s' replaced by %s: version %" PRIu32 ".", id, a.actor, version);
    reply->result = "ok";
    return nt_web_reply_json(reply, 200,
                             json_pack("{ss sI}", "id", id, "version", (json_int_t)version));
}

static int handle_delete(Kmsd *k, const char *id, const NtWebRequest *req, NtWebReply *reply) {
    AdminCtx a;
    int r;

    if ((r = admin_check(k, req, reply, "delete", &a)) <= 0)
        return r;
    KmsAuditEvent ev = {
        .action = "delete",
        .actor = a.actor,
        .secret_id = id,
        .result = "ok",
    };
    r = kms_store_delete(k->store, id, &ev);
    if (r < 0) {
        count_admin(k, "delete", "error");
        return store_error(reply, r, id);
    }
    count_admin(k, "delete", "ok");
    log_info("Secret '%s' deleted by %s.", id, a.actor);
    reply->result = "ok";
    return nt_web_reply_json(reply, 200, json_pack("{ss sb}", "id", id, "deleted", 1));
}

static int handle_policy_set(Kmsd *k, const char *id, const NtWebRequest *req, NtWebReply *reply) {
    AdminCtx a;
    json_auto_t *body = NULL, *policy = NULL;
    char err[256];
    int r;

    if ((r = admin_check(k, req, reply, "policy-set", &a)) <= 0)
        return r;
    if ((r = body_json(req, reply, &body)) <= 0)
        return r;
    r = policy_normalize(body, &policy, err);
    if (r == -EBADMSG)
        return reply_err(reply, 400, "malformed", err, "policy");
    if (r < 0)
        return r;
    KmsAuditEvent ev = {
        .action = "policy-set",
        .actor = a.actor,
        .secret_id = id,
        .result = "ok",
    };
    r = kms_store_set_policy(k->store, id, policy, &ev);
    if (r < 0) {
        count_admin(k, "policy-set", "error");
        return store_error(reply, r, id);
    }
    count_admin(k, "policy-set", "ok");
    log_info("Release policy of '%s' set by %s.", id, a.actor);
    reply->result = "ok";
    return nt_web_reply_json(reply, 200, json_pack("{ss sO}", "id", id, "policy", policy));
}

/* ---- tokens ---- */

/* The check a token failure names (errno and nt_ear_verify's message). */
static const char *token_check_name(int r, const char *err) {
    switch (r) {
    case -EKEYREJECTED:
        return strncmp(err, "unknown kid", 11) == 0 ? "kid" : "signature";
    case -EKEYEXPIRED:
        return "exp";
    case -EACCES:
        if (strncmp(err, "issuer", 6) == 0)
            return "iss";
        if (strncmp(err, "audience", 8) == 0)
            return "aud";
        if (strstr(err, "status"))
            return "ear.status";
        return "eat_profile";
    case -EBADMSG:
        return strstr(err, "future") ? "iat" : "format";
    default:
        return "token";
    }
}

/* True when the failure comes after the signature verified (the token is authentic). */
static bool token_authentic_failure(int r, const char *err) {
    return r == -EKEYEXPIRED || r == -EACCES || (r == -EBADMSG && strstr(err, "future"));
}

static const json_t *annotated_evidence(const json_t *claims) {
    return json_object_get(json_object_get(json_object_get(claims, "submods"), NT_EAR_SUBMOD),
                           "ear.veraison.annotated-evidence");
}

static void token_options(Kmsd *k, NtEarVerifyOptions *o) {
    *o = (NtEarVerifyOptions)NT_EAR_VERIFY_OPTIONS_INIT;
    o->issuer = k->cfg->issuer;
    o->audience = k->cfg->audience;
    o->skew_s = k->cfg->skew > 0 ? k->cfg->skew : -1;
    o->min_status = -1; /* the policy decides (min_status rule); contraindicated never passes */
}

/* ---- release ---- */

typedef struct ReleaseCtx {
    Kmsd *k;
    const char *id;
    json_t *claims;
    char actor[96];
    const char *token_jti, *measurement, *chip_id;
    KmsSecretMeta meta;
    Secret *value;
    char *release;
} ReleaseCtx;

static void release_ctx_done(ReleaseCtx *c) {
    json_decref(c->claims);
    kms_secret_meta_clear(&c->meta);
    secret_free(c->value);
    free(c->release);
}

static void release_ctx_claims(ReleaseCtx *c, json_t *claims) {
    const json_t *ae = annotated_evidence(claims);
    c->claims = claims;
    c->token_jti = json_string_value(json_object_get(claims, "jti"));
    c->measurement = json_string_value(json_object_get(ae, "measurement"));
    c->chip_id = json_string_value(json_object_get(ae, "chip_id_sha256"));
    snprintf(c->actor, sizeof c->actor, "token:%.64s", c->token_jti ? c->token_jti : "?");
}

/* Writes the release attempt's audit row. */
static int release_audit(ReleaseCtx *c, const char *result, const char *rule, const char *detail) {
    KmsAuditEvent ev = {
        .action = "release",
        .actor = c->actor[0] ? c->actor : "token:?",
        .secret_id = c->id,
        .version = c->meta.version,
        .token_jti = c->token_jti,
        .measurement = c->measurement,
        .chip_id = c->chip_id,
        .result = result,
        .rule = rule,
        .detail = detail,
    };
    int r = kms_store_audit(c->k->store, &ev);
    if (r < 0)
        log_error_errno(r, "Recording the release attempt for '%s' failed: %m", c->id);
    return r;
}

static void release_metric(Kmsd *k, const char *result) {
    char labels[64];
    snprintf(labels, sizeof labels, "result=\"%s\"", result);
    nt_metrics_add(k->metrics, "nitride_kmsd_releases_total", labels, 1);
}

static int reply_refusal(NtWebReply *reply, const KmsPolicyRefusal *f) {
    reply->result = "policy";
    return nt_web_reply_json(reply, 403,
                             json_pack("{ss ss ss ss}", "error", "policy", "rule", f->rule,
                                       "expected", f->expected, "found", f->found));
}

/* Token (Authorization: Bearer) -> claims, or a filled 401/503 reply (returns 0). Returns 1 on
 * success. c->claims is set for authentic tokens also when they failed a later check (audit). */
static int release_token(ReleaseCtx *c, const NtWebRequest *req, NtWebReply *reply,
                         const char *token) {
    Kmsd *k = c->k;
    NtEarVerifyOptions o;
    NtEarVerifyResult res;
    char err[256], labels[96];
    const char *check;
    int r;

    if (!k->jwks)
        return -EINVAL;
    if (!token) {
        nt_metrics_add(k->metrics, "nitride_kmsd_token_failures_total", "check=\"missing\"", 1);
        nt_web_reply_header(reply, "WWW-Authenticate", "Bearer");
        return reply_err(reply, 401, "token",
                         "token: no 'Authorization: Bearer <EAR token from nitride-attestd>'",
                         "token") < 0
                   ? -ENOMEM
                   : 0;
    }
    token_options(k, &o);
    r = kmsd_jwks_verify(k->jwks, token, &o, &res, err);
    if (r == 0) {
        release_ctx_claims(c, TAKE_PTR(res.claims));
        return 1;
    }
    /* The claims of an authentic token that failed a later check, for the audit row. */
    if (res.claims && token_authentic_failure(r, err))
        release_ctx_claims(c, TAKE_PTR(res.claims));
    json_decref(res.claims);
    if (r == -ENOMEM)
        return r;
    if (r == -EAGAIN) {
        release_metric(k, "error");
        nt_web_reply_header(reply, "Retry-After", "5");
        return reply_errf(reply, 503, "unavailable", "jwks", "%s", err) < 0 ? -ENOMEM : 0;
    }
    check = token_check_name(r, err);
    snprintf(labels, sizeof labels, "check=\"%s\"", check);
    nt_metrics_add(k->metrics, "nitride_kmsd_token_failures_total", labels, 1);
    release_metric(k, "refused");
    if (token_authentic_failure(r, err)) {
        char detail[300];
        snprintf(detail, sizeof detail, "token refused: %s", err);
        (void)release_audit(c, "refused", check, detail);
    }
    return reply_errf(reply, 401, "token", check, "token refused: %s", err) < 0 ? -ENOMEM : 0;
}

static int release_do(Kmsd *k, const char *id, const NtWebRequest *req, NtWebReply *reply) {
    _cleanup_(release_ctx_done) ReleaseCtx c = {.k = k, .id = id};
    static const char *const known[] = {"volume_uuid", "purpose", "version", NULL};
    json_auto_t *body = NULL;
    const char *volume_uuid = NULL, *purpose = NULL, *status;
    KmsPolicy *policy = NULL;
    KmsPolicyRefusal f = {};
    const json_t *cnf, *attrs;
    char err[256], jti[32], detail[300];
    uint8_t rnd[16];
    time_t now = time(NULL);
    int r;

    r = release_token(&c, req, reply, kmsd_bearer_token(req));
    if (r <= 0)
        return r;

    /* The request body: empty, or {"volume_uuid": "..."}. */
    if (req->body_len > 0) {
        if ((r = body_json(req, reply, &body)) <= 0)
            return r;
        if (!only_members(body, known, err))
            return reply_err(reply, 400, "malformed", err, "request");
        const json_t *vu = json_object_get(body, "volume_uuid");
        if (vu && (!json_is_string(vu) || json_string_length(vu) > 64 ||
                   !printable(json_string_value(vu))))
            return reply_err(reply, 400, "malformed", "volume_uuid: a UUID string", "volume_uuid");
        volume_uuid = json_string_value(vu);
        /* "purpose": what the caller says the release is for (e.g. luks-reseal), audited. */
        const json_t *pu = json_object_get(body, "purpose");
        if (pu &&
            (!json_is_string(pu) || json_string_length(pu) < 1 || json_string_length(pu) > 32 ||
             strspn(json_string_value(pu), "abcdefghijklmnopqrstuvwxyz0123456789-") !=
                 json_string_length(pu)))
            return reply_err(reply, 400, "malformed", "purpose: 1..32 of [a-z0-9-]", "purpose");
        purpose = json_string_value(pu);
    }

    r = kms_store_get(k->store, id, &c.meta, &c.value);
    if (r == -ENOENT) {
        release_metric(k, "error");
        (void)release_audit(&c, "error", NULL, "no such secret");
        return store_error(reply, r, id);
    }
    if (r < 0)
        return store_error(reply, r, id);

    /* contraindicated never gets a release, whatever the policy says. */
    status = json_string_value(json_object_get(
        json_object_get(json_object_get(c.claims, "submods"), NT_EAR_SUBMOD), "ear.status"));
    if (!status || streq(status, "contraindicated")) {
        snprintf(f.rule, sizeof f.rule, "min_status");
        snprintf(f.expected, sizeof f.expected, "affirming or warning");
        snprintf(f.found, sizeof f.found, "%s", status ? status : "(none)");
    } else {
        r = kms_policy_parse(c.meta.policy, &policy, err);
        if (r < 0) {
            log_error("The stored policy of '%s' does not parse: %s", id, err);
            (void)release_audit(&c, "error", NULL, "stored policy does not parse");
            release_metric(k, "error");
            return reply_err(reply, 500, "error", "the secret's stored policy is invalid",
                             "policy");
        }
        r = kms_policy_eval(policy, c.claims, volume_uuid, &f);
        kms_policy_free(policy);
        if (r < 0 && r != -EACCES) {
            release_metric(k, "error");
            (void)release_audit(&c, "error", NULL, "policy evaluation failed");
            return r;
        }
        if (r == 0)
            f.rule[0] = 0;
    }
    if (f.rule[0]) {
        char labels[128], esc[80];
        if (nt_metrics_label_escape(f.rule, esc, sizeof esc) < 0)
            snprintf(esc, sizeof esc, "other");
        snprintf(labels, sizeof labels, "rule=\"%s\"", esc);
        nt_metrics_add(k->metrics, "nitride_kmsd_release_refusals_total", labels, 1);
        release_metric(k, "refused");
        snprintf(detail, sizeof detail, "expected %.120s, found %.120s%s%.32s", f.expected, f.found,
                 purpose ? ", purpose " : "", purpose ? purpose : "");
        r = release_audit(&c, "refused", f.rule, detail);
        if (r < 0)
            return r;
        log_info("Release of '%s' to %s refused: %s (expected %s, found %s).", id, c.actor, f.rule,
                 f.expected, f.found);
        return reply_refusal(reply, &f);
    }

    /* Seal to cnf.jwk with the secret's vHSM attributes, signed by the release key. */
    cnf = json_object_get(json_object_get(c.claims, "cnf"), "jwk");
    if (!json_is_object(cnf)) {
        release_metric(k, "refused");
        (void)release_audit(&c, "refused", "cnf", "token without cnf.jwk");
        return reply_err(reply, 401, "token", "token refused: no cnf.jwk to seal the secret to",
                         "cnf");
    }
    if (RAND_bytes(rnd, sizeof rnd) != 1)
        return nt_openssl_error(-EIO, "RAND_bytes");
    if (jose_b64_enc_buf(rnd, sizeof rnd, jti, sizeof jti - 1) != 22)
        return -EIO;
    jti[22] = 0;
    char vname[160];
    snprintf(vname, sizeof vname, "kms/%s", c.meta.name);
    attrs = c.meta.attributes;
    NtReleaseInfo h = {
        .name = vname,
        .type = c.meta.type,
        .version = c.meta.version,
        .policy = (char *)(json_string_value(json_object_get(attrs, "policy")) ?: "local"),
        .max_age = (uint32_t)json_integer_value(json_object_get(attrs, "max_age")),
        .label = (char *)json_string_value(json_object_get(attrs, "label")),
        .acl = json_object_get(attrs, "acl"),
        .secret_id = (char *)id,
        .jti = jti,
        .token_jti = (char *)c.token_jti,
        .iat = now,
        .exp = now + k->cfg->release_lifetime,
    };
    keys_maybe_refresh(k, now);
    r = nt_release_seal(k->keys, cnf, &h, secret_const_data(c.value), secret_size(c.value), now,
                        &c.release);
    if (r == -EINVAL) {
        release_metric(k, "refused");
        (void)release_audit(&c, "refused", "cnf",
                            "cnf.jwk is not an EC P-384/P-256 public key to seal to");
        return reply_err(reply, 400, "malformed",
                         "the token's cnf.jwk is not an EC P-384 or P-256 public key (a vhsmd "
                         "transfer key)",
                         "cnf");
    }
    if (r < 0) {
        release_metric(k, "error");
        (void)release_audit(&c, "error", NULL, "sealing failed");
        return log_error_errno(r, "Sealing '%s' failed: %m", id);
    }
    /* The secret leaves only once its audit row is written. */
    snprintf(detail, sizeof detail, "release %s (kms/%.64s v%" PRIu32 "%s%.64s%s%.32s)", jti,
             c.meta.name, c.meta.version, volume_uuid ? ", volume " : "",
             volume_uuid ? volume_uuid : "", purpose ? ", purpose " : "", purpose ? purpose : "");
    r = release_audit(&c, "ok", NULL, detail);
    if (r < 0) {
        release_metric(k, "error");
        return r;
    }
    release_metric(k, "ok");
    log_info("Released '%s' v%" PRIu32 " to %s (measurement %.16s..., release %s).", id,
             c.meta.version, c.actor, c.measurement ? c.measurement : "?", jti);
    reply->result = "ok";
    return nt_web_reply_json(reply, 200,
                             json_pack("{ss ss ss sI ss sI}", "release", c.release, "name", vname,
                                       "type", c.meta.type, "version", (json_int_t)c.meta.version,
                                       "jti", jti, "exp", (json_int_t)h.exp));
}

static int handle_policy_test(Kmsd *k, const char *id, const NtWebRequest *req, NtWebReply *reply) {
    static const char *const known[] = {"token", "volume_uuid", NULL};
    AdminCtx a;
    json_auto_t *body = NULL, *claims = NULL, *out = NULL;
    KmsSecretMeta m = {};
    KmsPolicy *policy = NULL;
    KmsPolicyRefusal f = {};
    NtEarVerifyOptions o;
    NtEarVerifyResult res;
    const char *token, *volume_uuid;
    char err[256];
    int r;

    if ((r = admin_check(k, req, reply, "policy-test", &a)) <= 0)
        return r;
    if ((r = body_json(req, reply, &body)) <= 0)
        return r;
    if (!only_members(body, known, err))
        return reply_err(reply, 400, "malformed", err, "request");
    token = json_string_value(json_object_get(body, "token"));
    volume_uuid = json_string_value(json_object_get(body, "volume_uuid"));
    if (!token)
        return reply_err(reply, 400, "malformed", "token: the EAR token to evaluate", "token");
    if (!k->jwks)
        return -EINVAL;
    r = kms_store_get(k->store, id, &m, NULL);
    if (r < 0)
        return store_error(reply, r, id);

    token_options(k, &o);
    r = kmsd_jwks_verify(k->jwks, token, &o, &res, err);
    if (r == 0)
        claims = TAKE_PTR(res.claims);
    json_decref(res.claims); /* a refused token's claims are not audited here */
    if (r == -EAGAIN) {
        kms_secret_meta_clear(&m);
        nt_web_reply_header(reply, "Retry-After", "5");
        return reply_errf(reply, 503, "unavailable", "jwks", "%s", err);
    }
    if (r < 0 && r != -ENOMEM)
        out = json_pack("{sb ss ss ss}", "allowed", 0, "stage", "token", "check",
                        token_check_name(r, err), "error", err);
    else if (r == 0) {
        r = kms_policy_parse(m.policy, &policy, err);
        if (r >= 0)
            r = kms_policy_eval(policy, claims, volume_uuid, &f);
        kms_policy_free(policy);
        if (r == 0)
            out = json_pack("{sb ss}", "allowed", 1, "stage", "policy");
        else if (r == -EACCES)
            out = json_pack("{sb ss ss ss ss}", "allowed", 0, "stage", "policy", "rule", f.rule,
                            "expected", f.expected, "found", f.found);
    }
    kms_secret_meta_clear(&m);
    if (!out)
        return r < 0 ? r : -ENOMEM;
    {
        char detail[300];
        const json_t *ae = annotated_evidence(claims);
        snprintf(detail, sizeof detail, "policy test: %s%s%.200s",
                 json_is_true(json_object_get(out, "allowed")) ? "allowed" : "refused",
                 json_object_get(out, "rule") || json_object_get(out, "check") ? " by " : "",
                 json_string_value(json_object_get(out, "rule"))
                     ?: json_string_value(json_object_get(out, "check")) ?: "");
        KmsAuditEvent ev = {
            .action = "policy-test",
            .actor = a.actor,
            .secret_id = id,
            .token_jti = json_string_value(json_object_get(claims, "jti")),
            .measurement = json_string_value(json_object_get(ae, "measurement")),
            .chip_id = json_string_value(json_object_get(ae, "chip_id_sha256")),
            .result = "ok",
            .rule = json_string_value(json_object_get(out, "rule")),
            .detail = detail,
        };
        r = kms_store_audit(k->store, &ev);
        if (r < 0)
            return log_error_errno(r, "Recording a policy test failed: %m");
    }
    count_admin(k, "policy-test", "ok");
    reply->result = "ok";
    return nt_web_reply_json(reply, 200, TAKE_PTR(out));
}

/* ---- /v1/secrets/{id}[/...] ---- */

/* Splits "/v1/secrets/ID[/REST]". Returns true with id (in buf) and rest ("" or "/value", ...). */
static bool split_path(const char *path, char id[static 65], const char **ret_rest) {
    const char *p = path + strlen("/v1/secrets/");
    size_t n = strcspn(p, "/");
    if (n == 0 || n > 64)
        return false;
    memcpy(id, p, n);
    id[n] = 0;
    *ret_rest = p + n;
    return valid_id(id);
}

static int handle_secret_path(void *ud, const NtWebRequest *req, NtWebReply *reply) {
    Kmsd *k = ud;
    const char *rest = NULL;
    char id[65];

    if (!split_path(req->path, id, &rest))
        return reply_err(reply, 404, "not_found", "not found (secret ids are 1..64 of [a-z0-9._-])",
                         "path");
    if (streq(req->method, "POST") && streq(rest, "/release"))
        return release_do(k, id, req, reply);
    if (streq(req->method, "GET") && streq(rest, ""))
        return handle_show(k, id, req, reply);
    if (streq(req->method, "DELETE") && streq(rest, ""))
        return handle_delete(k, id, req, reply);
    if (streq(req->method, "PUT") && streq(rest, "/value"))
        return handle_replace(k, id, req, reply);
    if (streq(req->method, "PUT") && streq(rest, "/policy"))
        return handle_policy_set(k, id, req, reply);
    if (streq(req->method, "POST") && streq(rest, "/policy/test"))
        return handle_policy_test(k, id, req, reply);
    if (streq(rest, "") || streq(rest, "/release") || streq(rest, "/value") ||
        streq(rest, "/policy") || streq(rest, "/policy/test")) {
        reply->result = "method";
        return reply_err(reply, 405, "method", "method not allowed on this path", "method");
    }
    return reply_err(reply, 404, "not_found", "not found", "path");
}

/* ---- audit ---- */

static int handle_audit(void *ud, const NtWebRequest *req, NtWebReply *reply) {
    Kmsd *k = ud;
    AdminCtx a;
    const char *after_s = nt_web_request_query(req, "after"),
               *limit_s = nt_web_request_query(req, "limit");
    int64_t after = 0;
    size_t limit = AUDIT_PAGE_DEFAULT;
    json_t *rows = NULL;
    int r;

    if ((r = admin_check(k, req, reply, "audit", &a)) <= 0)
        return r;
    if (after_s) {
        char *end = NULL;
        long long v = strtoll(after_s, &end, 10);
        if (!*after_s || *end || v < 0)
            return reply_err(reply, 400, "malformed", "after: a sequence number >= 0", "after");
        after = v;
    }
    if (limit_s) {
        char *end = NULL;
        unsigned long v = strtoul(limit_s, &end, 10);
        if (!*limit_s || *end || v < 1 || v > AUDIT_PAGE_MAX)
            return reply_errf(reply, 400, "malformed", "limit", "limit: 1..%d", AUDIT_PAGE_MAX);
        limit = v;
    }
    r = kms_store_audit_rows(k->store, after, limit, &rows);
    if (r < 0)
        return log_error_errno(r, "Reading audit rows failed: %m");
    reply->result = "ok";
    json_t *out = json_pack("{so}", "rows", rows);
    size_t n = json_array_size(rows);
    if (out && n == limit)
        json_object_set(out, "next", json_object_get(json_array_get(rows, n - 1), "seq"));
    return nt_web_reply_json(reply, 200, out);
}

static int handle_audit_head(void *ud, const NtWebRequest *req, NtWebReply *reply) {
    Kmsd *k = ud;
    _cleanup_free_ char *payload = NULL, *jws = NULL, *kid = NULL;
    json_auto_t *p = NULL;
    char hash[65];
    int64_t seq = 0;
    time_t now = time(NULL);
    int r;

    r = kms_store_audit_head(k->store, &seq, hash);
    if (r < 0)
        return log_error_errno(r, "Reading the audit head failed: %m");
    p = json_pack("{sI ss sI}", "seq", (json_int_t)seq, "hash", hash, "time", (json_int_t)now);
    if (!p)
        return -ENOMEM;
    r = nt_jcs_dump(p, &payload, NULL);
    if (r < 0)
        return r;
    keys_maybe_refresh(k, now);
    r = nt_signing_keys_sign_typ(k->keys, now, KMSD_AUDIT_HEAD_TYP, payload, strlen(payload), &jws,
                                 &kid);
    if (r < 0)
        return log_error_errno(r, "Signing the audit head failed: %m");
    nt_metrics_set(k->metrics, "nitride_kmsd_audit_head_seq", NULL, (double)seq);
    reply->result = "ok";
    return nt_web_reply_json(reply, 200,
                             json_pack("{ss sI ss sI ss}", "jws", jws, "seq", (json_int_t)seq,
                                       "hash", hash, "time", (json_int_t)now, "kid", kid));
}

/* ---- public ---- */

static int handle_release_keys(void *ud, const NtWebRequest *req, NtWebReply *reply) {
    Kmsd *k = ud;
    time_t now = time(NULL);
    keys_maybe_refresh(k, now);
    json_t *jwks = nt_signing_keys_jwks(k->keys, now);
    if (!jwks)
        return -ENOMEM;
    reply->result = "ok";
    return nt_web_reply_json(reply, 200, jwks);
}

static int handle_healthz(void *ud, const NtWebRequest *req, NtWebReply *reply) {
    Kmsd *k = ud;
    int64_t seq = 0, age = k->jwks ? kmsd_jwks_age(k->jwks) : -1;
    char hash[65];
    int r = kms_store_audit_head(k->store, &seq, hash);
    bool ok = r >= 0 && age >= 0;
    reply->result = ok ? "ok" : "unavailable";
    return nt_web_reply_json(reply, ok ? 200 : 503,
                             json_pack("{ss ss sI sI}", "status", ok ? "ok" : "degraded",
                                       "database", r >= 0 ? "ok" : "error", "jwks_age",
                                       (json_int_t)age, "audit_seq", (json_int_t)seq));
}

static int handle_metrics(void *ud, const NtWebRequest *req, NtWebReply *reply) {
    Kmsd *k = ud;
    nt_metrics_set(k->metrics, "nitride_kmsd_jwks_age_seconds", NULL,
                   k->jwks ? (double)kmsd_jwks_age(k->jwks) : -1.0);
    return svc_reply_metrics(k->metrics, reply);
}

int kmsd_routes(Kmsd *k) {
    static const char *const methods[] = {"GET", "PUT", "POST", "DELETE"};
    int r;

    for (size_t i = 0; i < ELEMENTSOF(methods); i++) {
        r = nt_web_server_route(k->web, methods[i], "/v1/secrets/*", "secret", handle_secret_path,
                                k);
        if (r < 0)
            return r;
    }
    if ((r = nt_web_server_route(k->web, "POST", "/v1/secrets", "create", handle_create, k)) < 0 ||
        (r = nt_web_server_route(k->web, "GET", "/v1/secrets", "list", handle_list, k)) < 0 ||
        (r = nt_web_server_route(k->web, "GET", "/v1/audit", "audit", handle_audit, k)) < 0 ||
        (r = nt_web_server_route(k->web, "GET", "/v1/audit/head", "audit_head", handle_audit_head,
                                 k)) < 0 ||
        (r = nt_web_server_route(k->web, "GET", "/v1/release-keys", "release_keys",
                                 handle_release_keys, k)) < 0 ||
        (r = nt_web_server_route(k->web, "GET", "/healthz", "healthz", handle_healthz, k)) < 0 ||
        (r = nt_web_server_route(k->web, "GET", "/metrics", "metrics", handle_metrics, k)) < 0)
        return r;
    return 0;
}
