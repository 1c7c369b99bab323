/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Signed key releases: how nitride-kmsd hands a secret to one VM's vault (docs/token.md
 * "Signed releases").
 *
 * A release is a JWS compact serialisation (ES384, or ES256) whose payload is the bytes of a
 * compact JWE:
 *   JWS protected header {"alg", "kid": the kmsd release key's RFC 7638 thumbprint,
 *                         "typ": "nitride-release+jws"}
 *   JWE (ECDH-ES+A256KW, A256GCM) to the recipient JWK (the EAR token's cnf.jwk: EC P-384, or
 *   P-256), protected header exactly {"alg", "enc", "kid": the recipient's RFC 7638 thumbprint,
 *   "epk", "cty": "nitride-key", "nitride": H}, with H:
 *     {"v": 1, "name": "kms/<name>", "type": aes256 | hmac-sha256 | hmac-sha384 | ec-p256 |
 *      ec-p384 | ed25519 | rsa2048 | rsa3072 | rsa4096 | raw, "version": 1..2^32-1,
 *      "policy": "local" | "attested", "max_age": 1..604800 (attested only, required there),
 *      "label"?: <= 128 printable ASCII, "acl"?: {"use_uid", "use_gid", "use_cgroup",
 *      "admin_uid", "admin_gid", "admin_cgroup"} (each optional: uids/gids 0..4294967294,
 *      cgroups absolute paths < 512 bytes without "." or ".." components, <= 64 per list),
 *      "secret_id": [a-z0-9][a-z0-9._-]{0,63}, "jti": base64url of 16 bytes, "iat", "exp",
 *      "token_jti": the EAR token's jti (1..128 base64url characters)}
 *   plaintext: the key bytes (32 for aes256 and hmac-sha256, 48 for hmac-sha384, 1..4096 for
 *   raw) or PKCS#8 PrivateKeyInfo DER (EC, RSA, Ed25519).
 * The JWE's protected header (and so H) is authenticated by A256GCM and the whole JWE by the
 * JWS: a release names its key, its vault attributes and its one recipient, and nobody but
 * kmsd can change any of them.
 *
 * The vault (vhsmd) verifies the JWS against its pinned kmsd keys with nt_release_verify(), then
 * decrypts the inner JWE with the transfer key the JWE's kid names (which must equal
 * H's recipient_kid) and stores the key under H's name, type, version, policy, label and ACL.
 */
#pragma once

#include <errno.h>
#include <stdint.h>
#include <time.h>

#include <jansson.h>

#include "token/keys.h"

#define NT_RELEASE_TYP "nitride-release+jws"
#define NT_RELEASE_CTY "nitride-key"
#define NT_RELEASE_MAX_SIZE (64 * 1024)        /* bytes of a release (the JWS) */
#define NT_RELEASE_DEFAULT_LIFETIME_S 300      /* exp - iat when seal is given exp = 0 */
#define NT_RELEASE_MAX_AGE_MAX (7 * 24 * 3600) /* max_age of an attested key, seconds */
#define NT_RELEASE_RAW_MAX 4096                /* bytes of a raw key */
#define NT_RELEASE_DEFAULT_SKEW_S 60

typedef struct NtReleaseInfo { /* the "nitride" header member, parsed and validated */
    char *name;                /* "kms/<name>" */
    char *type;                /* vhsm key type string */
    uint32_t version;          /* >= 1 */
    char *policy;              /* "local" or "attested" */
    uint32_t max_age;          /* attested: 1..NT_RELEASE_MAX_AGE_MAX; local: 0 */
    char *label;               /* or NULL */
    json_t *acl;               /* {"use_uid":[..], ...} or NULL */
    char *secret_id;
    char *jti;
    char *token_jti;
    int64_t iat, exp;
    char *recipient_kid; /* the JWE header's kid (verify); ignored by seal */
} NtReleaseInfo;

/* Frees the members and zeroes *i; accepts a zeroed struct. */
void nt_release_info_clear(NtReleaseInfo *i);

/* kmsd: encrypts value to recipient_jwk (a public EC P-384 or P-256 JWK; a private member
 * -> -EINVAL) with header h (jti, iat and exp are filled in when NULL/zero: a random jti,
 * now, iat + NT_RELEASE_DEFAULT_LIFETIME_S; recipient_kid is ignored: the JWE's kid is the
 * recipient's RFC 7638 thumbprint), and signs the JWE with signer's key of now (typ
 * nitride-release+jws). h and value are checked as nt_release_verify() checks them (value's
 * length against the type), so a sealed release always verifies. value is handed to libjose
 * (its buffers are jansson strings: the process should install a zeroising allocator).
 * Returns 0 and a malloc'd release, -EINVAL (bad header, recipient or value), -ENOKEY (no key
 * signs now), -ENOMEM, -EIO. */
int nt_release_seal(NtSigningKeys *signer, const json_t *recipient_jwk, const NtReleaseInfo *h,
                    const uint8_t *value, size_t value_len, time_t now, char **ret_release);

/* vhsmd: checks the JWS against pinned_jwks ({"keys":[...]}: the header's kid selects the key,
 * alg must match the key, ES256/ES384 only, typ must be nitride-release+jws), the JWE header
 * shape (exactly the members above, no zip/crit), H strictly (unknown members, bad types
 * -> -EBADMSG), exp (now < exp + skew) and iat (not beyond skew in the future; skew_s < 0:
 * none, 0: NT_RELEASE_DEFAULT_SKEW_S). Does NOT decrypt. now 0 = time(NULL).
 * Returns 0, H (parsed, with recipient_kid) and the inner compact JWE (malloc'd), or
 * -EKEYREJECTED (signature, unknown kid, alg), -EKEYEXPIRED, -EBADMSG, -EMSGSIZE (larger than
 * NT_RELEASE_MAX_SIZE), -ENOMEM, -EINVAL (no release or no JWKS); err names the failed check
 * (always NUL-terminated). Nothing is written to ret_info/ret_jwe on failure. */
int nt_release_verify(const char *release, const json_t *pinned_jwks, time_t now, int64_t skew_s,
                      NtReleaseInfo *ret_info, char **ret_jwe, char err[static 256]);

/* The key name a release's signed header gives (H's "name": what vhsmd imports it as), read
 * WITHOUT verifying anything (for the agent, which holds no pinned keys: vhsmd verifies).
 * Returns 0 and a malloc'd name, -EBADMSG (not a release, or no valid kms/ name), -EMSGSIZE,
 * -EINVAL, -ENOMEM. */
int nt_release_peek_name(const char *release, char **ret_name);

/* Size in bytes a value of vhsm key type `type` must have: *ret_min = *ret_max = 32 or 48 for
 * the symmetric types, 1..NT_RELEASE_RAW_MAX for raw, 1..16384 (PKCS#8 DER) for the asymmetric
 * ones. Returns 0 or -EINVAL (unknown type). */
int nt_release_value_size(const char *type, size_t *ret_min, size_t *ret_max);

/* Loads public keys to pin (vhsmd's --kms-keys, --attestd-jwks) from a file holding a JWKS
 * ({"keys":[...]}) or one or more concatenated PEM public keys (SubjectPublicKeyInfo).
 * Every key must be a public EC P-256 or P-384 key (private members, other types -> -EBADMSG);
 * each gets "kid" = its RFC 7638 thumbprint when it has none (a JWKS key with a kid keeps it)
 * and "alg" = ES256/ES384 by its curve when it has none (a contradicting alg -> -EBADMSG).
 * Returns 0 and {"keys":[...]} (at least one key), -EBADMSG with *ret_error naming the problem
 * (malloc'd, ret_error may be NULL), -ENOMEM, or the file's error. Files over 1 MiB: -EFBIG. */
int nt_jwks_load_public_file(const char *path, json_t **ret_jwks, char **ret_error);
