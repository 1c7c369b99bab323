/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Revocation and certificate sources against the simulated firmware: CRLs made by
 * sim_chip_make_crl() revoke the VCEK, ASK, VLEK or ASVK ("revocation" fails with -EKEYREVOKED
 * naming the certificate and the date), a CRL of another chip's ARK, a stale, a not yet valid
 * and a tampered CRL are refused in every mode, a cached chain is still refused once a CRL
 * revoking it appears, BEST_EFFORT skips and REQUIRE fails without a CRL; a failing VcekSource
 * fails "certificates" with its errno, and supplies a missing ASK; a Turin report with a
 * non-zero CHIP_ID tail fails "hwid".
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <openssl/pem.h>

#include "core/encoding.h"
#include "snp/sim.h"
#include "verify/crl.h"
#include "vt-util.h"

static Chip chips[] = {
    {"milanA", SNP_PRODUCT_MILAN, true, 0, ""},
    {"milanB", SNP_PRODUCT_MILAN, false, 0, ""},
    {"turin", SNP_PRODUCT_TURIN, false, 0, ""},
};
enum { A, B, TURIN };
static char tmpdir[] = "/tmp/nt-test-revocation-XXXXXX";

static int setup(void **state) {
    return vt_chips_init(tmpdir, chips, ELEMENTSOF(chips));
}

static int teardown(void **state) {
    return vt_chips_remove(tmpdir);
}

/* ---- a revocation source serving one CRL (or an error), counting calls ---- */

typedef struct Crl {
    uint8_t *der;
    size_t len;
    int error; /* returned instead when non-zero */
    unsigned calls;
} Crl;

static int crl_get(void *userdata, SnpProduct p, uint8_t **ret_der, size_t *ret_len,
                   time_t *ret_fetched_at) {
    Crl *c = userdata;
    (void)p;
    __atomic_fetch_add(&c->calls, 1, __ATOMIC_RELAXED);
    if (c->error)
        return c->error;
    *ret_der = malloc(c->len);
    assert_non_null(*ret_der);
    memcpy(*ret_der, c->der, c->len);
    *ret_len = c->len;
    *ret_fetched_at = time(NULL);
    return 0;
}

static void crl_done(Crl *c) {
    free(c->der);
    c->der = NULL;
}

static void make_crl(const Chip *chip, const char *revoke, time_t this_update, time_t next_update,
                     Crl *ret) {
    _cleanup_(sim_chip_freep) SimChip *s = NULL;
    const char *names[4];
    size_t n = 0;
    char buf[64], *save = NULL;

    crl_done(ret);
    *ret = (Crl){.error = 0};
    snprintf(buf, sizeof buf, "%s", revoke ? revoke : "");
    for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        names[n++] = t;
    assert_int_equal(sim_chip_load(chip->dir, &s), 0);
    assert_int_equal(sim_chip_make_crl(s, names, n, this_update, next_update, &ret->der, &ret->len),
                     0);
}

static void set_source(NtVerifier *v, Crl *c, NtRevocationMode mode, int64_t staleness) {
    NtRevocationSource src = {.name = "test-crl",
                              .get_crl = crl_get,
                              .userdata = c,
                              .mode = mode,
                              .max_staleness_s = staleness};
    nt_verifier_set_revocation_source(v, &src);
}

static NtVerifier *verifier_for(const Chip *c) {
    NtVerifier *v = NULL;
    char p[PATH_MAX + 16];
    assert_int_equal(nt_verifier_new(&v), 0);
    snprintf(p, sizeof p, "%s/ark.pem", c->dir);
    assert_int_equal(nt_verifier_add_trust_anchor_file(v, p), 0);
    return v;
}

/* A report signed by the chip's VCEK (or VLEK) and the certificate table that comes with it. */
static void evidence(const Chip *c, bool vlek, uint8_t rep[SNP_REPORT_SIZE], NtCertBundle **ret) {
    _cleanup_(sim_chip_freep) SimChip *s = NULL;
    _cleanup_free_ uint8_t *table = NULL;
    size_t tlen = 0;
    assert_int_equal(sim_chip_load(c->dir, &s), 0);
    if (vlek)
        assert_int_equal(sim_chip_set_signing_key(s, SNP_SIGNING_KEY_VLEK), 0);
    assert_int_equal(sim_chip_get_report(s, (const uint8_t[64]){7}, 0, rep), 0);
    assert_int_equal(sim_chip_get_cert_table(s, &table, &tlen), 0);
    *ret = nt_cert_bundle_new();
    assert_non_null(*ret);
    assert_int_equal(nt_cert_bundle_add_table(*ret, table, tlen), 0);
}

