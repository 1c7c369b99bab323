/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Verifier conformance (issue 14): evidence that AMD's firmware and KDS never produce and that
 * RFC 5280 forbids, built from a simulated chip's real chain re-issued with one defect each
 * (certificates re-signed with the chip's own ARK/ASK keys, reports re-signed with its VCEK), so
 * that only the property under test is wrong. Each must fail with the named check; next to each
 * defect its conforming twin (re-issued the same way without the defect) must pass, so a test
 * cannot pass because re-issuing itself broke something.
 *
 * Run with a test name as argument (evil_masked_chip_id, ...) to run that one only; meson runs
 * one `verify-evil-*` test per item.
 */
#include <ctype.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "core/openssl-util.h"
#include "snp/certtable.h"
#include "snp/sim.h"
#include "vt-util.h"

static Chip chips[] = {
    {"milan3", SNP_PRODUCT_MILAN, true, 3, ""},
    {"milanB", SNP_PRODUCT_MILAN, false, 3, ""},
};
enum { MILAN3, MILANB };
static char tmpdir[] = "/tmp/nt-test-verify-evil-XXXXXX";

static int setup(void **state) {
    return vt_chips_init(tmpdir, chips, ELEMENTSOF(chips));
}

static int teardown(void **state) {
    return vt_chips_remove(tmpdir);
}

/* ---- the chip's chain, re-issued ---- */

static X509 *load_cert(const Chip *c, const char *name) {
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/%s.pem", c->dir, name);
    FILE *f = fopen(p, "re");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

static EVP_PKEY *load_key(const Chip *c, const char *name) {
    char p[PATH_MAX + 32];
    snprintf(p, sizeof p, "%s/secrets/%s.key", c->dir, name);
    FILE *f = fopen(p, "re");
    assert_non_null(f);
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(k);
    return k;
}

/* Signs x as AMD does: RSASSA-PSS, SHA-384, MGF1-SHA-384, salt 48. */
static void sign_pss(X509 *x, EVP_PKEY *k) {
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *m = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    assert_non_null(m);
    assert_int_equal(EVP_DigestSignInit(m, &pctx, EVP_sha384(), NULL, k), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, 48), 1);
    assert_int_equal(EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha384()), 1);
    assert_true(X509_sign_ctx(x, m) > 0);
}

/* Re-signs x with the chip's key `signer` ("ark", "ask", "asvk"). */
static void reissue(const Chip *c, X509 *x, const char *signer) {
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = load_key(c, signer);
    sign_pss(x, k);
}

/* Deletes every extension with OID oid; adds one with value val (DER of the extnValue content)
 * if val is not NULL. */
static void set_ext(X509 *x, const char *oid, bool critical, const uint8_t *val, size_t len,
                    bool replace) {
    _cleanup_(ASN1_OBJECT_freep) ASN1_OBJECT *obj = OBJ_txt2obj(oid, 0);
    assert_non_null(obj);
    if (replace)
        for (int idx; (idx = X509_get_ext_by_OBJ(x, obj, -1)) >= 0;)
            X509_EXTENSION_free(X509_delete_ext(x, idx));
    if (!val)
        return;
    _cleanup_(ASN1_OCTET_STRING_freep) ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    assert_int_equal(ASN1_OCTET_STRING_set(os, val, (int)len), 1);
    _cleanup_(X509_EXTENSION_freep) X509_EXTENSION *e =
        X509_EXTENSION_create_by_OBJ(NULL, obj, critical, os);
    assert_non_null(e);
    assert_int_equal(X509_add_ext(x, e, -1), 1);
}

/* An extension written by OpenSSL from config syntax ("critical,CA:FALSE"). */
static void set_conf_ext(X509 *x, int nid, const char *value) {
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
    _cleanup_(X509_EXTENSION_freep) X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    assert_non_null(e);
    for (int idx; (idx = X509_get_ext_by_NID(x, nid, -1)) >= 0;)
        X509_EXTENSION_free(X509_delete_ext(x, idx));
    assert_int_equal(X509_add_ext(x, e, -1), 1);
}

static void set_cn(X509 *x, const char *cn, bool subject, bool issuer) {
    _cleanup_(X509_NAME_freep) X509_NAME *n = X509_NAME_dup(X509_get_subject_name(x));
    assert_non_null(n);
    int idx = X509_NAME_get_index_by_NID(n, NID_commonName, -1);
    assert_true(idx >= 0);
    X509_NAME_ENTRY_free(X509_NAME_delete_entry(n, idx));
    assert_int_equal(X509_NAME_add_entry_by_NID(n, NID_commonName, MBSTRING_UTF8,
                                                (const unsigned char *)cn, -1, -1, 0),
                     1);
    if (subject)
        assert_int_equal(X509_set_subject_name(x, n), 1);
    if (issuer)
        assert_int_equal(X509_set_issuer_name(x, n), 1);
}

