/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PKCS#8 PrivateKeyInfo (RFC 5208 / RFC 5958) parsing for the vault's sealed import, without
 * OpenSSL's ASN.1 decoders. Why: OpenSSL 3.0's decoders leave copies of the private key in
 * freed heap memory (measured by scanning /proc/self/mem), and the vault promises that a
 * deleted key leaves no bytes behind. This parser reads the DER in place, converts the private
 * components into one Secret and hands them to EVP_PKEY_fromdata(), which keeps them in
 * OpenSSL's secure heap.
 *
 * Accepted (strict DER subset, definite lengths, no trailing bytes at any level):
 *   SEQUENCE { INTEGER 0|1, AlgorithmIdentifier, OCTET STRING privateKey,
 *              [0] attributes OPTIONAL (ignored), [1] publicKey OPTIONAL (ignored) }
 *   ec-p256 / ec-p384: id-ecPublicKey with the namedCurve OID; privateKey = ECPrivateKey
 *     { INTEGER 1, OCTET STRING d, [0] curve OPTIONAL (must match), [1] BIT STRING OPTIONAL
 *     (must equal the public key computed from d) }
 *   ed25519: id-Ed25519, no parameters; privateKey = OCTET STRING (32 bytes)
 *   rsa*: rsaEncryption, NULL or absent parameters; privateKey = RSAPrivateKey version 0
 *     (two primes) with positive integers.
 */
#pragma once

#include <openssl/evp.h>

#include "vhsm/vault.h"

/* Returns 0 with a new key pair in *ret, or -EBADMSG (malformed, other algorithm or curve),
 * -ENOMEM, -EIO. Does not check the modulus size or pairwise consistency (the caller does). */
int pkcs8_parse_private_key(VaultKeyType type, const uint8_t *der, size_t len, EVP_PKEY **ret);
