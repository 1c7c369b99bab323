/* SPDX-License-Identifier: Apache-2.0 */
#include "attestd/conf.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "token/keys.h"

#define O(m) offsetof(AttestdConfig, m)

/* The shared members are read through SvcConfig's offsets. */
static_assert(offsetof(AttestdConfig, svc) == 0, "AttestdConfig starts with SVC_CONFIG_HEAD");

static SvcFieldParseFn parse_policies;

static const SvcField challenge_fields[] = {
    {"secret", SVC_F_PATH, O(challenge_secret), 0, 0, 0, NULL, NULL},
    {"lifetime", SVC_F_INT64, O(challenge_lifetime), 0, 1, 3600, NULL, NULL},
    {"replay_capacity", SVC_F_SIZE, O(replay_capacity), 0, 16, 1 << 26, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};
static const SvcField token_fields[] = {
    {"issuer", SVC_F_STR, O(issuer), 0, 0, 0, NULL, NULL},
    {"audience", SVC_F_STR, O(audience), 0, 0, 0, NULL, NULL},
    {"lifetime", SVC_F_INT64, O(token_lifetime), 0, 10, 86400, NULL, NULL},
    {"alg", SVC_F_STR, O(token_alg), 0, 0, 0, NULL, NULL},
    {"keys_dir", SVC_F_PATH, O(keys_dir), 0, 0, 0, NULL, NULL},
    {"key_files", SVC_F_PATHLIST, O(key_files), O(n_key_files), 0, 0, NULL, NULL},
    {"rotate_lead", SVC_F_INT64, O(rotate_lead), 0, 15, 30 * 86400, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};
static const SvcField kds_fields[] = {
    {"url", SVC_F_STR, O(kds_url), 0, 0, 0, NULL, NULL},
    {"ca_file", SVC_F_PATH, O(kds_ca_file), 0, 0, 0, NULL, NULL},
    {"cache_dir", SVC_F_PATH, O(kds_cache_dir), 0, 0, 0, NULL, NULL},
    {"offline_dir", SVC_F_PATH, O(kds_offline_dir), 0, 0, 0, NULL, NULL},
    {"timeout", SVC_F_INT64, O(kds_timeout_s), 0, 1, 300, NULL, NULL},
    {"backoff_max", SVC_F_INT64, O(kds_backoff_max_s), 0, 1, 86400, NULL, NULL},
    {"negative_ttl", SVC_F_INT64, O(kds_negative_ttl_s), 0, 0, 86400, NULL, NULL},
    {"max_concurrent_fetches", SVC_F_UINT, O(kds_max_concurrent_fetches), 0, 1, 64, NULL, NULL},
    {"max_fetches_per_s", SVC_F_DOUBLE, O(kds_max_fetches_per_s), 0, 0.01, 1000, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};
static const SvcField revocation_fields[] = {
    {"mode", SVC_F_STR, O(revocation_mode), 0, 0, 0, NULL, NULL},
    {"max_age", SVC_F_INT64, O(crl_max_age_s), 0, 60, 30 * 86400, NULL, NULL},
    {"max_staleness", SVC_F_INT64, O(crl_max_staleness_s), 0, 0, 365 * 86400, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};
static const SvcField evlog_fields[] = {
    {"path", SVC_F_PATH, O(evidence_log), 0, 0, 0, NULL, NULL},
    {"max_records", SVC_F_INT64, O(evidence_log_max), 0, 1, 1e9, NULL, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};
static const SvcField top_fields[] = {
    SVC_CONFIG_HTTP_FIELDS(4096),
    {"challenge", SVC_F_OBJECT, 0, 0, 0, 0, challenge_fields, NULL},
    {"token", SVC_F_OBJECT, 0, 0, 0, 0, token_fields, NULL},
    {"trust_anchors", SVC_F_PATHLIST, O(trust_anchors), O(n_trust_anchors), 0, 0, NULL, NULL},
    {"policies", SVC_F_OBJECT, 0, 0, 0, 0, NULL, parse_policies},
    {"default_policy", SVC_F_STR, O(default_policy), 0, 0, 0, NULL, NULL},
    {"client_policy_ids", SVC_F_STRLIST, O(client_policy_ids), O(n_client_policy_ids), 0, 0, NULL,
     NULL},
    {"kds", SVC_F_OBJECT, 0, 0, 0, 0, kds_fields, NULL},
    {"revocation", SVC_F_OBJECT, 0, 0, 0, 0, revocation_fields, NULL},
    {"evidence_log", SVC_F_OBJECT, 0, 0, 0, 0, evlog_fields, NULL},
    {NULL, 0, 0, 0, 0, 0, NULL, NULL},
};

static int parse_policies(json_t *obj, const char *key, const char *base_dir, void *conf,
                          char **ret_error) {
    AttestdConfig *c = conf;
    const char *id;
    (void)key; /* always "policies" */
    json_t *v;

    if (!json_is_object(obj) || json_object_size(obj) == 0)
        return svc_conf_error(ret_error, "policies: expected an object mapping policy ids to "
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
            return svc_conf_error(ret_error, "policies: id '%.64s' must be 1-64 of [A-Za-z0-9._-]",
                                  id);
        p->id = strdup(id);
        if (!p->id)
            return -ENOMEM;
        if (!json_is_object(v))
            return svc_conf_error(ret_error, "policies.%s: expected an object", id);
        json_object_foreach(v, k, kv) {
            if (streq(k, "file")) {
                if (!json_is_string(kv) || !json_string_value(kv)[0])
                    return svc_conf_error(ret_error, "policies.%s.file: expected a path", id);
                p->file = svc_conf_resolve(base_dir, json_string_value(kv));
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
                    r = svc_conf_error(ret_error, "policies.%s.recommended_tcb: %s", id,
                                       perr ? perr : "invalid");
                    free(perr);
                    return r;
                }
            } else
                return svc_conf_error(
                    ret_error, "policies.%s: unknown key '%.64s' (file, recommended_tcb)", id, k);
        }
        if (!p->file)
            return svc_conf_error(ret_error, "policies.%s: missing key 'file'", id);
    }
    return 0;
}

int attestd_config_parse(const char *text, size_t len, const char *base_dir, AttestdConfig **ret,
                         char **ret_error) {
    _cleanup_(attestd_config_freep) AttestdConfig *c = NULL;
    int r;

    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    svc_conf_init(&c->svc);
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

    r = svc_conf_parse_text(text, len, top_fields, base_dir, c, ret_error);
    if (r < 0)
        return r;

    /* No "alg": a keys_dir holding keys keeps their algorithm (an upgrade from the ES384
     * default); a new one gets ES256. A configured alg is checked against the keys when they
     * are loaded. */
    if (!c->token_alg && c->keys_dir && c->n_key_files == 0) {
        NtJwsAlg alg;
        if (nt_signing_keys_dir_alg(c->keys_dir, &alg) > 0 &&
            !(c->token_alg = strdup(nt_jws_alg_to_string(alg))))
            return -ENOMEM;
    }
    if (svc_conf_default(&c->token_alg, "ES256") < 0 ||
        svc_conf_default(&c->issuer, "nitride-attestd") < 0 ||
        svc_conf_default(&c->revocation_mode,
                         c->kds_url || c->kds_cache_dir || c->kds_offline_dir ? "require" : "off") <
            0)
        return -ENOMEM;
    if (!streq(c->token_alg, "ES384") && !streq(c->token_alg, "ES256"))
        return svc_conf_error(ret_error, "token.alg: '%.32s' is not supported (ES256, ES384)",
                              c->token_alg);
    if (!streq(c->revocation_mode, "off") && !streq(c->revocation_mode, "best-effort") &&
        !streq(c->revocation_mode, "require"))
        return svc_conf_error(ret_error, "revocation.mode: '%.32s' (off, best-effort, require)",
                              c->revocation_mode);
    r = svc_conf_check(&c->svc, "127.0.0.1:8443", ret_error);
    if (r < 0)
        return r;
    if (!c->challenge_secret)
        return svc_conf_error(ret_error,
                              "challenge.secret: missing (a 0600 file of at least 32 random "
                              "bytes)");
    if (!c->keys_dir && c->n_key_files == 0)
        return svc_conf_error(ret_error,
                              "token: give 'keys_dir' (keys generated and rotated there) or "
                              "'key_files'");
    if (c->n_policies == 0)
        return svc_conf_error(ret_error, "policies: at least one policy is needed");
    if (!c->default_policy) {
        if (c->n_policies != 1)
            return svc_conf_error(ret_error,
                                  "default_policy: missing (several policies are configured)");
        c->default_policy = strdup(c->policies[0].id);
        if (!c->default_policy)
            return -ENOMEM;
    }
    if (!attestd_config_policy(c, c->default_policy))
        return svc_conf_error(ret_error, "default_policy: '%.64s' is not in policies",
                              c->default_policy);
    for (size_t i = 0; i < c->n_client_policy_ids; i++)
        if (!attestd_config_policy(c, c->client_policy_ids[i]))
            return svc_conf_error(ret_error, "client_policy_ids[%zu]: '%.64s' is not in policies",
                                  i, c->client_policy_ids[i]);
    if (c->kds_url && !svc_conf_url_allowed(c->kds_url))
        return svc_conf_error(ret_error,
                              "kds.url: must be an https:// URL (http:// only to a loopback "
                              "address, e.g. a local mirror or a test server)");
    *ret = TAKE_PTR(c);
    return 0;
}

SVC_CONF_DEFINE_LOAD(attestd_config, AttestdConfig)

AttestdConfig *attestd_config_free(AttestdConfig *c) {
    if (!c)
        return NULL;
    svc_conf_done(&c->svc);
    free(c->challenge_secret);
    free(c->issuer);
    free(c->audience);
    free(c->token_alg);
    free(c->keys_dir);
    svc_strv_free(c->key_files, c->n_key_files);
    svc_strv_free(c->trust_anchors, c->n_trust_anchors);
    for (size_t i = 0; i < c->n_policies; i++) {
        free(c->policies[i].id);
        free(c->policies[i].file);
        free(c->policies[i].recommended_tcb_json);
    }
    free(c->policies);
    free(c->default_policy);
    svc_strv_free(c->client_policy_ids, c->n_client_policy_ids);
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
