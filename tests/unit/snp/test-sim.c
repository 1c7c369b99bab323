/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated SNP firmware: chips for Milan (with VLEK), Genoa and Turin are created once
 * (RSA-4096 generation is slow) and shared by all cases. Reports are checked with OpenSSL
 * directly (r/s little-endian -> ECDSA_SIG -> EVP_DigestVerify), chains with X509_verify per link,
 * extensions against AMD's real certificates in tests/vectors/snp.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/fileio.h"
#include "core/macro.h"
#include "core/openssl-util.h"
#include "snp/certtable.h"
#include "snp/report.h"
#include "snp/sim.h"

static char base[] = "/tmp/nt-test-sim-XXXXXX";
static char dirs[_SNP_PRODUCT_MAX][300];

static int group_setup(void **state) {
    static const SimInitOptions opts[_SNP_PRODUCT_MAX] = {
        [SNP_PRODUCT_MILAN] = {SNP_PRODUCT_MILAN, true, 2},
        [SNP_PRODUCT_GENOA] = {SNP_PRODUCT_GENOA, false, 3},
        [SNP_PRODUCT_TURIN] = {SNP_PRODUCT_TURIN, false, 0},
    };
    if (!mkdtemp(base))
        return -1;
    for (int p = 0; p < _SNP_PRODUCT_MAX; p++) {
        snprintf(dirs[p], sizeof dirs[p], "%s/%s", base, snp_product_to_string(p));
        if (sim_chip_init(dirs[p], &opts[p]) < 0)
            return -1;
    }
    return 0;
}

static int group_teardown(void **state) {
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    return system(cmd) == 0 ? 0 : -1;
}

/* Paths are built with asprintf: a fixed buffer would silently truncate a long directory
 * ($NT_VECTORS is the source tree's) and open another file. */
