/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The built-in AMD anchors: each one's SHA-256 fingerprint is pinned here (computed from
 * tests/vectors/snp with `openssl x509 -outform der | sha256sum`, see each SOURCE.txt), each
 * loads and passes its self-check, and only self-signed ARKs can be added as anchors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <openssl/pem.h>

#include "core/encoding.h"
#include "snp/certtable.h"
#include "core/openssl-util.h"
#include "verify/anchors.h"
#include "vt-util.h"

static const struct {
    SnpProduct product;
    NtCertRole role;
    const char *sha256;
} pinned[] = {
    {SNP_PRODUCT_MILAN, NT_CERT_ROLE_ARK,
     "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd"},
    {SNP_PRODUCT_MILAN, NT_CERT_ROLE_ASK,
     "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b"},
    {SNP_PRODUCT_MILAN, NT_CERT_ROLE_ASVK,
     "c5e081f59b7efab1fe2f8b505e159704e72f29cab7ef7cf628a05a42439082f5"},
    {SNP_PRODUCT_GENOA, NT_CERT_ROLE_ARK,
     "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1"},
    {SNP_PRODUCT_GENOA, NT_CERT_ROLE_ASK,
     "5464738c1546aed5f2cecf1dc98c5c960a92e8913238a61711bc90ec6e828521"},
    {SNP_PRODUCT_TURIN, NT_CERT_ROLE_ARK,
     "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a"},
    {SNP_PRODUCT_TURIN, NT_CERT_ROLE_ASK,
     "5b77ef5fe7a7a004fd9032668fba9d0fda22f88c4442069a479636a6ae3b3185"},
};

static void test_builtin_fingerprints(void **state) {
    NtAnchorSet s = {.n_items = 0};
    assert_int_equal(nt_anchor_set_load_builtin(&s), 0);
    assert_int_equal(s.n_items, ELEMENTSOF(pinned));
    assert_int_equal(nt_builtin_certs_count, ELEMENTSOF(pinned));
    for (size_t i = 0; i < ELEMENTSOF(pinned); i++) {
        const NtAnchor *a = NULL;
        uint8_t md[32];
        char hex[65];
        for (size_t j = 0; j < s.n_items; j++)
            if (s.items[j].product == pinned[i].product && s.items[j].role == pinned[i].role)
                a = &s.items[j];
        assert_non_null(a);
        assert_true(a->builtin);
        assert_int_equal(EVP_Digest(a->der, a->der_len, md, NULL, EVP_sha256(), NULL), 1);
        hex_encode(md, 32, hex);
        assert_string_equal(hex, pinned[i].sha256);
        assert_int_equal(nt_cert_role_detect(a->cert), pinned[i].role);
        assert_int_equal(nt_cert_ca_product(a->cert), pinned[i].product);
        assert_int_equal(nt_cert_check_sig_scheme(a->cert), 0);
    }
    nt_anchor_set_clear(&s);
    assert_int_equal(s.n_items, 0);
}

static void test_add_ark(void **state) {
    NtAnchorSet s = {.n_items = 0};
    size_t n, an, vn;
    _cleanup_free_ uint8_t *ark = vt_read("genoa-v3-msft-vcek", "ark.pem", &n);
    _cleanup_free_ uint8_t *ask = vt_read("genoa-v3-msft-vcek", "ask.pem", &an);
    _cleanup_free_ uint8_t *vcek = vt_read("milan-v2-virtee-vcek", "vcek.der", &vn);

    assert_int_equal(nt_anchor_set_add_ark(&s, ark, n, "test"), 0);
    assert_int_equal(s.n_items, 1);
    assert_int_equal(s.items[0].product, SNP_PRODUCT_GENOA);
    assert_false(s.items[0].builtin);
    assert_non_null(strstr(s.items[0].label, "ARK-Genoa (test)"));
    /* Idempotent. */
    assert_int_equal(nt_anchor_set_add_ark(&s, ark, n, "again"), 0);
    assert_int_equal(s.n_items, 1);
    /* Not ARKs. */
    assert_int_equal(nt_anchor_set_add_ark(&s, ask, an, "ask"), -EBADMSG);
    assert_int_equal(nt_anchor_set_add_ark(&s, vcek, vn, "vcek"), -EBADMSG);
    assert_int_equal(nt_anchor_set_add_ark(&s, (const uint8_t *)"junk", 4, "junk"), -EBADMSG);
    assert_int_equal(s.n_items, 1);

    /* A corrupted ARK (one bit of its self-signature) is refused. */
    _cleanup_(X509_freep) X509 *x = NULL;
    _cleanup_(BIO_free_allp) BIO *bio = BIO_new_mem_buf(ark, (int)n);
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    assert_non_null(x);
    unsigned char *der = NULL;
    int dl = i2d_X509(x, &der);
    assert_true(dl > 100);
    der[dl - 10] ^= 1;
    assert_int_equal(nt_anchor_set_add_ark(&s, der, (size_t)dl, "bad"), -EKEYREJECTED);
    OPENSSL_free(der);
    assert_int_equal(s.n_items, 1);

    /* find_ark: equal by bytes. */
    assert_non_null(nt_anchor_set_find_ark(&s, s.items[0].cert));
    nt_anchor_set_clear(&s);
}

