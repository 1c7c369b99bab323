/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The verifier against the simulated SNP firmware (snp/sim.h): round trips for each product and
 * report version with the chip's ARK as an explicit trust anchor; a simulated ARK is never
 * trusted without it; chains from the wrong product, a swapped ASK, VCEKs whose TCB, hwID,
 * productName or signature scheme differ (forged here with the chip's own ASK key, so that only
 * the one property under test is wrong), a masked chip id, VLEK signing, and policy mismatches
 * (debug, report data) are each rejected with the right check named.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "core/encoding.h"
#include "core/openssl-util.h"
#include "snp/sim.h"
#include "vt-util.h"

static Chip chips[] = {
    {"milan3", SNP_PRODUCT_MILAN, true, 3, ""},  {"milan2", SNP_PRODUCT_MILAN, false, 2, ""},
    {"milanB", SNP_PRODUCT_MILAN, false, 3, ""}, {"genoa3", SNP_PRODUCT_GENOA, false, 3, ""},
    {"genoa5", SNP_PRODUCT_GENOA, false, 5, ""}, {"turin5", SNP_PRODUCT_TURIN, false, 5, ""},
};
enum { MILAN3, MILAN2, MILANB, GENOA3, GENOA5, TURIN5 };
static char tmpdir[] = "/tmp/nt-test-verify-sim-XXXXXX";

static int setup(void **state) {
    return vt_chips_init(tmpdir, chips, ELEMENTSOF(chips));
}

static int teardown(void **state) {
    return vt_chips_remove(tmpdir);
}

static void chip_file(const Chip *c, const char *f, char *buf, size_t size) {
    snprintf(buf, size, "%s/%s", c->dir, f);
}

static void trust(NtVerifier *v, const Chip *c) {
    char p[PATH_MAX + 16];
    chip_file(c, "ark.pem", p, sizeof p);
    assert_int_equal(nt_verifier_add_trust_anchor_file(v, p), 0);
}

/* A report from the chip and the certificate table it returns with it. */
static void evidence(const Chip *c, uint8_t rd_byte, uint8_t rep[SNP_REPORT_SIZE],
                     NtCertBundle **ret_table) {
    _cleanup_(sim_chip_freep) SimChip *s = NULL;
    _cleanup_free_ uint8_t *table = NULL;
    size_t tlen = 0;
    uint8_t rd[64];
    memset(rd, rd_byte, sizeof rd);
    assert_int_equal(sim_chip_load(c->dir, &s), 0);
    assert_int_equal(sim_chip_get_report(s, rd, sim_chip_launch(s)->vmpl, rep), 0);
    if (ret_table) {
        NtCertBundle *b = nt_cert_bundle_new();
        assert_non_null(b);
        assert_int_equal(sim_chip_get_cert_table(s, &table, &tlen), 0);
        assert_int_equal(nt_cert_bundle_add_table(b, table, tlen), 0);
        *ret_table = b;
    }
}

static void bundle_add(NtCertBundle *b, const Chip *c, const char *file) {
    char p[PATH_MAX + 16];
    chip_file(c, file, p, sizeof p);
    assert_int_equal(nt_cert_bundle_add_file(b, p), 0);
}

static NtVerdict *verify(NtVerifier *v, const uint8_t *rep, const NtCertBundle *b,
                         const NtPolicy *p) {
    NtVerdict *vd = NULL;
    NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
    o.policy = p;
    assert_int_equal(nt_verifier_verify(v, rep, SNP_REPORT_SIZE, b, &o, &vd), 0);
    return vd;
}

static void expect(NtVerdict *vd, NtVerdictStatus st, const char *check) {
    if (nt_verdict_status(vd) != st || !streq(vt_failed_check(vd), check))
        fail_msg("expected %s/%s, got %s/%s: %s", nt_verdict_status_to_string(st), check,
                 nt_verdict_status_to_string(nt_verdict_status(vd)), vt_failed_check(vd),
                 nt_verdict_first_failure(vd) ? nt_verdict_first_failure(vd)->detail : "");
    nt_verdict_free(vd);
}

