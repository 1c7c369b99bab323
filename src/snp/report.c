/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The SEV-SNP ATTESTATION_REPORT, byte for byte (AMD SEV-SNP Firmware ABI, "ATTESTATION_REPORT
 * Structure"; versions 2, 3 and 5), plus TCB_VERSION decoding per product and the printers.
 *
 * Invariants:
 *  - snp_report_parse() accepts only what the ABI allows for the report's version. Every byte
 *    that the ABI marks reserved (must be zero) for that version is checked, so that
 *    snp_report_serialize(snp_report_parse(b)) == b holds for every accepted b: nothing in an
 *    accepted report is silently dropped.
 *  - Offsets are written out as constants taken from the ABI table, not derived from a C struct
 *    layout, so that the compiler's padding can never move a field.
 *  - Nothing here allocates except the JSON builder.
 */
#include "snp/report.h"

#include <inttypes.h>
#include <string.h>
#include <strings.h>

#include "core/bytes.h"
#include "core/encoding.h"
#include "core/log.h"
#include "core/macro.h"

/* Field offsets (ABI table "ATTESTATION_REPORT Structure"). */
enum {
    OFF_VERSION = 0x000,
    OFF_GUEST_SVN = 0x004,
    OFF_POLICY = 0x008,
    OFF_FAMILY_ID = 0x010,
    OFF_IMAGE_ID = 0x020,
    OFF_VMPL = 0x030,
    OFF_SIGNATURE_ALGO = 0x034,
    OFF_CURRENT_TCB = 0x038,
    OFF_PLATFORM_INFO = 0x040,
    OFF_FLAGS = 0x048,
    OFF_RESERVED_04C = 0x04C, /* 4 bytes */
    OFF_REPORT_DATA = 0x050,
    OFF_MEASUREMENT = 0x090,
    OFF_HOST_DATA = 0x0C0,
    OFF_ID_KEY_DIGEST = 0x0E0,
    OFF_AUTHOR_KEY_DIGEST = 0x110,
    OFF_REPORT_ID = 0x140,
    OFF_REPORT_ID_MA = 0x160,
    OFF_REPORTED_TCB = 0x180,
    OFF_CPUID_FAM_ID = 0x188, /* version >= 3 */
    OFF_CPUID_MOD_ID = 0x189,
    OFF_CPUID_STEP = 0x18A,
    OFF_RESERVED_18B = 0x18B, /* ..0x19F */
    OFF_CHIP_ID = 0x1A0,
    OFF_COMMITTED_TCB = 0x1E0,
    OFF_CURRENT_BUILD = 0x1E8,
    OFF_CURRENT_MINOR = 0x1E9,
    OFF_CURRENT_MAJOR = 0x1EA,
    OFF_RESERVED_1EB = 0x1EB,
    OFF_COMMITTED_BUILD = 0x1EC,
    OFF_COMMITTED_MINOR = 0x1ED,
    OFF_COMMITTED_MAJOR = 0x1EE,
    OFF_RESERVED_1EF = 0x1EF,
    OFF_LAUNCH_TCB = 0x1F0,
    OFF_LAUNCH_MIT_VECTOR = 0x1F8,  /* version >= 5 */
    OFF_CURRENT_MIT_VECTOR = 0x200, /* version >= 5 */
    OFF_RESERVED_208 = 0x208,       /* ..0x29F */
    OFF_SIGNATURE_R = 0x2A0,
    OFF_SIGNATURE_S = 0x2E8,
    OFF_SIGNATURE_RESERVED = 0x330, /* ..0x49F */
};

/* ECDSA P-384 r and s are 48 bytes; the rest of each 72-byte component is zero padding. */
#define P384_SCALAR_SIZE 48u

#define SNP_POLICY_KNOWN_MASK                                                                      \
    (SNP_POLICY_ABI_MINOR_MASK | (0xFFull << SNP_POLICY_ABI_MAJOR_SHIFT) | SNP_POLICY_SMT |        \
     SNP_POLICY_RESERVED_1 | SNP_POLICY_MIGRATE_MA | SNP_POLICY_DEBUG | SNP_POLICY_SINGLE_SOCKET | \
     SNP_POLICY_CXL_ALLOW | SNP_POLICY_MEM_AES_256_XTS | SNP_POLICY_RAPL_DIS |                     \
     SNP_POLICY_CIPHERTEXT_HIDING | SNP_POLICY_PAGE_SWAP_DISABLE)
#define SNP_FLAGS_KNOWN_MASK                                                                       \
    (SNP_FLAG_AUTHOR_KEY_EN | SNP_FLAG_MASK_CHIP_KEY | SNP_FLAG_SIGNING_KEY_MASK)

static bool version_supported(uint32_t v) {
    return v == 2 || v == 3 || v == 5;
}

/* A must-be-zero byte range and the name given in errors. first_version: the range is reserved
 * only in reports older than this version (0: in every version). */
static const struct {
    size_t off, len;
    uint32_t before_version;
    const char *name;
} reserved_ranges[] = {
    {OFF_RESERVED_04C, 4, 0, "reserved 0x04C..0x04F"},
    {OFF_CPUID_FAM_ID, 3, 3, "cpuid bytes 0x188..0x18A on a version 2 report"},
    {OFF_RESERVED_18B, OFF_CHIP_ID - OFF_RESERVED_18B, 0, "reserved 0x18B..0x19F"},
    {OFF_RESERVED_1EB, 1, 0, "reserved 0x1EB"},
    {OFF_RESERVED_1EF, 1, 0, "reserved 0x1EF"},
    {OFF_LAUNCH_MIT_VECTOR, 16, 5, "mitigation vectors 0x1F8..0x207 on a report older than v5"},
    {OFF_RESERVED_208, SNP_REPORT_SIGNED_SIZE - OFF_RESERVED_208, 0, "reserved 0x208..0x29F"},
    {OFF_SIGNATURE_R + P384_SCALAR_SIZE, SNP_SIG_COMPONENT_SIZE - P384_SCALAR_SIZE, 0,
     "signature r padding 0x2D0..0x2E7"},
    {OFF_SIGNATURE_S + P384_SCALAR_SIZE, SNP_SIG_COMPONENT_SIZE - P384_SCALAR_SIZE, 0,
     "signature s padding 0x318..0x32F"},
    {OFF_SIGNATURE_RESERVED, SNP_REPORT_SIZE - OFF_SIGNATURE_RESERVED, 0,
     "signature reserved 0x330..0x49F"},
};

static int parse_fail(int r, const char *what, const char **ret_error) {
    log_debug("Rejecting SEV-SNP report: %s.", what);
    if (ret_error)
        *ret_error = what;
    return r;
}

int snp_report_parse(const uint8_t *buf, size_t len, SnpReport *ret, const char **ret_error) {
    SnpReport r = {};

    if (!buf || len != SNP_REPORT_SIZE)
        return parse_fail(-EMSGSIZE, "wrong size (an attestation report is 1184 bytes)", ret_error);

    r.version = bytes_get_le32(buf + OFF_VERSION);
    if (!version_supported(r.version))
        return parse_fail(-EPROTONOSUPPORT, "unsupported report version (not 2, 3 or 5)",
                          ret_error);

    for (size_t i = 0; i < ELEMENTSOF(reserved_ranges); i++) {
        if (reserved_ranges[i].before_version != 0 &&
            r.version >= reserved_ranges[i].before_version)
            continue;
        if (!bytes_is_zero(buf + reserved_ranges[i].off, reserved_ranges[i].len))
            return parse_fail(-EBADMSG, reserved_ranges[i].name, ret_error);
    }

    r.guest_svn = bytes_get_le32(buf + OFF_GUEST_SVN);
    r.policy = bytes_get_le64(buf + OFF_POLICY);
    if (!(r.policy & SNP_POLICY_RESERVED_1))
        return parse_fail(-EBADMSG, "policy bit 17 is clear (must be 1)", ret_error);
    if (r.policy & ~SNP_POLICY_KNOWN_MASK)
        return parse_fail(-EBADMSG, "policy reserved bits 26..63", ret_error);

    memcpy(r.family_id, buf + OFF_FAMILY_ID, sizeof r.family_id);
    memcpy(r.image_id, buf + OFF_IMAGE_ID, sizeof r.image_id);
    r.vmpl = bytes_get_le32(buf + OFF_VMPL);
    if (r.vmpl > 3)
        return parse_fail(-EBADMSG, "vmpl greater than 3", ret_error);
    r.signature_algo = bytes_get_le32(buf + OFF_SIGNATURE_ALGO);
    r.current_tcb = bytes_get_le64(buf + OFF_CURRENT_TCB);
    r.platform_info = bytes_get_le64(buf + OFF_PLATFORM_INFO);

    r.flags = bytes_get_le32(buf + OFF_FLAGS);
    if (r.flags & ~SNP_FLAGS_KNOWN_MASK)
        return parse_fail(-EBADMSG, "flags reserved bits 5..31", ret_error);
    switch (snp_report_signing_key(&r)) {
    case SNP_SIGNING_KEY_VCEK:
    case SNP_SIGNING_KEY_VLEK:
    case SNP_SIGNING_KEY_NONE:
        break;
    default:
        return parse_fail(-EBADMSG, "flags signing_key is a reserved value (2..6)", ret_error);
    }

    memcpy(r.report_data, buf + OFF_REPORT_DATA, sizeof r.report_data);
    memcpy(r.measurement, buf + OFF_MEASUREMENT, sizeof r.measurement);
    memcpy(r.host_data, buf + OFF_HOST_DATA, sizeof r.host_data);
    memcpy(r.id_key_digest, buf + OFF_ID_KEY_DIGEST, sizeof r.id_key_digest);
    memcpy(r.author_key_digest, buf + OFF_AUTHOR_KEY_DIGEST, sizeof r.author_key_digest);
    memcpy(r.report_id, buf + OFF_REPORT_ID, sizeof r.report_id);
    memcpy(r.report_id_ma, buf + OFF_REPORT_ID_MA, sizeof r.report_id_ma);
    r.reported_tcb = bytes_get_le64(buf + OFF_REPORTED_TCB);
    if (r.version >= 3) {
        r.cpuid_fam_id = buf[OFF_CPUID_FAM_ID];
        r.cpuid_mod_id = buf[OFF_CPUID_MOD_ID];
        r.cpuid_step = buf[OFF_CPUID_STEP];
    }
    memcpy(r.chip_id, buf + OFF_CHIP_ID, sizeof r.chip_id);
    r.committed_tcb = bytes_get_le64(buf + OFF_COMMITTED_TCB);
    r.current_build = buf[OFF_CURRENT_BUILD];
    r.current_minor = buf[OFF_CURRENT_MINOR];
    r.current_major = buf[OFF_CURRENT_MAJOR];
    r.committed_build = buf[OFF_COMMITTED_BUILD];
    r.committed_minor = buf[OFF_COMMITTED_MINOR];
    r.committed_major = buf[OFF_COMMITTED_MAJOR];
    r.launch_tcb = bytes_get_le64(buf + OFF_LAUNCH_TCB);
    if (r.version >= 5) {
        r.launch_mit_vector = bytes_get_le64(buf + OFF_LAUNCH_MIT_VECTOR);
        r.current_mit_vector = bytes_get_le64(buf + OFF_CURRENT_MIT_VECTOR);
    }
    memcpy(r.signature_r, buf + OFF_SIGNATURE_R, sizeof r.signature_r);
    memcpy(r.signature_s, buf + OFF_SIGNATURE_S, sizeof r.signature_s);

    /* Checked last: the structure is sound, only the algorithm is not one we know. */
    if (r.signature_algo != SNP_SIG_ALGO_ECDSA_P384_SHA384)
        return parse_fail(-EOPNOTSUPP, "unknown signature algorithm (only 1, ECDSA P-384)",
                          ret_error);

    *ret = r;
    return 0;
}

void snp_report_serialize(const SnpReport *r, uint8_t out[SNP_REPORT_SIZE]) {
    memset(out, 0, SNP_REPORT_SIZE);
    bytes_put_le32(out + OFF_VERSION, r->version);
    bytes_put_le32(out + OFF_GUEST_SVN, r->guest_svn);
    bytes_put_le64(out + OFF_POLICY, r->policy);
    memcpy(out + OFF_FAMILY_ID, r->family_id, sizeof r->family_id);
    memcpy(out + OFF_IMAGE_ID, r->image_id, sizeof r->image_id);
    bytes_put_le32(out + OFF_VMPL, r->vmpl);
    bytes_put_le32(out + OFF_SIGNATURE_ALGO, r->signature_algo);
    bytes_put_le64(out + OFF_CURRENT_TCB, r->current_tcb);
    bytes_put_le64(out + OFF_PLATFORM_INFO, r->platform_info);
    bytes_put_le32(out + OFF_FLAGS, r->flags);
    memcpy(out + OFF_REPORT_DATA, r->report_data, sizeof r->report_data);
    memcpy(out + OFF_MEASUREMENT, r->measurement, sizeof r->measurement);
    memcpy(out + OFF_HOST_DATA, r->host_data, sizeof r->host_data);
    memcpy(out + OFF_ID_KEY_DIGEST, r->id_key_digest, sizeof r->id_key_digest);
    memcpy(out + OFF_AUTHOR_KEY_DIGEST, r->author_key_digest, sizeof r->author_key_digest);
    memcpy(out + OFF_REPORT_ID, r->report_id, sizeof r->report_id);
    memcpy(out + OFF_REPORT_ID_MA, r->report_id_ma, sizeof r->report_id_ma);
    bytes_put_le64(out + OFF_REPORTED_TCB, r->reported_tcb);
    /* Fields a version does not have are reserved there, and reserved bytes are zero. */
    if (r->version >= 3) {
        out[OFF_CPUID_FAM_ID] = r->cpuid_fam_id;
        out[OFF_CPUID_MOD_ID] = r->cpuid_mod_id;
        out[OFF_CPUID_STEP] = r->cpuid_step;
    }
    memcpy(out + OFF_CHIP_ID, r->chip_id, sizeof r->chip_id);
    bytes_put_le64(out + OFF_COMMITTED_TCB, r->committed_tcb);
    out[OFF_CURRENT_BUILD] = r->current_build;
    out[OFF_CURRENT_MINOR] = r->current_minor;
    out[OFF_CURRENT_MAJOR] = r->current_major;
    out[OFF_COMMITTED_BUILD] = r->committed_build;
    out[OFF_COMMITTED_MINOR] = r->committed_minor;
    out[OFF_COMMITTED_MAJOR] = r->committed_major;
    bytes_put_le64(out + OFF_LAUNCH_TCB, r->launch_tcb);
    if (r->version >= 5) {
        bytes_put_le64(out + OFF_LAUNCH_MIT_VECTOR, r->launch_mit_vector);
        bytes_put_le64(out + OFF_CURRENT_MIT_VECTOR, r->current_mit_vector);
    }
    memcpy(out + OFF_SIGNATURE_R, r->signature_r, sizeof r->signature_r);
    memcpy(out + OFF_SIGNATURE_S, r->signature_s, sizeof r->signature_s);
}

/* ---- products and TCBs ---- */

static const char *const product_names[_SNP_PRODUCT_MAX] = {
    [SNP_PRODUCT_MILAN] = "Milan",
    [SNP_PRODUCT_GENOA] = "Genoa",
    [SNP_PRODUCT_TURIN] = "Turin",
};

const char *snp_product_to_string(SnpProduct p) {
    if (p < 0 || p >= _SNP_PRODUCT_MAX)
        return NULL;
    return product_names[p];
}

SnpProduct snp_product_from_string(const char *s) {
    if (!s)
        return _SNP_PRODUCT_INVALID;
    for (SnpProduct p = 0; p < _SNP_PRODUCT_MAX; p++) {
        size_t n = strlen(product_names[p]);
        /* "Milan", "milan", or a stepping suffix as in the VCEK productName: "Milan-B0". */
        if (strncasecmp(s, product_names[p], n) == 0 && (s[n] == '\0' || s[n] == '-'))
            return p;
    }
    return _SNP_PRODUCT_INVALID;
}

SnpProduct snp_product_from_cpuid(uint8_t family, uint8_t model) {
    switch (family) {
    case 0x19: /* Zen 3 / Zen 4 */
        if (model <= 0x0F)
            return SNP_PRODUCT_MILAN;
        if ((model >= 0x10 && model <= 0x1F) || (model >= 0xA0 && model <= 0xAF))
            return SNP_PRODUCT_GENOA;
        return _SNP_PRODUCT_INVALID;
    case 0x1A: /* Zen 5 server parts */
        if (model <= 0x1F)
            return SNP_PRODUCT_TURIN;
        return _SNP_PRODUCT_INVALID;
    default:
        return _SNP_PRODUCT_INVALID;
    }
}

/* Byte positions of each component inside the little-endian u64; -1: absent. */
typedef struct TcbLayout {
    int fmc, bootloader, tee, snp, microcode;
} TcbLayout;

static const TcbLayout *tcb_layout(SnpProduct p) {
    static const TcbLayout milan_genoa = {
        .fmc = -1, .bootloader = 0, .tee = 1, .snp = 6, .microcode = 7};
    static const TcbLayout turin = {.fmc = 0, .bootloader = 1, .tee = 2, .snp = 3, .microcode = 7};
    switch (p) {
    case SNP_PRODUCT_MILAN:
    case SNP_PRODUCT_GENOA:
        return &milan_genoa;
    case SNP_PRODUCT_TURIN:
        return &turin;
    default:
        return NULL;
    }
}

static uint8_t tcb_byte(uint64_t raw, int pos) {
    return pos < 0 ? 0 : (uint8_t)(raw >> (8 * pos));
}

static uint64_t tcb_put(uint8_t v, int pos) {
    return pos < 0 ? 0 : (uint64_t)v << (8 * pos);
}

static uint64_t tcb_used_mask(const TcbLayout *l) {
    return tcb_put(0xFF, l->fmc) | tcb_put(0xFF, l->bootloader) | tcb_put(0xFF, l->tee) |
           tcb_put(0xFF, l->snp) | tcb_put(0xFF, l->microcode);
}

int snp_tcb_decode(uint64_t raw, SnpProduct p, SnpTcb *ret) {
    const TcbLayout *l = tcb_layout(p);
    if (!l)
        return -EINVAL;
    if (raw & ~tcb_used_mask(l))
        return -EBADMSG;
    *ret = (SnpTcb){
        .fmc = tcb_byte(raw, l->fmc),
        .bootloader = tcb_byte(raw, l->bootloader),
        .tee = tcb_byte(raw, l->tee),
        .snp = tcb_byte(raw, l->snp),
        .microcode = tcb_byte(raw, l->microcode),
    };
    return 0;
}

uint64_t snp_tcb_encode(const SnpTcb *t, SnpProduct p) {
    const TcbLayout *l = tcb_layout(p);
    if (!l)
        return 0;
    return tcb_put(t->fmc, l->fmc) | tcb_put(t->bootloader, l->bootloader) |
           tcb_put(t->tee, l->tee) | tcb_put(t->snp, l->snp) | tcb_put(t->microcode, l->microcode);
}

bool snp_tcb_ge(const SnpTcb *a, const SnpTcb *b, SnpProduct p) {
    if (p == SNP_PRODUCT_TURIN && a->fmc < b->fmc)
        return false;
    return a->bootloader >= b->bootloader && a->tee >= b->tee && a->snp >= b->snp &&
           a->microcode >= b->microcode;
}

/* ---- printing ---- */

typedef struct BitName {
    uint64_t bit;
    const char *label; /* human */
    const char *key;   /* JSON */
} BitName;

static const BitName policy_bits[] = {
    {SNP_POLICY_SMT, "SMT allowed", "smt_allowed"},
    {SNP_POLICY_RESERVED_1, "Reserved bit 17 (must be 1)", "reserved_bit17"},
    {SNP_POLICY_MIGRATE_MA, "Migration agent allowed", "migrate_ma_allowed"},
    {SNP_POLICY_DEBUG, "Debug allowed", "debug_allowed"},
    {SNP_POLICY_SINGLE_SOCKET, "Single socket only", "single_socket"},
    {SNP_POLICY_CXL_ALLOW, "CXL allowed", "cxl_allowed"},
    {SNP_POLICY_MEM_AES_256_XTS, "AES-256-XTS required", "mem_aes_256_xts"},
    {SNP_POLICY_RAPL_DIS, "RAPL disabled", "rapl_disabled"},
    {SNP_POLICY_CIPHERTEXT_HIDING, "Ciphertext hiding required", "ciphertext_hiding"},
    {SNP_POLICY_PAGE_SWAP_DISABLE, "Page swap disabled", "page_swap_disabled"},
};

/* PLATFORM_INFO bits (ABI table "PLATFORM_INFO Field"). Unknown bits are shown, not rejected:
 * the firmware adds platform facts in new releases without changing the report version. */
static const BitName platform_bits[] = {
    {SNP_PLATFORM_SMT_EN, "SMT enabled", "smt_enabled"},
    {SNP_PLATFORM_TSME_EN, "TSME enabled", "tsme_enabled"},
    {SNP_PLATFORM_ECC_EN, "ECC memory", "ecc_enabled"},
    {SNP_PLATFORM_RAPL_DIS, "RAPL disabled", "rapl_disabled"},
    {SNP_PLATFORM_CIPHERTEXT_HIDING_EN, "Ciphertext hiding (DRAM)", "ciphertext_hiding_enabled"},
    {SNP_PLATFORM_ALIAS_CHECK_COMPLETE, "Alias check complete", "alias_check_complete"},
    {SNP_PLATFORM_IOMMU_WRITE_SAFE, "IOMMU write safe", "iommu_write_safe"},
    {SNP_PLATFORM_TIO_EN, "SEV-TIO enabled", "tio_enabled"},
};
#define PLATFORM_INFO_KNOWN_MASK UINT64_C(0xFF)

static const char *signing_key_to_string(SnpSigningKey k) {
    switch (k) {
    case SNP_SIGNING_KEY_VCEK:
        return "VCEK";
    case SNP_SIGNING_KEY_VLEK:
        return "VLEK";
    case SNP_SIGNING_KEY_NONE:
        return "none";
    default:
        return "reserved";
    }
}

/* The product used to decode TCBs, and where it came from. */
static SnpProduct effective_product(const SnpReport *r, SnpProduct given, const char **ret_src) {
    if (given >= 0 && given < _SNP_PRODUCT_MAX) {
        *ret_src = "option";
        return given;
    }
    if (r->version >= 3) {
        SnpProduct p = snp_product_from_cpuid(r->cpuid_fam_id, r->cpuid_mod_id);
        if (p >= 0) {
            *ret_src = "cpuid";
            return p;
        }
    }
    *ret_src = NULL;
    return _SNP_PRODUCT_INVALID;
}

static void print_hex(FILE *f, const char *label, const uint8_t *p, size_t n) {
    char hex[2 * 72 + 1];
    hex_encode(p, n, hex);
    fprintf(f, "  %-28s %s\n", label, hex);
}

/* r and s are stored little-endian; printed as big-endian integers (the usual notation). */
static void sig_to_be_hex(const uint8_t le[SNP_SIG_COMPONENT_SIZE],
                          char out[2 * P384_SCALAR_SIZE + 1]) {
    uint8_t be[P384_SCALAR_SIZE];
    for (size_t i = 0; i < P384_SCALAR_SIZE; i++)
        be[i] = le[P384_SCALAR_SIZE - 1 - i];
    hex_encode(be, sizeof be, out);
}

static void print_tcb(FILE *f, const char *label, uint64_t raw, SnpProduct p) {
    SnpTcb t;
    fprintf(f, "  %-28s 0x%016" PRIx64, label, raw);
    if (p < 0) {
        fprintf(f, " (product unknown: raw value only; pass --product to decode)\n");
        return;
    }
    if (snp_tcb_decode(raw, p, &t) < 0) {
        fprintf(f, " (not a valid %s TCB: reserved bytes are non-zero)\n",
                snp_product_to_string(p));
        return;
    }
    fputc('\n', f);
    if (p == SNP_PRODUCT_TURIN)
        fprintf(f, "    %-26s %u\n", "FMC:", t.fmc);
    fprintf(f, "    %-26s %u\n", "Bootloader:", t.bootloader);
    fprintf(f, "    %-26s %u\n", "TEE:", t.tee);
    fprintf(f, "    %-26s %u\n", "SNP firmware:", t.snp);
    fprintf(f, "    %-26s %u\n", "Microcode:", t.microcode);
}

static void print_bits(FILE *f, uint64_t v, const BitName *bits, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char label[64];
        (void)snprintf(label, sizeof label, "%s:", bits[i].label);
        fprintf(f, "    %-26s %s\n", label, (v & bits[i].bit) ? "yes" : "no");
    }
}

