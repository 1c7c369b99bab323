/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Tokens and PINs (vault.h "Tokens and PINs", docs/vault.md). A token is a uid namespace; its
 * state (label, serial, PIN hashes, failure counters) is part of the table, persisted by the
 * keystore with the keys. PIN checks run the KDF outside every lock and decide under the
 * mutation lock, against the failure counter as it is then: so however many checks run at once,
 * at most max_tries wrong PINs are ever answered as wrong rather than as locked, and each is
 * durable before its answer leaves.
 */
#include <errno.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/secret.h"
#include "vault-private.h"
#include "vhsm/vault-par.h"

struct VaultSession {
    Vault *vault; /* NULL once the vault is freed */
    uid_t uid;
    pid_t pid;
    uint32_t user;
    unsigned refs; /* under vault->session_lock (or alone, once detached) */
    atomic_bool revoked;
    uint8_t ticket[VAULT_TICKET_SIZE];
};

int vault_set_pin_policy(Vault *v, uint32_t max_tries, uint32_t iterations) {
    if (!v || max_tries > 100 || (iterations != 0 && iterations < 1000))
        return -EINVAL;
    v->pin_max_tries = max_tries ? max_tries : VAULT_PIN_MAX_TRIES_DEFAULT;
    v->pin_iterations = iterations ? iterations : VAULT_PIN_ITERATIONS_DEFAULT;
    return 0;
}

/* ---- the table ---- */

static int token_index_locked(Vault *v, uid_t uid, size_t *ret_idx) {
    size_t lo = 0, hi = v->n_tokens;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v->tokens[mid].uid == uid) {
            *ret_idx = mid;
            return 1;
        }
        if (v->tokens[mid].uid < uid)
            lo = mid + 1;
        else
            hi = mid;
    }
    *ret_idx = lo;
    return 0;
}

VaultToken *vault_token_find_locked(Vault *v, uid_t uid) {
    size_t i;
    return token_index_locked(v, uid, &i) ? &v->tokens[i] : NULL;
}

/* The token of uid, created (uninitialised) if absent. NULL: -ENOMEM or the cap. */
static VaultToken *token_get_locked(Vault *v, uid_t uid) {
    VaultToken *n;
    size_t i;
    if (token_index_locked(v, uid, &i))
        return &v->tokens[i];
    if (v->n_tokens >= VAULT_TOKENS_MAX)
        return NULL;
    n = realloc(v->tokens, (v->n_tokens + 1) * sizeof(VaultToken));
    if (!n)
        return NULL;
    v->tokens = n;
    memmove(&v->tokens[i + 1], &v->tokens[i], (v->n_tokens - i) * sizeof(VaultToken));
    memset(&v->tokens[i], 0, sizeof(VaultToken));
    v->tokens[i].uid = uid;
    v->n_tokens++;
    return &v->tokens[i];
}

/* Removes an uninitialised token again (undo of token_get_locked). */
static void token_drop_if_empty_locked(Vault *v, uid_t uid) {
    size_t i;
    if (!token_index_locked(v, uid, &i) || v->tokens[i].so.alg != VAULT_PIN_ALG_NONE)
        return;
    explicit_bzero(&v->tokens[i], sizeof(VaultToken));
    memmove(&v->tokens[i], &v->tokens[i + 1], (v->n_tokens - i - 1) * sizeof(VaultToken));
    v->n_tokens--;
}

void vault_tokens_set_locked(Vault *v, VaultToken *tokens, size_t n) {
    if (v->tokens) {
        explicit_bzero(v->tokens, v->n_tokens * sizeof(VaultToken));
        free(v->tokens);
    }
    v->tokens = tokens;
    v->n_tokens = n;
}

void vault_tokens_free(Vault *v) {
    vault_tokens_set_locked(v, NULL, 0);
    (void)pthread_mutex_lock(&v->session_lock);
    for (size_t i = 0; i < v->n_sessions; i++)
        v->sessions[i]->vault = NULL; /* the connections free them */
    free(v->sessions);
    v->sessions = NULL;
    v->n_sessions = 0;
    (void)pthread_mutex_unlock(&v->session_lock);
}

