/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PKCS#11 objects that are not keys (vault-object.c), session objects and object copies in the
 * vault: data objects, X.509 certificates (parsed by OpenSSL, garbage refused and nothing
 * stored), lone public keys (accepted curves and sizes only), size caps and quota charge,
 * visibility of public objects without a login and of PRIVATE data values with it, CKA_TRUSTED
 * for the SO only, DESTROYABLE, the keystore round trip (session objects never saved), session
 * objects bound to one connection, and C_CopyObject's rules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

#include "vhsm/keystore.h"
#include "vhsm/vault.h"
#include "vault-test-util.h"

#define CKA_LABEL 0x003u
#define CKA_APPLICATION 0x010u
#define CKA_SUBJECT 0x101u
#define SO_PIN "so-pin-1234"
#define USER_PIN "user-pin-1234"
#define PIN(s) (const uint8_t *)(s), strlen(s)

static Vault *new_vault(void) {
    Vault *v = NULL;
    assert_int_equal(vault_new(&v), 0);
    assert_int_equal(vault_set_pin_policy(v, 5, 1000), 0);
    return v;
}

/* A self-signed P-256 certificate, DER (malloc'd). */
static uint8_t *make_cert(size_t *ret_len) {
    EVP_PKEY *k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    X509 *x = X509_new();
    X509_NAME *n = X509_NAME_new();
    unsigned char *der = NULL;
    uint8_t *out;
    int len;
    assert_non_null(k);
    assert_non_null(x);
    assert_int_equal(X509_set_version(x, 2), 1);
    assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), 42), 1);
    assert_int_equal(X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
                                                (const unsigned char *)"vhsm test", -1, -1, 0),
                     1);
    assert_int_equal(X509_set_subject_name(x, n), 1);
    assert_int_equal(X509_set_issuer_name(x, n), 1);
    assert_non_null(X509_gmtime_adj(X509_getm_notBefore(x), 0));
    assert_non_null(X509_gmtime_adj(X509_getm_notAfter(x), 3600));
    assert_int_equal(X509_set_pubkey(x, k), 1);
    assert_true(X509_sign(x, k, EVP_sha256()) > 0);
    len = i2d_X509(x, &der);
    assert_true(len > 0);
    out = malloc((size_t)len);
    memcpy(out, der, (size_t)len);
    OPENSSL_free(der);
    X509_NAME_free(n);
    X509_free(x);
    EVP_PKEY_free(k);
    *ret_len = (size_t)len;
    return out;
}

/* SPKI DER of a new key of OpenSSL type/param (malloc'd). */
static uint8_t *make_spki(const char *type, const char *param, size_t bits, size_t *ret_len) {
    EVP_PKEY *k = bits    ? EVP_PKEY_Q_keygen(NULL, NULL, type, bits)
                  : param ? EVP_PKEY_Q_keygen(NULL, NULL, type, param)
                          : EVP_PKEY_Q_keygen(NULL, NULL, type);
    unsigned char *der = NULL;
    uint8_t *out;
    int len;
    assert_non_null(k);
    len = i2d_PUBKEY(k, &der);
    assert_true(len > 0);
    out = malloc((size_t)len);
    memcpy(out, der, (size_t)len);
    OPENSSL_free(der);
    EVP_PKEY_free(k);
    *ret_len = (size_t)len;
    return out;
}

static int create(Vault *v, const VaultPeer *p, const char *name, VaultKeyType t, uint32_t flags,
                  const void *value, size_t len) {
    VaultKeySpec s = {.type = t, .obj_flags = flags};
    return vault_object_create(v, p, name, &s, value, len);
}

static json_t *describe(Vault *v, const VaultPeer *p, const char *name) {
    json_t *j = NULL;
    assert_int_equal(vault_key_describe(v, p, name, &j), 0);
    return j;
}

