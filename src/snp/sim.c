/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated SNP firmware (see sim.h for the directory layout).
 *
 * Certificates are built to match AMD's byte for byte where it is observable: names, serial
 * numbers, validity of the real ARK/ASK/ASVK, extension order and value encodings, and the
 * RSASSA-PSS AlgorithmIdentifier (AMD writes the DEFAULT trailerField explicitly in ARK, ASK, ASVK
 * and Milan VCEKs; Genoa and Turin VCEKs and VLEKs omit it). OpenSSL always omits the DEFAULT
 * field, so certificates are assembled here: the TBSCertificate is encoded by OpenSSL with AMD's
 * AlgorithmIdentifier, signed with EVP_DigestSign, and the outer SEQUENCE is written by hand.
 *
 * Invariants: private keys and root secrets are read from DIR/secrets only when needed, kept in
 * EVP_PKEY objects or Secrets, and never written anywhere but DIR/secrets (mode 0600).
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "core/encoding.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/openssl-util.h"
#include "snp/certtable.h"
#include "snp/idblock.h"
#include "snp/sim.h"

#define SIM_CHIP_FORMAT 1
#define SIM_ROOT_SECRET_SIZE 64
#define SIM_MAX_FILE (64u * 1024u)
#define SIM_GFS_VALID_MASK 0x7Full

typedef struct SimProductInfo {
    const char *kds_name;     /* "Milan" */
    const char *product_name; /* VCEK productName extension */
    const char *vlek_product_name;
    unsigned serial_prefix; /* ARK serial = prefix << 16 */
    unsigned ask_serial_low;
    const char *ark_not_before, *ark_not_after;
    const char *ask_not_before, *ask_not_after;
    const char *asvk_not_before, *asvk_not_after;
    int vcek_struct_version;
    bool vcek_explicit_trailer;
    size_t hwid_len;
    uint8_t cpuid_fam, cpuid_mod, cpuid_step;
    uint32_t default_report_version;
    SnpTcb default_tcb;
    uint8_t fw_build, fw_minor, fw_major;
    uint64_t platform_info;
} SimProductInfo;

/* Values from AMD's published certificates (tests/vectors/snp) and real reports. */
static const SimProductInfo product_info[_SNP_PRODUCT_MAX] = {
    [SNP_PRODUCT_MILAN] = {"Milan",
                           "Milan-B0",
                           "Milan",
                           0x01,
                           0x0001,
                           "201022172305Z",
                           "451022172305Z",
                           "201022182420Z",
                           "451022182420Z",
                           "221116224524Z",
                           "471116224524Z",
                           0,
                           true,
                           64,
                           0x19,
                           0x01,
                           0x01,
                           3,
                           {.bootloader = 3, .tee = 0, .snp = 8, .microcode = 115},
                           29,
                           55,
                           1,
                           0x27},
    [SNP_PRODUCT_GENOA] = {"Genoa",
                           "Genoa",
                           "Genoa",
                           0x02,
                           0x0002,
                           "220126153437Z",
                           "470126153437Z",
                           "221031133348Z",
                           "471031133348Z",
                           "221031133348Z",
                           "471031133348Z",
                           0,
                           false,
                           64,
                           0x19,
                           0x11,
                           0x01,
                           3,
                           {.bootloader = 10, .tee = 0, .snp = 23, .microcode = 84},
                           28,
                           55,
                           1,
                           0x25},
    [SNP_PRODUCT_TURIN] = {"Turin",
                           "Turin",
                           "Turin",
                           0x03,
                           0x0001,
                           "230515200312Z",
                           "480515200312Z",
                           "230515202521Z",
                           "480515202521Z",
                           "230515202521Z",
                           "480515202521Z",
                           1,
                           false,
                           8,
                           0x1A,
                           0x02,
                           0x01,
                           5,
                           {.fmc = 1, .bootloader = 1, .tee = 1, .snp = 4, .microcode = 81},
                           65,
                           55,
                           1,
                           0x65},
};

/* RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48; with and without the explicit trailerField 1. */
static const uint8_t pss_algid_trailer[] = {
    0x30, 0x46, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30, 0x39,
    0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
    0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
    0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02,
    0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x30, 0xa3, 0x03, 0x02, 0x01, 0x01};
static const uint8_t pss_algid_plain[] = {
    0x30, 0x41, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0a, 0x30,
    0x34, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04,
    0x02, 0x02, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
    0xf7, 0x0d, 0x01, 0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65,
    0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0xa2, 0x03, 0x02, 0x01, 0x30};

struct SimChip {
    char *dir;
    SnpProduct product;
    bool with_vlek;
    SnpReport launch; /* the template the chip signs (report_data, signature unused) */
    SnpReport saved;  /* launch as last persisted, to see what sim_chip_save must redo */
    X509 *ark, *ask, *vcek, *asvk, *vlek;
    EVP_PKEY *vcek_key, *vlek_key;
    Secret *vcek_root, *vmrk;
};

static const SimProductInfo *info_of(SnpProduct p) {
    return p >= 0 && p < _SNP_PRODUCT_MAX ? &product_info[p] : NULL;
}

static char *path_join(const char *dir, const char *name) {
    char *p = NULL;
    if (asprintf(&p, "%s/%s", dir, name) < 0)
        return NULL;
    return p;
}

/* ---- DER assembly ---- */

static size_t der_len_size(size_t n) {
    return n < 0x80 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 4;
}

static uint8_t *der_put_header(uint8_t *p, uint8_t tag, size_t n) {
    *p++ = tag;
    if (n < 0x80)
        *p++ = (uint8_t)n;
    else if (n < 0x100) {
        *p++ = 0x81;
        *p++ = (uint8_t)n;
    } else if (n < 0x10000) {
        *p++ = 0x82;
        *p++ = (uint8_t)(n >> 8);
        *p++ = (uint8_t)n;
    } else {
        *p++ = 0x83;
        *p++ = (uint8_t)(n >> 16);
        *p++ = (uint8_t)(n >> 8);
        *p++ = (uint8_t)n;
    }
    return p;
}

/* Signs DER-encoded TBS bytes with an RSA key, AMD's way (see the file comment), and assembles
 * SEQUENCE { tbs, signatureAlgorithm, BIT STRING (0 unused bits) }: the outer shape of both a
 * Certificate and a CertificateList. tbs must already carry the same AlgorithmIdentifier. */
static int sign_tbs_pss(const uint8_t *tbs, size_t tbs_len, EVP_PKEY *issuer_key,
                        bool explicit_trailer, uint8_t **ret_der, size_t *ret_len) {
    const uint8_t *algid = explicit_trailer ? pss_algid_trailer : pss_algid_plain;
    size_t algid_len = explicit_trailer ? sizeof(pss_algid_trailer) : sizeof(pss_algid_plain);
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *md = NULL;
    _cleanup_free_ uint8_t *sig = NULL, *der = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    size_t sig_len = 0, body_len, total;
    uint8_t *p;

    md = EVP_MD_CTX_new();
    if (!md)
        return -ENOMEM;
    if (EVP_DigestSignInit_ex(md, &pctx, "SHA384", NULL, NULL, issuer_key, NULL) != 1 ||
        EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 48) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md_name(pctx, "SHA384", NULL) != 1 ||
        EVP_DigestSign(md, NULL, &sig_len, tbs, tbs_len) != 1)
        return nt_openssl_error(-EIO, "PSS sign init");
    sig = malloc(sig_len);
    if (!sig)
        return -ENOMEM;
    if (EVP_DigestSign(md, sig, &sig_len, tbs, tbs_len) != 1)
        return nt_openssl_error(-EIO, "PSS sign");

    body_len = tbs_len + algid_len + 1 + der_len_size(sig_len + 1) + sig_len + 1;
    total = 1 + der_len_size(body_len) + body_len;
    der = malloc(total);
    if (!der)
        return -ENOMEM;
    p = der_put_header(der, 0x30, body_len);
    memcpy(p, tbs, tbs_len);
    p += tbs_len;
    memcpy(p, algid, algid_len);
    p += algid_len;
    p = der_put_header(p, 0x03, sig_len + 1);
    *p++ = 0;
    memcpy(p, sig, sig_len);
    p += sig_len;
    if ((size_t)(p - der) != total)
        return -EIO;
    *ret_der = TAKE_PTR(der);
    *ret_len = total;
    return 0;
}