static void test_roles_and_extensions(void **state) {
    size_t n;
    _cleanup_free_ uint8_t *der = vt_read("turin-v5-msft-vcek", "vcek.pem", &n);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = nt_cert_bundle_new();
    _cleanup_(X509_freep) X509 *x = NULL;
    NtAmdExt e;

    assert_int_equal(nt_cert_bundle_add(b, der, n, _NT_CERT_ROLE_INVALID, "vcek.pem"), 0);
    assert_int_equal(b->entries[0].role, NT_CERT_ROLE_VCEK);
    assert_int_equal(nt_cert_from_der(b->entries[0].der, b->entries[0].der_len, &x), 0);
    assert_int_equal(nt_cert_amd_ext(x, &e), 0);
    assert_string_equal(e.product_name, "Turin");
    assert_int_equal(e.struct_version, 1);
    assert_true(e.has_fmc && e.has_bl && e.has_tee && e.has_snp && e.has_ucode);
    assert_int_equal(e.spl.fmc, 1);
    assert_int_equal(e.spl.bootloader, 1);
    assert_int_equal(e.spl.tee, 1);
    assert_int_equal(e.spl.snp, 4);
    assert_int_equal(e.spl.microcode, 81);
    assert_int_equal(e.hwid_len, 8);
    assert_int_equal(e.hwid[0], 0x59);
    assert_string_equal(e.csp_id, "");

    /* Trailing bytes after a DER certificate are refused. */
    uint8_t *copy = malloc(b->entries[0].der_len + 1);
    assert_non_null(copy);
    memcpy(copy, b->entries[0].der, b->entries[0].der_len);
    copy[b->entries[0].der_len] = 0;
    X509 *y = NULL;
    assert_int_equal(nt_cert_from_der(copy, b->entries[0].der_len + 1, &y), -EBADMSG);
    free(copy);

    /* Directory loading: the VLEK vector has vlek.der, asvk.pem, ark.pem. */
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *d = vt_bundle("milan-v3-trustee-vlek");
    assert_int_equal(d->n_entries, 3);
    assert_non_null(nt_cert_bundle_find(d, NT_CERT_ROLE_VLEK));
    assert_non_null(nt_cert_bundle_find(d, NT_CERT_ROLE_ASVK));
    assert_non_null(nt_cert_bundle_find(d, NT_CERT_ROLE_ARK));
    assert_null(nt_cert_bundle_find(d, NT_CERT_ROLE_VCEK));
    assert_int_equal(nt_cert_bundle_add_dir(d, "/nonexistent-dir"), -ENOENT);
    assert_int_equal(d->n_entries, 3);

    /* A chain file as AMD KDS serves it (ASK then ARK in one PEM): both roles recognised. */
    size_t an, kn;
    _cleanup_free_ uint8_t *ask = vt_read("genoa-v3-msft-vcek", "ask.pem", &an);
    _cleanup_free_ uint8_t *ark = vt_read("genoa-v3-msft-vcek", "ark.pem", &kn);
    _cleanup_free_ uint8_t *chain = malloc(an + kn);
    assert_non_null(chain);
    memcpy(chain, ask, an);
    memcpy(chain + an, ark, kn);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *c = nt_cert_bundle_new();
    assert_int_equal(nt_cert_bundle_add(c, chain, an + kn, _NT_CERT_ROLE_INVALID, "chain"), 0);
    assert_int_equal(c->n_entries, 2);
    assert_int_equal(c->entries[0].role, NT_CERT_ROLE_ASK);
    assert_int_equal(c->entries[1].role, NT_CERT_ROLE_ARK);
    assert_string_equal(c->entries[1].origin, "chain #2");
    /* A PEM block that is not a certificate: refused, bundle unchanged. */
    static const char key[] = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n";
    assert_int_equal(
        nt_cert_bundle_add(c, (const uint8_t *)key, strlen(key), _NT_CERT_ROLE_INVALID, "key"),
        -EBADMSG);
    assert_int_equal(c->n_entries, 2);
    /* A bundle holds at most NT_CERT_BUNDLE_MAX certificates. */
    for (size_t i = 2; i < NT_CERT_BUNDLE_MAX; i++)
        assert_int_equal(nt_cert_bundle_add(c, ark, kn, NT_CERT_ROLE_ARK, "ark"), 0);
    assert_int_equal(nt_cert_bundle_add(c, ark, kn, NT_CERT_ROLE_ARK, "ark"), -E2BIG);
    assert_int_equal(c->n_entries, NT_CERT_BUNDLE_MAX);
}

