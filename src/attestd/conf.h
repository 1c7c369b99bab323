/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride-attestd's configuration: one JSON file (docs/attestd.md), parsed strictly (an unknown
 * key, a wrong type or an out-of-range number is an error naming the key), plus command-line
 * overrides applied by the caller. Relative paths are resolved against the file's directory.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/macro.h"
#include "verify/policy.h"
#include "web/svc-conf.h"

typedef struct AttestdPolicyRef {
    char *id;
    char *file;
    char *recommended_tcb_json; /* {"min_tcb": {...}} text, NULL if not configured */
} AttestdPolicyRef;

typedef struct AttestdConfig {
    SVC_CONFIG_HEAD; /* path, listen, tls, limits (web/svc-conf.h) */

    char *challenge_secret;
    int64_t challenge_lifetime;
    size_t replay_capacity;

    char *issuer, *audience;
    int64_t token_lifetime;
    char *token_alg; /* "ES384" or "ES256" */
    char *keys_dir;
    char **key_files;
    size_t n_key_files;
    int64_t rotate_lead;

    char **trust_anchors;
    size_t n_trust_anchors;

    AttestdPolicyRef *policies;
    size_t n_policies;
    char *default_policy;
    char **client_policy_ids; /* ids a request may name; none: requests may not choose */
    size_t n_client_policy_ids;

    char *kds_url, *kds_ca_file, *kds_cache_dir, *kds_offline_dir;
    int64_t kds_timeout_s, kds_backoff_max_s;
    int64_t kds_negative_ttl_s; /* 0: 404s are not remembered */
    unsigned kds_max_concurrent_fetches;
    double kds_max_fetches_per_s;

    char *revocation_mode;       /* "off", "best-effort", "require" */
    int64_t crl_max_age_s;       /* refetch a cached CRL older than this */
    int64_t crl_max_staleness_s; /* accept a CRL this long past its nextUpdate */

    char *evidence_log;
    int64_t evidence_log_max;
} AttestdConfig;

/* Parses the file. Returns 0, -EBADMSG with "FILE: key: problem" in *ret_error, or -errno. */
int attestd_config_load(const char *path, AttestdConfig **ret, char **ret_error);
/* Same, from text (base_dir resolves relative paths). */
int attestd_config_parse(const char *text, size_t len, const char *base_dir, AttestdConfig **ret,
                         char **ret_error);
AttestdConfig *attestd_config_free(AttestdConfig *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(AttestdConfig *, attestd_config_free);
/* The policy reference with this id, or NULL. */
const AttestdPolicyRef *attestd_config_policy(const AttestdConfig *c, const char *id);
