/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SEV-SNP ID blocks (AMD SEV-SNP firmware ABI, SNP_LAUNCH_FINISH): the guest owner's signed
 * statement "this launch digest, with this policy, is my image", checked by the firmware before
 * the guest runs. All integers are little-endian.
 *
 *   ID_BLOCK (0x60 bytes):  0x00 LD[48]  0x30 FAMILY_ID[16]  0x40 IMAGE_ID[16]
 *                           0x50 u32 VERSION (1)  0x54 u32 GUEST_SVN  0x58 u64 POLICY
 *   ID_AUTH_INFO (0x1000):  0x000 u32 ID_KEY_ALGO  0x004 u32 AUTH_KEY_ALGO (1 = ECDSA P-384 with
 *                           SHA-384)  0x040 ID_BLOCK_SIG[0x200]  0x240 ID_KEY[0x404]
 *                           0x680 ID_KEY_SIG[0x200]  0x880 AUTHOR_KEY[0x404]; the rest reserved
 *   signature (0x200):      R[72] S[72], little-endian, zero-padded; the rest reserved
 *   public key (0x404):     u32 CURVE (2 = P-384), QX[72], QY[72], little-endian; rest reserved
 *
 * ID_BLOCK_SIG is the ID key's ECDSA signature (SHA-384) over the 0x60 ID_BLOCK bytes; ID_KEY_SIG
 * is the author key's over the 0x404 ID_KEY bytes. A report's ID_KEY_DIGEST and
 * AUTHOR_KEY_DIGEST are SHA-384 over those 0x404-byte public key structures.
 *
 * Keys are EC P-384 only. Signing goes through a callback so that a key may live elsewhere
 * (vhsmd): this module never holds a private key it did not receive.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#define SNP_ID_BLOCK_SIZE 0x60u
#define SNP_ID_AUTH_SIZE 0x1000u
#define SNP_ID_PUBKEY_SIZE 0x404u
#define SNP_ID_SIG_SIZE 0x200u
#define SNP_ID_DIGEST_SIZE 48u
#define SNP_ID_BLOCK_VERSION 1u
#define SNP_ID_ALGO_ECDSA_P384_SHA384 1u
#define SNP_ID_CURVE_P384 2u

/* Offsets in ID_AUTH_INFO. */
#define SNP_ID_AUTH_OFF_ID_BLOCK_SIG 0x040u
#define SNP_ID_AUTH_OFF_ID_KEY 0x240u
#define SNP_ID_AUTH_OFF_ID_KEY_SIG 0x680u
#define SNP_ID_AUTH_OFF_AUTHOR_KEY 0x880u

/* The firmware status codes SNP_LAUNCH_FINISH answers an ID block with (SEV ABI status table). */
typedef enum SnpFwStatus {
    SNP_FW_SUCCESS = 0x00,
    SNP_FW_POLICY_FAILURE = 0x07,
    SNP_FW_BAD_SIGNATURE = 0x0A,
    SNP_FW_BAD_MEASUREMENT = 0x0B,
    SNP_FW_UNSUPPORTED = 0x15,
    SNP_FW_INVALID_PARAM = 0x16,
} SnpFwStatus;

typedef struct SnpIdBlock {
    uint8_t ld[48];
    uint8_t family_id[16];
    uint8_t image_id[16];
    uint32_t version;
    uint32_t guest_svn;
    uint64_t policy;
} SnpIdBlock;

void snp_id_block_serialize(const SnpIdBlock *b, uint8_t out[SNP_ID_BLOCK_SIZE]);
void snp_id_block_parse(const uint8_t in[SNP_ID_BLOCK_SIZE], SnpIdBlock *ret);

/* Signs msg with ECDSA over SHA-384 and writes r and s big-endian, 48 bytes each. Returns 0 or a
 * negative errno (which snp_id_auth_create passes through). */
typedef int (*SnpIdSignFn)(void *userdata, const uint8_t *msg, size_t len, uint8_t ret_rs[96]);

typedef struct SnpIdSigner {
    SnpIdSignFn sign;
    void *userdata;
    EVP_PKEY *pub; /* the signer's public key (EC P-384); borrowed */
} SnpIdSigner;

/* A signer over an EVP_PKEY holding an EC P-384 private key (userdata = the EVP_PKEY). */
int snp_id_sign_pkey(void *userdata, const uint8_t *msg, size_t len, uint8_t ret_rs[96]);

/* AMD's public key structure of an EC P-384 key. Returns 0, -EOPNOTSUPP (not EC P-384), -EIO. */
int snp_id_pubkey_encode(EVP_PKEY *pub, uint8_t out[SNP_ID_PUBKEY_SIZE]);
/* The EC P-384 key of AMD's structure. Returns 0, -EOPNOTSUPP (curve not P-384), -EBADMSG (not a
 * point on the curve), -ENOMEM. *ret is a new EVP_PKEY. */
int snp_id_pubkey_decode(const uint8_t in[SNP_ID_PUBKEY_SIZE], EVP_PKEY **ret);
/* SHA-384 of the public key structure, as reports carry it. Returns 0 or -EIO. */
int snp_id_key_digest(const uint8_t pubkey[SNP_ID_PUBKEY_SIZE], uint8_t out[SNP_ID_DIGEST_SIZE]);

/* Builds ID_AUTH_INFO for a serialized ID block: signed by id, and the ID key signed by author
 * (NULL: no author key; its fields stay zero). Returns 0, -EOPNOTSUPP (a key not EC P-384), the
 * signer's error, -EIO. out is written only on success. */
int snp_id_auth_create(const uint8_t id_block[SNP_ID_BLOCK_SIZE], const SnpIdSigner *id,
                       const SnpIdSigner *author, uint8_t out[SNP_ID_AUTH_SIZE]);

/* What a launch with an accepted ID block puts into its reports. */
typedef struct SnpIdLaunch {
    SnpIdBlock block;
    uint8_t id_key_digest[SNP_ID_DIGEST_SIZE];
    uint8_t author_key_digest[SNP_ID_DIGEST_SIZE]; /* zero unless author_key_en */
    bool author_key_en;
} SnpIdLaunch;

/* The checks of SNP_LAUNCH_FINISH with ID_BLOCK_EN = 1, in the firmware's terms: an unsupported
 * ID_KEY_ALGO / AUTH_KEY_ALGO, key curve or ID block VERSION is INVALID_PARAM; an ID block
 * signature that the ID key does not verify, or (author_key_en) an ID key signature the author
 * key does not verify, is BAD_SIGNATURE; ID_BLOCK.LD other than the launch digest is
 * BAD_MEASUREMENT; ID_BLOCK.POLICY other than the guest's policy is POLICY_FAILURE.
 * Returns the status (>= 0; SNP_FW_SUCCESS fills *ret) or a negative errno for an internal
 * failure (-ENOMEM, -EIO). A message naming the failed check goes to err (SNP_ID_ERR_MAX). */
#define SNP_ID_ERR_MAX 256u
int snp_id_launch_check(const uint8_t id_block[SNP_ID_BLOCK_SIZE],
                        const uint8_t id_auth[SNP_ID_AUTH_SIZE], bool author_key_en,
                        const uint8_t launch_digest[48], uint64_t policy, SnpIdLaunch *ret,
                        char *err);

/* "BAD_SIGNATURE" etc.; "UNKNOWN" for others. */
const char *snp_fw_status_to_string(int status);