static void test_cert_table(void **state) {
    /* A table with the VCEK, an ASK under an unknown GUID, and junk under another unknown GUID:
     * the junk is ignored, the ASK recognised. Junk under the VCEK GUID is an error. */
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *ref = vt_bundle("milan-v2-virtee-vcek");
    const NtCertBundleEntry *v = nt_cert_bundle_find(ref, NT_CERT_ROLE_VCEK),
                            *a = nt_cert_bundle_find(ref, NT_CERT_ROLE_ASK);
    const SnpCertKind kinds[] = {SNP_CERT_VCEK, SNP_CERT_ASK, SNP_CERT_ARK};
    const uint8_t *ders[] = {v->der, a->der, a->der};
    const size_t lens[] = {v->der_len, a->der_len, a->der_len};
    _cleanup_free_ uint8_t *t = NULL;
    size_t tl = 0;
    SnpCertTable parsed;
    assert_int_equal(snp_cert_table_build(kinds, ders, lens, 3, &t, &tl), 0);
    assert_int_equal(snp_cert_table_parse(t, tl, &parsed), 0);
    /* Entries 1 and 2 get unknown GUIDs; entry 2's certificate is corrupted. */
    t[24 + 0] ^= 0x5a;
    t[48 + 0] ^= 0xa5;
    t[parsed.entries[2].der - t] = 0x00;
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = nt_cert_bundle_new();
    assert_int_equal(nt_cert_bundle_add_table(b, t, tl), 0);
    assert_int_equal(b->n_entries, 2);
    assert_int_equal(b->entries[0].role, NT_CERT_ROLE_VCEK);
    assert_int_equal(b->entries[1].role, NT_CERT_ROLE_ASK);

    _cleanup_(nt_verifier_freep) NtVerifier *vf = NULL;
    size_t len;
    _cleanup_free_ uint8_t *rep = vt_read("milan-v2-virtee-vcek", "report.bin", &len);
    NtVerdict *vd = NULL;
    assert_int_equal(nt_verifier_new(&vf), 0);
    assert_int_equal(nt_verifier_verify(vf, rep, len, b, NULL, &vd), 0);
    assert_int_equal(nt_verdict_status(vd), NT_VERDICT_OK);
    nt_verdict_free(vd);

    /* Junk under the ARK GUID is taken as declared (parsed lazily) and fails the verification
     * as "certificates", naming the entry. */
    t[48 + 0] ^= 0xa5;
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b2 = nt_cert_bundle_new();
    assert_int_equal(nt_cert_bundle_add_table(b2, t, tl), 0);
    assert_int_equal(b2->n_entries, 3);
    assert_int_equal(b2->entries[2].role, NT_CERT_ROLE_ARK);
    assert_int_equal(nt_verifier_verify(vf, rep, len, b2, NULL, &vd), 0);
    assert_string_equal(vt_failed_check(vd), "certificates");
    assert_non_null(strstr(nt_verdict_first_failure(vd)->detail, "cert table entry 2"));
    nt_verdict_free(vd);
    /* Not a table. */
    assert_true(nt_cert_bundle_add_table(b, t, 10) < 0);
    assert_int_equal(b->n_entries, 2);
}

/* A self-signed P-256 certificate with subject CN cn, DER (malloc'd). */
static uint8_t *make_cert(const char *cn, long serial, size_t *ret_len) {
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = EVP_EC_gen("P-256");
    _cleanup_(X509_freep) X509 *x = X509_new();
    unsigned char *der = NULL;
    assert_non_null(k);
    assert_non_null(x);
    X509_NAME *name = X509_get_subject_name(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), serial), 1);
    assert_int_equal(
        X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0),
        1);
    assert_int_equal(X509_set_issuer_name(x, name), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    assert_int_equal(X509_set_pubkey(x, k), 1);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    int n = i2d_X509(x, &der);
    assert_true(n > 0);
    uint8_t *c = malloc((size_t)n);
    assert_non_null(c);
    memcpy(c, der, (size_t)n);
    OPENSSL_free(der);
    *ret_len = (size_t)n;
    return c;
}

/* Roles told once are remembered by the certificates' bytes (bundle_add_der's memo): more
 * certificates than it holds, added again and again in turn, keep their own roles; a copy with
 * one byte more is judged on its own (refused: trailing data), and a refused certificate stays
 * refused. */
