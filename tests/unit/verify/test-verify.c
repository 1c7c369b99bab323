/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The verifier against AMD's real reports and certificates (tests/vectors/snp): every vector
 * verifies with the built-in anchors; every byte of the signed area, every signature byte and
 * many certificate bytes, flipped, make verification fail with the right check named; the cache
 * serves only inside the chain's validity window; policy TCB checks are component-wise; the
 * verifier is usable from several threads.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/encoding.h"
#include "core/openssl-util.h"
#include "verify/anchors.h"
#include "vt-util.h"

static time_t at_for(const char *vec) {
    /* The VLEK expired on 2025-12-10; the others are valid now. */
    return strstr(vec, "vlek") ? VT_AT_2025 : 0;
}

static NtVerdict *verify_buf(NtVerifier *v, const uint8_t *rep, size_t len, const NtCertBundle *b,
                             const NtVerifyOptions *o) {
    NtVerdict *vd = NULL;
    assert_int_equal(nt_verifier_verify(v, rep, len, b, o, &vd), 0);
    assert_non_null(vd);
    return vd;
}

static void test_vectors_pass(void **state) {
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    assert_int_equal(nt_verifier_new(&v), 0);
    for (size_t i = 0; i < VT_N_VECTORS; i++) {
        const char *vec = vt_vectors[i];
        size_t len;
        _cleanup_free_ uint8_t *rep = vt_read(vec, "report.bin", &len);
        _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = vt_bundle(vec);
        NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
        o.at = at_for(vec);

        for (int round = 0; round < 2; round++) {
            _cleanup_(nt_verdict_freep) NtVerdict *vd = verify_buf(v, rep, len, b, &o);
            if (nt_verdict_status(vd) != NT_VERDICT_OK)
                fail_msg("%s: %s failed: %s", vec, vt_failed_check(vd),
                         nt_verdict_first_failure(vd)->detail);
            assert_int_equal(vd->chain_cached, round == 1);
            assert_non_null(strstr(vd->anchor, "built-in"));
            assert_true(vd->have_report);
            SnpProduct want = strncmp(vec, "milan", 5) == 0   ? SNP_PRODUCT_MILAN
                              : strncmp(vec, "genoa", 5) == 0 ? SNP_PRODUCT_GENOA
                                                              : SNP_PRODUCT_TURIN;
            assert_int_equal(vd->product, want);
            assert_int_equal(vd->signing_role,
                             strstr(vec, "vlek") ? NT_CERT_ROLE_VLEK : NT_CERT_ROLE_VCEK);
            const NtCheck *h = nt_verdict_find(vd, "hwid");
            assert_non_null(h);
            assert_int_equal(h->result, strstr(vec, "vlek") ? NT_CHECK_SKIP : NT_CHECK_PASS);
            if (strstr(vec, "vlek"))
                assert_string_equal(vd->csp_id, "CN=cc-us-east-2.amazonaws.com");
        }
    }
    uint64_t hits, misses;
    nt_verifier_cache_stats(v, &hits, &misses);
    assert_int_equal(hits, VT_N_VECTORS);
    assert_int_equal(misses, VT_N_VECTORS);
}

static void test_vlek_expired(void **state) {
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    size_t len;
    _cleanup_free_ uint8_t *rep = vt_read("milan-v3-trustee-vlek", "report.bin", &len);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = vt_bundle("milan-v3-trustee-vlek");
    NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
    assert_int_equal(nt_verifier_new(&v), 0);

    /* Cache a valid chain first: it must not be used outside its window. */
    o.at = VT_AT_2025;
    _cleanup_(nt_verdict_freep) NtVerdict *ok = verify_buf(v, rep, len, b, &o);
    assert_int_equal(nt_verdict_status(ok), NT_VERDICT_OK);

    o.at = 0; /* now */
    _cleanup_(nt_verdict_freep) NtVerdict *vd = verify_buf(v, rep, len, b, &o);
    assert_int_equal(nt_verdict_status(vd), NT_VERDICT_INVALID);
    const NtCheck *c = nt_verdict_first_failure(vd);
    assert_string_equal(c->name, "cert_validity");
    assert_int_equal(c->error, -EKEYEXPIRED);
    assert_non_null(strstr(c->detail, "certificate expired"));
    assert_non_null(strstr(c->detail, "VLEK"));
    assert_false(vd->chain_cached);

    o.at = 1733011200; /* 2024-12-01, before the VLEK's notBefore */
    _cleanup_(nt_verdict_freep) NtVerdict *early = verify_buf(v, rep, len, b, &o);
    c = nt_verdict_first_failure(early);
    assert_non_null(c);
    assert_string_equal(c->name, "cert_validity");
    assert_non_null(strstr(c->detail, "not yet valid"));
}

