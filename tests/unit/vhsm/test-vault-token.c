/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tokens and PINs in the vault (vault.h "Tokens and PINs"), over a real sealed keystore on the
 * simulated SNP firmware: initialisation and flags, the login rule on top of the ACL, lockout
 * counters that survive a reload, tickets bound to uid and pid, logout revoking every holder,
 * safe re-initialisation, SetPIN, concurrent wrong PINs never answered beyond the limit, and a
 * strict parser for the token section of the keystore content.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "snp/provider.h"
#include "snp/sim.h"
#include "vhsm/keystore.h"
#include "vhsm/vault.h"
#include "vault-test-util.h"

static char tmpdir[] = "/tmp/nt-vtoken-XXXXXX";
static char simdir[512];

#define SO_PIN "so-secret-1"
#define USER_PIN "1234"
#define PIN(s) (const uint8_t *)(s), strlen(s)

static int setup_all(void **state) {
    SimInitOptions o = {.product = SNP_PRODUCT_MILAN};
    (void)state;
    if (!mkdtemp(tmpdir))
        return -1;
    snprintf(simdir, sizeof simdir, "%s/chip", tmpdir);
    return sim_chip_init(simdir, &o) < 0 ? -1 : 0;
}

static int teardown_all(void **state) {
    char cmd[600];
    (void)state;
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

typedef struct Env {
    SnpProvider *p;
    Keystore *ks;
    Vault *v;
    char path[600];
} Env;

/* A vault on a keystore file (loaded if it exists). */
static void env_open(Env *e, const char *name, bool fresh) {
    snprintf(e->path, sizeof e->path, "%s/%s", tmpdir, name);
    if (fresh)
        (void)unlink(e->path);
    assert_int_equal(snp_provider_open("sim", simdir, &e->p), 0);
    assert_int_equal(keystore_new(e->p, e->path, NULL, &e->ks), 0);
    assert_int_equal(vault_new(&e->v), 0);
    assert_int_equal(vault_set_pin_policy(e->v, 3, 1000), 0);
    int r = keystore_load(e->ks, e->v);
    assert_true(r == 0 || r == -ENOENT);
    vault_set_keystore(e->v, e->ks);
}

static void env_close(Env *e) {
    e->v = vault_free(e->v);
    e->ks = keystore_free(e->ks);
    e->p = snp_provider_free(e->p);
}

static uint32_t flags_of(Vault *v, const VaultPeer *p) {
    VaultTokenInfo ti;
    assert_int_equal(vault_token_info(v, p, &ti), 0);
    return ti.flags;
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

static void test_init_and_info(void **state) {
    Env e = {0};
    VaultPeer a = alice;
    VaultTokenInfo ti;
    VaultSession *s = NULL;
    (void)state;
    env_open(&e, "init", true);

    assert_int_equal(vault_token_info(e.v, &a, &ti), 0);
    assert_int_equal(ti.flags, 0);
    assert_int_equal(ti.uid, 1000);
    assert_int_equal(ti.login, VAULT_USER_NONE);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_SO, PIN(SO_PIN), &s, NULL), -ENOMEDIUM);
    assert_int_equal(vault_token_init(e.v, &a, PIN("123"), NULL, 0), -ERANGE);
    assert_int_equal(vault_token_init(e.v, &a, (const uint8_t *)SO_PIN, 65, NULL, 0), -ERANGE);
    assert_int_equal(vault_token_init(e.v, &a, PIN(SO_PIN), (const uint8_t *)"a\0b", 3), -EINVAL);
    assert_int_equal(vault_token_init(e.v, &a, PIN(SO_PIN),
                                      (const uint8_t *)"0123456789012345678901234567890123", 33),
                     -EINVAL);
    assert_int_equal(flags_of(e.v, &a), 0); /* refusals changed nothing */

    assert_int_equal(vault_token_init(e.v, &a, PIN(SO_PIN), (const uint8_t *)"my token", 8), 0);
    assert_int_equal(vault_token_info(e.v, &a, &ti), 0);
    assert_int_equal(ti.flags, VAULT_TOKEN_INITIALIZED);
    assert_int_equal(ti.label_len, 8);
    assert_memory_equal(ti.label, "my token", 8);
    assert_int_equal(strlen(ti.serial), 16);
    assert_int_equal(ti.max_tries, 3);
    /* bob's token is another one, still uninitialised */
    assert_int_equal(flags_of(e.v, &bob), 0);
    /* user PIN not set yet */
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN(USER_PIN), &s, NULL), -ENODATA);
    /* InitPIN needs the SO logged in */
    assert_int_equal(vault_init_pin(e.v, &a, PIN(USER_PIN)), -EBADR);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_SO, PIN(SO_PIN), &s, NULL), 0);
    a.session = s;
    assert_int_equal(vault_init_pin(e.v, &a, PIN("12")), -ERANGE);
    assert_int_equal(vault_init_pin(e.v, &a, PIN(USER_PIN)), 0);
    a.session = vault_session_unref(s);
    assert_int_equal(flags_of(e.v, &a), VAULT_TOKEN_INITIALIZED | VAULT_TOKEN_USER_PIN_INITIALIZED |
                                            VAULT_TOKEN_LOGIN_REQUIRED);
    env_close(&e);
    /* Persisted: the same after a reload. */
    env_open(&e, "init", false);
    assert_int_equal(vault_token_info(e.v, &a, &ti), 0);
    assert_int_equal(ti.flags, VAULT_TOKEN_INITIALIZED | VAULT_TOKEN_USER_PIN_INITIALIZED |
                                   VAULT_TOKEN_LOGIN_REQUIRED);
    assert_memory_equal(ti.label, "my token", 8);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN(USER_PIN), &s, NULL), 0);
    vault_session_unref(s);
    env_close(&e);
}