static void test_roundtrip(void **state) {
    for (size_t i = 0; i < ELEMENTSOF(chips); i++) {
        const Chip *c = &chips[i];
        _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
        _cleanup_(nt_cert_bundle_freep) NtCertBundle *table = NULL, *no_ark = nt_cert_bundle_new();
        uint8_t rep[SNP_REPORT_SIZE];
        assert_int_equal(nt_verifier_new(&v), 0);
        evidence(c, 0x42, rep, &table);
        bundle_add(no_ark, c, "vcek.pem");
        bundle_add(no_ark, c, "ask.pem");

        /* Not trusted without --trust-anchor, whether or not the ARK comes along. */
        expect(verify(v, rep, table, NULL), NT_VERDICT_INVALID, "ark");
        expect(verify(v, rep, no_ark, NULL), NT_VERDICT_INVALID, "cert_chain");

        trust(v, c);
        _cleanup_(nt_verdict_freep) NtVerdict *vd = verify(v, rep, table, NULL);
        if (nt_verdict_status(vd) != NT_VERDICT_OK)
            fail_msg("%s: %s: %s", c->name, vt_failed_check(vd),
                     nt_verdict_first_failure(vd)->detail);
        assert_int_equal(vd->product, c->product);
        assert_int_equal(vd->report.version, c->version);
        assert_int_equal(vd->report.report_data[5], 0x42);
        assert_non_null(strstr(vd->anchor, c->dir));
        assert_int_equal(nt_verdict_find(vd, "hwid")->result, NT_CHECK_PASS);
        expect(verify(v, rep, no_ark, NULL), NT_VERDICT_OK, "(none)");
    }
}

static void test_wrong_product_and_swapped_ask(void **state) {
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *genoa = nt_cert_bundle_new(),
                                                 *mixed = nt_cert_bundle_new(),
                                                 *swapped = nt_cert_bundle_new(),
                                                 *foreign_ark = NULL;
    uint8_t grep_[SNP_REPORT_SIZE], mrep[SNP_REPORT_SIZE];
    assert_int_equal(nt_verifier_new(&v), 0);
    trust(v, &chips[MILAN3]);
    trust(v, &chips[MILANB]);
    evidence(&chips[GENOA3], 1, grep_, NULL);
    evidence(&chips[MILAN3], 1, mrep, &foreign_ark);

    /* A Genoa chain against (only) Milan anchors. */
    bundle_add(genoa, &chips[GENOA3], "vcek.pem");
    bundle_add(genoa, &chips[GENOA3], "ask.pem");
    expect(verify(v, grep_, genoa, NULL), NT_VERDICT_INVALID, "cert_chain");
    /* A Genoa VCEK with a (trusted) Milan ASK. */
    bundle_add(mixed, &chips[GENOA3], "vcek.pem");
    bundle_add(mixed, &chips[MILAN3], "ask.pem");
    expect(verify(v, grep_, mixed, NULL), NT_VERDICT_INVALID, "cert_chain");
    /* Milan chip 3's VCEK with Milan chip B's ASK, both ARKs trusted. */
    bundle_add(swapped, &chips[MILAN3], "vcek.pem");
    bundle_add(swapped, &chips[MILANB], "ask.pem");
    expect(verify(v, mrep, swapped, NULL), NT_VERDICT_INVALID, "cert_chain");
    /* Chip 3's chain with chip B's (trusted) ARK in the evidence. */
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = nt_cert_bundle_new();
    bundle_add(b, &chips[MILAN3], "vcek.pem");
    bundle_add(b, &chips[MILAN3], "ask.pem");
    bundle_add(b, &chips[MILANB], "ark.pem");
    expect(verify(v, mrep, b, NULL), NT_VERDICT_INVALID, "ark");
    /* And the right one passes. */
    expect(verify(v, mrep, foreign_ark, NULL), NT_VERDICT_OK, "(none)");
    /* A sim chain is not accepted by AMD's real anchors with --product pinned either. */
}