/* Signs x with the issuer's RSA key, AMD's way (see the file comment). Returns a new X509. */
static int cert_sign_pss(X509 *x, EVP_PKEY *issuer_key, bool explicit_trailer, X509 **ret) {
    const uint8_t *algid = explicit_trailer ? pss_algid_trailer : pss_algid_plain;
    size_t algid_len = explicit_trailer ? sizeof(pss_algid_trailer) : sizeof(pss_algid_plain);
    _cleanup_free_ uint8_t *tbs = NULL, *der = NULL;
    const uint8_t *q;
    X509_ALGOR *tbs_alg, *parsed;
    size_t total = 0;
    int tbs_len, r;

    /* The TBSCertificate's signature field: AMD's AlgorithmIdentifier. OpenSSL has no setter
     * for it outside of its own signing path, hence the cast. */
    q = algid;
    parsed = d2i_X509_ALGOR(NULL, &q, (long)algid_len);
    if (!parsed)
        return nt_openssl_error(-EIO, "d2i_X509_ALGOR");
    tbs_alg = (X509_ALGOR *)X509_get0_tbs_sigalg(x);
    if (X509_ALGOR_copy(tbs_alg, parsed) != 1) {
        X509_ALGOR_free(parsed);
        return nt_openssl_error(-EIO, "X509_ALGOR_copy");
    }
    X509_ALGOR_free(parsed);

    tbs_len = i2d_re_X509_tbs(x, &tbs);
    if (tbs_len <= 0)
        return nt_openssl_error(-EIO, "i2d_re_X509_tbs");
    r = sign_tbs_pss(tbs, (size_t)tbs_len, issuer_key, explicit_trailer, &der, &total);
    if (r < 0)
        return r;

    q = der;
    X509 *out = d2i_X509(NULL, &q, (long)total);
    if (!out)
        return nt_openssl_error(-EIO, "d2i_X509 (assembled certificate)");
    *ret = out;
    return 0;
}

static int name_amd(const char *cn, X509_NAME **ret) {
    _cleanup_(X509_NAME_freep) X509_NAME *n = X509_NAME_new();
    static const char *const keys[] = {"OU", "C", "L", "ST", "O", "CN"};
    const char *vals[] = {"Engineering", "US", "Santa Clara", "CA", "Advanced Micro Devices", cn};

    if (!n)
        return -ENOMEM;
    for (size_t i = 0; i < ELEMENTSOF(keys); i++)
        if (X509_NAME_add_entry_by_txt(n, keys[i], MBSTRING_UTF8, (const uint8_t *)vals[i], -1, -1,
                                       0) != 1)
            return nt_openssl_error(-EIO, "X509_NAME_add_entry");
    *ret = TAKE_PTR(n);
    return 0;
}

static int cert_base(const char *subject_cn, const char *issuer_cn, uint64_t serial, EVP_PKEY *pub,
                     X509 **ret) {
    _cleanup_(X509_freep) X509 *x = X509_new();
    _cleanup_(X509_NAME_freep) X509_NAME *s = NULL, *i = NULL;
    _cleanup_(ASN1_INTEGER_freep) ASN1_INTEGER *sn = ASN1_INTEGER_new();
    int r;

    if (!x || !sn)
        return -ENOMEM;
    r = name_amd(subject_cn, &s);
    if (r < 0)
        return r;
    r = name_amd(issuer_cn, &i);
    if (r < 0)
        return r;
    if (X509_set_version(x, X509_VERSION_3) != 1 || ASN1_INTEGER_set_uint64(sn, serial) != 1 ||
        X509_set_serialNumber(x, sn) != 1 || X509_set_subject_name(x, s) != 1 ||
        X509_set_issuer_name(x, i) != 1 || X509_set_pubkey(x, pub) != 1)
        return nt_openssl_error(-EIO, "certificate fields");
    *ret = TAKE_PTR(x);
    return 0;
}

static int cert_set_validity_str(X509 *x, const char *nb, const char *na) {
    _cleanup_(ASN1_TIME_freep) ASN1_TIME *a = ASN1_TIME_new(), *b = ASN1_TIME_new();
    if (!a || !b)
        return -ENOMEM;
    if (ASN1_TIME_set_string(a, nb) != 1 || ASN1_TIME_set_string(b, na) != 1 ||
        X509_set1_notBefore(x, a) != 1 || X509_set1_notAfter(x, b) != 1)
        return nt_openssl_error(-EIO, "validity");
    return 0;
}

/* notBefore = now, notAfter = the same instant `years` later, as AMD's KDS issues them. */
static int cert_set_validity_years(X509 *x, int years) {
    _cleanup_(ASN1_TIME_freep) ASN1_TIME *a = NULL, *b = NULL;
    time_t now = time(NULL), later;
    struct tm tm;

    if (!gmtime_r(&now, &tm))
        return -EIO;
    tm.tm_year += years;
    later = timegm(&tm);
    a = ASN1_TIME_set(NULL, now);
    b = ASN1_TIME_set(NULL, later);
    if (!a || !b)
        return -ENOMEM;
    if (X509_set1_notBefore(x, a) != 1 || X509_set1_notAfter(x, b) != 1)
        return nt_openssl_error(-EIO, "validity");
    return 0;
}

static int cert_add_conf_ext(X509 *x, X509 *issuer, int nid, const char *value) {
    X509V3_CTX ctx;
    _cleanup_(X509_EXTENSION_freep) X509_EXTENSION *e = NULL;

    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (!e || X509_add_ext(x, e, -1) != 1)
        return nt_openssl_error(-EIO, "X509 extension");
    return 0;
}

/* An AMD extension under 1.3.6.1.4.1.3704.1: the extnValue OCTET STRING holds value[0..n). */
static int cert_add_amd_ext(X509 *x, const char *oid_suffix, const uint8_t *value, size_t n) {
    _cleanup_(ASN1_OBJECT_freep) ASN1_OBJECT *obj = NULL;
    _cleanup_(ASN1_OCTET_STRING_freep) ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    _cleanup_(X509_EXTENSION_freep) X509_EXTENSION *e = NULL;
    char oid[64];

    (void)snprintf(oid, sizeof oid, "1.3.6.1.4.1.3704.1.%s", oid_suffix);
    obj = OBJ_txt2obj(oid, 1);
    if (!obj || !os)
        return -ENOMEM;
    if (ASN1_OCTET_STRING_set(os, value, (int)n) != 1)
        return -ENOMEM;
    e = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, os);
    if (!e || X509_add_ext(x, e, -1) != 1)
        return nt_openssl_error(-EIO, "AMD extension");
    return 0;
}

/* The value is a DER INTEGER, as AMD writes it (02 01 00, 02 02 00 d9, ...). */
static int cert_add_amd_int(X509 *x, const char *oid_suffix, uint64_t v) {
    _cleanup_(ASN1_INTEGER_freep) ASN1_INTEGER *i = ASN1_INTEGER_new();
    _cleanup_free_ uint8_t *der = NULL;
    int n;

    if (!i || ASN1_INTEGER_set_uint64(i, v) != 1)
        return -ENOMEM;
    n = i2d_ASN1_INTEGER(i, &der);
    if (n <= 0)
        return nt_openssl_error(-EIO, "i2d_ASN1_INTEGER");
    return cert_add_amd_ext(x, oid_suffix, der, (size_t)n);
}

/* The value is a DER IA5String (16 len chars). */
static int cert_add_amd_ia5(X509 *x, const char *oid_suffix, const char *s) {
    _cleanup_(ASN1_IA5STRING_freep) ASN1_IA5STRING *a = ASN1_IA5STRING_new();
    _cleanup_free_ uint8_t *der = NULL;
    int n;

    if (!a || ASN1_STRING_set(a, s, -1) != 1)
        return -ENOMEM;
    n = i2d_ASN1_IA5STRING(a, &der);
    if (n <= 0)
        return nt_openssl_error(-EIO, "i2d_ASN1_IA5STRING");
    return cert_add_amd_ext(x, oid_suffix, der, (size_t)n);
}

static const char *crl_url(SnpProduct p, bool vlek, char *buf, size_t n) {
    (void)snprintf(buf, n, "URI:https://kdsintf.amd.com/%s/v1/%s/crl", vlek ? "vlek" : "vcek",
                   product_info[p].kds_name);
    return buf;
}

typedef struct ConfExt {
    int nid;
    const char *value; /* OpenSSL config syntax, e.g. "critical,CA:TRUE" */
} ConfExt;

/* The common end of the CA certificates (ARK, ASK, ASVK): validity, the extensions in the
 * given order (the order of AMD's real certificates), and the RSA-PSS signature with AMD's
 * explicit-trailer AlgorithmIdentifier. issuer is NULL for self-signed. */
static int cert_finish_ca(X509 *x, X509 *issuer, const char *not_before, const char *not_after,
                          const ConfExt *exts, size_t n_exts, EVP_PKEY *sign_key, X509 **ret) {
    int r = cert_set_validity_str(x, not_before, not_after);
    for (size_t i = 0; i < n_exts && r >= 0; i++)
        r = cert_add_conf_ext(x, issuer, exts[i].nid, exts[i].value);
    if (r < 0)
        return r;
    return cert_sign_pss(x, sign_key, true, ret);
}