/* ---- sessions ---- */

static bool session_live_for(const VaultSession *s, uid_t uid, uint32_t *ret_user) {
    if (!s || atomic_load(&s->revoked) || s->uid != uid)
        return false;
    if (ret_user)
        *ret_user = s->user;
    return true;
}

bool vault_session_live(const VaultSession *s, uint32_t *ret_user) {
    if (!s || atomic_load(&s->revoked))
        return false;
    if (ret_user)
        *ret_user = s->user;
    return true;
}

static void session_free(VaultSession *s) {
    explicit_bzero(s, sizeof *s);
    free(s);
}

VaultSession *vault_session_unref(VaultSession *s) {
    Vault *v;
    if (!s)
        return NULL;
    v = s->vault;
    if (!v) {
        if (--s->refs == 0)
            session_free(s);
        return NULL;
    }
    (void)pthread_mutex_lock(&v->session_lock);
    if (--s->refs == 0) {
        for (size_t i = 0; i < v->n_sessions; i++)
            if (v->sessions[i] == s) {
                v->sessions[i] = v->sessions[--v->n_sessions];
                break;
            }
        session_free(s);
    }
    (void)pthread_mutex_unlock(&v->session_lock);
    return NULL;
}

void vault_logout(VaultSession *s) {
    if (s)
        atomic_store(&s->revoked, true);
}

/* Revokes the sessions of uid (of one user type, or all with VAULT_USER_NONE). */
static void revoke_sessions(Vault *v, uid_t uid, uint32_t user) {
    (void)pthread_mutex_lock(&v->session_lock);
    for (size_t i = 0; i < v->n_sessions; i++)
        if (v->sessions[i]->uid == uid && (user == VAULT_USER_NONE || v->sessions[i]->user == user))
            atomic_store(&v->sessions[i]->revoked, true);
    (void)pthread_mutex_unlock(&v->session_lock);
}

static int session_new(Vault *v, const VaultPeer *peer, uint32_t user, VaultSession **ret) {
    VaultSession *s = calloc(1, sizeof *s), **n;
    if (!s)
        return -ENOMEM;
    if (RAND_priv_bytes(s->ticket, sizeof s->ticket) != 1) {
        free(s);
        return -EIO;
    }
    s->vault = v;
    s->uid = peer->uid;
    s->pid = peer->pid;
    s->user = user;
    s->refs = 1;
    atomic_init(&s->revoked, false);
    (void)pthread_mutex_lock(&v->session_lock);
    n = realloc(v->sessions, (v->n_sessions + 1) * sizeof(VaultSession *));
    if (!n) {
        (void)pthread_mutex_unlock(&v->session_lock);
        session_free(s);
        return -ENOMEM;
    }
    v->sessions = n;
    v->sessions[v->n_sessions++] = s;
    (void)pthread_mutex_unlock(&v->session_lock);
    *ret = s;
    return 0;
}

/* -EALREADY / -EISCONN if the peer's session is live for user / the other type. */
static int login_state_check(const VaultPeer *peer, uint32_t user) {
    uint32_t cur;
    if (!session_live_for(peer->session, peer->uid, &cur))
        return 0;
    return cur == user ? -EALREADY : -EISCONN;
}

int vault_login_ticket(Vault *v, const VaultPeer *peer, const uint8_t ticket[VAULT_TICKET_SIZE],
                       VaultSession **ret) {
    VaultSession *found = NULL;
    int r;
    if (!v || !peer || !ticket || !ret)
        return -EINVAL;
    (void)pthread_mutex_lock(&v->session_lock);
    for (size_t i = 0; i < v->n_sessions; i++) {
        VaultSession *s = v->sessions[i];
        /* Compare every ticket in constant time; uid and pid must be the login's. */
        if (CRYPTO_memcmp(s->ticket, ticket, VAULT_TICKET_SIZE) == 0 && !atomic_load(&s->revoked) &&
            s->uid == peer->uid && s->pid == peer->pid && peer->pid > 0)
            found = s;
    }
    if (found) {
        r = login_state_check(peer, found->user);
        if (r == 0 && peer->session == found)
            r = -EALREADY;
        if (r == 0)
            found->refs++;
    } else
        r = -EBADE;
    (void)pthread_mutex_unlock(&v->session_lock);
    if (r == 0)
        *ret = found;
    return r;
}

