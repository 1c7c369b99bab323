/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The vault against hostile local users (issue 8): owned names, per-uid quotas with a root
 * reserve, the cost table against what OpenSSL really pins, ACL caps, paged listing after a
 * hostile ACL burst, a keystore bounded under a hostile mix, and the format-1 name migration.
 */
#include <errno.h>
#include <malloc.h>
#include <openssl/crypto.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "core/bytes.h"
#include "core/secret.h"
#include "vhsm/keystore.h"
#include "vhsm/vault.h"
#include "vault-test-util.h"

static Vault *new_vault(const VaultQuota *q) {
    Vault *v = NULL;
    assert_int_equal(vault_new(&v), 0);
    if (q)
        assert_int_equal(vault_set_quota(v, q), 0);
    return v;
}

static VaultPeer user(uid_t uid) {
    return (VaultPeer){.uid = uid, .gid = uid, .pid = 100 + (pid_t)uid};
}

static int gen(Vault *v, const VaultPeer *p, const char *name, VaultKeyType t,
               const VaultAcl *acl) {
    VaultKeySpec spec = {.type = t, .acl = acl};
    return vault_key_generate(v, p, name, &spec);
}

static int sign_once(Vault *v, const VaultPeer *p, const char *name) {
    _cleanup_free_ uint8_t *sig = NULL;
    size_t sl = 0;
    VaultOp op = {.alg = VAULT_ALG_ECDSA};
    return vault_sign(v, p, name, &op, (const uint8_t *)"msg", 3, &sig, &sl);
}

static void test_namespaces(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault(NULL);
    VaultPeer eve = user(2000);
    json_t *d = NULL;
    char full[VAULT_FULL_NAME_MAX + 1];

    assert_int_equal(vault_name_resolve(&alice, "db", full), 0);
    assert_string_equal(full, "1000/db");
    assert_int_equal(vault_name_resolve(&alice, "2000/db", full), 0);
    assert_string_equal(full, "2000/db");
    assert_int_equal(vault_name_resolve(&alice, "x/db", full), -EINVAL);

    /* Only in one's own namespace; kms/ and others' are refused with a distinct error that is
     * checked before existence (no probing of others' names through -EEXIST). */
    assert_int_equal(gen(v, &eve, "1000/db", VAULT_KEY_AES256, NULL), -ENOTUNIQ);
    assert_int_equal(gen(v, &eve, "kms/db", VAULT_KEY_AES256, NULL), -ENOTUNIQ);
    assert_int_equal(gen(v, &eve, "0/db", VAULT_KEY_AES256, NULL), -ENOTUNIQ);
    assert_int_equal(vault_key_count(v), 0);

    /* The squat: eve pre-creates "db" granting alice use. alice's "create db" makes her own. */
    {
        VaultAcl acl = {0};
        assert_int_equal(vault_acl_list_add_uid(&acl.use, 1000), 0);
        assert_int_equal(vault_acl_list_add_uid(&acl.use, 2000), 0);
        assert_int_equal(vault_acl_list_add_uid(&acl.admin, 2000), 0);
        assert_int_equal(gen(v, &eve, "db", VAULT_KEY_AES256, &acl), 0);
        vault_acl_done(&acl);
    }
    assert_int_equal(gen(v, &alice, "db", VAULT_KEY_AES256, NULL), 0);
    assert_int_equal(gen(v, &alice, "db", VAULT_KEY_AES256, NULL), -EEXIST);
    assert_int_equal(vault_key_describe(v, &alice, "db", &d), 0);
    assert_string_equal(json_string_value(json_object_get(d, "name")), "1000/db");
    json_decref(d);
    {
        _cleanup_free_ uint8_t *ct = NULL;
        Secret *pt = NULL;
        size_t cl = 0;
        VaultOp op = {.alg = VAULT_ALG_AES256_GCM};
        assert_int_equal(vault_encrypt(v, &alice, "db", &op, (const uint8_t *)"x", 1, &ct, &cl), 0);
        assert_int_equal(vault_decrypt(v, &eve, "1000/db", &op, ct, cl, &pt), -EPERM);
        assert_int_equal(vault_decrypt(v, &eve, "db", &op, ct, cl, &pt), -EKEYREJECTED);
        /* alice may still use eve's key on purpose, by its full name */
        free(ct);
        ct = NULL;
        assert_int_equal(
            vault_encrypt(v, &alice, "2000/db", &op, (const uint8_t *)"x", 1, &ct, &cl), 0);
    }

    /* No existence probing: in another owner's namespace an absent key and a key one may not
     * use give the same answer, for use, describe and administration alike. */
    {
        _cleanup_free_ uint8_t *sig = NULL;
        size_t sl = 0;
        VaultOp op = {.alg = VAULT_ALG_AES256_GCM};
        json_t *dd = NULL;
        assert_int_equal(
            vault_encrypt(v, &eve, "1000/absent", &op, (const uint8_t *)"x", 1, &sig, &sl), -EPERM);
        assert_int_equal(vault_key_describe(v, &eve, "1000/absent", &dd), -EPERM);
        assert_int_equal(vault_key_describe(v, &eve, "1000/db", &dd), -EPERM);
        assert_int_equal(vault_key_rotate(v, &eve, "1000/absent", NULL), -EPERM);
        assert_int_equal(vault_key_delete(v, &eve, "kms/absent"), -EPERM);
        assert_int_equal(vault_key_describe(v, &eve, "absent", &dd), -ENOKEY); /* own: says so */
        assert_int_equal(vault_key_describe(v, &root_peer, "1000/absent", &dd), -ENOKEY);
    }

    /* Root creates in any uid's namespace; the key is charged to the namespace owner. kms/ is
     * import-only (KMS releases), root included. */
    assert_int_equal(gen(v, &root_peer, "kms/luks", VAULT_KEY_AES256, NULL), -ENOTUNIQ);
    assert_int_equal(gen(v, &root_peer, "0/luks", VAULT_KEY_AES256, NULL), 0);
    assert_int_equal(gen(v, &root_peer, "3000/prov", VAULT_KEY_AES256, NULL), 0);
    {
        VaultUsage u;
        vault_usage(v, 3000, &u);
        assert_int_equal(u.keys, 1);
        vault_usage(v, 0, &u);
        assert_int_equal(u.keys, 1); /* 0/luks */
    }
}

