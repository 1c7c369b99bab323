/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The report verifier (see verify.h).
 *
 * Order of the evidence checks, each depending on the ones before it:
 *   report_format -> signing_key -> certificates -> ark -> cert_chain -> cert_validity
 *   -> [revocation] -> report_signature -> product -> tcb_vs_cert -> hwid
 * "revocation" runs only with a revocation source, on cold and cached chains alike.
 * The first failure ends the evidence checks (nothing in an unauthenticated report is worth
 * appraising); policy checks run only on authentic reports. The report signature is checked
 * before any report field is compared with the certificate, so a tampered report is always
 * reported as "report_signature", never as a confusing TCB or hwID mismatch.
 *
 * The chain cache maps SHA-256(all supplied certificates) to the verified endorsement key. A hit
 * skips all X.509 work; the entry is only used for verification times inside the intersection
 * of the chain's validity periods, so an expired chain is re-verified and fails with the right
 * message.
 */
#include "verify/verify.h"

#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>

#include "core/alloc.h"
#include "core/encoding.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/openssl-util.h"
#include "verify/anchors.h"
#include "verify/crl.h"

#define CACHE_SLOTS 256u
#define CACHE_PROBE 8u
#define ANCHOR_FILE_MAX (256u * 1024u)
#define CRL_SLOTS 16u

typedef struct ChainInfo {
    uint8_t key[32];
    EVP_PKEY *pkey; /* the VCEK/VLEK public key (a reference) */
    NtCertRole role;
    NtAmdExt ext;
    SnpProduct product; /* the anchor's product */
    time_t not_before, not_after;
    char anchor[96];
    const NtAnchor *ark; /* the ARK the chain ends in (anchors are never removed) */
    /* For the revocation check, also on cache hits: the endorsement key's and the
     * intermediate's serial numbers (serials_ok false if either is not a usable serial). */
    bool serials_ok;
    NtCertRole serial_role[2];
    NtSerial serial[2];
} ChainInfo;

typedef struct ChainEntry {
    bool used;
    ChainInfo info;
} ChainEntry;

/* A parsed CRL, keyed by the SHA-256 of its DER, with its signature checked against each anchor
 * it was presented with (bit i: anchors.items[i]). Read under the read lock, changed under the
 * write lock. */
typedef struct CrlSlot {
    bool used;
    uint8_t key[32];
    NtCrl *crl;
    int scheme; /* nt_crl_check_sig_scheme() */
    uint32_t sig_checked, sig_ok;
} CrlSlot;

struct NtVerifier {
    pthread_rwlock_t lock; /* anchors, source, cache */
    NtAnchorSet anchors;
    ChainEntry cache[CACHE_SLOTS];
    unsigned evict_next;
    NtVcekSource source;
    bool has_source;
    NtRevocationSource rev;
    bool has_rev;
    CrlSlot crls[CRL_SLOTS];
    unsigned crl_evict_next;
    EVP_MD *sha384, *sha256;
    uint64_t hits, misses; /* atomic */
};

/* Read and write lock guards: released by the cleanup attribute on every exit path. */
static void unlockp(pthread_rwlock_t **l) {
    if (*l)
        (void)pthread_rwlock_unlock(*l);
}
#define RDLOCK(v)                                                                                  \
    _cleanup_(unlockp) _unused_ pthread_rwlock_t *NT_CONCAT(guard_, __COUNTER__) =                 \
        (pthread_rwlock_rdlock(&(v)->lock), &(v)->lock)
#define WRLOCK(v)                                                                                  \
    _cleanup_(unlockp) _unused_ pthread_rwlock_t *NT_CONCAT(guard_, __COUNTER__) =                 \
        (pthread_rwlock_wrlock(&(v)->lock), &(v)->lock)

static void chain_info_done(ChainInfo *ci) {
    EVP_PKEY_free(ci->pkey);
    ci->pkey = NULL;
}

int nt_verifier_new(NtVerifier **ret) {
    NtVerifier *v = nt_calloc(1, sizeof(NtVerifier));
    int r;

    if (!v)
        return -ENOMEM;
    if (pthread_rwlock_init(&v->lock, NULL) != 0) {
        free(v);
        return -ENOMEM;
    }
    v->sha384 = EVP_MD_fetch(NULL, "SHA384", NULL);
    v->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!v->sha384 || !v->sha256) {
        nt_verifier_free(v);
        return nt_openssl_error(-EIO, "EVP_MD_fetch");
    }
    r = nt_anchor_set_load_builtin(&v->anchors);
    if (r < 0) {
        log_debug_errno(r, "Built-in AMD anchors failed their self-check: %m");
        nt_verifier_free(v);
        return r;
    }
    *ret = v;
    return 0;
}

static void cache_clear_locked(NtVerifier *v) {
    for (size_t i = 0; i < CACHE_SLOTS; i++)
        if (v->cache[i].used) {
            chain_info_done(&v->cache[i].info);
            v->cache[i].used = false;
        }
    for (size_t i = 0; i < CRL_SLOTS; i++) {
        v->crls[i].crl = nt_crl_free(v->crls[i].crl);
        v->crls[i].used = false;
    }
}

NtVerifier *nt_verifier_free(NtVerifier *v) {
    if (!v)
        return NULL;
    cache_clear_locked(v);
    nt_anchor_set_clear(&v->anchors);
    EVP_MD_free(v->sha384);
    EVP_MD_free(v->sha256);
    (void)pthread_rwlock_destroy(&v->lock);
    free(v);
    return NULL;
}

int nt_verifier_add_trust_anchor(NtVerifier *v, const uint8_t *data, size_t len,
                                 const char *label) {
    WRLOCK(v);
    return nt_anchor_set_add_ark(&v->anchors, data, len, label);
}

int nt_verifier_add_trust_anchor_file(NtVerifier *v, const char *path) {
    _cleanup_free_ uint8_t *data = NULL;
    size_t len = 0;
    int r = read_full_file(path, ANCHOR_FILE_MAX, &data, &len);
    if (r < 0)
        return r;
    return nt_verifier_add_trust_anchor(v, data, len, path);
}

void nt_verifier_set_vcek_source(NtVerifier *v, const NtVcekSource *src) {
    WRLOCK(v);
    v->has_source = src != NULL;
    if (src)
        v->source = *src;
}

void nt_verifier_set_revocation_source(NtVerifier *v, const NtRevocationSource *src) {
    WRLOCK(v);
    v->has_rev = src && src->mode != NT_REVOCATION_OFF && src->get_crl;
    if (v->has_rev)
        v->rev = *src;
}

void nt_verifier_cache_stats(NtVerifier *v, uint64_t *ret_hits, uint64_t *ret_misses) {
    *ret_hits = __atomic_load_n(&v->hits, __ATOMIC_RELAXED);
    *ret_misses = __atomic_load_n(&v->misses, __ATOMIC_RELAXED);
}

void nt_verifier_cache_flush(NtVerifier *v) {
    WRLOCK(v);
    cache_clear_locked(v);
}

/* ---- report signature ---- */

/* The order n of P-384, big-endian. */
static const uint8_t p384_order[48] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
};

/* Converts a little-endian 72-byte signature component to a DER INTEGER at out; checks the
 * padding and the range 1..n-1. Returns the bytes written or -EBADMSG. */
