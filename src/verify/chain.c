/* SPDX-License-Identifier: Apache-2.0 */
/*
 * AMD SEV-SNP certificate helpers and the certificate bundle (see chain.h). Certificates here are
 * untrusted input: every parser is strict and bounded, and nothing is trusted until verify.c has
 * chained it to an anchor.
 */
#include "verify/chain.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "core/alloc.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/openssl-util.h"

#define AMD_OID_PREFIX "1.3.6.1.4.1.3704.1."
#define CERT_FILE_MAX (256u * 1024u)

DEFINE_TRIVIAL_CLEANUP_FUNC(RSA_PSS_PARAMS *, RSA_PSS_PARAMS_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(X509_ALGOR *, X509_ALGOR_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_TYPE *, ASN1_TYPE_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(BASIC_CONSTRAINTS *, BASIC_CONSTRAINTS_free);
DEFINE_TRIVIAL_CLEANUP_FUNC(ASN1_BIT_STRING *, ASN1_BIT_STRING_free);

static const char *const role_names[_NT_CERT_ROLE_MAX] = {
    [NT_CERT_ROLE_ARK] = "ARK",   [NT_CERT_ROLE_ASK] = "ASK",   [NT_CERT_ROLE_ASVK] = "ASVK",
    [NT_CERT_ROLE_VCEK] = "VCEK", [NT_CERT_ROLE_VLEK] = "VLEK",
};

const char *nt_cert_role_to_string(NtCertRole r) {
    if (r < 0 || r >= _NT_CERT_ROLE_MAX)
        return "unknown";
    return role_names[r];
}

int nt_cert_from_der(const uint8_t *der, size_t len, X509 **ret) {
    const unsigned char *p = der;
    if (len == 0 || len > CERT_FILE_MAX)
        return -EBADMSG;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (!x)
        return nt_openssl_error(-EBADMSG, "d2i_X509");
    if ((size_t)(p - der) != len) {
        X509_free(x);
        log_debug("Certificate has %zu trailing bytes.", len - (size_t)(p - der));
        return -EBADMSG;
    }
    *ret = x;
    return 0;
}

static int ext_integer(const ASN1_OCTET_STRING *v, uint8_t *ret) {
    const unsigned char *p = ASN1_STRING_get0_data(v);
    long len = ASN1_STRING_length(v);
    _cleanup_(ASN1_INTEGER_freep) ASN1_INTEGER *i = d2i_ASN1_INTEGER(NULL, &p, len);
    int64_t n;
    if (!i || p != ASN1_STRING_get0_data(v) + len)
        return -EBADMSG;
    if (ASN1_INTEGER_get_int64(&n, i) != 1 || n < 0 || n > 255)
        return -EBADMSG;
    *ret = (uint8_t)n;
    return 0;
}

/* A string extension value; ia5_only: an IA5String and nothing else (productName, as AMD
 * writes it). */
static int ext_string(const ASN1_OCTET_STRING *v, bool ia5_only, char *buf, size_t size) {
    const unsigned char *p = ASN1_STRING_get0_data(v);
    long len = ASN1_STRING_length(v);
    _cleanup_(ASN1_TYPE_freep) ASN1_TYPE *t = d2i_ASN1_TYPE(NULL, &p, len);
    if (!t || p != ASN1_STRING_get0_data(v) + len)
        return -EBADMSG;
    switch (t->type) {
    case V_ASN1_IA5STRING:
        break;
    case V_ASN1_UTF8STRING:
    case V_ASN1_PRINTABLESTRING:
    case V_ASN1_VISIBLESTRING:
        if (ia5_only)
            return -EBADMSG;
        break;
    default:
        return -EBADMSG;
    }
    const unsigned char *s = ASN1_STRING_get0_data(t->value.asn1_string);
    int n = ASN1_STRING_length(t->value.asn1_string);
    if (n <= 0 || (size_t)n >= size)
        return -EBADMSG;
    for (int k = 0; k < n; k++)
        if (s[k] < 0x20 || s[k] > 0x7e)
            return -EBADMSG;
    memcpy(buf, s, (size_t)n);
    buf[n] = 0;
    return 0;
}

/* hwID: the raw 64 (Milan, Genoa) or 8 (Turin) bytes, or those bytes wrapped in exactly one
 * DER OCTET STRING (primitive, universal, definite short-form length, nothing after it). The
 * header is read with ASN1_get_object(): d2i would also take BER (long-form lengths). */
static int ext_hwid(const ASN1_OCTET_STRING *v, NtAmdExt *e) {
    const unsigned char *start = ASN1_STRING_get0_data(v), *p = start;
    int len = ASN1_STRING_length(v), tag = 0, xclass = 0;
    long n = 0;
    if (len == 64 || len == 8) {
        memcpy(e->hwid, start, (size_t)len);
        e->hwid_len = (size_t)len;
        return 0;
    }
    int f = ASN1_get_object(&p, &n, &tag, &xclass, len);
    if (f != 0 || tag != V_ASN1_OCTET_STRING || xclass != V_ASN1_UNIVERSAL || p - start != 2 ||
        (n != 64 && n != 8) || p + n != start + len)
        return -EBADMSG;
    memcpy(e->hwid, p, (size_t)n);
    e->hwid_len = (size_t)n;
    return 0;
}

int nt_cert_amd_ext(X509 *x, NtAmdExt *ret) {
    NtAmdExt e = {.struct_version = -1};
    unsigned seen = 0;

    for (int i = 0; i < X509_get_ext_count(x); i++) {
        X509_EXTENSION *ext = X509_get_ext(x, i);
        char oid[80];
        int r = 0, bit;
        uint8_t u8 = 0;

        if (OBJ_obj2txt(oid, sizeof oid, X509_EXTENSION_get_object(ext), 1) <= 0)
            continue;
        if (strncmp(oid, AMD_OID_PREFIX, STRLEN(AMD_OID_PREFIX)) != 0)
            continue;
        const char *sfx = oid + STRLEN(AMD_OID_PREFIX);
        const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(ext);

        if (streq(sfx, "1"))
            bit = 0, r = ext_integer(v, &u8), e.struct_version = u8;
        else if (streq(sfx, "2"))
            bit = 1, r = ext_string(v, true, e.product_name, sizeof e.product_name);
        else if (streq(sfx, "3.1"))
            bit = 2, r = ext_integer(v, &e.spl.bootloader), e.has_bl = true;
        else if (streq(sfx, "3.2"))
            bit = 3, r = ext_integer(v, &e.spl.tee), e.has_tee = true;
        else if (streq(sfx, "3.3"))
            bit = 4, r = ext_integer(v, &e.spl.snp), e.has_snp = true;
        else if (streq(sfx, "3.8"))
            bit = 5, r = ext_integer(v, &e.spl.microcode), e.has_ucode = true;
        else if (streq(sfx, "3.9"))
            bit = 6, r = ext_integer(v, &e.spl.fmc), e.has_fmc = true;
        else if (streq(sfx, "4"))
            bit = 7, r = ext_hwid(v, &e);
        else if (streq(sfx, "5"))
            bit = 8, r = ext_string(v, false, e.csp_id, sizeof e.csp_id);
        else
            continue; /* .3.4-.3.7 are reserved SPLs; other AMD extensions are not used */
        if (r < 0) {
            log_debug("Malformed AMD certificate extension %s.", oid);
            return -EBADMSG;
        }
        if (seen & (1u << bit)) {
            log_debug("Duplicate AMD certificate extension %s.", oid);
            return -EBADMSG;
        }
        seen |= 1u << bit;
    }
    *ret = e;
    return 0;
}

static int subject_cn(X509 *x, char *buf, size_t size) {
    X509_NAME *n = X509_get_subject_name(x);
    int idx = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
    if (idx < 0)
        return -ENOENT;
    const ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(n, idx));
    int len = ASN1_STRING_length(s);
    if (len <= 0 || (size_t)len >= size)
        return -EBADMSG;
    memcpy(buf, ASN1_STRING_get0_data(s), (size_t)len);
    buf[len] = 0;
    if (strlen(buf) != (size_t)len)
        return -EBADMSG;
    return 0;
}

/* The product a CA certificate's CN names after prefix: exactly "Milan", "Genoa" or "Turin". */
static SnpProduct ca_suffix_product(const char *cn, const char *prefix) {
    size_t n = strlen(prefix);
    if (strncmp(cn, prefix, n) != 0)
        return _SNP_PRODUCT_INVALID;
    SnpProduct p = snp_product_from_string(cn + n);
    if (p < 0 || !streq(cn + n, snp_product_to_string(p)))
        return _SNP_PRODUCT_INVALID;
    return p;
}

NtCertRole nt_cert_role_detect(X509 *x) {
    NtAmdExt e;
    char cn[64];
    bool hw = false, csp = false;

    if (nt_cert_amd_ext(x, &e) >= 0) {
        hw = e.hwid_len > 0;
        csp = e.csp_id[0] != 0;
    }
    if (subject_cn(x, cn, sizeof cn) < 0)
        return _NT_CERT_ROLE_INVALID;
    /* The name and the extensions must agree: a "SEV-VCEK" carries a hwID and no cspID, a
     * "SEV-VLEK" a cspID and no hwID, and nothing else carries either. (Malformed AMD
     * extensions leave the name to decide; nt_cert_check_profile() refuses them.) */
    if (streq(cn, "SEV-VCEK"))
        return !csp && (hw || nt_cert_amd_ext(x, &e) < 0) ? NT_CERT_ROLE_VCEK
                                                          : _NT_CERT_ROLE_INVALID;
    if (streq(cn, "SEV-VLEK"))
        return !hw && (csp || nt_cert_amd_ext(x, &e) < 0) ? NT_CERT_ROLE_VLEK
                                                          : _NT_CERT_ROLE_INVALID;
    if (hw || csp)
        return _NT_CERT_ROLE_INVALID;
    if (ca_suffix_product(cn, "ARK-") >= 0)
        return NT_CERT_ROLE_ARK;
    if (ca_suffix_product(cn, "SEV-VLEK-") >= 0)
        return NT_CERT_ROLE_ASVK;
    if (ca_suffix_product(cn, "SEV-") >= 0)
        return NT_CERT_ROLE_ASK;
    return _NT_CERT_ROLE_INVALID;
}

SnpProduct nt_cert_ca_product(X509 *x) {
    char cn[64];
    SnpProduct p;

    if (subject_cn(x, cn, sizeof cn) < 0)
        return _SNP_PRODUCT_INVALID;
    if ((p = ca_suffix_product(cn, "ARK-")) >= 0 || (p = ca_suffix_product(cn, "SEV-VLEK-")) >= 0 ||
        (p = ca_suffix_product(cn, "SEV-")) >= 0)
        return p;
    return _SNP_PRODUCT_INVALID;
}

/* ---- RFC 5280 profile ---- */

int nt_asn1_time_check_rfc5280(const ASN1_TIME *t) {
    struct tm tm;
    int type, n;
    size_t want;
    const unsigned char *s;

    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return -EBADMSG;
    type = ASN1_STRING_type(t);
    want = type == V_ASN1_UTCTIME ? 13 : type == V_ASN1_GENERALIZEDTIME ? 15 : 0;
    s = ASN1_STRING_get0_data(t);
    n = ASN1_STRING_length(t);
    /* YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ: seconds present, no fraction, no offset. */
    if (want == 0 || n < 0 || (size_t)n != want || s[want - 1] != 'Z')
        return -EBADMSG;
    for (size_t i = 0; i + 1 < want; i++)
        if (!isdigit(s[i]))
            return -EBADMSG;
    /* UTCTime through 2049, GeneralizedTime from 2050 (4.1.2.5). */
    if ((type == V_ASN1_UTCTIME) != (tm.tm_year + 1900 < 2050))
        return -EBADMSG;
    return 0;
}

#define CERT_EXTS_MAX 64

/* Every extension OpenSSL knows (keyUsage, basicConstraints, key identifiers, CRL distribution
 * points, ...) must decode with its ASN.1 template, use all of extnValue and be DER: re-encoding
 * gives the same bytes. Unknown ones (AMD's) are left to nt_cert_amd_ext(). */
static int ext_check_standard(X509_EXTENSION *ext) {
    const X509V3_EXT_METHOD *m = X509V3_EXT_get(ext);
    if (!m)
        return 0;
    const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(ext);
    const unsigned char *data = ASN1_STRING_get0_data(v), *p = data;
    long len = ASN1_STRING_length(v);
    if (!m->it) {
        void *d = X509V3_EXT_d2i(ext);
        if (!d)
            return -EBADMSG;
        if (m->ext_free)
            m->ext_free(d);
        return 0;
    }
    const ASN1_ITEM *it = ASN1_ITEM_ptr(m->it);
    ASN1_VALUE *val = ASN1_item_d2i(NULL, &p, len, it);
    if (!val)
        return -EBADMSG;
    unsigned char *re = NULL;
    int rl = p == data + len ? ASN1_item_i2d(val, &re, it) : -1;
    bool ok = rl == len && memcmp(re, data, (size_t)len) == 0;
    OPENSSL_free(re);
    ASN1_item_free(val, it);
    return ok ? 0 : -EBADMSG;
}

int nt_cert_check_profile(X509 *x, NtCertRole role, char *why, size_t why_size) {
    int n = X509_get_ext_count(x);
    char oid[80];
    NtAmdExt e;

#define WHY(...) (snprintf(why, why_size, __VA_ARGS__), -EBADMSG)
    if (X509_get_version(x) != X509_VERSION_3)
        return WHY("not an X.509 v3 certificate (version %ld)", X509_get_version(x) + 1);
    if (n <= 0)
        return WHY("a v3 certificate without extensions");
    if (n > CERT_EXTS_MAX)
        return WHY("%d extensions (at most %d)", n, CERT_EXTS_MAX);
    if (nt_asn1_time_check_rfc5280(X509_get0_notBefore(x)) < 0)
        return WHY("notBefore is not RFC 5280 UTCTime (before 2050) or GeneralizedTime (from "
                   "2050) of the form ...HHMMSSZ");
    if (nt_asn1_time_check_rfc5280(X509_get0_notAfter(x)) < 0)
        return WHY("notAfter is not RFC 5280 UTCTime (before 2050) or GeneralizedTime (from "
                   "2050) of the form ...HHMMSSZ");
    for (int i = 0; i < n; i++) {
        X509_EXTENSION *ext = X509_get_ext(x, i);
        const ASN1_OBJECT *obj = X509_EXTENSION_get_object(ext);
        if (OBJ_obj2txt(oid, sizeof oid, obj, 1) <= 0)
            snprintf(oid, sizeof oid, "?");
        for (int j = 0; j < i; j++)
            if (OBJ_cmp(obj, X509_EXTENSION_get_object(X509_get_ext(x, j))) == 0)
                return WHY("duplicate extension %s", oid);
        if (ext_check_standard(ext) < 0)
            return WHY("malformed extension %s", oid);
    }
    if (nt_cert_amd_ext(x, &e) < 0)
        return WHY("a malformed AMD extension");
    if (nt_cert_role_detect(x) != role)
        return WHY("its subject CN and extensions do not make it a %s",
                   nt_cert_role_to_string(role));
    if ((role == NT_CERT_ROLE_VCEK || role == NT_CERT_ROLE_VLEK) && !e.product_name[0])
        return WHY("no productName extension");
#undef WHY
    return 0;
}

int nt_cert_check_ca(X509 *x, char *why, size_t why_size) {
    int crit = -1;
    _cleanup_(BASIC_CONSTRAINTS_freep) BASIC_CONSTRAINTS *bc =
        X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    if (!bc) {
        snprintf(why, why_size, "no basicConstraints extension");
        return -EKEYREJECTED;
    }
    if (!bc->ca || crit != 1) {
        snprintf(why, why_size, "basicConstraints %s", !bc->ca ? "CA:FALSE" : "not critical");
        return -EKEYREJECTED;
    }
    _cleanup_(ASN1_BIT_STRING_freep) ASN1_BIT_STRING *ku =
        X509_get_ext_d2i(x, NID_key_usage, &crit, NULL);
    if (!ku || !ASN1_BIT_STRING_get_bit(ku, 5)) {
        snprintf(why, why_size, "%s",
                 ku ? "keyUsage without keyCertSign" : "no keyUsage extension");
        return -EKEYREJECTED;
    }
    return 0;
}

static int algor_is(const X509_ALGOR *a, int nid) {
    if (!a || OBJ_obj2nid(a->algorithm) != nid)
        return 0;
    /* Hash parameters must be absent or NULL. */
    return !a->parameter || a->parameter->type == V_ASN1_NULL;
}

int nt_sig_algor_check_pss(const X509_ALGOR *alg) {
    if (!alg || OBJ_obj2nid(alg->algorithm) != NID_rsassaPss)
        return -EOPNOTSUPP;
    if (!alg->parameter || alg->parameter->type != V_ASN1_SEQUENCE)
        return -EOPNOTSUPP;
    const ASN1_STRING *seq = alg->parameter->value.sequence;
    const unsigned char *p = ASN1_STRING_get0_data(seq);
    long len = ASN1_STRING_length(seq);
    _cleanup_(RSA_PSS_PARAMS_freep) RSA_PSS_PARAMS *pss = d2i_RSA_PSS_PARAMS(NULL, &p, len);
    if (!pss || p != ASN1_STRING_get0_data(seq) + len)
        return -EOPNOTSUPP;
    if (!algor_is(pss->hashAlgorithm, NID_sha384))
        return -EOPNOTSUPP;
    if (!pss->maskGenAlgorithm || OBJ_obj2nid(pss->maskGenAlgorithm->algorithm) != NID_mgf1 ||
        !pss->maskGenAlgorithm->parameter ||
        pss->maskGenAlgorithm->parameter->type != V_ASN1_SEQUENCE)
        return -EOPNOTSUPP;
    const ASN1_STRING *mseq = pss->maskGenAlgorithm->parameter->value.sequence;
    const unsigned char *mp = ASN1_STRING_get0_data(mseq);
    long mlen = ASN1_STRING_length(mseq);
    _cleanup_(X509_ALGOR_freep) X509_ALGOR *mgf_hash = d2i_X509_ALGOR(NULL, &mp, mlen);
    if (!mgf_hash || mp != ASN1_STRING_get0_data(mseq) + mlen || !algor_is(mgf_hash, NID_sha384))
        return -EOPNOTSUPP;
    int64_t v;
    if (!pss->saltLength || ASN1_INTEGER_get_int64(&v, pss->saltLength) != 1 || v != 48)
        return -EOPNOTSUPP;
    if (pss->trailerField && (ASN1_INTEGER_get_int64(&v, pss->trailerField) != 1 || v != 1))
        return -EOPNOTSUPP;
    return 0;
}

int nt_cert_check_sig_scheme(X509 *x) {
    const X509_ALGOR *outer = NULL;
    X509_get0_signature(NULL, &outer, x);
    int r = nt_sig_algor_check_pss(outer);
    if (r < 0)
        return r;
    r = nt_sig_algor_check_pss(X509_get0_tbs_sigalg(x));
    if (r < 0)
        return r;
    if (X509_ALGOR_cmp(outer, X509_get0_tbs_sigalg(x)) != 0)
        return -EOPNOTSUPP;
    return 0;
}

int nt_cert_verify_signed_by(X509 *x, X509 *issuer) {
    int r = nt_cert_check_sig_scheme(x);
    if (r < 0)
        return r;
    if (X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(issuer)) != 0)
        return -EKEYREJECTED;
    EVP_PKEY *k = X509_get0_pubkey(issuer);
    if (!k || !(EVP_PKEY_is_a(k, "RSA") || EVP_PKEY_is_a(k, "RSA-PSS")) ||
        EVP_PKEY_get_bits(k) != 4096)
        return -EOPNOTSUPP;
    r = X509_verify(x, k);
    if (r != 1)
        return nt_openssl_error(-EKEYREJECTED, "X509_verify");
    return 0;
}