/* Expected failing check for a report whose byte pos was flipped. */
static const char *expected_for_flip(const uint8_t *orig, const uint8_t *flipped) {
    SnpReport a, b;
    if (snp_report_parse(flipped, SNP_REPORT_SIZE, &b, NULL) < 0)
        return "report_format";
    assert_int_equal(snp_report_parse(orig, SNP_REPORT_SIZE, &a, NULL), 0);
    if (snp_report_signing_key(&a) != snp_report_signing_key(&b))
        return snp_report_signing_key(&b) == SNP_SIGNING_KEY_VCEK ||
                       snp_report_signing_key(&b) == SNP_SIGNING_KEY_VLEK
                   ? "certificates"
                   : "signing_key";
    return "report_signature";
}

static void test_flip_report(void **state) {
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    assert_int_equal(nt_verifier_new(&v), 0);
    for (size_t i = 0; i < VT_N_VECTORS; i++) {
        const char *vec = vt_vectors[i];
        size_t len;
        _cleanup_free_ uint8_t *rep = vt_read(vec, "report.bin", &len);
        _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = vt_bundle(vec);
        NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
        uint8_t buf[SNP_REPORT_SIZE];
        unsigned counts[3] = {0};
        o.at = at_for(vec);
        assert_int_equal(len, SNP_REPORT_SIZE);

        /* Every byte of the signed area and of r and s (the rest of the report is unsigned
         * reserved space, which the parser requires to be zero). */
        for (size_t pos = 0; pos < SNP_REPORT_SIGNED_SIZE + 2 * SNP_SIG_COMPONENT_SIZE; pos++)
            for (unsigned k = 0; k < 2; k++) {
                uint8_t bit = (uint8_t)(1u << ((pos + 3 * k) % 8));
                memcpy(buf, rep, len);
                buf[pos] ^= bit;
                _cleanup_(nt_verdict_freep) NtVerdict *vd = verify_buf(v, buf, len, b, &o);
                const char *want = expected_for_flip(rep, buf);
                if (nt_verdict_status(vd) != NT_VERDICT_INVALID ||
                    !streq(vt_failed_check(vd), want))
                    fail_msg("%s: flip at 0x%zx bit 0x%02x: expected %s, got %s (%s)", vec, pos,
                             bit, want, vt_failed_check(vd),
                             nt_verdict_status_to_string(nt_verdict_status(vd)));
                counts[streq(want, "report_signature") ? 0
                       : streq(want, "report_format")  ? 1
                                                       : 2]++;
            }
        /* Most flips must reach the signature check (the parser is not doing the work). */
        assert_true(counts[0] > 1000);
    }
}