static void test_values_checked(void **state) {
    Vault *v = new_vault();
    size_t cl, sl, n;
    uint8_t *cert = make_cert(&cl), *spki, big[VAULT_CERT_MAX + 1];
    VaultUsage before, after;
    json_t *j;
    (void)state;

    /* data: any bytes up to the cap */
    assert_int_equal(create(v, &alice, "d", VAULT_KEY_DATA, 0, "hello", 5), 0);
    j = describe(v, &alice, "d");
    assert_string_equal(json_string_value(json_object_get(j, "type")), "data");
    assert_string_equal(json_string_value(json_object_get(j, "value")), "68656c6c6f");
    assert_int_equal(json_integer_value(json_object_get(j, "flags")),
                     VAULT_OBJ_MODIFIABLE | VAULT_OBJ_COPYABLE | VAULT_OBJ_DESTROYABLE);
    json_decref(j);
    memset(big, 'x', sizeof big);
    assert_int_equal(create(v, &alice, "d2", VAULT_KEY_DATA, 0, big, VAULT_DATA_MAX + 1), -E2BIG);
    assert_int_equal(create(v, &alice, "d2", VAULT_KEY_DATA, 0, big, 0), -EBADMSG);
    assert_int_equal(create(v, &alice, "d2", VAULT_KEY_DATA, 0, big, VAULT_DATA_MAX), 0);

    /* certificates: one DER X.509, nothing else; refused ones leave nothing behind */
    vault_usage(v, alice.uid, &before);
    assert_int_equal(create(v, &alice, "c", VAULT_KEY_CERT, 0, "garbage", 7), -EBADMSG);
    assert_int_equal(create(v, &alice, "c", VAULT_KEY_CERT, 0, cert, cl - 1), -EBADMSG);
    {
        uint8_t *t = malloc(cl + 1);
        memcpy(t, cert, cl);
        t[cl] = 0;
        assert_int_equal(create(v, &alice, "c", VAULT_KEY_CERT, 0, t, cl + 1), -EBADMSG);
        free(t);
    }
    memset(big, 0x30, sizeof big);
    assert_int_equal(create(v, &alice, "c", VAULT_KEY_CERT, 0, big, sizeof big), -E2BIG);
    vault_usage(v, alice.uid, &after);
    assert_int_equal(after.keys, before.keys);
    assert_int_equal(after.bytes, before.bytes);
    n = vault_key_count(v);
    assert_int_equal(create(v, &alice, "c", VAULT_KEY_CERT, 0, cert, cl), 0);
    assert_int_equal(vault_key_count(v), n + 1);
    j = describe(v, &alice, "c");
    assert_int_equal(strlen(json_string_value(json_object_get(j, "value"))), 2 * cl);
    json_decref(j);
    /* no operation, no rotation, no generation of these types */
    assert_int_equal(vault_key_rotate(v, &alice, "c", NULL), -EOPNOTSUPP);
    assert_int_equal(vault_key_generate(v, &alice, "g", &(VaultKeySpec){.type = VAULT_KEY_DATA}),
                     -EOPNOTSUPP);
    {
        VaultOp op = {.alg = VAULT_ALG_ECDSA};
        uint8_t *sig = NULL;
        size_t sig_len = 0;
        assert_int_equal(vault_sign(v, &alice, "c", &op, (const uint8_t *)"x", 1, &sig, &sig_len),
                         -EOPNOTSUPP);
    }

    /* public keys: the vault's curves and sizes */
    spki = make_spki("EC", "P-384", 0, &sl);
    assert_int_equal(create(v, &alice, "p384", VAULT_KEY_PUBLIC, 0, spki, sl), 0);
    j = describe(v, &alice, "p384");
    assert_int_equal(json_integer_value(json_object_get(j, "bits")), 384);
    assert_int_equal(strlen(json_string_value(json_object_get(j, "spki"))), 2 * sl);
    assert_int_equal(json_integer_value(json_object_get(j, "flags")),
                     VAULT_OBJ_VERIFY | VAULT_OBJ_ENCRYPT | VAULT_OBJ_MODIFIABLE |
                         VAULT_OBJ_COPYABLE | VAULT_OBJ_DESTROYABLE);
    json_decref(j);
    free(spki);
    spki = make_spki("ED25519", NULL, 0, &sl);
    assert_int_equal(create(v, &alice, "ed", VAULT_KEY_PUBLIC, 0, spki, sl), 0);
    free(spki);
    spki = make_spki("EC", "P-521", 0, &sl);
    assert_int_equal(create(v, &alice, "p521", VAULT_KEY_PUBLIC, 0, spki, sl), -EBADMSG);
    free(spki);
    spki = make_spki("RSA", NULL, 1024, &sl);
    assert_int_equal(create(v, &alice, "rsa1k", VAULT_KEY_PUBLIC, 0, spki, sl), -EBADMSG);
    free(spki);
    assert_int_equal(create(v, &alice, "cert-as-key", VAULT_KEY_PUBLIC, 0, cert, cl), -EBADMSG);
    {
        /* the public key is exported like a key pair's */
        char *pem = NULL;
        assert_int_equal(vault_key_export_public(v, &alice, "ed", 0, VAULT_PUB_PEM, &pem), 0);
        assert_non_null(strstr(pem, "BEGIN PUBLIC KEY"));
        free(pem);
    }
    /* another uid sees none of it */
    assert_int_equal(vault_key_describe(v, &bob, "1000/c", &j), -EPERM);
    free(cert);
    vault_free(v);
}

