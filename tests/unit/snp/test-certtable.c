/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for snp/certtable: build/parse round trips with the real AMD certificates from
 * tests/vectors/snp, the GUID byte order, and every hostile table shape the parser must refuse
 * (each with its specific error and with the output left untouched).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "core/alloc.h"
#include "core/macro.h"
#include "core/openssl-util.h"
#include "snp/certtable.h"

#define ENTRY 24u

typedef struct Der {
    uint8_t *p;
    size_t n;
} Der;

/* Reads a PEM or DER certificate from the vectors and returns its DER encoding. */
static Der load_cert(const char *dir, const char *file) {
    const char *root = getenv("NT_VECTORS");
    char path[4096];
    _cleanup_(BIO_free_allp) BIO *b = NULL;
    _cleanup_(X509_freep) X509 *x = NULL;
    unsigned char *der = NULL;
    int n;

    assert_non_null(root);
    (void)snprintf(path, sizeof path, "%s/snp/%s/%s", root, dir, file);
    b = BIO_new_file(path, "rb");
    assert_non_null(b);
    if (strstr(file, ".pem"))
        x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    else
        x = d2i_X509_bio(b, NULL);
    assert_non_null(x);
    n = i2d_X509(x, &der);
    assert_true(n > 0);
    return (Der){der, (size_t)n};
}

static void der_free(Der *d) {
    OPENSSL_free(d->p);
}

static void put32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void assert_parse_fails(const uint8_t *buf, size_t len, int expected) {
    SnpCertTable t;
    memset(&t, 0x5A, sizeof t);
    size_t sentinel = t.n_entries;
    assert_int_equal(snp_cert_table_parse(buf, len, &t), expected);
    assert_int_equal(t.n_entries, sentinel); /* untouched */
}

static void test_roundtrip_vectors(void **state) {
    static const struct {
        const char *dir, *leaf;
        SnpCertKind leaf_kind;
        const char *mid;
    } sets[] = {
        {"genoa-v3-msft-vcek", "vcek.pem", SNP_CERT_VCEK, "ask.pem"},
        {"milan-v2-virtee-vcek", "vcek.der", SNP_CERT_VCEK, "ask.pem"},
        {"turin-v5-msft-vcek", "vcek.pem", SNP_CERT_VCEK, "ask.pem"},
        {"milan-v3-trustee-vlek", "vlek.der", SNP_CERT_VLEK, "asvk.pem"},
    };
    for (size_t s = 0; s < ELEMENTSOF(sets); s++) {
        Der leaf = load_cert(sets[s].dir, sets[s].leaf), mid = load_cert(sets[s].dir, sets[s].mid),
            ark = load_cert(sets[s].dir, "ark.pem");
        const SnpCertKind kinds[] = {sets[s].leaf_kind, SNP_CERT_ASK, SNP_CERT_ARK};
        const uint8_t *ders[] = {leaf.p, mid.p, ark.p};
        const size_t lens[] = {leaf.n, mid.n, ark.n};
        _cleanup_free_ uint8_t *tab = NULL;
        size_t tab_len = 0;
        SnpCertTable t;

        assert_int_equal(snp_cert_table_build(kinds, ders, lens, 3, &tab, &tab_len), 0);
        assert_int_equal(tab_len, 4 * ENTRY + leaf.n + mid.n + ark.n);
        assert_int_equal(snp_cert_table_parse(tab, tab_len, &t), 0);
        assert_int_equal(t.n_entries, 3);
        for (size_t i = 0; i < 3; i++) {
            assert_int_equal(t.entries[i].kind, kinds[i]);
            assert_int_equal(t.entries[i].der_len, lens[i]);
            assert_memory_equal(t.entries[i].der, ders[i], lens[i]);
            assert_true(t.entries[i].der >= tab && t.entries[i].der < tab + tab_len);
        }
        assert_ptr_equal(snp_cert_table_find(&t, SNP_CERT_ARK), &t.entries[2]);
        assert_ptr_equal(snp_cert_table_find(&t, sets[s].leaf_kind), &t.entries[0]);
        assert_null(snp_cert_table_find(&t, sets[s].leaf_kind == SNP_CERT_VCEK ? SNP_CERT_VLEK
                                                                               : SNP_CERT_VCEK));
        assert_null(snp_cert_table_find(&t, SNP_CERT_OTHER));

        /* The kernel hands back whole pages: zero padding after the certs is accepted. */
        _cleanup_free_ uint8_t *page = calloc(1, 4096 * 2);
        assert_true(tab_len <= 8192);
        memcpy(page, tab, tab_len);
        assert_int_equal(snp_cert_table_parse(page, 8192, &t), 0);
        assert_int_equal(t.n_entries, 3);

        der_free(&leaf);
        der_free(&mid);
        der_free(&ark);
    }
}