int nt_asn1_time_to_time_t(const ASN1_TIME *a, time_t *ret) {
    struct tm tm = {0};
    if (!a || ASN1_TIME_to_tm(a, &tm) != 1)
        return -EBADMSG;
    *ret = timegm(&tm);
    return 0;
}

int nt_cert_validity(X509 *x, time_t *ret_not_before, time_t *ret_not_after) {
    time_t nb, na;
    if (nt_asn1_time_to_time_t(X509_get0_notBefore(x), &nb) < 0 ||
        nt_asn1_time_to_time_t(X509_get0_notAfter(x), &na) < 0)
        return -EBADMSG;
    *ret_not_before = nb;
    *ret_not_after = na;
    return 0;
}

int nt_cert_check_time(X509 *x, time_t at) {
    time_t nb, na;
    int r = nt_cert_validity(x, &nb, &na);
    if (r < 0)
        return r;
    if (at > na)
        return -EKEYEXPIRED;
    if (at < nb)
        return -EKEYREJECTED;
    return 0;
}

void nt_format_time(time_t t, char buf[static 32]) {
    struct tm tm;
    if (!gmtime_r(&t, &tm) || strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, 32, "@%lld", (long long)t);
}

int nt_parse_time(const char *s, time_t *ret) {
    struct tm tm = {0};
    const char *end;

    if (!s || !*s)
        return -EINVAL;
    if (s[0] == '@') {
        char *e;
        errno = 0;
        long long v = strtoll(s + 1, &e, 10);
        if (errno != 0 || e == s + 1 || *e != 0 || v < 0)
            return -EINVAL;
        *ret = (time_t)v;
        return 0;
    }
    end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end)
        return -EINVAL;
    if (!streq(end, "Z") && !streq(end, "+00:00"))
        return -EINVAL;
    if (tm.tm_year < 70)
        return -EINVAL;
    *ret = timegm(&tm);
    return 0;
}