static void test_quota_and_destroyable(void **state) {
    Vault *v = new_vault();
    VaultQuota q = {.max_bytes = 80 * 1024};
    uint8_t d[VAULT_DATA_MAX];
    char name[16];
    int r = 0, made = 0;
    (void)state;
    memset(d, 7, sizeof d);
    assert_int_equal(vault_set_quota(v, &q), 0);
    for (int i = 0; i < 100 && r == 0; i++) {
        snprintf(name, sizeof name, "d%d", i);
        r = create(v, &alice, name, VAULT_KEY_DATA, 0, d, sizeof d);
        made += r == 0;
    }
    assert_int_equal(r, -EDQUOT);
    assert_true(made >= 2 && made < 10); /* each charged its cost (16 KiB + metadata) */
    assert_int_equal(create(v, &alice, "nd", VAULT_KEY_DATA, VAULT_OBJ_MODIFIABLE, "x", 1),
                     -EDQUOT);
    assert_int_equal(vault_key_delete(v, &alice, "d0"), 0);
    assert_int_equal(create(v, &alice, "nd", VAULT_KEY_DATA, VAULT_OBJ_MODIFIABLE, "x", 1), 0);
    assert_int_equal(vault_key_delete(v, &alice, "nd"), -EPERM); /* not DESTROYABLE */
    vault_free(v);
}

static void init_token_with_user(Vault *v, VaultPeer *p) {
    VaultSession *so = NULL;
    assert_int_equal(vault_token_init(v, p, PIN(SO_PIN), (const uint8_t *)"tok", 3), 0);
    assert_int_equal(vault_login(v, p, VAULT_USER_SO, PIN(SO_PIN), &so, NULL), 0);
    p->session = so;
    assert_int_equal(vault_init_pin(v, p, PIN(USER_PIN)), 0);
    vault_logout(so);
    p->session = vault_session_unref(so);
}

static bool listed(Vault *v, const VaultPeer *p, const char *full, json_t **ret_entry) {
    json_t *page = NULL, *e;
    size_t i;
    bool found = false;
    assert_int_equal(vault_key_list_page(v, p, NULL, 1000, 1 << 20, &page), 0);
    json_array_foreach(json_object_get(page, "keys"), i, e) {
        if (streq(json_string_value(json_object_get(e, "name")), full)) {
            found = true;
            if (ret_entry)
                *ret_entry = json_incref(e);
        }
    }
    json_decref(page);
    return found;
}