/* ---- forging VCEKs with the chip's own ASK key ---- */

enum { F_NONE, F_SNP_SPL, F_HWID, F_PRODUCT, F_NO_UCODE, F_SALT32, F_PKCS1, F_SHA256 };

static void replace_ext(X509 *x, const char *oid, const uint8_t *val, size_t len) {
    _cleanup_(ASN1_OBJECT_freep) ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
    int idx = X509_get_ext_by_OBJ(x, obj, -1);
    assert_true(idx >= 0);
    X509_EXTENSION_free(X509_delete_ext(x, idx));
    if (!val)
        return;
    _cleanup_(ASN1_OCTET_STRING_freep) ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    assert_int_equal(ASN1_OCTET_STRING_set(os, val, (int)len), 1);
    _cleanup_(X509_EXTENSION_freep) X509_EXTENSION *e =
        X509_EXTENSION_create_by_OBJ(NULL, obj, 0, os);
    assert_non_null(e);
    assert_int_equal(X509_add_ext(x, e, idx), 1);
}

static NtCertBundle *forged_bundle(const Chip *c, int what) {
    char p[PATH_MAX + 16];
    _cleanup_(X509_freep) X509 *x = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *ask = NULL;
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    NtAmdExt e;

    chip_file(c, "vcek.pem", p, sizeof p);
    FILE *f = fopen(p, "re");
    assert_non_null(f);
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    chip_file(c, "secrets/ask.key", p, sizeof p);
    f = fopen(p, "re");
    assert_non_null(f);
    ask = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    assert_non_null(ask);
    assert_int_equal(nt_cert_amd_ext(x, &e), 0);

    if (what == F_SNP_SPL) {
        uint8_t v[3] = {0x02, 0x01, (uint8_t)(e.spl.snp + 1)};
        replace_ext(x, "1.3.6.1.4.1.3704.1.3.3", v, sizeof v);
    } else if (what == F_HWID) {
        e.hwid[e.hwid_len - 1] ^= 1;
        replace_ext(x, "1.3.6.1.4.1.3704.1.4", e.hwid, e.hwid_len);
    } else if (what == F_PRODUCT) {
        static const uint8_t v[] = {0x16, 0x05, 'G', 'e', 'n', 'o', 'a'};
        replace_ext(x, "1.3.6.1.4.1.3704.1.2", v, sizeof v);
    } else if (what == F_NO_UCODE)
        replace_ext(x, "1.3.6.1.4.1.3704.1.3.8", NULL, 0);

    const EVP_MD *md = what == F_SHA256 ? EVP_sha256() : EVP_sha384();
    assert_int_equal(EVP_DigestSignInit(m, &pctx, md, NULL, ask), 1);
    if (what != F_PKCS1) {
        assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, what == F_SALT32 ? 32 : 48), 1);
        assert_int_equal(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md), 1);
    }
    assert_true(X509_sign_ctx(x, m) > 0);

    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    assert_true(n > 0);
    NtCertBundle *b = nt_cert_bundle_new();
    assert_non_null(b);
    assert_int_equal(nt_cert_bundle_add(b, der, (size_t)n, NT_CERT_ROLE_VCEK, "forged"), 0);
    OPENSSL_free(der);
    bundle_add(b, c, "ask.pem");
    return b;
}