/* ---- bundle ---- */

NtCertBundle *nt_cert_bundle_new(void) {
    return nt_calloc(1, sizeof(NtCertBundle));
}

NtCertBundle *nt_cert_bundle_free(NtCertBundle *b) {
    if (!b)
        return NULL;
    for (size_t i = 0; i < b->n_entries; i++)
        free(b->entries[i].der);
    free(b);
    return NULL;
}

/* Telling a certificate's role means parsing it, RSA-4096 key and all (some 100 us with OpenSSL
 * 3's decoders): attestd would do it on every request for the ASK of the certificate table,
 * whose GUID does not say ASK or ASVK, while verification itself needs no parse on a cached
 * chain. The role is a function of the DER bytes alone, so the roles of the certificates seen
 * last are remembered by the SHA-256 of their DER (a small table overwritten round-robin; only
 * certificates whose role was told). */
#define ROLE_MEMO_SLOTS 32u

static struct {
    uint8_t key[SHA256_DIGEST_LENGTH];
    NtCertRole role;
} role_memo[ROLE_MEMO_SLOTS];
static unsigned role_memo_used, role_memo_next;
static pthread_mutex_t role_memo_lock = PTHREAD_MUTEX_INITIALIZER;

static NtCertRole role_memo_get(const uint8_t key[static SHA256_DIGEST_LENGTH]) {
    NtCertRole role = _NT_CERT_ROLE_INVALID;
    pthread_mutex_lock(&role_memo_lock);
    for (unsigned i = 0; i < role_memo_used && role < 0; i++)
        if (memcmp(role_memo[i].key, key, SHA256_DIGEST_LENGTH) == 0)
            role = role_memo[i].role;
    pthread_mutex_unlock(&role_memo_lock);
    return role;
}

