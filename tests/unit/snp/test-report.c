/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for snp/report: the five real reports in tests/vectors/snp parse, decode to the
 * values recorded in their SOURCE.txt, and serialise back to identical bytes; every reserved byte,
 * bad version, bad algorithm and bad size is rejected with its specific error and leaves the
 * output untouched; TCB layouts per product; the printers show what they decode.
 * The expected values below were copied from each vector's SOURCE.txt, not from this parser.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/encoding.h"
#include "core/fileio.h"
#include "core/macro.h"
#include "snp/report.h"

typedef struct Expected {
    const char *dir;
    uint32_t version, guest_svn, vmpl;
    uint64_t policy, platform_info, current_tcb, reported_tcb, committed_tcb, launch_tcb;
    uint32_t flags;
    SnpSigningKey signing_key;
    SnpProduct product;       /* the vector's product */
    SnpProduct cpuid_product; /* _SNP_PRODUCT_INVALID on v2 */
    uint8_t fam, mod, step;
    SnpTcb reported; /* decoded for product */
    const char *measurement, *chip_id, *host_data, *report_id, *report_data_prefix;
    uint8_t cur_major, cur_minor, cur_build;
    uint64_t launch_mit, current_mit;
} Expected;

static const Expected vectors[] = {
    {
        .dir = "genoa-v3-msft-vcek",
        .version = 3,
        .guest_svn = 2,
        .vmpl = 0,
        .policy = 0x3001f,
        .platform_info = 0x27,
        .current_tcb = 0x541700000000000a,
        .reported_tcb = 0x541700000000000a,
        .committed_tcb = 0x541700000000000a,
        .launch_tcb = 0x541700000000000a,
        .flags = 0,
        .signing_key = SNP_SIGNING_KEY_VCEK,
        .product = SNP_PRODUCT_GENOA,
        .cpuid_product = SNP_PRODUCT_GENOA,
        .fam = 0x19,
        .mod = 0x11,
        .step = 0x01,
        .reported = {.bootloader = 10, .tee = 0, .snp = 23, .microcode = 84},
        .measurement = "5feee30d6d7e1a29f403d70a4198237ddfb13051a2d6976439487c609388ed7f"
                       "98189887920ab2fa0096903a0c23fca1",
        .chip_id = "b1e24a27bbc3a4d58090d8b89851dce3b8031544be249b9ac17132bb222b0276"
                   "22347ee4d0fe4f689efdfc47a68cefc686cbb448d01436506ee1e28010cab7c0",
        .host_data = "4f4448c67f3c8dfc8de8a5e37125d807dadcc41f06cf23f615dbd52eec777d10",
        .report_id = "c840e4fc01bec5121388abbf2e850c5b1d482adab7a4b06c4d93028c56599429",
        .report_data_prefix = "0000000000",
        .cur_major = 1,
        .cur_minor = 55,
        .cur_build = 40,
    },
    {
        .dir = "milan-v2-gosevguest-vcek",
        .version = 2,
        .guest_svn = 0,
        .vmpl = 0,
        .policy = 0xb0000,
        .platform_info = 0x1,
        .current_tcb = 0x4405000000000002,
        .reported_tcb = 0x4405000000000002,
        .committed_tcb = 0x4405000000000002,
        .launch_tcb = 0x4405000000000002,
        .flags = 0,
        .signing_key = SNP_SIGNING_KEY_VCEK,
        .product = SNP_PRODUCT_MILAN,
        .cpuid_product = _SNP_PRODUCT_INVALID,
        .reported = {.bootloader = 2, .tee = 0, .snp = 5, .microcode = 68},
        .measurement = "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b"
                       "6bdf8a9ece31a5a608eb0cf2e4872b01",
        .chip_id = "3ac3fe21e13fb0990eb28a802e3fb6a29483a6b0753590c951bdd3b8e5378618"
                   "4ca39e359669a2b76a1936776b564ea464cdce40c05f63c9b610c5068b006b5d",
        .host_data = "0000000000000000000000000000000000000000000000000000000000000000",
        .report_id = "8edc638e1857c555d21f6b11bda3c8b1b5a09dba4852b4c8ee7aa2f16f22cc0a",
        .report_data_prefix = "0102030405",
        .cur_major = 1,
        .cur_minor = 49,
        .cur_build = 3,
    },
    {
        .dir = "milan-v2-virtee-vcek",
        .version = 2,
        .guest_svn = 0,
        .vmpl = 0,
        .policy = 0x30000,
        .platform_info = 0x1,
        .current_tcb = 0x7308000000000003,
        .reported_tcb = 0x7308000000000003,
        .committed_tcb = 0x7308000000000003,
        .launch_tcb = 0x7308000000000003,
        .flags = 0,
        .signing_key = SNP_SIGNING_KEY_VCEK,
        .product = SNP_PRODUCT_MILAN,
        .cpuid_product = _SNP_PRODUCT_INVALID,
        .reported = {.bootloader = 3, .tee = 0, .snp = 8, .microcode = 115},
        .measurement = "7a1e5c266c0108dbc9bb94fa926951320940915d0aafb42464bd88b579ea158d"
                       "3e1a0dc39b2c60bd95b9c480cd81841f",
        .chip_id = "d49554ec717f4e5b0fe6b143bcf0405bd7ae304727edf46603f2a76aef6a3abc"
                   "15d7af38db757039029f0efacfd08e244324884738c72b082e2f87a44d541eb6",
        .host_data = "0000000000000000000000000000000000000000000000000000000000000000",
        .report_id = "92b3b47d59f0a2a10a74c5678868a80238cf593c01a82f3cffb878e904c28d5b",
        .report_data_prefix = "d447b55d19",
        .cur_major = 1,
        .cur_minor = 52,
        .cur_build = 4,
    },
    {
        .dir = "milan-v3-trustee-vlek",
        .version = 3,
        .guest_svn = 0,
        .vmpl = 1,
        .policy = 0x30000,
        .platform_info = 0x27,
        .current_tcb = 0xdc18000000000004,
        .reported_tcb = 0xd918000000000004,
        .committed_tcb = 0xdb18000000000004,
        .launch_tcb = 0xdb18000000000004,
        .flags = 0x4,
        .signing_key = SNP_SIGNING_KEY_VLEK,
        .product = SNP_PRODUCT_MILAN,
        .cpuid_product = SNP_PRODUCT_MILAN,
        .fam = 0x19,
        .mod = 0x01,
        .step = 0x01,
        .reported = {.bootloader = 4, .tee = 0, .snp = 24, .microcode = 217},
        .measurement = "8922ebbdd00ec2c541f36a6e7a82a8773a7accb451ed67bc94e740dbe92c93c4"
                       "e8c9af857f5ceeb5a493df2a570d7bf0",
        .chip_id = "0000000000000000000000000000000000000000000000000000000000000000"
                   "0000000000000000000000000000000000000000000000000000000000000000",
        .host_data = "0000000000000000000000000000000000000000000000000000000000000000",
        .report_id = "62e04fba700afd93b3a0cc0649b633ee36587fa8a8c2eb5d9b7cd7bc5f4bb057",
        .report_data_prefix = "819770b7e6",
        .cur_major = 1,
        .cur_minor = 55,
        .cur_build = 29,
    },
    {
        .dir = "turin-v5-msft-vcek",
        .version = 5,
        .guest_svn = 2,
        .vmpl = 0,
        .policy = 0x3001f,
        .platform_info = 0x65,
        .current_tcb = 0x5100000004010101,
        .reported_tcb = 0x5100000004010101,
        .committed_tcb = 0x5100000004010101,
        .launch_tcb = 0x5100000004010101,
        .flags = 0,
        .signing_key = SNP_SIGNING_KEY_VCEK,
        .product = SNP_PRODUCT_TURIN,
        .cpuid_product = SNP_PRODUCT_TURIN,
        .fam = 0x1a,
        .mod = 0x02,
        .step = 0x01,
        .reported = {.fmc = 1, .bootloader = 1, .tee = 1, .snp = 4, .microcode = 81},
        .measurement = "6d6c354511d6f7c6d7504668903dc5bdc066a048b651840d8d03fb85299ebfa1"
                       "42fccf1d1b0baca496841bdf243619d4",
        .chip_id = "59790fb1c39f35c10000000000000000000000000000000000000000000000000"
                   "000000000000000000000000000000000000000000000000000000000000000",
        .host_data = "b3452a0ed30f1010bd32740dd1610bc63296ceb0f882f2cac3a3152d651fe7e4",
        .report_id = "d2f0b13e226f7c8aee44f2fd22cac739438124864fec3e3a2249901a2f4bc9a6",
        .report_data_prefix = "0000000000",
        .cur_major = 1,
        .cur_minor = 55,
        .cur_build = 65,
        .launch_mit = 0x3f,
        .current_mit = 0x3f,
    },
};

