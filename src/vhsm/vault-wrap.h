/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Key wrapping and key derivation into new objects (issue 12, "Wrapping and derivation"; the
 * PKCS#11 module's C_WrapKey, C_UnwrapKey and C_DeriveKey with CKM_ECDH1_DERIVE). Everything
 * happens inside the vault: a wrapped key leaves only encrypted under another vault key, an
 * unwrapped or derived key goes straight into a new object, and neither path ever returns key
 * material to the caller.
 *
 * Wrapped forms: secret keys (AES, HMAC) as their raw bytes; private keys (EC, Ed25519, RSA) as
 * PKCS#8 PrivateKeyInfo DER. Algorithms: AES key wrap, RFC 3394 (pad false, input a multiple of
 * 8 bytes, at least 16) and RFC 5649 (pad true), with an AES-128/192/256 wrapping key.
 *
 * Errors (negative errnos; docs/protocol.md "Key wrapping and derivation"):
 *   -EPERM        the ACL, or a usage flag of the wrapping/unwrapping/base key (WRAP, UNWRAP,
 *                 DERIVE) is off
 *   -ENOEXEC      the key to wrap is not EXTRACTABLE              (CKR_KEY_UNEXTRACTABLE)
 *   -EBADSLT      the key to wrap is WRAP_WITH_TRUSTED and the wrapping key is not TRUSTED
 *                                                                  (CKR_KEY_NOT_WRAPPABLE)
 *   -EOPNOTSUPP   a key of the wrong type (wrapping key not AES, target a raw key, base not EC)
 *   -ERANGE       RFC 3394 on a key whose wrapped form is not a multiple of 8 bytes; a derived
 *                 length the KDF cannot give
 *   -EKEYREJECTED the wrapped blob does not unwrap (integrity check) or holds no valid key
 *                                                                  (CKR_WRAPPED_KEY_INVALID)
 *   -EMEDIUMTYPE  the unwrapped key is not of the type (or length) the caller asked for
 *                                                                  (CKR_TEMPLATE_INCONSISTENT)
 *   -EBADMSG      a peer EC point that is malformed, not on the base key's curve, or infinity
 *   -EINVAL       bad arguments; plus the creation errors of vault_key_generate() (-EEXIST,
 *                 -EDQUOT, -ENOTUNIQ, -EBADR, ...). On any error no object is created.
 */
#pragma once

#include "vhsm/vault.h"

#define VAULT_WRAP_MAX 16384u /* bytes of a wrapped key (RSA-4096 PKCS#8 is about 2.4 KB) */

/* Wraps key `target` (latest version) under `wrapping` (an AES key with WRAP). length_only: *ret
 * is NULL and *ret_len the exact length the wrapped form has. Otherwise *ret is malloc'd. */
int vault_key_wrap(Vault *v, const VaultPeer *peer, const char *wrapping, bool pad,
                   const char *target, bool length_only, uint8_t **ret, size_t *ret_len);

/* Unwraps in (made by vault_key_wrap or any RFC 3394/5649 implementation) under `unwrapping`
 * (an AES key with UNWRAP) into a new key new_name. type: an exact key type ("aes256",
 * "ec-p384", ...) or a family resolved from the content: "aes" (16/24/32 bytes), "generic-secret"
 * (32 -> hmac-sha256, 48 -> hmac-sha384), "ec", "rsa". want_len (0 = any): the secret length the
 * caller expects (CKA_VALUE_LEN). spec: everything but the type (obj_flags, attrs, label, ACL).
 * The new key is imported: not LOCAL, ALWAYS_SENSITIVE nor NEVER_EXTRACTABLE. *ret_type: the
 * type it got (may be NULL). */
/* local_kek_only (vhsmd --no-plaintext-import): the unwrapping key must be LOCAL and
 * NEVER_EXTRACTABLE (-EPERM otherwise), so that only what vhsmd itself wrapped can come in. */
int vault_key_unwrap(Vault *v, const VaultPeer *peer, const char *unwrapping, bool pad,
                     const uint8_t *in, size_t in_len, const char *type, size_t want_len,
                     const char *new_name, const VaultKeySpec *spec, bool local_kek_only,
                     VaultKeyType *ret_type);

/* PKCS#11 CKM_ECDH1_DERIVE: ECDH between `base` (EC P-256/P-384 with DERIVE) and the peer's
 * public point (raw SEC1 octets, uncompressed or compressed, on the base key's curve), then kdf:
 * "null" (the shared secret itself; value_len <= its size, the leading bytes dropped as
 * SoftHSM2 does) or "sha1"/"sha224"/"sha256"/"sha384"/"sha512" (ANSI X9.63 KDF with
 * shared_data). The result becomes the new secret key new_name of type family "aes" (value_len
 * 16/24/32) or "generic-secret" (32 or 48), or an exact secret type. Flags: the spec's, not
 * LOCAL; ALWAYS_SENSITIVE / NEVER_EXTRACTABLE as PKCS#11 derives them from the base key. */
int vault_key_derive_ecdh1(Vault *v, const VaultPeer *peer, const char *base, const uint8_t *point,
                           size_t point_len, const char *kdf, const uint8_t *shared_data,
                           size_t shared_len, const char *type, size_t value_len,
                           const char *new_name, const VaultKeySpec *spec, VaultKeyType *ret_type);