static void test_flip_certs(void **state) {
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    assert_int_equal(nt_verifier_new(&v), 0);
    static const struct {
        const char *vec, *file;
        NtCertRole role;
        size_t stride;
    } certs[] = {
        {"milan-v2-virtee-vcek", "vcek.der", NT_CERT_ROLE_VCEK, 3},
        {"turin-v5-msft-vcek", "vcek.pem", NT_CERT_ROLE_VCEK, 5},
        {"milan-v2-virtee-vcek", "ask.pem", NT_CERT_ROLE_ASK, 7},
        {"milan-v3-trustee-vlek", "vlek.der", NT_CERT_ROLE_VLEK, 5},
    };
    for (size_t i = 0; i < ELEMENTSOF(certs); i++) {
        size_t len, n_fail = 0;
        _cleanup_free_ uint8_t *rep = vt_read(certs[i].vec, "report.bin", &len);
        _cleanup_(nt_cert_bundle_freep) NtCertBundle *ref = vt_bundle(certs[i].vec);
        const NtCertBundleEntry *e = nt_cert_bundle_find(ref, certs[i].role);
        NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
        o.at = VT_AT_2025;
        assert_non_null(e);

        for (size_t pos = 0; pos < e->der_len; pos += certs[i].stride) {
            _cleanup_free_ uint8_t *der = malloc(e->der_len);
            _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = nt_cert_bundle_new();
            assert_non_null(der);
            memcpy(der, e->der, e->der_len);
            der[pos] ^= 0x01;
            assert_int_equal(nt_cert_bundle_add(b, der, e->der_len, certs[i].role, "flipped"), 0);
            for (size_t k = 0; k < ref->n_entries; k++)
                if (ref->entries[k].role != certs[i].role)
                    assert_int_equal(nt_cert_bundle_add(b, ref->entries[k].der,
                                                        ref->entries[k].der_len,
                                                        ref->entries[k].role, "ref"),
                                     0);
            _cleanup_(nt_verdict_freep) NtVerdict *vd = verify_buf(v, rep, len, b, &o);
            const char *got = vt_failed_check(vd);
            if (nt_verdict_status(vd) != NT_VERDICT_INVALID ||
                !(streq(got, "certificates") || streq(got, "cert_chain")))
                fail_msg("%s/%s: flip at %zu: got %s", certs[i].vec, certs[i].file, pos, got);
            n_fail++;
        }
        assert_true(n_fail > 100);
    }
}

static void test_signature_encoding(void **state) {
    size_t len, dlen;
    _cleanup_free_ uint8_t *rep = vt_read("milan-v2-virtee-vcek", "report.bin", &len);
    _cleanup_free_ uint8_t *der = vt_read("milan-v2-virtee-vcek", "vcek.der", &dlen);
    _cleanup_(X509_freep) X509 *x = NULL;
    _cleanup_(EVP_MD_freep) EVP_MD *md = EVP_MD_fetch(NULL, "SHA384", NULL);
    static const uint8_t order_be[48] = {
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf, 0x58, 0x1a, 0x0d, 0xb2,
        0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
    };
    uint8_t buf[SNP_REPORT_SIZE];
    uint8_t *r = buf + SNP_REPORT_SIGNED_SIZE, *s = r + SNP_SIG_COMPONENT_SIZE;

    assert_int_equal(nt_cert_from_der(der, dlen, &x), 0);
    EVP_PKEY *k = X509_get0_pubkey(x);
    memcpy(buf, rep, len);
    assert_int_equal(nt_report_check_signature(buf, k, md), 0);

    /* r = 0 */
    memset(r, 0, 48);
    assert_int_equal(nt_report_check_signature(buf, k, md), -EBADMSG);
    /* s = n (little-endian) and s = n + 0 in the padding */
    memcpy(buf, rep, len);
    for (size_t i = 0; i < 48; i++)
        s[i] = order_be[47 - i];
    assert_int_equal(nt_report_check_signature(buf, k, md), -EBADMSG);
    /* s = n - 1: in range, wrong */
    s[0] -= 1;
    assert_int_equal(nt_report_check_signature(buf, k, md), -EKEYREJECTED);
    /* non-zero padding beyond 48 bytes, with the original r and s */
    for (size_t p = 48; p < SNP_SIG_COMPONENT_SIZE; p++) {
        memcpy(buf, rep, len);
        r[p] = 1;
        assert_int_equal(nt_report_check_signature(buf, k, md), -EBADMSG);
        memcpy(buf, rep, len);
        s[p] = 0x80;
        assert_int_equal(nt_report_check_signature(buf, k, md), -EBADMSG);
    }
}

