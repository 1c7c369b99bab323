/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target: the two-slot keystore file's container (keystore_slots_parse), read from the disk
 * the host controls before any authentication. Every image it returns must lie inside the input,
 * within the capacity, and a spoiled slot never returns an image.
 */
#include <stdint.h>
#include <stdlib.h>

#include "vhsm/keystore.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *img[2];
    size_t n[2], cap = 0;
    int err[2];

    if (keystore_slots_parse(data, size, img, n, err, &cap) < 0)
        return 0;
    for (int i = 0; i < 2; i++) {
        if (err[i] != 0 && (img[i] || n[i]))
            abort();
        if (img[i] &&
            (img[i] < data || n[i] > cap || n[i] == 0 || (size_t)(img[i] - data) + n[i] > size))
            abort();
        if (!img[i] && n[i] != 0)
            abort();
    }
    return 0;
}
