/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Token signing keys (ES256/ES384) with rotation, for the attestation service.
 *
 * Two modes:
 *  - state directory: keys live in DIR as key-<kid>.json (mode 0600,
 *    {"jwk": private JWK, "created", "activate", "retire"} with times in seconds since the epoch,
 *    "retire" absent or 0 while open-ended), kid = RFC 7638 thumbprint (SHA-256, base64url). The
 *    first key is generated at first start (activate = now). Several processes may share one
 *    directory: nt_signing_keys_refresh() picks up what another process rotated.
 *  - files: PEM or JWK private key files given by the operator; the first signs, the others are
 *    only published (the operator's own rotation).
 *
 * Publication and signing: a key is published from its "created" time until retire +
 * max_token_lifetime_s (stored in the file as "expire"), and signs from "activate" until "retire".
 * The signing key at time t is the published key with the latest activate <= t that is not retired
 * at t. So a rotated-in key is in the JWKS before any token carries its kid, and an old key stays
 * in the JWKS until the last token it signed has expired.
 *
 * Key files are written atomically (tmp + fsync + rename, mode 0600) and refused when group- or
 * other-accessible (-EPERM). libjose signs with a private JWK (json_t), so each key's private JWK
 * is held in memory; its private members are wiped (explicit_bzero of the string bytes) before the
 * json_t is freed, and file buffers read from disk are wiped likewise.
 * All functions are thread-safe with respect to one NtSigningKeys (an internal lock).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "core/macro.h"

typedef enum NtJwsAlg {
    NT_JWS_ES256,
    NT_JWS_ES384,
    _NT_JWS_ALG_MAX,
    _NT_JWS_ALG_INVALID = -EINVAL,
} NtJwsAlg;

const char *nt_jws_alg_to_string(NtJwsAlg a); /* "ES256", "ES384", NULL if out of range */
NtJwsAlg nt_jws_alg_from_string(const char *s);

typedef struct NtSigningKeys NtSigningKeys;

/* State directory mode (see above). dir must exist and not be group/other writable. Returns 0,
 * -EPERM (a key file or dir with unsafe mode), -EBADMSG (a corrupt key file), -EOPNOTSUPP (a key
 * of another algorithm), -ENOMEM, -EIO or a file error. ret_error (may be NULL) gets a malloc'd
 * message naming the file on failure. */
int nt_signing_keys_open_dir(const char *dir, NtJwsAlg alg, NtSigningKeys **ret, char **ret_error);
/* The algorithm of the keys already in a state dir (their curve: P-256 ES256, P-384 ES384), for
 * a service whose configuration names none. 1 with *ret, 0 when the dir is missing or holds no
 * readable key of either curve, -EOPNOTSUPP when it holds keys of both, or a file error. */
int nt_signing_keys_dir_alg(const char *dir, NtJwsAlg *ret);
/* File mode: PEM (PKCS#8 or SEC1) or JWK private key files (first = signing key, others only
 * published). Every key must be of alg's curve (-EOPNOTSUPP). Errors as above. */
int nt_signing_keys_load_files(char *const *paths, size_t n, NtJwsAlg alg, NtSigningKeys **ret,
                               char **ret_error);
/* Rotation in a state dir: creates a new key that is published at once but signs only from now +
 * publish_lead_s; the previous signing key(s) retire then and stay published until that moment +
 * max_token_lifetime_s; then their file is removed by nt_signing_keys_refresh(). When no key
 * signs at now (empty directory, all retired), the new key signs at once. Returns 0 and the
 * new kid (malloc'd, if ret_kid is not NULL), or errors as nt_signing_keys_open_dir(). */
int nt_signing_keys_rotate(const char *dir, NtJwsAlg alg, int64_t publish_lead_s,
                           int64_t max_token_lifetime_s, char **ret_kid);
/* Same, with an explicit clock (tests). */
int nt_signing_keys_rotate_at(const char *dir, NtJwsAlg alg, int64_t publish_lead_s,
                              int64_t max_token_lifetime_s, time_t now, char **ret_kid);
/* Re-reads the dir (another process may have rotated); drops keys no longer published at now and
 * removes their files. No-op in file mode. Thread-safe with signing. now = 0: time(NULL).
 * Returns 0 or an error as nt_signing_keys_open_dir() (the old set stays in force on error). */
int nt_signing_keys_refresh(NtSigningKeys *k, time_t now);
/* {"keys":[public JWKs with kid, alg, use "sig"]} of every published key at now (0: time(NULL)).
 * NULL on OOM. */
json_t *nt_signing_keys_jwks(NtSigningKeys *k, time_t now);
/* The kid of the key that signs at now (malloc'd), or NULL (no key signs at now / OOM). */
char *nt_signing_keys_current_kid(NtSigningKeys *k, time_t now);
NtJwsAlg nt_signing_keys_alg(const NtSigningKeys *k);
/* JWS compact serialisation of payload (bytes) with header {"alg","kid","typ":"JWT"} using the
 * key that signs at now. Returns 0 and a malloc'd string (*ret_kid: malloc'd kid, optional),
 * -ENOKEY (no signing key at now), -ENOMEM, -EIO. */
int nt_signing_keys_sign(NtSigningKeys *k, time_t now, const char *payload, size_t payload_len,
                         char **ret_jws, char **ret_kid);
/* The same with header {"alg","kid","typ": typ} (e.g. "nitride-release+jws"); typ must be a
 * non-empty string (-EINVAL). */
int nt_signing_keys_sign_typ(NtSigningKeys *k, time_t now, const char *typ, const char *payload,
                             size_t payload_len, char **ret_jws, char **ret_kid);
NtSigningKeys *nt_signing_keys_free(NtSigningKeys *k);
DEFINE_TRIVIAL_CLEANUP_FUNC(NtSigningKeys *, nt_signing_keys_free);
