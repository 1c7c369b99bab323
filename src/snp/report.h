/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The SEV-SNP ATTESTATION_REPORT (AMD SEV-SNP Firmware ABI, Table "ATTESTATION_REPORT
 * Structure"), versions 2, 3 and 5, 1184 bytes, little-endian.
 *
 * SnpReport is the decoded, host-endian form. snp_report_parse() is strict about untrusted bytes
 * (size, version, must-be-zero fields, signature algorithm) and snp_report_serialize() writes the
 * identical 1184 bytes back: parse(serialize(x)) == x and serialize(parse(b)) == b for every
 * accepted b.
 */
#pragma once

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define SNP_REPORT_SIZE 0x4A0u        /* 1184 */
#define SNP_REPORT_SIGNED_SIZE 0x2A0u /* bytes 0x000..0x29F are signed */
#define SNP_SIG_COMPONENT_SIZE 72u    /* r and s, little-endian, zero padded */
#define SNP_SIG_ALGO_ECDSA_P384_SHA384 1u

/* Policy bits (guest policy, report offset 0x08). */
#define SNP_POLICY_ABI_MINOR_MASK 0xFFull
#define SNP_POLICY_ABI_MAJOR_SHIFT 8
#define SNP_POLICY_SMT (1ull << 16)
#define SNP_POLICY_RESERVED_1 (1ull << 17) /* must be 1 */
#define SNP_POLICY_MIGRATE_MA (1ull << 18)
#define SNP_POLICY_DEBUG (1ull << 19)
#define SNP_POLICY_SINGLE_SOCKET (1ull << 20)
#define SNP_POLICY_CXL_ALLOW (1ull << 21)
#define SNP_POLICY_MEM_AES_256_XTS (1ull << 22)
#define SNP_POLICY_RAPL_DIS (1ull << 23)
#define SNP_POLICY_CIPHERTEXT_HIDING (1ull << 24)
#define SNP_POLICY_PAGE_SWAP_DISABLE (1ull << 25)

/* PLATFORM_INFO bits (offset 0x40). Bits 8..63 are reserved; parse accepts them (firmware adds
 * platform facts without a new report version) and the printers show them as unknown. */
#define SNP_PLATFORM_SMT_EN (1ull << 0)
#define SNP_PLATFORM_TSME_EN (1ull << 1)
#define SNP_PLATFORM_ECC_EN (1ull << 2)
#define SNP_PLATFORM_RAPL_DIS (1ull << 3)
#define SNP_PLATFORM_CIPHERTEXT_HIDING_EN (1ull << 4)
#define SNP_PLATFORM_ALIAS_CHECK_COMPLETE (1ull << 5)
#define SNP_PLATFORM_IOMMU_WRITE_SAFE (1ull << 6)
#define SNP_PLATFORM_TIO_EN (1ull << 7)

/* Flags (offset 0x48). */
#define SNP_FLAG_AUTHOR_KEY_EN (1u << 0)
#define SNP_FLAG_MASK_CHIP_KEY (1u << 1)
#define SNP_FLAG_SIGNING_KEY_SHIFT 2
#define SNP_FLAG_SIGNING_KEY_MASK (7u << 2)

typedef enum SnpSigningKey {
    SNP_SIGNING_KEY_VCEK = 0,
    SNP_SIGNING_KEY_VLEK = 1,
    SNP_SIGNING_KEY_NONE = 7,
} SnpSigningKey;

typedef enum SnpProduct {
    SNP_PRODUCT_MILAN,
    SNP_PRODUCT_GENOA,
    SNP_PRODUCT_TURIN,
    _SNP_PRODUCT_MAX,
    _SNP_PRODUCT_INVALID = -EINVAL,
} SnpProduct;

/* A TCB version decoded for a product. fmc is meaningful on Turin only. */
typedef struct SnpTcb {
    uint8_t fmc, bootloader, tee, snp, microcode;
} SnpTcb;

typedef struct SnpReport {
    uint32_t version;
    uint32_t guest_svn;
    uint64_t policy;
    uint8_t family_id[16];
    uint8_t image_id[16];
    uint32_t vmpl;
    uint32_t signature_algo;
    uint64_t current_tcb;
    uint64_t platform_info;
    uint32_t flags; /* author_key_en, mask_chip_key, signing_key */
    uint8_t report_data[64];
    uint8_t measurement[48];
    uint8_t host_data[32];
    uint8_t id_key_digest[48];
    uint8_t author_key_digest[48];
    uint8_t report_id[32];
    uint8_t report_id_ma[32];
    uint64_t reported_tcb;
    uint8_t cpuid_fam_id, cpuid_mod_id, cpuid_step; /* version >= 3, else 0 */
    uint8_t chip_id[64];
    uint64_t committed_tcb;
    uint8_t current_build, current_minor, current_major;
    uint8_t committed_build, committed_minor, committed_major;
    uint64_t launch_tcb;
    uint64_t launch_mit_vector;                  /* version >= 5, else 0 */
    uint64_t current_mit_vector;                 /* version >= 5, else 0 */
    uint8_t signature_r[SNP_SIG_COMPONENT_SIZE]; /* little-endian */
    uint8_t signature_s[SNP_SIG_COMPONENT_SIZE]; /* little-endian */
} SnpReport;

/* Parses exactly SNP_REPORT_SIZE bytes of untrusted input.
 * Returns 0, or: -EMSGSIZE wrong size; -EPROTONOSUPPORT unknown version (not 2, 3 or 5);
 * -EBADMSG a must-be-zero field is not zero (the field is named in the debug log and, if
 * ret_error is not NULL, in *ret_error, a static string); -EOPNOTSUPP unknown signature
 * algorithm. *ret is written only on success. */
int snp_report_parse(const uint8_t *buf, size_t len, SnpReport *ret, const char **ret_error);
/* Writes the report's 1184 bytes (reserved fields zero). */
void snp_report_serialize(const SnpReport *r, uint8_t out[SNP_REPORT_SIZE]);

static inline SnpSigningKey snp_report_signing_key(const SnpReport *r) {
    return (SnpSigningKey)((r->flags & SNP_FLAG_SIGNING_KEY_MASK) >> SNP_FLAG_SIGNING_KEY_SHIFT);
}

/* Product helpers. Names are "Milan", "Genoa", "Turin" as in AMD KDS URLs. */
const char *snp_product_to_string(SnpProduct p);
/* Accepts "milan", "Milan", "Milan-B0", "Genoa-*", etc. Returns the product or
 * _SNP_PRODUCT_INVALID. */
SnpProduct snp_product_from_string(const char *s);
/* From CPUID family/model (report version >= 3): 0x19 model 0x00-0x0F Milan, 0x10-0x1F and
 * 0xA0-0xAF Genoa, 0x1A Turin. Returns _SNP_PRODUCT_INVALID when unknown or zero. */
SnpProduct snp_product_from_cpuid(uint8_t family, uint8_t model);

/* TCB layout: Milan/Genoa: byte 0 BL, 1 TEE, 6 SNP, 7 ucode; Turin: 0 FMC, 1 BL, 2 TEE, 3 SNP,
 * 7 ucode. Bytes that must be zero in that layout make snp_tcb_decode return -EBADMSG. */
int snp_tcb_decode(uint64_t raw, SnpProduct p, SnpTcb *ret);
uint64_t snp_tcb_encode(const SnpTcb *t, SnpProduct p);
/* Component-wise a >= b (all of BL, TEE, SNP, ucode and, on Turin, FMC). */
bool snp_tcb_ge(const SnpTcb *a, const SnpTcb *b, SnpProduct p);

/* Printing: every field, human form (like snpguest display, complete) or JSON. product may be
 * _SNP_PRODUCT_INVALID to derive it from CPUID (or print raw TCBs if unknown). */
void snp_report_print(const SnpReport *r, SnpProduct product, FILE *f);
json_t *snp_report_to_json(const SnpReport *r, SnpProduct product);