static NtVerdict *verify(NtVerifier *v, const uint8_t *rep, const NtCertBundle *b) {
    NtVerdict *vd = NULL;
    assert_int_equal(nt_verifier_verify(v, rep, SNP_REPORT_SIZE, b, NULL, &vd), 0);
    return vd;
}

/* Asserts the verdict's status, its first failure (or "(none)") and that failure's errno. */
static void expect(NtVerdict *vd, NtVerdictStatus st, const char *check, int error) {
    const NtCheck *f = nt_verdict_first_failure(vd);
    if (nt_verdict_status(vd) != st || !streq(vt_failed_check(vd), check) ||
        (f && f->error != error))
        fail_msg("expected %s/%s/%d, got %s/%s/%d: %s", nt_verdict_status_to_string(st), check,
                 error, nt_verdict_status_to_string(nt_verdict_status(vd)), vt_failed_check(vd),
                 f ? f->error : 0, f ? f->detail : "");
}

static void expect_free(NtVerdict *vd, NtVerdictStatus st, const char *check, int error) {
    expect(vd, st, check, error);
    nt_verdict_free(vd);
}

static void test_revoked_certificates(void **state) {
    const Chip *c = &chips[A];
    time_t now = time(NULL);
    uint8_t rep[SNP_REPORT_SIZE], vrep[SNP_REPORT_SIZE];
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = NULL, *vb = NULL;
    Crl crl = {.der = NULL};
    static const struct {
        const char *revoke;
        bool vlek;
        const char *role;
    } cases[] = {
        {"vcek", false, "VCEK"}, {"ask", false, "ASK"},  {"ask,vcek", false, "VCEK"},
        {"asvk", true, "ASVK"},  {"vlek", true, "VLEK"},
    };

    evidence(c, false, rep, &b);
    evidence(c, true, vrep, &vb);
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        _cleanup_(nt_verifier_freep) NtVerifier *v = verifier_for(c);
        make_crl(c, cases[i].revoke, now - 60, now + 3600, &crl);
        set_source(v, &crl, NT_REVOCATION_REQUIRE, 0);
        _cleanup_(nt_verdict_freep) NtVerdict *vd =
            verify(v, cases[i].vlek ? vrep : rep, cases[i].vlek ? vb : b);
        expect(vd, NT_VERDICT_INVALID, "revocation", -EKEYREVOKED);
        const NtCheck *f = nt_verdict_first_failure(vd);
        if (!strstr(f->detail, cases[i].role) || !strstr(f->found, "revoked at") ||
            !strstr(f->detail, "since 20"))
            fail_msg("%s: detail '%s', found '%s'", cases[i].revoke, f->detail, f->found);
        assert_int_equal(f->cls, NT_CHECK_EVIDENCE);
    }
    crl_done(&crl);
}

static void test_not_revoked(void **state) {
    const Chip *c = &chips[A];
    time_t now = time(NULL);
    uint8_t rep[SNP_REPORT_SIZE];
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = NULL;
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier_for(c);
    Crl crl = {.der = NULL};

    evidence(c, false, rep, &b);
    /* Nothing revoked; then the VLEK chain revoked, which a VCEK-signed report does not use. */
    make_crl(c, NULL, now - 60, now + 3600, &crl);
    set_source(v, &crl, NT_REVOCATION_REQUIRE, 0);
    NtVerdict *vd = verify(v, rep, b);
    expect(vd, NT_VERDICT_OK, "(none)", 0);
    assert_int_equal(nt_verdict_find(vd, "revocation")->result, NT_CHECK_PASS);
    nt_verdict_free(vd);
    make_crl(c, "asvk", now - 60, now + 3600, &crl);
    expect_free(verify(v, rep, b), NT_VERDICT_OK, "(none)", 0);
    /* AMD issues every VCEK and VLEK with serial number 0 (the real vectors and the simulator
     * alike), so an entry for the VLEK is one for every endorsement key under this ARK. */
    make_crl(c, "vlek", now - 60, now + 3600, &crl);
    expect_free(verify(v, rep, b), NT_VERDICT_INVALID, "revocation", -EKEYREVOKED);
    /* Mode OFF (and no source): no "revocation" check at all. */
    set_source(v, &crl, NT_REVOCATION_OFF, 0);
    vd = verify(v, rep, b);
    expect(vd, NT_VERDICT_OK, "(none)", 0);
    assert_null(nt_verdict_find(vd, "revocation"));
    nt_verdict_free(vd);
    crl_done(&crl);
}

