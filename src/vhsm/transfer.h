/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Transfer keys and sealed import: the only way a key made outside the vault gets in (a KMS
 * release, token/release.h, verified by vhsmd before it reaches the vault).
 *
 * A transfer key is an ephemeral ECDH P-256 key pair (P-384 with vault_set_transfer_curve())
 * generated inside the vault with an expiry. Its public JWK (with "kid" = RFC 7638 thumbprint) goes
 * into the attestation report's runtime data; the KMS encrypts the secret to it as a compact JWE
 * (alg ECDH-ES+A256KW, enc A256GCM). vault_transfer_import_release() checks the protected header
 * strictly, decrypts with libjose inside the vault, validates the payload against the release's key
 * type and stores the key under the release's name, version and attributes.
 *
 * One-shot: a transfer key is destroyed by the first import attempt that names it, whether the
 * import succeeds or fails after the header check (bad tag, wrong payload, name taken...). A
 * failed decrypt thus burns the key: an attacker gets one oracle query per attestation round.
 * Expired transfer keys are purged on every call and refused with -EKEYEXPIRED.
 *
 * Payload formats (the JWE plaintext):
 *   aes256       32 raw bytes         hmac-sha256  32 raw bytes   hmac-sha384  48 raw bytes
 *   raw          1..VAULT_RAW_MAX bytes
 *   ec-p256/p384, ed25519, rsa2048/3072/4096: PKCS#8 PrivateKeyInfo DER of exactly that
 *   algorithm, curve and modulus size (trailing bytes refused), RSA with e = 65537.
 */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "vhsm/vault.h"

#define VAULT_TRANSFER_MAX_LIFETIME (3600u) /* seconds */
#define VAULT_TRANSFER_MAX_KEYS 64u         /* live transfer keys at once */
#define VAULT_TRANSFER_MAX_JWE (64u * 1024u)

/* Creates a transfer key valid for lifetime_sec (1..VAULT_TRANSFER_MAX_LIFETIME).
 * *ret_jwk: new public JWK {"kty":"EC","crv":"P-384","x","y","kid","alg":"ECDH-ES+A256KW",
 * "use":"enc"}. Returns 0, -EINVAL, -EUSERS (VAULT_TRANSFER_MAX_KEYS live keys), -ENOMEM,
 * -EIO. */
int vault_transfer_key_create(Vault *v, uint32_t lifetime_sec, json_t **ret_jwk);

/* The curve of the transfer keys created from now on: "P-256" (the default,
 * VAULT_TRANSFER_DEFAULT_CURVE: the 128-bit security level of ES256, the default token and release
 * signature; a release to it costs ~1/20 of the P-384 work with OpenSSL 3.0) or "P-384". A
 * JWE's epk must be on its transfer key's curve. Returns 0 or -EINVAL. */
#define VAULT_TRANSFER_DEFAULT_CURVE "P-256"
int vault_set_transfer_curve(Vault *v, const char *curve);

/* What a verified KMS release says about the key it carries (the signed header H of
 * token/release.h, as vault values; vhsmd verifies the release's signature first). */
typedef struct VaultRelease {
    const char *name;          /* full name, in kms/ */
    VaultKeySpec spec;         /* type, policy, label, ACL (NULL: the importer, root, only) */
    uint32_t version;          /* 1..VAULT_MAX_VERSIONS */
    const char *recipient_kid; /* the transfer key the JWE must be encrypted to */
} VaultRelease;

/* Imports the compact JWE of a verified release as version rel->version of key rel->name
 * (origin "imported"): a new key, or a new latest version of the existing one (vault-private.h,
 * vault_import_version()). The JWE's protected header must be exactly alg ECDH-ES+A256KW, enc
 * A256GCM, kid (= rel->recipient_kid), epk (P-384), cty "nitride-key" and "nitride" (the signed
 * header, checked by the release's verifier). Name, version and type are checked before the
 * transfer key is spent. Nothing is stored on failure. Returns 0 or:
 *   -EINVAL       not a kms/ name, bad spec
 *   -EEXIST       that version is already the latest (a replayed release), -ESTALE an older one
 *   -EMEDIUMTYPE  the key exists with another type
 *   -EBADMSG      not a compact JWE, header not exactly as required, kid not the recipient's,
 *                 or a payload that does not match the type
 *   -ENOKEY       unknown transfer key (never issued, or already used: one-shot)
 *   -EKEYEXPIRED  the transfer key expired (it is destroyed)
 *   -EKEYREJECTED decryption failed (tampered JWE, or encrypted to another key)
 *   -EDQUOT, -ENOMEM, or the keystore's error. */
int vault_transfer_import_release(Vault *v, const VaultPeer *peer, const char *jwe_compact,
                                  const VaultRelease *rel);

/* Whether kid (an RFC 7638 thumbprint) names a transfer key this vault created and still holds,
 * or one spent by an import within its lifetime (the last VAULT_TRANSFER_RECENT spent keys are
 * remembered until the moment they would have expired): the binding of an attestation token's
 * cnf.jwk to this vault. */
#define VAULT_TRANSFER_RECENT 64u
bool vault_transfer_key_known(Vault *v, const char *kid);

/* Number of live (unexpired, unused) transfer keys. */
size_t vault_transfer_key_count(Vault *v);