static const char *yes_no(bool b) {
    return b ? "yes" : "no";
}

void snp_report_print(const SnpReport *r, SnpProduct product, FILE *f) {
    const char *src = NULL;
    SnpProduct p = effective_product(r, product, &src);
    SnpProduct cpuid_p = r->version >= 3 ? snp_product_from_cpuid(r->cpuid_fam_id, r->cpuid_mod_id)
                                         : _SNP_PRODUCT_INVALID;
    char sig[2 * P384_SCALAR_SIZE + 1];

    fprintf(f, "SEV-SNP attestation report (%u bytes)\n", SNP_REPORT_SIZE);
    if (p >= 0)
        fprintf(f, "  %-28s %s (from %s)\n", "Product:", snp_product_to_string(p),
                streq(src, "cpuid") ? "CPUID" : "--product");
    else
        fprintf(f, "  %-28s unknown (a version %u report carries no CPUID; pass --product)\n",
                "Product:", r->version);
    if (p >= 0 && cpuid_p >= 0 && cpuid_p != p)
        fprintf(f, "  %-28s CPUID says %s, TCBs decoded as %s\n",
                "Warning:", snp_product_to_string(cpuid_p), snp_product_to_string(p));
    fprintf(f, "  %-28s %u\n", "Version:", r->version);
    fprintf(f, "  %-28s %u\n", "Guest SVN:", r->guest_svn);
    fprintf(f, "  %-28s 0x%016" PRIx64 "\n", "Policy:", r->policy);
    fprintf(f, "    %-26s %u.%u\n",
            "Minimum ABI:", (unsigned)((r->policy >> SNP_POLICY_ABI_MAJOR_SHIFT) & 0xFF),
            (unsigned)(r->policy & SNP_POLICY_ABI_MINOR_MASK));
    print_bits(f, r->policy, policy_bits, ELEMENTSOF(policy_bits));
    print_hex(f, "Family ID:", r->family_id, sizeof r->family_id);
    print_hex(f, "Image ID:", r->image_id, sizeof r->image_id);
    fprintf(f, "  %-28s %u\n", "VMPL:", r->vmpl);
    fprintf(f, "  %-28s %u (%s)\n", "Signature algorithm:", r->signature_algo,
            r->signature_algo == SNP_SIG_ALGO_ECDSA_P384_SHA384 ? "ECDSA P-384 with SHA-384"
                                                                : "unknown");
    print_tcb(f, "Current TCB:", r->current_tcb, p);
    fprintf(f, "  %-28s 0x%016" PRIx64 "\n", "Platform info:", r->platform_info);
    print_bits(f, r->platform_info, platform_bits, ELEMENTSOF(platform_bits));
    if (r->platform_info & ~PLATFORM_INFO_KNOWN_MASK)
        fprintf(f, "    %-26s 0x%016" PRIx64 "\n",
                "Unknown bits:", r->platform_info & ~PLATFORM_INFO_KNOWN_MASK);
    fprintf(f, "  %-28s 0x%08x\n", "Flags:", r->flags);
    fprintf(f, "    %-26s %s\n", "Author key enabled:", yes_no(r->flags & SNP_FLAG_AUTHOR_KEY_EN));
    fprintf(f, "    %-26s %s\n", "Mask chip key:", yes_no(r->flags & SNP_FLAG_MASK_CHIP_KEY));
    fprintf(f, "    %-26s %s\n", "Signing key:", signing_key_to_string(snp_report_signing_key(r)));
    print_hex(f, "Report data:", r->report_data, sizeof r->report_data);
    print_hex(f, "Measurement:", r->measurement, sizeof r->measurement);
    print_hex(f, "Host data:", r->host_data, sizeof r->host_data);
    print_hex(f, "ID key digest:", r->id_key_digest, sizeof r->id_key_digest);
    print_hex(f, "Author key digest:", r->author_key_digest, sizeof r->author_key_digest);
    print_hex(f, "Report ID:", r->report_id, sizeof r->report_id);
    print_hex(f, "Report ID (migration agent):", r->report_id_ma, sizeof r->report_id_ma);
    print_tcb(f, "Reported TCB:", r->reported_tcb, p);
    if (r->version >= 3)
        fprintf(f, "  %-28s family 0x%02x, model 0x%02x, stepping 0x%02x (%s)\n",
                "CPUID:", r->cpuid_fam_id, r->cpuid_mod_id, r->cpuid_step,
                cpuid_p >= 0 ? snp_product_to_string(cpuid_p) : "unknown product");
    print_hex(f, "Chip ID:", r->chip_id, sizeof r->chip_id);
    print_tcb(f, "Committed TCB:", r->committed_tcb, p);
    fprintf(f, "  %-28s %u.%u.%u\n", "Current firmware:", r->current_major, r->current_minor,
            r->current_build);
    fprintf(f, "  %-28s %u.%u.%u\n", "Committed firmware:", r->committed_major, r->committed_minor,
            r->committed_build);
    print_tcb(f, "Launch TCB:", r->launch_tcb, p);
    if (r->version >= 5) {
        fprintf(f, "  %-28s 0x%016" PRIx64 "\n", "Launch mitigation vector:", r->launch_mit_vector);
        fprintf(f, "  %-28s 0x%016" PRIx64 "\n",
                "Current mitigation vector:", r->current_mit_vector);
    }
    fprintf(f, "  Signature (big-endian):\n");
    sig_to_be_hex(r->signature_r, sig);
    fprintf(f, "    %-26s %s\n", "R:", sig);
    sig_to_be_hex(r->signature_s, sig);
    fprintf(f, "    %-26s %s\n", "S:", sig);
}