static void test_guid_byte_order(void **state) {
    static const uint8_t vcek_guid[16] = {0x63, 0xda, 0x75, 0x8d, 0xe6, 0x64, 0x45, 0x64,
                                          0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd};
    static const uint8_t ark_guid[16] = {0xc0, 0xb4, 0x06, 0xa4, 0xa8, 0x03, 0x49, 0x52,
                                         0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae};
    const uint8_t c1[] = {0x30, 0x01}, c2[] = {0x30, 0x02, 0x03};
    const SnpCertKind kinds[] = {SNP_CERT_VCEK, SNP_CERT_ARK};
    const uint8_t *ders[] = {c1, c2};
    const size_t lens[] = {sizeof c1, sizeof c2};
    _cleanup_free_ uint8_t *tab = NULL;
    size_t len;

    assert_int_equal(snp_cert_table_build(kinds, ders, lens, 2, &tab, &len), 0);
    assert_int_equal(len, 3 * ENTRY + 5);
    assert_memory_equal(tab, vcek_guid, 16);
    assert_memory_equal(tab + ENTRY, ark_guid, 16);
    /* offsets and lengths little-endian, from the table start */
    assert_int_equal(tab[16], 3 * ENTRY);
    assert_int_equal(tab[17] | tab[18] | tab[19], 0);
    assert_int_equal(tab[20], 2);
    assert_int_equal(tab[ENTRY + 16], 3 * ENTRY + 2);
    assert_int_equal(tab[ENTRY + 20], 3);
    for (size_t i = 2 * ENTRY; i < 3 * ENTRY; i++)
        assert_int_equal(tab[i], 0);

    assert_string_equal(snp_cert_kind_to_string(SNP_CERT_VCEK), "VCEK");
    assert_string_equal(snp_cert_kind_to_string(SNP_CERT_VLEK), "VLEK");
    assert_string_equal(snp_cert_kind_to_string(SNP_CERT_ASK), "ASK");
    assert_string_equal(snp_cert_kind_to_string(SNP_CERT_ARK), "ARK");
    assert_string_equal(snp_cert_kind_to_string(SNP_CERT_OTHER), "other");
    assert_null(snp_cert_kind_to_string(_SNP_CERT_KIND_INVALID));
}

/* A hand-made table: n entries with the given guids' first byte, offsets, lengths. */
static size_t make_table(uint8_t *buf, size_t cap, size_t n, const uint8_t *guid_first,
                         const uint32_t *offs, const uint32_t *lens) {
    memset(buf, 0, cap);
    for (size_t i = 0; i < n; i++) {
        uint8_t *e = buf + i * ENTRY;
        memset(e, 0x11, 16);
        e[0] = guid_first[i];
        put32(e + 16, offs[i]);
        put32(e + 20, lens[i]);
    }
    for (size_t i = (n + 1) * ENTRY; i < cap; i++)
        buf[i] = (uint8_t)i | 1;
    return cap;
}