static void test_bad_crls(void **state) {
    const Chip *c = &chips[A];
    time_t now = time(NULL);
    uint8_t rep[SNP_REPORT_SIZE];
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = NULL;
    Crl crl = {.der = NULL};

    evidence(c, false, rep, &b);
    for (int mode = NT_REVOCATION_BEST_EFFORT; mode <= NT_REVOCATION_REQUIRE; mode++) {
        _cleanup_(nt_verifier_freep) NtVerifier *v = verifier_for(c);

        /* Another chip's ARK signed it (same product, same issuer name). */
        make_crl(&chips[B], NULL, now - 60, now + 3600, &crl);
        set_source(v, &crl, mode, 0);
        expect_free(verify(v, rep, b), NT_VERDICT_INVALID, "revocation", -EKEYREJECTED);
        /* Another product's ARK. */
        make_crl(&chips[TURIN], NULL, now - 60, now + 3600, &crl);
        expect_free(verify(v, rep, b), NT_VERDICT_INVALID, "revocation", -EKEYREJECTED);

        /* Stale: nextUpdate an hour ago; accepted within a two-hour staleness limit. */
        make_crl(c, NULL, now - 7200, now - 3600, &crl);
        expect_free(verify(v, rep, b), NT_VERDICT_INVALID, "revocation", -EKEYEXPIRED);
        set_source(v, &crl, mode, 7200);
        expect_free(verify(v, rep, b), NT_VERDICT_OK, "(none)", 0);
        set_source(v, &crl, mode, 0);

        /* Not yet valid. */
        make_crl(c, NULL, now + 3600, now + 7200, &crl);
        expect_free(verify(v, rep, b), NT_VERDICT_INVALID, "revocation", -EKEYREJECTED);

        /* Tampered: a bit of the signature, the nextUpdate, then garbage. */
        make_crl(c, NULL, now - 60, now + 3600, &crl);
        crl.der[crl.len - 10] ^= 1;
        expect_free(verify(v, rep, b), NT_VERDICT_INVALID, "revocation", -EKEYREJECTED);
        make_crl(c, "vcek", now - 60, now + 3600, &crl);
        /* Drop the revoked entry's effect by corrupting its serial byte (0x02 0x01 0x00). */
        {
            bool done = false;
            for (size_t i = 0; i + 4 < crl.len && !done; i++)
                if (crl.der[i] == 0x30 && crl.der[i + 2] == 0x02 && crl.der[i + 3] == 0x01 &&
                    crl.der[i + 4] == 0x00) {
                    crl.der[i + 4] = 0x01;
                    done = true;
                }
            assert_true(done);
        }
        expect_free(verify(v, rep, b), NT_VERDICT_INVALID, "revocation", -EKEYREJECTED);
        memset(crl.der + 4, 0xff, 16);
        expect_free(verify(v, rep, b), NT_VERDICT_INVALID, "revocation", -EBADMSG);
    }
    crl_done(&crl);
}