static int component_to_der(const uint8_t le[SNP_SIG_COMPONENT_SIZE], uint8_t *out) {
    uint8_t be[48];
    size_t i, skip = 0;
    uint8_t nz = 0;

    for (i = 48; i < SNP_SIG_COMPONENT_SIZE; i++)
        nz |= le[i];
    if (nz)
        return -EBADMSG;
    for (i = 0; i < 48; i++) {
        be[i] = le[47 - i];
        nz |= be[i];
    }
    if (!nz || memcmp(be, p384_order, 48) >= 0)
        return -EBADMSG;
    while (be[skip] == 0)
        skip++;
    size_t len = 48 - skip, pad = be[skip] & 0x80 ? 1 : 0;
    out[0] = 0x02;
    out[1] = (uint8_t)(len + pad);
    out[2] = 0;
    memcpy(out + 2 + pad, be + skip, len);
    return (int)(2 + pad + len);
}

int nt_report_check_signature(const uint8_t report[SNP_REPORT_SIZE], EVP_PKEY *vcek,
                              const EVP_MD *sha384) {
    uint8_t der[2 + 2 * (2 + 49)];
    int rl, sl;

    rl = component_to_der(report + SNP_REPORT_SIGNED_SIZE, der + 2);
    if (rl < 0)
        return rl;
    sl = component_to_der(report + SNP_REPORT_SIGNED_SIZE + SNP_SIG_COMPONENT_SIZE, der + 2 + rl);
    if (sl < 0)
        return sl;
    der[0] = 0x30;
    der[1] = (uint8_t)(rl + sl);

    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -ENOMEM;
    if (EVP_DigestVerifyInit(ctx, NULL, sha384, NULL, vcek) != 1)
        return nt_openssl_error(-EIO, "EVP_DigestVerifyInit");
    if (EVP_DigestVerify(ctx, der, (size_t)(2 + rl + sl), report, SNP_REPORT_SIGNED_SIZE) != 1)
        return nt_openssl_error(-EKEYREJECTED, "EVP_DigestVerify");
    return 0;
}

/* ---- chain ---- */

typedef struct Certs {
    const NtCertBundleEntry *e[2 * NT_CERT_BUNDLE_MAX];
    X509 *x[2 * NT_CERT_BUNDLE_MAX];
    size_t n;
} Certs;

static void certs_done(Certs *c) {
    for (size_t i = 0; i < c->n; i++)
        X509_free(c->x[i]);
    c->n = 0;
}

/* The key covers the signing role and which entry was chosen as the end-entity certificate, not
 * only the bundle: one bundle may hold both a VCEK and a VLEK, and a report signed by the one must
 * never be checked against the cached key of the other. */
static int cache_key(NtVerifier *v, const Certs *c, NtCertRole role, size_t ek, uint8_t key[32]) {
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t sel[2] = {(uint8_t)role, (uint8_t)ek};

    assert(ek < c->n && ek <= UINT8_MAX);
    if (!ctx || EVP_DigestInit_ex(ctx, v->sha256, NULL) != 1)
        return nt_openssl_error(-ENOMEM, "EVP_DigestInit_ex");
    if (EVP_DigestUpdate(ctx, sel, sizeof sel) != 1)
        return nt_openssl_error(-EIO, "EVP_DigestUpdate");
    for (size_t i = 0; i < c->n; i++) {
        uint8_t hdr[5] = {(uint8_t)c->e[i]->role, (uint8_t)c->e[i]->der_len,
                          (uint8_t)(c->e[i]->der_len >> 8), (uint8_t)(c->e[i]->der_len >> 16),
                          (uint8_t)(c->e[i]->der_len >> 24)};
        if (EVP_DigestUpdate(ctx, hdr, sizeof hdr) != 1 ||
            EVP_DigestUpdate(ctx, c->e[i]->der, c->e[i]->der_len) != 1)
            return nt_openssl_error(-EIO, "EVP_DigestUpdate");
    }
    if (EVP_DigestFinal_ex(ctx, key, NULL) != 1)
        return nt_openssl_error(-EIO, "EVP_DigestFinal_ex");
    return 0;
}

static bool cache_lookup(NtVerifier *v, const uint8_t key[32], time_t at, ChainInfo *ret) {
    RDLOCK(v);
    unsigned h = ((unsigned)key[0] | (unsigned)key[1] << 8) % CACHE_SLOTS;
    for (unsigned i = 0; i < CACHE_PROBE; i++) {
        const ChainEntry *e = &v->cache[(h + i) % CACHE_SLOTS];
        if (!e->used || memcmp(e->info.key, key, 32) != 0)
            continue;
        if (at < e->info.not_before || at > e->info.not_after)
            return false;
        if (EVP_PKEY_up_ref(e->info.pkey) != 1)
            return false;
        *ret = e->info;
        return true;
    }
    return false;
}

static void cache_store(NtVerifier *v, const ChainInfo *ci) {
    WRLOCK(v);
    unsigned h = ((unsigned)ci->key[0] | (unsigned)ci->key[1] << 8) % CACHE_SLOTS;
    ChainEntry *slot = NULL;
    for (unsigned i = 0; i < CACHE_PROBE && !slot; i++) {
        ChainEntry *e = &v->cache[(h + i) % CACHE_SLOTS];
        if (!e->used || memcmp(e->info.key, ci->key, 32) == 0)
            slot = e;
    }
    if (!slot) /* probe window full: evict round-robin inside it */
        slot = &v->cache[(h + (v->evict_next++ % CACHE_PROBE)) % CACHE_SLOTS];
    if (EVP_PKEY_up_ref(ci->pkey) != 1)
        return;
    if (slot->used)
        chain_info_done(&slot->info);
    slot->info = *ci;
    slot->used = true;
}

static bool certs_have(const Certs *c, NtCertRole role) {
    for (size_t i = 0; i < c->n; i++)
        if (c->e[i]->role == role)
            return true;
    return false;
}

static const char *cn_of(X509 *x, char *buf, size_t size) {
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, (int)size) <= 0)
        snprintf(buf, size, "(no CN)");
    return buf;
}

static const char *role_str(NtCertRole r) {
    return nt_cert_role_to_string(r);
}

/* nt_cert_check_profile() for a supplied certificate, memoized by its DER (see chain.h). */
static int cert_profile(const NtCertBundleEntry *e, X509 *x, char *why, size_t why_size) {
    return nt_cert_check_profile_memo(e->der, e->der_len, x, e->role, why, why_size);
}

/* The "ark" check for an ARK that came with the evidence: byte-equal to a trusted anchor, or a
 * valid self-signed certificate with an anchor's key, name and a current validity (an anchor
 * re-encoded or re-issued by AMD). Anything else fails "ark" saying what differs. Returns 0
 * (*ret_anchor set) or 1 (recorded). */