/* A validity time encoded exactly as given (type V_ASN1_UTCTIME or V_ASN1_GENERALIZEDTIME). */
static void set_time(X509 *x, bool not_after, int type, const char *s) {
    ASN1_TIME *t = ASN1_STRING_type_new(type);
    assert_non_null(t);
    assert_int_equal(ASN1_STRING_set(t, s, -1), 1);
    assert_int_equal(not_after ? X509_set1_notAfter(x, t) : X509_set1_notBefore(x, t), 1);
    ASN1_TIME_free(t);
}

static void add_x(NtCertBundle *b, X509 *x, NtCertRole role, const char *origin) {
    unsigned char *der = NULL;
    int n = i2d_X509(x, &der);
    assert_true(n > 0);
    assert_int_equal(nt_cert_bundle_add(b, der, (size_t)n, role, origin), 0);
    OPENSSL_free(der);
}

/* The chip's chain with the given certificates in place of its own (NULL: the chip's); with_ark
 * adds the (given or the chip's) ARK. ask is the ASK or, with vlek, the ASVK. */
static NtCertBundle *chain(const Chip *c, bool vlek, X509 *leaf, X509 *ask, X509 *ark,
                           bool with_ark) {
    NtCertBundle *b = nt_cert_bundle_new();
    assert_non_null(b);
    _cleanup_(X509_freep) X509 *l = leaf ? NULL : load_cert(c, vlek ? "vlek" : "vcek");
    _cleanup_(X509_freep) X509 *a = ask ? NULL : load_cert(c, vlek ? "asvk" : "ask");
    _cleanup_(X509_freep) X509 *r = ark || !with_ark ? NULL : load_cert(c, "ark");
    add_x(b, leaf ? leaf : l, vlek ? NT_CERT_ROLE_VLEK : NT_CERT_ROLE_VCEK, "leaf");
    add_x(b, ask ? ask : a, vlek ? NT_CERT_ROLE_ASVK : NT_CERT_ROLE_ASK, "intermediate");
    if (with_ark || ark)
        add_x(b, ark ? ark : r, NT_CERT_ROLE_ARK, "ark");
    return b;
}

static NtVerifier *verifier(const Chip *c) {
    NtVerifier *v = NULL;
    char p[PATH_MAX + 16];
    assert_int_equal(nt_verifier_new(&v), 0);
    snprintf(p, sizeof p, "%s/ark.pem", c->dir);
    assert_int_equal(nt_verifier_add_trust_anchor_file(v, p), 0);
    return v;
}

/* A report from the chip, optionally changed by mut and re-signed by the chip's VCEK (VLEK). */
static void report(const Chip *c, bool vlek, void (*mut)(SnpReport *, const void *), const void *ud,
                   uint8_t out[SNP_REPORT_SIZE]) {
    _cleanup_(sim_chip_freep) SimChip *s = NULL;
    uint8_t rd[64] = {0x5a};
    assert_int_equal(sim_chip_load(c->dir, &s), 0);
    if (vlek)
        assert_int_equal(sim_chip_set_signing_key(s, SNP_SIGNING_KEY_VLEK), 0);
    assert_int_equal(sim_chip_get_report(s, rd, sim_chip_launch(s)->vmpl, out), 0);
    if (!mut)
        return;
    SnpReport r;
    assert_int_equal(snp_report_parse(out, SNP_REPORT_SIZE, &r, NULL), 0);
    mut(&r, ud);
    assert_int_equal(sim_chip_sign_raw(s, &r, out), 0);
}

/* With $NT_EVIL_CORPUS set to a directory, each refused evidence is also written there as
 * report || certificate table, the input of fuzz/fuzz-evidence.c (its seed corpus). */