static void role_memo_put(const uint8_t key[static SHA256_DIGEST_LENGTH], NtCertRole role) {
    unsigned i;
    pthread_mutex_lock(&role_memo_lock);
    if (role_memo_used < ROLE_MEMO_SLOTS)
        i = role_memo_used++;
    else
        i = role_memo_next++ % ROLE_MEMO_SLOTS;
    memcpy(role_memo[i].key, key, SHA256_DIGEST_LENGTH);
    role_memo[i].role = role;
    pthread_mutex_unlock(&role_memo_lock);
}

/* The profile checks are a function of the DER bytes and the role alone; a cold chain of
 * certificates seen before (the same ASK for every chip, a VCEK per TCB) need not redo them.
 * Results are remembered like roles, by the SHA-256 of the DER; the first sight of a
 * certificate always runs every check. */
#define PROFILE_MEMO_SLOTS 64u

static struct {
    uint8_t key[SHA256_DIGEST_LENGTH];
    NtCertRole role;
    int result;
    char why[128];
} profile_memo[PROFILE_MEMO_SLOTS];
static unsigned profile_memo_used, profile_memo_next;
static pthread_mutex_t profile_memo_lock = PTHREAD_MUTEX_INITIALIZER;

int nt_cert_check_profile_memo(const uint8_t *der, size_t der_len, X509 *x, NtCertRole role,
                               char *why, size_t why_size) {
    uint8_t key[SHA256_DIGEST_LENGTH];
    char w[128] = "";
    int r;

    if (!SHA256(der, der_len, key))
        return nt_cert_check_profile(x, role, why, why_size);
    pthread_mutex_lock(&profile_memo_lock);
    for (unsigned i = 0; i < profile_memo_used; i++)
        if (profile_memo[i].role == role &&
            memcmp(profile_memo[i].key, key, SHA256_DIGEST_LENGTH) == 0) {
            r = profile_memo[i].result;
            if (r < 0)
                snprintf(why, why_size, "%s", profile_memo[i].why);
            pthread_mutex_unlock(&profile_memo_lock);
            return r;
        }
    pthread_mutex_unlock(&profile_memo_lock);

    r = nt_cert_check_profile(x, role, w, sizeof w);
    if (r < 0)
        snprintf(why, why_size, "%s", w);
    pthread_mutex_lock(&profile_memo_lock);
    unsigned i = profile_memo_used < PROFILE_MEMO_SLOTS ? profile_memo_used++
                                                        : profile_memo_next++ % PROFILE_MEMO_SLOTS;
    memcpy(profile_memo[i].key, key, SHA256_DIGEST_LENGTH);
    profile_memo[i].role = role;
    profile_memo[i].result = r;
    snprintf(profile_memo[i].why, sizeof profile_memo[i].why, "%s", w);
    pthread_mutex_unlock(&profile_memo_lock);
    return r;
}