/* ---- login rule ---- */

int vault_login_check_locked(Vault *v, const VaultPeer *peer) {
    const VaultToken *t;
    uint32_t user;
    if (!peer)
        return -EINVAL;
    t = vault_token_find_locked(v, peer->uid);
    if (!t || t->user.alg == VAULT_PIN_ALG_NONE)
        return 0; /* no user PIN: the ACL alone decides, as before tokens */
    if (session_live_for(peer->session, peer->uid, &user) && user == VAULT_USER_USER)
        return 0;
    return -EBADR;
}

int vault_login_check(Vault *v, const VaultPeer *peer) {
    int r;
    if (!v)
        return -EINVAL;
    (void)pthread_rwlock_rdlock(&v->lock);
    r = vault_login_check_locked(v, peer);
    (void)pthread_rwlock_unlock(&v->lock);
    return r;
}

/* ---- PIN hashing ---- */

static int pin_length_check(const uint8_t *pin, size_t len) {
    if (!pin)
        return -EINVAL;
    if (len < VAULT_PIN_MIN || len > VAULT_PIN_MAX)
        return -ERANGE;
    return 0;
}

/* PBKDF2-HMAC-SHA256 of pin (copied into a Secret first) into out[32]. */
static int pin_kdf(const uint8_t *pin, size_t pin_len, const uint8_t salt[VAULT_PIN_SALT_SIZE],
                   uint32_t iterations, uint8_t out[VAULT_PIN_HASH_SIZE]) {
    _cleanup_(secret_freep) Secret *p = NULL;
    EVP_KDF *kdf;
    EVP_KDF_CTX *ctx;
    OSSL_PARAM params[5];
    unsigned iter = iterations;
    int ok, r;

    if ((r = secret_new_packed_copy(pin, pin_len, &p)) < 0)
        return r;
    kdf = EVP_KDF_fetch(NULL, "PBKDF2", NULL);
    if (!kdf)
        return -EIO;
    ctx = EVP_KDF_CTX_new(kdf);
    EVP_KDF_free(kdf);
    if (!ctx)
        return -ENOMEM;
    params[0] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PASSWORD, secret_data(p), pin_len);
    params[1] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, VAULT_PIN_SALT_SIZE);
    params[2] = OSSL_PARAM_construct_uint(OSSL_KDF_PARAM_ITER, &iter);
    params[3] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    params[4] = OSSL_PARAM_construct_end();
    ok = EVP_KDF_derive(ctx, out, VAULT_PIN_HASH_SIZE, params);
    EVP_KDF_CTX_free(ctx);
    return ok == 1 ? 0 : -EIO;
}

static int pin_hash_new(Vault *v, const uint8_t *pin, size_t len, VaultPinHash *ret) {
    VaultPinHash h = {.alg = VAULT_PIN_ALG_PBKDF2_SHA256, .iterations = v->pin_iterations};
    int r;
    if (RAND_bytes(h.salt, sizeof h.salt) != 1)
        return -EIO;
    if ((r = pin_kdf(pin, len, h.salt, h.iterations, h.hash)) < 0)
        return r;
    *ret = h;
    explicit_bzero(&h, sizeof h);
    return 0;
}

/* ---- PIN checks ---- */

/* What a successful check then does, under the mutation and write locks, with the token as it
 * is then (t). Persists its own change if any; returns 0 or an error (changing nothing). */
typedef int (*PinAction)(Vault *v, const VaultPeer *peer, VaultToken *t, void *userdata);