static void dump_corpus(const uint8_t *rep, const NtCertBundle *b, const char *what) {
    const char *dir = getenv("NT_EVIL_CORPUS");
    SnpCertKind kinds[NT_CERT_BUNDLE_MAX];
    const uint8_t *ders[NT_CERT_BUNDLE_MAX];
    size_t lens[NT_CERT_BUNDLE_MAX];
    _cleanup_free_ uint8_t *table = NULL;
    size_t tlen = 0;
    char path[PATH_MAX], slug[96];

    if (!dir)
        return;
    for (size_t i = 0; i < b->n_entries; i++) {
        NtCertRole r = b->entries[i].role;
        kinds[i] = r == NT_CERT_ROLE_VCEK   ? SNP_CERT_VCEK
                   : r == NT_CERT_ROLE_VLEK ? SNP_CERT_VLEK
                   : r == NT_CERT_ROLE_ARK  ? SNP_CERT_ARK
                                            : SNP_CERT_ASK;
        ders[i] = b->entries[i].der;
        lens[i] = b->entries[i].der_len;
    }
    assert_int_equal(snp_cert_table_build(kinds, ders, lens, b->n_entries, &table, &tlen), 0);
    size_t k = 0;
    for (const char *c = what; *c && k + 1 < sizeof slug; c++)
        slug[k++] = isalnum((unsigned char)*c) ? (char)tolower((unsigned char)*c) : '-';
    slug[k] = 0;
    snprintf(path, sizeof path, "%s/evil-%s.bin", dir, slug);
    FILE *f = fopen(path, "we");
    assert_non_null(f);
    assert_int_equal(fwrite(rep, 1, SNP_REPORT_SIZE, f), SNP_REPORT_SIZE);
    assert_int_equal(fwrite(table, 1, tlen, f), tlen);
    assert_int_equal(fclose(f), 0);
}

static void check_at(NtVerifier *v, const uint8_t *rep, NtCertBundle *b, const NtPolicy *p,
                     time_t at, const char *want, const char *what) {
    NtVerdict *vd = NULL;
    NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
    o.policy = p;
    o.at = at;
    assert_int_equal(nt_verifier_verify(v, rep, SNP_REPORT_SIZE, b, &o, &vd), 0);
    const NtCheck *f = nt_verdict_first_failure(vd);
    bool ok = want ? f && streq(f->name, want) && nt_verdict_status(vd) == NT_VERDICT_INVALID
                   : nt_verdict_status(vd) == NT_VERDICT_OK;
    if (!ok)
        fail_msg("%s: wanted %s, got %s: %s", what, want ? want : "OK", f ? f->name : "OK",
                 f ? f->detail : "");
    if (f) {
        print_message("  %-40s %s: %s\n", what, f->name, f->detail);
        dump_corpus(rep, b, what);
    }
    nt_verdict_free(vd);
    nt_cert_bundle_free(b);
}

static void check(NtVerifier *v, const uint8_t *rep, NtCertBundle *b, const NtPolicy *p,
                  const char *want, const char *what) {
    check_at(v, rep, b, p, 0, want, what);
}

/* ---- 1. chip binding under MASK_CHIP_KEY ---- */

static void mask_with_id(SnpReport *r, const void *ud) {
    r->flags |= SNP_FLAG_MASK_CHIP_KEY;
    if (ud)
        memcpy(r->chip_id, ud, sizeof r->chip_id);
    else
        memset(r->chip_id, 0, sizeof r->chip_id);
}

static void evil_masked_chip_id(void **state) {
    const Chip *c = &chips[MILAN3];
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier(c);
    _cleanup_(nt_policy_freep) NtPolicy *allow = NULL;
    uint8_t rep[SNP_REPORT_SIZE], other[SNP_REPORT_SIZE];
    SnpReport o, own;
    static const char allow_json[] = "{\"chip_id_masked\":\"allow\"}";
    assert_int_equal(nt_policy_parse(allow_json, strlen(allow_json), &allow, NULL), 0);
    report(&chips[MILANB], false, NULL, NULL, other);
    assert_int_equal(snp_report_parse(other, SNP_REPORT_SIZE, &o, NULL), 0);

    report(c, false, mask_with_id, NULL, rep);
    check(v, rep, chain(c, false, NULL, NULL, NULL, false), allow, NULL, "masked, chip_id zero");
    report(c, false, mask_with_id, o.chip_id, rep);
    check(v, rep, chain(c, false, NULL, NULL, NULL, false), allow, "hwid",
          "masked, another chip's chip_id");
    check(v, rep, chain(c, false, NULL, NULL, NULL, false), NULL, "hwid",
          "masked, another chip's chip_id (no policy)");
    report(c, false, NULL, NULL, other);
    assert_int_equal(snp_report_parse(other, SNP_REPORT_SIZE, &own, NULL), 0);
    report(c, false, mask_with_id, own.chip_id, rep);
    check(v, rep, chain(c, false, NULL, NULL, NULL, false), allow, "hwid",
          "masked, its own chip_id left in");
    report(c, true, mask_with_id, o.chip_id, rep);
    check(v, rep, chain(c, true, NULL, NULL, NULL, false), allow, "hwid",
          "VLEK-signed, masked, another chip's chip_id");
}

