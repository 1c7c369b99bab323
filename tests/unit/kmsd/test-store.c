/* SPDX-License-Identifier: Apache-2.0 */
/*
 * kmsd store tests on real SQLite files: the KEK file rules, every API path and its errors
 * (nothing changes on a refused call: the audit head is compared), values per type (PKCS#8
 * checked with keys generated here), versions and re-created ids, a wrong KEK at open, files
 * that are not kmsd databases, ciphertext and metadata edited or swapped in the database
 * (-EBADMSG, never a crash), audit rows edited/deleted/reordered/truncated with the sqlite3 API
 * directly, restart, and concurrent writers (threads on one store, and two connections on one
 * file, as two processes would be).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/fileio.h"
#include "core/macro.h"
#include "core/secret.h"
#include "kmsd/audit.h"
#include "kmsd/store-private.h"
#include "kmsd/store.h"
#include "kmsd-test-util.h"

static int counter;

/* A fresh database path per test. */
static const char *new_db(void) {
    char name[64];
    snprintf(name, sizeof name, "store-%d.db", ++counter);
    return tpath(name);
}

static KmsStore *open_store(const char *path, const Secret *kek) {
    KmsStore *s = NULL;
    _cleanup_free_ char *err = NULL;
    int r = kms_store_open_sqlite(path, kek, &s, &err);
    if (r < 0)
        fail_msg("open %s: %d %s", path, r, err ? err : "");
    return s;
}

static void create_aes(KmsStore *s, const char *id, uint8_t fill) {
    _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = meta_make(id, "aes256");
    _cleanup_(secret_freep) Secret *v = value_fill(32, fill);
    assert_int_equal(kms_store_create(s, &m, v, &admin_ev), 0);
}

static void head_of(KmsStore *s, int64_t *seq, char hash[static 65]) {
    assert_int_equal(kms_store_audit_head(s, seq, hash), 0);
}

/* Asserts that the audit head did not move (a refused call wrote nothing). */
#define ASSERT_HEAD_UNCHANGED(s, seq0, hash0)                                                      \
    do {                                                                                           \
        int64_t seq1_;                                                                             \
        char hash1_[65];                                                                           \
        head_of((s), &seq1_, hash1_);                                                              \
        assert_int_equal(seq1_, (seq0));                                                           \
        assert_string_equal(hash1_, (hash0));                                                      \
    } while (0)

