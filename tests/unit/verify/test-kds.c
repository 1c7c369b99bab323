/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nt_kds against AMD's real certificates (tests/vectors/snp): the body checks accept every real
 * VCEK for its own report's hwID/TCB/product (Turin: 8-byte hwID, fmcSPL) and refuse it for any
 * other; real chains pass only in the right order and role; and an offline bundle laid out as
 * kds.h documents serves the VcekSource for the real reports, so that the verifier accepts a
 * report that came without certificates.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <inttypes.h>
#include <sys/stat.h>

#include <openssl/pem.h>

#include "core/encoding.h"
#include "core/openssl-util.h"
#include "verify/kds.h"
#include "vt-util.h"

typedef struct Vec {
    SnpReport rep;
    SnpProduct p;
    SnpTcb tcb;
    uint8_t *vcek;
    size_t vcek_len;
    char *chain; /* ask + ark */
    size_t chain_len;
} Vec;

static uint8_t *to_der(uint8_t *data, size_t len, size_t *ret_len) {
    _cleanup_(X509_freep) X509 *x = NULL;
    unsigned char *der = NULL;
    int n;
    if (nt_cert_from_der(data, len, &x) == 0) {
        *ret_len = len;
        return data;
    }
    BIO *b = BIO_new_mem_buf(data, (int)len);
    x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(x);
    n = i2d_X509(x, &der);
    assert_true(n > 0);
    free(data);
    uint8_t *c = malloc((size_t)n);
    assert_non_null(c);
    memcpy(c, der, (size_t)n);
    OPENSSL_free(der);
    *ret_len = (size_t)n;
    return c;
}

static bool vec_load(const char *name, Vec *v) {
    char p[4096];
    struct stat st;
    size_t len, la, lk;
    _cleanup_free_ uint8_t *rep = NULL, *ask = NULL, *ark = NULL;

    if (strstr(name, "vlek"))
        return false;
    rep = vt_read(name, "report.bin", &len);
    assert_int_equal(snp_report_parse(rep, len, &v->rep, NULL), 0);
    v->p = strncmp(name, "milan", 5) == 0   ? SNP_PRODUCT_MILAN
           : strncmp(name, "genoa", 5) == 0 ? SNP_PRODUCT_GENOA
                                            : SNP_PRODUCT_TURIN;
    assert_int_equal(snp_tcb_decode(v->rep.reported_tcb, v->p, &v->tcb), 0);
    vt_path(p, sizeof p, name, "vcek.der");
    v->vcek = vt_read(name, stat(p, &st) == 0 ? "vcek.der" : "vcek.pem", &len);
    v->vcek = to_der(v->vcek, len, &v->vcek_len);
    ask = vt_read(name, "ask.pem", &la);
    ark = vt_read(name, "ark.pem", &lk);
    v->chain_len = la + lk;
    v->chain = malloc(v->chain_len + 1);
    assert_non_null(v->chain);
    memcpy(v->chain, ask, la);
    memcpy(v->chain + la, ark, lk);
    v->chain[v->chain_len] = 0;
    return true;
}

static void vec_done(Vec *v) {
    free(v->vcek);
    free(v->chain);
}