static int bundle_add_der(NtCertBundle *b, const uint8_t *der, size_t len, NtCertRole role,
                          const char *origin) {
    if (b->n_entries >= NT_CERT_BUNDLE_MAX)
        return -E2BIG;
    if (len == 0 || len > CERT_FILE_MAX)
        return -EBADMSG;
    if (role < 0 || role >= _NT_CERT_ROLE_MAX) {
        uint8_t key[SHA256_DIGEST_LENGTH];
        if (!SHA256(der, len, key))
            return nt_openssl_error(-EIO, "SHA256");
        role = role_memo_get(key);
        if (role < 0) {
            _cleanup_(X509_freep) X509 *x = NULL;
            int r = nt_cert_from_der(der, len, &x);
            if (r < 0)
                return r;
            role = nt_cert_role_detect(x);
            if (role < 0) {
                log_debug("Cannot tell the role of certificate %s.", origin ? origin : "");
                return -EBADMSG;
            }
            role_memo_put(key, role);
        }
    }
    uint8_t *copy = nt_malloc(len);
    if (!copy)
        return -ENOMEM;
    memcpy(copy, der, len);
    NtCertBundleEntry *e = &b->entries[b->n_entries++];
    *e = (NtCertBundleEntry){.role = role, .der = copy, .der_len = len};
    snprintf(e->origin, sizeof e->origin, "%s", origin ? origin : "certificate");
    return 0;
}