static VaultPinHash *pin_of(VaultToken *t, uint32_t user) {
    return user == VAULT_USER_SO ? &t->so : &t->user;
}
static uint32_t *failures_of(VaultToken *t, uint32_t user) {
    return user == VAULT_USER_SO ? &t->so_failures : &t->user_failures;
}

/* Checks pin against the peer's token's PIN of user, counts a failure durably, and on success
 * runs action under the locks. */
static int pin_check_then(Vault *v, const VaultPeer *peer, uint32_t user, const uint8_t *pin,
                          size_t pin_len, PinAction action, void *userdata) {
    VaultPinHash expected = {0};
    uint8_t got[VAULT_PIN_HASH_SIZE];
    uint64_t generation = 0;
    VaultToken *t;
    bool match;
    int r;

    if ((r = pin_length_check(pin, pin_len)) < 0)
        return r;
    /* 1. What to compare with (read lock). */
    (void)pthread_rwlock_rdlock(&v->lock);
    t = vault_token_find_locked(v, peer->uid);
    if (!t || t->so.alg == VAULT_PIN_ALG_NONE)
        r = -ENOMEDIUM;
    else if (pin_of(t, user)->alg == VAULT_PIN_ALG_NONE)
        r = -ENODATA;
    else if (*failures_of(t, user) >= v->pin_max_tries)
        r = -ENOLCK;
    else {
        expected = *pin_of(t, user);
        generation = t->generation;
    }
    (void)pthread_rwlock_unlock(&v->lock);
    if (r < 0)
        return r;

    /* 2. The KDF, outside every lock. */
    r = pin_kdf(pin, pin_len, expected.salt, expected.iterations, got);
    match = r == 0 && CRYPTO_memcmp(got, expected.hash, VAULT_PIN_HASH_SIZE) == 0;
    explicit_bzero(got, sizeof got);
    explicit_bzero(&expected, sizeof expected);
    if (r < 0)
        return r;

    /* 3. Decide against the counter as it is now; durable before answered. */
    (void)pthread_mutex_lock(&v->mutate_lock);
    (void)pthread_rwlock_wrlock(&v->lock);
    t = vault_token_find_locked(v, peer->uid);
    if (!t || t->generation != generation)
        r = -EBUSY; /* the PIN changed meanwhile: check again */
    else if (*failures_of(t, user) >= v->pin_max_tries)
        r = -ENOLCK; /* locked by checks that ended first: never reveal the result */
    else if (!match) {
        uint32_t *f = failures_of(t, user);
        (*f)++;
        r = vault_persist_locked(v);
        t = vault_token_find_locked(v, peer->uid);
        if (r < 0) {
            if (t)
                (*failures_of(t, user))--;
        } else {
            r = -EBADE;
            log_notice("Wrong %s PIN for the token of uid %u (%u of %u failures).",
                       user == VAULT_USER_SO ? "SO" : "user", (unsigned)peer->uid,
                       t ? *failures_of(t, user) : 0, v->pin_max_tries);
        }
    } else {
        uint32_t *f = failures_of(t, user), old = *f;
        r = 0;
        if (old > 0) {
            *f = 0;
            r = vault_persist_locked(v);
            t = vault_token_find_locked(v, peer->uid);
            if (r < 0 && t)
                *failures_of(t, user) = old;
        }
        if (r >= 0 && action)
            r = action(v, peer, t, userdata);
    }
    (void)pthread_rwlock_unlock(&v->lock);
    (void)pthread_mutex_unlock(&v->mutate_lock);
    return r;
}

/* ---- the operations ---- */