static int make_ark(SnpProduct p, EVP_PKEY *key, X509 **ret) {
    const SimProductInfo *pi = &product_info[p];
    _cleanup_(X509_freep) X509 *x = NULL;
    char cn[32], url[96];
    int r;

    (void)snprintf(cn, sizeof cn, "ARK-%s", pi->kds_name);
    r = cert_base(cn, cn, (uint64_t)pi->serial_prefix << 16, key, &x);
    if (r < 0)
        return r;
    const ConfExt exts[] = {
        {NID_key_usage, "critical,keyCertSign,cRLSign"},
        {NID_subject_key_identifier, "hash"},
        {NID_basic_constraints, "critical,CA:TRUE"},
        {NID_crl_distribution_points, crl_url(p, false, url, sizeof url)},
    };
    return cert_finish_ca(x, NULL, pi->ark_not_before, pi->ark_not_after, exts, ELEMENTSOF(exts),
                          key, ret);
}

/* ASK (vlek=false) or ASVK (vlek=true), signed by the ARK. */
static int make_ask(SnpProduct p, bool vlek, EVP_PKEY *key, X509 *ark, EVP_PKEY *ark_key,
                    X509 **ret) {
    const SimProductInfo *pi = &product_info[p];
    _cleanup_(X509_freep) X509 *x = NULL;
    char cn[32], ark_cn[32], url[96];
    uint64_t serial = ((uint64_t)pi->serial_prefix << 16) | (vlek ? 0x0101u : pi->ask_serial_low);
    int r;

    (void)snprintf(cn, sizeof cn, vlek ? "SEV-VLEK-%s" : "SEV-%s", pi->kds_name);
    (void)snprintf(ark_cn, sizeof ark_cn, "ARK-%s", pi->kds_name);
    r = cert_base(cn, ark_cn, serial, key, &x);
    if (r < 0)
        return r;
    const ConfExt exts[] = {
        {NID_subject_key_identifier, "hash"},
        {NID_authority_key_identifier, "keyid:always"},
        {NID_basic_constraints, "critical,CA:TRUE,pathlen:0"},
        {NID_key_usage, "critical,keyCertSign"},
        {NID_crl_distribution_points, crl_url(p, vlek, url, sizeof url)},
    };
    return cert_finish_ca(x, ark, vlek ? pi->asvk_not_before : pi->ask_not_before,
                          vlek ? pi->asvk_not_after : pi->ask_not_after, exts, ELEMENTSOF(exts),
                          ark_key, ret);
}

/* VCEK (vlek=false: hwID = chip id) or VLEK (cspID instead of hwID), SPLs = reported TCB. */
static int make_vcek(SnpProduct p, bool vlek, const SnpReport *launch, EVP_PKEY *key,
                     EVP_PKEY *ask_key, X509 **ret) {
    const SimProductInfo *pi = &product_info[p];
    _cleanup_(X509_freep) X509 *x = NULL;
    char issuer_cn[32];
    uint8_t b[8];
    int r;

    for (size_t i = 0; i < 8; i++)
        b[i] = (uint8_t)(launch->reported_tcb >> (8 * i));
    (void)snprintf(issuer_cn, sizeof issuer_cn, vlek ? "SEV-VLEK-%s" : "SEV-%s", pi->kds_name);
    r = cert_base(vlek ? "SEV-VLEK" : "SEV-VCEK", issuer_cn, 0, key, &x);
    if (r < 0)
        return r;
    r = cert_set_validity_years(x, vlek ? 1 : 7);
    if (r >= 0)
        r = cert_add_amd_int(x, "1", (uint64_t)pi->vcek_struct_version);
    if (r >= 0)
        r = cert_add_amd_ia5(x, "2", vlek ? pi->vlek_product_name : pi->product_name);
    if (r < 0)
        return r;
    if (p == SNP_PRODUCT_TURIN) {
        /* TCB bytes: [0] FMC [1] BL [2] TEE [3] SNP [4..6] reserved [7] ucode. */
        static const char *const order[] = {"3.9", "3.1", "3.2", "3.3", "3.5", "3.6", "3.7"};
        for (size_t i = 0; i < ELEMENTSOF(order) && r >= 0; i++)
            r = cert_add_amd_int(x, order[i], b[i]);
    } else {
        /* TCB bytes: [0] BL [1] TEE [2..5] reserved (spl_4..spl_7) [6] SNP [7] ucode. */
        static const char *const order[] = {"3.1", "3.2", "3.4", "3.5", "3.6", "3.7", "3.3"};
        for (size_t i = 0; i < ELEMENTSOF(order) && r >= 0; i++)
            r = cert_add_amd_int(x, order[i], b[i]);
    }
    if (r >= 0)
        r = cert_add_amd_int(x, "3.8", b[7]);
    if (r >= 0) {
        if (vlek)
            r = cert_add_amd_ia5(x, "5", "CN=nitride-sim.invalid");
        else
            r = cert_add_amd_ext(x, "4", launch->chip_id, pi->hwid_len);
    }
    if (r < 0)
        return r;
    return cert_sign_pss(x, ask_key, vlek ? false : pi->vcek_explicit_trailer, ret);
}

/* ---- files ---- */

static int write_pem_cert(const char *dir, const char *name, X509 *x) {
    _cleanup_(BIO_free_allp) BIO *b = BIO_new(BIO_s_mem());
    _cleanup_free_ char *path = path_join(dir, name);
    char *data;
    long n;

    if (!b || !path)
        return -ENOMEM;
    if (PEM_write_bio_X509(b, x) != 1)
        return nt_openssl_error(-EIO, "PEM_write_bio_X509");
    n = BIO_get_mem_data(b, &data);
    return write_file_atomic(path, data, (size_t)n, 0644);
}

static int write_private_key(const char *dir, const char *name, EVP_PKEY *k) {
    _cleanup_(BIO_free_allp) BIO *b = BIO_new(BIO_s_secmem());
    _cleanup_free_ char *path = path_join(dir, name);
    char *data;
    long n;

    if (!b || !path)
        return -ENOMEM;
    if (PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL) != 1)
        return nt_openssl_error(-EIO, "PEM_write_bio_PrivateKey");
    n = BIO_get_mem_data(b, &data);
    return write_file_atomic(path, data, (size_t)n, 0600);
}

static int read_cert(const char *dir, const char *name, X509 **ret) {
    _cleanup_free_ char *path = path_join(dir, name);
    _cleanup_free_ uint8_t *buf = NULL;
    _cleanup_(BIO_free_allp) BIO *b = NULL;
    size_t len = 0;
    X509 *x;
    int r;

    if (!path)
        return -ENOMEM;
    r = read_full_file(path, SIM_MAX_FILE, &buf, &len);
    if (r < 0)
        return r;
    b = BIO_new_mem_buf(buf, (int)len);
    if (!b)
        return -ENOMEM;
    x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    if (!x)
        return nt_openssl_error(-EBADMSG, path);
    *ret = x;
    return 0;
}

static int read_private_key(const char *secrets, const char *name, EVP_PKEY **ret) {
    _cleanup_free_ char *path = path_join(secrets, name);
    _cleanup_(BIO_free_allp) BIO *b = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    EVP_PKEY *k;
    int r;

    if (!path)
        return -ENOMEM;
    r = read_full_file(path, SIM_MAX_FILE, &buf, &len);
    if (r < 0)
        return r;
    b = BIO_new_mem_buf(buf, (int)len);
    k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free_all(TAKE_PTR(b));
    explicit_bzero(buf, len);
    free(buf);
    if (!k)
        return nt_openssl_error(-EBADMSG, "private key");
    *ret = k;
    return 0;
}

static int read_secret_file(const char *secrets, const char *name, Secret **ret) {
    _cleanup_free_ char *path = path_join(secrets, name);
    _cleanup_close_ int fd = -EBADF;
    _cleanup_(secret_freep) Secret *s = NULL;
    int r;

    if (!path)
        return -ENOMEM;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return negative_errno();
    r = secret_new(SIM_ROOT_SECRET_SIZE, &s);
    if (r < 0)
        return r;
    r = read_exact(fd, secret_data(s), SIM_ROOT_SECRET_SIZE);
    if (r < 0)
        return r == -EPIPE ? -EBADMSG : r;
    *ret = TAKE_PTR(s);
    return 0;
}

static int new_root_secret(const char *secrets, const char *name, Secret **ret) {
    _cleanup_(secret_freep) Secret *s = NULL;
    _cleanup_free_ char *path = path_join(secrets, name);
    int r;

    if (!path)
        return -ENOMEM;
    r = secret_new(SIM_ROOT_SECRET_SIZE, &s);
    if (r < 0)
        return r;
    if (RAND_priv_bytes(secret_data(s), SIM_ROOT_SECRET_SIZE) != 1)
        return nt_openssl_error(-EIO, "RAND_priv_bytes");
    r = write_file_atomic(path, secret_const_data(s), SIM_ROOT_SECRET_SIZE, 0600);
    if (r < 0)
        return r;
    if (ret)
        *ret = TAKE_PTR(s);
    return 0;
}