static X509 *load_pem(const char *dir, const char *name) {
    _cleanup_free_ char *path = NULL;
    FILE *f;
    X509 *x;
    assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    f = fopen(path, "re");
    assert_non_null(f);
    x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

static X509 *load_vector(const char *vec, const char *name) {
    const char *root = getenv("NT_VECTORS");
    _cleanup_free_ char *path = NULL;
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len = 0;
    const uint8_t *p;
    X509 *x;

    assert_non_null(root);
    assert_true(asprintf(&path, "%s/snp/%s/%s", root, vec, name) > 0);
    assert_int_equal(read_full_file(path, 65536, &buf, &len), 0);
    p = buf;
    x = strstr(name, ".der") ? d2i_X509(NULL, &p, (long)len) : NULL;
    if (!x) {
        _cleanup_(BIO_free_allp) BIO *b = BIO_new_mem_buf(buf, (int)len);
        x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    }
    assert_non_null(x);
    return x;
}

/* Verifies the report signature like a verifier would, from the raw bytes. */
static int verify_report_sig(const uint8_t *rep, X509 *cert) {
    _cleanup_(ECDSA_SIG_freep) ECDSA_SIG *sig = ECDSA_SIG_new();
    _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *md = EVP_MD_CTX_new();
    BIGNUM *r = BN_lebin2bn(rep + 0x2A0, 72, NULL), *s = BN_lebin2bn(rep + 0x2E8, 72, NULL);
    uint8_t *der = NULL;
    int n, ok;

    assert_non_null(sig);
    assert_non_null(r);
    assert_non_null(s);
    assert_int_equal(ECDSA_SIG_set0(sig, r, s), 1);
    n = i2d_ECDSA_SIG(sig, &der);
    assert_true(n > 0);
    assert_int_equal(
        EVP_DigestVerifyInit_ex(md, NULL, "SHA384", NULL, NULL, X509_get0_pubkey(cert), NULL), 1);
    ok = EVP_DigestVerify(md, der, (size_t)n, rep, SNP_REPORT_SIGNED_SIZE);
    OPENSSL_free(der);
    return ok;
}

static const ASN1_OCTET_STRING *amd_ext(X509 *x, const char *suffix) {
    char oid[64];
    _cleanup_(ASN1_OBJECT_freep) ASN1_OBJECT *obj = NULL;
    int i;
    snprintf(oid, sizeof oid, "1.3.6.1.4.1.3704.1.%s", suffix);
    obj = OBJ_txt2obj(oid, 1);
    assert_non_null(obj);
    i = X509_get_ext_by_OBJ(x, obj, -1);
    if (i < 0)
        return NULL;
    return X509_EXTENSION_get_data(X509_get_ext(x, i));
}

static void assert_ext_int(X509 *x, const char *suffix, unsigned v) {
    const ASN1_OCTET_STRING *os = amd_ext(x, suffix);
    _cleanup_(ASN1_INTEGER_freep) ASN1_INTEGER *i = NULL;
    const uint8_t *p;
    uint64_t got = 0;

    assert_non_null(os);
    p = ASN1_STRING_get0_data(os);
    assert_int_equal(p[0], 0x02); /* a DER INTEGER, as AMD's */
    i = d2i_ASN1_INTEGER(NULL, &p, ASN1_STRING_length(os));
    assert_non_null(i);
    assert_int_equal(ASN1_INTEGER_get_uint64(&got, i), 1);
    assert_int_equal(got, v);
}

static void test_report_roundtrip(void **state) {
    for (int p = 0; p < _SNP_PRODUCT_MAX; p++) {
        _cleanup_(sim_chip_freep) SimChip *c = NULL;
        _cleanup_(X509_freep) X509 *vcek = load_pem(dirs[p], "vcek.pem");
        static const uint32_t versions[] = {2, 3, 5};

        assert_int_equal(sim_chip_load(dirs[p], &c), 0);
        assert_int_equal(sim_chip_product(c), p);
        for (size_t v = 0; v < ELEMENTSOF(versions); v++) {
            uint8_t data[64], rep[SNP_REPORT_SIZE];
            SnpReport r;
            SnpTcb t;
            const char *err = NULL;

            sim_chip_launch(c)->version = versions[v];
            assert_int_equal(sim_chip_save(c), 0);
            assert_int_equal(RAND_bytes(data, sizeof data), 1);
            assert_int_equal(sim_chip_get_report(c, data, 0, rep), 0);
            assert_int_equal(snp_report_parse(rep, sizeof rep, &r, &err), 0);
            assert_int_equal(r.version, versions[v]);
            assert_memory_equal(r.report_data, data, 64);
            assert_int_equal(r.signature_algo, SNP_SIG_ALGO_ECDSA_P384_SHA384);
            assert_int_equal(snp_report_signing_key(&r), SNP_SIGNING_KEY_VCEK);
            assert_int_equal(r.policy & SNP_POLICY_RESERVED_1, SNP_POLICY_RESERVED_1);
            for (size_t i = 0; i < 32; i++)
                assert_int_equal(r.report_id_ma[i], 0xFF);
            assert_int_equal(snp_tcb_decode(r.reported_tcb, p, &t), 0);
            if (versions[v] >= 3)
                assert_int_equal(snp_product_from_cpuid(r.cpuid_fam_id, r.cpuid_mod_id), p);
            else
                assert_int_equal(r.cpuid_fam_id | r.cpuid_mod_id | r.cpuid_step, 0);
            if (versions[v] >= 5)
                assert_int_equal(r.launch_mit_vector, 0x3F);
            else
                assert_int_equal(r.launch_mit_vector | r.current_mit_vector, 0);
            /* hwID is the chip id: 64 bytes, 8 significant on Turin */
            {
                const ASN1_OCTET_STRING *hw = amd_ext(vcek, "4");
                size_t n = p == SNP_PRODUCT_TURIN ? 8 : 64;
                assert_non_null(hw);
                assert_int_equal(ASN1_STRING_length(hw), n);
                assert_memory_equal(ASN1_STRING_get0_data(hw), r.chip_id, n);
                for (size_t i = n; i < 64; i++)
                    assert_int_equal(r.chip_id[i], 0);
            }
            assert_int_equal(verify_report_sig(rep, vcek), 1);
            rep[0x50] ^= 1; /* report_data */
            assert_int_not_equal(verify_report_sig(rep, vcek), 1);
            rep[0x50] ^= 1;
            rep[0x2A0] ^= 1; /* r */
            assert_int_not_equal(verify_report_sig(rep, vcek), 1);
        }
    }
}

static void test_chain_and_extensions(void **state) {
    static const char *const vectors[_SNP_PRODUCT_MAX][2] = {
        [SNP_PRODUCT_MILAN] = {"milan-v2-virtee-vcek", "vcek.der"},
        [SNP_PRODUCT_GENOA] = {"genoa-v3-msft-vcek", "vcek.pem"},
        [SNP_PRODUCT_TURIN] = {"turin-v5-msft-vcek", "vcek.pem"},
    };
    static const char *const pname[] = {"Milan-B0", "Genoa", "Turin"};
    _cleanup_(ASN1_OBJECT_freep) ASN1_OBJECT *hwid_obj = OBJ_txt2obj("1.3.6.1.4.1.3704.1.4", 1);

    for (int p = 0; p < _SNP_PRODUCT_MAX; p++) {
        _cleanup_(X509_freep) X509 *ark = load_pem(dirs[p], "ark.pem");
        _cleanup_(X509_freep) X509 *ask = load_pem(dirs[p], "ask.pem");
        _cleanup_(X509_freep) X509 *vcek = load_pem(dirs[p], "vcek.pem");
        _cleanup_(X509_freep) X509 *real_vcek = load_vector(vectors[p][0], vectors[p][1]);
        _cleanup_(X509_freep) X509 *real_ark = load_vector(vectors[p][0], "ark.pem");
        _cleanup_(X509_freep) X509 *real_ask = load_vector(vectors[p][0], "ask.pem");
        _cleanup_(sim_chip_freep) SimChip *c = NULL;
        const ASN1_OCTET_STRING *os;
        SnpTcb t;
        X509 *ours[3] = {ark, ask, vcek}, *real[3] = {real_ark, real_ask, real_vcek};

        assert_int_equal(sim_chip_load(dirs[p], &c), 0);
        assert_int_equal(X509_verify(ark, X509_get0_pubkey(ark)), 1);
        assert_int_equal(X509_verify(ask, X509_get0_pubkey(ark)), 1);
        assert_int_equal(X509_verify(vcek, X509_get0_pubkey(ask)), 1);
        assert_int_not_equal(X509_verify(vcek, X509_get0_pubkey(ark)), 1);

        for (int i = 0; i < 3; i++) {
            const X509_ALGOR *a1, *a2;
            _cleanup_free_ uint8_t *d1 = NULL, *d2 = NULL;
            int n1, n2;
            /* Same names, serial numbers and signature AlgorithmIdentifier bytes as AMD's. */
            assert_int_equal(
                X509_NAME_cmp(X509_get_subject_name(ours[i]), X509_get_subject_name(real[i])), 0);
            assert_int_equal(
                X509_NAME_cmp(X509_get_issuer_name(ours[i]), X509_get_issuer_name(real[i])), 0);
            assert_int_equal(
                ASN1_INTEGER_cmp(X509_get0_serialNumber(ours[i]), X509_get0_serialNumber(real[i])),
                0);
            X509_get0_signature(NULL, &a1, ours[i]);
            X509_get0_signature(NULL, &a2, real[i]);
            n1 = i2d_X509_ALGOR(a1, &d1);
            n2 = i2d_X509_ALGOR(a2, &d2);
            assert_int_equal(n1, n2);
            assert_memory_equal(d1, d2, (size_t)n1);
            assert_int_equal(X509_get_ext_count(ours[i]), X509_get_ext_count(real[i]));
            /* Same extension OIDs in the same order, same value encoding style. */
            for (int e = 0; e < X509_get_ext_count(real[i]); e++) {
                X509_EXTENSION *eo = X509_get_ext(ours[i], e), *er = X509_get_ext(real[i], e);
                assert_int_equal(
                    OBJ_cmp(X509_EXTENSION_get_object(eo), X509_EXTENSION_get_object(er)), 0);
                assert_int_equal(X509_EXTENSION_get_critical(eo), X509_EXTENSION_get_critical(er));
                if (OBJ_cmp(X509_EXTENSION_get_object(er), hwid_obj) == 0)
                    continue; /* raw bytes, checked below */
                assert_int_equal(ASN1_STRING_get0_data(X509_EXTENSION_get_data(eo))[0],
                                 ASN1_STRING_get0_data(X509_EXTENSION_get_data(er))[0]);
            }
        }
        /* The ARK validity is AMD's. */
        assert_int_equal(ASN1_TIME_compare(X509_get0_notBefore(ark), X509_get0_notBefore(real_ark)),
                         0);

        os = amd_ext(vcek, "2");
        assert_non_null(os);
        assert_int_equal(ASN1_STRING_get0_data(os)[0], 0x16); /* IA5String */
        assert_int_equal(ASN1_STRING_get0_data(os)[1], strlen(pname[p]));
        assert_memory_equal(ASN1_STRING_get0_data(os) + 2, pname[p], strlen(pname[p]));
        assert_ext_int(vcek, "1", p == SNP_PRODUCT_TURIN ? 1 : 0);

        /* SPL extensions equal the reported TCB. */
        assert_int_equal(snp_tcb_decode(sim_chip_launch(c)->reported_tcb, p, &t), 0);
        assert_ext_int(vcek, "3.1", t.bootloader);
        assert_ext_int(vcek, "3.2", t.tee);
        assert_ext_int(vcek, "3.3", t.snp);
        assert_ext_int(vcek, "3.8", t.microcode);
        if (p == SNP_PRODUCT_TURIN) {
            assert_ext_int(vcek, "3.9", t.fmc);
            assert_null(amd_ext(vcek, "3.4"));
        } else {
            assert_null(amd_ext(vcek, "3.9"));
            assert_ext_int(vcek, "3.4", 0);
        }
        assert_null(amd_ext(vcek, "5"));
    }
}

static void test_vlek(void **state) {
    _cleanup_(sim_chip_freep) SimChip *c = NULL;
    _cleanup_(X509_freep) X509 *ark = load_pem(dirs[SNP_PRODUCT_MILAN], "ark.pem");
    _cleanup_(X509_freep) X509 *asvk = load_pem(dirs[SNP_PRODUCT_MILAN], "asvk.pem");
    _cleanup_(X509_freep) X509 *vlek = load_pem(dirs[SNP_PRODUCT_MILAN], "vlek.pem");
    _cleanup_(X509_freep) X509 *vcek = load_pem(dirs[SNP_PRODUCT_MILAN], "vcek.pem");
    _cleanup_(X509_freep) X509 *real_asvk = load_vector("milan-v3-trustee-vlek", "asvk.pem");
    _cleanup_(X509_freep) X509 *real_vlek = load_vector("milan-v3-trustee-vlek", "vlek.der");
    _cleanup_free_ uint8_t *table = NULL;
    uint8_t data[64] = {1, 2, 3}, rep[SNP_REPORT_SIZE];
    const SnpCertEntry *e;
    SnpCertTable t;
    SnpReport r;
    size_t table_len = 0;
    const ASN1_OCTET_STRING *csp;

    assert_int_equal(X509_verify(asvk, X509_get0_pubkey(ark)), 1);
    assert_int_equal(X509_verify(vlek, X509_get0_pubkey(asvk)), 1);
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(asvk), X509_get_subject_name(real_asvk)),
                     0);
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(vlek), X509_get_subject_name(real_vlek)),
                     0);
    assert_int_equal(
        ASN1_INTEGER_cmp(X509_get0_serialNumber(asvk), X509_get0_serialNumber(real_asvk)), 0);
    assert_null(amd_ext(vlek, "4"));
    csp = amd_ext(vlek, "5");
    assert_non_null(csp);
    assert_int_equal(ASN1_STRING_get0_data(csp)[0], 0x16);
    assert_int_equal(X509_get_ext_count(vlek), X509_get_ext_count(real_vlek));

    assert_int_equal(sim_chip_load(dirs[SNP_PRODUCT_MILAN], &c), 0);
    assert_true(sim_chip_has_vlek(c));
    assert_int_equal(sim_chip_set_signing_key(c, SNP_SIGNING_KEY_VLEK), 0);
    sim_chip_launch(c)->flags |= SNP_FLAG_MASK_CHIP_KEY;
    assert_int_equal(sim_chip_get_report(c, data, 0, rep), 0);
    assert_int_equal(snp_report_parse(rep, sizeof rep, &r, NULL), 0);
    assert_int_equal(snp_report_signing_key(&r), SNP_SIGNING_KEY_VLEK);
    for (size_t i = 0; i < 64; i++)
        assert_int_equal(r.chip_id[i], 0);
    assert_int_equal(verify_report_sig(rep, vlek), 1);
    assert_int_not_equal(verify_report_sig(rep, vcek), 1);

    /* The extended report's table carries the VLEK chain. */
    assert_int_equal(sim_chip_get_cert_table(c, &table, &table_len), 0);
    assert_int_equal(snp_cert_table_parse(table, table_len, &t), 0);
    e = snp_cert_table_find(&t, SNP_CERT_VLEK);
    assert_non_null(e);
    {
        const uint8_t *p = e->der;
        _cleanup_(X509_freep) X509 *x = d2i_X509(NULL, &p, (long)e->der_len);
        assert_non_null(x);
        assert_int_equal(X509_cmp(x, vlek), 0);
    }
    assert_null(snp_cert_table_find(&t, SNP_CERT_VCEK));
    assert_non_null(snp_cert_table_find(&t, SNP_CERT_ARK));

    /* Back to VCEK, unmasked: not persisted, so a reload is the VCEK configuration again. */
    sim_chip_free(TAKE_PTR(c));
    assert_int_equal(sim_chip_load(dirs[SNP_PRODUCT_MILAN], &c), 0);
    assert_int_equal(snp_report_signing_key(sim_chip_launch(c)), SNP_SIGNING_KEY_VCEK);
}

