/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Mechanisms with the caller's parameters for the PKCS#11 module (protocol revision 2, feature
 * VHSM_FEATURE_MECH_PARAMS; docs/protocol.md "Mechanisms"), and root's reset of a token's SO PIN
 * (feature VHSM_FEATURE_SO_PIN_RESET). Raw outputs, no vault envelope, latest key version.
 *
 * Hash names: "sha1", "sha224", "sha256", "sha384", "sha512".
 * Errors: -EINVAL (an unknown hash, a length or parameter out of range), -EOPNOTSUPP (the key's
 * type cannot do it), -EKEYREJECTED (verify: not valid; OAEP decrypt: the padding or label did
 * not check), or vault_acquire()'s errors (-ENOKEY, -EPERM, -EBADR, -EKEYEXPIRED, ...).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vhsm/vault.h"

/* RSA-PSS over a digest of `hash` (in_len = its size): MGF1 with mgf_hash (NULL: hash), salt of
 * salt_len bytes (0 .. emLen - hLen - 2, else -EINVAL). sign: SIGN usage, the login rule, *ret_sig
 * malloc'd (k bytes); verify (sig given, ret_sig NULL): VERIFY usage, public key only. */
int vault_rsa_pss(Vault *v, const VaultPeer *peer, const char *name, bool sign, const char *hash,
                  const char *mgf_hash, uint32_t salt_len, const uint8_t *in, size_t in_len,
                  const uint8_t *sig, size_t sig_len, uint8_t **ret_sig, size_t *ret_sig_len);

/* RSA-OAEP with hash, MGF1 with mgf_hash (NULL: hash) and a label (label_len 0..
 * VHSM_OAEP_LABEL_MAX). encrypt: ENCRYPT usage, public key; decrypt: DECRYPT usage, the login
 * rule, in_len = k. out_size >= k; *ret_len the output length. out is wiped on a failure. */
int vault_rsa_oaep(Vault *v, const VaultPeer *peer, const char *name, bool encrypt,
                   const char *hash, const char *mgf_hash, const uint8_t *label, size_t label_len,
                   const uint8_t *in, size_t in_len, uint8_t *out, size_t out_size,
                   size_t *ret_len);

/* HMAC with hash over the key of an HMAC key (any hash, whatever the key's own type), tag
 * truncated to mac_len bytes (1 .. the hash size; 0 = the full size). sign: writes the tag to
 * out (>= 64 bytes), *ret_len; verify (tag given): 0 or -EKEYREJECTED, compared in constant time
 * (a tag of another length than mac_len is rejected). SIGN / VERIFY usage and the login rule
 * (the secret key is used either way). */
int vault_hmac_ex(Vault *v, const VaultPeer *peer, const char *name, const char *hash,
                  uint32_t mac_len, const uint8_t *in, size_t in_len, const uint8_t *tag,
                  size_t tag_len, uint8_t *out, size_t *ret_len);

/* Root's recovery of a locked (or forgotten) SO PIN: sets the SO PIN of uid's token, clears its
 * SO failure counter and revokes the token's SO logins; keys, the user PIN and its counter are
 * untouched. peer must be root (-EPERM). -ENOMEDIUM: the token is not initialised; -ERANGE PIN
 * length; the keystore's errors (nothing changed). */
int vault_token_reset_so_pin(Vault *v, const VaultPeer *peer, uid_t uid, const uint8_t *pin,
                             size_t pin_len);
