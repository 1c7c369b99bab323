/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the keystore content deserializer (keystore_deserialize), i.e. what the sealed
 * keystore file holds after AES-GCM authentication. The harness feeds the plaintext directly so
 * that every input reaches the parser without a seal. An accepted input must describe a
 * consistent vault: it re-serializes, and that serialization parses again into the same
 * number of keys.
 */
#include <stdint.h>
#include <stdlib.h>

#include "vhsm/keystore.h"
#include "vhsm/vault.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    _cleanup_(vault_freep) Vault *v = NULL, *w = NULL;
    _cleanup_(secret_freep) Secret *s = NULL;

    if (size > 1024 * 1024)
        return 0;
    if (vault_new(&v) < 0 || vault_new(&w) < 0)
        return 0;
    if (keystore_deserialize(v, data, size) < 0) {
        if (vault_key_count(v) != 0)
            abort(); /* a refused input must leave the vault empty */
        return 0;
    }
    if (keystore_serialize(v, &s) < 0)
        abort();
    if (keystore_deserialize(w, secret_const_data(s), secret_size(s)) < 0)
        abort();
    if (vault_key_count(v) != vault_key_count(w))
        abort();
    return 0;
}
