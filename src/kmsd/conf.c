/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride-kmsd's configuration file: a table of known keys per object, so that every error names
 * the key (docs/kmsd.md). Nothing is opened here: files are checked when the service starts.
 */
#include "kmsd/conf.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "token/keys.h"

#define O(m) offsetof(KmsdConfig, m)

/* The shared members are read through SvcConfig's offsets. */
static_assert(offsetof(KmsdConfig, svc) == 0, "KmsdConfig starts with SVC_CONFIG_HEAD");

static const SvcField release_fields[] = {
    {"alg", SVC_F_STR, O(release_alg), 0, 0, 0, NULL, NULL},
    {"keys_dir", SVC_F_PATH, O(release_keys_dir), 0, 0, 0, NULL, NULL},
    {"key_files", SVC_F_PATHLIST, O(release_key_files), O(n_release_key_files), 0, 1024, NULL,
     NULL},
    {"lifetime", SVC_F_INT64, O(release_lifetime), 0, 30, 3600, NULL, NULL},
    {"rotate_lead", SVC_F_INT64, O(rotate_lead), 0, 15, 30 * 86400, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};
static const SvcField attestd_fields[] = {
    {"jwks_url", SVC_F_STR, O(jwks_url), 0, 0, 0, NULL, NULL},
    {"ca_file", SVC_F_PATH, O(jwks_ca_file), 0, 0, 0, NULL, NULL},
    {"jwks_file", SVC_F_PATH, O(jwks_file), 0, 0, 0, NULL, NULL},
    {"cache_ttl", SVC_F_INT64, O(jwks_ttl), 0, 10, 86400, NULL, NULL},
    {"refresh_min_interval", SVC_F_INT64, O(jwks_min_refresh), 0, 1, 3600, NULL, NULL},
    {"max_stale", SVC_F_INT64, O(jwks_max_stale), 0, 0, 7 * 86400, NULL, NULL},
    {"timeout", SVC_F_INT64, O(jwks_timeout), 0, 1, 120, NULL, NULL},
    {"issuer", SVC_F_STR, O(issuer), 0, 0, 0, NULL, NULL},
    {"audience", SVC_F_STR, O(audience), 0, 0, 0, NULL, NULL},
    {"skew", SVC_F_INT64, O(skew), 0, 0, 600, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};
static const SvcField admin_fields[] = {
    {"bearer_token_file", SVC_F_PATH, O(admin_token_file), 0, 0, 0, NULL, NULL},
    {"client_ca", SVC_F_PATH, O(admin_client_ca), 0, 0, 0, NULL, NULL},
    {"allowed_subjects", SVC_F_STRLIST, O(admin_subjects), O(n_admin_subjects), 0, 1024, NULL,
     NULL},
    {"denied_audit_per_minute", SVC_F_UINT, O(denied_audit_per_minute), 0, 0, 100000, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};
static const SvcField top_fields[] = {
    SVC_CONFIG_HTTP_FIELDS(16384),
    {"database", SVC_F_PATH, O(database), 0, 0, 0, NULL, NULL},
    {"kek_file", SVC_F_PATH, O(kek_file), 0, 0, 0, NULL, NULL},
    {"release", SVC_F_OBJECT, 0, 0, 0, 0, release_fields, NULL},
    {"attestd", SVC_F_OBJECT, 0, 0, 0, 0, attestd_fields, NULL},
    {"admin", SVC_F_OBJECT, 0, 0, 0, 0, admin_fields, NULL},
    {"log_level", SVC_F_STR, O(log_level), 0, 0, 0, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};

int kmsd_config_parse(const char *text, size_t len, const char *base_dir, KmsdConfig **ret,
                      char **ret_error) {
    _cleanup_(kmsd_config_freep) KmsdConfig *c = NULL;
    int r;

    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    svc_conf_init(&c->svc);
    c->release_lifetime = 300;
    c->rotate_lead = 600;
    c->jwks_ttl = 300;
    c->jwks_min_refresh = 10;
    c->jwks_max_stale = 3600;
    c->jwks_timeout = 10;
    c->skew = 60;
    c->denied_audit_per_minute = 60;

    r = svc_conf_parse_text(text, len, top_fields, base_dir, c, ret_error);
    if (r < 0)
        return r;

    /* No "alg": a keys_dir holding keys keeps their algorithm (an upgrade from the ES384
     * default); a new one gets ES256. A configured alg is checked against the keys when they
     * are loaded. */
    if (!c->release_alg && c->release_keys_dir && c->n_release_key_files == 0) {
        NtJwsAlg alg;
        if (nt_signing_keys_dir_alg(c->release_keys_dir, &alg) > 0 &&
            !(c->release_alg = strdup(nt_jws_alg_to_string(alg))))
            return -ENOMEM;
    }
    if (svc_conf_default(&c->release_alg, "ES256") < 0 ||
        svc_conf_default(&c->log_level, "info") < 0)
        return -ENOMEM;
    if (!streq(c->release_alg, "ES384") && !streq(c->release_alg, "ES256"))
        return svc_conf_error(ret_error, "release.alg: '%.32s' is not supported (ES256, ES384)",
                              c->release_alg);
    if (!streq(c->log_level, "info") && !streq(c->log_level, "debug"))
        return svc_conf_error(ret_error, "log_level: '%.32s' (info, debug)", c->log_level);
    r = svc_conf_check(&c->svc, "127.0.0.1:8444", ret_error);
    if (r < 0)
        return r;
    if (!c->database)
        return svc_conf_error(ret_error,
                              "database: missing (the SQLite file of secrets and audit)");
    if (!c->kek_file)
        return svc_conf_error(ret_error, "kek_file: missing (a 0600 file of 32 random bytes, the "
                                         "key-encryption key; never stored in the database)");
    if (!c->release_keys_dir && c->n_release_key_files == 0)
        return svc_conf_error(ret_error,
                              "release: give 'keys_dir' (release signing keys generated and "
                              "rotated there) or 'key_files'");
    if (c->release_keys_dir && c->n_release_key_files > 0)
        return svc_conf_error(ret_error, "release: 'keys_dir' and 'key_files' exclude each other");
    if (!c->jwks_url == !c->jwks_file)
        return svc_conf_error(ret_error,
                              "attestd: give exactly one of 'jwks_url' (attestd's "
                              "/.well-known/jwks.json, fetched and cached) or 'jwks_file'");
    if (c->jwks_url && !svc_conf_url_allowed(c->jwks_url))
        return svc_conf_error(ret_error,
                              "attestd.jwks_url: must be an https:// URL (http:// only to a "
                              "loopback address)");
    if (c->jwks_ca_file && !c->jwks_url)
        return svc_conf_error(ret_error, "attestd.ca_file: only with attestd.jwks_url");
    if (!c->issuer)
        return svc_conf_error(ret_error, "attestd.issuer: missing (the 'iss' of attestd's tokens, "
                                         "token.issuer in its configuration)");
    if (!c->admin_token_file && !c->admin_client_ca)
        return svc_conf_error(ret_error, "admin: give 'bearer_token_file' (a 0600 file) and/or "
                                         "'client_ca' (TLS client certificates)");
    if (c->admin_client_ca && !c->tls_cert)
        return svc_conf_error(ret_error, "admin.client_ca: client certificates need tls");
    if (c->n_admin_subjects > 0 && !c->admin_client_ca)
        return svc_conf_error(ret_error, "admin.allowed_subjects: only with admin.client_ca");
    *ret = TAKE_PTR(c);
    return 0;
}

SVC_CONF_DEFINE_LOAD(kmsd_config, KmsdConfig)

KmsdConfig *kmsd_config_free(KmsdConfig *c) {
    if (!c)
        return NULL;
    svc_conf_done(&c->svc);
    free(c->database);
    free(c->kek_file);
    free(c->release_alg);
    free(c->release_keys_dir);
    svc_strv_free(c->release_key_files, c->n_release_key_files);
    free(c->jwks_url);
    free(c->jwks_ca_file);
    free(c->jwks_file);
    free(c->issuer);
    free(c->audience);
    free(c->admin_token_file);
    free(c->admin_client_ca);
    svc_strv_free(c->admin_subjects, c->n_admin_subjects);
    free(c->log_level);
    free(c);
    return NULL;
}