static void load_vector(const char *dir, uint8_t out[SNP_REPORT_SIZE]) {
    const char *root = getenv("NT_VECTORS");
    char path[4096];
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len = 0;

    assert_non_null(root);
    (void)snprintf(path, sizeof path, "%s/snp/%s/report.bin", root, dir);
    assert_int_equal(read_full_file(path, 1 << 20, &buf, &len), 0);
    assert_int_equal(len, SNP_REPORT_SIZE);
    memcpy(out, buf, SNP_REPORT_SIZE);
}

static void assert_hex(const uint8_t *p, size_t n, const char *hex) {
    char buf[2 * 64 + 1];
    assert_true(n <= 64);
    hex_encode(p, n, buf);
    assert_string_equal(buf, hex);
}

static void test_vectors_parse_and_roundtrip(void **state) {
    for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
        uint8_t buf[SNP_REPORT_SIZE], out[SNP_REPORT_SIZE];
        SnpReport r;
        const char *err = "untouched";

        load_vector(vectors[i].dir, buf);
        assert_int_equal(snp_report_parse(buf, sizeof buf, &r, &err), 0);
        assert_string_equal(err, "untouched"); /* error pointer written only on failure */
        memset(out, 0xAA, sizeof out);
        snp_report_serialize(&r, out);
        assert_memory_equal(buf, out, SNP_REPORT_SIZE);
    }
}

