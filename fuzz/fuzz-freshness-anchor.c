/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the keystore's freshness anchor file (freshness_anchor_decode), which vhsmd reads
 * at start-up from /run/vhsm. The MAC key is fixed (32 bytes of 0x42) so that the corpus can hold
 * valid anchors and mutations reach the generation past the MAC check. An accepted input must
 * be exactly what encoding its generation gives (no second valid form of an anchor).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vhsm/freshness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    _cleanup_(secret_freep) Secret *key = NULL;
    uint8_t img[FRESHNESS_ANCHOR_SIZE];
    uint64_t gen = 0;
    int r;

    if (size > 4096)
        return 0;
    if (secret_new(FRESHNESS_KEY_SIZE, &key) < 0)
        return 0;
    memset(secret_data(key), 0x42, FRESHNESS_KEY_SIZE);
    r = freshness_anchor_decode(key, data, size, &gen);
    if (r < 0) {
        if (r != -EBADMSG && r != -EOPNOTSUPP && r != -EKEYREJECTED && r != -EIO)
            abort();
        return 0;
    }
    if (freshness_anchor_encode(key, gen, img) < 0)
        abort();
    if (size != sizeof img || memcmp(img, data, size) != 0)
        abort();
    return 0;
}