static void test_bundle_errors(void **state) {
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    size_t len, alen, glen;
    _cleanup_free_ uint8_t *rep = vt_read("milan-v2-virtee-vcek", "report.bin", &len);
    _cleanup_free_ uint8_t *ask = vt_read("milan-v2-virtee-vcek", "ask.pem", &alen);
    _cleanup_free_ uint8_t *genoa_ark = vt_read("genoa-v3-msft-vcek", "ark.pem", &glen);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *ref = vt_bundle("milan-v2-virtee-vcek");
    const NtCertBundleEntry *vcek = nt_cert_bundle_find(ref, NT_CERT_ROLE_VCEK);
    assert_int_equal(nt_verifier_new(&v), 0);

    /* No certificates at all. */
    _cleanup_(nt_verdict_freep) NtVerdict *v1 = verify_buf(v, rep, len, NULL, NULL);
    assert_string_equal(vt_failed_check(v1), "certificates");
    assert_int_equal(nt_verdict_first_failure(v1)->error, -ENOKEY);

    /* An ASK declared as the VCEK. */
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b2 = nt_cert_bundle_new();
    assert_int_equal(nt_cert_bundle_add(b2, ask, alen, NT_CERT_ROLE_VCEK, "vcek.pem"), 0);
    _cleanup_(nt_verdict_freep) NtVerdict *v2 = verify_buf(v, rep, len, b2, NULL);
    assert_string_equal(vt_failed_check(v2), "certificates");
    assert_non_null(strstr(nt_verdict_first_failure(v2)->detail, "is not a VCEK"));

    /* A trusted ARK of another product in the evidence: it did not sign the ASK. */
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b3 = nt_cert_bundle_new();
    assert_int_equal(nt_cert_bundle_add(b3, vcek->der, vcek->der_len, NT_CERT_ROLE_VCEK, "v"), 0);
    assert_int_equal(nt_cert_bundle_add(b3, genoa_ark, glen, _NT_CERT_ROLE_INVALID, "ark"), 0);
    _cleanup_(nt_verdict_freep) NtVerdict *v3 = verify_buf(v, rep, len, b3, NULL);
    assert_string_equal(vt_failed_check(v3), "ark");

    /* The VCEK alone: the built-in Milan ASK completes the chain. */
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b4 = nt_cert_bundle_new();
    assert_int_equal(nt_cert_bundle_add(b4, vcek->der, vcek->der_len, _NT_CERT_ROLE_INVALID, "v"),
                     0);
    assert_int_equal(b4->entries[0].role, NT_CERT_ROLE_VCEK);
    _cleanup_(nt_verdict_freep) NtVerdict *v4 = verify_buf(v, rep, len, b4, NULL);
    assert_int_equal(nt_verdict_status(v4), NT_VERDICT_OK);

    /* The VCEK of another chip: the signature does not verify. */
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b5 = vt_bundle("milan-v2-gosevguest-vcek");
    _cleanup_(nt_verdict_freep) NtVerdict *v5 = verify_buf(v, rep, len, b5, NULL);
    assert_string_equal(vt_failed_check(v5), "report_signature");

    /* Garbage is refused by the bundle and leaves it unchanged. */
    size_t n = b4->n_entries;
    assert_int_equal(nt_cert_bundle_add(b4, (const uint8_t *)"xx", 2, NT_CERT_ROLE_ASK, "g"), 0);
    assert_int_equal(nt_cert_bundle_add(b4, (const uint8_t *)"-----BEGIN CERTIFICATE-----\nAA\n",
                                        31, NT_CERT_ROLE_ASK, "g"),
                     -EBADMSG);
    assert_int_equal(nt_cert_bundle_add(b4, (const uint8_t *)"xx", 2, _NT_CERT_ROLE_INVALID, "g"),
                     -EBADMSG);
    assert_int_equal(b4->n_entries, n + 1);
    /* ...and a garbage ASK declared as such fails the verification as "certificates". */
    _cleanup_(nt_verdict_freep) NtVerdict *v6 = verify_buf(v, rep, len, b4, NULL);
    assert_string_equal(vt_failed_check(v6), "certificates");

    /* A report signed with no key. */
    uint8_t buf[SNP_REPORT_SIZE];
    memcpy(buf, rep, len);
    buf[0x48] |= 7u << 2;
    _cleanup_(nt_verdict_freep) NtVerdict *v7 = verify_buf(v, buf, len, ref, NULL);
    assert_string_equal(vt_failed_check(v7), "signing_key");
    /* A truncated report. */
    _cleanup_(nt_verdict_freep) NtVerdict *v8 = verify_buf(v, rep, len - 1, ref, NULL);
    assert_string_equal(vt_failed_check(v8), "report_format");
    assert_false(v8->have_report);
}

