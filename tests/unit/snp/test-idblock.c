/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ID blocks (snp/idblock.h): the byte layout at the ABI's offsets, ID_AUTH_INFO built and checked
 * with real P-384 keys, each SNP_LAUNCH_FINISH refusal with its firmware status, and the
 * simulator's launch: what reports carry, a refused launch changing nothing, and derived keys
 * following the launch inputs.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/macro.h"
#include "core/openssl-util.h"
#include "core/secret.h"
#include "snp/idblock.h"
#include "snp/sim.h"

static EVP_PKEY *id_key, *author_key, *other_key, *p256_key;
static char base[] = "/tmp/nt-test-idblock-XXXXXX";
static char chip_dir[300];

static int group_setup(void **state) {
    (void)state;
    id_key = EVP_EC_gen("P-384");
    author_key = EVP_EC_gen("P-384");
    other_key = EVP_EC_gen("P-384");
    p256_key = EVP_EC_gen("P-256");
    if (!id_key || !author_key || !other_key || !p256_key || !mkdtemp(base))
        return -1;
    snprintf(chip_dir, sizeof chip_dir, "%s/chip", base);
    SimInitOptions o = {.product = SNP_PRODUCT_GENOA};
    return sim_chip_init(chip_dir, &o) < 0 ? -1 : 0;
}

