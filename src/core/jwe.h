/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Opening a JWE whose plaintext is a secret (a released key): libjose unwraps the CEK and
 * decrypts, streaming the plaintext straight into a Secret through a jose_io_t sink, so that it
 * never lands in heap memory; the CEK's bytes are wiped once used. Shared by vhsmd's release
 * import (src/vhsm/transfer.c) and the LUKS remote unlock (src/luks/luks-remote.c).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "core/secret.h"

/* Decrypts jwe (the JSON form libjose takes: protected, encrypted_key, iv, ciphertext, tag) with
 * the private JWK jwk (not changed; the caller wipes it) into a new Secret of exactly ct_len
 * bytes, ct being the JWE's decoded ciphertext. Returns 0 and *ret; -EKEYREJECTED when the CEK
 * does not unwrap or the ciphertext does not authenticate (a partial plaintext is wiped);
 * -ENOMEM. */
int nt_jwe_decrypt_secret(const json_t *jwe, const json_t *jwk, const uint8_t *ct, size_t ct_len,
                          Secret **ret);