static void test_cert_table_vcek(void **state) {
    _cleanup_(sim_chip_freep) SimChip *c = NULL;
    _cleanup_(X509_freep) X509 *vcek = load_pem(dirs[SNP_PRODUCT_GENOA], "vcek.pem");
    _cleanup_(X509_freep) X509 *ask = load_pem(dirs[SNP_PRODUCT_GENOA], "ask.pem");
    _cleanup_free_ uint8_t *table = NULL;
    size_t len = 0;
    SnpCertTable t;
    const SnpCertEntry *e;

    assert_int_equal(sim_chip_load(dirs[SNP_PRODUCT_GENOA], &c), 0);
    assert_int_equal(sim_chip_set_signing_key(c, SNP_SIGNING_KEY_VLEK), -ENOKEY);
    assert_int_equal(sim_chip_get_cert_table(c, &table, &len), 0);
    assert_int_equal(snp_cert_table_parse(table, len, &t), 0);
    assert_int_equal(t.n_entries, 3);
    e = snp_cert_table_find(&t, SNP_CERT_VCEK);
    assert_non_null(e);
    {
        const uint8_t *p = e->der;
        _cleanup_(X509_freep) X509 *x = d2i_X509(NULL, &p, (long)e->der_len);
        assert_int_equal(X509_cmp(x, vcek), 0);
    }
    e = snp_cert_table_find(&t, SNP_CERT_ASK);
    assert_non_null(e);
    {
        const uint8_t *p = e->der;
        _cleanup_(X509_freep) X509 *x = d2i_X509(NULL, &p, (long)e->der_len);
        assert_int_equal(X509_cmp(x, ask), 0);
    }
}