static void test_vectors_fields(void **state) {
    for (size_t i = 0; i < ELEMENTSOF(vectors); i++) {
        const Expected *e = vectors + i;
        uint8_t buf[SNP_REPORT_SIZE];
        SnpReport r;
        SnpTcb t;
        char prefix[11];

        load_vector(e->dir, buf);
        assert_int_equal(snp_report_parse(buf, sizeof buf, &r, NULL), 0);
        assert_int_equal(r.version, e->version);
        assert_int_equal(r.guest_svn, e->guest_svn);
        assert_int_equal(r.vmpl, e->vmpl);
        assert_int_equal(r.policy, e->policy);
        assert_int_equal(r.platform_info, e->platform_info);
        assert_int_equal(r.signature_algo, SNP_SIG_ALGO_ECDSA_P384_SHA384);
        assert_int_equal(r.current_tcb, e->current_tcb);
        assert_int_equal(r.reported_tcb, e->reported_tcb);
        assert_int_equal(r.committed_tcb, e->committed_tcb);
        assert_int_equal(r.launch_tcb, e->launch_tcb);
        assert_int_equal(r.flags, e->flags);
        assert_int_equal(snp_report_signing_key(&r), e->signing_key);
        assert_int_equal(r.cpuid_fam_id, e->fam);
        assert_int_equal(r.cpuid_mod_id, e->mod);
        assert_int_equal(r.cpuid_step, e->step);
        assert_int_equal(snp_product_from_cpuid(r.cpuid_fam_id, r.cpuid_mod_id), e->cpuid_product);
        assert_hex(r.measurement, sizeof r.measurement, e->measurement);
        assert_hex(r.chip_id, sizeof r.chip_id, e->chip_id);
        assert_hex(r.host_data, sizeof r.host_data, e->host_data);
        assert_hex(r.report_id, sizeof r.report_id, e->report_id);
        hex_encode(r.report_data, 5, prefix);
        assert_string_equal(prefix, e->report_data_prefix);
        for (size_t k = 0; k < sizeof r.report_id_ma; k++)
            assert_int_equal(r.report_id_ma[k], 0xff);
        assert_int_equal(r.current_major, e->cur_major);
        assert_int_equal(r.current_minor, e->cur_minor);
        assert_int_equal(r.current_build, e->cur_build);
        assert_int_equal(r.committed_major, e->cur_major);
        assert_int_equal(r.committed_minor, e->cur_minor);
        assert_int_equal(r.committed_build, e->cur_build);
        assert_int_equal(r.launch_mit_vector, e->launch_mit);
        assert_int_equal(r.current_mit_vector, e->current_mit);

        assert_int_equal(snp_tcb_decode(r.reported_tcb, e->product, &t), 0);
        assert_int_equal(t.fmc, e->reported.fmc);
        assert_int_equal(t.bootloader, e->reported.bootloader);
        assert_int_equal(t.tee, e->reported.tee);
        assert_int_equal(t.snp, e->reported.snp);
        assert_int_equal(t.microcode, e->reported.microcode);
        assert_int_equal(snp_tcb_encode(&t, e->product), r.reported_tcb);
    }
}

/* The must-be-zero ranges, written out independently of the parser's own table. */
typedef struct Range {
    size_t first, last;
    uint32_t only_before_version; /* 0: reserved in every version */
    const char *error;
} Range;

static const Range ranges[] = {
    {0x04C, 0x04F, 0, "reserved 0x04C..0x04F"},
    {0x188, 0x18A, 3, "cpuid bytes 0x188..0x18A on a version 2 report"},
    {0x18B, 0x19F, 0, "reserved 0x18B..0x19F"},
    {0x1EB, 0x1EB, 0, "reserved 0x1EB"},
    {0x1EF, 0x1EF, 0, "reserved 0x1EF"},
    {0x1F8, 0x207, 5, "mitigation vectors 0x1F8..0x207 on a report older than v5"},
    {0x208, 0x29F, 0, "reserved 0x208..0x29F"},
    {0x2D0, 0x2E7, 0, "signature r padding 0x2D0..0x2E7"},
    {0x318, 0x32F, 0, "signature s padding 0x318..0x32F"},
    {0x330, 0x49F, 0, "signature reserved 0x330..0x49F"},
};