static void test_cached_chain(void **state) {
    const Chip *c = &chips[A];
    time_t now = time(NULL);
    uint8_t rep[SNP_REPORT_SIZE];
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = NULL;
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier_for(c);
    Crl crl = {.der = NULL};
    uint64_t hits, misses;

    evidence(c, false, rep, &b);
    NtVerdict *vd = verify(v, rep, b);
    expect(vd, NT_VERDICT_OK, "(none)", 0);
    assert_false(vd->chain_cached);
    nt_verdict_free(vd);

    /* A CRL appears that revokes the (now cached) chain's ASK. */
    make_crl(c, "ask", now - 60, now + 3600, &crl);
    set_source(v, &crl, NT_REVOCATION_REQUIRE, 0);
    for (int round = 0; round < 2; round++) {
        vd = verify(v, rep, b);
        expect(vd, NT_VERDICT_INVALID, "revocation", -EKEYREVOKED);
        assert_true(vd->chain_cached);
        nt_verdict_free(vd);
    }
    /* A newer CRL without it: the same cached chain passes; then one revoking the VCEK. */
    make_crl(c, NULL, now - 30, now + 3600, &crl);
    expect_free(verify(v, rep, b), NT_VERDICT_OK, "(none)", 0);
    make_crl(c, "vcek", now - 20, now + 3600, &crl);
    expect_free(verify(v, rep, b), NT_VERDICT_INVALID, "revocation", -EKEYREVOKED);
    nt_verifier_cache_stats(v, &hits, &misses);
    assert_int_equal(misses, 1);
    assert_int_equal(hits, 4);
    assert_int_equal(crl.calls, 1); /* a new Crl per make_crl: the last one was asked once */
    crl_done(&crl);
}

static void test_modes_without_crl(void **state) {
    const Chip *c = &chips[A];
    uint8_t rep[SNP_REPORT_SIZE];
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = NULL;
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier_for(c);
    static const int errors[] = {-ENOENT, -EHOSTUNREACH, -EAGAIN};

    evidence(c, false, rep, &b);
    for (size_t i = 0; i < ELEMENTSOF(errors); i++) {
        Crl none = {.error = errors[i]};
        set_source(v, &none, NT_REVOCATION_BEST_EFFORT, 0);
        NtVerdict *vd = verify(v, rep, b);
        expect(vd, NT_VERDICT_OK, "(none)", 0);
        const NtCheck *k = nt_verdict_find(vd, "revocation");
        assert_non_null(k);
        assert_int_equal(k->result, NT_CHECK_SKIP);
        assert_non_null(strstr(k->detail, "test-crl"));
        assert_non_null(strstr(k->detail, strerror(-errors[i])));
        nt_verdict_free(vd);
        set_source(v, &none, NT_REVOCATION_REQUIRE, 0);
        expect_free(verify(v, rep, b), NT_VERDICT_INVALID, "revocation", errors[i]);
    }
}

/* ---- VcekSource ---- */

typedef struct Src {
    const Chip *chip;
    int error;      /* returned if non-zero */
    bool with_ask;  /* adds the ASK too */
    bool only_ask;  /* adds the ASK only */
    unsigned calls; /* atomic */
} Src;

static int src_fetch(void *userdata, const SnpReport *r, SnpProduct p, NtCertRole role,
                     NtCertBundle *bundle) {
    Src *s = userdata;
    char path[PATH_MAX + 16];
    (void)r, (void)p;
    __atomic_fetch_add(&s->calls, 1, __ATOMIC_RELAXED);
    if (s->error)
        return s->error;
    assert_int_equal(role, NT_CERT_ROLE_VCEK);
    if (!s->only_ask) {
        snprintf(path, sizeof path, "%s/vcek.pem", s->chip->dir);
        assert_int_equal(nt_cert_bundle_add_file(bundle, path), 0);
    }
    if (s->with_ask || s->only_ask) {
        snprintf(path, sizeof path, "%s/ask.pem", s->chip->dir);
        assert_int_equal(nt_cert_bundle_add_file(bundle, path), 0);
    }
    return 0;
}

static void set_vcek_source(NtVerifier *v, Src *s) {
    NtVcekSource src = {.name = "test-kds", .fetch = src_fetch, .userdata = s};
    nt_verifier_set_vcek_source(v, &src);
}