static void test_forged_vceks(void **state) {
    static const struct {
        int what;
        const char *check;
    } cases[] = {
        {F_NONE, "(none)"},      {F_SNP_SPL, "tcb_vs_cert"},  {F_HWID, "hwid"},
        {F_PRODUCT, "product"},  {F_NO_UCODE, "tcb_vs_cert"}, {F_SALT32, "cert_chain"},
        {F_PKCS1, "cert_chain"}, {F_SHA256, "cert_chain"},
    };
    const size_t which[] = {MILAN3, TURIN5};
    for (size_t k = 0; k < ELEMENTSOF(which); k++) {
        const Chip *c = &chips[which[k]];
        _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
        uint8_t rep[SNP_REPORT_SIZE];
        assert_int_equal(nt_verifier_new(&v), 0);
        trust(v, c);
        evidence(c, 7, rep, NULL);
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
            _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = forged_bundle(c, cases[i].what);
            NtVerdict *vd = verify(v, rep, b, NULL);
            if (!streq(vt_failed_check(vd), cases[i].check))
                fail_msg("%s case %zu: wanted %s, got %s", c->name, i, cases[i].check,
                         vt_failed_check(vd));
            expect(vd, cases[i].what == F_NONE ? NT_VERDICT_OK : NT_VERDICT_INVALID,
                   cases[i].check);
        }
    }
}

static NtPolicy *policy(const char *json) {
    NtPolicy *p = NULL;
    assert_int_equal(nt_policy_parse(json, strlen(json), &p, NULL), 0);
    return p;
}

static void test_launch_changes(void **state) {
    const Chip *c = &chips[MILAN3];
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    _cleanup_(sim_chip_freep) SimChip *s = NULL;
    _cleanup_(nt_policy_freep) NtPolicy *deny = policy("{}"),
                                        *allow_debug = policy("{\"allow_debug\":true}"),
                                        *allow_mask = policy("{\"chip_id_masked\":\"allow\"}"),
                                        *only_vcek = policy("{\"signing_keys\":[\"vcek\"]}");
    uint8_t rep[SNP_REPORT_SIZE];
    char rd[129], js[200];
    assert_int_equal(nt_verifier_new(&v), 0);
    trust(v, c);

    /* Wrong report data. */
    memset(js, 0, sizeof js);
    uint8_t want[64];
    memset(want, 0x11, sizeof want);
    hex_encode(want, 64, rd);
    snprintf(js, sizeof js, "{\"report_data\":\"%s\"}", rd);
    _cleanup_(nt_policy_freep) NtPolicy *rdp = policy(js);
    evidence(c, 0x22, rep, NULL);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *old = nt_cert_bundle_new();
    bundle_add(old, c, "vcek.pem");
    bundle_add(old, c, "ask.pem");
    expect(verify(v, rep, old, rdp), NT_VERDICT_POLICY, "report_data");
    evidence(c, 0x11, rep, NULL);
    expect(verify(v, rep, old, rdp), NT_VERDICT_OK, "(none)");

    /* Debug allowed by the guest policy. */
    assert_int_equal(sim_chip_load(c->dir, &s), 0);
    sim_chip_launch(s)->policy |= SNP_POLICY_DEBUG;
    assert_int_equal(sim_chip_save(s), 0);
    evidence(c, 0, rep, NULL);
    expect(verify(v, rep, old, deny), NT_VERDICT_POLICY, "debug");
    expect(verify(v, rep, old, allow_debug), NT_VERDICT_OK, "(none)");
    sim_chip_launch(s)->policy &= ~SNP_POLICY_DEBUG;

    /* Masked chip id. */
    sim_chip_launch(s)->flags |= SNP_FLAG_MASK_CHIP_KEY;
    assert_int_equal(sim_chip_save(s), 0);
    evidence(c, 0, rep, NULL);
    _cleanup_(nt_verdict_freep) NtVerdict *mv = verify(v, rep, old, NULL);
    assert_int_equal(nt_verdict_status(mv), NT_VERDICT_OK);
    assert_int_equal(nt_verdict_find(mv, "hwid")->result, NT_CHECK_SKIP);
    expect(verify(v, rep, old, deny), NT_VERDICT_POLICY, "chip_id_masked");
    expect(verify(v, rep, old, allow_mask), NT_VERDICT_OK, "(none)");
    sim_chip_launch(s)->flags &= ~SNP_FLAG_MASK_CHIP_KEY;

    /* VLEK signing. */
    assert_int_equal(sim_chip_set_signing_key(s, SNP_SIGNING_KEY_VLEK), 0);
    assert_int_equal(sim_chip_save(s), 0);
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *vt = NULL;
    evidence(c, 0, rep, &vt);
    _cleanup_(nt_verdict_freep) NtVerdict *vv = verify(v, rep, vt, NULL);
    if (nt_verdict_status(vv) != NT_VERDICT_OK)
        fail_msg("VLEK: %s: %s", vt_failed_check(vv), nt_verdict_first_failure(vv)->detail);
    assert_int_equal(vv->signing_role, NT_CERT_ROLE_VLEK);
    assert_true(vv->csp_id[0] != 0);
    expect(verify(v, rep, vt, only_vcek), NT_VERDICT_POLICY, "allowed_signing_key");
    /* The VCEK chain does not verify a VLEK-signed report. */
    expect(verify(v, rep, old, NULL), NT_VERDICT_INVALID, "certificates");
    assert_int_equal(sim_chip_set_signing_key(s, SNP_SIGNING_KEY_VCEK), 0);

    /* A new reported TCB: the chip re-issues its VCEK (same key); the old VCEK's SPLs no longer
     * match the report although its signature does. */
    SnpTcb t;
    assert_int_equal(snp_tcb_decode(sim_chip_launch(s)->reported_tcb, SNP_PRODUCT_MILAN, &t), 0);
    t.snp++;
    sim_chip_launch(s)->reported_tcb = snp_tcb_encode(&t, SNP_PRODUCT_MILAN);
    assert_int_equal(sim_chip_save(s), 0);
    evidence(c, 0, rep, NULL);
    expect(verify(v, rep, old, NULL), NT_VERDICT_INVALID, "tcb_vs_cert");
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *fresh = nt_cert_bundle_new();
    bundle_add(fresh, c, "vcek.pem");
    bundle_add(fresh, c, "ask.pem");
    expect(verify(v, rep, fresh, NULL), NT_VERDICT_OK, "(none)");
}

