/* SPDX-License-Identifier: Apache-2.0 */
/*
 * AMD CRLs (see crl.h). The CRL is parsed once into a sorted table of revoked serials; the TBS
 * signature algorithm is read from the DER itself (OpenSSL 3.0 has no accessor for it), so that
 * the outer and inner AlgorithmIdentifiers are both checked, as for certificates.
 */
#include "verify/crl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/openssl-util.h"
#include "verify/chain.h"

DEFINE_TRIVIAL_CLEANUP_FUNC(X509_ALGOR *, X509_ALGOR_free);

int nt_serial_from_asn1(const ASN1_INTEGER *i, NtSerial *ret) {
    NtSerial s = {.len = 0};

    if (!i || ASN1_STRING_type(i) != V_ASN1_INTEGER)
        return -EBADMSG; /* V_ASN1_NEG_INTEGER: negative */
    const uint8_t *p = ASN1_STRING_get0_data(i);
    int n = ASN1_STRING_length(i);
    if (n < 0)
        return -EBADMSG;
    while (n > 0 && *p == 0)
        p++, n--;
    if ((size_t)n > NT_SERIAL_MAX)
        return -EBADMSG;
    if (n > 0)
        memcpy(s.b, p, (size_t)n);
    s.len = (uint8_t)n;
    *ret = s;
    return 0;
}

void nt_serial_format(const NtSerial *s, char *buf, size_t size) {
    size_t o;

    if (size < 5) {
        if (size > 0)
            buf[0] = 0;
        return;
    }
    o = (size_t)snprintf(buf, size, "0x");
    if (s->len == 0)
        (void)snprintf(buf + o, size - o, "00");
    for (size_t k = 0; k < s->len && o + 3 <= size; k++)
        o += (size_t)snprintf(buf + o, size - o, "%02x", s->b[k]);
}

static int serial_cmp(const NtSerial *a, const NtSerial *b) {
    if (a->len != b->len)
        return a->len < b->len ? -1 : 1;
    return memcmp(a->b, b->b, a->len);
}

static int entry_cmp(const void *x, const void *y) {
    const NtCrlEntry *a = x, *b = y;
    int c = serial_cmp(&a->serial, &b->serial);
    if (c != 0)
        return c;
    return a->revoked_at < b->revoked_at ? -1 : a->revoked_at > b->revoked_at;
}

static bool exts_critical(const STACK_OF(X509_EXTENSION) * exts) {
    for (int k = 0; k < sk_X509_EXTENSION_num(exts); k++)
        if (X509_EXTENSION_get_critical(sk_X509_EXTENSION_value(exts, k)))
            return true;
    return false;
}

NtCrl *nt_crl_free(NtCrl *c) {
    if (!c)
        return NULL;
    X509_CRL_free(c->crl);
    free(c->revoked);
    free(c);
    return NULL;
}

int nt_crl_parse(const uint8_t *der, size_t len, NtCrl **ret) {
    _cleanup_(nt_crl_freep) NtCrl *c = NULL;
    const uint8_t *p = der;
    int r;

    if (!der || len == 0 || len > NT_CRL_MAX_SIZE)
        return -EBADMSG;
    c = nt_calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    c->crl = d2i_X509_CRL(NULL, &p, (long)len);
    if (!c->crl)
        return nt_openssl_error(-EBADMSG, "d2i_X509_CRL");
    if ((size_t)(p - der) != len) {
        log_debug("CRL has %zu trailing bytes.", len - (size_t)(p - der));
        return -EBADMSG;
    }
    long version = X509_CRL_get_version(c->crl);
    if (version != X509_CRL_VERSION_1 && version != X509_CRL_VERSION_2)
        return -EBADMSG;
    if (nt_asn1_time_to_time_t(X509_CRL_get0_lastUpdate(c->crl), &c->this_update) < 0 ||
        nt_asn1_time_to_time_t(X509_CRL_get0_nextUpdate(c->crl), &c->next_update) < 0)
        return -EBADMSG; /* nextUpdate is required (RFC 5280 5.1.2.5; AMD's has it) */
    if (c->next_update < c->this_update)
        return -EBADMSG;
    /* Indirect CRLs, delta CRLs, issuing distribution points: nothing AMD uses and nothing this
     * parser would honour, so a critical extension anywhere is refused (RFC 5280 5.2). */
    if (exts_critical(X509_CRL_get0_extensions(c->crl)))
        return -EBADMSG;
    if (X509_NAME_get_text_by_NID(X509_CRL_get_issuer(c->crl), NID_commonName, c->issuer_cn,
                                  sizeof c->issuer_cn) <= 0)
        (void)snprintf(c->issuer_cn, sizeof c->issuer_cn, "(no CN)");

    STACK_OF(X509_REVOKED) *rev = X509_CRL_get_REVOKED(c->crl);
    int n = sk_X509_REVOKED_num(rev);
    if (n > 0) {
        c->revoked = nt_calloc((size_t)n, sizeof *c->revoked);
        if (!c->revoked)
            return -ENOMEM;
    }
    for (int k = 0; k < n; k++) {
        const X509_REVOKED *e = sk_X509_REVOKED_value(rev, k);
        NtCrlEntry *out = &c->revoked[c->n_revoked];
        r = nt_serial_from_asn1(X509_REVOKED_get0_serialNumber(e), &out->serial);
        if (r < 0)
            return r;
        if (nt_asn1_time_to_time_t(X509_REVOKED_get0_revocationDate(e), &out->revoked_at) < 0)
            return -EBADMSG;
        if (exts_critical(X509_REVOKED_get0_extensions(e)))
            return -EBADMSG;
        c->n_revoked++;
    }
    if (c->n_revoked > 1)
        qsort(c->revoked, c->n_revoked, sizeof *c->revoked, entry_cmp);
    *ret = TAKE_PTR(c);
    return 0;
}

