/* SPDX-License-Identifier: Apache-2.0 */
/*
 * attestd's token signing keys, as kmsd sees them: a JWKS fetched from attestd's URL
 * (/.well-known/jwks.json over verified TLS) or read from a file, cached for ttl seconds. A token
 * whose kid is not in the cached set makes kmsd fetch again (attestd may have rotated), at most
 * once per min_refresh seconds whatever the number of such tokens. When attestd cannot be
 * reached the last set stays in use for max_stale seconds past its ttl; after that (or before
 * any fetch succeeded) verification fails with -EAGAIN (503 to the client).
 */
#pragma once

#include <stdint.h>

#include <jansson.h>

#include "core/macro.h"
#include "token/ear.h"

typedef struct KmsdJwksConfig {
    const char *url;     /* https://.../.well-known/jwks.json, or NULL */
    const char *ca_file; /* for url; NULL: system store */
    const char *file;    /* instead of url */
    int64_t ttl_s, min_refresh_s, max_stale_s, timeout_s;
    /* optional: called with "fetch_ok", "fetch_error", "unknown_kid_refresh",
     * "refresh_rate_limited" (thread-safe callers only) */
    void (*count)(void *userdata, const char *event);
    void *userdata;
} KmsdJwksConfig;

typedef struct KmsdJwks KmsdJwks;

/* Copies cfg. A file is read now (an error is returned); a URL is fetched now, and a failure is
 * only logged (attestd may start later). Returns 0, -ENOMEM, or the file's error (*ret_error). */
int kmsd_jwks_new(const KmsdJwksConfig *cfg, KmsdJwks **ret, char **ret_error);
KmsdJwks *kmsd_jwks_free(KmsdJwks *j);
DEFINE_TRIVIAL_CLEANUP_FUNC(KmsdJwks *, kmsd_jwks_free);

/* nt_ear_verify_ex() against the cached set (refreshed as described above; a kid the set does
 * not hold fetches it again, rate-limited). Returns as nt_ear_verify(), or -EAGAIN when no
 * usable set is available (err says why). *ret is always written: ret->claims (owned) once the
 * signature verified, also when a later check failed. Thread-safe. */
int kmsd_jwks_verify(KmsdJwks *j, const char *token, const NtEarVerifyOptions *o,
                     NtEarVerifyResult *ret, char err[static 256]);

/* Seconds since the set in use was fetched, or -1 if there is none (for /healthz). */
int64_t kmsd_jwks_age(KmsdJwks *j);