static void write_file(const char *path, const void *data, size_t n, mode_t mode) {
    int fd;
    (void)unlink(path);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void test_kek_load(void **state) {
    _cleanup_(secret_freep) Secret *k = NULL;
    _cleanup_free_ char *err = NULL;
    uint8_t raw[32];
    char hex[66], big[100];
    const char *p = tpath("kek");

    for (size_t i = 0; i < 32; i++)
        raw[i] = (uint8_t)(0xa0 + i);
    write_file(p, raw, 32, 0600);
    assert_int_equal(kms_kek_load(p, &k, &err), 0);
    assert_int_equal(secret_size(k), 32);
    assert_memory_equal(secret_const_data(k), raw, 32);
    k = secret_free(k);
    write_file(p, raw, 32, 0400);
    assert_int_equal(kms_kek_load(p, &k, NULL), 0);
    k = secret_free(k);

    /* Hex, with and without the final newline, either case. */
    for (size_t i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, i % 2 ? "%02x" : "%02X", raw[i]);
    hex[64] = '\n';
    write_file(p, hex, 65, 0600);
    assert_int_equal(kms_kek_load(p, &k, NULL), 0);
    assert_memory_equal(secret_const_data(k), raw, 32);
    k = secret_free(k);
    write_file(p, hex, 64, 0600);
    assert_int_equal(kms_kek_load(p, &k, NULL), 0);
    assert_memory_equal(secret_const_data(k), raw, 32);
    k = secret_free(k);

    /* Group or other access of any kind. */
    static const mode_t bad_modes[] = {0640, 0644, 0604, 0620, 0610, 0602, 0601, 0660, 0666};
    for (size_t i = 0; i < ELEMENTSOF(bad_modes); i++) {
        write_file(p, raw, 32, bad_modes[i]);
        err = mfree_str(err);
        assert_int_equal(kms_kek_load(p, &k, &err), -EPERM);
        assert_null(k);
        assert_non_null(strstr(err, "group and others must have no access"));
    }
    /* Wrong lengths and contents. */
    err = mfree_str(err);
    write_file(p, raw, 31, 0600);
    assert_int_equal(kms_kek_load(p, &k, &err), -EBADMSG);
    assert_non_null(strstr(err, "exactly 32 bytes"));
    write_file(p, raw, 0, 0600);
    assert_int_equal(kms_kek_load(p, &k, NULL), -EBADMSG);
    memcpy(big, raw, 32);
    big[32] = '\n';
    write_file(p, big, 33, 0600);
    assert_int_equal(kms_kek_load(p, &k, NULL), -EBADMSG);
    memset(big, 'a', sizeof big);
    write_file(p, big, sizeof big, 0600);
    assert_int_equal(kms_kek_load(p, &k, NULL), -EBADMSG);
    hex[10] = 'g';
    write_file(p, hex, 65, 0600);
    assert_int_equal(kms_kek_load(p, &k, NULL), -EBADMSG);
    hex[10] = '0';
    hex[64] = 'x';
    write_file(p, hex, 65, 0600);
    assert_int_equal(kms_kek_load(p, &k, NULL), -EBADMSG);
    /* Not a file; missing. */
    assert_int_equal(kms_kek_load(tmpdir, &k, NULL), -EINVAL);
    assert_int_equal(kms_kek_load(tpath("no-such-kek"), &k, NULL), -ENOENT);
    assert_null(k);
    /* Owned by someone else (only root can arrange that). */
    if (geteuid() == 0) {
        write_file(p, raw, 32, 0600);
        assert_int_equal(chown(p, 4242, 4242), 0);
        assert_int_equal(kms_kek_load(p, &k, NULL), -EPERM);
    }
}

static void test_create_get_list(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(1), *v = NULL, *want = NULL;
    _cleanup_(kms_store_freep) KmsStore *s = open_store(new_db(), kek);
    _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = {}, in = meta_make("db-key", "aes256");
    KmsSecretMeta *list = NULL;
    size_t n = 99;
    char err[256];

    assert_string_equal(kms_store_backend(s), "sqlite");
    assert_int_equal(kms_store_list(s, NULL, 0, &list, &n), 0);
    assert_int_equal(n, 0);
    assert_null(list);

    want = value_fill(32, 7);
    assert_int_equal(kms_store_create(s, &in, want, &admin_ev), 0);
    assert_int_equal(kms_store_get(s, "db-key", &m, &v), 0);
    assert_string_equal(m.id, "db-key");
    assert_string_equal(m.name, "db-key");
    assert_string_equal(m.type, "aes256");
    assert_int_equal(m.version, 1);
    assert_true(json_equal(m.attributes, in.attributes));
    assert_true(json_equal(m.policy, in.policy));
    assert_true(m.created > 1600000000 && m.created == m.updated);
    assert_true(secret_eq(v, want));
    assert_true(secret_is_locked(v) || !secret_is_locked(want));
    v = secret_free(v);
    kms_secret_meta_clear(&m);
    /* Meta only, value only. */
    assert_int_equal(kms_store_get(s, "db-key", &m, NULL), 0);
    assert_int_equal(m.version, 1);
    assert_int_equal(kms_store_get(s, "db-key", NULL, &v), 0);
    assert_true(secret_eq(v, want));
    assert_int_equal(kms_store_get(s, "db-key", NULL, NULL), -EINVAL);
    assert_int_equal(kms_store_get(s, "nope", NULL, &v), -ENOENT);
    assert_int_equal(kms_store_get(s, "Bad/Id", NULL, &v), -EINVAL);

    /* Listing pages through ids in order. */
    const char *ids[] = {"k.3", "k-1", "k_2", "a0", "z9"};
    for (size_t i = 0; i < ELEMENTSOF(ids); i++)
        create_aes(s, ids[i], (uint8_t)i);
    assert_int_equal(kms_store_list(s, NULL, 0, &list, &n), 0);
    assert_int_equal(n, 6);
    const char *sorted[] = {"a0", "db-key", "k-1", "k.3", "k_2", "z9"};
    for (size_t i = 0; i < n; i++) {
        assert_string_equal(list[i].id, sorted[i]);
        assert_non_null(list[i].policy);
        assert_int_equal(kms_secret_attributes_check(list[i].attributes, err), 0);
    }
    kms_secret_meta_array_free(list, n);
    assert_int_equal(kms_store_list(s, NULL, 2, &list, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[1].id, "db-key");
    kms_secret_meta_array_free(list, n);
    assert_int_equal(kms_store_list(s, "db-key", 2, &list, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, "k-1");
    assert_string_equal(list[1].id, "k.3");
    kms_secret_meta_array_free(list, n);
    assert_int_equal(kms_store_list(s, "z9", 10, &list, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(kms_store_list(s, NULL, 0, NULL, &n), -EINVAL);

    assert_int_equal(store_chain_verify(s, err), 0);
}

/* PKCS#8 DER of a new key, in a Secret. */
static Secret *pkcs8_new(const char *alg, const char *param, size_t trailing) {
    EVP_PKEY *pk = param && streq(alg, "RSA")
                       ? EVP_PKEY_Q_keygen(NULL, NULL, alg, (size_t)atoi(param))
                   : param ? EVP_PKEY_Q_keygen(NULL, NULL, alg, param)
                           : EVP_PKEY_Q_keygen(NULL, NULL, alg);
    PKCS8_PRIV_KEY_INFO *p8 = pk ? EVP_PKEY2PKCS8(pk) : NULL;
    unsigned char *der = NULL;
    Secret *out = NULL;
    int n = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &der) : -1;
    assert_true(n > 0);
    assert_int_equal(secret_new((size_t)n + trailing, &out), 0);
    memcpy(secret_data(out), der, (size_t)n);
    OPENSSL_clear_free(der, (size_t)n);
    PKCS8_PRIV_KEY_INFO_free(p8);
    EVP_PKEY_free(pk);
    return out;
}

static void test_values_per_type(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(2);
    _cleanup_(kms_store_freep) KmsStore *s = open_store(new_db(), kek);
    char err[256];
    struct {
        const char *type;
        Secret *good, *bad;
    } cases[] = {
        {"aes256", value_fill(32, 1), value_fill(16, 1)},
        {"hmac-sha256", value_fill(32, 2), value_fill(48, 2)},
        {"hmac-sha384", value_fill(48, 3), value_fill(32, 3)},
        {"raw", value_fill(4096, 4), value_fill(4097, 4)},
        {"ec-p256", pkcs8_new("EC", "P-256", 0), pkcs8_new("EC", "P-384", 0)},
        {"ec-p384", pkcs8_new("EC", "P-384", 0), pkcs8_new("EC", "P-384", 1)},
        {"ed25519", pkcs8_new("ED25519", NULL, 0), pkcs8_new("EC", "P-256", 0)},
        {"rsa2048", pkcs8_new("RSA", "2048", 0), value_fill(1200, 5)},
    };
    for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
        char id[32];
        _cleanup_(secret_freep) Secret *got = NULL;
        snprintf(id, sizeof id, "t%zu", i);
        _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = meta_make(id, cases[i].type);
        assert_int_equal(kms_secret_value_check(cases[i].type, cases[i].good, err), 0);
        assert_int_equal(kms_secret_value_check(cases[i].type, cases[i].bad, err), -EBADMSG);
        assert_true(strlen(err) > 0);
        assert_int_equal(kms_store_create(s, &m, cases[i].bad, &admin_ev), -EBADMSG);
        assert_int_equal(kms_store_get(s, id, &(KmsSecretMeta){}, NULL), -ENOENT);
        assert_int_equal(kms_store_create(s, &m, cases[i].good, &admin_ev), 0);
        assert_int_equal(kms_store_get(s, id, NULL, &got), 0);
        assert_true(secret_eq(got, cases[i].good));
        /* Replace checks against the stored type. */
        assert_int_equal(kms_store_replace(s, id, cases[i].bad, &admin_ev, NULL), -EBADMSG);
        secret_free(cases[i].good);
        secret_free(cases[i].bad);
    }
    _cleanup_(secret_freep) Secret *one = value_fill(1, 9), *empty = value_fill(0, 0);
    assert_int_equal(kms_secret_value_check("raw", one, err), 0);
    assert_int_equal(kms_secret_value_check("raw", empty, err), -EBADMSG);
    assert_int_equal(kms_secret_value_check("aes128", one, err), -EINVAL);
    /* RSA key of the wrong size for its type. */
    _cleanup_(secret_freep) Secret *rsa = pkcs8_new("RSA", "2048", 0);
    assert_int_equal(kms_secret_value_check("rsa3072", rsa, err), -EBADMSG);
    assert_int_equal(kms_secret_value_check("rsa2048", rsa, err), 0);
    assert_int_equal(store_chain_verify(s, err), 0);
}

static void test_create_errors(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(3), *v = value_fill(32, 1),
                                   *v2 = value_fill(32, 99), *got = NULL;
    _cleanup_(kms_store_freep) KmsStore *s = open_store(new_db(), kek);
    _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = meta_make("dup", "aes256");
    char hash0[65], err[256];
    int64_t seq0;

    assert_int_equal(kms_store_create(s, &m, v, &admin_ev), 0);
    head_of(s, &seq0, hash0);
    assert_int_equal(seq0, 1);
    /* Duplicate id: -EEXIST, the first value stays, no audit row. */
    assert_int_equal(kms_store_create(s, &m, v2, &admin_ev), -EEXIST);
    assert_int_equal(kms_store_get(s, "dup", NULL, &got), 0);
    assert_true(secret_eq(got, v));
    ASSERT_HEAD_UNCHANGED(s, seq0, hash0);

    /* Bad ids, names, types. */
    static const char *bad_ids[] = {
        "",    "A",   "-x", ".x",
        "a/b", "a b", "é",  "0123456789012345678901234567890123456789012345678901234567890123x"};
    for (size_t i = 0; i < ELEMENTSOF(bad_ids); i++) {
        KmsSecretMeta b = m;
        b.id = (char *)bad_ids[i];
        assert_int_equal(kms_store_create(s, &b, v, &admin_ev), -EINVAL);
        assert_int_equal(kms_secret_meta_check(&b, err), -EINVAL);
        assert_non_null(strstr(err, "id"));
    }
    assert_true(
        kms_secret_id_is_valid("0123456789012345678901234567890123456789012345678901234567890123"));
    static const char *bad_names[] = {"", ".n", "-n", "a/b", "a b", "n\n"};
    for (size_t i = 0; i < ELEMENTSOF(bad_names); i++) {
        KmsSecretMeta b = m;
        b.id = (char *)"other";
        b.name = (char *)bad_names[i];
        assert_int_equal(kms_store_create(s, &b, v, &admin_ev), -EINVAL);
    }
    assert_true(kms_secret_name_is_valid("Db_Key:1@host.x-y"));
    KmsSecretMeta b = m;
    b.id = (char *)"other";
    b.type = (char *)"aes128";
    assert_int_equal(kms_store_create(s, &b, v, &admin_ev), -EINVAL);

    /* Attributes. */
    static const char *bad_attrs[] = {
        "[]",
        "{}",
        "{\"policy\":\"maybe\"}",
        "{\"policy\":\"attested\"}",
        "{\"policy\":\"attested\",\"max_age\":0}",
        "{\"policy\":\"attested\",\"max_age\":604801}",
        "{\"policy\":\"local\",\"max_age\":60}",
        "{\"policy\":\"local\",\"colour\":\"red\"}",
        "{\"policy\":\"local\",\"label\":5}",
        "{\"policy\":\"local\",\"label\":\"tab\\there\"}",
        "{\"policy\":\"local\",\"acl\":[]}",
        "{\"policy\":\"local\",\"acl\":{\"use_pid\":[1]}}",
        "{\"policy\":\"local\",\"acl\":{\"use_uid\":1}}",
        "{\"policy\":\"local\",\"acl\":{\"use_uid\":[-1]}}",
        "{\"policy\":\"local\",\"acl\":{\"use_gid\":[4294967295]}}",
        "{\"policy\":\"local\",\"acl\":{\"use_uid\":[\"0\"]}}",
        "{\"policy\":\"local\",\"acl\":{\"use_cgroup\":[\"relative\"]}}",
        "{\"policy\":\"local\",\"acl\":{\"admin_cgroup\":[\"/a/../b\"]}}",
    };
    for (size_t i = 0; i < ELEMENTSOF(bad_attrs); i++) {
        json_auto_t *a = json_loads(bad_attrs[i], 0, NULL);
        assert_non_null(a);
        b = m;
        b.id = (char *)"other";
        b.attributes = a;
        if (kms_store_create(s, &b, v, &admin_ev) != -EINVAL)
            fail_msg("attributes %s accepted", bad_attrs[i]);
        assert_int_equal(kms_secret_attributes_check(a, err), -EINVAL);
        assert_true(strlen(err) > 0);
    }
    json_auto_t *big_acl = json_pack("{s:s,s:{s:[]}}", "policy", "local", "acl", "use_uid");
    json_t *uids = json_object_get(json_object_get(big_acl, "acl"), "use_uid");
    for (int i = 0; i < 64; i++)
        json_array_append_new(uids, json_integer(i));
    assert_int_equal(kms_secret_attributes_check(big_acl, err), 0);
    json_array_append_new(uids, json_integer(64));
    assert_int_equal(kms_secret_attributes_check(big_acl, err), -EINVAL);
    json_auto_t *good = json_loads(
        "{\"policy\":\"attested\",\"max_age\":604800,\"label\":\"LUKS root\",\"acl\":"
        "{\"use_uid\":[0,1000],\"use_gid\":[5],\"use_cgroup\":[\"/system.slice/app.service\"],"
        "\"admin_uid\":[0],\"admin_gid\":[],\"admin_cgroup\":[\"/\"]}}",
        0, NULL);
    assert_int_equal(kms_secret_attributes_check(good, err), 0);

    /* Policy: an object, bounded. */
    b = m;
    b.id = (char *)"other";
    json_auto_t *arr = json_array();
    b.policy = arr;
    assert_int_equal(kms_store_create(s, &b, v, &admin_ev), -EINVAL);
    b.policy = NULL;
    assert_int_equal(kms_store_create(s, &b, v, &admin_ev), -EINVAL);
    _cleanup_free_ char *huge = malloc(KMS_JSON_MAX + 1);
    memset(huge, 'x', KMS_JSON_MAX);
    huge[KMS_JSON_MAX] = 0;
    json_auto_t *hp = json_pack("{s:s}", "x", huge);
    b.policy = hp;
    assert_int_equal(kms_store_create(s, &b, v, &admin_ev), -EINVAL);

    /* Bad events. */
    KmsAuditEvent e = admin_ev;
    e.result = "fine";
    b = m;
    b.id = (char *)"other";
    assert_int_equal(kms_store_create(s, &b, v, &e), -EINVAL);
    assert_int_equal(kms_store_create(s, &b, v, NULL), -EINVAL);
    assert_int_equal(kms_store_create(s, &b, NULL, &admin_ev), -EINVAL);
    assert_int_equal(kms_store_create(NULL, &b, v, &admin_ev), -EINVAL);
    assert_int_equal(kms_store_audit(s, &e), -EINVAL);
    e = admin_ev;
    e.action = "Create";
    assert_int_equal(kms_store_replace(s, "dup", v2, &e, NULL), -EINVAL);
    assert_int_equal(kms_store_delete(s, "dup", &e), -EINVAL);
    assert_int_equal(kms_store_set_policy(s, "dup", m.policy, &e), -EINVAL);

    /* None of that wrote anything. */
    assert_int_equal(kms_store_get(s, "other", &(KmsSecretMeta){}, NULL), -ENOENT);
    ASSERT_HEAD_UNCHANGED(s, seq0, hash0);
    assert_int_equal(store_chain_verify(s, err), 0);
}

static void test_replace_versions(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(4);
    const char *db = new_db();
    _cleanup_(kms_store_freep) KmsStore *s = open_store(db, kek);
    _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = {};
    _cleanup_(secret_freep) Secret *got = NULL, *wrong = value_fill(31, 0);
    json_auto_t *rows = NULL;
    uint32_t version = 0;
    char hash0[65], err[256];
    int64_t seq0;

    create_aes(s, "rot", 10);
    for (uint8_t i = 11; i <= 12; i++) {
        _cleanup_(secret_freep) Secret *v = value_fill(32, i);
        KmsAuditEvent e = ev_action("replace");
        e.secret_id = "ignored";
        e.version = 77;
        assert_int_equal(kms_store_replace(s, "rot", v, &e, &version), 0);
        assert_int_equal(version, i - 9);
    }
    assert_int_equal(kms_store_get(s, "rot", &m, &got), 0);
    assert_int_equal(m.version, 3);
    assert_true(m.updated >= m.created);
    for (uint32_t ver = 1; ver <= 3; ver++) {
        _cleanup_(secret_freep) Secret *want = value_fill(32, (uint8_t)(9 + ver)), *g = NULL;
        assert_int_equal(kms_store_get_version(s, "rot", ver, &g), 0);
        assert_true(secret_eq(g, want));
    }
    {
        _cleanup_(secret_freep) Secret *latest = value_fill(32, 12);
        assert_true(secret_eq(got, latest));
    }
    assert_int_equal(kms_store_get_version(s, "rot", 4, &got), -ENOENT);
    assert_int_equal(kms_store_get_version(s, "rot", 0, &got), -EINVAL);
    assert_int_equal(kms_store_get_version(s, "none", 1, &got), -ENOENT);
    assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM secret_versions WHERE secret_id='rot'"), 3);

    head_of(s, &seq0, hash0);
    assert_int_equal(kms_store_replace(s, "none", wrong, &admin_ev, NULL), -ENOENT);
    assert_int_equal(kms_store_replace(s, "rot", wrong, &admin_ev, NULL), -EBADMSG);
    ASSERT_HEAD_UNCHANGED(s, seq0, hash0);

    /* The audit rows name the id and the version written, not what the event said. */
    assert_int_equal(kms_store_audit_rows(s, 0, 0, &rows), 0);
    assert_int_equal(json_array_size(rows), 3);
    json_t *r3 = json_array_get(rows, 2);
    assert_string_equal(json_string_value(json_object_get(r3, "secret_id")), "rot");
    assert_int_equal(json_integer_value(json_object_get(r3, "version")), 3);
    assert_string_equal(json_string_value(json_object_get(r3, "action")), "replace");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(rows, 0), "version")), 1);

    /* No version number left. */
    assert_int_equal(raw_sql(db, "DELETE FROM secrets WHERE id='rot'"), SQLITE_OK);
    _cleanup_(kms_secret_meta_clear) KmsSecretMeta big = meta_make("big", "aes256");
    _cleanup_(secret_freep) Secret *v = value_fill(32, 1);
    assert_int_equal(
        raw_sql(db, "INSERT INTO deleted_secrets (id, last_version) VALUES ('big', 4294967295)"),
        SQLITE_OK);
    assert_int_equal(kms_store_create(s, &big, v, &admin_ev), -EOVERFLOW);
    assert_int_equal(store_chain_verify(s, err), 0);
}