static int check_evidence_ark(NtVerifier *v, const NtCertBundleEntry *e, X509 *x, time_t at,
                              const NtAnchor **ret_anchor, time_t *not_before, time_t *not_after,
                              NtVerdict *vd) {
    const NtAnchor *a, *same_key = NULL;
    char cn[64], acn[64], why[192], t[32];
    time_t nb, na;

    {
        RDLOCK(v);
        a = nt_anchor_set_find_ark_der(&v->anchors, e->der, e->der_len);
        if (!a)
            same_key = nt_anchor_set_find_ark_key(&v->anchors, x);
    }
    if (a) {
        *ret_anchor = a;
        return 0;
    }
    cn_of(x, cn, sizeof cn);
    if (!same_key) {
        nt_verdict_fail(vd, "ark", NT_CHECK_EVIDENCE, -ENOKEY, "a trusted anchor", cn,
                        "the ARK in the evidence (%s) is not a trusted anchor "
                        "(add it with --trust-anchor only if you trust it)",
                        e->origin);
        return 1;
    }
    cn_of(same_key->cert, acn, sizeof acn);
    if (X509_NAME_cmp(X509_get_subject_name(x), X509_get_subject_name(same_key->cert)) != 0)
        snprintf(why, sizeof why, "its subject (CN '%s') differs from the anchor's (CN '%s')", cn,
                 acn);
    else if (nt_cert_check_profile(x, NT_CERT_ROLE_ARK, why, sizeof why) < 0 ||
             nt_cert_check_ca(x, why, sizeof why) < 0)
        ; /* why says it */
    else if (nt_cert_verify_signed_by(x, x) < 0) {
        ERR_clear_error();
        snprintf(why, sizeof why,
                 "its self-signature does not verify (or is not RSASSA-PSS SHA-384)");
    } else if (nt_cert_validity(x, &nb, &na) < 0)
        snprintf(why, sizeof why, "its validity period is unreadable");
    else if (at > na) {
        nt_format_time(na, t);
        snprintf(why, sizeof why, "it expired at %s", t);
    } else if (at < nb) {
        nt_format_time(nb, t);
        snprintf(why, sizeof why, "it is not valid before %s", t);
    } else {
        /* Its validity bounds the cached chain's, like every certificate it was judged on. */
        *not_before = MAX(*not_before, nb);
        *not_after = MIN(*not_after, na);
        *ret_anchor = same_key;
        return 0;
    }
    nt_verdict_fail(vd, "ark", NT_CHECK_EVIDENCE, -EKEYREJECTED, same_key->label, cn,
                    "the ARK in the evidence (%s) has the key of the trusted %s, but %s", e->origin,
                    same_key->label, why);
    return 1;
}

/* Verifies the chain for the endorsement key in c->x[ek]. Returns 0 (ci filled), 1 (a check
 * failed and was recorded), or a negative errno. Called with no lock held; the anchor set is
 * append-only for the verifier's lifetime, so anchor pointers taken under the read lock stay
 * valid after it is released. */