static void test_reported_tcb_reissues_vcek(void **state) {
    const char *dir = dirs[SNP_PRODUCT_TURIN];
    _cleanup_(sim_chip_freep) SimChip *c = NULL;
    _cleanup_(X509_freep) X509 *before = load_pem(dir, "vcek.pem"), *after = NULL;
    _cleanup_(X509_freep) X509 *ask = load_pem(dir, "ask.pem");
    SnpTcb t = {.fmc = 2, .bootloader = 3, .tee = 4, .snp = 5, .microcode = 0x60};
    uint8_t data[64] = {0}, rep[SNP_REPORT_SIZE];
    SnpReport r;
    uint64_t old_committed;

    assert_int_equal(sim_chip_load(dir, &c), 0);
    old_committed = sim_chip_launch(c)->committed_tcb;
    sim_chip_launch(c)->reported_tcb = snp_tcb_encode(&t, SNP_PRODUCT_TURIN);
    assert_int_equal(sim_chip_save(c), 0);
    after = load_pem(dir, "vcek.pem");
    assert_int_equal(X509_verify(after, X509_get0_pubkey(ask)), 1);
    assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(before), X509_get0_pubkey(after)), 1);
    assert_ext_int(after, "3.9", 2);
    assert_ext_int(after, "3.1", 3);
    assert_ext_int(after, "3.2", 4);
    assert_ext_int(after, "3.3", 5);
    assert_ext_int(after, "3.8", 0x60);
    assert_int_equal(sim_chip_get_report(c, data, 0, rep), 0);
    assert_int_equal(snp_report_parse(rep, sizeof rep, &r, NULL), 0);
    assert_int_equal(r.reported_tcb, snp_tcb_encode(&t, SNP_PRODUCT_TURIN));
    assert_int_equal(r.committed_tcb, old_committed);
    assert_int_equal(verify_report_sig(rep, after), 1);

    /* A TCB that does not encode for the product is refused and nothing changes on disk. */
    sim_chip_free(TAKE_PTR(c));
    assert_int_equal(sim_chip_load(dir, &c), 0);
    sim_chip_launch(c)->reported_tcb |= 0x0000FF0000000000ull; /* reserved byte 5 */
    assert_int_equal(sim_chip_save(c), -EINVAL);
    sim_chip_free(TAKE_PTR(c));
    assert_int_equal(sim_chip_load(dir, &c), 0);
    assert_int_equal(sim_chip_launch(c)->reported_tcb, snp_tcb_encode(&t, SNP_PRODUCT_TURIN));
}