static void test_policy_delete_recreate(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(5), *got = NULL, *v = value_fill(32, 50);
    const char *db = new_db();
    _cleanup_(kms_store_freep) KmsStore *s = open_store(db, kek);
    _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = {}, in = meta_make("gone", "aes256");
    json_auto_t *pol = json_pack("{s:i,s:{s:b}}", "version", 1, "rules", "debug_allowed", 0);
    json_auto_t *arr = json_array();
    char hash0[65], err[256];
    uint32_t version;
    int64_t seq0;

    create_aes(s, "gone", 1);
    KmsAuditEvent e = ev_action("policy-set");
    assert_int_equal(kms_store_set_policy(s, "gone", pol, &e), 0);
    assert_int_equal(kms_store_get(s, "gone", &m, NULL), 0);
    assert_true(json_equal(m.policy, pol));
    assert_int_equal(m.version, 1);
    kms_secret_meta_clear(&m);
    head_of(s, &seq0, hash0);
    assert_int_equal(kms_store_set_policy(s, "nope", pol, &e), -ENOENT);
    assert_int_equal(kms_store_set_policy(s, "gone", arr, &e), -EINVAL);
    assert_int_equal(kms_store_set_policy(s, "gone", NULL, &e), -EINVAL);
    ASSERT_HEAD_UNCHANGED(s, seq0, hash0);

    assert_int_equal(kms_store_replace(s, "gone", v, &admin_ev, &version), 0);
    assert_int_equal(version, 2);
    e = ev_action("delete");
    assert_int_equal(kms_store_delete(s, "gone", &e), 0);
    assert_int_equal(kms_store_get(s, "gone", &m, &got), -ENOENT);
    assert_int_equal(kms_store_get_version(s, "gone", 1, &got), -ENOENT);
    assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM secret_versions"), 0);
    assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM secrets"), 0);
    head_of(s, &seq0, hash0);
    assert_int_equal(kms_store_delete(s, "gone", &e), -ENOENT);
    assert_int_equal(kms_store_delete(s, "BAD", &e), -EINVAL);
    ASSERT_HEAD_UNCHANGED(s, seq0, hash0);

    /* Re-created: numbering continues after the deleted versions, and the version written is
     * the one returned (kmsd answers the create with it). */
    uint32_t created_version = 0;
    assert_int_equal(kms_store_create_version(s, &in, v, &admin_ev, &created_version), 0);
    assert_int_equal(created_version, 3);
    assert_int_equal(kms_store_get(s, "gone", &m, &got), 0);
    assert_int_equal(m.version, 3);
    assert_true(secret_eq(got, v));
    assert_int_equal(raw_int(db, "SELECT COUNT(*) FROM deleted_secrets"), 0);
    _cleanup_(secret_freep) Secret *g1 = NULL;
    assert_int_equal(kms_store_get_version(s, "gone", 1, &g1), -ENOENT);
    assert_int_equal(store_chain_verify(s, err), 0);
}