/* ---- JSON ---- */

static int json_set_new(json_t *o, const char *key, json_t *v) {
    /* json_object_set_new() steals v even on failure. */
    if (!v || json_object_set_new(o, key, v) < 0)
        return -ENOMEM;
    return 0;
}

static json_t *json_hex(const uint8_t *p, size_t n) {
    _cleanup_free_ char *hex = hex_encode_alloc(p, n);
    return hex ? json_string(hex) : NULL;
}

static json_t *json_u64_hex(uint64_t v) {
    /* As a string: JSON numbers lose precision above 2^53 in most consumers. */
    char buf[2 + 16 + 1];
    (void)snprintf(buf, sizeof buf, "0x%016" PRIx64, v);
    return json_string(buf);
}

static json_t *json_bits(uint64_t v, const BitName *bits, size_t n) {
    json_auto_t *o = json_object();
    if (!o || json_set_new(o, "raw", json_u64_hex(v)) < 0)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (json_set_new(o, bits[i].key, json_boolean(v & bits[i].bit)) < 0)
            return NULL;
    return json_incref(o);
}

static json_t *json_tcb(uint64_t raw, SnpProduct p) {
    json_auto_t *o = json_object();
    SnpTcb t;
    if (!o || json_set_new(o, "raw", json_u64_hex(raw)) < 0)
        return NULL;
    if (p < 0 || snp_tcb_decode(raw, p, &t) < 0)
        return json_incref(o); /* raw only: no product, or not valid for it */
    if (p == SNP_PRODUCT_TURIN && json_set_new(o, "fmc", json_integer(t.fmc)) < 0)
        return NULL;
    if (json_set_new(o, "bootloader", json_integer(t.bootloader)) < 0 ||
        json_set_new(o, "tee", json_integer(t.tee)) < 0 ||
        json_set_new(o, "snp", json_integer(t.snp)) < 0 ||
        json_set_new(o, "microcode", json_integer(t.microcode)) < 0)
        return NULL;
    return json_incref(o);
}