/* ---- chip.json ---- */

static int json_set_hex(json_t *o, const char *k, const uint8_t *b, size_t n) {
    _cleanup_free_ char *h = hex_encode_alloc(b, n);
    if (!h || json_object_set_new(o, k, json_string(h)) < 0)
        return -ENOMEM;
    return 0;
}

static int json_set_u64(json_t *o, const char *k, uint64_t v) {
    char buf[32];
    (void)snprintf(buf, sizeof buf, "0x%016" PRIx64, v);
    return json_object_set_new(o, k, json_string(buf)) < 0 ? -ENOMEM : 0;
}

static int json_set_uint(json_t *o, const char *k, uint64_t v) {
    return json_object_set_new(o, k, json_integer((json_int_t)v)) < 0 ? -ENOMEM : 0;
}

static int json_get_hex(json_t *o, const char *k, uint8_t *b, size_t n) {
    json_t *v = json_object_get(o, k);
    if (!json_is_string(v))
        return -EBADMSG;
    return hex_decode_exact(json_string_value(v), b, n);
}

static int json_get_u64(json_t *o, const char *k, uint64_t *ret) {
    json_t *v = json_object_get(o, k);
    const char *s;
    char *end = NULL;
    unsigned long long x;

    if (!json_is_string(v))
        return -EBADMSG;
    s = json_string_value(v);
    if (strncmp(s, "0x", 2) != 0 || strlen(s) != 18)
        return -EBADMSG;
    errno = 0;
    x = strtoull(s + 2, &end, 16);
    if (errno != 0 || !end || *end)
        return -EBADMSG;
    *ret = x;
    return 0;
}

static int json_get_uint(json_t *o, const char *k, uint64_t max, uint64_t *ret) {
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v) || json_integer_value(v) < 0 || (uint64_t)json_integer_value(v) > max)
        return -EBADMSG;
    *ret = (uint64_t)json_integer_value(v);
    return 0;
}

static const char *signing_key_name(const SnpReport *r) {
    return snp_report_signing_key(r) == SNP_SIGNING_KEY_VLEK ? "vlek" : "vcek";
}

static int chip_to_json(const SimChip *c, json_t **ret) {
    _cleanup_(json_decrefp) json_t *o = json_object();
    const SnpReport *l = &c->launch;
    int r = 0;

    if (!o)
        return -ENOMEM;
#define CHK(x)                                                                                     \
    do {                                                                                           \
        if (r >= 0)                                                                                \
            r = (x);                                                                               \
    } while (0)
    CHK(json_set_uint(o, "format", SIM_CHIP_FORMAT));
    CHK(json_object_set_new(o, "product", json_string(product_info[c->product].kds_name)) < 0
            ? -ENOMEM
            : 0);
    CHK(json_object_set_new(o, "vlek", json_boolean(c->with_vlek)) < 0 ? -ENOMEM : 0);
    CHK(json_object_set_new(o, "signing_key", json_string(signing_key_name(l))) < 0 ? -ENOMEM : 0);
    CHK(json_object_set_new(o, "mask_chip_id", json_boolean(l->flags & SNP_FLAG_MASK_CHIP_KEY)) < 0
            ? -ENOMEM
            : 0);
    CHK(json_object_set_new(o, "author_key_en", json_boolean(l->flags & SNP_FLAG_AUTHOR_KEY_EN)) < 0
            ? -ENOMEM
            : 0);
    CHK(json_set_uint(o, "report_version", l->version));
    CHK(json_set_hex(o, "chip_id", l->chip_id, sizeof l->chip_id));
    CHK(json_set_uint(o, "guest_svn", l->guest_svn));
    CHK(json_set_u64(o, "policy", l->policy));
    CHK(json_set_hex(o, "family_id", l->family_id, 16));
    CHK(json_set_hex(o, "image_id", l->image_id, 16));
    CHK(json_set_uint(o, "vmpl", l->vmpl));
    CHK(json_set_u64(o, "platform_info", l->platform_info));
    CHK(json_set_hex(o, "measurement", l->measurement, 48));
    CHK(json_set_hex(o, "host_data", l->host_data, 32));
    CHK(json_set_hex(o, "id_key_digest", l->id_key_digest, 48));
    CHK(json_set_hex(o, "author_key_digest", l->author_key_digest, 48));
    CHK(json_set_hex(o, "report_id", l->report_id, 32));
    CHK(json_set_hex(o, "report_id_ma", l->report_id_ma, 32));
    CHK(json_set_u64(o, "current_tcb", l->current_tcb));
    CHK(json_set_u64(o, "reported_tcb", l->reported_tcb));
    CHK(json_set_u64(o, "committed_tcb", l->committed_tcb));
    CHK(json_set_u64(o, "launch_tcb", l->launch_tcb));
    CHK(json_set_uint(o, "cpuid_fam_id", l->cpuid_fam_id));
    CHK(json_set_uint(o, "cpuid_mod_id", l->cpuid_mod_id));
    CHK(json_set_uint(o, "cpuid_step", l->cpuid_step));
    CHK(json_set_uint(o, "current_build", l->current_build));
    CHK(json_set_uint(o, "current_minor", l->current_minor));
    CHK(json_set_uint(o, "current_major", l->current_major));
    CHK(json_set_uint(o, "committed_build", l->committed_build));
    CHK(json_set_uint(o, "committed_minor", l->committed_minor));
    CHK(json_set_uint(o, "committed_major", l->committed_major));
    CHK(json_set_u64(o, "launch_mit_vector", l->launch_mit_vector));
    CHK(json_set_u64(o, "current_mit_vector", l->current_mit_vector));
#undef CHK
    if (r < 0)
        return r;
    *ret = TAKE_PTR(o);
    return 0;
}

static int chip_from_json(json_t *o, SimChip *c) {
    SnpReport *l = &c->launch;
    const char *s;
    uint64_t v = 0, fmt = 0;
    int r;

    r = json_get_uint(o, "format", 1000, &fmt);
    if (r < 0 || fmt != SIM_CHIP_FORMAT)
        return -EBADMSG;
    s = json_string_value(json_object_get(o, "product"));
    if (!s)
        return -EBADMSG;
    c->product = snp_product_from_string(s);
    if (c->product < 0 || c->product >= _SNP_PRODUCT_MAX)
        return -EBADMSG;
    if (!json_is_boolean(json_object_get(o, "vlek")) ||
        !json_is_boolean(json_object_get(o, "mask_chip_id")) ||
        !json_is_boolean(json_object_get(o, "author_key_en")))
        return -EBADMSG;
    c->with_vlek = json_is_true(json_object_get(o, "vlek"));
    s = json_string_value(json_object_get(o, "signing_key"));
    if (!s || (!streq(s, "vcek") && !streq(s, "vlek")) || (streq(s, "vlek") && !c->with_vlek))
        return -EBADMSG;

    memset(l, 0, sizeof *l);
    l->signature_algo = SNP_SIG_ALGO_ECDSA_P384_SHA384;
    l->flags = (streq(s, "vlek") ? (uint32_t)SNP_SIGNING_KEY_VLEK : 0u)
               << SNP_FLAG_SIGNING_KEY_SHIFT;
    if (json_is_true(json_object_get(o, "mask_chip_id")))
        l->flags |= SNP_FLAG_MASK_CHIP_KEY;
    if (json_is_true(json_object_get(o, "author_key_en")))
        l->flags |= SNP_FLAG_AUTHOR_KEY_EN;

#define U(k, max, field)                                                                           \
    do {                                                                                           \
        if (json_get_uint(o, k, max, &v) < 0)                                                      \
            return -EBADMSG;                                                                       \
        field = (__typeof__(field))v;                                                              \
    } while (0)
#define X(k, field)                                                                                \
    do {                                                                                           \
        if (json_get_u64(o, k, &v) < 0)                                                            \
            return -EBADMSG;                                                                       \
        field = v;                                                                                 \
    } while (0)
#define H(k, field)                                                                                \
    do {                                                                                           \
        if (json_get_hex(o, k, field, sizeof(field)) < 0)                                          \
            return -EBADMSG;                                                                       \
    } while (0)
    U("report_version", 5, l->version);
    if (l->version != 2 && l->version != 3 && l->version != 5)
        return -EBADMSG;
    H("chip_id", l->chip_id);
    U("guest_svn", UINT32_MAX, l->guest_svn);
    X("policy", l->policy);
    H("family_id", l->family_id);
    H("image_id", l->image_id);
    U("vmpl", 3, l->vmpl);
    X("platform_info", l->platform_info);
    H("measurement", l->measurement);
    H("host_data", l->host_data);
    H("id_key_digest", l->id_key_digest);
    H("author_key_digest", l->author_key_digest);
    H("report_id", l->report_id);
    H("report_id_ma", l->report_id_ma);
    X("current_tcb", l->current_tcb);
    X("reported_tcb", l->reported_tcb);
    X("committed_tcb", l->committed_tcb);
    X("launch_tcb", l->launch_tcb);
    U("cpuid_fam_id", 0xFF, l->cpuid_fam_id);
    U("cpuid_mod_id", 0xFF, l->cpuid_mod_id);
    U("cpuid_step", 0xFF, l->cpuid_step);
    U("current_build", 0xFF, l->current_build);
    U("current_minor", 0xFF, l->current_minor);
    U("current_major", 0xFF, l->current_major);
    U("committed_build", 0xFF, l->committed_build);
    U("committed_minor", 0xFF, l->committed_minor);
    U("committed_major", 0xFF, l->committed_major);
    X("launch_mit_vector", l->launch_mit_vector);
    X("current_mit_vector", l->current_mit_vector);
#undef U
#undef X
#undef H
    return 0;
}