/* ---- 2. CA constraints ---- */

static void evil_ca_constraints(void **state) {
    const Chip *c = &chips[MILAN3];
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier(c);
    uint8_t rep[SNP_REPORT_SIZE], vrep[SNP_REPORT_SIZE];
    static const struct {
        int nid;
        const char *value; /* NULL: delete */
        const char *want;
        const char *what;
    } cases[] = {
        {NID_basic_constraints, "critical,CA:TRUE,pathlen:0", NULL, "re-issued as it is"},
        {NID_basic_constraints, NULL, "cert_chain", "no basicConstraints"},
        {NID_basic_constraints, "critical,CA:FALSE", "cert_chain", "CA:FALSE"},
        {NID_basic_constraints, "CA:TRUE,pathlen:0", "cert_chain", "basicConstraints not critical"},
        {NID_key_usage, NULL, "cert_chain", "no keyUsage"},
        {NID_key_usage, "critical,digitalSignature,cRLSign", "cert_chain",
         "keyUsage without keyCertSign"},
    };
    report(c, false, NULL, NULL, rep);
    report(c, true, NULL, NULL, vrep);
    for (size_t i = 0; i < ELEMENTSOF(cases); i++)
        for (int vlek = 0; vlek < 2; vlek++) {
            _cleanup_(X509_freep) X509 *ask = load_cert(c, vlek ? "asvk" : "ask");
            char what[96];
            if (cases[i].value)
                set_conf_ext(ask, cases[i].nid, cases[i].value);
            else
                X509_EXTENSION_free(
                    X509_delete_ext(ask, X509_get_ext_by_NID(ask, cases[i].nid, -1)));
            reissue(c, ask, "ark");
            snprintf(what, sizeof what, "%s: %s", vlek ? "ASVK" : "ASK", cases[i].what);
            check(v, vlek ? vrep : rep, chain(c, vlek, NULL, ask, NULL, false), NULL, cases[i].want,
                  what);
        }

    /* A trusted ARK re-issued (same key and name) without its CA constraints: the chain under it
     * is refused, whether or not the ARK comes with the evidence. */
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        _cleanup_(nt_verifier_freep) NtVerifier *w = NULL;
        _cleanup_(X509_freep) X509 *ark = load_cert(c, "ark");
        unsigned char *der = NULL;
        char what[96];
        if (i == 0)
            set_conf_ext(ark, cases[i].nid, "critical,CA:TRUE"); /* the ARK has no pathlen */
        else if (cases[i].value)
            set_conf_ext(ark, cases[i].nid, cases[i].value);
        else
            X509_EXTENSION_free(X509_delete_ext(ark, X509_get_ext_by_NID(ark, cases[i].nid, -1)));
        reissue(c, ark, "ark");
        int n = i2d_X509(ark, &der);
        assert_true(n > 0);
        assert_int_equal(nt_verifier_new(&w), 0);
        assert_int_equal(nt_verifier_add_trust_anchor(w, der, (size_t)n, "evil-ark"), 0);
        OPENSSL_free(der);
        snprintf(what, sizeof what, "trusted ARK: %s", cases[i].what);
        check(w, rep, chain(c, false, NULL, NULL, NULL, false), NULL, cases[i].want, what);
        /* The same ARK shipped with the evidence to a verifier trusting the real one. */
        snprintf(what, sizeof what, "ARK in the evidence: %s", cases[i].what);
        check(v, rep, chain(c, false, NULL, NULL, ark, true), NULL, cases[i].want ? "ark" : NULL,
              what);
    }
}

/* ---- 3. the ARK shipped with the evidence ---- */