static void test_vmpl_and_launch(void **state) {
    const char *dir = dirs[SNP_PRODUCT_GENOA];
    _cleanup_(sim_chip_freep) SimChip *c = NULL;
    uint8_t data[64] = {9}, rep[SNP_REPORT_SIZE], report_id[32];
    SnpReport r;

    assert_int_equal(sim_chip_load(dir, &c), 0);
    memcpy(report_id, sim_chip_launch(c)->report_id, 32);
    sim_chip_launch(c)->vmpl = 1;
    memset(sim_chip_launch(c)->measurement, 0xAB, 48);
    assert_int_equal(sim_chip_save(c), 0);
    /* a new launch: a new REPORT_ID */
    assert_memory_not_equal(sim_chip_launch(c)->report_id, report_id, 32);
    assert_int_equal(sim_chip_get_report(c, data, 0, rep), -EPERM);
    assert_int_equal(sim_chip_get_report(c, data, 4, rep), -EINVAL);
    assert_int_equal(sim_chip_get_report(c, data, 2, rep), 0);
    assert_int_equal(snp_report_parse(rep, sizeof rep, &r, NULL), 0);
    assert_int_equal(r.vmpl, 2);
    assert_memory_equal(r.report_id, sim_chip_launch(c)->report_id, 32);
    for (size_t i = 0; i < 48; i++)
        assert_int_equal(r.measurement[i], 0xAB);

    /* Policy without the must-be-one bit is refused. */
    sim_chip_launch(c)->policy = 0;
    assert_int_equal(sim_chip_save(c), -EINVAL);
    sim_chip_free(TAKE_PTR(c));
    assert_int_equal(sim_chip_load(dir, &c), 0);
    sim_chip_launch(c)->vmpl = 0;
    assert_int_equal(sim_chip_save(c), 0);
}