static int chip_write_json(const SimChip *c) {
    _cleanup_(json_decrefp) json_t *o = NULL;
    _cleanup_free_ char *path = path_join(c->dir, "chip.json");
    _cleanup_free_ char *text = NULL;
    int r;

    if (!path)
        return -ENOMEM;
    r = chip_to_json(c, &o);
    if (r < 0)
        return r;
    text = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text)
        return -ENOMEM;
    return write_file_atomic(path, text, strlen(text), 0644);
}

/* ---- public API ---- */

SimChip *sim_chip_free(SimChip *c) {
    if (!c)
        return NULL;
    free(c->dir);
    X509_free(c->ark);
    X509_free(c->ask);
    X509_free(c->vcek);
    X509_free(c->asvk);
    X509_free(c->vlek);
    EVP_PKEY_free(c->vcek_key);
    EVP_PKEY_free(c->vlek_key);
    secret_free(c->vcek_root);
    secret_free(c->vmrk);
    explicit_bzero(c, sizeof *c);
    free(c);
    return NULL;
}

/* 0 if dir is missing or an empty directory; -EEXIST if it holds anything. */
static int dir_check_empty(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *de;
    int r = 0;

    if (!d)
        return errno == ENOENT ? 0 : negative_errno();
    while ((de = readdir(d)))
        if (!streq(de->d_name, ".") && !streq(de->d_name, "..")) {
            r = -EEXIST;
            break;
        }
    closedir(d);
    return r;
}

/* Undoes a failed sim_chip_init: removes exactly the files it may have written. */
static void chip_files_remove(const char *dir, bool remove_dir) {
    static const char *const names[] = {
        "chip.json",        "ark.pem",          "ask.pem",          "vcek.pem",
        "asvk.pem",         "vlek.pem",         "secrets/ark.key",  "secrets/ask.key",
        "secrets/vcek.key", "secrets/asvk.key", "secrets/vlek.key", "secrets/vcek-root.bin",
        "secrets/vmrk.bin",
    };
    for (size_t i = 0; i < ELEMENTSOF(names); i++) {
        _cleanup_free_ char *p = path_join(dir, names[i]);
        if (p)
            (void)unlink(p);
    }
    _cleanup_free_ char *s = path_join(dir, "secrets");
    if (s)
        (void)rmdir(s);
    if (remove_dir)
        (void)rmdir(dir);
}

static void launch_defaults(SnpProduct p, uint32_t version, const uint8_t *chip_id, SnpReport *l) {
    const SimProductInfo *pi = &product_info[p];
    uint64_t tcb = snp_tcb_encode(&pi->default_tcb, p);

    memset(l, 0, sizeof *l);
    l->version = version;
    l->policy = SNP_POLICY_SMT | SNP_POLICY_RESERVED_1;
    l->signature_algo = SNP_SIG_ALGO_ECDSA_P384_SHA384;
    l->platform_info = pi->platform_info;
    l->current_tcb = l->reported_tcb = l->committed_tcb = l->launch_tcb = tcb;
    memcpy(l->chip_id, chip_id, pi->hwid_len);
    memset(l->report_id_ma, 0xFF, sizeof l->report_id_ma);
    /* Kept in the template whatever the version; a version 2 report leaves them out. */
    l->cpuid_fam_id = pi->cpuid_fam;
    l->cpuid_mod_id = pi->cpuid_mod;
    l->cpuid_step = pi->cpuid_step;
    l->current_build = l->committed_build = pi->fw_build;
    l->current_minor = l->committed_minor = pi->fw_minor;
    l->current_major = l->committed_major = pi->fw_major;
    l->launch_mit_vector = l->current_mit_vector = 0x3F; /* reported from version 5 on */
}

static int chip_init(const char *dir, const SimInitOptions *opts, bool *started, bool *created) {
    _cleanup_(sim_chip_freep) SimChip *c = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *ark_key = NULL, *ask_key = NULL, *asvk_key = NULL;
    _cleanup_free_ char *secrets = NULL;
    const SimProductInfo *pi;
    uint8_t chip_id[64] = {0};
    uint32_t version;
    int r;

    if (!dir || !opts || !(pi = info_of(opts->product)))
        return -EINVAL;
    version = opts->report_version ? opts->report_version : pi->default_report_version;
    if (version != 2 && version != 3 && version != 5)
        return -EINVAL;
    r = dir_check_empty(dir);
    if (r < 0)
        return r;
    *created = access(dir, F_OK) < 0;
    *started = true; /* from here on, everything written is ours to remove on failure */

    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->dir = strdup(dir);
    secrets = path_join(dir, "secrets");
    if (!c->dir || !secrets)
        return -ENOMEM;
    c->product = opts->product;
    c->with_vlek = opts->with_vlek;
    r = mkdir_p(dir, 0755);
    if (r < 0)
        return r;
    if (mkdir(secrets, 0700) < 0)
        return negative_errno();

    if (RAND_bytes(chip_id, (int)pi->hwid_len) != 1)
        return nt_openssl_error(-EIO, "RAND_bytes");
    launch_defaults(opts->product, version, chip_id, &c->launch);
    if (RAND_bytes(c->launch.report_id, sizeof c->launch.report_id) != 1)
        return nt_openssl_error(-EIO, "RAND_bytes");

    ark_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096);
    ask_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096);
    c->vcek_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    if (!ark_key || !ask_key || !c->vcek_key)
        return nt_openssl_error(-EIO, "key generation");
    r = make_ark(c->product, ark_key, &c->ark);
    if (r >= 0)
        r = make_ask(c->product, false, ask_key, c->ark, ark_key, &c->ask);
    if (r >= 0)
        r = make_vcek(c->product, false, &c->launch, c->vcek_key, ask_key, &c->vcek);
    if (r < 0)
        return r;
    if (c->with_vlek) {
        asvk_key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)4096);
        c->vlek_key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
        if (!asvk_key || !c->vlek_key)
            return nt_openssl_error(-EIO, "key generation");
        r = make_ask(c->product, true, asvk_key, c->ark, ark_key, &c->asvk);
        if (r >= 0)
            r = make_vcek(c->product, true, &c->launch, c->vlek_key, asvk_key, &c->vlek);
        if (r < 0)
            return r;
    }

    /* Secrets first: a chip.json without its keys would be a corrupt chip. */
    r = write_private_key(secrets, "ark.key", ark_key);
    if (r >= 0)
        r = write_private_key(secrets, "ask.key", ask_key);
    if (r >= 0)
        r = write_private_key(secrets, "vcek.key", c->vcek_key);
    if (r >= 0 && c->with_vlek)
        r = write_private_key(secrets, "asvk.key", asvk_key);
    if (r >= 0 && c->with_vlek)
        r = write_private_key(secrets, "vlek.key", c->vlek_key);
    if (r >= 0)
        r = new_root_secret(secrets, "vcek-root.bin", NULL);
    if (r >= 0)
        r = new_root_secret(secrets, "vmrk.bin", NULL);
    if (r >= 0)
        r = write_pem_cert(dir, "ark.pem", c->ark);
    if (r >= 0)
        r = write_pem_cert(dir, "ask.pem", c->ask);
    if (r >= 0)
        r = write_pem_cert(dir, "vcek.pem", c->vcek);
    if (r >= 0 && c->with_vlek)
        r = write_pem_cert(dir, "asvk.pem", c->asvk);
    if (r >= 0 && c->with_vlek)
        r = write_pem_cert(dir, "vlek.pem", c->vlek);
    if (r >= 0)
        r = chip_write_json(c);
    if (r < 0)
        return r;
    log_debug("Created simulated %s chip in '%s'.", pi->kds_name, dir);
    return 0;
}

int sim_chip_init(const char *dir, const SimInitOptions *opts) {
    bool started = false, created = false;
    int r = chip_init(dir, opts, &started, &created);
    if (r < 0 && started)
        chip_files_remove(dir, created);
    return r;
}