static void test_roles_remembered(void **state) {
    enum { N = 48 };
    uint8_t *der[N];
    size_t len[N];
    char cn[32];

    for (int i = 0; i < N; i++) {
        /* CN decides the role of these (no AMD extensions): ARK-*, SEV-VLEK-* (ASVK), SEV-*;
         * the serial number makes each distinct. */
        static const char *const products[] = {"Milan", "Genoa", "Turin"};
        snprintf(cn, sizeof cn,
                 i % 3 == 0   ? "ARK-%s"
                 : i % 3 == 1 ? "SEV-VLEK-%s"
                              : "SEV-%s",
                 products[(i / 3) % 3]);
        der[i] = make_cert(cn, i + 1, &len[i]);
    }
    static const NtCertRole want[3] = {NT_CERT_ROLE_ARK, NT_CERT_ROLE_ASVK, NT_CERT_ROLE_ASK};
    for (int pass = 0; pass < 3; pass++)
        for (int i = 0; i < N; i++) {
            int k = pass == 1 ? N - 1 - i : i;
            _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = nt_cert_bundle_new();
            assert_int_equal(nt_cert_bundle_add(b, der[k], len[k], _NT_CERT_ROLE_INVALID, "c"), 0);
            assert_int_equal(b->entries[0].role, want[k % 3]);
        }
    /* der[0] is remembered as an ARK; with a byte appended it is another input, and refused. */
    uint8_t *longer = malloc(len[0] + 1);
    assert_non_null(longer);
    memcpy(longer, der[0], len[0]);
    longer[len[0]] = 0;
    for (int i = 0; i < 2; i++) {
        _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = nt_cert_bundle_new();
        assert_int_equal(nt_cert_bundle_add(b, der[0], len[0], _NT_CERT_ROLE_INVALID, "c"), 0);
        assert_int_equal(nt_cert_bundle_add(b, longer, len[0] + 1, _NT_CERT_ROLE_INVALID, "c"),
                         -EBADMSG);
        assert_int_equal(b->n_entries, 1);
    }
    /* A certificate whose role cannot be told: refused each time. */
    size_t ln;
    _cleanup_free_ uint8_t *other = make_cert("Other", 99, &ln);
    for (int i = 0; i < 2; i++) {
        _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = nt_cert_bundle_new();
        assert_int_equal(nt_cert_bundle_add(b, other, ln, _NT_CERT_ROLE_INVALID, "c"), -EBADMSG);
    }
    free(longer);
    for (int i = 0; i < N; i++)
        free(der[i]);
}

/* RFC 5280 4.1.2.5 time encodings at the 2050 boundary (the evil-times test covers the
 * certificates carrying them). */
static void test_time_encodings(void **state) {
    static const struct {
        int type;
        const char *s;
        int want;
    } cases[] = {
        {V_ASN1_UTCTIME, "491231235959Z", 0},
        {V_ASN1_UTCTIME, "500101000000Z", 0},
        {V_ASN1_GENERALIZEDTIME, "20500101000000Z", 0},
        {V_ASN1_GENERALIZEDTIME, "99991231235959Z", 0},
        {V_ASN1_GENERALIZEDTIME, "20491231235959Z", -EBADMSG},
        {V_ASN1_GENERALIZEDTIME, "19991231235959Z", -EBADMSG},
        {V_ASN1_UTCTIME, "300230000000Z", -EBADMSG},
        {V_ASN1_UTCTIME, "301301000000Z", -EBADMSG},
        {V_ASN1_UTCTIME, "3001010000Z", -EBADMSG},
        {V_ASN1_UTCTIME, "300101000000z", -EBADMSG},
        {V_ASN1_UTCTIME, "300101000000-0000", -EBADMSG},
        {V_ASN1_UTCTIME, " 00101000000Z", -EBADMSG},
        {V_ASN1_GENERALIZEDTIME, "20500101000000.0Z", -EBADMSG},
        {V_ASN1_GENERALIZEDTIME, "20500101000000+0000", -EBADMSG},
        {V_ASN1_OCTET_STRING, "300101000000Z", -EBADMSG},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        ASN1_TIME *t = ASN1_STRING_type_new(cases[i].type);
        assert_non_null(t);
        assert_int_equal(ASN1_STRING_set(t, cases[i].s, -1), 1);
        if (nt_asn1_time_check_rfc5280(t) != cases[i].want)
            fail_msg("%s: wanted %d", cases[i].s, cases[i].want);
        ASN1_TIME_free(t);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtin_fingerprints), cmocka_unit_test(test_add_ark),
        cmocka_unit_test(test_roles_and_extensions), cmocka_unit_test(test_cert_table),
        cmocka_unit_test(test_roles_remembered),     cmocka_unit_test(test_time_encodings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