static void test_product_option(void **state) {
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    size_t len;
    _cleanup_free_ uint8_t *rep = vt_read("milan-v2-virtee-vcek", "report.bin", &len);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = vt_bundle("milan-v2-virtee-vcek");
    NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
    assert_int_equal(nt_verifier_new(&v), 0);
    o.product = SNP_PRODUCT_GENOA;
    _cleanup_(nt_verdict_freep) NtVerdict *v1 = verify_buf(v, rep, len, b, &o);
    assert_string_equal(vt_failed_check(v1), "product");
    o.product = SNP_PRODUCT_MILAN;
    _cleanup_(nt_verdict_freep) NtVerdict *v2 = verify_buf(v, rep, len, b, &o);
    assert_int_equal(nt_verdict_status(v2), NT_VERDICT_OK);
}

static void test_policy_min_tcb_componentwise(void **state) {
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    size_t len;
    _cleanup_free_ uint8_t *rep = vt_read("milan-v2-virtee-vcek", "report.bin", &len);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = vt_bundle("milan-v2-virtee-vcek");
    _cleanup_(nt_policy_freep) NtPolicy *lower_snp = NULL, *ok = NULL;
    NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
    /* The report: bl=3 tee=0 snp=8 ucode=115. As one u64 the report is "higher" than
     * snp=9/ucode=10, but its SNP SPL is lower: it must fail. */
    static const char p1[] = "{\"min_tcb\":{\"snp\":9,\"microcode\":10}}";
    static const char p2[] = "{\"min_tcb\":{\"bootloader\":3,\"tee\":0,\"snp\":8,"
                             "\"microcode\":115,\"fmc\":200}}";
    assert_int_equal(nt_verifier_new(&v), 0);
    assert_int_equal(nt_policy_parse(p1, strlen(p1), &lower_snp, NULL), 0);
    assert_int_equal(nt_policy_parse(p2, strlen(p2), &ok, NULL), 0);

    o.policy = lower_snp;
    _cleanup_(nt_verdict_freep) NtVerdict *v1 = verify_buf(v, rep, len, b, &o);
    assert_int_equal(nt_verdict_status(v1), NT_VERDICT_POLICY);
    const NtCheck *c = nt_verdict_first_failure(v1);
    assert_string_equal(c->name, "min_tcb");
    assert_non_null(strstr(c->detail, "snp"));
    assert_string_equal(c->found, "bl=3 tee=0 snp=8 ucode=115");
    assert_string_equal(c->expected, "snp>=9 ucode>=10");

    o.policy = ok; /* fmc is ignored on Milan */
    _cleanup_(nt_verdict_freep) NtVerdict *v2 = verify_buf(v, rep, len, b, &o);
    assert_int_equal(nt_verdict_status(v2), NT_VERDICT_OK);
    assert_true(v2->policy_applied);
}

static void test_gosevguest_debug_policy(void **state) {
    /* The go-sev-guest report has the DEBUG policy bit set: authentic, but a policy that does
     * not allow debugging must reject it, and one that does must accept it. */
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    size_t len;
    _cleanup_free_ uint8_t *rep = vt_read("milan-v2-gosevguest-vcek", "report.bin", &len);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = vt_bundle("milan-v2-gosevguest-vcek");
    _cleanup_(nt_policy_freep) NtPolicy *deny = NULL, *allow = NULL;
    NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
    assert_int_equal(nt_verifier_new(&v), 0);
    assert_int_equal(nt_policy_parse("{}", 2, &deny, NULL), 0);
    assert_int_equal(nt_policy_parse("{\"allow_debug\":true}", 20, &allow, NULL), 0);
    o.policy = deny;
    _cleanup_(nt_verdict_freep) NtVerdict *v1 = verify_buf(v, rep, len, b, &o);
    assert_int_equal(nt_verdict_status(v1), NT_VERDICT_POLICY);
    assert_string_equal(vt_failed_check(v1), "debug");
    o.policy = allow;
    _cleanup_(nt_verdict_freep) NtVerdict *v2 = verify_buf(v, rep, len, b, &o);
    assert_int_equal(nt_verdict_status(v2), NT_VERDICT_OK);
}