static void test_login_rules(void **state) {
    Vault *v = new_vault();
    VaultPeer a = alice, so_peer = alice;
    VaultSession *user = NULL, *so = NULL;
    size_t cl;
    uint8_t *cert = make_cert(&cl);
    json_t *e = NULL;
    (void)state;
    init_token_with_user(v, &a);
    /* creating needs the user's login */
    assert_int_equal(create(v, &a, "pub", VAULT_KEY_DATA, 0, "public", 6), -EBADR);
    assert_int_equal(vault_login(v, &a, VAULT_USER_USER, PIN(USER_PIN), &user, NULL), 0);
    a.session = user;
    assert_int_equal(create(v, &a, "pub", VAULT_KEY_DATA, 0, "public", 6), 0);
    assert_int_equal(create(v, &a, "priv", VAULT_KEY_DATA, VAULT_OBJ_PRIVATE, "secret", 6), 0);
    assert_int_equal(create(v, &a, "cert", VAULT_KEY_CERT, 0, cert, cl), 0);
    /* CKA_TRUSTED: the SO only */
    assert_int_equal(create(v, &a, "ca", VAULT_KEY_CERT, VAULT_OBJ_TRUSTED, cert, cl), -EPERM);
    assert_int_equal(vault_login(v, &so_peer, VAULT_USER_SO, PIN(SO_PIN), &so, NULL), 0);
    so_peer.session = so;
    assert_int_equal(create(v, &so_peer, "ca", VAULT_KEY_CERT, VAULT_OBJ_TRUSTED, cert, cl), 0);
    /* the SO may create public objects, not private ones, and never use keys */
    assert_int_equal(create(v, &so_peer, "so-priv", VAULT_KEY_DATA, VAULT_OBJ_PRIVATE, "x", 1),
                     -EBADR);
    /* trust cannot be changed afterwards */
    assert_int_equal(vault_key_set_object(v, &a, "cert", VAULT_OBJ_TRUSTED, 0, NULL, 0), -EPERM);

    /* without a login: public objects listed with their values, the PRIVATE value not shown */
    assert_true(listed(v, &alice, "1000/pub", &e));
    assert_string_equal(json_string_value(json_object_get(e, "value")), "7075626c6963");
    json_decref(e);
    e = NULL;
    assert_true(listed(v, &alice, "1000/ca", &e));
    assert_true(json_integer_value(json_object_get(e, "flags")) & VAULT_OBJ_TRUSTED);
    json_decref(e);
    e = NULL;
    assert_true(listed(v, &alice, "1000/priv", &e));
    assert_null(json_object_get(e, "value"));
    json_decref(e);
    e = describe(v, &alice, "priv");
    assert_null(json_object_get(e, "value"));
    json_decref(e);
    /* with it, shown */
    e = describe(v, &a, "priv");
    assert_string_equal(json_string_value(json_object_get(e, "value")), "736563726574");
    json_decref(e);
    /* other uids: nothing */
    assert_false(listed(v, &bob, "1000/pub", NULL));
    /* deleting needs the login too */
    assert_int_equal(vault_key_delete(v, &alice, "pub"), -EBADR);
    assert_int_equal(vault_key_delete(v, &a, "pub"), 0);

    vault_logout(so);
    vault_session_unref(so);
    vault_logout(user);
    vault_session_unref(user);
    free(cert);
    vault_free(v);
}

static void test_keystore(void **state) {
    Vault *v = new_vault(), *w = new_vault();
    VaultPeer conn = alice;
    Secret *content = NULL;
    size_t cl, sl;
    uint8_t *cert = make_cert(&cl), *spki = make_spki("RSA", NULL, 2048, &sl);
    const VaultAttr attrs[] = {{CKA_LABEL, (const uint8_t *)"cert label", 10},
                               {CKA_SUBJECT, (const uint8_t *)"\x30\x00", 2}};
    VaultKeySpec s = {.type = VAULT_KEY_CERT, .attrs = attrs, .n_attrs = 2};
    json_t *a, *b;
    (void)state;
    conn.conn_id = 7;
    assert_int_equal(vault_object_create(v, &alice, "c", &s, cert, cl), 0);
    assert_int_equal(create(v, &alice, "p", VAULT_KEY_PUBLIC, 0, spki, sl), 0);
    assert_int_equal(create(v, &alice, "d", VAULT_KEY_DATA, VAULT_OBJ_PRIVATE, "dd", 2), 0);
    assert_int_equal(create(v, &conn, "s", VAULT_KEY_DATA, VAULT_OBJ_SESSION, "ss", 2), 0);
    assert_int_equal(keystore_serialize(v, &content), 0);
    assert_int_equal(keystore_deserialize(w, secret_const_data(content), secret_size(content)), 0);
    assert_int_equal(vault_key_count(w), 3); /* the session object is not saved */
    assert_int_equal(vault_session_object_count(w), 0);
    for (const char *const *n = (const char *const[]){"c", "p", "d", NULL}; *n; n++) {
        a = describe(v, &alice, *n);
        b = describe(w, &alice, *n);
        assert_true(json_equal(json_object_get(a, "value"), json_object_get(b, "value")));
        assert_true(json_equal(json_object_get(a, "attrs"), json_object_get(b, "attrs")));
        assert_true(json_equal(json_object_get(a, "flags"), json_object_get(b, "flags")));
        assert_string_equal(json_string_value(json_object_get(a, "type")),
                            json_string_value(json_object_get(b, "type")));
        json_decref(a);
        json_decref(b);
    }
    secret_free(content);
    free(cert);
    free(spki);
    vault_free(w);
    vault_free(v);
}

