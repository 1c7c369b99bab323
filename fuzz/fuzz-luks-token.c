/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for luks_token_parse() (untrusted: anyone who can write the disk writes the LUKS2
 * header and its tokens). For every accepted token it checks the contract: format(parse(x))
 * parses again to the same token (keyslot, flow -- sealed, kms or sealed+kms --, volume,
 * derivation, policy, blob, the pre-authorised slot, KMS fields).
 */
#include <stdlib.h>
#include <string.h>

#include "luks/luks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int streq0(const char *a, const char *b) {
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    LuksToken t, u;
    const char *err = NULL;
    char *json = NULL;
    int r = luks_token_parse((const char *)data, size, &t, &err);

    if (r == -EBADMSG && !err)
        abort(); /* every malformed token names its member */
    if (r < 0)
        return 0;
    if (luks_token_format(&t, &json) < 0)
        abort();
    if (luks_token_parse(json, strlen(json), &u, &err) < 0)
        abort();
    if (u.keyslot != t.keyslot || u.flow != t.flow || strcmp(u.volume, t.volume) != 0 ||
        u.root_key_select != t.root_key_select || u.guest_field_select != t.guest_field_select ||
        u.guest_svn != t.guest_svn || u.tcb_version != t.tcb_version ||
        u.policy.allow_debug != t.policy.allow_debug || u.policy.min_tcb != t.policy.min_tcb ||
        u.policy.min_guest_svn != t.policy.min_guest_svn ||
        memcmp(u.blob, t.blob, LUKS_BLOB_SIZE) != 0 || !streq0(u.kms_url, t.kms_url) ||
        !streq0(u.attestd_url, t.attestd_url) || !streq0(u.secret_id, t.secret_id) ||
        u.has_expect != t.has_expect ||
        (t.has_expect && (memcmp(u.expect_measurement, t.expect_measurement, 48) != 0 ||
                          u.expect_field_select != t.expect_field_select ||
                          memcmp(u.expect_blob, t.expect_blob, LUKS_BLOB_SIZE) != 0)))
        abort();
    /* The slots present are exactly those the flow names. */
    if (luks_flow_has_kms(t.flow) != (t.kms_url != NULL) ||
        (t.has_expect && !luks_flow_has_sealed(t.flow)))
        abort();
    free(json);
    luks_token_done(&t);
    luks_token_done(&u);
    return 0;
}