static void test_source_errors(void **state) {
    const Chip *c = &chips[B];
    uint8_t rep[SNP_REPORT_SIZE];
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *table = NULL, *ask_only = nt_cert_bundle_new();
    static const int errors[] = {-EAGAIN, -EHOSTUNREACH, -ETIMEDOUT};
    char path[PATH_MAX + 16];

    evidence(c, false, rep, &table);
    snprintf(path, sizeof path, "%s/ask.pem", c->dir);
    assert_int_equal(nt_cert_bundle_add_file(ask_only, path), 0);
    for (size_t i = 0; i < ELEMENTSOF(errors); i++) {
        _cleanup_(nt_verifier_freep) NtVerifier *v = verifier_for(c);
        Src s = {.chip = c, .error = errors[i]};
        set_vcek_source(v, &s);
        for (int with_ask = 0; with_ask < 2; with_ask++) {
            _cleanup_(nt_verdict_freep) NtVerdict *vd = verify(v, rep, with_ask ? ask_only : NULL);
            expect(vd, NT_VERDICT_INVALID, "certificates", errors[i]);
            const NtCheck *f = nt_verdict_first_failure(vd);
            assert_non_null(strstr(f->detail, "test-kds"));
            assert_non_null(strstr(f->detail, strerror(-errors[i])));
        }
    }
    /* -ENOENT stays "no VCEK" (-ENOKEY), as before. */
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier_for(c);
    Src none = {.chip = c, .error = -ENOENT};
    set_vcek_source(v, &none);
    expect_free(verify(v, rep, NULL), NT_VERDICT_INVALID, "certificates", -ENOKEY);
    /* The source supplies VCEK and ASK: passes. */
    Src ok = {.chip = c, .with_ask = true};
    set_vcek_source(v, &ok);
    expect_free(verify(v, rep, NULL), NT_VERDICT_OK, "(none)", 0);
}

static void test_intermediate_from_source(void **state) {
    const Chip *c = &chips[B];
    uint8_t rep[SNP_REPORT_SIZE];
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *table = NULL, *vcek_only = nt_cert_bundle_new();
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier_for(c);
    char path[PATH_MAX + 16];

    evidence(c, false, rep, &table);
    snprintf(path, sizeof path, "%s/vcek.pem", c->dir);
    assert_int_equal(nt_cert_bundle_add_file(vcek_only, path), 0);

    /* The simulated ASK is not built in: without a source the chain cannot be built. */
    expect_free(verify(v, rep, vcek_only), NT_VERDICT_INVALID, "cert_chain", -ENOKEY);

    /* The source supplies the ASK; the evidence's VCEK is used. Twice: the second is cached. */
    Src s = {.chip = c, .only_ask = true};
    set_vcek_source(v, &s);
    for (int round = 0; round < 2; round++) {
        NtVerdict *vd = verify(v, rep, vcek_only);
        expect(vd, NT_VERDICT_OK, "(none)", 0);
        assert_int_equal(vd->chain_cached, round == 1);
        nt_verdict_free(vd);
    }
    assert_int_equal(s.calls, 2);
    /* Complete evidence never asks the source. */
    expect_free(verify(v, rep, table), NT_VERDICT_OK, "(none)", 0);
    assert_int_equal(s.calls, 2);
}

/* ---- Turin CHIP_ID tail ---- */

static void test_turin_chip_id_tail(void **state) {
    const Chip *c = &chips[TURIN];
    _cleanup_(sim_chip_freep) SimChip *s = NULL;
    _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = NULL;
    _cleanup_(nt_verifier_freep) NtVerifier *v = verifier_for(c);
    uint8_t rep[SNP_REPORT_SIZE];
    SnpReport r;

    evidence(c, false, rep, &b);
    assert_int_equal(sim_chip_load(c->dir, &s), 0);
    /* The firmware's report, re-signed as is: passes (the hook changes nothing by itself). */
    assert_int_equal(snp_report_parse(rep, sizeof rep, &r, NULL), 0);
    assert_int_equal(sim_chip_sign_raw(s, &r, rep), 0);
    expect_free(verify(v, rep, b), NT_VERDICT_OK, "(none)", 0);

    /* One non-zero byte after the 8-byte hwID, re-signed by the VCEK. */
    for (size_t at = 8; at < 64; at += 55) {
        SnpReport t = r;
        t.chip_id[at] = 0x5a;
        assert_int_equal(sim_chip_sign_raw(s, &t, rep), 0);
        NtVerdict *vd = verify(v, rep, b);
        expect(vd, NT_VERDICT_INVALID, "hwid", -EKEYREJECTED);
        const NtCheck *f = nt_verdict_first_failure(vd);
        char hex[113];
        hex_encode(t.chip_id + 8, 56, hex);
        assert_string_equal(f->found, hex);
        assert_non_null(strstr(f->expected, "zero"));
        nt_verdict_free(vd);
    }
}

