/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Trust anchors (see anchors.h). The built-in certificates come from anchors-data.c, generated
 * from AMD's public certificates; they are re-checked on every load so that a corrupted table
 * fails loudly instead of silently trusting the wrong key.
 */
#include "verify/anchors.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <openssl/pem.h>

#include "core/alloc.h"
#include "core/log.h"
#include "core/openssl-util.h"

static int x509_to_der(X509 *x, uint8_t **ret, size_t *ret_len) {
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    if (n <= 0)
        return nt_openssl_error(-ENOMEM, "i2d_X509");
    uint8_t *copy = nt_malloc((size_t)n);
    if (!copy) {
        OPENSSL_free(der);
        return -ENOMEM;
    }
    memcpy(copy, der, (size_t)n);
    OPENSSL_free(der);
    *ret = copy;
    *ret_len = (size_t)n;
    return 0;
}

static int parse_one(const uint8_t *data, size_t len, X509 **ret) {
    static const char tag[] = "-----BEGIN ";
    if (len >= (sizeof(tag) - 1) && memmem(data, len, tag, (sizeof(tag) - 1))) {
        _cleanup_(BIO_free_allp) BIO *bio = BIO_new_mem_buf(data, (int)len);
        if (!bio)
            return -ENOMEM;
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (!x)
            return nt_openssl_error(-EBADMSG, "PEM_read_bio_X509");
        *ret = x;
        return 0;
    }
    return nt_cert_from_der(data, len, ret);
}

static int anchor_append(NtAnchorSet *s, X509 **x, SnpProduct product, NtCertRole role,
                         bool builtin, const char *label) {
    NtAnchor *a;
    int r;

    if (s->n_items >= NT_ANCHORS_MAX)
        return -E2BIG;
    a = &s->items[s->n_items];
    *a = (NtAnchor){.product = product, .role = role, .builtin = builtin};
    r = x509_to_der(*x, &a->der, &a->der_len);
    if (r < 0)
        return r;
    a->cert = TAKE_PTR(*x);
    r = nt_cert_check_profile(a->cert, role, a->profile_why, sizeof a->profile_why);
    if (r >= 0)
        r = nt_cert_check_ca(a->cert, a->profile_why, sizeof a->profile_why);
    a->profile_ok = r >= 0;
    snprintf(a->label, sizeof a->label, "%s-%s (%s)",
             role == NT_CERT_ROLE_ARK    ? "ARK"
             : role == NT_CERT_ROLE_ASVK ? "ASVK"
                                         : "ASK",
             snp_product_to_string(product), label);
    s->n_items++;
    return 0;
}

/* Checks an ARK candidate: names an ARK of a known product, is self-signed with the AMD scheme. */
static int check_ark(X509 *x, SnpProduct *ret_product) {
    if (nt_cert_role_detect(x) != NT_CERT_ROLE_ARK)
        return -EBADMSG;
    SnpProduct p = nt_cert_ca_product(x);
    if (p < 0)
        return -EBADMSG;
    int r = nt_cert_verify_signed_by(x, x);
    if (r < 0)
        return r;
    *ret_product = p;
    return 0;
}