static int verify_chain_cold(NtVerifier *v, Certs *c, size_t ek, NtCertRole role, time_t at,
                             int src_err, const char *src_name, NtVerdict *vd, ChainInfo *ci) {
    NtCertRole want_int = role == NT_CERT_ROLE_VCEK ? NT_CERT_ROLE_ASK : NT_CERT_ROLE_ASVK;
    X509 *ekx = c->x[ek], *inter = NULL;
    const char *inter_origin = NULL;
    const NtAnchor *anchor = NULL, *evidence_ark = NULL, *inter_anchor = NULL;
    time_t ark_nb = 0, ark_na = (time_t)INT64_MAX; /* an evidence ARK accepted by key */
    char cn[64], buf[64], t1[32], t2[32], why[192];
    int r;

    /* Every supplied certificate is what its file name / table GUID says it is, and is shaped
     * as RFC 5280 and AMD's issuance make it. An ARK is left to the "ark" check below, which
     * says how it differs from the anchor it claims to be. */
    for (size_t i = 0; i < c->n; i++) {
        if (c->e[i]->role == NT_CERT_ROLE_ARK)
            continue;
        NtCertRole got = nt_cert_role_detect(c->x[i]);
        if (got != c->e[i]->role) {
            nt_verdict_fail(vd, "certificates", NT_CHECK_EVIDENCE, -EBADMSG,
                            role_str(c->e[i]->role), role_str(got),
                            "%s is not a %s certificate (subject CN '%s')", c->e[i]->origin,
                            role_str(c->e[i]->role), cn_of(c->x[i], cn, sizeof cn));
            return 1;
        }
        r = cert_profile(c->e[i], c->x[i], why, sizeof why);
        if (r < 0) {
            nt_verdict_fail(vd, "certificates", NT_CHECK_EVIDENCE, r, NULL, NULL,
                            "%s (%s) is malformed: %s", role_str(c->e[i]->role), c->e[i]->origin,
                            why);
            return 1;
        }
    }
    EVP_PKEY *k = X509_get0_pubkey(ekx);
    char group[32] = "";
    if (!k || !EVP_PKEY_is_a(k, "EC") ||
        EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL) !=
            1 ||
        !streq(group, "secp384r1")) {
        nt_verdict_fail(vd, "certificates", NT_CHECK_EVIDENCE, -EOPNOTSUPP, "ECDSA P-384 key",
                        group[0] ? group : "other key type", "%s key of %s", role_str(role),
                        c->e[ek]->origin);
        return 1;
    }
    r = nt_cert_amd_ext(ekx, &ci->ext);
    if (r < 0) {
        nt_verdict_fail(vd, "certificates", NT_CHECK_EVIDENCE, r, NULL, NULL,
                        "%s (%s) has a malformed AMD extension", role_str(role), c->e[ek]->origin);
        return 1;
    }
    /* No intermediate in the evidence, the source failed fetching it, and no built-in one is
     * the endorsement key's issuer: the source's error is the reason, not the chain. */
    if (src_err < 0 && !certs_have(c, want_int)) {
        bool builtin = false;
        {
            RDLOCK(v);
            for (size_t i = 0; i < v->anchors.n_items && !builtin; i++)
                builtin = v->anchors.items[i].role == want_int &&
                          X509_NAME_cmp(X509_get_issuer_name(ekx),
                                        X509_get_subject_name(v->anchors.items[i].cert)) == 0;
        }
        if (!builtin) {
            nt_verdict_fail(vd, "certificates", NT_CHECK_EVIDENCE, src_err, role_str(want_int),
                            "none (certificate source failed)",
                            "no %s in the evidence for the %s (%s), and the certificate source "
                            "'%s' failed: %s",
                            role_str(want_int), role_str(role), c->e[ek]->origin, src_name,
                            strerror(-src_err));
            return 1;
        }
    }
    nt_verdict_pass(vd, "certificates", NT_CHECK_EVIDENCE, "%s from %s", role_str(role),
                    c->e[ek]->origin);

    /* An ARK that came with the evidence must be a configured anchor. */
    for (size_t i = 0; i < c->n; i++) {
        if (c->e[i]->role != NT_CERT_ROLE_ARK)
            continue;
        r = check_evidence_ark(v, c->e[i], c->x[i], at, &evidence_ark, &ark_nb, &ark_na, vd);
        if (r != 0)
            return r;
    }

    /* Intermediate: the supplied one if any (no silent fallback), else a built-in one. */
    /* Prefer the supplied intermediate whose subject is the endorsement key's issuer. */
    for (size_t i = 0; i < c->n; i++) {
        if (c->e[i]->role != want_int)
            continue;
        bool named = X509_NAME_cmp(X509_get_issuer_name(ekx), X509_get_subject_name(c->x[i])) == 0;
        if (!inter || named) {
            inter = c->x[i];
            inter_origin = c->e[i]->origin;
            if (named)
                break;
        }
    }
    if (inter) {
        r = nt_cert_check_ca(inter, why, sizeof why);
        if (r < 0) {
            nt_verdict_fail(vd, "cert_chain", NT_CHECK_EVIDENCE, r, "a CA certificate", why,
                            "the %s (%s) is not a CA: %s", role_str(want_int), inter_origin, why);
            return 1;
        }
        r = nt_cert_verify_signed_by(ekx, inter);
        if (r < 0) {
            nt_verdict_fail(vd, "cert_chain", NT_CHECK_EVIDENCE, r, cn_of(inter, buf, sizeof buf),
                            NULL,
                            "%s (%s) is not signed by the %s "
                            "(%s): %s",
                            role_str(role), c->e[ek]->origin, role_str(want_int), inter_origin,
                            r == -EOPNOTSUPP ? "not RSASSA-PSS SHA-384/MGF1-SHA-384/salt 48 "
                                               "with an RSA-4096 key"
                                             : "bad signature or issuer");
            return 1;
        }
    } else {
        RDLOCK(v);
        for (size_t i = 0; i < v->anchors.n_items && !inter; i++) {
            const NtAnchor *a = &v->anchors.items[i];
            if (a->role == want_int && nt_cert_verify_signed_by(ekx, a->cert) >= 0) {
                inter = a->cert;
                inter_origin = a->label;
                inter_anchor = a;
            }
        }
        ERR_clear_error();
        if (inter_anchor && !inter_anchor->profile_ok) {
            nt_verdict_fail(vd, "cert_chain", NT_CHECK_EVIDENCE, -EKEYREJECTED, NULL, NULL,
                            "the built-in %s %s is refused: %s", role_str(want_int),
                            inter_anchor->label, inter_anchor->profile_why);
            return 1;
        }
        if (!inter) {
            X509_NAME_get_text_by_NID(X509_get_issuer_name(ekx), NID_commonName, cn, sizeof cn);
            nt_verdict_fail(vd, "cert_chain", NT_CHECK_EVIDENCE, -ENOKEY, NULL, NULL,
                            "no %s in the evidence and no built-in %s signed the %s (issuer "
                            "'%s')",
                            role_str(want_int), role_str(want_int), role_str(role), cn);
            return 1;
        }
    }

    /* The ARK: a trusted anchor that signed the intermediate. */
    {
        RDLOCK(v);
        for (size_t i = 0; i < v->anchors.n_items && !anchor; i++) {
            const NtAnchor *a = &v->anchors.items[i];
            if (a->role == NT_CERT_ROLE_ARK && nt_cert_verify_signed_by(inter, a->cert) >= 0)
                anchor = a;
        }
        ERR_clear_error();
        if (anchor && !anchor->profile_ok) {
            nt_verdict_fail(vd, "cert_chain", NT_CHECK_EVIDENCE, -EKEYREJECTED, "a CA certificate",
                            anchor->profile_why, "the trusted ARK %s is refused: %s", anchor->label,
                            anchor->profile_why);
            return 1;
        }
        if (anchor) {
            snprintf(ci->anchor, sizeof ci->anchor, "%s", anchor->label);
            ci->product = anchor->product;
            r = nt_cert_validity(anchor->cert, &ci->not_before, &ci->not_after);
            if (r >= 0)
                r = nt_cert_check_time(anchor->cert, at);
            ci->not_before = MAX(ci->not_before, ark_nb);
            ci->not_after = MIN(ci->not_after, ark_na);
            if (r < 0) {
                nt_cert_validity(anchor->cert, &ci->not_before, &ci->not_after);
                nt_format_time(ci->not_after, t1);
                nt_verdict_fail(vd, "cert_validity", NT_CHECK_EVIDENCE, r, NULL, NULL,
                                "%s: ARK %s, valid until %s",
                                r == -EKEYEXPIRED ? "certificate expired" : "certificate not valid",
                                anchor->label, t1);
                return 1;
            }
        }
    }
    if (!anchor) {
        nt_verdict_fail(vd, "cert_chain", NT_CHECK_EVIDENCE, -ENOKEY, "a trusted ARK", NULL,
                        "the %s '%s' (%s) is not signed by any trusted ARK", role_str(want_int),
                        cn_of(inter, cn, sizeof cn), inter_origin);
        return 1;
    }
    if (evidence_ark && evidence_ark != anchor) {
        nt_verdict_fail(vd, "ark", NT_CHECK_EVIDENCE, -EKEYREJECTED, evidence_ark->label,
                        anchor->label, "the ARK in the evidence did not sign the %s",
                        role_str(want_int));
        return 1;
    }
    nt_verdict_pass(vd, "ark", NT_CHECK_EVIDENCE, "%s%s", anchor->label,
                    evidence_ark ? ", equal to the ARK in the evidence" : "");
    ci->ark = anchor;
    ci->serial_role[0] = role;
    ci->serial_role[1] = want_int;
    ci->serials_ok = nt_serial_from_asn1(X509_get0_serialNumber(ekx), &ci->serial[0]) >= 0 &&
                     nt_serial_from_asn1(X509_get0_serialNumber(inter), &ci->serial[1]) >= 0;
    X509_NAME_get_text_by_NID(X509_get_issuer_name(ekx), NID_commonName, cn, sizeof cn);
    nt_verdict_pass(vd, "cert_chain", NT_CHECK_EVIDENCE, "%s <- %s (%s) <- ARK, RSASSA-PSS SHA-384",
                    role_str(role), cn, inter_origin);

    /* Validity at the verification time; the cache window is the intersection. */
    struct {
        X509 *x;
        const char *what, *origin;
    } chk[] = {{ekx, role_str(role), c->e[ek]->origin}, {inter, role_str(want_int), inter_origin}};
    for (size_t i = 0; i < ELEMENTSOF(chk); i++) {
        time_t nb, na;
        r = nt_cert_validity(chk[i].x, &nb, &na);
        if (r < 0) {
            nt_verdict_fail(vd, "certificates", NT_CHECK_EVIDENCE, r, NULL, NULL,
                            "%s (%s) has an unreadable validity period", chk[i].what,
                            chk[i].origin);
            return 1;
        }
        ci->not_before = MAX(ci->not_before, nb);
        ci->not_after = MIN(ci->not_after, na);
        nt_format_time(at, t2);
        if (at > na) {
            nt_format_time(na, t1);
            nt_verdict_fail(vd, "cert_validity", NT_CHECK_EVIDENCE, -EKEYEXPIRED, NULL, NULL,
                            "certificate expired: %s certificate (%s) expired at %s "
                            "(verification time %s)",
                            chk[i].what, chk[i].origin, t1, t2);
            return 1;
        }
        if (at < nb) {
            nt_format_time(nb, t1);
            nt_verdict_fail(vd, "cert_validity", NT_CHECK_EVIDENCE, -EKEYREJECTED, NULL, NULL,
                            "certificate not yet valid: %s certificate (%s) is valid from %s "
                            "(verification time %s)",
                            chk[i].what, chk[i].origin, t1, t2);
            return 1;
        }
    }

    if (EVP_PKEY_up_ref(k) != 1)
        return -ENOMEM;
    ci->pkey = k;
    ci->role = role;
    return 0;
}