static void test_json(void **state) {
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    size_t len;
    _cleanup_free_ uint8_t *rep = vt_read("genoa-v3-msft-vcek", "report.bin", &len);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = vt_bundle("genoa-v3-msft-vcek");
    _cleanup_(nt_policy_freep) NtPolicy *p = NULL;
    NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
    static const char pol[] = "{\"measurements\":[\"ab120000000000000000000000000000000000000000"
                              "0000000000000000000000000000000000000000000000000000\"]}";
    assert_int_equal(nt_verifier_new(&v), 0);
    assert_int_equal(nt_policy_parse(pol, strlen(pol), &p, NULL), 0);
    o.policy = p;
    _cleanup_(nt_verdict_freep) NtVerdict *vd = verify_buf(v, rep, len, b, &o);
    assert_int_equal(nt_verdict_status(vd), NT_VERDICT_POLICY);
    json_auto_t *j = nt_verdict_to_json(vd);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "verdict")), "policy");
    assert_string_equal(json_string_value(json_object_get(j, "product")), "Genoa");
    assert_non_null(json_object_get(j, "report"));
    json_t *checks = json_object_get(j, "checks"), *m = NULL, *e;
    size_t i;
    json_array_foreach(checks, i, e) if (streq(json_string_value(json_object_get(e, "check")),
                                               "measurement")) m = e;
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "result")), "fail");
    assert_string_equal(json_string_value(json_object_get(m, "class")), "policy");
    assert_non_null(strstr(json_string_value(json_object_get(m, "expected")), "one of [ab12"));
    assert_string_equal(json_string_value(json_object_get(m, "found")),
                        "5feee30d6d7e1a29f403d70a4198237ddfb13051a2d6976439487c609388ed7f98189887"
                        "920ab2fa0096903a0c23fca1");
}

typedef struct Src {
    const NtCertBundleEntry *vcek;
    int calls;
} Src;

static int src_fetch(void *userdata, const SnpReport *r, SnpProduct p, NtCertRole role,
                     NtCertBundle *bundle) {
    Src *s = userdata;
    __atomic_fetch_add(&s->calls, 1, __ATOMIC_RELAXED);
    if (!s->vcek || role != NT_CERT_ROLE_VCEK)
        return -ENOENT;
    return nt_cert_bundle_add(bundle, s->vcek->der, s->vcek->der_len, NT_CERT_ROLE_VCEK, "src");
}

static void test_vcek_source(void **state) {
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    size_t len;
    _cleanup_free_ uint8_t *rep = vt_read("milan-v2-virtee-vcek", "report.bin", &len);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *ref = vt_bundle("milan-v2-virtee-vcek");
    Src s = {.vcek = NULL};
    NtVcekSource src = {.name = "test", .fetch = src_fetch, .userdata = &s};
    assert_int_equal(nt_verifier_new(&v), 0);
    nt_verifier_set_vcek_source(v, &src);

    _cleanup_(nt_verdict_freep) NtVerdict *v1 = verify_buf(v, rep, len, NULL, NULL);
    assert_string_equal(vt_failed_check(v1), "certificates");
    assert_int_equal(s.calls, 1);
    s.vcek = nt_cert_bundle_find(ref, NT_CERT_ROLE_VCEK);
    _cleanup_(nt_verdict_freep) NtVerdict *v2 = verify_buf(v, rep, len, NULL, NULL);
    assert_int_equal(nt_verdict_status(v2), NT_VERDICT_OK);
    assert_int_equal(s.calls, 2);
    /* With the VCEK in the evidence the source is not asked. */
    _cleanup_(nt_verdict_freep) NtVerdict *v3 = verify_buf(v, rep, len, ref, NULL);
    assert_int_equal(nt_verdict_status(v3), NT_VERDICT_OK);
    assert_int_equal(s.calls, 2);
}

typedef struct ThreadArg {
    NtVerifier *v;
    const uint8_t *rep;
    size_t len;
    const NtCertBundle *b;
    int ok, bad;
} ThreadArg;

static void *thread_main(void *p) {
    ThreadArg *a = p;
    uint8_t buf[SNP_REPORT_SIZE];
    for (int i = 0; i < 60; i++) {
        NtVerdict *vd = NULL;
        memcpy(buf, a->rep, a->len);
        if (i % 3 == 2)
            buf[0x90] ^= 1; /* a tampered measurement */
        if (nt_verifier_verify(a->v, buf, a->len, a->b, NULL, &vd) < 0)
            return NULL;
        if (nt_verdict_status(vd) == NT_VERDICT_OK)
            a->ok++;
        else if (streq(vt_failed_check(vd), "report_signature"))
            a->bad++;
        nt_verdict_free(vd);
        if (i == 30)
            nt_verifier_cache_flush(a->v);
    }
    return NULL;
}