static bool looks_pem(const uint8_t *data, size_t len) {
    static const char tag[] = "-----BEGIN ";
    for (size_t i = 0; i + (sizeof(tag) - 1) <= len; i++)
        if (memcmp(data + i, tag, (sizeof(tag) - 1)) == 0)
            return true;
    return false;
}

/* Ends an add of several entries: r < 0, or nothing added when require_any (-ENOENT), drops the
 * entries added since n_before, so that a failed add leaves the bundle as it was. */
static int bundle_add_done(NtCertBundle *b, size_t n_before, bool require_any, int r) {
    if (r >= 0 && require_any && b->n_entries == n_before)
        r = -ENOENT;
    if (r < 0) {
        while (b->n_entries > n_before)
            free(b->entries[--b->n_entries].der);
        return r;
    }
    return 0;
}

int nt_cert_bundle_add(NtCertBundle *b, const uint8_t *data, size_t len, NtCertRole role,
                       const char *origin) {
    size_t n_before = b->n_entries;
    int r = 0;

    if (!data || len == 0 || len > CERT_FILE_MAX)
        return -EBADMSG;
    if (!looks_pem(data, len))
        return bundle_add_der(b, data, len, role, origin);

    _cleanup_(BIO_free_allp) BIO *bio = BIO_new_mem_buf(data, (int)len);
    if (!bio)
        return -ENOMEM;
    for (unsigned n = 0;; n++) {
        char *name = NULL, *header = NULL;
        unsigned char *der = NULL;
        long der_len = 0;
        char o[128];

        if (PEM_read_bio(bio, &name, &header, &der, &der_len) != 1) {
            ERR_clear_error();
            if (n == 0)
                r = -EBADMSG;
            break;
        }
        if (streq(name, "CERTIFICATE") || streq(name, "X509 CERTIFICATE")) {
            if (n == 0)
                snprintf(o, sizeof o, "%s", origin ? origin : "certificate");
            else
                snprintf(o, sizeof o, "%s #%u", origin ? origin : "certificate", n + 1);
            r = bundle_add_der(b, der, (size_t)der_len, n == 0 ? role : _NT_CERT_ROLE_INVALID, o);
        } else
            r = -EBADMSG;
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(der);
        if (r < 0)
            break;
    }
    return bundle_add_done(b, n_before, false, r);
}