static void test_session_objects(void **state) {
    Vault *v = new_vault();
    VaultPeer c1 = alice, c2 = alice, none = alice;
    VaultUsage u0, u1;
    json_t *j = NULL;
    VaultOp op = {.alg = VAULT_ALG_ECDSA};
    uint8_t dg[32] = {1}, *sig = NULL;
    size_t sig_len = 0;
    (void)state;
    c1.conn_id = 1;
    c2.conn_id = 2;
    vault_usage(v, alice.uid, &u0);
    /* a session object needs a connection */
    assert_int_equal(create(v, &none, "s", VAULT_KEY_DATA, VAULT_OBJ_SESSION, "v", 1), -EINVAL);
    assert_int_equal(create(v, &c1, "s", VAULT_KEY_DATA, VAULT_OBJ_SESSION, "v", 1), 0);
    /* keys too */
    assert_int_equal(
        vault_key_generate(v, &c1, "sk",
                           &(VaultKeySpec){.type = VAULT_KEY_EC_P256,
                                           .obj_flags = VAULT_OBJ_DEFAULT | VAULT_OBJ_SESSION}),
        0);
    vault_usage(v, alice.uid, &u1);
    assert_int_equal(u1.keys, u0.keys + 2); /* charged */
    assert_int_equal(vault_session_object_count(v), 2);
    j = describe(v, &c1, "s");
    assert_true(json_is_true(json_object_get(j, "session")));
    assert_true(json_integer_value(json_object_get(j, "flags")) & VAULT_OBJ_SESSION);
    json_decref(j);
    op.flags = VAULT_OP_PREHASHED;
    assert_int_equal(vault_sign(v, &c1, "sk", &op, dg, sizeof dg, &sig, &sig_len), 0);
    free(sig);
    sig = NULL;
    /* another connection of the same uid sees nothing */
    assert_int_equal(vault_key_describe(v, &c2, "s", &j), -ENOKEY);
    assert_int_equal(vault_sign(v, &c2, "sk", &op, dg, sizeof dg, &sig, &sig_len), -ENOKEY);
    assert_int_equal(vault_key_delete(v, &c2, "s"), -ENOKEY);
    assert_false(listed(v, &c2, "1000/s", NULL));
    assert_true(listed(v, &c1, "1000/s", NULL));
    /* CKA_TOKEN cannot be changed */
    assert_int_equal(vault_key_set_object(v, &c1, "s", 0, VAULT_OBJ_SESSION, NULL, 0), -EPERM);
    /* the connection closes: gone, uncharged */
    vault_session_objects_drop(v, 2); /* another connection: nothing */
    assert_int_equal(vault_session_object_count(v), 2);
    vault_session_objects_drop(v, 1);
    assert_int_equal(vault_session_object_count(v), 0);
    assert_int_equal(vault_key_describe(v, &c1, "s", &j), -ENOKEY);
    vault_usage(v, alice.uid, &u1);
    assert_int_equal(u1.keys, u0.keys);
    assert_int_equal(u1.bytes, u0.bytes);
    vault_free(v);
}