static void test_threads(void **state) {
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    size_t len;
    _cleanup_free_ uint8_t *rep = vt_read("turin-v5-msft-vcek", "report.bin", &len);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = vt_bundle("turin-v5-msft-vcek");
    pthread_t t[4];
    ThreadArg a[4];
    assert_int_equal(nt_verifier_new(&v), 0);
    for (int i = 0; i < 4; i++) {
        a[i] = (ThreadArg){.v = v, .rep = rep, .len = len, .b = b};
        assert_int_equal(pthread_create(&t[i], NULL, thread_main, &a[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(a[i].ok, 40);
        assert_int_equal(a[i].bad, 20);
    }
}

static void test_time_parse(void **state) {
    time_t t;
    char buf[32];
    assert_int_equal(nt_parse_time("2025-01-01T00:00:00Z", &t), 0);
    assert_int_equal(t, VT_AT_2025);
    assert_int_equal(nt_parse_time("2025-01-01T00:00:00+00:00", &t), 0);
    assert_int_equal(t, VT_AT_2025);
    assert_int_equal(nt_parse_time("@1735689600", &t), 0);
    assert_int_equal(t, VT_AT_2025);
    nt_format_time(t, buf);
    assert_string_equal(buf, "2025-01-01T00:00:00Z");
    assert_int_equal(nt_parse_time("2025-01-01", &t), -EINVAL);
    assert_int_equal(nt_parse_time("2025-01-01T00:00:00+02:00", &t), -EINVAL);
    assert_int_equal(nt_parse_time("2025-13-01T00:00:00Z", &t), -EINVAL);
    assert_int_equal(nt_parse_time("@-5", &t), -EINVAL);
    assert_int_equal(nt_parse_time("", &t), -EINVAL);
}

static void test_oom(void **state) {
    /* Every allocation of creating a verifier, loading a bundle and a cold verification that
     * fails with strings, failed in turn: each reports -ENOMEM or a correct verdict, never a
     * wrong one, and leaks nothing (ASan). */
    size_t len;
    _cleanup_free_ uint8_t *rep = vt_read("milan-v2-virtee-vcek", "report.bin", &len);
    uint8_t bad[SNP_REPORT_SIZE];
    char dir[4096];
    long n;
    vt_path(dir, sizeof dir, "milan-v2-virtee-vcek", NULL);
    memcpy(bad, rep, len);
    bad[0x90] ^= 1;
    for (n = 0;; n++) {
        NtVerifier *v = NULL;
        NtCertBundle *b = NULL;
        NtVerdict *vd = NULL, *vd2 = NULL;
        int r;
        nt_alloc_fail_after(n);
        r = nt_verifier_new(&v);
        if (r >= 0) {
            b = nt_cert_bundle_new();
            r = b ? nt_cert_bundle_add_dir(b, dir) : -ENOMEM;
        }
        if (r >= 0)
            r = nt_verifier_verify(v, rep, len, b, NULL, &vd);
        if (r >= 0)
            r = nt_verifier_verify(v, bad, len, b, NULL, &vd2);
        nt_alloc_fail_after(-1);
        if (r < 0)
            assert_int_equal(r, -ENOMEM);
        else {
            assert_int_equal(nt_verdict_status(vd), NT_VERDICT_OK);
            assert_string_equal(vt_failed_check(vd2), "report_signature");
        }
        nt_verdict_free(vd);
        nt_verdict_free(vd2);
        nt_cert_bundle_free(b);
        nt_verifier_free(v);
        if (r >= 0)
            break;
    }
    assert_true(n >= 10);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_pass),
        cmocka_unit_test(test_vlek_expired),
        cmocka_unit_test(test_flip_report),
        cmocka_unit_test(test_flip_certs),
        cmocka_unit_test(test_signature_encoding),
        cmocka_unit_test(test_bundle_errors),
        cmocka_unit_test(test_product_option),
        cmocka_unit_test(test_policy_min_tcb_componentwise),
        cmocka_unit_test(test_gosevguest_debug_policy),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_vcek_source),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_time_parse),
        cmocka_unit_test(test_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