static int load_builtin_checked(NtAnchorSet *s) {
    int r;

    /* ARKs first, so that each intermediate can be checked against its ARK. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < nt_builtin_certs_count; i++) {
            const NtBuiltinCert *b = &nt_builtin_certs[i];
            _cleanup_(X509_freep) X509 *x = NULL;
            SnpProduct p;

            if ((b->role == NT_CERT_ROLE_ARK) != (pass == 0))
                continue;
            r = parse_one((const uint8_t *)b->pem, strlen(b->pem), &x);
            if (r < 0)
                return r;
            if (b->role == NT_CERT_ROLE_ARK) {
                r = check_ark(x, &p);
                if (r < 0)
                    return r;
                if (p != b->product)
                    return -EBADMSG;
            } else {
                const NtAnchor *ark = NULL;
                if (nt_cert_role_detect(x) != b->role || nt_cert_ca_product(x) != b->product)
                    return -EBADMSG;
                for (size_t j = 0; j < s->n_items; j++)
                    if (s->items[j].role == NT_CERT_ROLE_ARK && s->items[j].product == b->product)
                        ark = &s->items[j];
                if (!ark)
                    return -EBADMSG;
                r = nt_cert_verify_signed_by(x, ark->cert);
                if (r < 0)
                    return r;
            }
            r = anchor_append(s, &x, b->product, b->role, true, "built-in");
            if (r < 0)
                return r;
        }
    return 0;
}

/* The built-in certificates are constant: they are parsed and checked once per process, and
 * every set loads references to them. */
static NtAnchorSet builtin_set;
static int builtin_result;
static pthread_once_t builtin_once = PTHREAD_ONCE_INIT;

static void builtin_load_once(void) {
    builtin_result = load_builtin_checked(&builtin_set);
    if (builtin_result < 0)
        nt_anchor_set_clear(&builtin_set);
}

int nt_anchor_set_load_builtin(NtAnchorSet *s) {
    (void)pthread_once(&builtin_once, builtin_load_once);
    if (builtin_result < 0)
        return builtin_result;
    if (s->n_items + builtin_set.n_items > NT_ANCHORS_MAX)
        return -E2BIG;
    for (size_t i = 0; i < builtin_set.n_items; i++) {
        const NtAnchor *b = &builtin_set.items[i];
        NtAnchor *a = &s->items[s->n_items];
        *a = *b;
        a->der = nt_malloc(b->der_len);
        if (!a->der || X509_up_ref(b->cert) != 1) {
            free(a->der);
            return -ENOMEM;
        }
        memcpy(a->der, b->der, b->der_len);
        s->n_items++;
    }
    return 0;
}

const NtAnchor *nt_anchor_set_find_ark_der(const NtAnchorSet *s, const uint8_t *der, size_t len) {
    for (size_t i = 0; i < s->n_items; i++) {
        const NtAnchor *a = &s->items[i];
        if (a->role == NT_CERT_ROLE_ARK && a->der_len == len && memcmp(a->der, der, len) == 0)
            return a;
    }
    return NULL;
}

const NtAnchor *nt_anchor_set_find_ark_key(const NtAnchorSet *s, X509 *x) {
    EVP_PKEY *k = X509_get0_pubkey(x);
    for (size_t i = 0; k && i < s->n_items; i++) {
        const NtAnchor *a = &s->items[i];
        if (a->role == NT_CERT_ROLE_ARK && EVP_PKEY_eq(k, X509_get0_pubkey(a->cert)) == 1)
            return a;
    }
    return NULL;
}

const NtAnchor *nt_anchor_set_find_ark(const NtAnchorSet *s, X509 *x) {
    EVP_PKEY *k = X509_get0_pubkey(x);
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    const NtAnchor *found = NULL;

    for (size_t i = 0; i < s->n_items && !found; i++) {
        const NtAnchor *a = &s->items[i];
        if (a->role != NT_CERT_ROLE_ARK)
            continue;
        if (n > 0 && (size_t)n == a->der_len && memcmp(der, a->der, a->der_len) == 0)
            found = a;
        else if (k && EVP_PKEY_eq(k, X509_get0_pubkey(a->cert)) == 1)
            found = a;
    }
    OPENSSL_free(der);
    return found;
}

int nt_anchor_set_add_ark(NtAnchorSet *s, const uint8_t *data, size_t len, const char *label) {
    _cleanup_(X509_freep) X509 *x = NULL;
    SnpProduct p;
    int r;

    r = parse_one(data, len, &x);
    if (r < 0)
        return r;
    r = check_ark(x, &p);
    if (r < 0)
        return r;
    for (size_t i = 0; i < s->n_items; i++)
        if (s->items[i].role == NT_CERT_ROLE_ARK && X509_cmp(s->items[i].cert, x) == 0)
            return 0;
    return anchor_append(s, &x, p, NT_CERT_ROLE_ARK, false, label ? label : "configured");
}

void nt_anchor_set_clear(NtAnchorSet *s) {
    for (size_t i = 0; i < s->n_items; i++) {
        X509_free(s->items[i].cert);
        free(s->items[i].der);
    }
    s->n_items = 0;
}