static const VaultQuota small = {
    .max_keys = 40,
    .max_versions = 60,
    .max_bytes = 256 * 1024,
    .total_bytes = 512 * 1024,
    .root_reserve = 256 * 1024,
};

/* Finding 1: one uid (then several) exhausting what it may hold leaves other uids' signing
 * working, and root (the agent) can still create keys from its reserve. */
static void test_quota_exhaustion(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault(&small);
    VaultPeer eve = user(2000);
    char name[64];
    int r = 0, n;
    uint32_t ver;
    VaultUsage all, nonroot, u;

    assert_int_equal(gen(v, &alice, "victim", VAULT_KEY_EC_P256, NULL), 0);
    for (n = 0; n < 1000; n++) {
        (void)snprintf(name, sizeof name, "k%d", n);
        if ((r = gen(v, &eve, name, VAULT_KEY_EC_P256, NULL)) < 0)
            break;
    }
    assert_int_equal(r, -EDQUOT);
    assert_true(n <= (int)small.max_keys);
    vault_usage(v, 2000, &u);
    assert_true(u.keys <= small.max_keys && u.versions <= small.max_versions &&
                u.bytes <= small.max_bytes);
    /* Versions: rotations stop at the version or byte quota, nothing changed by the refusal. */
    while ((r = vault_key_rotate(v, &eve, "k0", &ver)) == 0)
        ;
    assert_int_equal(r, -EDQUOT);
    vault_usage(v, 2000, &u);
    assert_true(u.versions <= small.max_versions && u.bytes <= small.max_bytes);
    assert_int_equal(sign_once(v, &alice, "victim"), 0);

    /* More uids fill the shared non-root total. */
    for (uid_t uid = 2001; uid < 2020; uid++) {
        VaultPeer p = user(uid);
        for (n = 0; n < 100; n++) {
            (void)snprintf(name, sizeof name, "k%d", n);
            if ((r = gen(v, &p, name, VAULT_KEY_EC_P384, NULL)) < 0)
                break;
        }
        assert_int_equal(r, -EDQUOT);
    }
    vault_usage_total(v, &all, &nonroot);
    assert_true(nonroot.bytes <= small.total_bytes);
    /* The victim's existing key still signs; a new non-root key is refused (shared limit)... */
    assert_int_equal(sign_once(v, &alice, "victim"), 0);
    assert_int_equal(gen(v, &alice, "more", VAULT_KEY_EC_P256, NULL), -EDQUOT);
    /* ...root's reserve is intact. */
    assert_int_equal(gen(v, &root_peer, "0/agent", VAULT_KEY_EC_P384, NULL), 0);
    assert_int_equal(gen(v, &root_peer, "0/agent2", VAULT_KEY_RSA2048, NULL), 0);
    /* Deleting releases the charge. */
    assert_int_equal(vault_key_delete(v, &eve, "k1"), 0);
    assert_int_equal(gen(v, &alice, "more", VAULT_KEY_EC_P256, NULL), 0);
    vault_usage_total(v, &all, &nonroot);
    assert_true(all.bytes <= small.total_bytes + small.root_reserve);
}