static void evil_evidence_ark(void **state) {
    const Chip *c = &chips[MILAN3];
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier(c);
    uint8_t rep[SNP_REPORT_SIZE];
    report(c, false, NULL, NULL, rep);

    check(v, rep, chain(c, false, NULL, NULL, NULL, true), NULL, NULL, "the chip's own ARK");
    check(v, rep, chain(c, false, NULL, NULL, NULL, false), NULL, NULL, "no ARK (the anchor)");
    {
        /* AMD re-issuing its ARK (new serial, same key, name, current validity) is fine. */
        _cleanup_(X509_freep) X509 *ark = load_cert(c, "ark");
        assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(ark), 0x4242), 1);
        reissue(c, ark, "ark");
        check(v, rep, chain(c, false, NULL, NULL, ark, true), NULL, NULL, "ARK re-issued");
    }
    {
        /* Re-issued, valid for two more days: accepted (and the chain cached) now, refused
         * after that although every other certificate of the chain is still valid. */
        _cleanup_(X509_freep) X509 *ark = load_cert(c, "ark");
        time_t now = time(NULL);
        assert_non_null(X509_time_adj_ex(X509_getm_notAfter(ark), 2, 0, &now));
        reissue(c, ark, "ark");
        check_at(v, rep, chain(c, false, NULL, NULL, ark, true), NULL, now, NULL,
                 "ARK re-issued, valid two more days");
        check_at(v, rep, chain(c, false, NULL, NULL, ark, true), NULL, now, NULL,
                 "ARK re-issued, valid two more days (cached)");
        check_at(v, rep, chain(c, false, NULL, NULL, ark, true), NULL, now + 3 * 86400, "ark",
                 "ARK re-issued, three days later");
    }
    {
        _cleanup_(X509_freep) X509 *ark = load_cert(c, "ark");
        set_time(ark, false, V_ASN1_UTCTIME, "150101000000Z");
        set_time(ark, true, V_ASN1_UTCTIME, "200101000000Z");
        reissue(c, ark, "ark");
        check(v, rep, chain(c, false, NULL, NULL, ark, true), NULL, "ark", "ARK expired");
    }
    {
        _cleanup_(X509_freep) X509 *ark = load_cert(c, "ark");
        set_time(ark, false, V_ASN1_UTCTIME, "490101000000Z");
        reissue(c, ark, "ark");
        check(v, rep, chain(c, false, NULL, NULL, ark, true), NULL, "ark", "ARK not yet valid");
    }
    {
        _cleanup_(X509_freep) X509 *ark = load_cert(c, "ark");
        set_cn(ark, "ARK-Milan2", true, true);
        reissue(c, ark, "ark");
        check(v, rep, chain(c, false, NULL, NULL, ark, true), NULL, "ark",
              "ARK renamed ARK-Milan2");
    }
    {
        _cleanup_(X509_freep) X509 *ark = load_cert(c, "ark");
        set_cn(ark, "ARK-Genoa", true, true);
        reissue(c, ark, "ark");
        check(v, rep, chain(c, false, NULL, NULL, ark, true), NULL, "ark", "ARK renamed ARK-Genoa");
    }
    {
        /* The anchor's bytes with one bit of the signature flipped. */
        _cleanup_(X509_freep) X509 *ark = load_cert(c, "ark");
        _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = chain(c, false, NULL, NULL, ark, true);
        NtCertBundleEntry *e = &b->entries[2];
        e->der[e->der_len - 1] ^= 1;
        NtCertBundle *copy = nt_cert_bundle_new();
        assert_non_null(copy);
        for (size_t i = 0; i < b->n_entries; i++)
            assert_int_equal(nt_cert_bundle_add(copy, b->entries[i].der, b->entries[i].der_len,
                                                b->entries[i].role, b->entries[i].origin),
                             0);
        check(v, rep, copy, NULL, "ark", "ARK with a corrupt self-signature");
    }
    {
        /* Another chip's ARK key under the right name: not an anchor. */
        _cleanup_(X509_freep) X509 *ark = load_cert(&chips[MILANB], "ark");
        check(v, rep, chain(c, false, NULL, NULL, ark, true), NULL, "ark", "untrusted ARK");
    }
}

/* ---- 4. validity time encodings ---- */

