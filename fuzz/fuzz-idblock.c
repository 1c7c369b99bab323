/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for snp_id_launch_check() (untrusted: the ID block and ID_AUTH_INFO a host hands to
 * SNP_LAUNCH_FINISH, here `nitride sim launch --id-block --id-auth`). Input: ID_BLOCK (0x60) then
 * ID_AUTH_INFO (0x1000), zero-padded, then one byte whose bit 0 is AUTHOR_KEY_EN. The launch
 * digest and policy are the block's own, so that a well-formed input gets past those checks.
 * Invariants: the status is one of the documented ones with a message on refusal; on success the
 * reported digests are SHA-384 of the key structures and the fields are the block's.
 */
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "snp/idblock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static uint8_t buf[SNP_ID_BLOCK_SIZE + SNP_ID_AUTH_SIZE + 1];
    const uint8_t *blk = buf, *auth = buf + SNP_ID_BLOCK_SIZE;
    char err[SNP_ID_ERR_MAX];
    SnpIdBlock b;
    SnpIdLaunch l;
    uint8_t d[48];

    if (size > sizeof buf)
        return 0;
    memset(buf, 0, sizeof buf);
    memcpy(buf, data, size);
    bool author = buf[sizeof buf - 1] & 1;
    snp_id_block_parse(blk, &b);
    for (int pass = 0; pass < 2; pass++) {
        uint8_t ld[48];
        memcpy(ld, b.ld, 48);
        ld[0] ^= (uint8_t)pass; /* pass 1: another launch digest */
        int st = snp_id_launch_check(blk, auth, author, ld, b.policy, &l, err);
        if (st < 0)
            abort(); /* no internal failure on any input */
        if (st != SNP_FW_SUCCESS) {
            if (strcmp(snp_fw_status_to_string(st), "UNKNOWN") == 0 || err[0] == '\0' ||
                strlen(err) >= SNP_ID_ERR_MAX)
                abort();
            continue;
        }
        if (pass == 1 || memcmp(&l.block, &b, sizeof b) != 0 || l.author_key_en != author)
            abort();
        if (snp_id_key_digest(auth + SNP_ID_AUTH_OFF_ID_KEY, d) < 0 ||
            memcmp(d, l.id_key_digest, 48) != 0)
            abort();
    }
    /* The key decoder on its own: a decoded key re-encodes to the same coordinates. */
    EVP_PKEY *k = NULL;
    if (snp_id_pubkey_decode(auth + SNP_ID_AUTH_OFF_ID_KEY, &k) == 0) {
        uint8_t again[SNP_ID_PUBKEY_SIZE];
        if (snp_id_pubkey_encode(k, again) < 0 ||
            memcmp(again, auth + SNP_ID_AUTH_OFF_ID_KEY, 4 + 144) != 0)
            abort();
        EVP_PKEY_free(k);
    }
    return 0;
}