/* A policy is stored as given, member order included: kmsd evaluates rules in document order and
 * names the first that fails, so a store that sorted members would change which rule is named. */
static void test_policy_order_kept(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(6);
    const char *db = new_db();
    _cleanup_(kms_store_freep) KmsStore *s = open_store(db, kek);
    _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = {};
    json_auto_t *pol = json_loads("{\"version\":1,\"rules\":{\"vmpl_in\":[0],"
                                  "\"measurement_in\":[\"00\"],\"debug_allowed\":false}}",
                                  0, NULL);
    _cleanup_free_ char *want = NULL, *got = NULL;

    assert_non_null(pol);
    create_aes(s, "ordered", 1);
    KmsAuditEvent e = ev_action("policy-set");
    assert_int_equal(kms_store_set_policy(s, "ordered", pol, &e), 0);
    kms_store_free(TAKE_PTR(s));
    s = open_store(db, kek);
    assert_int_equal(kms_store_get(s, "ordered", &m, NULL), 0);
    want = json_dumps(pol, JSON_COMPACT);
    got = json_dumps(m.policy, JSON_COMPACT);
    assert_non_null(want);
    assert_non_null(got);
    assert_string_equal(got, want);
}

static void test_audit_api(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(6);
    _cleanup_(kms_store_freep) KmsStore *s = open_store(new_db(), kek);
    json_auto_t *rows = NULL, *page = NULL;
    char head[65], err[256], long_detail[3000];
    int64_t seq;

    head_of(s, &seq, head);
    assert_int_equal(seq, 0);
    assert_string_equal(head, KMS_AUDIT_GENESIS_HEX);
    assert_int_equal(kms_store_audit_rows(s, 0, 0, &rows), 0);
    assert_int_equal(json_array_size(rows), 0);
    json_decref(TAKE_PTR(rows));

    memset(long_detail, 'd', sizeof long_detail - 1);
    long_detail[sizeof long_detail - 1] = 0;
    KmsAuditEvent rel = {
        .action = "release",
        .actor = "token:abc",
        .secret_id = "db-key",
        .version = 2,
        .token_jti = "abc",
        .measurement = "00ff",
        .chip_id = "1234",
        .result = "refused",
        .rule = "measurement_in",
        .detail = "multi\nline \xff text",
    };
    assert_int_equal(kms_store_audit(s, &rel), 0);
    rel.detail = long_detail;
    rel.result = "error";
    rel.rule = NULL;
    rel.version = 0;
    assert_int_equal(kms_store_audit(s, &rel), 0);
    for (int i = 0; i < 10; i++) {
        KmsAuditEvent d = {.action = "admin-denied", .actor = "admin:CN=x", .result = "refused"};
        assert_int_equal(kms_store_audit(s, &d), 0);
    }
    assert_int_equal(kms_store_audit_rows(s, 0, 0, &rows), 0);
    assert_int_equal(json_array_size(rows), 12);
    json_t *r1 = json_array_get(rows, 0), *r2 = json_array_get(rows, 1);
    assert_int_equal(json_integer_value(json_object_get(r1, "seq")), 1);
    assert_string_equal(json_string_value(json_object_get(r1, "prev_hash")), KMS_AUDIT_GENESIS_HEX);
    assert_string_equal(json_string_value(json_object_get(r1, "detail")), "multi?line ? text");
    assert_string_equal(json_string_value(json_object_get(r1, "chip_id")), "1234");
    assert_string_equal(json_string_value(json_object_get(r1, "rule")), "measurement_in");
    assert_int_equal(json_integer_value(json_object_get(r1, "version")), 2);
    assert_true(json_is_null(json_object_get(r2, "rule")));
    assert_true(json_is_null(json_object_get(r2, "version")));
    assert_int_equal(json_string_length(json_object_get(r2, "detail")), KMS_AUDIT_DETAIL_MAX);
    assert_string_equal(json_string_value(json_object_get(r2, "prev_hash")),
                        json_string_value(json_object_get(r1, "hash")));
    head_of(s, &seq, head);
    assert_int_equal(seq, 12);
    assert_string_equal(head, json_string_value(json_object_get(json_array_get(rows, 11), "hash")));
    assert_int_equal(kms_audit_chain_verify(rows, head, err), 0);

    /* Paging. */
    assert_int_equal(kms_store_audit_rows(s, 5, 3, &page), 0);
    assert_int_equal(json_array_size(page), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(page, 0), "seq")), 6);
    assert_true(json_equal(json_array_get(page, 2), json_array_get(rows, 7)));
    json_decref(TAKE_PTR(page));
    assert_int_equal(kms_store_audit_rows(s, 12, 0, &page), 0);
    assert_int_equal(json_array_size(page), 0);
    assert_int_equal(kms_store_audit_rows(s, -1, 0, &page), -EINVAL);
}