static void evil_times(void **state) {
    const Chip *c = &chips[MILAN3];
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier(c);
    uint8_t rep[SNP_REPORT_SIZE];
    static const struct {
        bool not_after;
        int type;
        const char *s, *want, *what;
    } cases[] = {
        {true, V_ASN1_UTCTIME, "300101000000Z", NULL, "UTCTime 2030"},
        {true, V_ASN1_GENERALIZEDTIME, "20510101000000Z", NULL, "GeneralizedTime 2051"},
        {true, V_ASN1_GENERALIZEDTIME, "20300101000000Z", "certificates",
         "GeneralizedTime before 2050"},
        {false, V_ASN1_GENERALIZEDTIME, "20200101000000Z", "certificates",
         "notBefore GeneralizedTime before 2050"},
        {true, V_ASN1_UTCTIME, "3001010000Z", "certificates", "UTCTime without seconds"},
        {true, V_ASN1_UTCTIME, "300101000000+0000", "certificates", "UTCTime with an offset"},
        {true, V_ASN1_UTCTIME, "300101000000", "certificates", "UTCTime without Z"},
        {true, V_ASN1_GENERALIZEDTIME, "20510101000000.5Z", "certificates",
         "GeneralizedTime with a fraction"},
        {true, V_ASN1_GENERALIZEDTIME, "20510101000000-0100", "certificates",
         "GeneralizedTime with an offset"},
        {true, V_ASN1_GENERALIZEDTIME, "205101010000Z", "certificates",
         "GeneralizedTime without seconds"},
    };
    report(c, false, NULL, NULL, rep);
    for (size_t i = 0; i < ELEMENTSOF(cases); i++)
        for (int which = 0; which < 2; which++) {
            _cleanup_(X509_freep) X509 *x = load_cert(c, which ? "ask" : "vcek");
            char what[96];
            set_time(x, cases[i].not_after, cases[i].type, cases[i].s);
            reissue(c, x, which ? "ark" : "ask");
            snprintf(what, sizeof what, "%s: %s", which ? "ASK" : "VCEK", cases[i].what);
            check(v, rep, chain(c, false, which ? NULL : x, which ? x : NULL, NULL, false), NULL,
                  cases[i].want, what);
        }
}

/* ---- 5. certificate version ---- */

static void evil_version(void **state) {
    const Chip *c = &chips[MILAN3];
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier(c);
    uint8_t rep[SNP_REPORT_SIZE];
    report(c, false, NULL, NULL, rep);
    for (long ver = X509_VERSION_3; ver >= X509_VERSION_1; ver--)
        for (int which = 0; which < 2; which++) {
            _cleanup_(X509_freep) X509 *x = load_cert(c, which ? "ask" : "vcek");
            char what[64];
            assert_int_equal(X509_set_version(x, ver), 1);
            reissue(c, x, which ? "ark" : "ask");
            snprintf(what, sizeof what, "%s: version %ld", which ? "ASK" : "VCEK", ver + 1);
            check(v, rep, chain(c, false, which ? NULL : x, which ? x : NULL, NULL, false), NULL,
                  ver == X509_VERSION_3 ? NULL : "certificates", what);
        }
}

/* ---- 6. leaf role: subject CN and extensions agree ---- */

static void evil_leaf_role(void **state) {
    const Chip *c = &chips[MILAN3];
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier(c);
    uint8_t rep[SNP_REPORT_SIZE], vrep[SNP_REPORT_SIZE];
    static const char *const vcek_names[] = {"SEV-VCEK",  "SEV-VLEK",  "ARK-Milan",
                                             "SEV-VCEKX", "SEV-Milan", "sev-vcek"};
    static const char *const vlek_names[] = {"SEV-VLEK", "SEV-VCEK", "SEV-VLEK-Milan", "SEV-VLEKX"};
    report(c, false, NULL, NULL, rep);
    report(c, true, NULL, NULL, vrep);
    for (size_t i = 0; i < ELEMENTSOF(vcek_names); i++) {
        _cleanup_(X509_freep) X509 *x = load_cert(c, "vcek");
        char what[64];
        set_cn(x, vcek_names[i], true, false);
        reissue(c, x, "ask");
        snprintf(what, sizeof what, "VCEK named %s", vcek_names[i]);
        check(v, rep, chain(c, false, x, NULL, NULL, false), NULL, i == 0 ? NULL : "certificates",
              what);
    }
    for (size_t i = 0; i < ELEMENTSOF(vlek_names); i++) {
        _cleanup_(X509_freep) X509 *x = load_cert(c, "vlek");
        char what[64];
        set_cn(x, vlek_names[i], true, false);
        reissue(c, x, "asvk");
        snprintf(what, sizeof what, "VLEK named %s", vlek_names[i]);
        check(v, vrep, chain(c, true, x, NULL, NULL, false), NULL, i == 0 ? NULL : "certificates",
              what);
    }
    {
        /* A VCEK carrying a cspID as well. */
        _cleanup_(X509_freep) X509 *x = load_cert(c, "vcek");
        static const uint8_t csp[] = {0x16, 0x04, 'C', 'N', '=', 'x'};
        set_ext(x, "1.3.6.1.4.1.3704.1.5", false, csp, sizeof csp, true);
        reissue(c, x, "ask");
        check(v, rep, chain(c, false, x, NULL, NULL, false), NULL, "certificates",
              "VCEK with a cspID");
    }
}