/* The TBSCertList's signature AlgorithmIdentifier: CertificateList ::= SEQUENCE { TBSCertList
 * ::= SEQUENCE { version INTEGER OPTIONAL, signature AlgorithmIdentifier, ... }, ... }. */
static int tbs_algor(X509_CRL *crl, X509_ALGOR **ret) {
    _cleanup_free_ uint8_t *der = NULL;
    const uint8_t *p, *q;
    long l;
    int tag, cls, n;

    n = i2d_X509_CRL(crl, &der);
    if (n <= 0)
        return -EBADMSG;
    p = der;
    if (ASN1_get_object(&p, &l, &tag, &cls, n) & 0x80 || tag != V_ASN1_SEQUENCE)
        return -EBADMSG;
    if (ASN1_get_object(&p, &l, &tag, &cls, der + n - p) & 0x80 || tag != V_ASN1_SEQUENCE)
        return -EBADMSG;
    q = p;
    if (ASN1_get_object(&q, &l, &tag, &cls, der + n - p) & 0x80)
        return -EBADMSG;
    if (tag == V_ASN1_INTEGER && cls == V_ASN1_UNIVERSAL)
        p = q + l;
    if (p >= der + n)
        return -EBADMSG;
    X509_ALGOR *a = d2i_X509_ALGOR(NULL, &p, der + n - p);
    if (!a)
        return nt_openssl_error(-EBADMSG, "d2i_X509_ALGOR");
    *ret = a;
    return 0;
}

int nt_crl_check_sig_scheme(const NtCrl *c) {
    _cleanup_(X509_ALGOR_freep) X509_ALGOR *inner = NULL;
    const X509_ALGOR *outer = NULL;
    int r;

    X509_CRL_get0_signature(c->crl, NULL, &outer);
    r = nt_sig_algor_check_pss(outer);
    if (r < 0)
        return r;
    if (tbs_algor(c->crl, &inner) < 0)
        return -EOPNOTSUPP;
    r = nt_sig_algor_check_pss(inner);
    if (r < 0)
        return r;
    if (X509_ALGOR_cmp(outer, inner) != 0)
        return -EOPNOTSUPP;
    return 0;
}

int nt_crl_verify_signed_by(const NtCrl *c, X509 *ark) {
    int r = nt_crl_check_sig_scheme(c);
    if (r < 0)
        return r;
    if (X509_NAME_cmp(X509_CRL_get_issuer(c->crl), X509_get_subject_name(ark)) != 0)
        return -EKEYREJECTED;
    EVP_PKEY *k = X509_get0_pubkey(ark);
    if (!k || !(EVP_PKEY_is_a(k, "RSA") || EVP_PKEY_is_a(k, "RSA-PSS")) ||
        EVP_PKEY_get_bits(k) != 4096)
        return -EOPNOTSUPP;
    if (X509_CRL_verify(c->crl, k) != 1)
        return nt_openssl_error(-EKEYREJECTED, "X509_CRL_verify");
    return 0;
}

int nt_crl_check_time(const NtCrl *c, time_t at, int64_t max_staleness_s) {
    if (at < c->this_update)
        return -EKEYREJECTED;
    if (max_staleness_s < 0)
        max_staleness_s = 0;
    /* at - next_update without overflow: both come from 4-digit-year ASN.1 times or time(). */
    if ((int64_t)at > (int64_t)c->next_update &&
        (int64_t)at - (int64_t)c->next_update > max_staleness_s)
        return -EKEYEXPIRED;
    return 0;
}

const NtCrlEntry *nt_crl_find(const NtCrl *c, const NtSerial *s) {
    size_t lo = 0, hi = c->n_revoked;

    /* Lower bound, so that of duplicate entries the earliest date is the one reported. */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (serial_cmp(&c->revoked[mid].serial, s) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < c->n_revoked && serial_cmp(&c->revoked[lo].serial, s) == 0)
        return &c->revoked[lo];
    return NULL;
}