int sim_chip_load(const char *dir, SimChip **ret) {
    _cleanup_(sim_chip_freep) SimChip *c = NULL;
    _cleanup_free_ char *path = NULL, *secrets = NULL;
    _cleanup_free_ uint8_t *text = NULL;
    _cleanup_(json_decrefp) json_t *o = NULL;
    size_t len = 0;
    int r;

    if (!dir || !ret)
        return -EINVAL;
    path = path_join(dir, "chip.json");
    secrets = path_join(dir, "secrets");
    c = calloc(1, sizeof *c);
    if (!path || !secrets || !c)
        return -ENOMEM;
    c->dir = strdup(dir);
    if (!c->dir)
        return -ENOMEM;
    r = read_full_file(path, SIM_MAX_FILE, &text, &len);
    if (r < 0)
        return r;
    o = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, NULL);
    if (!o)
        return -EBADMSG;
    r = chip_from_json(o, c);
    if (r < 0)
        return r;
    c->saved = c->launch;

    r = read_cert(dir, "ark.pem", &c->ark);
    if (r >= 0)
        r = read_cert(dir, "ask.pem", &c->ask);
    if (r >= 0)
        r = read_cert(dir, "vcek.pem", &c->vcek);
    if (r >= 0)
        r = read_private_key(secrets, "vcek.key", &c->vcek_key);
    if (r >= 0 && c->with_vlek)
        r = read_cert(dir, "asvk.pem", &c->asvk);
    if (r >= 0 && c->with_vlek)
        r = read_cert(dir, "vlek.pem", &c->vlek);
    if (r >= 0 && c->with_vlek)
        r = read_private_key(secrets, "vlek.key", &c->vlek_key);
    if (r >= 0)
        r = read_secret_file(secrets, "vcek-root.bin", &c->vcek_root);
    if (r >= 0)
        r = read_secret_file(secrets, "vmrk.bin", &c->vmrk);
    if (r < 0)
        return r == -ENOENT ? -EBADMSG : r;
    /* The certified key must be the signing key: catches mixed-up chip directories. */
    if (EVP_PKEY_eq(X509_get0_pubkey(c->vcek), c->vcek_key) != 1 ||
        (c->with_vlek && EVP_PKEY_eq(X509_get0_pubkey(c->vlek), c->vlek_key) != 1))
        return -EBADMSG;
    *ret = TAKE_PTR(c);
    return 0;
}

SnpReport *sim_chip_launch(SimChip *c) {
    return &c->launch;
}

SnpProduct sim_chip_product(const SimChip *c) {
    return c->product;
}

const char *sim_chip_dir(const SimChip *c) {
    return c->dir;
}

bool sim_chip_has_vlek(const SimChip *c) {
    return c->with_vlek;
}

int sim_chip_set_signing_key(SimChip *c, SnpSigningKey k) {
    if (k != SNP_SIGNING_KEY_VCEK && k != SNP_SIGNING_KEY_VLEK)
        return -EINVAL;
    if (k == SNP_SIGNING_KEY_VLEK && !c->with_vlek)
        return -ENOKEY;
    c->launch.flags = (c->launch.flags & ~SNP_FLAG_SIGNING_KEY_MASK) |
                      ((uint32_t)k << SNP_FLAG_SIGNING_KEY_SHIFT);
    return 0;
}

/* Fields that identify the launched guest: changing one is launching a different VM. */
static bool guest_changed(const SnpReport *a, const SnpReport *b) {
    return a->guest_svn != b->guest_svn || a->policy != b->policy ||
           memcmp(a->family_id, b->family_id, 16) != 0 ||
           memcmp(a->image_id, b->image_id, 16) != 0 || a->vmpl != b->vmpl ||
           memcmp(a->measurement, b->measurement, 48) != 0 ||
           memcmp(a->host_data, b->host_data, 32) != 0 ||
           memcmp(a->id_key_digest, b->id_key_digest, 48) != 0 ||
           memcmp(a->author_key_digest, b->author_key_digest, 48) != 0 ||
           (a->flags & SNP_FLAG_AUTHOR_KEY_EN) != (b->flags & SNP_FLAG_AUTHOR_KEY_EN) ||
           a->launch_tcb != b->launch_tcb || a->launch_mit_vector != b->launch_mit_vector;
}

static int validate_launch(const SimChip *c, const SnpReport *l) {
    SnpTcb t;

    if (l->version != 2 && l->version != 3 && l->version != 5)
        return -EINVAL;
    if (l->vmpl > 3 || !(l->policy & SNP_POLICY_RESERVED_1))
        return -EINVAL;
    if (snp_tcb_decode(l->current_tcb, c->product, &t) < 0 ||
        snp_tcb_decode(l->reported_tcb, c->product, &t) < 0 ||
        snp_tcb_decode(l->committed_tcb, c->product, &t) < 0 ||
        snp_tcb_decode(l->launch_tcb, c->product, &t) < 0)
        return -EINVAL;
    if (snp_report_signing_key(l) == SNP_SIGNING_KEY_VLEK && !c->with_vlek)
        return -ENOKEY;
    if (snp_report_signing_key(l) != SNP_SIGNING_KEY_VLEK &&
        snp_report_signing_key(l) != SNP_SIGNING_KEY_VCEK)
        return -EINVAL;
    if ((l->flags &
         ~(SNP_FLAG_AUTHOR_KEY_EN | SNP_FLAG_MASK_CHIP_KEY | SNP_FLAG_SIGNING_KEY_MASK)) != 0)
        return -EINVAL;
    /* The chip's identity is not part of a launch. */
    if (memcmp(l->chip_id, c->saved.chip_id, sizeof l->chip_id) != 0 ||
        l->cpuid_fam_id != c->saved.cpuid_fam_id || l->cpuid_mod_id != c->saved.cpuid_mod_id)
        return -EINVAL;
    return 0;
}

static int reissue_endorsement_keys(SimChip *c) {
    _cleanup_free_ char *secrets = path_join(c->dir, "secrets");
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *ask_key = NULL, *asvk_key = NULL;
    _cleanup_(X509_freep) X509 *vcek = NULL, *vlek = NULL;
    int r;

    if (!secrets)
        return -ENOMEM;
    r = read_private_key(secrets, "ask.key", &ask_key);
    if (r < 0)
        return r;
    r = make_vcek(c->product, false, &c->launch, c->vcek_key, ask_key, &vcek);
    if (r < 0)
        return r;
    if (c->with_vlek) {
        r = read_private_key(secrets, "asvk.key", &asvk_key);
        if (r >= 0)
            r = make_vcek(c->product, true, &c->launch, c->vlek_key, asvk_key, &vlek);
        if (r < 0)
            return r;
    }
    r = write_pem_cert(c->dir, "vcek.pem", vcek);
    if (r >= 0 && vlek)
        r = write_pem_cert(c->dir, "vlek.pem", vlek);
    if (r < 0)
        return r;
    X509_free(c->vcek);
    c->vcek = TAKE_PTR(vcek);
    if (vlek) {
        X509_free(c->vlek);
        c->vlek = TAKE_PTR(vlek);
    }
    return 0;
}

int sim_chip_save(SimChip *c) {
    _cleanup_free_ char *secrets = NULL;
    int r;

    r = validate_launch(c, &c->launch);
    if (r < 0)
        return r;
    if (guest_changed(&c->launch, &c->saved)) {
        /* A new launch: new REPORT_ID, new VM root key (as SNP_LAUNCH_START makes). */
        _cleanup_(secret_freep) Secret *vmrk = NULL;
        secrets = path_join(c->dir, "secrets");
        if (!secrets)
            return -ENOMEM;
        if (RAND_bytes(c->launch.report_id, sizeof c->launch.report_id) != 1)
            return nt_openssl_error(-EIO, "RAND_bytes");
        r = new_root_secret(secrets, "vmrk.bin", &vmrk);
        if (r < 0)
            return r;
        secret_free(c->vmrk);
        c->vmrk = TAKE_PTR(vmrk);
    }
    if (c->launch.reported_tcb != c->saved.reported_tcb) {
        r = reissue_endorsement_keys(c);
        if (r < 0)
            return r;
    }
    r = chip_write_json(c);
    if (r < 0)
        return r;
    c->saved = c->launch;
    return 0;
}