/* The cost table is an upper bound of what a version pins: secure heap at most a quarter (so a
 * secure heap of a quarter of the chargeable bytes holds every key), heap within the cost. */
static void test_cost_table(void **state) {
    static const VaultKeyType types[] = {
        VAULT_KEY_AES256,  VAULT_KEY_HMAC_SHA256, VAULT_KEY_HMAC_SHA384, VAULT_KEY_EC_P256,
        VAULT_KEY_EC_P384, VAULT_KEY_ED25519,     VAULT_KEY_RSA2048,     VAULT_KEY_RSA3072,
    };
    for (size_t t = 0; t < ELEMENTSOF(types); t++) {
        _cleanup_(vault_freep) Vault *v = new_vault(NULL);
        int count = types[t] == VAULT_KEY_RSA3072 ? 3 : 16;
        size_t s0, s1;
        struct mallinfo2 m0, m1;
        char name[32];
        /* one first, so that one-time allocations (method tables, contexts) are not counted */
        assert_int_equal(gen(v, &root_peer, "warm", types[t], NULL), 0);
        s0 = CRYPTO_secure_used();
        m0 = mallinfo2();
        for (int i = 0; i < count; i++) {
            (void)snprintf(name, sizeof name, "k%d", i);
            assert_int_equal(gen(v, &root_peer, name, types[t], NULL), 0);
        }
        s1 = CRYPTO_secure_used();
        m1 = mallinfo2();
        {
            uint64_t cost = vault_version_cost(types[t]);
            size_t secure = (s1 - s0) / (size_t)count;
            long heap = ((long)m1.uordblks - (long)m0.uordblks) / count;
            printf("# %-12s cost %5" PRIu64 "  secure %5zu  heap %6ld\n",
                   vault_key_type_to_string(types[t]), cost, secure, heap);
            assert_true(secure * 4 <= cost);
            assert_true(heap <= (long)cost);
        }
    }
}

/* Finding 5: ACL caps, no cgroup "/" for non-root, and a paged list that works for the victim
 * after a hostile ACL burst naming it. */
