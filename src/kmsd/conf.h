/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride-kmsd's configuration: one JSON file (docs/kmsd.md), parsed strictly like attestd's (an
 * unknown key, a wrong type or an out-of-range number is an error naming the key), plus
 * command-line overrides applied by the caller. Relative paths are resolved against the file's
 * directory.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/macro.h"
#include "web/svc-conf.h"

typedef struct KmsdConfig {
    SVC_CONFIG_HEAD; /* path, listen, tls, limits (web/svc-conf.h) */

    /* storage */
    char *database;
    char *kek_file;

    /* release signing keys (NtSigningKeys) */
    char *release_alg; /* "ES384" or "ES256" */
    char *release_keys_dir;
    char **release_key_files;
    size_t n_release_key_files;
    int64_t release_lifetime; /* exp - iat of a release */
    int64_t rotate_lead;

    /* attestd tokens */
    char *jwks_url, *jwks_ca_file, *jwks_file;
    int64_t jwks_ttl;         /* a fetched JWKS is used this long */
    int64_t jwks_min_refresh; /* unknown kid: refetch at most this often */
    int64_t jwks_max_stale;   /* attestd unreachable: keep the last JWKS this long past its ttl */
    int64_t jwks_timeout;
    char *issuer, *audience;
    int64_t skew;

    /* admin authentication */
    char *admin_token_file;
    char *admin_client_ca;
    char **admin_subjects; /* allowed certificate subjects (RFC 2253); none: any from the CA */
    size_t n_admin_subjects;
    unsigned denied_audit_per_minute; /* refused admin requests recorded in the audit chain */

    char *log_level; /* "info", "debug" */
} KmsdConfig;

/* Parses the file. Returns 0, -EBADMSG with "FILE: key: problem" in *ret_error, or -errno. */
int kmsd_config_load(const char *path, KmsdConfig **ret, char **ret_error);
/* Same, from text (base_dir resolves relative paths). */
int kmsd_config_parse(const char *text, size_t len, const char *base_dir, KmsdConfig **ret,
                      char **ret_error);
KmsdConfig *kmsd_config_free(KmsdConfig *c);
DEFINE_TRIVIAL_CLEANUP_FUNC(KmsdConfig *, kmsd_config_free);