int vault_token_info(Vault *v, const VaultPeer *peer, VaultTokenInfo *ret) {
    const VaultToken *t;
    uint32_t max, user;
    if (!v || !peer || !ret)
        return -EINVAL;
    *ret = (VaultTokenInfo){.uid = peer->uid, .login = VAULT_USER_NONE};
    (void)pthread_rwlock_rdlock(&v->lock);
    max = v->pin_max_tries;
    ret->max_tries = max;
    t = vault_token_find_locked(v, peer->uid);
    if (t && t->so.alg != VAULT_PIN_ALG_NONE) {
        ret->flags |= VAULT_TOKEN_INITIALIZED;
        memcpy(ret->label, t->label, t->label_len);
        ret->label_len = t->label_len;
        for (size_t i = 0; i < sizeof t->serial; i++)
            (void)snprintf(ret->serial + 2 * i, 3, "%02x", t->serial[i]);
        ret->so_failures = t->so_failures;
        ret->user_failures = t->user_failures;
        if (t->user.alg != VAULT_PIN_ALG_NONE)
            ret->flags |= VAULT_TOKEN_USER_PIN_INITIALIZED | VAULT_TOKEN_LOGIN_REQUIRED;
        if (t->user_failures >= max)
            ret->flags |= VAULT_TOKEN_USER_PIN_LOCKED;
        else if (t->user_failures > 0) {
            ret->flags |= VAULT_TOKEN_USER_PIN_COUNT_LOW;
            if (t->user_failures + 1 == max)
                ret->flags |= VAULT_TOKEN_USER_PIN_FINAL_TRY;
        }
        if (t->so_failures >= max)
            ret->flags |= VAULT_TOKEN_SO_PIN_LOCKED;
        else if (t->so_failures > 0) {
            ret->flags |= VAULT_TOKEN_SO_PIN_COUNT_LOW;
            if (t->so_failures + 1 == max)
                ret->flags |= VAULT_TOKEN_SO_PIN_FINAL_TRY;
        }
    }
    (void)pthread_rwlock_unlock(&v->lock);
    if (session_live_for(peer->session, peer->uid, &user))
        ret->login = user;
    return 0;
}

static int label_check(const uint8_t *label, size_t len) {
    if (len > VAULT_TOKEN_LABEL_MAX || (len > 0 && !label))
        return -EINVAL;
    for (size_t i = 0; i < len; i++)
        if (label[i] == 0)
            return -EINVAL;
    return 0;
}

typedef struct ReinitCtx {
    const uint8_t *label;
    size_t label_len;
} ReinitCtx;

/* Re-initialisation after the SO PIN matched: refused while the namespace holds keys. */
static int reinit_action(Vault *v, const VaultPeer *peer, VaultToken *t, void *userdata) {
    const ReinitCtx *c = userdata;
    VaultToken old = *t;
    int r;
    for (size_t i = 0; i < v->n_usage; i++)
        if (v->usage[i].uid == peer->uid && v->usage[i].u.keys > 0)
            return -ENOTEMPTY;
    memset(t->label, 0, sizeof t->label);
    if (c->label_len > 0)
        memcpy(t->label, c->label, c->label_len);
    t->label_len = (uint8_t)c->label_len;
    t->user = (VaultPinHash){0};
    t->user_failures = 0;
    t->generation++;
    r = vault_persist_locked(v);
    t = vault_token_find_locked(v, peer->uid);
    if (r < 0) {
        if (t)
            *t = old;
        explicit_bzero(&old, sizeof old);
        return r;
    }
    explicit_bzero(&old, sizeof old);
    revoke_sessions(v, peer->uid, VAULT_USER_NONE);
    log_notice("AUDIT: token of uid %u re-initialised by its SO.", (unsigned)peer->uid);
    return 0;
}