/* Regression (review finding C): one bundle holding both a VCEK and a VLEK chain. The chain cache
 * key covers the signing role, so a VLEK-signed report after a VCEK-signed one (and back) is
 * checked against its own key, not the cached key of the other. */
static void test_cache_vcek_and_vlek_in_one_bundle(void **state) {
    const Chip *c = &chips[MILAN3];
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    _cleanup_(sim_chip_freep) SimChip *s = NULL;
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *both = nt_cert_bundle_new();
    uint8_t vcek_rep[SNP_REPORT_SIZE], vlek_rep[SNP_REPORT_SIZE];
    uint64_t hits, misses;

    assert_non_null(both);
    assert_int_equal(nt_cert_bundle_add_dir(both, c->dir), 0);
    assert_non_null(nt_cert_bundle_find(both, NT_CERT_ROLE_VCEK));
    assert_non_null(nt_cert_bundle_find(both, NT_CERT_ROLE_VLEK));
    assert_int_equal(sim_chip_load(c->dir, &s), 0);
    assert_int_equal(sim_chip_get_report(s, (const uint8_t[64]){1}, 0, vcek_rep), 0);
    assert_int_equal(sim_chip_set_signing_key(s, SNP_SIGNING_KEY_VLEK), 0);
    assert_int_equal(sim_chip_get_report(s, (const uint8_t[64]){2}, 0, vlek_rep), 0);

    assert_int_equal(nt_verifier_new(&v), 0);
    trust(v, c);
    for (int round = 0; round < 2; round++) {
        _cleanup_(nt_verdict_freep) NtVerdict *a = verify(v, vcek_rep, both, NULL);
        _cleanup_(nt_verdict_freep) NtVerdict *b = verify(v, vlek_rep, both, NULL);
        if (nt_verdict_status(a) != NT_VERDICT_OK || nt_verdict_status(b) != NT_VERDICT_OK)
            fail_msg("round %d: VCEK %s, VLEK %s", round, vt_failed_check(a), vt_failed_check(b));
        assert_int_equal(a->signing_role, NT_CERT_ROLE_VCEK);
        assert_int_equal(b->signing_role, NT_CERT_ROLE_VLEK);
        assert_int_equal(a->chain_cached, round == 1);
        assert_int_equal(b->chain_cached, round == 1);
    }
    nt_verifier_cache_stats(v, &hits, &misses);
    assert_int_equal(misses, 2);
    assert_int_equal(hits, 2);
    /* Cached or not, a report still fails against the wrong key: swap the signatures. */
    memcpy(vlek_rep + SNP_REPORT_SIGNED_SIZE, vcek_rep + SNP_REPORT_SIGNED_SIZE,
           SNP_REPORT_SIZE - SNP_REPORT_SIGNED_SIZE);
    expect(verify(v, vlek_rep, both, NULL), NT_VERDICT_INVALID, "report_signature");
}