static void test_acl_caps_and_list(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault(NULL);
    VaultPeer eve = user(2000);
    VaultAcl acl = {0}, big = {0};
    char cg[VAULT_CGROUP_MAX];
    size_t seen = 0, pages = 0;
    _cleanup_free_ char *cursor = NULL;

    /* "/" for a non-root creator: refused in either list, at create and at set_acl */
    assert_int_equal(vault_acl_list_add_cgroup(&acl.use, "/"), 0);
    assert_int_equal(gen(v, &eve, "all", VAULT_KEY_AES256, &acl), -EPERM);
    assert_int_equal(gen(v, &root_peer, "all", VAULT_KEY_AES256, &acl), 0);
    vault_acl_done(&acl);
    assert_int_equal(gen(v, &eve, "mine", VAULT_KEY_AES256, NULL), 0);
    assert_int_equal(vault_acl_list_add_cgroup(&acl.admin, "/"), 0);
    assert_int_equal(vault_key_set_acl(v, &eve, "mine", &acl), -EPERM);
    vault_acl_done(&acl);

    /* Whole-ACL caps: entries and cgroup bytes. */
    for (uid_t i = 0; i < VAULT_ACL_MAX_ENTRIES; i++)
        assert_int_equal(vault_acl_list_add_uid(&acl.use, 5000 + i), 0);
    assert_int_equal(vault_acl_list_add_uid(&acl.admin, 2000), 0);
    assert_int_equal(gen(v, &eve, "wide", VAULT_KEY_AES256, &acl), -E2BIG);
    vault_acl_done(&acl);
    memset(cg, 'a', sizeof cg - 1);
    cg[0] = '/';
    cg[sizeof cg - 1] = 0;
    for (int i = 0; i < 5; i++) {
        cg[1] = (char)('a' + i);
        assert_int_equal(vault_acl_list_add_cgroup(&acl.use, cg), 0);
    }
    assert_int_equal(gen(v, &eve, "wide", VAULT_KEY_AES256, &acl), -E2BIG);
    vault_acl_done(&acl);

    /* The burst: as many keys as eve may create, each with the largest ACL allowed, all
     * naming alice. */
    assert_int_equal(vault_acl_list_add_uid(&big.use, 1000), 0);
    assert_int_equal(vault_acl_list_add_uid(&big.admin, 2000), 0);
    for (int i = 0; i < 4; i++) {
        memset(cg, 'b', 500);
        cg[0] = '/';
        cg[1] = (char)('a' + i);
        cg[500] = 0;
        assert_int_equal(vault_acl_list_add_cgroup(&big.use, cg), 0);
    }
    for (uid_t i = 0; i < VAULT_ACL_MAX_TOTAL - 6; i++)
        assert_int_equal(vault_acl_list_add_gid(&big.use, 7000 + i), 0);
    assert_int_equal(vault_acl_check_caps(&big, &eve), 0);
    for (int i = 0; i < 300; i++) {
        char name[32];
        (void)snprintf(name, sizeof name, "burst%03d", i);
        assert_int_equal(gen(v, &eve, name, VAULT_KEY_AES256, &big), 0);
    }
    vault_acl_done(&big);
    assert_int_equal(gen(v, &alice, "own", VAULT_KEY_AES256, NULL), 0);

    /* alice pages through: every page within the byte budget, sorted, no key twice. */
    for (;;) {
        json_t *page = NULL, *keys, *next;
        _cleanup_free_ char *txt = NULL;
        size_t i;
        json_t *k;
        assert_int_equal(vault_key_list_page(v, &alice, cursor, 1000, 64 * 1024, &page), 0);
        txt = json_dumps(page, JSON_COMPACT);
        assert_true(strlen(txt) <= 64 * 1024 + 4096);
        keys = json_object_get(page, "keys");
        next = json_object_get(page, "next");
        json_array_foreach(keys, i, k) {
            const char *n = json_string_value(json_object_get(k, "name"));
            assert_non_null(n);
            assert_null(json_object_get(k, "versions")); /* summaries */
            if (cursor)
                assert_true(strcmp(n, cursor) > 0);
            free(cursor);
            cursor = nt_strdup(n);
            seen++;
        }
        pages++;
        if (json_is_null(next)) {
            json_decref(page);
            break;
        }
        assert_string_equal(json_string_value(next), cursor);
        json_decref(page);
        assert_true(pages < 1000);
    }
    assert_int_equal(seen, 302); /* the burst, her own, and root's "0/all" (cgroup "/") */
    assert_true(pages > 1);
    assert_int_equal(vault_key_list_page(v, &alice, NULL, 0, 1024, &(json_t *){NULL}), -EINVAL);
}