int vault_token_init(Vault *v, const VaultPeer *peer, const uint8_t *so_pin, size_t so_pin_len,
                     const uint8_t *label, size_t label_len) {
    VaultPinHash h;
    VaultToken *t;
    bool initialised;
    int r;

    if (!v || !peer)
        return -EINVAL;
    if ((r = pin_length_check(so_pin, so_pin_len)) < 0 || (r = label_check(label, label_len)) < 0)
        return r;
    (void)pthread_rwlock_rdlock(&v->lock);
    t = vault_token_find_locked(v, peer->uid);
    initialised = t && t->so.alg != VAULT_PIN_ALG_NONE;
    (void)pthread_rwlock_unlock(&v->lock);
    if (initialised) {
        ReinitCtx c = {.label = label, .label_len = label_len};
        return pin_check_then(v, peer, VAULT_USER_SO, so_pin, so_pin_len, reinit_action, &c);
    }

    /* First initialisation: hash outside the locks, then set it unless someone was faster. */
    if ((r = pin_hash_new(v, so_pin, so_pin_len, &h)) < 0)
        return r;
    (void)pthread_mutex_lock(&v->mutate_lock);
    (void)pthread_rwlock_wrlock(&v->lock);
    t = token_get_locked(v, peer->uid);
    if (!t)
        r = -ENOMEM;
    else if (t->so.alg != VAULT_PIN_ALG_NONE)
        r = -EBUSY; /* initialised meanwhile: the next try checks its SO PIN */
    else {
        uint8_t serial[8];
        if (RAND_bytes(serial, sizeof serial) != 1)
            r = -EIO;
        else {
            *t = (VaultToken){.uid = peer->uid,
                              .label_len = (uint8_t)label_len,
                              .so = h,
                              .generation = t->generation + 1};
            if (label_len > 0)
                memcpy(t->label, label, label_len);
            memcpy(t->serial, serial, sizeof serial);
            r = vault_persist_locked(v);
            if (r < 0) {
                /* Undo: the token is uninitialised again (and dropped). */
                t = vault_token_find_locked(v, peer->uid);
                if (t)
                    t->so = (VaultPinHash){0};
                token_drop_if_empty_locked(v, peer->uid);
            }
        }
    }
    (void)pthread_rwlock_unlock(&v->lock);
    (void)pthread_mutex_unlock(&v->mutate_lock);
    explicit_bzero(&h, sizeof h);
    if (r == 0) {
        revoke_sessions(v, peer->uid, VAULT_USER_NONE);
        log_notice("AUDIT: token of uid %u initialised.", (unsigned)peer->uid);
    }
    return r;
}

typedef struct LoginCtx {
    uint32_t user;
    VaultSession *session;
} LoginCtx;

static int login_action(Vault *v, const VaultPeer *peer, VaultToken *t, void *userdata) {
    LoginCtx *c = userdata;
    (void)t;
    return session_new(v, peer, c->user, &c->session);
}

int vault_login(Vault *v, const VaultPeer *peer, uint32_t user, const uint8_t *pin, size_t pin_len,
                VaultSession **ret, uint8_t ret_ticket[VAULT_TICKET_SIZE]) {
    LoginCtx c = {.user = user};
    int r;
    if (!v || !peer || !ret || (user != VAULT_USER_SO && user != VAULT_USER_USER))
        return -EINVAL;
    if ((r = login_state_check(peer, user)) < 0)
        return r;
    r = pin_check_then(v, peer, user, pin, pin_len, login_action, &c);
    if (r < 0)
        return r;
    if (ret_ticket)
        memcpy(ret_ticket, c.session->ticket, VAULT_TICKET_SIZE);
    *ret = c.session;
    return 0;
}

typedef struct SetPinCtx {
    uint32_t user;
    const VaultPinHash *h;
    const char *verb; /* for the audit line */
} SetPinCtx;

static int set_pin_action(Vault *v, const VaultPeer *peer, VaultToken *t, void *userdata) {
    const SetPinCtx *c = userdata;
    VaultPinHash old = *pin_of(t, c->user);
    uint32_t old_failures = *failures_of(t, c->user);
    int r;
    *pin_of(t, c->user) = *c->h;
    *failures_of(t, c->user) = 0;
    t->generation++;
    r = vault_persist_locked(v);
    t = vault_token_find_locked(v, peer->uid);
    if (r < 0 && t) {
        *pin_of(t, c->user) = old;
        *failures_of(t, c->user) = old_failures;
    }
    explicit_bzero(&old, sizeof old);
    if (r == 0)
        log_notice("AUDIT: %s PIN of the token of uid %u %s.",
                   c->user == VAULT_USER_SO ? "SO" : "user", (unsigned)peer->uid, c->verb);
    return r;
}

