/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for the audit chain verifier (kms_audit_chain_verify: `nitride kms audit verify`
 * runs it over rows fetched from a kmsd that may be compromised). Input modes (first byte):
 *  - 'R' + JSON: the rows as received, no head;
 *  - 'H' + 64 chars + JSON: the rows against that head;
 *  - 'F' + JSON: the harness first fixes the chain up (seq 1.., prev_hash and hash recomputed
 *    for every object), so that the hash checks and everything behind them are reached; then a
 *    fixed-up chain must verify unless a row is malformed, and after one row is edited (chosen
 *    by the input length) or the newest row dropped it must not.
 * Contract checked: the result is 0, -EBADMSG, -EKEYREJECTED or (bad head) -EINVAL; a failure
 * has a message and success has none; the rows are not modified by the verifier.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "kmsd/audit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int verify_checked(json_t *rows, const char *head) {
    char err[256];
    json_t *copy = json_deep_copy(rows);
    int r;

    memset(err, 'x', sizeof err);
    r = kms_audit_chain_verify(rows, head, err);
    if (r != 0 && r != -EBADMSG && r != -EKEYREJECTED && r != -EINVAL && r != -ENOMEM)
        abort();
    if (r == -EINVAL && head && strlen(head) == 64 && strspn(head, "0123456789abcdef") == 64)
        abort();
    if ((r == 0) != (err[0] == 0) || !memchr(err, 0, sizeof err))
        abort();
    if (copy && !json_equal(copy, rows))
        abort();
    json_decref(copy);
    return r;
}

/* Re-chains every object in rows; returns the head (genesis for no rows). */
static void fix_up(json_t *rows, char head[static 65]) {
    size_t i;
    json_t *row;
    memcpy(head, KMS_AUDIT_GENESIS_HEX, 65);
    json_array_foreach(rows, i, row) {
        char h[65];
        if (!json_is_object(row))
            continue;
        json_object_set_new(row, "seq", json_integer((json_int_t)i + 1));
        json_object_set_new(row, "prev_hash", json_string(head));
        if (kms_audit_row_hash(row, h) < 0)
            continue;
        json_object_set_new(row, "hash", json_string(h));
        memcpy(head, h, 65);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    json_t *rows;
    char head[65];
    size_t off = 1;
    int r;

    if (size < 1)
        return 0;
    if (data[0] == 'H') {
        if (size < 65)
            return 0;
        memcpy(head, data + 1, 64);
        head[64] = 0;
        if (strlen(head) != 64)
            return 0;
        off = 65;
    } else if (data[0] != 'R' && data[0] != 'F')
        return 0;
    rows = json_loadb((const char *)data + off, size - off, JSON_DECODE_ANY, NULL);
    if (!rows)
        return 0;

    if (data[0] == 'R')
        (void)verify_checked(rows, NULL);
    else if (data[0] == 'H')
        (void)verify_checked(rows, head);
    else {
        if (!json_is_array(rows)) {
            if (verify_checked(rows, NULL) != -EBADMSG)
                abort();
            json_decref(rows);
            return 0;
        }
        fix_up(rows, head);
        r = verify_checked(rows, head);
        if (r == -EKEYREJECTED || r == -EINVAL)
            abort(); /* a fixed-up chain is well-formed or malformed, never broken */
        if (r == 0 && json_array_size(rows) > 0) {
            size_t n = json_array_size(rows), k = size % n;
            json_t *row = json_array_get(rows, k);
            json_t *d = json_object_get(row, "detail");
            const char *edit = json_is_string(d) && strcmp(json_string_value(d), "edited") == 0
                                   ? "edited again"
                                   : "edited";
            json_t *saved = json_incref(d);
            json_object_set_new(row, "detail", json_string(edit));
            if (verify_checked(rows, head) != -EKEYREJECTED)
                abort();
            json_object_set_new(row, "detail", saved);
            if (verify_checked(rows, head) != 0)
                abort();
            json_array_remove(rows, n - 1);
            if (verify_checked(rows, head) != -EKEYREJECTED)
                abort();
            if (verify_checked(rows, NULL) != 0)
                abort();
        }
    }
    json_decref(rows);
    return 0;
}