int sim_chip_launch_finish(SimChip *c, const SimLaunchParams *p, int *ret_fw_status, char *err) {
    SnpIdLaunch id = {0};
    SnpReport prev;
    int r;

    if (!c || !p || !ret_fw_status || !err || (!p->id_block != !p->id_auth))
        return -EINVAL;
    err[0] = 0;
    *ret_fw_status = SNP_FW_SUCCESS;
    if (p->id_block) {
        r = snp_id_launch_check(p->id_block, p->id_auth, p->author_key_en, p->measurement,
                                p->policy, &id, err);
        if (r < 0)
            return r;
        if (r != SNP_FW_SUCCESS) {
            *ret_fw_status = r;
            return -EKEYREJECTED;
        }
    }
    prev = c->launch;
    memcpy(c->launch.measurement, p->measurement, sizeof c->launch.measurement);
    c->launch.policy = p->policy;
    memcpy(c->launch.host_data, p->host_data, sizeof c->launch.host_data);
    memcpy(c->launch.family_id, id.block.family_id, sizeof c->launch.family_id);
    memcpy(c->launch.image_id, id.block.image_id, sizeof c->launch.image_id);
    c->launch.guest_svn = id.block.guest_svn;
    memcpy(c->launch.id_key_digest, id.id_key_digest, sizeof c->launch.id_key_digest);
    memcpy(c->launch.author_key_digest, id.author_key_digest, sizeof c->launch.author_key_digest);
    if (p->id_block && id.author_key_en)
        c->launch.flags |= SNP_FLAG_AUTHOR_KEY_EN;
    else
        c->launch.flags &= ~SNP_FLAG_AUTHOR_KEY_EN;
    r = sim_chip_save(c);
    if (r < 0)
        c->launch = prev;
    explicit_bzero(&prev, sizeof prev);
    return r;
}

static int sign_report(EVP_PKEY *key, SnpReport *rep, uint8_t out[SNP_REPORT_SIZE]) {
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *md = EVP_MD_CTX_new();
    _cleanup_(ECDSA_SIG_freep) ECDSA_SIG *sig = NULL;
    uint8_t der[128];
    size_t der_len = sizeof der;
    const uint8_t *p = der;
    const BIGNUM *r, *s;

    if (!md)
        return -ENOMEM;
    memset(rep->signature_r, 0, sizeof rep->signature_r);
    memset(rep->signature_s, 0, sizeof rep->signature_s);
    snp_report_serialize(rep, out);
    if (EVP_DigestSignInit_ex(md, NULL, "SHA384", NULL, NULL, key, NULL) != 1 ||
        EVP_DigestSign(md, der, &der_len, out, SNP_REPORT_SIGNED_SIZE) != 1)
        return nt_openssl_error(-EIO, "report signature");
    sig = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (!sig)
        return nt_openssl_error(-EIO, "d2i_ECDSA_SIG");
    ECDSA_SIG_get0(sig, &r, &s);
    if (BN_bn2lebinpad(r, rep->signature_r, SNP_SIG_COMPONENT_SIZE) < 0 ||
        BN_bn2lebinpad(s, rep->signature_s, SNP_SIG_COMPONENT_SIZE) < 0)
        return -EIO;
    snp_report_serialize(rep, out);
    return 0;
}

int sim_chip_get_report(SimChip *c, const uint8_t report_data[64], uint32_t vmpl,
                        uint8_t ret_report[SNP_REPORT_SIZE]) {
    SnpReport rep;
    EVP_PKEY *key;
    int r;

    if (!c || !report_data || !ret_report)
        return -EINVAL;
    if (vmpl > 3)
        return -EINVAL;
    /* MSG_REPORT_REQ: firmware refuses a VMPL more privileged than the requesting guest's. */
    if (vmpl < c->launch.vmpl)
        return -EPERM;
    key = snp_report_signing_key(&c->launch) == SNP_SIGNING_KEY_VLEK ? c->vlek_key : c->vcek_key;
    if (!key)
        return -ENOKEY;

    rep = c->launch;
    memcpy(rep.report_data, report_data, sizeof rep.report_data);
    rep.vmpl = vmpl;
    rep.signature_algo = SNP_SIG_ALGO_ECDSA_P384_SHA384;
    if (rep.flags & SNP_FLAG_MASK_CHIP_KEY)
        memset(rep.chip_id, 0, sizeof rep.chip_id);
    if (rep.version < 3)
        rep.cpuid_fam_id = rep.cpuid_mod_id = rep.cpuid_step = 0;
    if (rep.version < 5)
        rep.launch_mit_vector = rep.current_mit_vector = 0;
    r = sign_report(key, &rep, ret_report);
    explicit_bzero(&rep, sizeof rep);
    return r;
}

static int cert_der(X509 *x, uint8_t **ret, size_t *ret_len) {
    uint8_t *der = NULL;
    int n = i2d_X509(x, &der);
    if (n <= 0)
        return nt_openssl_error(-EIO, "i2d_X509");
    *ret = der;
    *ret_len = (size_t)n;
    return 0;
}

int sim_chip_get_cert_table(SimChip *c, uint8_t **ret, size_t *ret_len) {
    bool vlek = snp_report_signing_key(&c->launch) == SNP_SIGNING_KEY_VLEK;
    SnpCertKind kinds[3] = {vlek ? SNP_CERT_VLEK : SNP_CERT_VCEK, SNP_CERT_ASK, SNP_CERT_ARK};
    X509 *certs[3] = {vlek ? c->vlek : c->vcek, vlek ? c->asvk : c->ask, c->ark};
    uint8_t *ders[3] = {NULL, NULL, NULL};
    size_t lens[3] = {0, 0, 0};
    int r = 0;

    if (!certs[0] || !certs[1])
        return -ENOKEY;
    for (size_t i = 0; i < 3 && r >= 0; i++)
        r = cert_der(certs[i], &ders[i], &lens[i]);
    if (r >= 0)
        r = snp_cert_table_build(kinds, (const uint8_t *const *)ders, lens, 3, ret, ret_len);
    for (size_t i = 0; i < 3; i++)
        OPENSSL_free(ders[i]);
    return r;
}

static uint8_t *put_le(uint8_t *p, uint64_t v, size_t n) {
    for (size_t i = 0; i < n; i++)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

int sim_chip_get_derived_key(SimChip *c, const SnpDerivedKeyRequest *req, Secret **ret_key) {
    static const char salt[] = "nitride-sim MSG_KEY_REQ v1";
    _cleanup_(EVP_KDF_freep) EVP_KDF *kdf = NULL;
    _cleanup_(EVP_KDF_CTX_freep) EVP_KDF_CTX *kctx = NULL;
    _cleanup_(secret_freep) Secret *key = NULL;
    const SnpReport *l;
    const Secret *root;
    SnpTcb req_tcb, committed;
    uint8_t info[4 + 8 + 4 + 8 + 16 + 16 + 48 + 4 + 8 + 8], *p = info;
    OSSL_PARAM params[5];
    int r;

    if (!c || !req || !ret_key)
        return -EINVAL;
    l = &c->launch;
    /* Validation as MSG_KEY_REQ: each refusal is INVALID_PARAM in firmware; distinct errnos
     * here so callers and tests can tell them apart (documented in sim.h). */
    if (req->root_key_select != SNP_KEY_ROOT_VCEK && req->root_key_select != SNP_KEY_ROOT_VMRK)
        return -EINVAL;
    if (req->guest_field_select & ~SIM_GFS_VALID_MASK)
        return -EINVAL;
    if ((req->guest_field_select & SNP_GFS_LAUNCH_MIT_VECTOR) && l->version < 5)
        return -EINVAL; /* firmware without mitigation vectors treats bit 6 as reserved */
    if (req->vmpl > 3)
        return -EINVAL;
    if (req->vmpl < l->vmpl)
        return -EPERM;
    if (req->guest_svn > l->guest_svn)
        return -ERANGE;
    if (snp_tcb_decode(req->tcb_version, c->product, &req_tcb) < 0)
        return -EINVAL;
    if (snp_tcb_decode(l->committed_tcb, c->product, &committed) < 0)
        return -EIO;
    if (!snp_tcb_ge(&committed, &req_tcb, c->product))
        return -EOVERFLOW;
    if ((req->guest_field_select & SNP_GFS_LAUNCH_MIT_VECTOR) &&
        (req->launch_mit_vector & ~l->launch_mit_vector) != 0)
        return -ERANGE;
    root = req->root_key_select == SNP_KEY_ROOT_VMRK ? c->vmrk : c->vcek_root;
    if (!root)
        return -ENOKEY;

    /* Unambiguous: fixed-width fields in a fixed order, present iff their bit is set in the
     * field select that itself leads the encoding. */
    p = put_le(p, req->root_key_select, 4);
    p = put_le(p, req->guest_field_select, 8);
    p = put_le(p, req->vmpl, 4);
    if (req->guest_field_select & SNP_GFS_GUEST_POLICY)
        p = put_le(p, l->policy, 8);
    if (req->guest_field_select & SNP_GFS_IMAGE_ID) {
        memcpy(p, l->image_id, 16);
        p += 16;
    }
    if (req->guest_field_select & SNP_GFS_FAMILY_ID) {
        memcpy(p, l->family_id, 16);
        p += 16;
    }
    if (req->guest_field_select & SNP_GFS_MEASUREMENT) {
        memcpy(p, l->measurement, 48);
        p += 48;
    }
    if (req->guest_field_select & SNP_GFS_GUEST_SVN)
        p = put_le(p, req->guest_svn, 4);
    if (req->guest_field_select & SNP_GFS_TCB_VERSION)
        p = put_le(p, req->tcb_version, 8);
    if (req->guest_field_select & SNP_GFS_LAUNCH_MIT_VECTOR)
        p = put_le(p, req->launch_mit_vector, 8);

    r = secret_new(32, &key);
    if (r < 0)
        return r;
    kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    if (!kctx)
        return nt_openssl_error(-EIO, "HKDF");
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA384", 0);
    params[1] = OSSL_PARAM_construct_octet_string(
        OSSL_KDF_PARAM_KEY, (void *)secret_const_data(root), secret_size(root));
    params[2] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, sizeof salt - 1);
    params[3] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, (size_t)(p - info));
    params[4] = OSSL_PARAM_construct_end();
    if (EVP_KDF_derive(kctx, secret_data(key), 32, params) != 1)
        return nt_openssl_error(-EIO, "HKDF derive");
    *ret_key = TAKE_PTR(key);
    return 0;
}