int vault_init_pin(Vault *v, const VaultPeer *peer, const uint8_t *pin, size_t pin_len) {
    SetPinCtx c = {.user = VAULT_USER_USER, .verb = "set by the SO"};
    VaultPinHash h;
    VaultToken *t;
    uint32_t cur;
    int r;

    if (!v || !peer)
        return -EINVAL;
    if ((r = pin_length_check(pin, pin_len)) < 0)
        return r;
    if (!session_live_for(peer->session, peer->uid, &cur) || cur != VAULT_USER_SO)
        return -EBADR;
    if ((r = pin_hash_new(v, pin, pin_len, &h)) < 0)
        return r;
    c.h = &h;
    (void)pthread_mutex_lock(&v->mutate_lock);
    (void)pthread_rwlock_wrlock(&v->lock);
    t = vault_token_find_locked(v, peer->uid);
    if (!t || t->so.alg == VAULT_PIN_ALG_NONE)
        r = -ENOMEDIUM;
    else
        r = set_pin_action(v, peer, t, &c);
    (void)pthread_rwlock_unlock(&v->lock);
    (void)pthread_mutex_unlock(&v->mutate_lock);
    explicit_bzero(&h, sizeof h);
    if (r == 0)
        revoke_sessions(v, peer->uid, VAULT_USER_USER);
    return r;
}

int vault_set_pin(Vault *v, const VaultPeer *peer, const uint8_t *old_pin, size_t old_len,
                  const uint8_t *new_pin, size_t new_len) {
    SetPinCtx c = {.user = VAULT_USER_USER, .verb = "changed"};
    VaultPinHash h;
    uint32_t cur;
    int r;

    if (!v || !peer)
        return -EINVAL;
    if ((r = pin_length_check(old_pin, old_len)) < 0 ||
        (r = pin_length_check(new_pin, new_len)) < 0)
        return r;
    if (session_live_for(peer->session, peer->uid, &cur))
        c.user = cur;
    if ((r = pin_hash_new(v, new_pin, new_len, &h)) < 0)
        return r;
    c.h = &h;
    r = pin_check_then(v, peer, c.user, old_pin, old_len, set_pin_action, &c);
    explicit_bzero(&h, sizeof h);
    return r;
}

/* ---- root's recovery of an SO PIN (branch par; vault-par.h) ---- */

int vault_token_reset_so_pin(Vault *v, const VaultPeer *peer, uid_t uid, const uint8_t *pin,
                             size_t pin_len) {
    VaultPinHash h, old;
    uint32_t old_failures;
    VaultToken *t;
    int r;

    if (!v || !peer)
        return -EINVAL;
    if (peer->uid != 0)
        return -EPERM;
    if ((r = pin_length_check(pin, pin_len)) < 0)
        return r;
    if ((r = pin_hash_new(v, pin, pin_len, &h)) < 0)
        return r;
    (void)pthread_mutex_lock(&v->mutate_lock);
    (void)pthread_rwlock_wrlock(&v->lock);
    t = vault_token_find_locked(v, uid);
    if (!t || t->so.alg == VAULT_PIN_ALG_NONE)
        r = -ENOMEDIUM;
    else {
        old = t->so;
        old_failures = t->so_failures;
        t->so = h;
        t->so_failures = 0;
        t->generation++;
        r = vault_persist_locked(v);
        t = vault_token_find_locked(v, uid);
        if (r < 0 && t) {
            t->so = old;
            t->so_failures = old_failures;
        }
        explicit_bzero(&old, sizeof old);
    }
    (void)pthread_rwlock_unlock(&v->lock);
    (void)pthread_mutex_unlock(&v->mutate_lock);
    explicit_bzero(&h, sizeof h);
    if (r == 0) {
        revoke_sessions(v, uid, VAULT_USER_SO);
        log_notice("AUDIT: SO PIN of the token of uid %u reset by root (pid %d); SO failure "
                   "counter cleared, keys and user PIN untouched.",
                   (unsigned)uid, (int)peer->pid);
    }
    return r;
}