/* ---- the CRL module itself ---- */

static void test_crl_parse(void **state) {
    time_t now = time(NULL);
    _cleanup_(sim_chip_freep) SimChip *s = NULL;
    _cleanup_(nt_crl_freep) NtCrl *crl = NULL;
    _cleanup_free_ uint8_t *der = NULL, *longer = NULL;
    const char *names[] = {"ask", "vlek"};
    size_t len = 0;
    X509 *ark = NULL;
    char p[PATH_MAX + 16];
    FILE *f;

    assert_int_equal(sim_chip_load(chips[A].dir, &s), 0);
    assert_int_equal(sim_chip_make_crl(s, (const char *[]){"nope"}, 1, now, now + 1, &der, &len),
                     -EINVAL);
    assert_int_equal(sim_chip_make_crl(s, NULL, 0, now, now - 1, &der, &len), -EINVAL);
    sim_chip_free(TAKE_PTR(s));
    assert_int_equal(sim_chip_load(chips[B].dir, &s), 0);
    assert_int_equal(sim_chip_make_crl(s, (const char *[]){"vlek"}, 1, now, now + 1, &der, &len),
                     -ENOKEY);
    sim_chip_free(TAKE_PTR(s));

    assert_int_equal(sim_chip_load(chips[A].dir, &s), 0);
    assert_int_equal(sim_chip_make_crl(s, names, 2, now - 10, now + 100, &der, &len), 0);
    assert_int_equal(nt_crl_parse(der, len, &crl), 0);
    assert_int_equal(crl->n_revoked, 2);
    assert_int_equal(crl->this_update, now - 10);
    assert_int_equal(crl->next_update, now + 100);
    assert_string_equal(crl->issuer_cn, "ARK-Milan");
    assert_int_equal(nt_crl_check_sig_scheme(crl), 0);
    snprintf(p, sizeof p, "%s/ark.pem", chips[A].dir);
    f = fopen(p, "re");
    assert_non_null(f);
    ark = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(ark);
    assert_int_equal(nt_crl_verify_signed_by(crl, ark), 0);
    X509_free(ark);
    assert_int_equal(nt_crl_check_time(crl, now, 0), 0);
    assert_int_equal(nt_crl_check_time(crl, now - 11, 0), -EKEYREJECTED);
    assert_int_equal(nt_crl_check_time(crl, now + 101, 0), -EKEYEXPIRED);
    assert_int_equal(nt_crl_check_time(crl, now + 101, 1), 0);
    NtSerial ask = {.len = 3, .b = {0x01, 0x00, 0x01}}, zero = {.len = 0}, other = {.len = 1};
    other.b[0] = 0x01;
    assert_non_null(nt_crl_find(crl, &ask));
    assert_non_null(nt_crl_find(crl, &zero)); /* the VLEK's serial: 0, like AMD's */
    assert_null(nt_crl_find(crl, &other));
    char sn[2 * NT_SERIAL_MAX + 3];
    nt_serial_format(&ask, sn, sizeof sn);
    assert_string_equal(sn, "0x010001");
    nt_serial_format(&zero, sn, sizeof sn);
    assert_string_equal(sn, "0x00");

    /* Trailing bytes and truncation are malformed. */
    longer = malloc(len + 1);
    assert_non_null(longer);
    memcpy(longer, der, len);
    longer[len] = 0;
    NtCrl *bad = NULL;
    assert_int_equal(nt_crl_parse(longer, len + 1, &bad), -EBADMSG);
    assert_int_equal(nt_crl_parse(der, len - 1, &bad), -EBADMSG);
    assert_int_equal(nt_crl_parse(der, 0, &bad), -EBADMSG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_revoked_certificates),
        cmocka_unit_test(test_not_revoked),
        cmocka_unit_test(test_bad_crls),
        cmocka_unit_test(test_cached_chain),
        cmocka_unit_test(test_modes_without_crl),
        cmocka_unit_test(test_source_errors),
        cmocka_unit_test(test_intermediate_from_source),
        cmocka_unit_test(test_turin_chip_id_tail),
        cmocka_unit_test(test_crl_parse),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