static void test_hostile(void **state) {
    uint8_t buf[512] = {0};
    SnpCertTable t;
    const uint8_t g2[] = {0xAA, 0xBB}, gdup[] = {0xAA, 0xAA};
    uint32_t offs[2], lens[2];

    /* No room for a terminator at all. */
    assert_parse_fails(buf, 0, -EBADMSG);
    assert_parse_fails(NULL, 0, -EBADMSG);
    memset(buf, 0, sizeof buf);
    assert_parse_fails(buf, ENTRY - 1, -EBADMSG);
    /* Just a terminator: an empty, valid table. */
    assert_int_equal(snp_cert_table_parse(buf, ENTRY, &t), 0);
    assert_int_equal(t.n_entries, 0);

    /* A good two-entry table, then each corruption of it. */
    offs[0] = 3 * ENTRY, lens[0] = 10, offs[1] = 3 * ENTRY + 10, lens[1] = 20;
    make_table(buf, 3 * ENTRY + 30, 2, g2, offs, lens);
    assert_int_equal(snp_cert_table_parse(buf, 3 * ENTRY + 30, &t), 0);
    assert_int_equal(t.n_entries, 2);
    assert_int_equal(t.entries[0].kind, SNP_CERT_OTHER);
    assert_int_equal(t.entries[1].der_len, 20);

    /* Truncated: the last cert runs past the end. */
    assert_parse_fails(buf, 3 * ENTRY + 29, -EBADMSG);
    /* Missing terminator: the buffer ends after the entries. */
    assert_parse_fails(buf, 2 * ENTRY, -EBADMSG);
    assert_parse_fails(buf, 2 * ENTRY + 23, -EBADMSG);

    /* Terminator with a zero GUID but a non-zero offset or length. */
    buf[2 * ENTRY + 16] = 1;
    assert_parse_fails(buf, 3 * ENTRY + 30, -EBADMSG);
    buf[2 * ENTRY + 16] = 0;
    buf[2 * ENTRY + 23] = 1;
    assert_parse_fails(buf, 3 * ENTRY + 30, -EBADMSG);
    buf[2 * ENTRY + 23] = 0;

    /* Missing terminator: non-zero bytes where it should be, none later in range. */
    make_table(buf, sizeof buf, 2, g2, offs, lens);
    memset(buf + 2 * ENTRY, 0x22, sizeof buf - 2 * ENTRY);
    assert_parse_fails(buf, sizeof buf, -EBADMSG);

    /* Offset outside the buffer; offset + length outside; u32 overflow of offset + length. */
    const uint32_t bad[][2] = {
        {3 * ENTRY + 30, 1},     {3 * ENTRY + 29, 2}, {0xFFFFFFFF, 1},
        {3 * ENTRY, 0xFFFFFFFF}, {0xFFFFFFF0, 0x20},  {0x80000000, 0x80000000},
    };
    for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
        offs[0] = 3 * ENTRY, lens[0] = 10, offs[1] = bad[i][0], lens[1] = bad[i][1];
        make_table(buf, 3 * ENTRY + 30, 2, g2, offs, lens);
        assert_parse_fails(buf, 3 * ENTRY + 30, -EBADMSG);
    }

    /* A cert overlapping the entry array (including the terminator). */
    const uint32_t overlap[] = {0, 1, ENTRY, 2 * ENTRY, 3 * ENTRY - 1};
    for (size_t i = 0; i < ELEMENTSOF(overlap); i++) {
        offs[0] = 3 * ENTRY, lens[0] = 10, offs[1] = overlap[i], lens[1] = 5;
        make_table(buf, 3 * ENTRY + 30, 2, g2, offs, lens);
        assert_parse_fails(buf, 3 * ENTRY + 30, -EBADMSG);
    }

    /* Two certs overlapping each other. */
    offs[0] = 3 * ENTRY, lens[0] = 10, offs[1] = 3 * ENTRY + 9, lens[1] = 5;
    make_table(buf, 3 * ENTRY + 30, 2, g2, offs, lens);
    assert_parse_fails(buf, 3 * ENTRY + 30, -EBADMSG);
    offs[1] = 3 * ENTRY + 10; /* adjacent is fine */
    make_table(buf, 3 * ENTRY + 30, 2, g2, offs, lens);
    assert_int_equal(snp_cert_table_parse(buf, 3 * ENTRY + 30, &t), 0);

    /* Zero-length cert. */
    offs[0] = 3 * ENTRY, lens[0] = 0, offs[1] = 3 * ENTRY, lens[1] = 10;
    make_table(buf, 3 * ENTRY + 30, 2, g2, offs, lens);
    assert_parse_fails(buf, 3 * ENTRY + 30, -EBADMSG);

    /* Duplicate GUID. */
    offs[0] = 3 * ENTRY, lens[0] = 10, offs[1] = 3 * ENTRY + 10, lens[1] = 10;
    make_table(buf, 3 * ENTRY + 30, 2, gdup, offs, lens);
    assert_parse_fails(buf, 3 * ENTRY + 30, -EBADMSG);
}