static void test_check_vcek_real(void **state) {
    for (size_t i = 0; i < VT_N_VECTORS; i++) {
        Vec v = {0};
        if (!vec_load(vt_vectors[i], &v))
            continue;
        uint8_t hw[64];
        SnpTcb t;

        assert_int_equal(nt_kds_check_vcek(v.vcek, v.vcek_len, v.p, v.rep.chip_id, 64, &v.tcb), 0);
        if (v.p == SNP_PRODUCT_TURIN) /* the 8 bytes KDS is asked with are enough */
            assert_int_equal(nt_kds_check_vcek(v.vcek, v.vcek_len, v.p, v.rep.chip_id, 8, &v.tcb),
                             0);
        /* Any other hwID byte (of those that identify the chip), TCB component or product. */
        for (size_t b = 0; b < (v.p == SNP_PRODUCT_TURIN ? 8u : 64u); b += 7) {
            memcpy(hw, v.rep.chip_id, 64);
            hw[b] ^= 1;
            assert_int_equal(nt_kds_check_vcek(v.vcek, v.vcek_len, v.p, hw, 64, &v.tcb), -EBADMSG);
        }
        for (int c = 0; c < 5; c++) {
            t = v.tcb;
            uint8_t *f[] = {&t.bootloader, &t.tee, &t.snp, &t.microcode, &t.fmc};
            if (c == 4 && v.p != SNP_PRODUCT_TURIN)
                continue;
            (*f[c])++;
            assert_int_equal(nt_kds_check_vcek(v.vcek, v.vcek_len, v.p, v.rep.chip_id, 64, &t),
                             -EBADMSG);
        }
        for (SnpProduct o = 0; o < _SNP_PRODUCT_MAX; o++)
            if (o != v.p)
                assert_int_equal(
                    nt_kds_check_vcek(v.vcek, v.vcek_len, o, v.rep.chip_id, 64, &v.tcb), -EBADMSG);
        /* Truncated, trailing byte, PEM instead of DER, the ASK. */
        assert_int_equal(nt_kds_check_vcek(v.vcek, v.vcek_len - 1, v.p, v.rep.chip_id, 64, &v.tcb),
                         -EBADMSG);
        assert_int_equal(nt_kds_check_vcek((const uint8_t *)v.chain, v.chain_len, v.p,
                                           v.rep.chip_id, 64, &v.tcb),
                         -EBADMSG);
        vec_done(&v);
    }
}

static void test_check_chain_real(void **state) {
    for (size_t i = 0; i < VT_N_VECTORS; i++) {
        Vec v = {0};
        size_t la, lk;
        if (!vec_load(vt_vectors[i], &v))
            continue;
        _cleanup_free_ uint8_t *ask = vt_read(vt_vectors[i], "ask.pem", &la);
        _cleanup_free_ uint8_t *ark = vt_read(vt_vectors[i], "ark.pem", &lk);
        _cleanup_free_ uint8_t *rev = malloc(la + lk);
        assert_non_null(rev);
        memcpy(rev, ark, lk);
        memcpy(rev + lk, ask, la);

        assert_int_equal(nt_kds_check_chain((uint8_t *)v.chain, v.chain_len, v.p, false), 0);
        assert_int_equal(nt_kds_check_chain((uint8_t *)v.chain, v.chain_len, v.p, true), -EBADMSG);
        assert_int_equal(nt_kds_check_chain(rev, la + lk, v.p, false), -EBADMSG);
        assert_int_equal(nt_kds_check_chain(ask, la, v.p, false), -EBADMSG);
        assert_int_equal(nt_kds_check_chain((uint8_t *)v.chain, v.chain_len,
                                            (v.p + 1) % _SNP_PRODUCT_MAX, false),
                         -EBADMSG);
        vec_done(&v);
    }
    /* The VLEK vector's ASVK + ARK is a VLEK cert_chain. */
    size_t la, lk;
    _cleanup_free_ uint8_t *asvk = vt_read("milan-v3-trustee-vlek", "asvk.pem", &la);
    _cleanup_free_ uint8_t *ark = vt_read("milan-v3-trustee-vlek", "ark.pem", &lk);
    _cleanup_free_ uint8_t *c = malloc(la + lk);
    assert_non_null(c);
    memcpy(c, asvk, la);
    memcpy(c + la, ark, lk);
    assert_int_equal(nt_kds_check_chain(c, la + lk, SNP_PRODUCT_MILAN, true), 0);
    assert_int_equal(nt_kds_check_chain(c, la + lk, SNP_PRODUCT_MILAN, false), -EBADMSG);
}

