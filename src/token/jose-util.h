/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The pieces of JOSE compact-serialisation handling that EAR tokens (ear.c), signed releases
 * (release.c) and signing keys (keys.c) share: splitting and shape-checking a compact JWS before
 * libjose sees it, decoding a base64url part into a JSON object, finding a JWK by kid, and the
 * error-message helpers of the token library. Parsing itself stays jansson's and libjose's.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "core/macro.h"

/* Writes the message into err (256 bytes) and returns r. */
int nt_jose_fail(char *err, int r, const char *fmt, ...) _printf_(3, 4);
/* Replaces *ret_error (when ret_error is not NULL) with the malloc'd message. */
void nt_jose_set_error(char **ret_error, const char *fmt, ...) _printf_(2, 3);

/* s[0..n) holds only base64url characters (A-Z a-z 0-9 - _; no padding). */
bool nt_jose_b64url_chars(const char *s, size_t n);

/* The three parts of a compact JWS, pointing into the string. */
typedef struct NtJoseJwsParts {
    const char *header, *payload, *signature;
    size_t header_len, payload_len, signature_len;
} NtJoseJwsParts;

/* Splits s[0..len) into its three parts. Returns 0; -EBADMSG when it does not have exactly three
 * parts; -EILSEQ when a part is empty or holds a character outside base64url. */
int nt_jose_split_jws(const char *s, size_t len, NtJoseJwsParts *ret);

/* The flattened JSON form {"protected","payload","signature"} of the parts, for libjose; NULL
 * on OOM. */
json_t *nt_jose_jws_object(const NtJoseJwsParts *p);

/* Decodes a base64url part (at most max decoded bytes) into a malloc'd, NUL-terminated buffer.
 * Returns 0, -EBADMSG (not base64url, too long) or -ENOMEM. */
int nt_jose_b64_decode(const char *s, size_t n, size_t max, char **ret, size_t *ret_len);
/* A base64url part holding a JSON object (at most max decoded bytes, no duplicate members);
 * NULL if it is not one (or on OOM). */
json_t *nt_jose_decode_object(const char *s, size_t n, size_t max);

/* The member of jwks's "keys" array whose "kid" is kid, or NULL. */
const json_t *nt_jose_find_kid(const json_t *jwks, const char *kid);

/* The public key fits alg: ES256 wants an EC P-256 key, ES384 an EC P-384 key (anything else
 * fits nothing), and an "alg" member, if any, must be alg. */
bool nt_jose_key_fits_alg(const json_t *key, const char *alg);
/* Verifies the parts' signature with key (libjose). Returns 0, -EKEYREJECTED or -ENOMEM. */
int nt_jose_jws_verify(const NtJoseJwsParts *p, const json_t *key);

/* Wipes the private members' bytes (d, p, q, dp, dq, qi, k) when this is the last reference,
 * then drops the reference. NULL is fine. */
void nt_jose_jwk_wipe_free(json_t *jwk);
DEFINE_TRIVIAL_CLEANUP_FUNC(json_t *, nt_jose_jwk_wipe_free);