static void test_login_rule(void **state) {
    Env e = {0};
    VaultPeer a = alice, b = bob;
    VaultKeySpec spec = {.type = VAULT_KEY_EC_P256};
    VaultOp op = {.alg = VAULT_ALG_ECDSA};
    VaultAcl acl = {0};
    VaultSession *s = NULL, *so = NULL;
    uint8_t *sig = NULL;
    size_t sig_len;
    char *pem = NULL;
    json_t *j = NULL;
    (void)state;
    env_open(&e, "rule", true);

    assert_int_equal(vault_acl_list_add_uid(&acl.use, 1000), 0);
    assert_int_equal(vault_acl_list_add_uid(&acl.use, 1001), 0);
    assert_int_equal(vault_acl_list_add_uid(&acl.admin, 1000), 0);
    spec.acl = &acl;
    assert_int_equal(vault_key_generate(e.v, &a, "k", &spec), 0);
    init_token_with_user(e.v, &a);

    /* Not logged in: no private use, no key change; public things stay readable. */
    assert_int_equal(vault_sign(e.v, &a, "k", &op, (const uint8_t *)"m", 1, &sig, &sig_len),
                     -EBADR);
    assert_int_equal(vault_key_rotate(e.v, &a, "k", NULL), -EBADR);
    assert_int_equal(vault_key_delete(e.v, &a, "k"), -EBADR);
    assert_int_equal(vault_key_generate(e.v, &a, "k2", &(VaultKeySpec){.type = VAULT_KEY_AES256}),
                     -EBADR);
    assert_int_equal(vault_key_describe(e.v, &a, "k", &j), 0);
    json_decref(j);
    assert_int_equal(vault_key_export_public(e.v, &a, "k", 0, VAULT_PUB_PEM, &pem), 0);
    free(pem);
    /* The ACL still comes first: bob's own token has no user PIN, so his ACL use works. */
    assert_int_equal(vault_sign(e.v, &b, "1000/k", &op, (const uint8_t *)"m", 1, &sig, &sig_len),
                     0);
    free(sig);
    sig = NULL;

    /* The SO's login authorises no key use. */
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_SO, PIN(SO_PIN), &so, NULL), 0);
    a.session = so;
    assert_int_equal(vault_sign(e.v, &a, "k", &op, (const uint8_t *)"m", 1, &sig, &sig_len),
                     -EBADR);
    /* Another user type on the same connection: -EISCONN; the same type: -EALREADY. */
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN(USER_PIN), &s, NULL), -EISCONN);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_SO, PIN(SO_PIN), &s, NULL), -EALREADY);
    vault_logout(so);
    a.session = vault_session_unref(so);

    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN(USER_PIN), &s, NULL), 0);
    a.session = s;
    assert_int_equal(vault_sign(e.v, &a, "k", &op, (const uint8_t *)"m", 1, &sig, &sig_len), 0);
    free(sig);
    assert_int_equal(vault_key_rotate(e.v, &a, "k", NULL), 0);
    /* A session of another uid does not count. */
    b.session = s;
    assert_int_equal(vault_token_info(e.v, &b, &(VaultTokenInfo){0}), 0);
    {
        VaultTokenInfo ti;
        assert_int_equal(vault_token_info(e.v, &b, &ti), 0);
        assert_int_equal(ti.login, VAULT_USER_NONE);
    }
    vault_logout(s);
    assert_int_equal(vault_sign(e.v, &a, "k", &op, (const uint8_t *)"m", 1, &sig, &sig_len),
                     -EBADR);
    a.session = vault_session_unref(s);
    vault_acl_done(&acl);
    env_close(&e);
}