int sim_chip_to_json(const SimChip *c, json_t **ret) {
    _cleanup_(json_decrefp) json_t *o = NULL;
    int r = chip_to_json(c, &o);
    if (r < 0)
        return r;
    /* Convenience for humans and scripts: where the public chain is. */
    if (json_object_set_new(o, "dir", json_string(c->dir)) < 0)
        return -ENOMEM;
    *ret = TAKE_PTR(o);
    return 0;
}

/* ---- CRL ---- */

DEFINE_TRIVIAL_CLEANUP_FUNC(X509_CRL *, X509_CRL_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_REVOKED *, X509_REVOKED_free);

/* Replaces the signature AlgorithmIdentifier of a DER TBSCertList (the element after the
 * version) with algid. OpenSSL 3.0 has no setter for it outside its own signing path. */
static int crl_tbs_set_algid(const uint8_t *tbs, size_t tbs_len, const uint8_t *algid,
                             size_t algid_len, uint8_t **ret, size_t *ret_len) {
    const uint8_t *p = tbs, *q, *alg_start, *alg_end, *end = tbs + tbs_len;
    size_t body_len, total;
    uint8_t *out, *o;
    long l;
    int tag, cls;

    if (ASN1_get_object(&p, &l, &tag, &cls, (long)tbs_len) & 0x80 || tag != V_ASN1_SEQUENCE)
        return -EIO;
    q = p; /* version INTEGER (v2) */
    if (ASN1_get_object(&q, &l, &tag, &cls, end - q) & 0x80 || tag != V_ASN1_INTEGER)
        return -EIO;
    alg_start = q + l;
    q = alg_start;
    if (ASN1_get_object(&q, &l, &tag, &cls, end - q) & 0x80 || tag != V_ASN1_SEQUENCE)
        return -EIO;
    alg_end = q + l;
    if (alg_end > end)
        return -EIO;
    body_len = (size_t)(alg_start - p) + algid_len + (size_t)(end - alg_end);
    total = 1 + der_len_size(body_len) + body_len;
    out = malloc(total);
    if (!out)
        return -ENOMEM;
    o = der_put_header(out, 0x30, body_len);
    memcpy(o, p, (size_t)(alg_start - p));
    o += alg_start - p;
    memcpy(o, algid, algid_len);
    o += algid_len;
    memcpy(o, alg_end, (size_t)(end - alg_end));
    *ret = out;
    *ret_len = total;
    return 0;
}

static int crl_add_revoked(X509_CRL *crl, X509 *x, const ASN1_TIME *when) {
    _cleanup_(X509_REVOKED_freep) X509_REVOKED *rev = X509_REVOKED_new();
    if (!rev)
        return -ENOMEM;
    if (X509_REVOKED_set_serialNumber(rev, (ASN1_INTEGER *)X509_get0_serialNumber(x)) != 1 ||
        X509_REVOKED_set_revocationDate(rev, (ASN1_TIME *)when) != 1 ||
        X509_CRL_add0_revoked(crl, rev) != 1)
        return nt_openssl_error(-EIO, "X509_CRL_add0_revoked");
    TAKE_PTR(rev);
    return 0;
}

int sim_chip_make_crl(SimChip *c, const char *const *revoke, size_t n, time_t this_update,
                      time_t next_update, uint8_t **ret_der, size_t *ret_len) {
    _cleanup_free_ char *secrets = NULL;
    _cleanup_free_ uint8_t *tbs = NULL, *tbs2 = NULL, *der = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *ark_key = NULL;
    _cleanup_(X509_CRL_freep) X509_CRL *crl = NULL;
    _cleanup_(ASN1_TIME_freep) ASN1_TIME *tu = NULL, *nu = NULL;
    _cleanup_(ASN1_INTEGER_freep) ASN1_INTEGER *number = NULL;
    _cleanup_(X509_EXTENSION_freep) X509_EXTENSION *aki = NULL;
    X509 *certs[4];
    size_t tbs2_len = 0, der_len = 0;
    X509V3_CTX ctx;
    int tbs_len, r;

    if (!c || (n > 0 && !revoke) || !ret_der || !ret_len || next_update < this_update)
        return -EINVAL;
    if (n > ELEMENTSOF(certs))
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (streq(revoke[i], "vcek"))
            certs[i] = c->vcek;
        else if (streq(revoke[i], "ask"))
            certs[i] = c->ask;
        else if (streq(revoke[i], "vlek"))
            certs[i] = c->vlek;
        else if (streq(revoke[i], "asvk"))
            certs[i] = c->asvk;
        else
            return -EINVAL;
        if (!certs[i])
            return -ENOKEY;
    }
    secrets = path_join(c->dir, "secrets");
    if (!secrets)
        return -ENOMEM;
    r = read_private_key(secrets, "ark.key", &ark_key);
    if (r < 0)
        return r;

    crl = X509_CRL_new();
    tu = ASN1_TIME_set(NULL, this_update);
    nu = ASN1_TIME_set(NULL, next_update);
    number = ASN1_INTEGER_new();
    if (!crl || !tu || !nu || !number)
        return -ENOMEM;
    if (X509_CRL_set_version(crl, X509_CRL_VERSION_2) != 1 ||
        X509_CRL_set_issuer_name(crl, X509_get_subject_name(c->ark)) != 1 ||
        X509_CRL_set1_lastUpdate(crl, tu) != 1 || X509_CRL_set1_nextUpdate(crl, nu) != 1)
        return nt_openssl_error(-EIO, "CRL fields");
    for (size_t i = 0; i < n; i++) {
        r = crl_add_revoked(crl, certs[i], tu);
        if (r < 0)
            return r;
    }
    /* Extensions of a v2 CRL: the ARK's key identifier and a CRL number that grows with
     * thisUpdate. */
    X509V3_set_ctx(&ctx, c->ark, NULL, NULL, crl, 0);
    aki = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
    if (!aki || X509_CRL_add_ext(crl, aki, -1) != 1 ||
        ASN1_INTEGER_set_int64(number, (int64_t)this_update) != 1 ||
        X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, 0) != 1 || X509_CRL_sort(crl) != 1)
        return nt_openssl_error(-EIO, "CRL extensions");

    /* A throw-away PKCS#1 signature only gives the TBSCertList its DER form; its algorithm
     * field is then replaced with AMD's RSASSA-PSS identifier and the whole re-signed. */
    if (X509_CRL_sign(crl, ark_key, EVP_sha384()) <= 0)
        return nt_openssl_error(-EIO, "X509_CRL_sign");
    tbs_len = i2d_re_X509_CRL_tbs(crl, &tbs);
    if (tbs_len <= 0)
        return nt_openssl_error(-EIO, "i2d_re_X509_CRL_tbs");
    r = crl_tbs_set_algid(tbs, (size_t)tbs_len, pss_algid_trailer, sizeof pss_algid_trailer, &tbs2,
                          &tbs2_len);
    if (r < 0)
        return r;
    r = sign_tbs_pss(tbs2, tbs2_len, ark_key, true, &der, &der_len);
    if (r < 0)
        return r;
    /* It must parse back as one CRL. */
    const uint8_t *q = der;
    _cleanup_(X509_CRL_freep) X509_CRL *back = d2i_X509_CRL(NULL, &q, (long)der_len);
    if (!back || (size_t)(q - der) != der_len)
        return nt_openssl_error(-EIO, "d2i_X509_CRL (assembled CRL)");
    *ret_der = TAKE_PTR(der);
    *ret_len = der_len;
    return 0;
}

int sim_chip_sign_raw(SimChip *c, SnpReport *rep, uint8_t ret_report[SNP_REPORT_SIZE]) {
    EVP_PKEY *key;

    if (!c || !rep || !ret_report)
        return -EINVAL;
    key = snp_report_signing_key(rep) == SNP_SIGNING_KEY_VLEK ? c->vlek_key : c->vcek_key;
    if (!key)
        return -ENOKEY;
    return sign_report(key, rep, ret_report);
}
