/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Transfer keys and sealed import: the only way a key made outside the vault gets in.
 *
 * A transfer key is an ephemeral ECDH P-384 key pair generated inside the vault with an
 * expiry. Its public JWK (with "kid" = RFC 7638 thumbprint) goes into the attestation report's
 * runtime data; the KMS encrypts the secret to it as a compact JWE (alg ECDH-ES+A256KW, enc
 * A256GCM). vault_transfer_import() checks the protected header strictly, decrypts with libjose
 * inside the vault, validates the payload against the declared key type and stores the key.
 *
 * One-shot: a transfer key is destroyed by the first import attempt that names it, whether the
 * import succeeds or fails after the header check (bad tag, wrong payload, name taken...). A
 * failed decrypt thus burns the key: an attacker gets one oracle query per attestation round.
 * Expired transfer keys are purged on every call and refused with -EKEYEXPIRED.
 *
 * Payload formats (the JWE plaintext):
 *   aes256       32 raw bytes         hmac-sha256  32 raw bytes   hmac-sha384  48 raw bytes
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

/* Imports the compact JWE as key `name` with spec (type, ACL, policy, label; origin
 * "imported"); peer is the creator (default ACL). Nothing is stored on failure.
 * Returns 0 or:
 *   -EBADMSG      not a compact JWE, bad base64url/JSON, header not exactly as required
 *                 (alg ECDH-ES+A256KW, enc A256GCM, kid, epk P-384; no zip, no crit, no
 *                 other members), or a payload that does not match spec->type
 *   -ENOKEY       unknown kid (never issued, or already used: one-shot)
 *   -EKEYEXPIRED  the transfer key expired (it is destroyed)
 *   -EKEYREJECTED decryption failed (tampered JWE, or encrypted to another key)
 *   -EEXIST, -EINVAL, -ENOMEM, or the keystore's error. */
int vault_transfer_import(Vault *v, const VaultPeer *peer, const char *jwe_compact,
                          const char *name, const VaultKeySpec *spec);

/* Number of live (unexpired, unused) transfer keys. */
size_t vault_transfer_key_count(Vault *v);