static void assert_rejected(const uint8_t *buf, size_t len, int expected_r,
                            const char *expected_error) {
    SnpReport r, sentinel;
    const char *err = NULL;

    memset(&r, 0x5A, sizeof r);
    memcpy(&sentinel, &r, sizeof r);
    assert_int_equal(snp_report_parse(buf, len, &r, &err), expected_r);
    assert_non_null(err);
    if (expected_error)
        assert_string_equal(err, expected_error);
    assert_memory_equal(&r, &sentinel, sizeof r); /* nothing written on failure */
}

static void test_reserved_bytes(void **state) {
    for (size_t v = 0; v < ELEMENTSOF(vectors); v++) {
        uint8_t buf[SNP_REPORT_SIZE];
        load_vector(vectors[v].dir, buf);
        for (size_t i = 0; i < ELEMENTSOF(ranges); i++) {
            if (ranges[i].only_before_version != 0 &&
                vectors[v].version >= ranges[i].only_before_version)
                continue;
            /* Every byte of the range, one at a time, with a single low bit and a high bit. */
            for (size_t off = ranges[i].first; off <= ranges[i].last; off++) {
                static const uint8_t pats[] = {0x01, 0x80};
                for (size_t p = 0; p < ELEMENTSOF(pats); p++) {
                    uint8_t saved = buf[off];
                    assert_int_equal(saved, 0);
                    buf[off] = pats[p];
                    assert_rejected(buf, sizeof buf, -EBADMSG, ranges[i].error);
                    buf[off] = saved;
                }
            }
        }
        /* And the untouched vector still parses: the loop restored every byte. */
        SnpReport r;
        assert_int_equal(snp_report_parse(buf, sizeof buf, &r, NULL), 0);
    }
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void test_versions(void **state) {
    static const uint32_t bad[] = {0, 1, 4, 6, 0x100, 0xFFFFFFFF};
    uint8_t buf[SNP_REPORT_SIZE];
    load_vector("turin-v5-msft-vcek", buf);
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        put32(buf, bad[i]);
        assert_rejected(buf, sizeof buf, -EPROTONOSUPPORT, NULL);
    }
    /* A v5 report relabelled v3 still has mitigation vectors: that is not a valid v3 report. */
    put32(buf, 3);
    assert_rejected(buf, sizeof buf, -EBADMSG,
                    "mitigation vectors 0x1F8..0x207 on a report older than v5");
    /* A v3 report relabelled v2 still has CPUID bytes. */
    load_vector("genoa-v3-msft-vcek", buf);
    put32(buf, 2);
    assert_rejected(buf, sizeof buf, -EBADMSG, "cpuid bytes 0x188..0x18A on a version 2 report");
}

static void test_signature_algo(void **state) {
    static const uint32_t bad[] = {0, 2, 0xFFFFFFFF};
    uint8_t buf[SNP_REPORT_SIZE];
    load_vector("milan-v3-trustee-vlek", buf);
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        put32(buf + 0x34, bad[i]);
        assert_rejected(buf, sizeof buf, -EOPNOTSUPP, NULL);
    }
}

static void test_sizes(void **state) {
    uint8_t buf[SNP_REPORT_SIZE + 1];
    load_vector("milan-v2-virtee-vcek", buf);
    buf[SNP_REPORT_SIZE] = 0;
    assert_rejected(buf, 0, -EMSGSIZE, NULL);
    assert_rejected(buf, 1, -EMSGSIZE, NULL);
    assert_rejected(buf, SNP_REPORT_SIZE - 1, -EMSGSIZE, NULL);
    assert_rejected(buf, SNP_REPORT_SIZE + 1, -EMSGSIZE, NULL);
    assert_rejected(NULL, SNP_REPORT_SIZE, -EMSGSIZE, NULL);
}