static void write_entry(const char *root, const char *rel, const void *d, size_t n) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    char *s = strrchr(p, '/');
    *s = 0;
    assert_int_equal(mkdir_p(p, 0700), 0);
    *s = '/';
    assert_int_equal(write_file_atomic(p, d, n, 0600), 0);
}

static void test_offline_source_real(void **state) {
    char tmpl[] = "/tmp/nt-kds-XXXXXX";
    char *root = mkdtemp(tmpl);
    assert_non_null(root);
    _cleanup_(nt_verifier_freep) NtVerifier *ver = NULL;
    assert_int_equal(nt_verifier_new(&ver), 0);

    for (size_t i = 0; i < VT_N_VECTORS; i++) {
        Vec v = {0};
        char rel[512], hex[129];
        const char *pn;
        if (!vec_load(vt_vectors[i], &v))
            continue;
        pn = snp_product_to_string(v.p);
        /* The documented layout, written here independently of kds.c. */
        hex_encode(v.rep.chip_id, v.p == SNP_PRODUCT_TURIN ? 8 : 64, hex);
        snprintf(rel, sizeof rel, "vcek/%s/%s/%016" PRIx64 ".der", pn, hex,
                 snp_tcb_encode(&v.tcb, v.p));
        write_entry(root, rel, v.vcek, v.vcek_len);
        snprintf(rel, sizeof rel, "chain/%s/vcek.pem", pn);
        write_entry(root, rel, v.chain, v.chain_len);

        NtKdsConfig cfg = {.offline_dir = root};
        _cleanup_(nt_kds_freep) NtKds *k = NULL;
        _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = nt_cert_bundle_new();
        NtVcekSource src;
        assert_int_equal(nt_kds_new(&cfg, &k), 0);
        nt_kds_vcek_source(k, &src);
        /* No product hint: v3+ reports name it by CPUID; v2 (Milan) needs the hint. */
        SnpProduct hint = v.rep.version >= 3 ? _SNP_PRODUCT_INVALID : v.p;
        assert_int_equal(src.fetch(src.userdata, &v.rep, hint, NT_CERT_ROLE_VCEK, b), 0);
        assert_non_null(nt_cert_bundle_find(b, NT_CERT_ROLE_VCEK));
        assert_non_null(nt_cert_bundle_find(b, NT_CERT_ROLE_ASK));
        assert_non_null(nt_cert_bundle_find(b, NT_CERT_ROLE_ARK));

        /* The verifier, given no certificates, gets them from the source. */
        size_t len;
        _cleanup_free_ uint8_t *raw = vt_read(vt_vectors[i], "report.bin", &len);
        _cleanup_(nt_verdict_freep) NtVerdict *vd = NULL;
        nt_verifier_set_vcek_source(ver, &src);
        NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
        o.product = v.p;
        assert_int_equal(nt_verifier_verify(ver, raw, len, NULL, &o, &vd), 0);
        if (nt_verdict_status(vd) != NT_VERDICT_OK)
            fail_msg("%s: %s failed", vt_vectors[i], vt_failed_check(vd));
        nt_verifier_set_vcek_source(ver, NULL);

        /* Another TCB: not in the bundle, no network: -ENOENT. */
        SnpReport r2 = v.rep;
        SnpTcb t2 = v.tcb;
        t2.snp++;
        r2.reported_tcb = snp_tcb_encode(&t2, v.p);
        _cleanup_(nt_cert_bundle_freep) NtCertBundle *b2 = nt_cert_bundle_new();
        assert_int_equal(src.fetch(src.userdata, &r2, v.p, NT_CERT_ROLE_VCEK, b2), -ENOENT);
        assert_null(nt_cert_bundle_find(b2, NT_CERT_ROLE_VCEK));

        /* MASK_CHIP_ID (zero hwID): no VCEK to ask for, but the chain (the evidence must carry
         * the VCEK; it may lack the ASK). */
        SnpReport r3 = v.rep;
        memset(r3.chip_id, 0, sizeof(r3.chip_id));
        _cleanup_(nt_cert_bundle_freep) NtCertBundle *b3 = nt_cert_bundle_new();
        assert_int_equal(src.fetch(src.userdata, &r3, v.p, NT_CERT_ROLE_VCEK, b3), -ENOENT);
        assert_null(nt_cert_bundle_find(b3, NT_CERT_ROLE_VCEK));
        assert_non_null(nt_cert_bundle_find(b3, NT_CERT_ROLE_ASK));
        assert_non_null(nt_cert_bundle_find(b3, NT_CERT_ROLE_ARK));
        /* No product hint and no CPUID (v2): unknown product. */
        _cleanup_(nt_cert_bundle_freep) NtCertBundle *b4 = nt_cert_bundle_new();
        if (v.rep.version == 2)
            assert_int_equal(
                src.fetch(src.userdata, &v.rep, _SNP_PRODUCT_INVALID, NT_CERT_ROLE_VCEK, b4),
                -EINVAL);
        assert_int_equal(b4->n_entries, 0);
        vec_done(&v);
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

static unsigned n_fetch_events;

static void count_event(void *ud, const char *event) {
    if (strcmp(event, "fetch") == 0)
        n_fetch_events++;
}

/* A source that has no local mode. */
static int fetch_fail(void *ud, const SnpReport *r, SnpProduct p, NtCertRole role,
                      NtCertBundle *b) {
    return -ETIMEDOUT;
}

/* Local mode (NtVerifyOptions.local_only, fetch_local, nt_kds_get_crl_local): what the cache or
 * offline bundle holds is served as by fetch; what only KDS could give is -EREMOTE at once,
 * without a request, and the verifier then returns -EREMOTE and no verdict; answers known
 * without asking (no KDS configured) are the same as fetch's. */
static void test_local_mode_real(void **state) {
    char tmpl[] = "/tmp/nt-kds-local-XXXXXX";
    char *root = mkdtemp(tmpl);
    assert_non_null(root);
    _cleanup_(nt_verifier_freep) NtVerifier *ver = NULL;
    assert_int_equal(nt_verifier_new(&ver), 0);

    for (size_t i = 0; i < VT_N_VECTORS; i++) {
        Vec v = {0};
        char rel[512], hex[129];
        if (!vec_load(vt_vectors[i], &v))
            continue;
        const char *pn = snp_product_to_string(v.p);
        hex_encode(v.rep.chip_id, v.p == SNP_PRODUCT_TURIN ? 8 : 64, hex);
        snprintf(rel, sizeof rel, "vcek/%s/%s/%016" PRIx64 ".der", pn, hex,
                 snp_tcb_encode(&v.tcb, v.p));
        write_entry(root, rel, v.vcek, v.vcek_len);
        snprintf(rel, sizeof rel, "chain/%s/vcek.pem", pn);
        write_entry(root, rel, v.chain, v.chain_len);
        size_t len;
        _cleanup_free_ uint8_t *raw = vt_read(vt_vectors[i], "report.bin", &len);
        SnpReport r2 = v.rep;
        SnpTcb t2 = v.tcb;
        t2.snp++;
        r2.reported_tcb = snp_tcb_encode(&t2, v.p);
        NtVerifyOptions o = NT_VERIFY_OPTIONS_INIT;
        o.product = v.p;
        o.local_only = true;

        for (int with_url = 0; with_url < 2; with_url++) {
            /* Nothing listens on the discard port; local mode never connects anyway. */
            NtKdsConfig cfg = {.offline_dir = root,
                               .base_url = with_url ? "http://127.0.0.1:9" : NULL,
                               .count = count_event};
            _cleanup_(nt_kds_freep) NtKds *k = NULL;
            _cleanup_(nt_cert_bundle_freep) NtCertBundle *b = nt_cert_bundle_new(),
                                                         *b2 = nt_cert_bundle_new();
            _cleanup_(nt_verdict_freep) NtVerdict *vd = NULL;
            _cleanup_free_ uint8_t *crl = NULL;
            NtVcekSource src;
            size_t n = 0;
            assert_int_equal(nt_kds_new(&cfg, &k), 0);
            nt_kds_vcek_source(k, &src);
            assert_non_null(src.fetch_local);
            n_fetch_events = 0;

            /* In the bundle: served. */
            assert_int_equal(src.fetch_local(src.userdata, &v.rep, v.p, NT_CERT_ROLE_VCEK, b), 0);
            assert_non_null(nt_cert_bundle_find(b, NT_CERT_ROLE_VCEK));
            assert_non_null(nt_cert_bundle_find(b, NT_CERT_ROLE_ASK));
            nt_verifier_cache_flush(ver);
            nt_verifier_set_vcek_source(ver, &src);
            assert_int_equal(nt_verifier_verify(ver, raw, len, NULL, &o, &vd), 0);
            if (nt_verdict_status(vd) != NT_VERDICT_OK)
                fail_msg("%s: %s failed", vt_vectors[i], vt_failed_check(vd));
            nt_verdict_free(TAKE_PTR(vd));

            /* Not in the bundle: -ENOENT without a KDS, -EREMOTE with one; never a request. */
            assert_int_equal(src.fetch_local(src.userdata, &r2, v.p, NT_CERT_ROLE_VCEK, b2),
                             with_url ? -EREMOTE : -ENOENT);
            assert_null(nt_cert_bundle_find(b2, NT_CERT_ROLE_VCEK));
            assert_int_equal(nt_kds_get_crl_local(k, v.p, 3600, &crl, &n, NULL),
                             with_url ? -EREMOTE : -ENOENT);
            assert_null(crl);
            assert_int_equal(n_fetch_events, 0);
            nt_verifier_set_vcek_source(ver, NULL);
        }

        /* A source without a local mode: -EREMOTE, no verdict, unless the evidence carries the
         * whole chain (then the source is not asked). */
        NtVcekSource nolocal = {.name = "no local mode", .fetch = fetch_fail};
        _cleanup_(nt_verdict_freep) NtVerdict *vd = NULL;
        _cleanup_(nt_cert_bundle_freep) NtCertBundle *full = nt_cert_bundle_new();
        nt_verifier_cache_flush(ver);
        nt_verifier_set_vcek_source(ver, &nolocal);
        assert_int_equal(nt_verifier_verify(ver, raw, len, NULL, &o, &vd), -EREMOTE);
        assert_null(vd);
        assert_int_equal(nt_cert_bundle_add(full, v.vcek, v.vcek_len, NT_CERT_ROLE_VCEK, "vcek"),
                         0);
        assert_int_equal(nt_cert_bundle_add(full, (const uint8_t *)v.chain, v.chain_len,
                                            _NT_CERT_ROLE_INVALID, "chain"),
                         0);
        assert_int_equal(nt_verifier_verify(ver, raw, len, full, &o, &vd), 0);
        if (nt_verdict_status(vd) != NT_VERDICT_OK)
            fail_msg("%s with certificates: %s failed", vt_vectors[i], vt_failed_check(vd));
        nt_verdict_free(TAKE_PTR(vd));
        /* Without local_only the same source is asked and its error is the verdict's. */
        o.local_only = false;
        assert_int_equal(nt_verifier_verify(ver, raw, len, NULL, &o, &vd), 0);
        assert_int_equal(nt_verdict_status(vd), NT_VERDICT_INVALID);
        assert_int_equal(nt_verdict_first_failure(vd)->error, -ETIMEDOUT);
        nt_verifier_set_vcek_source(ver, NULL);
        vec_done(&v);
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_vcek_real),
        cmocka_unit_test(test_check_chain_real),
        cmocka_unit_test(test_offline_source_real),
        cmocka_unit_test(test_local_mode_real),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