/* A certificate source like KDS while it backs off: adds the chain (ASK + ARK, cached), then
 * fails for the VCEK with -EAGAIN. */
typedef struct ChainThenFail {
    const Chip *c;
    int calls;
} ChainThenFail;

static int chain_then_fail(void *userdata, const SnpReport *r, SnpProduct p, NtCertRole role,
                           NtCertBundle *bundle) {
    ChainThenFail *s = userdata;
    char path[PATH_MAX + 16];
    int ret;

    s->calls++;
    chip_file(s->c, "ask.pem", path, sizeof path);
    ret = nt_cert_bundle_add_file(bundle, path);
    if (ret < 0)
        return ret;
    chip_file(s->c, "ark.pem", path, sizeof path);
    ret = nt_cert_bundle_add_file(bundle, path);
    return ret < 0 ? ret : -EAGAIN;
}

static void test_source_error_keeps_chain(void **state) {
    const Chip *c = &chips[MILANB];
    _cleanup_(nt_verifier_freep) NtVerifier *v = NULL;
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *vcek_only = nt_cert_bundle_new();
    ChainThenFail s = {.c = c};
    NtVcekSource src = {.name = "chain-then-EAGAIN", .fetch = chain_then_fail, .userdata = &s};
    uint8_t rep[SNP_REPORT_SIZE];

    assert_non_null(vcek_only);
    evidence(c, 0x17, rep, NULL);
    bundle_add(vcek_only, c, "vcek.pem");
    assert_int_equal(nt_verifier_new(&v), 0);
    trust(v, c);
    nt_verifier_set_vcek_source(v, &src);
    /* The VCEK came with the evidence; the source's chain completes it despite its error. */
    _cleanup_(nt_verdict_freep) NtVerdict *ok = verify(v, rep, vcek_only, NULL);
    if (nt_verdict_status(ok) != NT_VERDICT_OK)
        fail_msg("VCEK without ASK, source added the chain then failed: %s: %s",
                 vt_failed_check(ok), nt_verdict_first_failure(ok)->detail);
    assert_int_equal(s.calls, 1);
    /* No VCEK anywhere: the source's error is the reason (a caller answers 503). */
    _cleanup_(nt_verdict_freep) NtVerdict *none = verify(v, rep, NULL, NULL);
    assert_string_equal(vt_failed_check(none), "certificates");
    assert_int_equal(nt_verdict_first_failure(none)->error, -EAGAIN);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_source_error_keeps_chain),
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_wrong_product_and_swapped_ask),
        cmocka_unit_test(test_forged_vceks),
        cmocka_unit_test(test_launch_changes),
        cmocka_unit_test(test_cache_vcek_and_vlek_in_one_bundle),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