static void test_field_constraints(void **state) {
    uint8_t orig[SNP_REPORT_SIZE], buf[SNP_REPORT_SIZE];
    load_vector("genoa-v3-msft-vcek", orig);

    /* policy: bit 17 must be one, bits 26..63 zero. */
    memcpy(buf, orig, sizeof buf);
    put64(buf + 0x08, 0x1001f);
    assert_rejected(buf, sizeof buf, -EBADMSG, "policy bit 17 is clear (must be 1)");
    put64(buf + 0x08, 0x3001f | (1ull << 26));
    assert_rejected(buf, sizeof buf, -EBADMSG, "policy reserved bits 26..63");
    put64(buf + 0x08, 0x3001f | (1ull << 63));
    assert_rejected(buf, sizeof buf, -EBADMSG, "policy reserved bits 26..63");
    /* every defined policy bit is accepted */
    put64(buf + 0x08, 0x3FFFFFF);
    SnpReport r;
    assert_int_equal(snp_report_parse(buf, sizeof buf, &r, NULL), 0);
    assert_int_equal(r.policy, 0x3FFFFFF);

    /* flags: bits 5..31 reserved; signing key 2..6 reserved. */
    memcpy(buf, orig, sizeof buf);
    for (int bit = 5; bit < 32; bit++) {
        put32(buf + 0x48, 1u << bit);
        assert_rejected(buf, sizeof buf, -EBADMSG, "flags reserved bits 5..31");
    }
    for (uint32_t k = 2; k <= 6; k++) {
        put32(buf + 0x48, k << 2);
        assert_rejected(buf, sizeof buf, -EBADMSG, "flags signing_key is a reserved value (2..6)");
    }
    put32(buf + 0x48, (7u << 2) | 3u);
    assert_int_equal(snp_report_parse(buf, sizeof buf, &r, NULL), 0);
    assert_int_equal(snp_report_signing_key(&r), SNP_SIGNING_KEY_NONE);
    assert_true(r.flags & SNP_FLAG_AUTHOR_KEY_EN);
    assert_true(r.flags & SNP_FLAG_MASK_CHIP_KEY);

    /* vmpl 0..3 */
    memcpy(buf, orig, sizeof buf);
    put32(buf + 0x30, 3);
    assert_int_equal(snp_report_parse(buf, sizeof buf, &r, NULL), 0);
    put32(buf + 0x30, 4);
    assert_rejected(buf, sizeof buf, -EBADMSG, "vmpl greater than 3");

    /* platform_info unknown bits are reported, not rejected (documented choice). */
    memcpy(buf, orig, sizeof buf);
    put64(buf + 0x40, 0x27 | (1ull << 40));
    assert_int_equal(snp_report_parse(buf, sizeof buf, &r, NULL), 0);
    assert_int_equal(r.platform_info, 0x27 | (1ull << 40));
}

static void test_serialize_versions(void **state) {
    uint8_t buf[SNP_REPORT_SIZE], out[SNP_REPORT_SIZE], out2[SNP_REPORT_SIZE];
    SnpReport r, back;

    /* A v2 report never carries CPUID or mitigation vectors, whatever the struct says. */
    load_vector("milan-v2-virtee-vcek", buf);
    assert_int_equal(snp_report_parse(buf, sizeof buf, &r, NULL), 0);
    r.cpuid_fam_id = 0x19;
    r.launch_mit_vector = 7;
    snp_report_serialize(&r, out);
    assert_memory_equal(out, buf, SNP_REPORT_SIZE);

    /* Turning it into a v5 report writes them, and they parse back. */
    r.version = 5;
    r.cpuid_fam_id = 0x19;
    r.cpuid_mod_id = 0x01;
    r.cpuid_step = 0x01;
    r.launch_mit_vector = 0x11;
    r.current_mit_vector = 0x22;
    r.measurement[0] ^= 0xFF;
    snp_report_serialize(&r, out);
    assert_int_equal(out[0x188], 0x19);
    assert_int_equal(out[0x1F8], 0x11);
    assert_int_equal(out[0x200], 0x22);
    assert_int_equal(out[0x90], buf[0x90] ^ 0xFF);
    assert_int_equal(snp_report_parse(out, sizeof out, &back, NULL), 0);
    snp_report_serialize(&back, out2);
    assert_memory_equal(out, out2, SNP_REPORT_SIZE);
    assert_int_equal(back.launch_mit_vector, 0x11);
    assert_int_equal(back.current_mit_vector, 0x22);
    assert_int_equal(snp_product_from_cpuid(back.cpuid_fam_id, back.cpuid_mod_id),
                     SNP_PRODUCT_MILAN);
}

