/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the sealed import path of the vault (vault_transfer_import_release, reached
 * after vhsmd verified a KMS release's signature): compact JWE splitting, base64url, the strict
 * protected-header check and, for inputs naming the live transfer key, libjose's
 * ECDH-ES+A256KW / A256GCM decryption and the payload validation. The first byte selects the
 * release's key type; the rest is the compact JWE. A fresh transfer key exists for every input
 * (its kid is random, so only the header path is reachable by mutation; the unit tests cover
 * decryption).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vhsm/transfer.h"
#include "vhsm/vault.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const VaultPeer peer = {.uid = 0, .gid = 0};
    _cleanup_(vault_freep) Vault *v = NULL;
    _cleanup_free_ char *in = NULL;
    json_auto_t *jwk = NULL;
    VaultRelease rel = {.name = "kms/k", .spec = {.type = VAULT_KEY_AES256}, .version = 1};

    if (size > VAULT_TRANSFER_MAX_JWE || vault_new(&v) < 0)
        return 0;
    if (size > 0)
        rel.spec.type = (VaultKeyType)(data[0] % _VAULT_KEY_TYPE_MAX);
    in = malloc(size + 1);
    if (!in || vault_transfer_key_create(v, 60, &jwk) < 0)
        return 0;
    if (size > 0)
        memcpy(in, data + 1, size - 1);
    in[size > 0 ? size - 1 : 0] = 0;
    rel.recipient_kid = json_string_value(json_object_get(jwk, "kid"));
    (void)vault_transfer_import_release(v, &peer, in, &rel);
    return 0;
}