/* Asks the VcekSource for the certificates of the report and appends what it supplies to c
 * (the bundle extra keeps them alive); ek becomes the first endorsement key if it was unset.
 * What the source added is kept even when it then failed (KDS adds the chain before it asks for
 * the VCEK: evidence with the VCEK but without the ASK needs only that chain).
 * Returns 0 (possibly nothing added), the source's error other than -ENOENT, or -ENOMEM. */
static int source_fetch(const NtVcekSource *src, const SnpReport *rep, SnpProduct hint,
                        NtCertRole role, bool local_only, NtCertBundle **extra, Certs *c,
                        size_t *ek) {
    int r;

    *extra = nt_cert_bundle_new();
    if (!*extra)
        return -ENOMEM;
    if (!local_only)
        r = src->fetch(src->userdata, rep, hint, role, *extra);
    else if (src->fetch_local)
        r = src->fetch_local(src->userdata, rep, hint, role, *extra);
    else
        r = -EREMOTE;
    if (r == -EREMOTE)
        return r; /* the caller gives up this verification: nothing to add */
    if (r < 0 && r != -ENOENT)
        log_debug_errno(r, "Certificate source '%s' failed: %m", src->name);
    for (size_t i = 0; i < (*extra)->n_entries && c->n < ELEMENTSOF(c->e); i++) {
        c->e[c->n] = &(*extra)->entries[i];
        if (*ek == SIZE_MAX && c->e[c->n]->role == role)
            *ek = c->n;
        c->n++;
    }
    return r < 0 && r != -ENOENT ? r : 0;
}

static bool cache_try(NtVerifier *v, const Certs *c, NtCertRole role, size_t ek, time_t at,
                      NtVerdict *vd, ChainInfo *ci, int *ret_error) {
    *ret_error = cache_key(v, c, role, ek, ci->key);
    if (*ret_error < 0 || !cache_lookup(v, ci->key, at, ci))
        return false;
    __atomic_fetch_add(&v->hits, 1, __ATOMIC_RELAXED);
    vd->chain_cached = true;
    nt_verdict_pass(vd, "certificates", NT_CHECK_EVIDENCE, "%s", role_str(role));
    nt_verdict_pass(vd, "ark", NT_CHECK_EVIDENCE, "%s", ci->anchor);
    nt_verdict_pass(vd, "cert_chain", NT_CHECK_EVIDENCE, "cached");
    nt_verdict_pass(vd, "cert_validity", NT_CHECK_EVIDENCE, "cached");
    return true;
}

/* The anchor's parsed certificate (a new reference) if e has an anchor's exact DER bytes.
 * Returns 1 (found), 0 (not an anchor's) or -ENOMEM. */
static int anchor_parsed(NtVerifier *v, const NtCertBundleEntry *e, X509 **ret) {
    RDLOCK(v);
    for (size_t i = 0; i < v->anchors.n_items; i++) {
        const NtAnchor *a = &v->anchors.items[i];
        if (a->der_len != e->der_len || memcmp(a->der, e->der, e->der_len) != 0)
            continue;
        if (X509_up_ref(a->cert) != 1)
            return -ENOMEM;
        *ret = a->cert;
        return 1;
    }
    return 0;
}

/* Finds the endorsement key certificate and a verified chain for it (cached or cold). The
 * VcekSource is asked when the evidence lacks the endorsement key, or has it without its
 * intermediate and the chain is not cached; its failure (other than -ENOENT) fails
 * "certificates" with its errno when the chain cannot be built without it, so that a caller can
 * tell "KDS unavailable" from "evidence rejected". local_only: the source's local mode; where it
 * would need the network, -EREMOTE (even when a built-in intermediate could have done: the
 * verdict must be the one the full verification gives).
 * Returns 0, 1 (a check failed and was recorded) or a negative errno. */
static int resolve_chain(NtVerifier *v, const NtCertBundle *certs, const SnpReport *rep,
                         NtCertRole role, SnpProduct hint, bool local_only, time_t at,
                         NtVerdict *vd, ChainInfo *ci) {
    NtCertRole want_int = role == NT_CERT_ROLE_VCEK ? NT_CERT_ROLE_ASK : NT_CERT_ROLE_ASVK;
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *extra = NULL;
    _cleanup_(certs_done) Certs c = {.n = 0};
    size_t ek = SIZE_MAX;
    NtVcekSource src = {0};
    bool has_src;
    int r, src_err = 0;

    for (size_t i = 0; certs && i < certs->n_entries; i++)
        c.e[c.n++] = &certs->entries[i];
    for (size_t i = 0; i < c.n && ek == SIZE_MAX; i++)
        if (c.e[i]->role == role)
            ek = i;
    {
        RDLOCK(v);
        has_src = v->has_source;
        src = v->source;
    }
    if (ek == SIZE_MAX && has_src) {
        src_err = source_fetch(&src, rep, hint, role, local_only, &extra, &c, &ek);
        if (src_err == -ENOMEM || src_err == -EREMOTE)
            return src_err;
        if (src_err < 0 && ek == SIZE_MAX) {
            nt_verdict_fail(vd, "certificates", NT_CHECK_EVIDENCE, src_err, role_str(role),
                            "none (certificate source failed)",
                            "no %s certificate in the evidence, and the certificate source '%s' "
                            "failed: %s",
                            role_str(role), src.name, strerror(-src_err));
            return 1;
        }
    }
    if (ek == SIZE_MAX) {
        const char *other = role == NT_CERT_ROLE_VCEK ? "VLEK" : "VCEK";
        bool has_other = false;
        for (size_t i = 0; i < c.n; i++)
            has_other |=
                c.e[i]->role == (role == NT_CERT_ROLE_VCEK ? NT_CERT_ROLE_VLEK : NT_CERT_ROLE_VCEK);
        nt_verdict_fail(vd, "certificates", NT_CHECK_EVIDENCE, -ENOKEY, role_str(role),
                        has_other ? other : "none",
                        "no %s certificate in the evidence (the report is signed by the %s)",
                        role_str(role), role_str(role));
        return 1;
    }

    if (cache_try(v, &c, role, ek, at, vd, ci, &r))
        return 0;
    if (r < 0)
        return r;
    /* The endorsement key without its intermediate: the source may have it (else a built-in
     * ASK/ASVK may do, see verify_chain_cold). */
    if (!extra && has_src && !certs_have(&c, want_int)) {
        size_t n_before = c.n;
        src_err = source_fetch(&src, rep, hint, role, local_only, &extra, &c, &ek);
        if (src_err == -ENOMEM || src_err == -EREMOTE)
            return src_err;
        if (c.n > n_before) {
            if (cache_try(v, &c, role, ek, at, vd, ci, &r))
                return 0;
            if (r < 0)
                return r;
        }
    }
    __atomic_fetch_add(&v->misses, 1, __ATOMIC_RELAXED);

    for (size_t i = 0; i < c.n; i++) {
        /* A supplied certificate with the bytes of an anchor (AMD's ASK or ARK, as real evidence
         * carries them) shares the anchor's parsed certificate: decoding an RSA-4096
         * certificate is a good part of a cold chain. Every check still runs on it. */
        r = anchor_parsed(v, c.e[i], &c.x[i]);
        if (r == -ENOMEM)
            return r;
        if (r == 0)
            r = nt_cert_from_der(c.e[i]->der, c.e[i]->der_len, &c.x[i]);
        if (r < 0) {
            /* c.x[i] stays NULL; X509_free(NULL) is fine in certs_done(). */
            nt_verdict_fail(vd, "certificates", NT_CHECK_EVIDENCE, r, NULL, NULL,
                            "%s is not a valid X.509 certificate", c.e[i]->origin);
            return 1;
        }
    }
    ci->not_before = 0;
    ci->not_after = (time_t)INT64_MAX;
    r = verify_chain_cold(v, &c, ek, role, at, src_err, src.name, vd, ci);
    if (r != 0)
        return r;

    char t[32];
    nt_format_time(ci->not_after, t);
    nt_verdict_pass(vd, "cert_validity", NT_CHECK_EVIDENCE, "chain valid until %s", t);
    cache_store(v, ci);
    return 0;
}