int nt_cert_bundle_add_table(NtCertBundle *b, const uint8_t *table, size_t len) {
    _cleanup_free_ SnpCertTable *t = nt_calloc(1, sizeof(SnpCertTable));
    size_t n_before = b->n_entries;
    int r;

    if (!t)
        return -ENOMEM;
    r = snp_cert_table_parse(table, len, t);
    if (r < 0)
        return r;
    for (size_t i = 0; i < t->n_entries; i++) {
        const SnpCertEntry *e = &t->entries[i];
        NtCertRole role = _NT_CERT_ROLE_INVALID;
        char o[128];

        if (e->kind == SNP_CERT_VCEK)
            role = NT_CERT_ROLE_VCEK;
        else if (e->kind == SNP_CERT_VLEK)
            role = NT_CERT_ROLE_VLEK;
        else if (e->kind == SNP_CERT_ARK)
            role = NT_CERT_ROLE_ARK;
        snprintf(o, sizeof o, "cert table entry %zu (%s)", i, snp_cert_kind_to_string(e->kind));
        r = bundle_add_der(b, e->der, e->der_len, role, o);
        if (r == -EBADMSG && e->kind == SNP_CERT_OTHER) {
            /* Hosts may add entries of their own under other GUIDs: not ours to judge. */
            log_debug("Ignoring unrecognised certificate table entry %zu.", i);
            r = 0;
            continue;
        }
        if (r < 0)
            break;
    }
    return bundle_add_done(b, n_before, true, r);
}