/* Finding 8: the keystore stays bounded under a hostile mix (large ACLs, many versions, many
 * uids): at most half of the bytes charged, which the quotas keep under the file cap. */
static void test_keystore_bounded(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault(&small);
    _cleanup_(secret_freep) Secret *s = NULL;
    VaultAcl big = {0};
    char cg[VAULT_CGROUP_MAX];
    VaultUsage all, nonroot;
    VaultQuota q = {0};

    for (int i = 0; i < 3; i++) {
        memset(cg, 'c', sizeof cg - 1);
        cg[0] = '/';
        cg[1] = (char)('a' + i);
        cg[sizeof cg - 1] = 0;
        assert_int_equal(vault_acl_list_add_cgroup(&big.use, cg), 0);
    }
    for (uid_t uid = 3000; uid < 3012; uid++) {
        VaultPeer p = user(uid);
        char name[VAULT_PLAIN_NAME_MAX + 1];
        int r = 0;
        VaultAcl acl = {0};
        assert_int_equal(vault_acl_copy(&big, &acl), 0);
        assert_int_equal(vault_acl_list_add_uid(&acl.admin, uid), 0);
        for (int n = 0; n < 200 && r == 0; n++) {
            memset(name, 'n', VAULT_PLAIN_NAME_MAX);
            name[VAULT_PLAIN_NAME_MAX] = 0;
            (void)snprintf(name, 8, "%07d", n);
            name[7] = 'x';
            r = gen(v, &p, name, n % 3 ? VAULT_KEY_HMAC_SHA384 : VAULT_KEY_ED25519, &acl);
            if (r == 0 && n % 2)
                r = vault_key_rotate(v, &p, name, NULL);
        }
        assert_int_equal(r, -EDQUOT);
        vault_acl_done(&acl);
    }
    vault_acl_done(&big);
    assert_int_equal(keystore_serialize(v, &s), 0);
    vault_usage_total(v, &all, &nonroot);
    printf("# keystore %zu bytes for %u keys, %u versions, %" PRIu64 " bytes charged\n",
           secret_size(s), all.keys, all.versions, all.bytes);
    assert_true(secret_size(s) <= all.bytes / 2);
    assert_true(all.bytes <= small.total_bytes + small.root_reserve);
    /* The defaults keep the worst case under the file cap; limits that would not are refused. */
    assert_int_equal(vault_quota_normalize(&q), 0);
    assert_true((q.total_bytes + q.root_reserve) / 2 < KEYSTORE_MAX_FILE);
    q = (VaultQuota){.total_bytes = (uint64_t)KEYSTORE_MAX_FILE * 2};
    assert_int_equal(vault_quota_normalize(&q), -EINVAL);
    q = (VaultQuota){.max_bytes = 2 << 20, .total_bytes = 1 << 20};
    assert_int_equal(vault_quota_normalize(&q), -EINVAL);
    /* the heap the quotas need is a power of two with the operations headroom */
    q = (VaultQuota){0};
    assert_int_equal(vault_quota_secure_heap_size(&q), 32u << 20);
}

/* Keystores written before namespaces (content format 1, plain names) load with each name in
 * its first non-root administrator's namespace (root's if none). */