static void test_lockout_survives_reload(void **state) {
    Env e = {0};
    VaultPeer a = alice;
    VaultSession *s = NULL, *so = NULL;
    VaultTokenInfo ti;
    (void)state;
    env_open(&e, "lock", true);
    init_token_with_user(e.v, &a);

    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN("wrong"), &s, NULL), -EBADE);
    assert_int_equal(flags_of(e.v, &a) &
                         (VAULT_TOKEN_USER_PIN_COUNT_LOW | VAULT_TOKEN_USER_PIN_FINAL_TRY |
                          VAULT_TOKEN_USER_PIN_LOCKED),
                     VAULT_TOKEN_USER_PIN_COUNT_LOW);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN("wrong"), &s, NULL), -EBADE);
    assert_int_equal(flags_of(e.v, &a) &
                         (VAULT_TOKEN_USER_PIN_COUNT_LOW | VAULT_TOKEN_USER_PIN_FINAL_TRY |
                          VAULT_TOKEN_USER_PIN_LOCKED),
                     VAULT_TOKEN_USER_PIN_COUNT_LOW | VAULT_TOKEN_USER_PIN_FINAL_TRY);
    /* Restart: the count is kept. */
    env_close(&e);
    env_open(&e, "lock", false);
    assert_int_equal(vault_token_info(e.v, &a, &ti), 0);
    assert_int_equal(ti.user_failures, 2);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN("wrong"), &s, NULL), -EBADE);
    assert_true(flags_of(e.v, &a) & VAULT_TOKEN_USER_PIN_LOCKED);
    /* Locked: even the right PIN is refused, and a restart does not unlock. */
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN(USER_PIN), &s, NULL), -ENOLCK);
    env_close(&e);
    env_open(&e, "lock", false);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN(USER_PIN), &s, NULL), -ENOLCK);
    assert_true(flags_of(e.v, &a) & VAULT_TOKEN_USER_PIN_LOCKED);
    /* The SO unlocks with a new user PIN. */
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_SO, PIN(SO_PIN), &so, NULL), 0);
    a.session = so;
    assert_int_equal(vault_init_pin(e.v, &a, PIN("5678")), 0);
    vault_logout(so);
    a.session = vault_session_unref(so);
    assert_int_equal(flags_of(e.v, &a) & VAULT_TOKEN_USER_PIN_LOCKED, 0);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN("5678"), &s, NULL), 0);
    s = vault_session_unref(s);

    /* A success resets the count (persisted). */
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN("nope"), &s, NULL), -EBADE);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN("5678"), &s, NULL), 0);
    s = vault_session_unref(s);
    env_close(&e);
    env_open(&e, "lock", false);
    assert_int_equal(vault_token_info(e.v, &a, &ti), 0);
    assert_int_equal(ti.user_failures, 0);

    /* The SO PIN locks too, and stays locked. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(vault_login(e.v, &a, VAULT_USER_SO, PIN("bad-so"), &s, NULL), -EBADE);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_SO, PIN(SO_PIN), &s, NULL), -ENOLCK);
    env_close(&e);
    env_open(&e, "lock", false);
    assert_true(flags_of(e.v, &a) & VAULT_TOKEN_SO_PIN_LOCKED);
    assert_int_equal(vault_token_init(e.v, &a, PIN(SO_PIN), NULL, 0), -ENOLCK);
    /* The user still logs in. */
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN("5678"), &s, NULL), 0);
    vault_session_unref(s);
    env_close(&e);
}