int nt_cert_bundle_add_dir(NtCertBundle *b, const char *dir) {
    static const struct {
        const char *name;
        NtCertRole role;
    } files[] = {
        {"vcek", NT_CERT_ROLE_VCEK}, {"vlek", NT_CERT_ROLE_VLEK}, {"ask", NT_CERT_ROLE_ASK},
        {"asvk", NT_CERT_ROLE_ASVK}, {"ark", NT_CERT_ROLE_ARK},
    };
    static const char *const exts[] = {"pem", "der", "crt", "cer"};
    size_t n_before = b->n_entries;
    int r = 0;

    for (size_t i = 0; i < ELEMENTSOF(files) && r >= 0; i++)
        for (size_t j = 0; j < ELEMENTSOF(exts); j++) {
            _cleanup_free_ uint8_t *data = NULL;
            size_t len = 0;
            char path[4096], origin[128];

            if ((size_t)snprintf(path, sizeof path, "%s/%s.%s", dir, files[i].name, exts[j]) >=
                sizeof path) {
                r = -ENAMETOOLONG;
                break;
            }
            r = read_full_file(path, CERT_FILE_MAX, &data, &len);
            if (r == -ENOENT) {
                r = 0;
                continue;
            }
            if (r < 0)
                break;
            snprintf(origin, sizeof origin, "%s.%s", files[i].name, exts[j]);
            r = nt_cert_bundle_add(b, data, len, files[i].role, origin);
            if (r < 0)
                break;
        }
    return bundle_add_done(b, n_before, true, r);
}

int nt_cert_bundle_add_file(NtCertBundle *b, const char *path) {
    _cleanup_free_ uint8_t *data = NULL;
    size_t len = 0;
    const char *base = strrchr(path, '/');
    int r = read_full_file(path, CERT_FILE_MAX, &data, &len);
    if (r < 0)
        return r;
    return nt_cert_bundle_add(b, data, len, _NT_CERT_ROLE_INVALID, base ? base + 1 : path);
}

const NtCertBundleEntry *nt_cert_bundle_find(const NtCertBundle *b, NtCertRole role) {
    if (!b)
        return NULL;
    for (size_t i = 0; i < b->n_entries; i++)
        if (b->entries[i].role == role)
            return &b->entries[i];
    return NULL;
}