static void test_entry_limit(void **state) {
    /* 64 entries parse; 65 are refused with -E2BIG whether or not a terminator follows. */
    for (size_t n = 64; n <= 66; n++) {
        size_t len = (n + 1) * ENTRY + n;
        _cleanup_free_ uint8_t *buf = calloc(1, len);
        SnpCertTable t;
        assert_non_null(buf);
        for (size_t i = 0; i < n; i++) {
            uint8_t *e = buf + i * ENTRY;
            e[0] = 0x40;
            e[1] = (uint8_t)i; /* distinct GUIDs */
            put32(e + 16, (uint32_t)((n + 1) * ENTRY + i));
            put32(e + 20, 1);
        }
        if (n == SNP_CERT_TABLE_MAX_ENTRIES) {
            assert_int_equal(snp_cert_table_parse(buf, len, &t), 0);
            assert_int_equal(t.n_entries, 64);
            assert_ptr_equal(t.entries[63].der, buf + (n + 1) * ENTRY + 63);
        } else
            assert_parse_fails(buf, len, -E2BIG);
    }
}

static void test_build_errors(void **state) {
    const uint8_t c[] = {0x30, 0x00};
    const uint8_t *ders[2] = {c, c};
    size_t lens[2] = {2, 2};
    SnpCertKind kinds[2] = {SNP_CERT_VCEK, SNP_CERT_VCEK};
    uint8_t *tab = NULL;
    size_t len = 0;

    assert_int_equal(snp_cert_table_build(kinds, ders, lens, 2, &tab, &len), -EINVAL);
    kinds[1] = SNP_CERT_OTHER;
    assert_int_equal(snp_cert_table_build(kinds, ders, lens, 2, &tab, &len), -EINVAL);
    kinds[1] = _SNP_CERT_KIND_INVALID;
    assert_int_equal(snp_cert_table_build(kinds, ders, lens, 2, &tab, &len), -EINVAL);
    kinds[1] = SNP_CERT_ASK;
    lens[1] = 0;
    assert_int_equal(snp_cert_table_build(kinds, ders, lens, 2, &tab, &len), -EINVAL);
    lens[1] = 2;
    ders[1] = NULL;
    assert_int_equal(snp_cert_table_build(kinds, ders, lens, 2, &tab, &len), -EINVAL);
    ders[1] = c;
    lens[1] = (size_t)UINT32_MAX;
    assert_int_equal(snp_cert_table_build(kinds, ders, lens, 2, &tab, &len), -EOVERFLOW);
    lens[1] = 2;
    assert_int_equal(
        snp_cert_table_build(kinds, ders, lens, SNP_CERT_TABLE_MAX_ENTRIES + 1, &tab, &len),
        -E2BIG);
    assert_null(tab);
    assert_int_equal(len, 0);

    /* n = 0: just the terminator. */
    assert_int_equal(snp_cert_table_build(NULL, NULL, NULL, 0, &tab, &len), 0);
    assert_int_equal(len, ENTRY);
    SnpCertTable t;
    assert_int_equal(snp_cert_table_parse(tab, len, &t), 0);
    assert_int_equal(t.n_entries, 0);
    free(tab);
}

static void test_build_oom(void **state) {
    const uint8_t c[] = {0x30, 0x00};
    const uint8_t *ders[] = {c};
    const size_t lens[] = {2};
    const SnpCertKind kinds[] = {SNP_CERT_ARK};
    uint8_t *tab = NULL;
    size_t len = 0;

    nt_alloc_fail_after(0);
    assert_int_equal(snp_cert_table_build(kinds, ders, lens, 1, &tab, &len), -ENOMEM);
    nt_alloc_fail_after(-1);
    assert_null(tab);
    assert_int_equal(snp_cert_table_build(kinds, ders, lens, 1, &tab, &len), 0);
    free(tab);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_vectors), cmocka_unit_test(test_guid_byte_order),
        cmocka_unit_test(test_hostile),           cmocka_unit_test(test_entry_limit),
        cmocka_unit_test(test_build_errors),      cmocka_unit_test(test_build_oom),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