static void test_tcb_layouts(void **state) {
    const SnpTcb t = {.fmc = 1, .bootloader = 2, .tee = 3, .snp = 4, .microcode = 5};
    SnpTcb d;

    /* Turin: [0] FMC [1] BL [2] TEE [3] SNP [7] ucode */
    assert_int_equal(snp_tcb_encode(&t, SNP_PRODUCT_TURIN), 0x0500000004030201ull);
    /* Milan/Genoa: [0] BL [1] TEE [6] SNP [7] ucode; FMC does not exist */
    assert_int_equal(snp_tcb_encode(&t, SNP_PRODUCT_MILAN), 0x0504000000000302ull);
    assert_int_equal(snp_tcb_encode(&t, SNP_PRODUCT_GENOA), 0x0504000000000302ull);

    assert_int_equal(snp_tcb_decode(0x0500000004030201ull, SNP_PRODUCT_TURIN, &d), 0);
    assert_memory_equal(&d, &t, sizeof d);
    assert_int_equal(snp_tcb_decode(0x0504000000000302ull, SNP_PRODUCT_MILAN, &d), 0);
    assert_int_equal(d.fmc, 0);
    assert_int_equal(d.bootloader, 2);
    assert_int_equal(d.tee, 3);
    assert_int_equal(d.snp, 4);
    assert_int_equal(d.microcode, 5);

    /* Bytes that are reserved in a layout are rejected, and *ret is untouched. */
    for (int b = 2; b <= 5; b++) {
        memset(&d, 0x77, sizeof d);
        assert_int_equal(snp_tcb_decode(1ull << (8 * b), SNP_PRODUCT_MILAN, &d), -EBADMSG);
        assert_int_equal(d.bootloader, 0x77);
    }
    for (int b = 4; b <= 6; b++)
        assert_int_equal(snp_tcb_decode(1ull << (8 * b), SNP_PRODUCT_TURIN, &d), -EBADMSG);
    /* The real Turin TCB is not a valid Milan TCB, nor the Milan one a valid Turin TCB. */
    assert_int_equal(snp_tcb_decode(0x5100000004010101ull, SNP_PRODUCT_MILAN, &d), -EBADMSG);
    assert_int_equal(snp_tcb_decode(0x7308000000000003ull, SNP_PRODUCT_TURIN, &d), -EBADMSG);
    assert_int_equal(snp_tcb_decode(0, _SNP_PRODUCT_INVALID, &d), -EINVAL);
    assert_int_equal(snp_tcb_decode(0, _SNP_PRODUCT_MAX, &d), -EINVAL);

    /* Round trips over every value of each component position. */
    for (unsigned v = 0; v < 256; v++) {
        SnpTcb x = {.fmc = (uint8_t)v,
                    .bootloader = (uint8_t)(v ^ 0x5a),
                    .tee = (uint8_t)(255 - v),
                    .snp = (uint8_t)(v * 7),
                    .microcode = (uint8_t)v};
        assert_int_equal(
            snp_tcb_decode(snp_tcb_encode(&x, SNP_PRODUCT_TURIN), SNP_PRODUCT_TURIN, &d), 0);
        assert_memory_equal(&d, &x, sizeof d);
        x.fmc = 0;
        assert_int_equal(
            snp_tcb_decode(snp_tcb_encode(&x, SNP_PRODUCT_GENOA), SNP_PRODUCT_GENOA, &d), 0);
        assert_memory_equal(&d, &x, sizeof d);
    }
}

static void test_tcb_ge(void **state) {
    const SnpTcb base = {.fmc = 3, .bootloader = 3, .tee = 3, .snp = 3, .microcode = 3};
    SnpTcb a = base;

    assert_true(snp_tcb_ge(&a, &base, SNP_PRODUCT_TURIN));
    assert_true(snp_tcb_ge(&a, &base, SNP_PRODUCT_MILAN));
    /* Higher everywhere */
    a = (SnpTcb){4, 4, 4, 4, 4};
    assert_true(snp_tcb_ge(&a, &base, SNP_PRODUCT_TURIN));
    assert_false(snp_tcb_ge(&base, &a, SNP_PRODUCT_TURIN));
    /* Higher in one, lower in another: neither is >= (the u64 order would say otherwise). */
    a = base;
    a.microcode = 200;
    a.bootloader = 2;
    assert_false(snp_tcb_ge(&a, &base, SNP_PRODUCT_MILAN));
    assert_false(snp_tcb_ge(&base, &a, SNP_PRODUCT_MILAN));
    assert_true(snp_tcb_encode(&a, SNP_PRODUCT_MILAN) > snp_tcb_encode(&base, SNP_PRODUCT_MILAN));
    a = base;
    a.snp = 9;
    a.tee = 0;
    assert_false(snp_tcb_ge(&a, &base, SNP_PRODUCT_GENOA));
    /* FMC counts on Turin only. */
    a = base;
    a.fmc = 0;
    assert_false(snp_tcb_ge(&a, &base, SNP_PRODUCT_TURIN));
    assert_true(snp_tcb_ge(&a, &base, SNP_PRODUCT_MILAN));
}