static void test_tickets(void **state) {
    Env e = {0};
    VaultPeer a = alice, a2 = alice, other_pid = alice, b = bob;
    VaultSession *s = NULL, *s2 = NULL, *x = NULL;
    uint8_t ticket[VAULT_TICKET_SIZE], bad[VAULT_TICKET_SIZE];
    VaultKeySpec spec = {.type = VAULT_KEY_AES256};
    VaultOp op = {.alg = VAULT_ALG_AES256_GCM};
    uint8_t *ct = NULL;
    size_t ct_len;
    (void)state;
    env_open(&e, "ticket", true);
    assert_int_equal(vault_key_generate(e.v, &a, "aes", &spec), 0);
    init_token_with_user(e.v, &a);
    other_pid.pid = 77;

    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN(USER_PIN), &s, ticket), 0);
    a.session = s;
    /* Same uid and pid: attaches. Another pid or uid, or a wrong ticket: refused. */
    assert_int_equal(vault_login_ticket(e.v, &other_pid, ticket, &x), -EBADE);
    assert_int_equal(vault_login_ticket(e.v, &b, ticket, &x), -EBADE);
    memcpy(bad, ticket, sizeof bad);
    bad[5] ^= 1;
    assert_int_equal(vault_login_ticket(e.v, &a2, bad, &x), -EBADE);
    assert_int_equal(vault_login_ticket(e.v, &a2, ticket, &s2), 0);
    a2.session = s2;
    assert_int_equal(vault_login_ticket(e.v, &a2, ticket, &x), -EALREADY);
    assert_int_equal(vault_encrypt(e.v, &a2, "aes", &op, (const uint8_t *)"x", 1, &ct, &ct_len), 0);
    free(ct);
    /* Logout on one connection logs out both. */
    vault_logout(a.session);
    assert_int_equal(vault_encrypt(e.v, &a2, "aes", &op, (const uint8_t *)"x", 1, &ct, &ct_len),
                     -EBADR);
    assert_int_equal(vault_login_ticket(e.v, &a2, ticket, &x), -EBADE);
    a.session = vault_session_unref(a.session);
    a2.session = vault_session_unref(a2.session);

    /* InitPIN revokes the user sessions. */
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN(USER_PIN), &s, ticket), 0);
    a.session = s;
    {
        VaultSession *so = NULL;
        assert_int_equal(vault_login(e.v, &a2, VAULT_USER_SO, PIN(SO_PIN), &so, NULL), 0);
        a2.session = so;
        assert_int_equal(vault_init_pin(e.v, &a2, PIN("9999")), 0);
        a2.session = vault_session_unref(so);
    }
    assert_false(vault_session_live(a.session, NULL));
    a.session = vault_session_unref(a.session);
    env_close(&e);
}

static void test_reinit_is_safe(void **state) {
    Env e = {0};
    VaultPeer a = alice;
    VaultSession *s = NULL;
    VaultTokenInfo ti;
    (void)state;
    env_open(&e, "reinit", true);
    assert_int_equal(vault_key_generate(e.v, &a, "k", &(VaultKeySpec){.type = VAULT_KEY_AES256}),
                     0);
    /* A first initialisation keeps the namespace's keys. */
    init_token_with_user(e.v, &a);
    assert_int_equal(vault_key_count(e.v), 1);
    /* Re-initialising: the SO PIN must match (counted), and the token must be empty. */
    assert_int_equal(vault_token_init(e.v, &a, PIN("wrong-so"), NULL, 0), -EBADE);
    assert_int_equal(vault_token_info(e.v, &a, &ti), 0);
    assert_int_equal(ti.so_failures, 1);
    assert_int_equal(vault_token_init(e.v, &a, PIN(SO_PIN), (const uint8_t *)"new", 3), -ENOTEMPTY);
    assert_int_equal(vault_key_count(e.v), 1);
    assert_int_equal(vault_token_info(e.v, &a, &ti), 0);
    assert_int_equal(ti.so_failures, 0); /* the right PIN reset the count */
    assert_memory_equal(ti.label, "tok", 3);
    /* Empty the token (logged in), then re-initialise. */
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN(USER_PIN), &s, NULL), 0);
    a.session = s;
    assert_int_equal(vault_key_delete(e.v, &a, "k"), 0);
    assert_int_equal(vault_token_init(e.v, &a, PIN(SO_PIN), (const uint8_t *)"new", 3), 0);
    assert_false(vault_session_live(a.session, NULL)); /* every login revoked */
    a.session = vault_session_unref(s);
    assert_int_equal(vault_token_info(e.v, &a, &ti), 0);
    assert_int_equal(ti.flags, VAULT_TOKEN_INITIALIZED); /* user PIN cleared */
    assert_memory_equal(ti.label, "new", 3);
    env_close(&e);
}

static void test_set_pin(void **state) {
    Env e = {0};
    VaultPeer a = alice;
    VaultSession *s = NULL, *so = NULL;
    (void)state;
    env_open(&e, "setpin", true);
    init_token_with_user(e.v, &a);
    /* Not logged in: SetPIN changes the user PIN, old PIN checked (and counted). */
    assert_int_equal(vault_set_pin(e.v, &a, PIN("bad1"), PIN("4321")), -EBADE);
    assert_int_equal(vault_set_pin(e.v, &a, PIN(USER_PIN), PIN("12")), -ERANGE);
    assert_int_equal(vault_set_pin(e.v, &a, PIN(USER_PIN), PIN("4321")), 0);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN(USER_PIN), &s, NULL), -EBADE);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_USER, PIN("4321"), &s, NULL), 0);
    s = vault_session_unref(s);
    /* The SO logged in: SetPIN changes the SO PIN. */
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_SO, PIN(SO_PIN), &so, NULL), 0);
    a.session = so;
    assert_int_equal(vault_set_pin(e.v, &a, PIN(SO_PIN), PIN("new-so-pin")), 0);
    vault_logout(so);
    a.session = vault_session_unref(so);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_SO, PIN(SO_PIN), &so, NULL), -EBADE);
    assert_int_equal(vault_login(e.v, &a, VAULT_USER_SO, PIN("new-so-pin"), &so, NULL), 0);
    vault_session_unref(so);
    env_close(&e);
}