/* ---- revocation ---- */

static int sha256_of(NtVerifier *v, const uint8_t *data, size_t len, uint8_t out[32]) {
    if (EVP_Digest(data, len, out, NULL, v->sha256, NULL) != 1)
        return nt_openssl_error(-EIO, "EVP_Digest");
    return 0;
}

static CrlSlot *crl_slot_find_locked(NtVerifier *v, const uint8_t key[32]) {
    for (size_t i = 0; i < CRL_SLOTS; i++)
        if (v->crls[i].used && memcmp(v->crls[i].key, key, 32) == 0)
            return &v->crls[i];
    return NULL;
}

/* Judges the chain in ci against a parsed CRL whose signature check against ci->ark gave
 * sig_r. Records "revocation". */
static void crl_judge(const NtCrl *crl, int sig_r, const ChainInfo *ci, time_t at,
                      const NtRevocationSource *src, time_t fetched_at, NtVerdict *vd) {
    char t1[32], t2[32], t3[32], e[160], f[160], sn[2 * NT_SERIAL_MAX + 3];
    int r;

    if (sig_r < 0) {
        snprintf(e, sizeof e, "a CRL signed by %s", ci->anchor);
        snprintf(f, sizeof f, "a CRL issued by '%s'", crl->issuer_cn);
        nt_verdict_fail(vd, "revocation", NT_CHECK_EVIDENCE, sig_r, e, f,
                        "the CRL from '%s' is not signed by the ARK the chain ends in: %s",
                        src->name,
                        sig_r == -EOPNOTSUPP ? "not RSASSA-PSS SHA-384/MGF1-SHA-384/salt 48"
                                             : "wrong issuer or bad signature");
        return;
    }
    r = nt_crl_check_time(crl, at, src->max_staleness_s);
    nt_format_time(crl->this_update, t1);
    nt_format_time(crl->next_update, t2);
    nt_format_time(at, t3);
    if (r == -EKEYREJECTED) {
        nt_verdict_fail(vd, "revocation", NT_CHECK_EVIDENCE, r, NULL, t1,
                        "the CRL from '%s' is not yet valid: thisUpdate %s is after the "
                        "verification time %s",
                        src->name, t1, t3);
        return;
    }
    if (r < 0) {
        char tf[32];
        nt_format_time(fetched_at, tf);
        snprintf(e, sizeof e, "nextUpdate within %llds of %s", (long long)src->max_staleness_s, t3);
        nt_verdict_fail(vd, "revocation", NT_CHECK_EVIDENCE, r, e, t2,
                        "the CRL from '%s' is stale: nextUpdate %s, staleness limit %llds, "
                        "verification time %s (CRL fetched %s)",
                        src->name, t2, (long long)src->max_staleness_s, t3, tf);
        return;
    }
    if (!ci->serials_ok) {
        nt_verdict_fail(vd, "revocation", NT_CHECK_EVIDENCE, -EBADMSG, NULL, NULL,
                        "a certificate of the chain has a negative or over-long serial number");
        return;
    }
    for (size_t i = 0; i < ELEMENTSOF(ci->serial); i++) {
        const NtCrlEntry *hit = nt_crl_find(crl, &ci->serial[i]);
        if (!hit)
            continue;
        nt_serial_format(&ci->serial[i], sn, sizeof sn);
        nt_format_time(hit->revoked_at, t3);
        snprintf(f, sizeof f, "%s serial %s revoked at %s", role_str(ci->serial_role[i]), sn, t3);
        nt_verdict_fail(vd, "revocation", NT_CHECK_EVIDENCE, -EKEYREVOKED, "not revoked", f,
                        "the %s certificate (serial %s) is revoked since %s by the CRL of %s "
                        "(thisUpdate %s)",
                        role_str(ci->serial_role[i]), sn, t3, crl->issuer_cn, t1);
        return;
    }
    nt_verdict_pass(vd, "revocation", NT_CHECK_EVIDENCE,
                    "%s and %s not revoked; CRL of %s from '%s', %zu entries, nextUpdate %s",
                    role_str(ci->serial_role[0]), role_str(ci->serial_role[1]), crl->issuer_cn,
                    src->name, crl->n_revoked, t2);
}

/* The "revocation" check, on cold and cached chains alike: one call to the source, a SHA-256 of
 * the CRL and, for a CRL seen before, a lookup and two binary searches. Returns 0 (recorded, or
 * no source), -EREMOTE (local_only and the source would need the network) or -ENOMEM/-EIO. */