static json_t *json_version(uint8_t major, uint8_t minor, uint8_t build) {
    char buf[16];
    (void)snprintf(buf, sizeof buf, "%u.%u.%u", major, minor, build);
    return json_string(buf);
}

json_t *snp_report_to_json(const SnpReport *r, SnpProduct product) {
    json_auto_t *o = json_object(), *policy = NULL, *flags = NULL, *sig = NULL;
    const char *src = NULL;
    SnpProduct p = effective_product(r, product, &src);
    char sighex[2 * P384_SCALAR_SIZE + 1];

    if (!o)
        return NULL;
    if (json_set_new(o, "product", p >= 0 ? json_string(snp_product_to_string(p)) : json_null()) <
            0 ||
        json_set_new(o, "product_source", src ? json_string(src) : json_null()) < 0 ||
        json_set_new(o, "version", json_integer(r->version)) < 0 ||
        json_set_new(o, "guest_svn", json_integer(r->guest_svn)) < 0)
        return NULL;

    policy = json_bits(r->policy, policy_bits, ELEMENTSOF(policy_bits));
    if (!policy ||
        json_set_new(policy, "abi_major",
                     json_integer((r->policy >> SNP_POLICY_ABI_MAJOR_SHIFT) & 0xFF)) < 0 ||
        json_set_new(policy, "abi_minor", json_integer(r->policy & SNP_POLICY_ABI_MINOR_MASK)) <
            0 ||
        json_set_new(o, "policy", TAKE_PTR(policy)) < 0)
        return NULL;

    if (json_set_new(o, "family_id", json_hex(r->family_id, sizeof r->family_id)) < 0 ||
        json_set_new(o, "image_id", json_hex(r->image_id, sizeof r->image_id)) < 0 ||
        json_set_new(o, "vmpl", json_integer(r->vmpl)) < 0 ||
        json_set_new(o, "signature_algo", json_integer(r->signature_algo)) < 0 ||
        json_set_new(o, "current_tcb", json_tcb(r->current_tcb, p)) < 0 ||
        json_set_new(o, "platform_info",
                     json_bits(r->platform_info, platform_bits, ELEMENTSOF(platform_bits))) < 0)
        return NULL;

    flags = json_object();
    if (!flags || json_set_new(flags, "raw", json_integer(r->flags)) < 0 ||
        json_set_new(flags, "author_key_en", json_boolean(r->flags & SNP_FLAG_AUTHOR_KEY_EN)) < 0 ||
        json_set_new(flags, "mask_chip_key", json_boolean(r->flags & SNP_FLAG_MASK_CHIP_KEY)) < 0 ||
        json_set_new(flags, "signing_key",
                     json_string(signing_key_to_string(snp_report_signing_key(r)))) < 0 ||
        json_set_new(o, "flags", TAKE_PTR(flags)) < 0)
        return NULL;

    if (json_set_new(o, "report_data", json_hex(r->report_data, sizeof r->report_data)) < 0 ||
        json_set_new(o, "measurement", json_hex(r->measurement, sizeof r->measurement)) < 0 ||
        json_set_new(o, "host_data", json_hex(r->host_data, sizeof r->host_data)) < 0 ||
        json_set_new(o, "id_key_digest", json_hex(r->id_key_digest, sizeof r->id_key_digest)) < 0 ||
        json_set_new(o, "author_key_digest",
                     json_hex(r->author_key_digest, sizeof r->author_key_digest)) < 0 ||
        json_set_new(o, "report_id", json_hex(r->report_id, sizeof r->report_id)) < 0 ||
        json_set_new(o, "report_id_ma", json_hex(r->report_id_ma, sizeof r->report_id_ma)) < 0 ||
        json_set_new(o, "reported_tcb", json_tcb(r->reported_tcb, p)) < 0)
        return NULL;

    if (r->version >= 3) {
        json_t *c = json_pack("{s:i, s:i, s:i}", "family", r->cpuid_fam_id, "model",
                              r->cpuid_mod_id, "stepping", r->cpuid_step);
        if (json_set_new(o, "cpuid", c) < 0)
            return NULL;
    }

    if (json_set_new(o, "chip_id", json_hex(r->chip_id, sizeof r->chip_id)) < 0 ||
        json_set_new(o, "committed_tcb", json_tcb(r->committed_tcb, p)) < 0 ||
        json_set_new(o, "current_version",
                     json_version(r->current_major, r->current_minor, r->current_build)) < 0 ||
        json_set_new(o, "committed_version",
                     json_version(r->committed_major, r->committed_minor, r->committed_build)) <
            0 ||
        json_set_new(o, "launch_tcb", json_tcb(r->launch_tcb, p)) < 0)
        return NULL;

    if (r->version >= 5 &&
        (json_set_new(o, "launch_mit_vector", json_u64_hex(r->launch_mit_vector)) < 0 ||
         json_set_new(o, "current_mit_vector", json_u64_hex(r->current_mit_vector)) < 0))
        return NULL;

    sig = json_object();
    if (!sig)
        return NULL;
    sig_to_be_hex(r->signature_r, sighex);
    if (json_set_new(sig, "r", json_string(sighex)) < 0)
        return NULL;
    sig_to_be_hex(r->signature_s, sighex);
    if (json_set_new(sig, "s", json_string(sighex)) < 0 ||
        json_set_new(o, "signature", TAKE_PTR(sig)) < 0)
        return NULL;

    return json_incref(o);
}