/* ---- 7. extensions ---- */

static void evil_extensions(void **state) {
    const Chip *c = &chips[MILAN3];
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier(c);
    uint8_t rep[SNP_REPORT_SIZE];
    uint8_t hw[2 + 3 + 64 + 1];
    NtAmdExt e;
    report(c, false, NULL, NULL, rep);
    {
        _cleanup_(X509_freep) X509 *x = load_cert(c, "vcek");
        assert_int_equal(nt_cert_amd_ext(x, &e), 0);
        assert_int_equal(e.hwid_len, 64);
    }
    static const uint8_t any[] = {0x05, 0x00};
    static const uint8_t ku_int[] = {0x02, 0x01, 0x04};
    static const uint8_t bc_bool[] = {0x01, 0x01, 0xff};
    static const uint8_t bc_os_ca[] = {0x30, 0x03, 0x04, 0x01, 0xff};
    static const uint8_t ku_trailing[] = {0x03, 0x02, 0x02, 0x04, 0x00};
    static const uint8_t pn_utf8[] = {0x0c, 0x08, 'M', 'i', 'l', 'a', 'n', '-', 'B', '0'};
    static const uint8_t pn_ia5[] = {0x16, 0x08, 'M', 'i', 'l', 'a', 'n', '-', 'B', '0'};

    /* VCEK (signed by the ASK): AMD's and unknown extensions. */
    struct {
        const char *oid;
        const uint8_t *val;
        size_t len;
        bool replace;
        const char *want, *what;
    } leaf[] = {
        {"1.2.3.4", any, sizeof any, true, NULL, "one private extension"},
        {"1.3.6.1.4.1.3704.1.2", pn_ia5, sizeof pn_ia5, true, NULL, "productName IA5String"},
        {"1.3.6.1.4.1.3704.1.2", pn_utf8, sizeof pn_utf8, true, "certificates",
         "productName UTF8String"},
        {"1.3.6.1.4.1.3704.1.2", NULL, 0, true, "certificates", "no productName"},
        {"1.3.6.1.4.1.3704.1.4", hw, 0, true, NULL, "hwID in one DER OCTET STRING"},
        {"1.3.6.1.4.1.3704.1.4", hw, 0, true, "certificates", "hwID long-form length"},
        {"1.3.6.1.4.1.3704.1.4", hw, 0, true, "certificates", "hwID wrapped twice"},
        {"1.3.6.1.4.1.3704.1.4", hw, 0, true, "certificates", "hwID wrapped, trailing byte"},
        {"1.3.6.1.4.1.3704.1.4", hw, 0, true, "certificates", "hwID wrapped, constructed"},
        {"1.3.6.1.4.1.3704.1.4", e.hwid, 63, true, "certificates", "hwID of 63 bytes"},
    };
    for (size_t i = 0; i < ELEMENTSOF(leaf); i++) {
        _cleanup_(X509_freep) X509 *x = load_cert(c, "vcek");
        size_t n = leaf[i].len;
        if (leaf[i].val == hw) {
            size_t k = 0;
            if (strstr(leaf[i].what, "twice"))
                hw[k++] = 0x04, hw[k++] = 66;
            hw[k++] = strstr(leaf[i].what, "constructed") ? 0x24 : 0x04;
            if (strstr(leaf[i].what, "long-form"))
                hw[k++] = 0x81;
            hw[k++] = 64;
            memcpy(hw + k, e.hwid, 64);
            n = k + 64;
            if (strstr(leaf[i].what, "trailing"))
                hw[n++] = 0;
        }
        set_ext(x, leaf[i].oid, false, leaf[i].val, n, leaf[i].replace);
        reissue(c, x, "ask");
        check(v, rep, chain(c, false, x, NULL, NULL, false), NULL, leaf[i].want, leaf[i].what);
    }
    /* Duplicates, of any extension. */
    static const char *const dups[] = {"1.2.3.4", "1.3.6.1.4.1.3704.1.3.4", "2.5.29.14"};
    for (size_t i = 0; i < ELEMENTSOF(dups); i++) {
        _cleanup_(X509_freep) X509 *x = load_cert(c, "vcek");
        static const uint8_t ski[] = {0x04, 0x02, 0x01, 0x02};
        const uint8_t *val = i == 2 ? ski : any;
        size_t len = i == 2 ? sizeof ski : sizeof any;
        char what[64];
        set_ext(x, dups[i], false, val, len, false);
        set_ext(x, dups[i], false, val, len, false);
        reissue(c, x, "ask");
        snprintf(what, sizeof what, "VCEK with %s twice", dups[i]);
        check(v, rep, chain(c, false, x, NULL, NULL, false), NULL, "certificates", what);
    }

    /* ASK (signed by the ARK): standard extensions. */
    struct {
        int nid;
        const uint8_t *val;
        size_t len;
        bool replace;
        const char *want, *what;
    } ca[] = {
        {NID_key_usage, ku_int, sizeof ku_int, true, "certificates", "keyUsage an INTEGER"},
        {NID_key_usage, ku_trailing, sizeof ku_trailing, true, "certificates",
         "keyUsage with a trailing byte"},
        {NID_basic_constraints, bc_bool, sizeof bc_bool, true, "certificates",
         "basicConstraints a bare BOOLEAN"},
        {NID_basic_constraints, bc_os_ca, sizeof bc_os_ca, true, "certificates",
         "basicConstraints cA an OCTET STRING"},
        {NID_key_usage, NULL, 0, false, "certificates", "keyUsage twice"},
        {NID_basic_constraints, NULL, 0, false, "certificates", "basicConstraints twice"},
    };
    for (size_t i = 0; i < ELEMENTSOF(ca); i++) {
        _cleanup_(X509_freep) X509 *x = load_cert(c, "ask");
        char oid[64];
        assert_true(OBJ_obj2txt(oid, sizeof oid, OBJ_nid2obj(ca[i].nid), 1) > 0);
        if (ca[i].val)
            set_ext(x, oid, true, ca[i].val, ca[i].len, ca[i].replace);
        else {
            X509_EXTENSION *dup = X509_get_ext(x, X509_get_ext_by_NID(x, ca[i].nid, -1));
            assert_int_equal(X509_add_ext(x, dup, -1), 1);
        }
        reissue(c, x, "ark");
        check(v, rep, chain(c, false, NULL, x, NULL, false), NULL, ca[i].want, ca[i].what);
    }
}