static int derive(SimChip *c, const SnpDerivedKeyRequest *req, uint8_t out[32]) {
    _cleanup_(secret_freep) Secret *k = NULL;
    int r = sim_chip_get_derived_key(c, req, &k);
    if (r < 0)
        return r;
    assert_int_equal(secret_size(k), 32);
    memcpy(out, secret_const_data(k), 32);
    return 0;
}

static void test_derived_keys(void **state) {
    _cleanup_(sim_chip_freep) SimChip *c = NULL;
    SnpDerivedKeyRequest all =
                             {
                                 .root_key_select = SNP_KEY_ROOT_VCEK,
                                 .guest_field_select = 0x7F,
                             },
                         req;
    uint8_t k0[32], k1[32], k2[32];
    SnpReport *l;
    SnpTcb tcb;

    /* Turin: report version 5, so bit 6 (launch mitigation vector) is valid. */
    assert_int_equal(sim_chip_load(dirs[SNP_PRODUCT_TURIN], &c), 0);
    l = sim_chip_launch(c);
    l->guest_svn = 5;
    assert_int_equal(sim_chip_save(c), 0);
    all.guest_svn = 5;
    all.tcb_version = l->committed_tcb;
    all.launch_mit_vector = l->launch_mit_vector;

    assert_int_equal(derive(c, &all, k0), 0);
    assert_int_equal(derive(c, &all, k1), 0);
    assert_memory_equal(k0, k1, 32);

    /* Each selected guest field changes the key. */
    l->policy ^= SNP_POLICY_DEBUG;
    assert_int_equal(derive(c, &all, k1), 0);
    assert_memory_not_equal(k0, k1, 32);
    l->policy ^= SNP_POLICY_DEBUG;
    l->image_id[3] ^= 1;
    assert_int_equal(derive(c, &all, k1), 0);
    assert_memory_not_equal(k0, k1, 32);
    l->image_id[3] ^= 1;
    l->family_id[15] ^= 1;
    assert_int_equal(derive(c, &all, k1), 0);
    assert_memory_not_equal(k0, k1, 32);
    l->family_id[15] ^= 1;
    l->measurement[47] ^= 1;
    assert_int_equal(derive(c, &all, k1), 0);
    assert_memory_not_equal(k0, k1, 32);
    l->measurement[47] ^= 1;
    assert_int_equal(derive(c, &all, k1), 0);
    assert_memory_equal(k0, k1, 32);

    /* Requested SVN, TCB, mitigation vector, VMPL and root key change it too. */
    req = all;
    req.guest_svn = 4;
    assert_int_equal(derive(c, &req, k1), 0);
    assert_memory_not_equal(k0, k1, 32);
    req = all;
    assert_int_equal(snp_tcb_decode(all.tcb_version, SNP_PRODUCT_TURIN, &tcb), 0);
    tcb.microcode--;
    req.tcb_version = snp_tcb_encode(&tcb, SNP_PRODUCT_TURIN);
    assert_int_equal(derive(c, &req, k1), 0);
    assert_memory_not_equal(k0, k1, 32);
    req = all;
    req.launch_mit_vector = 0x1;
    assert_int_equal(derive(c, &req, k1), 0);
    assert_memory_not_equal(k0, k1, 32);
    req = all;
    req.vmpl = 1;
    assert_int_equal(derive(c, &req, k1), 0);
    assert_memory_not_equal(k0, k1, 32);
    req = all;
    req.root_key_select = SNP_KEY_ROOT_VMRK;
    assert_int_equal(derive(c, &req, k1), 0);
    assert_memory_not_equal(k0, k1, 32);
    req = all;
    req.guest_field_select = 0x3F;
    assert_int_equal(derive(c, &req, k1), 0);
    assert_memory_not_equal(k0, k1, 32);

    /* Unselected fields have no effect. */
    req = all;
    req.guest_field_select = SNP_GFS_MEASUREMENT;
    assert_int_equal(derive(c, &req, k1), 0);
    l->policy ^= SNP_POLICY_DEBUG;
    l->image_id[0] ^= 1;
    l->family_id[0] ^= 1;
    req.guest_svn = 0;
    req.tcb_version = 0;
    req.launch_mit_vector = 0;
    assert_int_equal(derive(c, &req, k2), 0);
    assert_memory_equal(k1, k2, 32);
    l->measurement[0] ^= 1;
    assert_int_equal(derive(c, &req, k2), 0);
    assert_memory_not_equal(k1, k2, 32);
    sim_chip_free(TAKE_PTR(c));

    /* The same key after reloading the chip (it is a sealing key). */
    assert_int_equal(sim_chip_load(dirs[SNP_PRODUCT_TURIN], &c), 0);
    l = sim_chip_launch(c);
    assert_int_equal(derive(c, &all, k1), 0);
    assert_memory_equal(k0, k1, 32);

    /* Invalid requests, each with its error; the output is not touched. */
    req = all;
    req.root_key_select = 2;
    assert_int_equal(derive(c, &req, k1), -EINVAL);
    req = all;
    req.guest_field_select = 1ull << 7;
    assert_int_equal(derive(c, &req, k1), -EINVAL);
    req = all;
    req.vmpl = 4;
    assert_int_equal(derive(c, &req, k1), -EINVAL);
    req = all;
    req.guest_svn = 6;
    assert_int_equal(derive(c, &req, k1), -ERANGE);
    req = all;
    tcb.microcode += 2;
    req.tcb_version = snp_tcb_encode(&tcb, SNP_PRODUCT_TURIN);
    assert_int_equal(derive(c, &req, k1), -EOVERFLOW);
    req = all;
    req.tcb_version |= 0x0000FF0000000000ull;
    assert_int_equal(derive(c, &req, k1), -EINVAL);
    req = all;
    req.launch_mit_vector = 0x40;
    assert_int_equal(derive(c, &req, k1), -ERANGE);
    l->vmpl = 2;
    req = all;
    req.vmpl = 1;
    assert_int_equal(derive(c, &req, k1), -EPERM);
    assert_memory_equal(k0, k1, 32);
    sim_chip_free(TAKE_PTR(c));

    /* Bit 6 is reserved before report version 5. */
    assert_int_equal(sim_chip_load(dirs[SNP_PRODUCT_GENOA], &c), 0);
    sim_chip_launch(c)->version = 3;
    req = (SnpDerivedKeyRequest){.guest_field_select = SNP_GFS_LAUNCH_MIT_VECTOR};
    assert_int_equal(derive(c, &req, k1), -EINVAL);
    req.guest_field_select = SNP_GFS_MEASUREMENT;
    assert_int_equal(derive(c, &req, k1), 0);
}