static size_t put_key_v1(uint8_t *b, const char *name, uid_t admin, uid_t other, uint8_t fill) {
    size_t o = 0, n = strlen(name);
    bytes_put_be16(b + o, (uint16_t)n), o += 2;
    memcpy(b + o, name, n), o += n;
    b[o++] = VAULT_KEY_AES256;
    b[o++] = 0; /* origin: generated */
    b[o++] = VAULT_POLICY_LOCAL;
    b[o++] = 0;
    bytes_put_be32(b + o, 0), o += 4; /* max age */
    bytes_put_be16(b + o, 0), o += 2; /* label */
    bytes_put_be32(b + o, 1), o += 4; /* latest */
    bytes_put_be32(b + o, 1), o += 4; /* min */
    /* use: the admin (and other), no gids, no cgroups */
    bytes_put_be16(b + o, other ? 2 : 1), o += 2;
    bytes_put_be32(b + o, admin), o += 4;
    if (other)
        bytes_put_be32(b + o, other), o += 4;
    bytes_put_be16(b + o, 0), o += 2;
    bytes_put_be16(b + o, 0), o += 2;
    /* admin: root first (ignored for the owner), then the uid (and other) */
    bytes_put_be16(b + o, (uint16_t)(1 + (admin ? 1 : 0) + (other ? 1 : 0))), o += 2;
    bytes_put_be32(b + o, 0), o += 4;
    if (admin)
        bytes_put_be32(b + o, admin), o += 4;
    if (other)
        bytes_put_be32(b + o, other), o += 4;
    bytes_put_be16(b + o, 0), o += 2;
    bytes_put_be16(b + o, 0), o += 2;
    bytes_put_be32(b + o, 1), o += 4;
    bytes_put_be64(b + o, 1700000000), o += 8;
    bytes_put_be32(b + o, 32), o += 4;
    memset(b + o, fill, 32), o += 32;
    return o;
}

static void test_format1_migration(void **state) {
    _cleanup_(vault_freep) Vault *v = new_vault(NULL);
    uint8_t buf[1024];
    size_t o = 0;
    json_t *d = NULL;
    VaultUsage u;

    memcpy(buf, "NTKC", 4), o += 4;
    bytes_put_be32(buf + o, 1), o += 4;
    bytes_put_be32(buf + o, 3), o += 4;
    o += put_key_v1(buf + o, "agent", 0, 0, 0x22);
    o += put_key_v1(buf + o, "app", 1000, 0, 0x11);
    /* a squat from before namespaces: uid 2000 made "db-key" listing its victim 1000 first */
    o += put_key_v1(buf + o, "db-key", 1000, 2000, 0x33);
    assert_int_equal(keystore_deserialize(v, buf, o), 0);
    assert_int_equal(vault_key_describe(v, &alice, "app", &d), 0);
    assert_string_equal(json_string_value(json_object_get(d, "name")), "1000/app");
    json_decref(d);
    assert_int_equal(vault_key_describe(v, &root_peer, "agent", &d), 0);
    assert_string_equal(json_string_value(json_object_get(d, "name")), "0/agent");
    json_decref(d);
    /* shared keys go to root's namespace, never into one of their users' */
    assert_int_equal(vault_key_describe(v, &root_peer, "0/db-key", &d), 0);
    json_decref(d);
    assert_int_equal(vault_key_describe(v, &alice, "db-key", &d), -ENOKEY);
    vault_usage(v, 1000, &u);
    assert_int_equal(u.keys, 1);
    /* saved again in the current format (3: format 2's full names, then the tokens) */
    {
        _cleanup_(secret_freep) Secret *s = NULL;
        _cleanup_(vault_freep) Vault *w = new_vault(NULL);
        assert_int_equal(keystore_serialize(v, &s), 0);
        assert_int_equal(bytes_get_be32(secret_const_data(s) + 4), 3);
        assert_int_equal(keystore_deserialize(w, secret_const_data(s), secret_size(s)), 0);
        assert_int_equal(vault_key_count(w), 3);
    }
    /* a format-2 file with a plain name is malformed; a format-1 name with a '/' too */
    {
        _cleanup_(vault_freep) Vault *w = new_vault(NULL);
        bytes_put_be32(buf + 4, 2);
        assert_int_equal(keystore_deserialize(w, buf, o), -EBADMSG);
        assert_int_equal(vault_key_count(w), 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_namespaces),       cmocka_unit_test(test_quota_exhaustion),
        cmocka_unit_test(test_cost_table),       cmocka_unit_test(test_acl_caps_and_list),
        cmocka_unit_test(test_keystore_bounded), cmocka_unit_test(test_format1_migration),
    };
    if (vault_init(32u << 20) < 0)
        return 1;
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    OPENSSL_cleanup();
    return r;
}