/* ---- 8. report sanity: CPUID of a v3+ report ---- */

static void cpuid(SnpReport *r, const void *ud) {
    const uint8_t *fm = ud;
    r->cpuid_fam_id = fm[0];
    r->cpuid_mod_id = fm[1];
}

static void evil_cpuid_zero(void **state) {
    const Chip *c = &chips[MILAN3];
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier(c);
    uint8_t rep[SNP_REPORT_SIZE];
    report(c, false, cpuid, (const uint8_t[]){0x19, 0x01}, rep);
    check(v, rep, chain(c, false, NULL, NULL, NULL, false), NULL, NULL, "Milan CPUID");
    report(c, false, cpuid, (const uint8_t[]){0, 0}, rep);
    check(v, rep, chain(c, false, NULL, NULL, NULL, false), NULL, "product",
          "v3 report, CPUID family and model zero");
    report(c, true, cpuid, (const uint8_t[]){0, 0}, rep);
    check(v, rep, chain(c, true, NULL, NULL, NULL, false), NULL, "product",
          "v3 VLEK report, CPUID family and model zero");
    report(c, false, cpuid, (const uint8_t[]){0x19, 0x11}, rep);
    check(v, rep, chain(c, false, NULL, NULL, NULL, false), NULL, "product", "Genoa CPUID");
}

int main(int argc, char **argv) {
    const struct CMUnitTest all[] = {
        cmocka_unit_test(evil_masked_chip_id), cmocka_unit_test(evil_ca_constraints),
        cmocka_unit_test(evil_evidence_ark),   cmocka_unit_test(evil_times),
        cmocka_unit_test(evil_version),        cmocka_unit_test(evil_leaf_role),
        cmocka_unit_test(evil_extensions),     cmocka_unit_test(evil_cpuid_zero),
    };
    struct CMUnitTest some[ELEMENTSOF(all)];
    size_t n = 0;
    for (size_t i = 0; i < ELEMENTSOF(all); i++)
        if (argc < 2 || streq(argv[1], all[i].name))
            some[n++] = all[i];
    if (n == 0) {
        fprintf(stderr, "no test named %s\n", argv[1]);
        return 1;
    }
    return _cmocka_run_group_tests("verify-evil", some, n, setup, teardown);
}