static void test_wrong_kek(void **state) {
    _cleanup_(secret_freep) Secret *k1 = kek_fill(7), *k2 = kek_fill(8), *short_kek = NULL;
    const char *db = new_db();
    KmsStore *s = open_store(db, k1), *bad = NULL;
    _cleanup_free_ char *err = NULL;
    char head[65], head2[65];
    int64_t seq, seq2;
    struct stat st;

    create_aes(s, "x", 1);
    head_of(s, &seq, head);
    s = kms_store_free(s);
    assert_int_equal(kms_store_open_sqlite(db, k2, &bad, &err), -EKEYREJECTED);
    assert_null(bad);
    assert_non_null(err);
    assert_non_null(strstr(err, "wrong key-encryption key"));
    /* The right KEK still opens it, and nothing was written meanwhile. */
    s = open_store(db, k1);
    head_of(s, &seq2, head2);
    assert_int_equal(seq, seq2);
    assert_string_equal(head, head2);
    s = kms_store_free(s);

    assert_int_equal(secret_new(31, &short_kek), 0);
    err = mfree_str(err);
    assert_int_equal(kms_store_open_sqlite(db, short_kek, &bad, &err), -EINVAL);
    assert_int_equal(kms_store_open_sqlite(db, NULL, &bad, NULL), -EINVAL);

    /* The file and its WAL are private. */
    assert_int_equal(stat(db, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    s = open_store(db, k1);
    create_aes(s, "y", 2);
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", db);
    assert_int_equal(stat(wal, &st), 0);
    assert_int_equal(st.st_mode & 077, 0);
    kms_store_free(s);
}

static void test_not_a_database(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(9);
    _cleanup_free_ char *err = NULL;
    KmsStore *s = NULL;
    const char *p = new_db();
    char junk[4096];

    memset(junk, 'J', sizeof junk);
    write_file(p, junk, sizeof junk, 0600);
    assert_int_equal(kms_store_open_sqlite(p, kek, &s, &err), -EBADMSG);
    assert_non_null(strstr(err, "not a kmsd database"));
    assert_null(s);

    /* An SQLite database of something else. */
    p = new_db();
    assert_int_equal(raw_sql(p, "CREATE TABLE t (x)"), SQLITE_CANTOPEN); /* must exist */
    write_file(p, "", 0, 0600);
    assert_int_equal(raw_sql(p, "CREATE TABLE t (x)"), SQLITE_OK);
    err = mfree_str(err);
    assert_int_equal(kms_store_open_sqlite(p, kek, &s, &err), -EBADMSG);
    assert_non_null(strstr(err, "no schema_version"));

    /* A newer schema. */
    p = new_db();
    s = open_store(p, kek);
    s = kms_store_free(s);
    assert_int_equal(raw_sql(p, "UPDATE schema_version SET version = 2"), SQLITE_OK);
    err = mfree_str(err);
    assert_int_equal(kms_store_open_sqlite(p, kek, &s, &err), -EPROTONOSUPPORT);
    assert_non_null(strstr(err, "newer"));

    /* The KEK check value removed or edited. */
    p = new_db();
    s = open_store(p, kek);
    s = kms_store_free(s);
    assert_int_equal(raw_sql(p, "UPDATE meta SET value = x'00' WHERE key = 'kek_check'"),
                     SQLITE_OK);
    assert_int_equal(kms_store_open_sqlite(p, kek, &s, NULL), -EKEYREJECTED);
    assert_int_equal(raw_sql(p, "DELETE FROM meta"), SQLITE_OK);
    assert_int_equal(kms_store_open_sqlite(p, kek, &s, NULL), -EBADMSG);

    /* A directory; an unreachable path. */
    assert_true(kms_store_open_sqlite(tmpdir, kek, &s, NULL) < 0);
    assert_int_equal(kms_store_open_sqlite(tpath("no/such/dir.db"), kek, &s, NULL), -ENOENT);
    assert_null(s);
}

/* SQL that changes byte N (1-based SQL expression) of sealed to another value. */
#define FLIP_BYTE(n)                                                                               \
    "UPDATE secret_versions SET sealed = CAST(substr(sealed, 1, " n " - 1) || CASE WHEN "          \
    "substr(sealed, " n ", 1) = x'ff' THEN x'00' ELSE x'ff' END || substr(sealed, " n              \
    " + 1) AS BLOB)"

static void test_ciphertext_tampering(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(10), *got = NULL, *v2 = value_fill(32, 77);
    const char *db = new_db();
    _cleanup_(kms_store_freep) KmsStore *s = open_store(db, kek);
    char sql[512];

    static const char *const edits[] = {
        /* a changed byte of the ciphertext, of the nonce, of the tag */
        FLIP_BYTE("21"),
        FLIP_BYTE("1"),
        FLIP_BYTE("length(sealed)"),
        /* truncated, empty, short, oversized, text */
        "UPDATE secret_versions SET sealed = substr(sealed, 1, 30)",
        "UPDATE secret_versions SET sealed = x''",
        "UPDATE secret_versions SET sealed = x'0102'",
        "UPDATE secret_versions SET sealed = zeroblob(100000)",
        "UPDATE secret_versions SET sealed = 'some text that is long enough to be a ciphertext'",
    };
    for (size_t i = 0; i < ELEMENTSOF(edits); i++) {
        char id[16];
        snprintf(id, sizeof id, "c%zu", i);
        create_aes(s, id, (uint8_t)i);
        snprintf(sql, sizeof sql, "%s WHERE secret_id = '%s'", edits[i], id);
        assert_int_equal(raw_sql(db, sql), SQLITE_OK);
        if (kms_store_get(s, id, NULL, &got) != -EBADMSG)
            fail_msg("edit %zu not detected", i);
        assert_null(got);
        assert_int_equal(kms_store_get_version(s, id, 1, &got), -EBADMSG);
        /* Metadata alone still reads; a replace adds a good version. */
        _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = {};
        assert_int_equal(kms_store_get(s, id, &m, NULL), 0);
        assert_int_equal(kms_store_replace(s, id, v2, &admin_ev, NULL), 0);
        assert_int_equal(kms_store_get(s, id, NULL, &got), 0);
        assert_true(secret_eq(got, v2));
        got = secret_free(got);
    }

    /* Values swapped between ids, and between versions of one id: the AAD tells. */
    create_aes(s, "a", 1);
    create_aes(s, "b", 2);
    assert_int_equal(raw_sql(db,
                             "UPDATE secret_versions SET secret_id = 'tmp' WHERE secret_id = 'a';"
                             "UPDATE secret_versions SET secret_id = 'a' WHERE secret_id = 'b';"
                             "UPDATE secret_versions SET secret_id = 'b' WHERE secret_id = 'tmp';"),
                     SQLITE_OK);
    assert_int_equal(kms_store_get(s, "a", NULL, &got), -EBADMSG);
    assert_int_equal(kms_store_get(s, "b", NULL, &got), -EBADMSG);
    create_aes(s, "v", 3);
    assert_int_equal(kms_store_replace(s, "v", v2, &admin_ev, NULL), 0);
    assert_int_equal(raw_sql(db, "UPDATE secret_versions SET version = 9 WHERE secret_id = 'v' "
                                 "AND version = 1;"
                                 "UPDATE secret_versions SET version = 1 WHERE secret_id = 'v' "
                                 "AND version = 2;"
                                 "UPDATE secret_versions SET version = 2 WHERE secret_id = 'v' "
                                 "AND version = 9;"),
                     SQLITE_OK);
    assert_int_equal(kms_store_get(s, "v", NULL, &got), -EBADMSG);
    assert_int_equal(kms_store_get_version(s, "v", 1, &got), -EBADMSG);
    /* A latest version whose row is gone. */
    create_aes(s, "w", 4);
    assert_int_equal(raw_sql(db, "DELETE FROM secret_versions WHERE secret_id = 'w'"), SQLITE_OK);
    assert_int_equal(kms_store_get(s, "w", NULL, &got), -EBADMSG);
    /* A value made with another KEK (copied from another database). */
    const char *db2 = new_db();
    _cleanup_(secret_freep) Secret *kek2 = kek_fill(11);
    KmsStore *s2 = open_store(db2, kek2);
    create_aes(s2, "x", 5);
    kms_store_free(s2);
    create_aes(s, "x", 5);
    snprintf(sql, sizeof sql,
             "ATTACH '%s' AS o; UPDATE secret_versions SET sealed = (SELECT sealed FROM "
             "o.secret_versions WHERE secret_id = 'x') WHERE secret_id = 'x'; DETACH o;",
             db2);
    assert_int_equal(raw_sql(db, sql), SQLITE_OK);
    assert_int_equal(kms_store_get(s, "x", NULL, &got), -EBADMSG);
    assert_null(got);
}

static void test_metadata_tampering(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(12), *got = NULL, *v = value_fill(32, 1);
    const char *db = new_db();
    _cleanup_(kms_store_freep) KmsStore *s = open_store(db, kek);
    _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = {};
    json_auto_t *pol = json_object();
    KmsSecretMeta *list = NULL;
    size_t n = 0;

    static const char *const edits[] = {
        "UPDATE secrets SET policy = '{}'",
        "UPDATE secrets SET attributes = '{\"policy\":\"local\"}'",
        "UPDATE secrets SET type = 'raw'",
        "UPDATE secrets SET name = 'other'",
        "UPDATE secrets SET version = 1",
        "UPDATE secrets SET updated = updated + 1",
        "UPDATE secrets SET mac = x'00'",
        "UPDATE secrets SET policy = 'not json'",
    };
    for (size_t i = 0; i < ELEMENTSOF(edits); i++) {
        char id[16], sql[256];
        snprintf(id, sizeof id, "m%zu", i);
        create_aes(s, id, 1);
        assert_int_equal(kms_store_replace(s, id, v, &admin_ev, NULL), 0);
        snprintf(sql, sizeof sql, "%s WHERE id = '%s'", edits[i], id);
        assert_int_equal(raw_sql(db, sql), SQLITE_OK);
        if (kms_store_get(s, id, &m, NULL) != -EBADMSG)
            fail_msg("metadata edit %zu not detected", i);
        assert_int_equal(kms_store_get(s, id, NULL, &got), -EBADMSG);
        /* Writes refuse to re-sign an edited row. */
        assert_int_equal(kms_store_set_policy(s, id, pol, &admin_ev), -EBADMSG);
        assert_int_equal(kms_store_replace(s, id, v, &admin_ev, NULL), -EBADMSG);
        assert_int_equal(kms_store_list(s, NULL, 0, &list, &n), -EBADMSG);
        /* Deleting it is how the operator gets rid of it. */
        assert_int_equal(kms_store_delete(s, id, &admin_ev), 0);
        assert_int_equal(kms_store_list(s, NULL, 0, &list, &n), 0);
        assert_int_equal(n, 0);
    }
    /* Metadata rows swapped between ids. */
    create_aes(s, "p", 1);
    create_aes(s, "q", 2);
    assert_int_equal(raw_sql(db, "UPDATE secrets SET mac = (SELECT mac FROM secrets WHERE id = "
                                 "'q') WHERE id = 'p'"),
                     SQLITE_OK);
    assert_int_equal(kms_store_get(s, "p", &m, NULL), -EBADMSG);
    assert_int_equal(kms_store_get(s, "q", &m, NULL), 0);
}

/* A store with 6 audit rows and its head; the append-only triggers dropped (the attacker's first
 * step), for the edit tests. */
static const char *chain_db(const Secret *kek, char head[static 65]) {
    const char *db = new_db();
    KmsStore *s = open_store(db, kek);
    int64_t seq;
    create_aes(s, "a1", 1);
    create_aes(s, "a2", 2);
    for (int i = 0; i < 4; i++) {
        KmsAuditEvent e = {.action = "release",
                           .actor = "token:t",
                           .secret_id = "a1",
                           .result = i % 2 ? "ok" : "refused",
                           .rule = i % 2 ? NULL : "min_tcb"};
        assert_int_equal(kms_store_audit(s, &e), 0);
    }
    head_of(s, &seq, head);
    assert_int_equal(seq, 6);
    kms_store_free(s);
    /* The triggers refuse edits until they are dropped. */
    assert_int_equal(raw_sql(db, "UPDATE audit SET detail = 'x' WHERE seq = 3"), SQLITE_CONSTRAINT);
    assert_int_equal(raw_sql(db, "DELETE FROM audit WHERE seq = 3"), SQLITE_CONSTRAINT);
    assert_int_equal(raw_sql(db, "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;"),
                     SQLITE_OK);
    return db;
}

/* Verifies the chain of the store at db against head; returns the result, message in err. */
static int verify_db(const char *db, const Secret *kek, const char *head, char err[static 256]) {
    _cleanup_(kms_store_freep) KmsStore *s = open_store(db, kek);
    json_auto_t *rows = NULL;
    assert_int_equal(kms_store_audit_rows(s, 0, 0, &rows), 0);
    return kms_audit_chain_verify(rows, head, err);
}

#define EXPECT_VERIFY(db, kek, head, want_r, want_msg)                                             \
    do {                                                                                           \
        char err_[256];                                                                            \
        int r_ = verify_db((db), (kek), (head), err_);                                             \
        if (r_ != (want_r) || !strstr(err_, (want_msg)))                                           \
            fail_msg("verify: %d \"%s\", want %d \"%s\"", r_, err_, (want_r), (want_msg));         \
    } while (0)

static void test_audit_tampering_sqlite(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(13);
    char head[65], err[256];
    const char *db;

    /* Untouched. */
    db = chain_db(kek, head);
    assert_int_equal(verify_db(db, kek, head, err), 0);
    /* Edited member values. */
    static const char *const edits[] = {
        "UPDATE audit SET detail = 'nothing to see' WHERE seq = 3",
        "UPDATE audit SET result = 'ok' WHERE seq = 3",
        "UPDATE audit SET rule = NULL WHERE seq = 3",
        "UPDATE audit SET time = time - 3600 WHERE seq = 3",
        "UPDATE audit SET version = 2 WHERE seq = 3",
        "UPDATE audit SET detail = x'ff00ff' WHERE seq = 3",
        "UPDATE audit SET secret_id = 'a2' WHERE seq = 3",
    };
    for (size_t i = 0; i < ELEMENTSOF(edits); i++) {
        db = chain_db(kek, head);
        assert_int_equal(raw_sql(db, edits[i]), SQLITE_OK);
        EXPECT_VERIFY(db, kek, head, -EKEYREJECTED, "at seq 3: hash mismatch (row edited)");
    }
    /* A deleted row in the middle, the first row, the newest rows. */
    db = chain_db(kek, head);
    assert_int_equal(raw_sql(db, "DELETE FROM audit WHERE seq = 3"), SQLITE_OK);
    EXPECT_VERIFY(db, kek, head, -EKEYREJECTED, "row seq 4 follows seq 2");
    db = chain_db(kek, head);
    assert_int_equal(raw_sql(db, "DELETE FROM audit WHERE seq = 1"), SQLITE_OK);
    EXPECT_VERIFY(db, kek, head, -EKEYREJECTED, "row seq 2 follows seq 0");
    db = chain_db(kek, head);
    assert_int_equal(raw_sql(db, "DELETE FROM audit WHERE seq >= 5"), SQLITE_OK);
    EXPECT_VERIFY(db, kek, head, -EKEYREJECTED, "ends at seq 4");
    EXPECT_VERIFY(db, kek, NULL, 0, ""); /* only the published head shows a cut tail */
    /* Deleted and renumbered. */
    db = chain_db(kek, head);
    assert_int_equal(raw_sql(db, "DELETE FROM audit WHERE seq = 3; "
                                 "UPDATE audit SET seq = seq - 1 WHERE seq > 3"),
                     SQLITE_OK);
    EXPECT_VERIFY(db, kek, head, -EKEYREJECTED, "at seq 3: prev_hash");
    /* Reordered: rows 2 and 3 trade places (their seq numbers stay in order). */
    db = chain_db(kek, head);
    assert_int_equal(raw_sql(db, "UPDATE audit SET seq = -2 WHERE seq = 2;"
                                 "UPDATE audit SET seq = 2 WHERE seq = 3;"
                                 "UPDATE audit SET seq = 3 WHERE seq = -2;"),
                     SQLITE_OK);
    EXPECT_VERIFY(db, kek, head, -EKEYREJECTED, "at seq 2");
    /* Edited and re-hashed with the published algorithm: the next row's link breaks. */
    db = chain_db(kek, head);
    {
        _cleanup_(kms_store_freep) KmsStore *s = open_store(db, kek);
        json_auto_t *rows = NULL;
        char h[65], sql[256];
        assert_int_equal(kms_store_audit_rows(s, 0, 0, &rows), 0);
        json_t *r3 = json_array_get(rows, 2);
        json_object_set_new(r3, "result", json_string("ok"));
        assert_int_equal(kms_audit_row_hash(r3, h), 0);
        snprintf(sql, sizeof sql, "UPDATE audit SET result = 'ok', hash = '%s' WHERE seq = 3", h);
        assert_int_equal(raw_sql(db, sql), SQLITE_OK);
    }
    EXPECT_VERIFY(db, kek, head, -EKEYREJECTED, "at seq 4: prev_hash");
    /* A forged row appended without the chain. */
    db = chain_db(kek, head);
    assert_int_equal(raw_sql(db, "INSERT INTO audit SELECT 7, time, action, actor, secret_id, "
                                 "version, token_jti, measurement, chip_id, result, rule, detail, "
                                 "prev_hash, hash FROM audit WHERE seq = 6"),
                     SQLITE_OK);
    EXPECT_VERIFY(db, kek, head, -EKEYREJECTED, "at seq 7: prev_hash");
    /* The store keeps working after tampering, and new rows chain onto the edited head. */
    db = chain_db(kek, head);
    {
        _cleanup_(kms_store_freep) KmsStore *s = open_store(db, kek);
        assert_int_equal(raw_sql(db, "UPDATE audit SET detail = 'x' WHERE seq = 2"), SQLITE_OK);
        assert_int_equal(kms_store_audit(s, &admin_ev), 0);
        assert_int_equal(store_chain_verify(s, err), -EKEYREJECTED);
        assert_non_null(strstr(err, "at seq 2"));
    }
}

static void test_restart(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(14);
    const char *db = new_db();
    KmsStore *s = open_store(db, kek);
    json_auto_t *pol = json_pack("{s:i,s:{}}", "version", 1, "rules");
    json_auto_t *rows_before = NULL, *rows_after = NULL;
    char head[65], head2[65], err[256];
    int64_t seq, seq2;

    for (int i = 0; i < 20; i++) {
        char id[16];
        snprintf(id, sizeof id, "r%02d", i);
        create_aes(s, id, (uint8_t)i);
        if (i % 3 == 0) {
            _cleanup_(secret_freep) Secret *v = value_fill(32, (uint8_t)(100 + i));
            assert_int_equal(kms_store_replace(s, id, v, &admin_ev, NULL), 0);
        }
        if (i % 4 == 0)
            assert_int_equal(kms_store_set_policy(s, id, pol, &admin_ev), 0);
        if (i % 5 == 4)
            assert_int_equal(kms_store_delete(s, id, &admin_ev), 0);
    }
    head_of(s, &seq, head);
    assert_int_equal(kms_store_audit_rows(s, 0, 0, &rows_before), 0);
    s = kms_store_free(s);

    s = open_store(db, kek);
    head_of(s, &seq2, head2);
    assert_int_equal(seq, seq2);
    assert_string_equal(head, head2);
    assert_int_equal(kms_store_audit_rows(s, 0, 0, &rows_after), 0);
    assert_true(json_equal(rows_before, rows_after));
    for (int i = 0; i < 20; i++) {
        char id[16];
        _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = {};
        _cleanup_(secret_freep) Secret *got = NULL, *want = NULL;
        snprintf(id, sizeof id, "r%02d", i);
        if (i % 5 == 4) {
            assert_int_equal(kms_store_get(s, id, &m, &got), -ENOENT);
            continue;
        }
        assert_int_equal(kms_store_get(s, id, &m, &got), 0);
        want = value_fill(32, (uint8_t)(i % 3 == 0 ? 100 + i : i));
        assert_true(secret_eq(got, want));
        assert_int_equal(m.version, i % 3 == 0 ? 2 : 1);
        assert_int_equal(json_equal(m.policy, pol), i % 4 == 0);
    }
    /* It goes on after the restart. */
    create_aes(s, "after", 1);
    assert_int_equal(store_chain_verify(s, err), 0);
    kms_store_free(s);
}

/* ---- concurrency ---- */

typedef struct Worker {
    KmsStore *s;
    int n, id;
} Worker;

static void *worker_run(void *arg) {
    Worker *w = arg;
    for (int i = 0; i < w->n; i++) {
        char id[32];
        snprintf(id, sizeof id, "w%d-%d", w->id, i);
        _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = meta_make(id, "aes256");
        _cleanup_(secret_freep) Secret *v = value_fill(32, (uint8_t)i);
        KmsAuditEvent e = {.action = "release", .actor = "token:x", .result = "ok"};
        if (kms_store_create(w->s, &m, v, &admin_ev) < 0 || kms_store_audit(w->s, &e) < 0)
            return (void *)1;
    }
    return NULL;
}

static void test_concurrent_writers(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(15);
    const char *db = new_db();
    KmsStore *a = open_store(db, kek), *b = open_store(db, kek);
    pthread_t t[8];
    Worker w[8];
    KmsSecretMeta *list = NULL;
    size_t n = 0;
    char err[256];
    int64_t seq;
    char head[65];

    /* 8 threads: 4 on each of two connections to the same file. */
    for (int i = 0; i < 8; i++) {
        w[i] = (Worker){.s = i % 2 ? a : b, .n = 15, .id = i};
        assert_int_equal(pthread_create(&t[i], NULL, worker_run, &w[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        void *ret = (void *)1;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        assert_null(ret);
    }
    head_of(a, &seq, head);
    assert_int_equal(seq, 8 * 15 * 2);
    assert_int_equal(kms_store_list(b, NULL, 0, &list, &n), 0);
    assert_int_equal(n, 8 * 15);
    kms_secret_meta_array_free(list, n);
    assert_int_equal(store_chain_verify(a, err), 0);
    assert_int_equal(store_chain_verify(b, err), 0);
    kms_store_free(a);
    kms_store_free(b);
}

/* Group commit of release attempts' audit rows: concurrent kms_store_audit() calls share
 * transactions, yet each returns only once its row is committed (another connection sees it at
 * once), every thread's rows keep their order, and the chain stays whole. */
typedef struct AuditWorker {
    KmsStore *s, *reader;
    int id, n;
    int failed;
} AuditWorker;

static bool row_visible(KmsStore *reader, const char *detail) {
    json_auto_t *rows = NULL;
    size_t i;
    json_t *r;
    if (kms_store_audit_rows(reader, 0, 0, &rows) < 0)
        return false;
    json_array_foreach(rows, i, r) {
        const char *d = json_string_value(json_object_get(r, "detail"));
        if (d && streq(d, detail))
            return true;
    }
    return false;
}

static void *audit_worker_run(void *arg) {
    AuditWorker *w = arg;
    for (int i = 0; i < w->n; i++) {
        char detail[32], jti[16];
        snprintf(detail, sizeof detail, "t%d-%d", w->id, i);
        snprintf(jti, sizeof jti, "t%d", w->id);
        KmsAuditEvent e = {.action = "release",
                           .actor = "token:x",
                           .secret_id = "s",
                           .token_jti = jti,
                           .result = "ok",
                           .detail = detail};
        if (kms_store_audit(w->s, &e) < 0 || !row_visible(w->reader, detail)) {
            w->failed++;
            break;
        }
    }
    return NULL;
}

static void test_audit_group_commit(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(16);
    const char *db = new_db();
    KmsStore *a = open_store(db, kek), *b = open_store(db, kek);
    enum { T = 8, N = 25 };
    pthread_t t[T];
    AuditWorker w[T];
    json_auto_t *rows = NULL;
    int64_t last[T], seq;
    char head[65], err[256];
    size_t i;
    json_t *r;

    for (int k = 0; k < T; k++) {
        w[k] = (AuditWorker){.s = a, .reader = b, .id = k, .n = N};
        assert_int_equal(pthread_create(&t[k], NULL, audit_worker_run, &w[k]), 0);
    }
    for (int k = 0; k < T; k++) {
        assert_int_equal(pthread_join(t[k], NULL), 0);
        assert_int_equal(w[k].failed, 0);
    }
    /* Batched: fewer transactions than rows (8 writers that each wait for an fsync). */
    uint64_t commits = kms_store_sqlite_audit_commits(a);
    assert_true(commits >= 1 && commits < T * N);
    head_of(a, &seq, head);
    assert_int_equal(seq, T * N);
    assert_int_equal(kms_store_audit_rows(b, 0, 0, &rows), 0);
    assert_int_equal(json_array_size(rows), T * N);
    assert_int_equal(kms_audit_chain_verify(rows, head, err), 0);
    for (int k = 0; k < T; k++)
        last[k] = -1;
    json_array_foreach(rows, i, r) {
        int id = -1, n = -1;
        assert_int_equal(sscanf(json_string_value(json_object_get(r, "detail")), "t%d-%d", &id, &n),
                         2);
        assert_true(id >= 0 && id < T);
        assert_int_equal(n, last[id] + 1); /* each thread's rows in its order, none lost */
        last[id] = n;
    }
    for (int k = 0; k < T; k++)
        assert_int_equal(last[k], N - 1);
    kms_store_free(a);
    kms_store_free(b);
}

/* True if needle occurs in the file at path (missing file: false). */
static bool file_contains(const char *path, const void *needle, size_t n) {
    _cleanup_free_ uint8_t *buf = NULL;
    size_t len = 0;
    if (read_full_file(path, 256 * 1024 * 1024, &buf, &len) < 0)
        return false;
    return memmem(buf, len, needle, n) != NULL;
}

/* Values are on disk only encrypted: a distinctive value is in neither the database nor its WAL,
 * while the (plaintext) metadata is, which shows that the scan looks at the right bytes. */
static void test_no_plaintext_on_disk(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(17), *v = NULL, *got = NULL;
    const char *db = new_db();
    KmsStore *s = open_store(db, kek);
    _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = meta_make("disk-check-id", "raw");
    char wal[600];
    uint8_t pattern[64];

    for (size_t i = 0; i < sizeof pattern; i++)
        pattern[i] = (uint8_t)("PLAINTEXT-VALUE-"[i % 16]);
    assert_int_equal(secret_new_copy(pattern, sizeof pattern, &v), 0);
    assert_int_equal(kms_store_create(s, &m, v, &admin_ev), 0);
    assert_int_equal(kms_store_replace(s, "disk-check-id", v, &admin_ev, NULL), 0);
    snprintf(wal, sizeof wal, "%s-wal", db);
    assert_true(file_contains(wal, "disk-check-id", 13) || file_contains(db, "disk-check-id", 13));
    assert_false(file_contains(db, pattern, 16));
    assert_false(file_contains(wal, pattern, 16));
    assert_int_equal(kms_store_get(s, "disk-check-id", NULL, &got), 0);
    assert_true(secret_eq(got, v));
    kms_store_free(s); /* checkpoints the WAL into the database */
    assert_true(file_contains(db, "disk-check-id", 13));
    assert_false(file_contains(db, pattern, 16));
    /* Nor the KEK. */
    assert_false(file_contains(db, secret_const_data(kek), KMS_KEK_SIZE));
}

/* Every allocation of the store's own code (core allocator hook) failing in turn: -ENOMEM and
 * nothing half-written, then success. */
static void test_oom(void **state) {
    _cleanup_(secret_freep) Secret *kek = kek_fill(16), *v = value_fill(32, 3);
    _cleanup_(kms_store_freep) KmsStore *s = open_store(new_db(), kek);
    _cleanup_(kms_secret_meta_clear) KmsSecretMeta in = meta_make("oom", "aes256");
    char hash0[65], err[256];
    int64_t seq0;
    int r = -ENOMEM, n;

    head_of(s, &seq0, hash0);
    for (n = 0; n < 1000; n++) {
        nt_alloc_fail_after(n);
        r = kms_store_create(s, &in, v, &admin_ev);
        nt_alloc_fail_after(-1);
        if (r == 0)
            break;
        assert_int_equal(r, -ENOMEM);
        assert_int_equal(kms_store_get(s, "oom", &(KmsSecretMeta){}, NULL), -ENOENT);
        ASSERT_HEAD_UNCHANGED(s, seq0, hash0);
    }
    assert_int_equal(r, 0);
    assert_true(n > 0); /* the hook was reached */
    for (n = 0; n < 1000; n++) {
        _cleanup_(kms_secret_meta_clear) KmsSecretMeta m = {};
        _cleanup_(secret_freep) Secret *got = NULL;
        nt_alloc_fail_after(n);
        r = kms_store_get(s, "oom", &m, &got);
        nt_alloc_fail_after(-1);
        if (r == 0) {
            assert_true(secret_eq(got, v));
            break;
        }
        assert_int_equal(r, -ENOMEM);
    }
    assert_int_equal(r, 0);
    head_of(s, &seq0, hash0);
    for (n = 0; n < 1000; n++) {
        nt_alloc_fail_after(n);
        r = kms_store_replace(s, "oom", v, &admin_ev, NULL);
        nt_alloc_fail_after(-1);
        if (r == 0)
            break;
        assert_int_equal(r, -ENOMEM);
        ASSERT_HEAD_UNCHANGED(s, seq0, hash0);
    }
    assert_int_equal(r, 0);
    assert_int_equal(store_chain_verify(s, err), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kek_load),
        cmocka_unit_test(test_create_get_list),
        cmocka_unit_test(test_values_per_type),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_replace_versions),
        cmocka_unit_test(test_policy_order_kept),
        cmocka_unit_test(test_policy_delete_recreate),
        cmocka_unit_test(test_audit_api),
        cmocka_unit_test(test_wrong_kek),
        cmocka_unit_test(test_not_a_database),
        cmocka_unit_test(test_ciphertext_tampering),
        cmocka_unit_test(test_metadata_tampering),
        cmocka_unit_test(test_audit_tampering_sqlite),
        cmocka_unit_test(test_restart),
        cmocka_unit_test(test_concurrent_writers),
        cmocka_unit_test(test_audit_group_commit),
        cmocka_unit_test(test_oom),
        cmocka_unit_test(test_no_plaintext_on_disk),
    };
    secret_set_allow_unlocked(true);
    return cmocka_run_group_tests(tests, tmpdir_setup, tmpdir_teardown);
}