static int check_revocation(NtVerifier *v, const ChainInfo *ci, bool local_only, time_t at,
                            NtVerdict *vd) {
    _cleanup_free_ uint8_t *der = NULL;
    _cleanup_(nt_crl_freep) NtCrl *crl = NULL;
    NtRevocationSource src;
    size_t len = 0;
    time_t fetched_at = 0;
    uint8_t key[32];
    uint32_t bit;
    int r, sig_r, scheme;

    {
        RDLOCK(v);
        if (!v->has_rev)
            return 0;
        src = v->rev;
    }
    assert(ci->ark);
    bit = UINT32_C(1) << (size_t)(ci->ark - v->anchors.items);

    if (!local_only)
        r = src.get_crl(src.userdata, ci->product, &der, &len, &fetched_at);
    else if (src.get_crl_local)
        r = src.get_crl_local(src.userdata, ci->product, &der, &len, &fetched_at);
    else
        r = -EREMOTE;
    if (r == -EREMOTE)
        return r;
    if (r < 0 || !der || len == 0) {
        if (r >= 0)
            r = -ENOENT;
        if (r == -ENOMEM)
            return r;
        if (src.mode == NT_REVOCATION_BEST_EFFORT) {
            nt_verdict_skip(vd, "revocation", NT_CHECK_EVIDENCE,
                            "no CRL for %s from '%s' (%s); best effort",
                            snp_product_to_string(ci->product), src.name, strerror(-r));
            return 0;
        }
        nt_verdict_fail(vd, "revocation", NT_CHECK_EVIDENCE, r, "a CRL", "none",
                        "no CRL for %s from '%s' (%s), and a CRL is required",
                        snp_product_to_string(ci->product), src.name, strerror(-r));
        return 0;
    }
    r = sha256_of(v, der, len, key);
    if (r < 0)
        return r;
    {
        RDLOCK(v);
        const CrlSlot *s = crl_slot_find_locked(v, key);
        if (s && (s->sig_checked & bit)) {
            sig_r = s->scheme < 0 ? s->scheme : (s->sig_ok & bit) ? 0 : -EKEYREJECTED;
            crl_judge(s->crl, sig_r, ci, at, &src, fetched_at, vd);
            return 0;
        }
    }

    /* First sight of this CRL (or of this anchor for it): parse and check it once. */
    r = nt_crl_parse(der, len, &crl);
    if (r == -ENOMEM)
        return r;
    if (r < 0) {
        nt_verdict_fail(vd, "revocation", NT_CHECK_EVIDENCE, r, NULL, NULL,
                        "the CRL for %s from '%s' is malformed (%zu bytes)",
                        snp_product_to_string(ci->product), src.name, len);
        return 0;
    }
    scheme = nt_crl_check_sig_scheme(crl);
    sig_r = scheme < 0 ? scheme : nt_crl_verify_signed_by(crl, ci->ark->cert);
    ERR_clear_error();
    crl_judge(crl, sig_r, ci, at, &src, fetched_at, vd);
    {
        WRLOCK(v);
        CrlSlot *s = crl_slot_find_locked(v, key);
        for (size_t i = 0; i < CRL_SLOTS && !s; i++)
            if (!v->crls[i].used)
                s = &v->crls[i];
        if (!s)
            s = &v->crls[v->crl_evict_next++ % CRL_SLOTS];
        if (!s->used || memcmp(s->key, key, 32) != 0) {
            nt_crl_free(s->crl);
            *s = (CrlSlot){.used = true, .crl = TAKE_PTR(crl), .scheme = scheme};
            memcpy(s->key, key, 32);
        }
        s->sig_checked |= bit;
        if (sig_r >= 0)
            s->sig_ok |= bit;
    }
    return 0;
}

/* ---- the checks after the chain ---- */

static void check_product(const SnpReport *rep, const ChainInfo *ci, SnpProduct pinned,
                          NtVerdict *vd, bool *ok) {
    char e[160], f[128];
    SnpProduct p = ci->product;

    *ok = false;
    snprintf(e, sizeof e, "%s (anchor %s)", snp_product_to_string(p), ci->anchor);
    if (ci->ext.product_name[0]) {
        SnpProduct cp = snp_product_from_string(ci->ext.product_name);
        if (cp != p) {
            snprintf(f, sizeof f, "productName '%s'", ci->ext.product_name);
            nt_verdict_fail(vd, "product", NT_CHECK_EVIDENCE, -EKEYREJECTED, e, f,
                            "%s certificate names another product", role_str(ci->role));
            return;
        }
    }
    if (rep->version >= 3 && !rep->cpuid_fam_id && !rep->cpuid_mod_id) {
        nt_verdict_fail(vd, "product", NT_CHECK_EVIDENCE, -EBADMSG, e,
                        "CPUID family 0x00 model 0x00",
                        "a version %u report has no CPUID family and model (firmware of "
                        "version 3 and later always fills them)",
                        rep->version);
        return;
    }
    if (rep->version >= 3) {
        SnpProduct cp = snp_product_from_cpuid(rep->cpuid_fam_id, rep->cpuid_mod_id);
        if (cp != p) {
            snprintf(f, sizeof f, "%s (CPUID family 0x%02x model 0x%02x)",
                     cp >= 0 ? snp_product_to_string(cp) : "unknown", rep->cpuid_fam_id,
                     rep->cpuid_mod_id);
            nt_verdict_fail(vd, "product", NT_CHECK_EVIDENCE, -EKEYREJECTED, e, f,
                            "report CPUID names another product");
            return;
        }
    }
    if (pinned >= 0 && pinned != p) {
        snprintf(f, sizeof f, "%s (--product)", snp_product_to_string(pinned));
        nt_verdict_fail(vd, "product", NT_CHECK_EVIDENCE, -EKEYREJECTED, e, f,
                        "the evidence is for another product than the one requested");
        return;
    }
    nt_verdict_pass(vd, "product", NT_CHECK_EVIDENCE, "%s", snp_product_to_string(p));
    *ok = true;
}

static void check_tcb(const SnpReport *rep, const ChainInfo *ci, NtVerdict *vd) {
    const NtAmdExt *x = &ci->ext;
    SnpProduct p = ci->product;
    SnpTcb t;
    char e[96], f[96];
    const char *missing = !x->has_bl                                ? "blSPL"
                          : !x->has_tee                             ? "teeSPL"
                          : !x->has_snp                             ? "snpSPL"
                          : !x->has_ucode                           ? "ucodeSPL"
                          : (p == SNP_PRODUCT_TURIN && !x->has_fmc) ? "fmcSPL"
                                                                    : NULL;
    if (missing) {
        nt_verdict_fail(vd, "tcb_vs_cert", NT_CHECK_EVIDENCE, -EBADMSG, NULL, NULL,
                        "the %s certificate has no %s extension", role_str(ci->role), missing);
        return;
    }
    if (snp_tcb_decode(rep->reported_tcb, p, &t) < 0) {
        nt_verdict_fail(vd, "tcb_vs_cert", NT_CHECK_EVIDENCE, -EBADMSG, NULL, NULL,
                        "reported_tcb 0x%016llx has non-zero reserved bytes for %s",
                        (unsigned long long)rep->reported_tcb, snp_product_to_string(p));
        return;
    }
    const char *diff = t.bootloader != x->spl.bootloader                 ? "bootloader"
                       : t.tee != x->spl.tee                             ? "tee"
                       : t.snp != x->spl.snp                             ? "snp"
                       : t.microcode != x->spl.microcode                 ? "microcode"
                       : (p == SNP_PRODUCT_TURIN && t.fmc != x->spl.fmc) ? "fmc"
                                                                         : NULL;
    if (diff) {
        nt_tcb_format(&x->spl, p, e, sizeof e);
        nt_tcb_format(&t, p, f, sizeof f);
        nt_verdict_fail(vd, "tcb_vs_cert", NT_CHECK_EVIDENCE, -EKEYREJECTED, e, f,
                        "reported_tcb %s SPL differs from the %s certificate's", diff,
                        role_str(ci->role));
        return;
    }
    nt_tcb_format(&t, p, f, sizeof f);
    nt_verdict_pass(vd, "tcb_vs_cert", NT_CHECK_EVIDENCE, "%s", f);
}