typedef struct Guess {
    Vault *v;
    int r;
} Guess;

static void *guess_thread(void *arg) {
    Guess *g = arg;
    VaultSession *s = NULL;
    g->r = vault_login(g->v, &alice, VAULT_USER_USER, PIN("guess"), &s, NULL);
    vault_session_unref(s);
    return NULL;
}

static void test_concurrent_guesses(void **state) {
    Env e = {0};
    VaultPeer a = alice;
    pthread_t th[12];
    Guess g[12];
    int wrong = 0, locked = 0;
    (void)state;
    env_open(&e, "guess", true);
    init_token_with_user(e.v, &a);
    for (size_t i = 0; i < 12; i++) {
        g[i] = (Guess){.v = e.v};
        assert_int_equal(pthread_create(&th[i], NULL, guess_thread, &g[i]), 0);
    }
    for (size_t i = 0; i < 12; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        wrong += g[i].r == -EBADE;
        locked += g[i].r == -ENOLCK;
    }
    /* At most max_tries (3) answers tell the PIN was wrong; the rest say locked. */
    assert_int_equal(wrong, 3);
    assert_int_equal(locked, 9);
    env_close(&e);
}

/* The keystore content with tokens: round trip, and every truncation refused. */
static void test_content_tokens_strict(void **state) {
    Vault *v = NULL, *w = NULL;
    VaultPeer a = alice;
    Secret *content = NULL;
    VaultTokenInfo ti;
    (void)state;
    assert_int_equal(vault_new(&v), 0);
    assert_int_equal(vault_set_pin_policy(v, 3, 1000), 0);
    init_token_with_user(v, &a);
    assert_int_equal(vault_token_init(v, &bob, PIN("bob-so"), (const uint8_t *)"b", 1), 0);
    assert_int_equal(keystore_serialize(v, &content), 0);
    for (size_t n = 0; n < secret_size(content); n++) {
        assert_int_equal(vault_new(&w), 0);
        assert_int_not_equal(keystore_deserialize(w, secret_const_data(content), n), 0);
        w = vault_free(w);
    }
    assert_int_equal(vault_new(&w), 0);
    assert_int_equal(vault_set_pin_policy(w, 3, 1000), 0);
    assert_int_equal(keystore_deserialize(w, secret_const_data(content), secret_size(content)), 0);
    assert_int_equal(vault_token_info(w, &bob, &ti), 0);
    assert_int_equal(ti.flags, VAULT_TOKEN_INITIALIZED);
    assert_int_equal(vault_token_info(w, &a, &ti), 0);
    assert_true(ti.flags & VAULT_TOKEN_USER_PIN_INITIALIZED);
    {
        VaultSession *s = NULL;
        assert_int_equal(vault_login(w, &a, VAULT_USER_USER, PIN(USER_PIN), &s, NULL), 0);
        vault_session_unref(s);
    }
    /* A second load into a vault that has tokens: -EBUSY. */
    assert_int_equal(keystore_deserialize(w, secret_const_data(content), secret_size(content)),
                     -EBUSY);
    secret_free(content);
    vault_free(w);
    vault_free(v);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_and_info),
        cmocka_unit_test(test_login_rule),
        cmocka_unit_test(test_lockout_survives_reload),
        cmocka_unit_test(test_tickets),
        cmocka_unit_test(test_reinit_is_safe),
        cmocka_unit_test(test_set_pin),
        cmocka_unit_test(test_concurrent_guesses),
        cmocka_unit_test(test_content_tokens_strict),
    };
    secret_set_allow_unlocked(true);
    if (vault_init(0) < 0)
        return 1;
    int r = cmocka_run_group_tests(tests, setup_all, teardown_all);
    /* libjose initialises OpenSSL from a library constructor, so OpenSSL's atexit cleanup is
     * not run in time for LeakSanitizer: clean up explicitly. */
    OPENSSL_cleanup();
    return r;
}
