/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the vault's own PKCS#8 DER reader (src/vhsm/pkcs8.c), which parses the key
 * material of sealed imports after JWE decryption. First byte: the declared key type; the
 * rest: the DER. An accepted key must be usable: its public half exports.
 */
#include <stdint.h>
#include <stdlib.h>

#include "core/openssl-util.h"
#include "vhsm/pkcs8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pkey = NULL;
    VaultKeyType type;
    uint8_t *der = NULL;
    int n;

    if (size < 1 || size > 16384)
        return 0;
    type = (VaultKeyType)(data[0] % _VAULT_KEY_TYPE_MAX);
    if (pkcs8_parse_private_key(type, data + 1, size - 1, &pkey) < 0)
        return 0;
    n = i2d_PUBKEY(pkey, &der);
    if (n <= 0)
        abort();
    OPENSSL_free(der);
    return 0;
}