static void check_hwid(const SnpReport *rep, const ChainInfo *ci, NtVerdict *vd) {
    const NtAmdExt *x = &ci->ext;
    size_t want = ci->product == SNP_PRODUCT_TURIN ? 8 : 64;
    char e[129], f[129];

    /* Turin's CHIP_ID is the 8-byte hwID followed by 56 zero bytes (the real Turin vector has
     * them zero). A non-zero tail is not a Turin report as firmware makes it, whatever key
     * signed it, and must not slip past the 8-byte comparison below. */
    if (ci->product == SNP_PRODUCT_TURIN) {
        uint8_t nz = 0;
        for (size_t i = 8; i < sizeof rep->chip_id; i++)
            nz |= rep->chip_id[i];
        if (nz) {
            hex_encode(rep->chip_id + 8, sizeof rep->chip_id - 8, f);
            nt_verdict_fail(vd, "hwid", NT_CHECK_EVIDENCE, -EKEYREJECTED,
                            "zero (bytes 8..63 of a Turin chip_id)", f,
                            "Turin report chip_id has non-zero bytes after the 8-byte hwID");
            return;
        }
    }
    if (rep->flags & SNP_FLAG_MASK_CHIP_KEY) {
        /* The firmware zero-fills CHIP_ID when the chip key is masked: another chip's id here
         * would make the verdict name a chip the report was not signed for. */
        uint8_t nz = 0;
        for (size_t i = 0; i < sizeof rep->chip_id; i++)
            nz |= rep->chip_id[i];
        if (nz) {
            hex_encode(rep->chip_id, sizeof rep->chip_id, f);
            nt_verdict_fail(vd, "hwid", NT_CHECK_EVIDENCE, -EKEYREJECTED,
                            "zero (MASK_CHIP_KEY set)", f,
                            "MASK_CHIP_KEY is set but chip_id is not zero");
            return;
        }
    }
    if (ci->role == NT_CERT_ROLE_VLEK) {
        snprintf(vd->csp_id, sizeof vd->csp_id, "%s", x->csp_id);
        nt_verdict_skip(vd, "hwid", NT_CHECK_EVIDENCE,
                        "VLEK certificates carry no hwID; cspID '%s'", x->csp_id);
        return;
    }
    if (rep->flags & SNP_FLAG_MASK_CHIP_KEY) {
        nt_verdict_skip(vd, "hwid", NT_CHECK_EVIDENCE,
                        "chip id masked (MASK_CHIP_KEY); see the policy's chip_id_masked");
        return;
    }
    if (x->hwid_len != want) {
        nt_verdict_fail(vd, "hwid", NT_CHECK_EVIDENCE, -EBADMSG, NULL, NULL,
                        "the VCEK hwID extension has %zu bytes, %s needs %zu", x->hwid_len,
                        snp_product_to_string(ci->product), want);
        return;
    }
    if (memcmp(rep->chip_id, x->hwid, want) != 0) {
        hex_encode(x->hwid, want, e);
        hex_encode(rep->chip_id, want, f);
        nt_verdict_fail(vd, "hwid", NT_CHECK_EVIDENCE, -EKEYREJECTED, e, f,
                        "report chip_id differs from the VCEK's hwID");
        return;
    }
    nt_verdict_pass(vd, "hwid", NT_CHECK_EVIDENCE, "chip_id matches (%zu bytes)", want);
}

static int run(NtVerifier *v, const uint8_t *report, size_t report_len, const NtCertBundle *certs,
               const NtVerifyOptions *o, NtVerdict *vd) {
    _cleanup_(chain_info_done) ChainInfo ci = {.pkey = NULL};
    const char *why = NULL;
    NtCertRole role;
    bool ok;
    int r;

    r = snp_report_parse(report, report_len, &vd->report, &why);
    if (r < 0) {
        if (r == -EMSGSIZE)
            nt_verdict_fail(vd, "report_format", NT_CHECK_EVIDENCE, -EBADMSG, NULL, NULL,
                            "report has %zu bytes, expected %u", report_len, SNP_REPORT_SIZE);
        else
            nt_verdict_fail(vd, "report_format", NT_CHECK_EVIDENCE, r, NULL, NULL, "%s",
                            why                     ? why
                            : r == -EPROTONOSUPPORT ? "unsupported report version"
                            : r == -EOPNOTSUPP      ? "unsupported signature algorithm"
                                                    : "malformed report");
        return 0;
    }
    vd->have_report = true;
    nt_verdict_pass(vd, "report_format", NT_CHECK_EVIDENCE, "version %u", vd->report.version);

    switch (snp_report_signing_key(&vd->report)) {
    case SNP_SIGNING_KEY_VCEK:
        role = NT_CERT_ROLE_VCEK;
        break;
    case SNP_SIGNING_KEY_VLEK:
        role = NT_CERT_ROLE_VLEK;
        break;
    case SNP_SIGNING_KEY_NONE:
        nt_verdict_fail(vd, "signing_key", NT_CHECK_EVIDENCE, -EKEYREJECTED, "VCEK or VLEK", "none",
                        "the report is not signed");
        return 0;
    default:
        nt_verdict_fail(vd, "signing_key", NT_CHECK_EVIDENCE, -EBADMSG, "VCEK or VLEK",
                        "reserved value", "unknown SIGNING_KEY %u",
                        (unsigned)snp_report_signing_key(&vd->report));
        return 0;
    }
    vd->signing_role = role;
    nt_verdict_pass(vd, "signing_key", NT_CHECK_EVIDENCE, "%s", role_str(role));

    r = resolve_chain(v, certs, &vd->report, role, o->product, o->local_only, vd->at, vd, &ci);
    if (r != 0)
        return r < 0 ? r : 0;
    snprintf(vd->anchor, sizeof vd->anchor, "%s", ci.anchor);
    r = check_revocation(v, &ci, o->local_only, vd->at, vd);
    if (r < 0)
        return r;
    if (nt_verdict_status(vd) != NT_VERDICT_OK)
        return 0;

    r = nt_report_check_signature(report, ci.pkey, v->sha384);
    if (r == -ENOMEM || r == -EIO)
        return r;
    if (r < 0) {
        nt_verdict_fail(vd, "report_signature", NT_CHECK_EVIDENCE, r, NULL, NULL,
                        r == -EBADMSG ? "malformed ECDSA signature (r or s zero, >= the group "
                                        "order, or non-zero padding)"
                                      : "ECDSA P-384 signature does not verify with the %s key",
                        role_str(role));
        return 0;
    }
    nt_verdict_pass(vd, "report_signature", NT_CHECK_EVIDENCE, "ECDSA P-384 SHA-384 by %s",
                    role_str(role));

    check_product(&vd->report, &ci, o->product, vd, &ok);
    if (!ok)
        return 0;
    vd->product = ci.product;
    check_tcb(&vd->report, &ci, vd);
    check_hwid(&vd->report, &ci, vd);
    if (nt_verdict_status(vd) != NT_VERDICT_OK)
        return 0;

    if (o->policy) {
        nt_policy_apply(o->policy, &vd->report, ci.product, role, vd);
        vd->policy_applied = true;
    }
    return 0;
}

int nt_verifier_verify(NtVerifier *v, const uint8_t *report, size_t report_len,
                       const NtCertBundle *certs, const NtVerifyOptions *opts, NtVerdict **ret) {
    static const NtVerifyOptions defaults = NT_VERIFY_OPTIONS_INIT;
    _cleanup_(nt_verdict_freep) NtVerdict *vd = nt_verdict_new();
    const NtVerifyOptions *o = opts ? opts : &defaults;
    int r;

    if (!vd)
        return -ENOMEM;
    vd->at = o->at ? o->at : time(NULL);
    r = run(v, report, report_len, certs, o, vd);
    if (r < 0)
        return r;
    *ret = TAKE_PTR(vd);
    return 0;
}