static void test_products(void **state) {
    assert_int_equal(snp_product_from_cpuid(0x19, 0x01), SNP_PRODUCT_MILAN);
    assert_int_equal(snp_product_from_cpuid(0x19, 0x00), SNP_PRODUCT_MILAN);
    assert_int_equal(snp_product_from_cpuid(0x19, 0x0F), SNP_PRODUCT_MILAN);
    assert_int_equal(snp_product_from_cpuid(0x19, 0x10), SNP_PRODUCT_GENOA);
    assert_int_equal(snp_product_from_cpuid(0x19, 0x11), SNP_PRODUCT_GENOA);
    assert_int_equal(snp_product_from_cpuid(0x19, 0xA0), SNP_PRODUCT_GENOA);
    assert_int_equal(snp_product_from_cpuid(0x19, 0xAF), SNP_PRODUCT_GENOA);
    assert_int_equal(snp_product_from_cpuid(0x19, 0x21), _SNP_PRODUCT_INVALID); /* desktop */
    assert_int_equal(snp_product_from_cpuid(0x19, 0xB0), _SNP_PRODUCT_INVALID);
    assert_int_equal(snp_product_from_cpuid(0x1A, 0x02), SNP_PRODUCT_TURIN);
    assert_int_equal(snp_product_from_cpuid(0x1A, 0x11), SNP_PRODUCT_TURIN);
    assert_int_equal(snp_product_from_cpuid(0x1A, 0x44), _SNP_PRODUCT_INVALID);
    assert_int_equal(snp_product_from_cpuid(0x17, 0x31), _SNP_PRODUCT_INVALID);
    assert_int_equal(snp_product_from_cpuid(0, 0), _SNP_PRODUCT_INVALID);

    assert_string_equal(snp_product_to_string(SNP_PRODUCT_MILAN), "Milan");
    assert_string_equal(snp_product_to_string(SNP_PRODUCT_GENOA), "Genoa");
    assert_string_equal(snp_product_to_string(SNP_PRODUCT_TURIN), "Turin");
    assert_null(snp_product_to_string(_SNP_PRODUCT_INVALID));
    assert_null(snp_product_to_string(_SNP_PRODUCT_MAX));
    assert_int_equal(snp_product_from_string("milan"), SNP_PRODUCT_MILAN);
    assert_int_equal(snp_product_from_string("Milan-B0"), SNP_PRODUCT_MILAN);
    assert_int_equal(snp_product_from_string("GENOA"), SNP_PRODUCT_GENOA);
    assert_int_equal(snp_product_from_string("Turin"), SNP_PRODUCT_TURIN);
    assert_int_equal(snp_product_from_string("Milano"), _SNP_PRODUCT_INVALID);
    assert_int_equal(snp_product_from_string("Mil"), _SNP_PRODUCT_INVALID);
    assert_int_equal(snp_product_from_string(""), _SNP_PRODUCT_INVALID);
    assert_int_equal(snp_product_from_string(NULL), _SNP_PRODUCT_INVALID);
}

static char *print_to_string(const SnpReport *r, SnpProduct p) {
    char *s = NULL;
    size_t n = 0;
    FILE *f = open_memstream(&s, &n);
    assert_non_null(f);
    snp_report_print(r, p, f);
    assert_int_equal(fclose(f), 0);
    return s;
}

static void parse_vector(const char *dir, SnpReport *r) {
    uint8_t buf[SNP_REPORT_SIZE];
    load_vector(dir, buf);
    assert_int_equal(snp_report_parse(buf, sizeof buf, r, NULL), 0);
}

/* True if some line of s has label, then only spaces, then value up to the end of the line or a
 * space. The printers align columns; the tests should not depend on the padding. */
static bool has_field(const char *s, const char *label, const char *value) {
    size_t ll = strlen(label), vl = strlen(value);
    for (const char *p = strstr(s, label); p; p = strstr(p + 1, label)) {
        const char *q = p + ll;
        while (*q == ' ')
            q++;
        if (strncmp(q, value, vl) == 0 && (q[vl] == '\n' || q[vl] == ' '))
            return true;
    }
    return false;
}

static void test_print(void **state) {
    SnpReport r;
    _cleanup_free_ char *turin = NULL, *v2 = NULL, *v2m = NULL, *vlek = NULL;

    parse_vector("turin-v5-msft-vcek", &r);
    turin = print_to_string(&r, _SNP_PRODUCT_INVALID);
    assert_non_null(strstr(turin, "Turin (from CPUID)"));
    assert_non_null(strstr(turin, vectors[4].measurement));
    assert_true(has_field(turin, "FMC:", "1"));
    assert_true(has_field(turin, "Microcode:", "81"));
    assert_true(has_field(turin, "Launch mitigation vector:", "0x000000000000003f"));
    assert_true(has_field(turin, "Alias check complete:", "yes"));
    assert_true(has_field(turin, "Current firmware:", "1.55.65"));
    assert_true(has_field(turin, "TSME enabled:", "no"));
    assert_null(strstr(turin, "Unknown bits:"));
    r.platform_info |= 1ull << 40;
    _cleanup_free_ char *unknown = print_to_string(&r, _SNP_PRODUCT_INVALID);
    assert_true(has_field(unknown, "Unknown bits:", "0x0000010000000000"));

    parse_vector("milan-v2-gosevguest-vcek", &r);
    v2 = print_to_string(&r, _SNP_PRODUCT_INVALID);
    assert_true(has_field(v2, "Product:", "unknown"));
    assert_non_null(strstr(v2, "0x4405000000000002 (product unknown"));
    assert_null(strstr(v2, "Bootloader:")); /* no guessed decoding */
    assert_true(has_field(v2, "Debug allowed:", "yes"));
    v2m = print_to_string(&r, SNP_PRODUCT_MILAN);
    assert_non_null(strstr(v2m, "Milan (from --product)"));
    assert_true(has_field(v2m, "Microcode:", "68"));
    assert_null(strstr(v2m, "FMC:"));

    parse_vector("milan-v3-trustee-vlek", &r);
    vlek = print_to_string(&r, _SNP_PRODUCT_INVALID);
    assert_true(has_field(vlek, "Signing key:", "VLEK"));
    assert_true(has_field(vlek, "VMPL:", "1"));
    assert_true(has_field(vlek, "Microcode:", "217"));
}