static bool contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m) {
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return true;
    return false;
}

static void test_secrets_stay_secret(void **state) {
    const char *dir = dirs[SNP_PRODUCT_MILAN];
    _cleanup_(sim_chip_freep) SimChip *c = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *k = NULL;
    _cleanup_(BN_clear_freep) BIGNUM *priv = NULL;
    _cleanup_(json_decrefp) json_t *o = NULL;
    _cleanup_free_ char *text = NULL;
    _cleanup_free_ uint8_t *root = NULL, *vmrk = NULL, *chip_json = NULL;
    uint8_t privbin[48], rep[SNP_REPORT_SIZE], data[64] = {0};
    size_t n = 0, chip_json_len = 0;
    char path[400];
    struct stat st;
    FILE *f;

    snprintf(path, sizeof path, "%s/secrets/vcek.key", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    f = fopen(path, "re");
    assert_non_null(f);
    k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(k);
    assert_int_equal(EVP_PKEY_get_bn_param(k, OSSL_PKEY_PARAM_PRIV_KEY, &priv), 1);
    assert_int_equal(BN_bn2binpad(priv, privbin, 48), 48);
    snprintf(path, sizeof path, "%s/secrets/vcek-root.bin", dir);
    assert_int_equal(read_full_file(path, 4096, &root, &n), 0);
    assert_int_equal(n, 64);
    snprintf(path, sizeof path, "%s/secrets/vmrk.bin", dir);
    assert_int_equal(read_full_file(path, 4096, &vmrk, &n), 0);
    assert_int_equal(n, 64);
    snprintf(path, sizeof path, "%s/secrets", dir);
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);

    assert_int_equal(sim_chip_load(dir, &c), 0);
    assert_int_equal(sim_chip_get_report(c, data, 0, rep), 0);
    for (size_t off = 0; off + 8 <= 48; off += 8) {
        assert_false(contains(rep, sizeof rep, privbin + off, 8));
        assert_false(contains(rep, sizeof rep, root + off, 8));
        assert_false(contains(rep, sizeof rep, vmrk + off, 8));
    }
    assert_int_equal(sim_chip_to_json(c, &o), 0);
    text = json_dumps(o, 0);
    assert_non_null(text);
    {
        char hex[97];
        for (size_t i = 0; i < 48; i++)
            snprintf(hex + 2 * i, 3, "%02x", privbin[i]);
        assert_null(strstr(text, hex + 32));
        for (size_t i = 0; i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", root[i]);
        assert_null(strstr(text, hex));
        for (size_t i = 0; i < 32; i++)
            snprintf(hex + 2 * i, 3, "%02x", vmrk[i]);
        assert_null(strstr(text, hex));
    }
    snprintf(path, sizeof path, "%s/chip.json", dir);
    assert_int_equal(read_full_file(path, 65536, &chip_json, &chip_json_len), 0);
    assert_null(strstr((char *)chip_json, "PRIVATE"));
}

static void test_load_and_init_errors(void **state) {
    char path[400], cmd[2048];
    SimChip *c = NULL;
    SimInitOptions o = {SNP_PRODUCT_MILAN, false, 0};

    snprintf(path, sizeof path, "%s/missing", base);
    assert_int_equal(sim_chip_load(path, &c), -ENOENT);
    assert_null(c);
    assert_int_equal(sim_chip_init(dirs[SNP_PRODUCT_GENOA], &o), -EEXIST);
    /* any non-empty directory is refused, and left as it was */
    snprintf(path, sizeof path, "%s/notes", base);
    assert_int_equal(mkdir(path, 0755), 0);
    snprintf(cmd, sizeof cmd, "echo keep > '%s/notes.txt'", path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(sim_chip_init(path, &o), -EEXIST);
    snprintf(cmd, sizeof cmd, "test \"$(ls -A '%s')\" = notes.txt", path);
    assert_int_equal(system(cmd), 0);
    o.report_version = 4;
    snprintf(path, sizeof path, "%s/v4", base);
    assert_int_equal(sim_chip_init(path, &o), -EINVAL);
    o = (SimInitOptions){(SnpProduct)7, false, 0};
    assert_int_equal(sim_chip_init(path, &o), -EINVAL);
    assert_int_equal(access(path, F_OK), -1); /* nothing was created */

    /* A corrupt chip: copy one and damage chip.json, then drop a key. */
    snprintf(path, sizeof path, "%s/corrupt", base);
    snprintf(cmd, sizeof cmd, "cp -a '%s' '%s' && sed -i 's/\"policy\"/\"p0licy\"/' '%s/chip.json'",
             dirs[SNP_PRODUCT_GENOA], path, path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(sim_chip_load(path, &c), -EBADMSG);
    snprintf(cmd, sizeof cmd, "sed -i 's/\"p0licy\"/\"policy\"/' '%s/chip.json'", path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(sim_chip_load(path, &c), 0);
    c = sim_chip_free(c);
    snprintf(cmd, sizeof cmd,
             "cp '%s/secrets/vcek.key' '%s/secrets/vcek.key.bak' && "
             "cp '%s/secrets/vlek.key' '%s/secrets/vcek.key'",
             path, path, dirs[SNP_PRODUCT_MILAN], path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(sim_chip_load(path, &c), -EBADMSG); /* key does not match its certificate */
    snprintf(cmd, sizeof cmd, "rm '%s/secrets/vcek.key'", path);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(sim_chip_load(path, &c), -EBADMSG);
    assert_null(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_report_roundtrip),
        cmocka_unit_test(test_chain_and_extensions),
        cmocka_unit_test(test_vlek),
        cmocka_unit_test(test_cert_table_vcek),
        cmocka_unit_test(test_reported_tcb_reissues_vcek),
        cmocka_unit_test(test_vmpl_and_launch),
        cmocka_unit_test(test_derived_keys),
        cmocka_unit_test(test_secrets_stay_secret),
        cmocka_unit_test(test_load_and_init_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