static void test_copy(void **state) {
    Vault *v = new_vault();
    VaultPeer c1 = alice;
    const VaultAttr lab = {CKA_LABEL, (const uint8_t *)"copy", 4};
    VaultOp op = {.alg = VAULT_ALG_ECDSA, .flags = VAULT_OP_PREHASHED};
    uint8_t dg[32] = {2}, *sig = NULL;
    size_t sig_len = 0;
    json_t *a, *b;
    (void)state;
    c1.conn_id = 9;
    assert_int_equal(create(v, &alice, "d", VAULT_KEY_DATA, 0, "abc", 3), 0);
    assert_int_equal(vault_object_copy(v, &alice, "d", "d2", VAULT_OBJ_PRIVATE, 0, &lab, 1), 0);
    a = describe(v, &alice, "d2");
    assert_string_equal(json_string_value(json_object_get(a, "value")), "616263");
    assert_true(json_integer_value(json_object_get(a, "flags")) & VAULT_OBJ_PRIVATE);
    assert_int_equal(json_array_size(json_object_get(a, "attrs")), 1);
    json_decref(a);
    assert_int_equal(vault_object_copy(v, &alice, "d", "d2", 0, 0, NULL, 0), -EEXIST);
    assert_int_equal(vault_object_copy(v, &alice, "nope", "d3", 0, 0, NULL, 0), -ENOKEY);
    assert_int_equal(vault_object_copy(v, &bob, "1000/d", "d3", 0, 0, NULL, 0), -EPERM);
    /* not copyable */
    assert_int_equal(create(v, &alice, "nc", VAULT_KEY_DATA, VAULT_OBJ_DESTROYABLE, "x", 1), 0);
    assert_int_equal(vault_object_copy(v, &alice, "nc", "nc2", 0, 0, NULL, 0), -EPERM);
    /* keys: the copy signs with the same key; one-way rules */
    assert_int_equal(
        vault_key_generate(v, &alice, "k",
                           &(VaultKeySpec){.type = VAULT_KEY_EC_P256,
                                           .obj_flags = VAULT_OBJ_DEFAULT | VAULT_OBJ_COPYABLE |
                                                        VAULT_OBJ_EXTRACTABLE}),
        0);
    assert_int_equal(vault_object_copy(v, &alice, "k", "k2", 0, VAULT_OBJ_SENSITIVE, NULL, 0),
                     -EPERM);
    assert_int_equal(vault_object_copy(v, &alice, "k", "k2", 0, VAULT_OBJ_TRUSTED, NULL, 0), 0);
    assert_int_equal(vault_key_delete(v, &alice, "k2"), 0);
    assert_int_equal(vault_object_copy(v, &alice, "k", "k2", 0, VAULT_OBJ_EXTRACTABLE, NULL, 0), 0);
    assert_int_equal(vault_object_copy(v, &alice, "k2", "k3", VAULT_OBJ_EXTRACTABLE, 0, NULL, 0),
                     -EPERM);
    a = describe(v, &alice, "k");
    b = describe(v, &alice, "k2");
    assert_true(json_equal(json_object_get(a, "spki"), json_object_get(b, "spki")));
    assert_false(json_integer_value(json_object_get(b, "flags")) & VAULT_OBJ_EXTRACTABLE);
    /* origin flags kept */
    assert_true(json_integer_value(json_object_get(b, "flags")) & VAULT_OBJ_LOCAL);
    json_decref(a);
    json_decref(b);
    assert_int_equal(vault_sign(v, &alice, "k2", &op, dg, sizeof dg, &sig, &sig_len), 0);
    free(sig);
    /* a session copy lives with its connection */
    assert_int_equal(vault_object_copy(v, &c1, "k", "ks", VAULT_OBJ_SESSION, 0, NULL, 0), 0);
    assert_int_equal(vault_session_object_count(v), 1);
    assert_int_equal(vault_key_describe(v, &alice, "ks", &a), -ENOKEY);
    vault_session_objects_drop(v, 9);
    assert_int_equal(vault_session_object_count(v), 0);
    /* the source's deletion leaves the copy working */
    assert_int_equal(vault_key_delete(v, &alice, "k"), 0);
    sig = NULL;
    assert_int_equal(vault_sign(v, &alice, "k2", &op, dg, sizeof dg, &sig, &sig_len), 0);
    free(sig);
    vault_free(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_values_checked),  cmocka_unit_test(test_quota_and_destroyable),
        cmocka_unit_test(test_login_rules),     cmocka_unit_test(test_keystore),
        cmocka_unit_test(test_session_objects), cmocka_unit_test(test_copy),
    };
    secret_set_allow_unlocked(true);
    if (vault_init(0) < 0)
        return 1;
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    /* libjose initialises OpenSSL from a library constructor, so OpenSSL's atexit cleanup is
     * not run in time for LeakSanitizer: clean up explicitly. */
    OPENSSL_cleanup();
    return r;
}
