/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for AMD CRL parsing and checking (verify/crl.h): the bytes a KDS (or a cache, or
 * --crl) hands the verifier. Runs the parser, the signature-scheme check, the signature check
 * against each built-in ARK, the freshness check and the serial lookup. Contract checked: an
 * accepted CRL has nextUpdate >= thisUpdate, its revoked entries are sorted, every entry is found
 * by its own serial, a serial of NT_SERIAL_MAX 0xff bytes is found only if listed, and formatting
 * a serial stays inside its buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "verify/anchors.h"
#include "verify/crl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static NtAnchorSet anchors;
static bool loaded;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    NtCrl *crl = NULL;
    char buf[2 * NT_SERIAL_MAX + 3];

    if (!loaded) {
        if (nt_anchor_set_load_builtin(&anchors) < 0)
            abort();
        loaded = true;
    }
    if (nt_crl_parse(data, size, &crl) < 0)
        return 0;
    if (crl->next_update < crl->this_update)
        abort();
    (void)nt_crl_check_sig_scheme(crl);
    for (size_t i = 0; i < anchors.n_items; i++)
        if (anchors.items[i].role == NT_CERT_ROLE_ARK &&
            nt_crl_verify_signed_by(crl, anchors.items[i].cert) == 0)
            abort(); /* nobody here has AMD's ARK keys */
    (void)nt_crl_check_time(crl, crl->this_update, 0);
    if (nt_crl_check_time(crl, crl->this_update - 1, INT64_MAX) != -EKEYREJECTED)
        abort();
    bool listed_max = false;
    for (size_t i = 0; i < crl->n_revoked; i++) {
        const NtCrlEntry *e = &crl->revoked[i], *hit = nt_crl_find(crl, &e->serial);
        if (!hit || hit->serial.len != e->serial.len ||
            memcmp(hit->serial.b, e->serial.b, e->serial.len) != 0 ||
            hit->revoked_at > e->revoked_at)
            abort();
        if (i > 0 && (crl->revoked[i - 1].serial.len > e->serial.len ||
                      (crl->revoked[i - 1].serial.len == e->serial.len &&
                       memcmp(crl->revoked[i - 1].serial.b, e->serial.b, e->serial.len) > 0)))
            abort();
        nt_serial_format(&e->serial, buf, sizeof buf);
        if (strlen(buf) >= sizeof buf || strncmp(buf, "0x", 2) != 0)
            abort();
        if (e->serial.len == NT_SERIAL_MAX) {
            bool all = true;
            for (size_t k = 0; k < NT_SERIAL_MAX; k++)
                all &= e->serial.b[k] == 0xff;
            listed_max |= all;
        }
    }
    NtSerial max = {.len = NT_SERIAL_MAX};
    memset(max.b, 0xff, sizeof max.b);
    if ((nt_crl_find(crl, &max) != NULL) != listed_max)
        abort();
    nt_crl_free(crl);
    return 0;
}