static int group_teardown(void **state) {
    char cmd[400];
    (void)state;
    EVP_PKEY_free(id_key);
    EVP_PKEY_free(author_key);
    EVP_PKEY_free(other_key);
    EVP_PKEY_free(p256_key);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

static const SnpIdSigner *signer(EVP_PKEY *k) {
    static SnpIdSigner s[4];
    static int i;
    i = (i + 1) % 4;
    s[i] = (SnpIdSigner){.sign = snp_id_sign_pkey, .userdata = k, .pub = k};
    return &s[i];
}

static void make_block(SnpIdBlock *b, uint8_t blk[SNP_ID_BLOCK_SIZE]) {
    *b = (SnpIdBlock){.version = 1, .guest_svn = 0x01020304, .policy = 0x30000};
    for (int i = 0; i < 48; i++)
        b->ld[i] = (uint8_t)(0xA0 + i);
    memset(b->family_id, 0x11, 16);
    memset(b->image_id, 0x22, 16);
    snp_id_block_serialize(b, blk);
}

static void test_layout(void **state) {
    SnpIdBlock b, back;
    uint8_t blk[SNP_ID_BLOCK_SIZE];
    (void)state;
    make_block(&b, blk);
    assert_int_equal(blk[0], 0xA0);
    assert_int_equal(blk[0x2F], 0xA0 + 47);
    assert_int_equal(blk[0x30], 0x11);
    assert_int_equal(blk[0x40], 0x22);
    assert_memory_equal(blk + 0x50, "\x01\x00\x00\x00\x04\x03\x02\x01", 8);
    assert_memory_equal(blk + 0x58, "\x00\x00\x03\x00\x00\x00\x00\x00", 8);
    snp_id_block_parse(blk, &back);
    assert_memory_equal(&b, &back, sizeof b);

    /* Public key: curve 2, qx/qy little-endian in 72-byte fields, the same as OpenSSL's point. */
    uint8_t pk[SNP_ID_PUBKEY_SIZE], point[97];
    size_t len = 0;
    assert_int_equal(snp_id_pubkey_encode(id_key, pk), 0);
    assert_int_equal(
        EVP_PKEY_get_octet_string_param(id_key, "encoded-pub-key", point, sizeof point, &len), 1);
    assert_int_equal(len, 97);
    assert_memory_equal(pk, "\x02\x00\x00\x00", 4);
    for (int i = 0; i < 48; i++) {
        assert_int_equal(pk[4 + i], point[48 - i]);
        assert_int_equal(pk[4 + 72 + i], point[96 - i]);
    }
    for (size_t i = 4 + 48; i < 4 + 72; i++)
        assert_int_equal(pk[i], 0);
    for (size_t i = 4 + 144; i < SNP_ID_PUBKEY_SIZE; i++)
        assert_int_equal(pk[i], 0);
    EVP_PKEY *dec = NULL;
    assert_int_equal(snp_id_pubkey_decode(pk, &dec), 0);
    assert_int_equal(EVP_PKEY_eq(dec, id_key), 1);
    EVP_PKEY_free(dec);
    assert_int_equal(snp_id_pubkey_encode(p256_key, pk), -EOPNOTSUPP);
}

static void test_check(void **state) {
    SnpIdBlock b;
    SnpIdLaunch l;
    uint8_t blk[SNP_ID_BLOCK_SIZE], auth[SNP_ID_AUTH_SIZE], bad[SNP_ID_AUTH_SIZE];
    uint8_t bblk[SNP_ID_BLOCK_SIZE], pk[SNP_ID_PUBKEY_SIZE], dig[48];
    char err[SNP_ID_ERR_MAX];
    (void)state;

    make_block(&b, blk);
    assert_int_equal(snp_id_auth_create(blk, signer(id_key), signer(author_key), auth), 0);
    assert_int_equal(snp_id_launch_check(blk, auth, true, b.ld, 0x30000, &l, err), SNP_FW_SUCCESS);
    assert_int_equal(snp_id_pubkey_encode(id_key, pk), 0);
    assert_int_equal(snp_id_key_digest(pk, dig), 0);
    assert_memory_equal(l.id_key_digest, dig, 48);
    assert_int_equal(snp_id_pubkey_encode(author_key, pk), 0);
    assert_int_equal(snp_id_key_digest(pk, dig), 0);
    assert_memory_equal(l.author_key_digest, dig, 48);
    assert_int_equal(l.block.guest_svn, 0x01020304);

    /* Without AUTHOR_KEY_EN the author fields are not looked at and not reported. */
    assert_int_equal(snp_id_launch_check(blk, auth, false, b.ld, 0x30000, &l, err), 0);
    for (int i = 0; i < 48; i++)
        assert_int_equal(l.author_key_digest[i], 0);

    /* Each byte of the ID block is covered by the signature. */
    for (size_t i = 0; i < SNP_ID_BLOCK_SIZE; i += 7) {
        memcpy(bblk, blk, sizeof bblk);
        bblk[i] ^= 0x80;
        int st = snp_id_launch_check(bblk, auth, false, b.ld, 0x30000, &l, err);
        assert_true(st == SNP_FW_BAD_SIGNATURE ||
                    (i >= 0x50 && i < 0x54 && st == SNP_FW_INVALID_PARAM));
    }
    /* r with a non-zero byte above the 48 that fit the group order. */
    memcpy(bad, auth, sizeof bad);
    bad[SNP_ID_AUTH_OFF_ID_BLOCK_SIG + 60] = 1;
    assert_int_equal(snp_id_launch_check(blk, bad, false, b.ld, 0x30000, &l, err),
                     SNP_FW_BAD_SIGNATURE);
    /* ID key signature tampered: refused only with the author key enabled. */
    memcpy(bad, auth, sizeof bad);
    bad[SNP_ID_AUTH_OFF_ID_KEY_SIG + 1] ^= 1;
    assert_int_equal(snp_id_launch_check(blk, bad, true, b.ld, 0x30000, &l, err),
                     SNP_FW_BAD_SIGNATURE);
    assert_non_null(strstr(err, "author key"));
    assert_int_equal(snp_id_launch_check(blk, bad, false, b.ld, 0x30000, &l, err), 0);
    /* Another ID key put in place of the signer's. */
    memcpy(bad, auth, sizeof bad);
    assert_int_equal(snp_id_pubkey_encode(other_key, bad + SNP_ID_AUTH_OFF_ID_KEY), 0);
    assert_int_equal(snp_id_launch_check(blk, bad, false, b.ld, 0x30000, &l, err),
                     SNP_FW_BAD_SIGNATURE);
    /* Algorithms and curves other than ECDSA P-384 / SHA-384. */
    memcpy(bad, auth, sizeof bad);
    bad[0] = 2;
    assert_int_equal(snp_id_launch_check(blk, bad, false, b.ld, 0x30000, &l, err),
                     SNP_FW_INVALID_PARAM);
    memcpy(bad, auth, sizeof bad);
    bad[4] = 0;
    assert_int_equal(snp_id_launch_check(blk, bad, true, b.ld, 0x30000, &l, err),
                     SNP_FW_INVALID_PARAM);
    memcpy(bad, auth, sizeof bad);
    bad[SNP_ID_AUTH_OFF_ID_KEY] = 1;
    assert_int_equal(snp_id_launch_check(blk, bad, false, b.ld, 0x30000, &l, err),
                     SNP_FW_INVALID_PARAM);
    /* Measurement and policy. */
    uint8_t ld[48];
    memcpy(ld, b.ld, 48);
    ld[47] ^= 1;
    assert_int_equal(snp_id_launch_check(blk, auth, true, ld, 0x30000, &l, err),
                     SNP_FW_BAD_MEASUREMENT);
    assert_int_equal(snp_id_launch_check(blk, auth, true, b.ld, 0x30001, &l, err),
                     SNP_FW_POLICY_FAILURE);
    /* VERSION other than 1, even correctly signed. */
    b.version = 2;
    snp_id_block_serialize(&b, bblk);
    assert_int_equal(snp_id_auth_create(bblk, signer(id_key), NULL, bad), 0);
    assert_int_equal(snp_id_launch_check(bblk, bad, false, b.ld, 0x30000, &l, err),
                     SNP_FW_INVALID_PARAM);
}

/* A signer that names one key and signs with another (a vhsmd key rotated in between). */
static int sign_other(void *userdata, const uint8_t *msg, size_t len, uint8_t ret_rs[96]) {
    (void)userdata;
    return snp_id_sign_pkey(other_key, msg, len, ret_rs);
}

static void test_create_refusals(void **state) {
    SnpIdBlock b;
    uint8_t blk[SNP_ID_BLOCK_SIZE], auth[SNP_ID_AUTH_SIZE];
    SnpIdSigner lying = {.sign = sign_other, .pub = id_key};
    (void)state;
    make_block(&b, blk);
    memset(auth, 0x5A, sizeof auth);
    assert_int_equal(snp_id_auth_create(blk, &lying, NULL, auth), -EKEYREJECTED);
    assert_int_equal(snp_id_auth_create(blk, signer(id_key), &lying, auth), -EKEYREJECTED);
    assert_int_equal(snp_id_auth_create(blk, signer(p256_key), NULL, auth), -EOPNOTSUPP);
    assert_int_equal(auth[0], 0x5A); /* untouched on failure */
    /* Without an author key its fields stay zero. */
    assert_int_equal(snp_id_auth_create(blk, signer(id_key), NULL, auth), 0);
    for (size_t i = 4; i < 0x40; i++)
        assert_int_equal(auth[i], 0);
    for (size_t i = SNP_ID_AUTH_OFF_ID_KEY_SIG; i < SNP_ID_AUTH_SIZE; i++)
        assert_int_equal(auth[i], 0);
}

/* MSG_KEY_REQ mixing the launch fields and the requested guest SVN (the guest's own unless
 * svn >= 0 asks for an older one). */
static void derive_svn(SimChip *c, int64_t svn, uint8_t out[32]) {
    SnpDerivedKeyRequest req = {
        .guest_svn = svn >= 0 ? (uint32_t)svn : sim_chip_launch(c)->guest_svn,
        .root_key_select = SNP_KEY_ROOT_VCEK,
        .guest_field_select = SNP_GFS_MEASUREMENT | SNP_GFS_GUEST_POLICY | SNP_GFS_IMAGE_ID |
                              SNP_GFS_FAMILY_ID | SNP_GFS_GUEST_SVN,
        .tcb_version = sim_chip_launch(c)->committed_tcb,
    };
    _cleanup_(secret_freep) Secret *k = NULL;
    assert_int_equal(sim_chip_get_derived_key(c, &req, &k), 0);
    memcpy(out, secret_const_data(k), 32);
}

static void derive(SimChip *c, uint8_t out[32]) {
    derive_svn(c, -1, out);
}

static void test_sim_launch(void **state) {
    _cleanup_(sim_chip_freep) SimChip *c = NULL;
    SnpIdBlock b;
    uint8_t blk[SNP_ID_BLOCK_SIZE], auth[SNP_ID_AUTH_SIZE], blk2[SNP_ID_BLOCK_SIZE],
        auth2[SNP_ID_AUTH_SIZE];
    uint8_t k1[32], k2[32], k3[32], k4[32];
    char err[SNP_ID_ERR_MAX];
    int fw = -1;
    (void)state;

    assert_int_equal(sim_chip_load(chip_dir, &c), 0);
    make_block(&b, blk);
    assert_int_equal(snp_id_auth_create(blk, signer(id_key), signer(author_key), auth), 0);
    SimLaunchParams p = {
        .policy = 0x30000, .id_block = blk, .id_auth = auth, .author_key_en = true};
    memcpy(p.measurement, b.ld, 48);
    assert_int_equal(sim_chip_launch_finish(c, &p, &fw, err), 0);
    assert_int_equal(fw, SNP_FW_SUCCESS);
    SnpReport *l = sim_chip_launch(c);
    assert_memory_equal(l->measurement, b.ld, 48);
    assert_memory_equal(l->family_id, b.family_id, 16);
    assert_memory_equal(l->image_id, b.image_id, 16);
    assert_int_equal(l->guest_svn, b.guest_svn);
    assert_true(l->flags & SNP_FLAG_AUTHOR_KEY_EN);
    derive(c, k1);
    SnpReport before = *l;

    /* Refused: nothing changes, not even the REPORT_ID. */
    p.policy = 0x30001;
    assert_int_equal(sim_chip_launch_finish(c, &p, &fw, err), -EKEYREJECTED);
    assert_int_equal(fw, SNP_FW_POLICY_FAILURE);
    assert_memory_equal(sim_chip_launch(c), &before, sizeof before);
    derive(c, k2);
    assert_memory_equal(k1, k2, 32);

    /* Persisted: a reload sees the same launch. */
    sim_chip_free(TAKE_PTR(c));
    assert_int_equal(sim_chip_load(chip_dir, &c), 0);
    assert_memory_equal(sim_chip_launch(c)->id_key_digest, before.id_key_digest, 48);
    derive(c, k2);
    assert_memory_equal(k1, k2, 32);

    /* Another image (a changed kernel changes the launch digest): a different derived key. */
    b.ld[0] ^= 1;
    snp_id_block_serialize(&b, blk2);
    assert_int_equal(snp_id_auth_create(blk2, signer(id_key), NULL, auth2), 0);
    SimLaunchParams p2 = {.policy = 0x30000, .id_block = blk2, .id_auth = auth2};
    memcpy(p2.measurement, b.ld, 48);
    assert_int_equal(sim_chip_launch_finish(c, &p2, &fw, err), 0);
    assert_false(sim_chip_launch(c)->flags & SNP_FLAG_AUTHOR_KEY_EN);
    derive(c, k3);
    assert_memory_not_equal(k1, k3, 32);
    /* The same image with another guest SVN in its ID block: a different derived key too. */
    b.guest_svn++;
    snp_id_block_serialize(&b, blk2);
    assert_int_equal(snp_id_auth_create(blk2, signer(id_key), NULL, auth2), 0);
    assert_int_equal(sim_chip_launch_finish(c, &p2, &fw, err), 0);
    derive(c, k4);
    assert_memory_not_equal(k3, k4, 32);
    /* ... while the key of the older SVN stays derivable (SVN-bound sealing survives updates). */
    derive_svn(c, b.guest_svn - 1, k2);
    assert_memory_equal(k2, k3, 32);
    /* No ID block: ids, SVN and digests are zero. */
    SimLaunchParams p3 = {.policy = 0x30000};
    assert_int_equal(sim_chip_launch_finish(c, &p3, &fw, err), 0);
    l = sim_chip_launch(c);
    static const uint8_t zero[48];
    assert_memory_equal(l->id_key_digest, zero, 48);
    assert_memory_equal(l->family_id, zero, 16);
    assert_int_equal(l->guest_svn, 0);
    /* Half an ID block is a caller error. */
    p3.id_block = blk;
    assert_int_equal(sim_chip_launch_finish(c, &p3, &fw, err), -EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_create_refusals),
        cmocka_unit_test(test_sim_launch),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