static void test_json(void **state) {
    SnpReport r;
    json_auto_t *j = NULL, *j2 = NULL, *j3 = NULL;

    parse_vector("turin-v5-msft-vcek", &r);
    j = snp_report_to_json(&r, _SNP_PRODUCT_INVALID);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "product")), "Turin");
    assert_string_equal(json_string_value(json_object_get(j, "measurement")),
                        vectors[4].measurement);
    json_t *tcb = json_object_get(j, "reported_tcb");
    assert_string_equal(json_string_value(json_object_get(tcb, "raw")), "0x5100000004010101");
    assert_int_equal(json_integer_value(json_object_get(tcb, "fmc")), 1);
    assert_int_equal(json_integer_value(json_object_get(tcb, "snp")), 4);
    assert_int_equal(json_integer_value(json_object_get(tcb, "microcode")), 81);
    assert_string_equal(json_string_value(json_object_get(j, "launch_mit_vector")),
                        "0x000000000000003f");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "cpuid"), "family")),
                     0x1a);
    assert_true(json_is_true(json_object_get(json_object_get(j, "policy"), "smt_allowed")));
    assert_int_equal(json_integer_value(json_object_get(json_object_get(j, "policy"), "abi_minor")),
                     0x1f);
    assert_string_equal(json_string_value(json_object_get(j, "current_version")), "1.55.65");
    /* PLATFORM_INFO 0x65 (SOURCE.txt): bits 0, 2, 5, 6 */
    json_t *pi = json_object_get(j, "platform_info");
    assert_string_equal(json_string_value(json_object_get(pi, "raw")), "0x0000000000000065");
    assert_true(json_is_true(json_object_get(pi, "smt_enabled")));
    assert_true(json_is_false(json_object_get(pi, "tsme_enabled")));
    assert_true(json_is_true(json_object_get(pi, "ecc_enabled")));
    assert_true(json_is_false(json_object_get(pi, "rapl_disabled")));
    assert_true(json_is_false(json_object_get(pi, "ciphertext_hiding_enabled")));
    assert_true(json_is_true(json_object_get(pi, "alias_check_complete")));
    assert_true(json_is_true(json_object_get(pi, "iommu_write_safe")));
    assert_true(json_is_false(json_object_get(pi, "tio_enabled")));
    json_t *sig = json_object_get(j, "signature");
    assert_int_equal(strlen(json_string_value(json_object_get(sig, "r"))), 96);

    parse_vector("milan-v2-virtee-vcek", &r);
    j2 = snp_report_to_json(&r, _SNP_PRODUCT_INVALID);
    assert_non_null(j2);
    assert_true(json_is_null(json_object_get(j2, "product")));
    assert_null(json_object_get(j2, "cpuid"));
    assert_null(json_object_get(j2, "launch_mit_vector"));
    tcb = json_object_get(j2, "reported_tcb");
    assert_int_equal(json_object_size(tcb), 1); /* raw only */
    j3 = snp_report_to_json(&r, SNP_PRODUCT_MILAN);
    tcb = json_object_get(j3, "reported_tcb");
    assert_int_equal(json_integer_value(json_object_get(tcb, "microcode")), 115);
    assert_null(json_object_get(tcb, "fmc"));
    assert_string_equal(json_string_value(json_object_get(j3, "product_source")), "option");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(j3, "flags"), "signing_key")), "VCEK");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vectors_parse_and_roundtrip),
        cmocka_unit_test(test_vectors_fields),
        cmocka_unit_test(test_reserved_bytes),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_signature_algo),
        cmocka_unit_test(test_sizes),
        cmocka_unit_test(test_field_constraints),
        cmocka_unit_test(test_serialize_versions),
        cmocka_unit_test(test_tcb_layouts),
        cmocka_unit_test(test_tcb_ge),
        cmocka_unit_test(test_products),
        cmocka_unit_test(test_print),
        cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
