/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libvhsm-pkcs11.so: the PKCS#11 module over vhsmd (docs/pkcs11.md).
 *
 * Invariants:
 * - No key material in this process: the module holds key names (handles), public keys and
 *   attributes. Private and secret key operations are requests to vhsmd over libvhsm.
 *   Data being signed or encrypted passes through (it is the application's), and multi-part
 *   hash-and-sign mechanisms hash it here with OpenSSL, then have vhsmd sign the digest.
 * - Every slot is one vhsmd socket. Its connections form a pool: a call takes an idle
 *   connection (or opens one), uses it alone, and gives it back, so N threads make N parallel
 *   requests whatever sessions they share. A transport error (vhsmd gone) drops the pool and
 *   bumps the slot's epoch: every session opened before answers CKR_DEVICE_REMOVED from then on.
 * - Locking follows C_Initialize: the OS's mutexes (CKF_OS_LOCKING_OK, or nothing given: we
 *   lock anyway, which is allowed), or the application's callbacks. One module lock guards the
 *   session table; each slot and each session has its own lock. Order: module -> slot, or
 *   session -> slot; never slot -> session.
 * - fork(): the child sees CKR_CRYPTOKI_NOT_INITIALIZED until it calls C_Initialize, which
 *   starts from scratch with new connections. The parent's state is abandoned in the child
 *   (never used, never freed: its locks may be held by threads that do not exist there).
 * - Errors from libvhsm are translated by one table (rv.c).
 */
#include <errno.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/macro.h"
#include "core/openssl-util.h"
#include "core/secret.h"
#include "mech-params.h"
#include "p11.h"
#include "rv.h"
#include "objects.h"
#include "template.h"
#include "wrap.h"
#include "vhsm-client.h"

#define EXPORT __attribute__((visibility("default")))

#define P11_MAX_SLOTS 16
#define P11_POOL_MAX 64                  /* idle connections kept per slot */
#define P11_BUF_MAX (1024 * 1024 - 4096) /* data a buffered multi-part operation may collect */
#define P11_RANDOM_CHUNK 65536
#define NO_USER ((CK_USER_TYPE)-1)

#define MANUFACTURER "Nitride"
#define LIBRARY_DESCRIPTION "Nitride vHSM PKCS#11 module"

/* ---- locking ------------------------------------------------------------------------------ */

typedef enum LockMode { LOCK_OS, LOCK_APP } LockMode;
static LockMode lock_mode;
static CK_C_INITIALIZE_ARGS app_locks;

static void *mtx_new(void) {
    if (lock_mode == LOCK_APP) {
        void *m = NULL;
        if (app_locks.CreateMutex(&m) != CKR_OK)
            return NULL;
        return m;
    }
    pthread_mutex_t *m = malloc(sizeof(*m));
    if (m)
        pthread_mutex_init(m, NULL);
    return m;
}

static void mtx_free(void *m) {
    if (!m)
        return;
    if (lock_mode == LOCK_APP) {
        (void)app_locks.DestroyMutex(m);
        return;
    }
    pthread_mutex_destroy(m);
    free(m);
}

static void mtx_lock(void *m) {
    if (lock_mode == LOCK_APP)
        (void)app_locks.LockMutex(m);
    else
        pthread_mutex_lock(m);
}

static void mtx_unlock(void *m) {
    if (lock_mode == LOCK_APP)
        (void)app_locks.UnlockMutex(m);
    else
        pthread_mutex_unlock(m);
}

typedef struct LockGuard {
    void *m;
} LockGuard;
static void lock_guard_release(LockGuard *g) {
    if (g->m)
        mtx_unlock(g->m);
}
#define LOCKED(m)                                                                                  \
    _cleanup_(lock_guard_release) LockGuard NT_CONCAT(guard_, __LINE__) = {(mtx_lock(m), (m))}

/* ---- keys and objects ---------------------------------------------------------------------- */

typedef enum KeyKind {
    KK_EC_P256,
    KK_EC_P384,
    KK_ED25519,
    KK_RSA,
    KK_AES,
    KK_HMAC_SHA256,
    KK_HMAC_SHA384,
    KK_DATA,    /* CKO_DATA (branch obj) */
    KK_CERT,    /* CKO_CERTIFICATE, X.509 */
    KK_GENERIC, /* hard-wrap: a generic secret of another length (unwrapped): no operation */
    _KK_MAX,
    _KK_INVALID = -22,
} KeyKind;

/* One vhsmd key. Asymmetric keys show as two objects (private, public), secret keys as one. */
typedef struct P11Key {
    char *name;  /* full name "<uid>/<name>" */
    char *label; /* CKA_LABEL: the vault label, else the name (plain if in our namespace) */
    KeyKind kind;
    CK_ULONG bits; /* RSA modulus bits; AES/HMAC key bits; EC field bits */
    bool local;    /* generated inside vhsmd */
    bool alive;    /* false once the key is gone (deleted, here or by another client) */
    EVP_PKEY *pub; /* public key: from the listing (revision 2), else fetched on first use */
    /* Revision 2 (vhsmd stores PKCS#11 policy and attributes): VHSM_OBJ_* flags, and the
     * application's opaque attributes packed as u32 type | u32 len | value. Replaced under the
     * slot lock by a refresh, so readers copy under it. */
    bool has_flags;
    uint32_t flags;
    uint8_t *attrs;
    size_t attrs_len;
    /* Branch obj: a lone public key object (vhsmd type "public": ROLE_PUB only); a session
     * object (CKA_TOKEN false, VHSM_OBJ_SESSION: lives on the slot's session-object connection,
     * destroyed with the session that created it); the value of a data object (when vhsmd
     * shows it: not PRIVATE, or logged in) or a certificate. */
    bool pub_only;
    bool session;
    CK_SESSION_HANDLE owner;
    uint8_t *value;
    size_t value_len;
} P11Key;

#define ROLE_PRIV 1u /* private key, or the secret key */
#define ROLE_PUB 2u
#define HANDLE(slot, idx, role) ((((CK_ULONG)(idx) + 1) << 8) | ((CK_ULONG)(slot) << 2) | (role))
#define HANDLE_ROLE(h) ((h)&3u)
#define HANDLE_SLOT(h) (((h) >> 2) & 0x3fu)
#define HANDLE_IDX(h) (((h) >> 8) - 1)

/* ---- slots --------------------------------------------------------------------------------- */

/* An idle connection and the login generation it is attached to. */
typedef struct PoolConn {
    VhsmClient *c;
    uint64_t gen;
} PoolConn;

typedef struct P11Slot {
    char *socket;
    void *lock; /* pool, keys, epoch, login */
    PoolConn *idle;
    size_t n_idle;
    /* The application's login (PKCS#11: one per application and token). vhsmd logs in one
     * connection and gives a ticket that attaches the others (same uid and pid); the ticket is
     * a secret, kept in locked memory. login_gen changes with every login and logout, so a
     * pooled connection attached to an older login is brought up to date when taken. */
    CK_USER_TYPE user; /* CKU_SO, CKU_USER, or NO_USER */
    Secret *ticket;
    uint64_t login_gen;
    bool login_required; /* the token has a user PIN: private objects need a login */
    uint32_t revision;   /* vhsmd's protocol revision, 0 = not asked yet (reset on removal) */
    uint32_t features;   /* vhsmd's VHSM_FEATURE_* (asked with the revision) */
    P11Key **keys;
    size_t n_keys, cap_keys;
    uint64_t epoch;
    CK_ULONG n_sessions, n_rw_sessions;
    /* Branch obj: the one connection the application's session objects live on (vhsmd binds a
     * session object to the connection that made it and destroys it when it closes); every
     * call about a session object goes through it, one at a time (sobj_lock). */
    void *sobj_lock;
    VhsmClient *sobj;
    uint64_t sobj_gen; /* login generation it is attached to */
} P11Slot;

/* ---- sessions ------------------------------------------------------------------------------ */

typedef enum OpKind { OP_SIGN, OP_VERIFY, OP_ENCRYPT, OP_DECRYPT, OP_DIGEST, _OP_MAX } OpKind;

typedef struct P11Op {
    bool active;
    bool multi;  /* an Update was called: only Final may end it */
    bool single; /* C_Sign etc. started (length query): no Update any more */
    CK_MECHANISM_TYPE mech;
    P11Key *key;
    const char *alg;  /* vhsmd algorithm */
    unsigned flags;   /* VHSM_OP_* */
    const EVP_MD *md; /* hash done in the module (hash-and-sign, digest) */
    EVP_MD_CTX *mdctx;
    uint8_t *buf; /* buffered data (EdDSA, HMAC) */
    size_t len, cap;
    /* RSA parameters for verification in the module */
    int rsa_padding;
    const EVP_MD *mgf1;
    int salt_len;
    CK_ULONG out_len; /* exact output size (signatures), or a bound */
    bool raw_ex; /* revision 2: CKM_ECDSA on any hash, CKM_RSA_PKCS on the caller's DigestInfo */
    /* AES (revision 2): the caller's parameters, copied at init */
    uint8_t iv[128];
    size_t iv_len;
    uint8_t *aad;
    size_t aad_len;
    uint32_t tag_bits, counter_bits;
    /* branch par: parameters vhsmd applies (PSS, OAEP, HMAC), DigestInfo built here */
    P11ParParams par;
    bool digestinfo;
} P11Op;

typedef struct P11Session {
    CK_SESSION_HANDLE handle;
    CK_SLOT_ID slot;
    CK_FLAGS flags;
    uint64_t epoch;
    void *lock;
    unsigned refs;
    bool closed;
    P11Op op[_OP_MAX];
    bool find_active;
    CK_OBJECT_HANDLE *found;
    size_t n_found, found_pos;
} P11Session;

/* ---- module state -------------------------------------------------------------------------- */

static pthread_mutex_t init_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static struct {
    atomic_bool initialized;
    void *lock; /* sessions table */
    P11Slot slots[P11_MAX_SLOTS];
    size_t n_slots;
    P11Session **sessions;
    size_t n_sessions_cap;
    uint32_t session_gen;
} G;

static void atfork_child(void) {
    /* Abandon the parent's state: its locks may be held by threads that do not exist here, and
     * its connections belong to the parent. C_Initialize starts again. */
    memset(&G, 0, sizeof(G));
}

static void atfork_register(void) {
    (void)pthread_atfork(NULL, NULL, atfork_child);
}

/* ---- configuration ------------------------------------------------------------------------- */

static CK_RV slot_add(const char *path) {
    if (G.n_slots >= P11_MAX_SLOTS)
        return CKR_GENERAL_ERROR;
    P11Slot *s = &G.slots[G.n_slots];
    *s = (P11Slot){.user = NO_USER};
    s->socket = strdup(path);
    s->lock = mtx_new();
    s->sobj_lock = mtx_new();
    if (!s->socket || !s->lock || !s->sobj_lock) {
        free(s->socket);
        mtx_free(s->lock);
        mtx_free(s->sobj_lock);
        return CKR_HOST_MEMORY;
    }
    G.n_slots++;
    return CKR_OK;
}

/* Slots: $VHSM_PKCS11_SOCKETS (socket paths separated by ':'), else the file
 * $VHSM_PKCS11_CONF (default /etc/vhsm/pkcs11.conf: lines "socket = PATH", '#' comments),
 * else one slot on $VHSM_SOCKET or the default socket. */
static CK_RV config_load(void) {
    const char *env = secure_getenv("VHSM_PKCS11_SOCKETS");
    CK_RV rv;
    if (env && *env) {
        _cleanup_free_ char *copy = strdup(env);
        if (!copy)
            return CKR_HOST_MEMORY;
        char *save = NULL;
        for (char *p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save))
            if ((rv = slot_add(p)) != CKR_OK)
                return rv;
        if (G.n_slots > 0)
            return CKR_OK;
    }
    const char *conf = secure_getenv("VHSM_PKCS11_CONF");
    _cleanup_fclose_ FILE *f = fopen(conf && *conf ? conf : "/etc/vhsm/pkcs11.conf", "re");
    if (f) {
        char line[4096];
        while (fgets(line, sizeof(line), f)) {
            char *p = line + strspn(line, " \t");
            if (*p == '#' || strncmp(p, "socket", 6) != 0)
                continue;
            p += 6;
            p += strspn(p, " \t");
            if (*p != '=')
                continue;
            p++;
            p += strspn(p, " \t");
            p[strcspn(p, " \t\r\n")] = 0;
            if (*p && (rv = slot_add(p)) != CKR_OK)
                return rv;
        }
        if (G.n_slots > 0)
            return CKR_OK;
    }
    const char *sock = secure_getenv("VHSM_SOCKET");
    return slot_add(sock && *sock ? sock : VHSM_DEFAULT_SOCKET);
}

/* ---- connections --------------------------------------------------------------------------- */

/* A connection for one call, given back by the cleanup. */
typedef struct Conn {
    P11Slot *slot;
    VhsmClient *c;
    uint64_t gen; /* login generation the connection is attached to */
    int r;        /* result of the call, for conn_put */
    bool pinned;  /* the slot's session-object connection (sobj_lock held) */
} Conn;

/* The slot's login was lost (its ticket refused): forget it. */
static void slot_login_lost(P11Slot *s, uint64_t gen) {
    LOCKED(s->lock);
    if (s->login_gen != gen)
        return;
    s->user = NO_USER;
    s->ticket = secret_free(s->ticket);
    s->login_gen++;
}

/* Takes an idle connection of the slot (or opens one) and attaches it to the application's
 * login if it is not yet. Returns 0 or a negative errno (transport). */
#define P11_SPIN_US 200u
static int conn_attach(P11Slot *s, Conn *x);
static int conn_get(P11Slot *s, Conn *x) {
    bool have = false;
    {
        LOCKED(s->lock);
        if (s->n_idle > 0) {
            PoolConn pc = s->idle[--s->n_idle];
            x->c = pc.c;
            x->gen = pc.gen;
            have = true;
        }
    }
    if (!have) {
        int r = vhsm_connect(s->socket, &x->c);
        if (r < 0) {
            x->c = NULL;
            /* no socket file, or nobody listening: the daemon is not there */
            return r == -ENOENT || r == -ECONNREFUSED ? -ECONNREFUSED : r;
        }
        x->gen = 0; /* logged in as nobody */
        /* Synchronous calls: poll briefly for replies that are microseconds away (libvhsm
         * adapts the budget and spins only while another CPU is free; docs/pkcs11.md).
         * $VHSM_SPIN_US, when set, decides instead (0 = off). */
        if (!getenv("VHSM_SPIN_US"))
            (void)vhsm_set_spin(x->c, P11_SPIN_US);
    }
    return conn_attach(s, x);
}

/* Attaches x->c to the application's login if it is not yet. */
static int conn_attach(P11Slot *s, Conn *x) {
    for (;;) {
        uint8_t ticket[VHSM_TICKET_SIZE];
        CLEANUP_ERASE(ticket);
        uint64_t gen;
        bool logged_in;
        {
            LOCKED(s->lock);
            gen = s->login_gen;
            logged_in = s->user != NO_USER && s->ticket;
            if (logged_in)
                memcpy(ticket, secret_const_data(s->ticket), sizeof(ticket));
        }
        if (x->gen == gen)
            return 0;
        if (!logged_in) {
            /* a logout revoked the ticket this connection was attached to: it is logged out */
            x->gen = gen;
            return 0;
        }
        int r = vhsm_login_ticket(x->c, ticket);
        if (r >= 0 || r == -EALREADY || r == -EISCONN) {
            x->gen = gen;
            return 0;
        }
        if (p11_errno_is_transport(r)) {
            x->r = r;
            return r;
        }
        slot_login_lost(s, gen); /* revoked behind our back (a PIN change): logged out now */
    }
}

/* Gives the connection back after a call that returned x->r. A transport failure means vhsmd
 * is gone: every pooled connection is dead too, and the sessions opened before are invalid
 * (epoch). */
static void sobj_lost(P11Slot *s);
static void conn_release(Conn *x) {
    P11Slot *s = x->slot;
    VhsmClient *c = x->c;
    int r = x->r;
    if (!c)
        return;
    x->c = NULL;
    if (x->pinned) {
        bool lost = p11_errno_is_transport(r) || r == -ETIMEDOUT || r == -EPROTO;
        if (lost) {
            vhsm_disconnect(s->sobj); /* vhsmd destroys the session objects with it */
            s->sobj = NULL;
        } else
            s->sobj_gen = x->gen;
        mtx_unlock(s->sobj_lock);
        if (lost)
            sobj_lost(s);
        if (!p11_errno_is_transport(r))
            return;
        x->pinned = false;
        c = NULL; /* already closed; the rest below drops the pool */
    }
    if (p11_errno_is_transport(r) || r == -ETIMEDOUT || r == -EPROTO) {
        if (c)
            vhsm_disconnect(c);
        if (!p11_errno_is_transport(r))
            return;
        PoolConn drop[P11_POOL_MAX];
        size_t n;
        {
            LOCKED(s->lock);
            s->epoch++;
            s->revision = 0;
            n = s->n_idle;
            memcpy(drop, s->idle, n * sizeof(*drop));
            s->n_idle = 0;
            /* the daemon's logins died with it */
            if (s->user != NO_USER) {
                s->user = NO_USER;
                s->ticket = secret_free(s->ticket);
                s->login_gen++;
            }
        }
        for (size_t i = 0; i < n; i++)
            vhsm_disconnect(drop[i].c);
        if (!x->pinned) {
            /* the session-object connection died with the daemon too: drop it now, so that the
             * next session does not find it first (its session objects are gone) */
            bool had;
            mtx_lock(s->sobj_lock);
            had = s->sobj != NULL;
            vhsm_disconnect(s->sobj);
            s->sobj = NULL;
            mtx_unlock(s->sobj_lock);
            if (had)
                sobj_lost(s);
        }
        return;
    }
    {
        LOCKED(s->lock);
        if (!s->idle)
            s->idle = calloc(P11_POOL_MAX, sizeof(*s->idle));
        if (s->idle && s->n_idle < P11_POOL_MAX) {
            s->idle[s->n_idle++] = (PoolConn){c, x->gen};
            return;
        }
    }
    vhsm_disconnect(c);
}
#define _cleanup_conn_ _cleanup_(conn_release)

/* The slot's session-object connection (opened if create, else -ENOKEY when there is none: the
 * session objects are gone), locked until conn_release. */
static int conn_get_sobj(P11Slot *s, Conn *x, bool create) {
    mtx_lock(s->sobj_lock);
    if (!s->sobj) {
        int r = create ? vhsm_connect(s->socket, &s->sobj) : -ENOKEY;
        if (r < 0) {
            s->sobj = NULL;
            mtx_unlock(s->sobj_lock);
            return r == -ENOENT ? -ECONNREFUSED : r;
        }
        s->sobj_gen = 0;
    }
    x->c = s->sobj;
    x->gen = s->sobj_gen;
    x->pinned = true;
    return conn_attach(s, x);
}

/* The connection for a call about key k: its session-object connection for a session object,
 * else a pooled one. */
static int conn_get_for(P11Slot *s, const P11Key *k, Conn *x) {
    bool session;
    {
        LOCKED(s->lock);
        session = k && k->session;
    }
    return session ? conn_get_sobj(s, x, false) : conn_get(s, x);
}

/* ---- helpers ------------------------------------------------------------------------------- */

static void pad_copy(CK_UTF8CHAR *dst, size_t n, const char *src) {
    memset(dst, ' ', n);
    size_t l = strlen(src);
    memcpy(dst, src, MIN(l, n));
}

static bool initialized(void) {
    return atomic_load(&G.initialized);
}

static P11Slot *slot_get(CK_SLOT_ID id) {
    return id < G.n_slots ? &G.slots[id] : NULL;
}

/* Is the daemon of slot s there? (A ping on a pooled or new connection.) */
static bool slot_present(P11Slot *s) {
    /* A pooled connection may be dead from a restart: its failure drops the pool, and a second
     * try connects afresh. */
    for (int i = 0; i < 2; i++) {
        _cleanup_conn_ Conn x = {.slot = s};
        x.r = conn_get(s, &x);
        if (x.r < 0)
            return false;
        x.r = vhsm_ping(x.c);
        if (x.r >= 0)
            return true;
    }
    return false;
}

static KeyKind kind_from_type(const char *t, CK_ULONG *ret_bits) {
    static const struct {
        const char *t;
        KeyKind k;
        CK_ULONG bits;
    } map[] = {
        {"ec-p256", KK_EC_P256, 256},
        {"ec-p384", KK_EC_P384, 384},
        {"ed25519", KK_ED25519, 255},
        {"rsa2048", KK_RSA, 2048},
        {"rsa3072", KK_RSA, 3072},
        {"rsa4096", KK_RSA, 4096},
        {"aes256", KK_AES, 256},
        {"aes128", KK_AES, 128},
        {"aes192", KK_AES, 192},
        {"hmac-sha256", KK_HMAC_SHA256, 256},
        {"hmac-sha384", KK_HMAC_SHA384, 384},
        {"data", KK_DATA, 0},
        {"cert", KK_CERT, 0},
        {"generic-secret", KK_GENERIC, 0}, /* bits: from the description */
    };
    for (size_t i = 0; i < ELEMENTSOF(map); i++)
        if (streq(t, map[i].t)) {
            *ret_bits = map[i].bits;
            return map[i].k;
        }
    return _KK_INVALID;
}

static bool kind_is_secret(KeyKind k) {
    return k == KK_AES || k == KK_HMAC_SHA256 || k == KK_HMAC_SHA384 || k == KK_GENERIC;
}

/* Data objects and certificates: one object (ROLE_PRIV handle), no key. */
static bool kind_is_nonkey(KeyKind k) {
    return k == KK_DATA || k == KK_CERT;
}

/* The kind and size of a public key (a lone public key object). */
static KeyKind kind_from_pkey(EVP_PKEY *pk, CK_ULONG *ret_bits) {
    char group[32];
    if (EVP_PKEY_is_a(pk, "ED25519")) {
        *ret_bits = 255;
        return KK_ED25519;
    }
    if (EVP_PKEY_is_a(pk, "RSA")) {
        *ret_bits = (CK_ULONG)EVP_PKEY_get_bits(pk);
        return KK_RSA;
    }
    if (EVP_PKEY_is_a(pk, "EC") &&
        EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, NULL)) {
        if (streq(group, "prime256v1") || streq(group, "P-256")) {
            *ret_bits = 256;
            return KK_EC_P256;
        }
        if (streq(group, "secp384r1") || streq(group, "P-384")) {
            *ret_bits = 384;
            return KK_EC_P384;
        }
    }
    return _KK_INVALID;
}

static bool kind_is_ec(KeyKind k) {
    return k == KK_EC_P256 || k == KK_EC_P384 || k == KK_ED25519;
}

static CK_KEY_TYPE kind_key_type(KeyKind k) {
    switch (k) {
    case KK_EC_P256:
    case KK_EC_P384:
        return CKK_EC;
    case KK_ED25519:
        return CKK_EC_EDWARDS;
    case KK_RSA:
        return CKK_RSA;
    case KK_AES:
        return CKK_AES;
    case KK_HMAC_SHA256:
    case KK_HMAC_SHA384:
    case KK_GENERIC:
        return CKK_GENERIC_SECRET;
    default:
        return CKK_VENDOR_DEFINED;
    }
}

static P11Curve kind_curve(KeyKind k) {
    return k == KK_EC_P256 ? P11_CURVE_P256 : k == KK_EC_P384 ? P11_CURVE_P384 : P11_CURVE_ED25519;
}

/* The plain name if full is in the caller's own namespace, else full. */
static const char *display_name(const char *full) {
    char prefix[16];
    int n = snprintf(prefix, sizeof(prefix), "%u/", (unsigned)geteuid());
    if (n > 0 && strncmp(full, prefix, (size_t)n) == 0)
        return full + n;
    return full;
}

static P11Key *key_free(P11Key *k) {
    if (!k)
        return NULL;
    free(k->name);
    free(k->label);
    EVP_PKEY_free(k->pub);
    free(k->attrs);
    free(k->value);
    free(k);
    return NULL;
}

/* Takes the revision-2 members of a key description ("flags", "attrs", "spki"); absent members
 * (a revision-1 daemon) leave the key as it is. Slot lock held. */
static int key_update_object_locked(P11Key *k, json_t *o) {
    json_t *fl = json_object_get(o, "flags"), *attrs = json_object_get(o, "attrs");
    const char *spki = json_string_value(json_object_get(o, "spki"));
    if (json_is_integer(fl)) {
        k->has_flags = true;
        k->flags = (uint32_t)json_integer_value(fl);
    }
    if (json_is_array(attrs)) {
        size_t i, total = 0;
        json_t *a;
        json_array_foreach(attrs, i, a) {
            const char *v = json_string_value(json_object_get(a, "value"));
            if (!v || !json_is_integer(json_object_get(a, "type")))
                return -EPROTO;
            total += 8 + strlen(v) / 2;
        }
        uint8_t *blob = malloc(total + 1), *p = blob;
        if (!blob)
            return -ENOMEM;
        json_array_foreach(attrs, i, a) {
            const char *v = json_string_value(json_object_get(a, "value"));
            uint32_t type = (uint32_t)json_integer_value(json_object_get(a, "type"));
            long n = 0;
            uint8_t *val = *v ? OPENSSL_hexstr2buf(v, &n) : NULL;
            if ((*v && !val) || n < 0 || (size_t)n > strlen(v) / 2) {
                OPENSSL_free(val);
                free(blob);
                return -EPROTO;
            }
            uint32_t len = (uint32_t)n;
            memcpy(p, &type, 4);
            memcpy(p + 4, &len, 4);
            if (len)
                memcpy(p + 8, val, len);
            p += 8 + len;
            OPENSSL_free(val);
        }
        free(k->attrs);
        k->attrs = blob;
        k->attrs_len = (size_t)(p - blob);
    }
    if (spki && !k->pub) {
        long n = 0;
        uint8_t *der = OPENSSL_hexstr2buf(spki, &n);
        const uint8_t *q = der;
        if (der)
            k->pub = d2i_PUBKEY(NULL, &q, n);
        OPENSSL_free(der);
    }
    if (kind_is_nonkey(k->kind)) {
        /* a data object's value comes and goes with the login (PRIVATE ones) */
        const char *val = json_string_value(json_object_get(o, "value"));
        long n = 0;
        uint8_t *v = val && *val ? OPENSSL_hexstr2buf(val, &n) : NULL;
        free(k->value);
        k->value = NULL;
        k->value_len = 0;
        if (v && n > 0 && (k->value = malloc((size_t)n))) {
            memcpy(k->value, v, (size_t)n);
            k->value_len = (size_t)n;
        }
        OPENSSL_free(v);
    }
    if (k->has_flags)
        k->session = k->flags & VHSM_OBJ_SESSION;
    return 0;
}

/* An application attribute stored with the key (revision 2), copied (slot lock held).
 * Returns false if the key has none of that type. */
static bool key_attr_copy_locked(const P11Key *k, CK_ATTRIBUTE_TYPE t, uint8_t **ret,
                                 size_t *ret_len) {
    for (size_t off = 0; k->attrs && off + 8 <= k->attrs_len;) {
        uint32_t type, len;
        memcpy(&type, k->attrs + off, 4);
        memcpy(&len, k->attrs + off + 4, 4);
        if (type == t) {
            uint8_t *c = malloc(len ? len : 1);
            if (!c)
                return false;
            memcpy(c, k->attrs + off + 8, len);
            *ret = c;
            *ret_len = len;
            return true;
        }
        off += 8 + len;
    }
    return false;
}

/* Adds or refreshes the key (called with the slot locked). Returns its index, or -ENOMEM. */
static int slot_key_upsert_locked(P11Slot *s, const char *name, const char *type, const char *label,
                                  const char *origin, json_t *desc) {
    CK_ULONG bits = 0;
    bool pub_only = streq(type, "public");
    KeyKind kind = pub_only ? _KK_INVALID : kind_from_type(type, &bits);
    if (pub_only) {
        /* a lone public key: its kind is in its SubjectPublicKeyInfo */
        const char *spki = desc ? json_string_value(json_object_get(desc, "spki")) : NULL;
        long n = 0;
        uint8_t *der = spki ? OPENSSL_hexstr2buf(spki, &n) : NULL;
        const uint8_t *q = der;
        EVP_PKEY *pk = der ? d2i_PUBKEY(NULL, &q, n) : NULL;
        if (pk)
            kind = kind_from_pkey(pk, &bits);
        EVP_PKEY_free(pk);
        OPENSSL_free(der);
    }
    if (kind < 0)
        return -EOPNOTSUPP;
    for (size_t i = 0; i < s->n_keys; i++) {
        P11Key *k = s->keys[i];
        if (!k->alive || !streq(k->name, name))
            continue;
        if (k->kind != kind || k->pub_only != pub_only) {
            /* deleted and re-created with another type: a new object */
            k->alive = false;
            break;
        }
        const char *want = label && *label ? label : display_name(name);
        if (!streq(k->label, want)) {
            char *l = strdup(want);
            if (!l)
                return -ENOMEM;
            free(k->label);
            k->label = l;
        }
        if (desc) {
            int r = key_update_object_locked(k, desc);
            if (r < 0)
                return r;
        }
        return (int)i;
    }
    if (s->n_keys >= (1u << 20))
        return -ENOSPC;
    if (s->n_keys == s->cap_keys) {
        size_t cap = s->cap_keys ? s->cap_keys * 2 : 64;
        P11Key **n = realloc(s->keys, cap * sizeof(*n));
        if (!n)
            return -ENOMEM;
        s->keys = n;
        s->cap_keys = cap;
    }
    P11Key *k = calloc(1, sizeof(*k));
    if (!k)
        return -ENOMEM;
    k->name = strdup(name);
    k->label = strdup(label && *label ? label : display_name(name));
    if (!k->name || !k->label) {
        key_free(k);
        return -ENOMEM;
    }
    k->kind = kind;
    k->bits = bits;
    k->pub_only = pub_only;
    if (kind == KK_GENERIC && desc && json_is_integer(json_object_get(desc, "bits")))
        k->bits = (CK_ULONG)json_integer_value(json_object_get(desc, "bits"));
    k->local = !origin || streq(origin, "generated");
    k->alive = true;
    if (desc && key_update_object_locked(k, desc) < 0) {
        key_free(k);
        return -ENOMEM;
    }
    s->keys[s->n_keys] = k;
    return (int)s->n_keys++;
}

/* Lists the keys vhsmd shows us and updates the slot's table. */
static int slot_refresh(P11Slot *s, VhsmClient *c) {
    _cleanup_free_ char *text = NULL;
    int r = vhsm_key_list(c, &text);
    if (r < 0)
        return r;
    json_error_t err;
    json_t *arr = json_loads(text, 0, &err);
    if (!arr || !json_is_array(arr)) {
        json_decref(arr);
        return -EPROTO;
    }
    LOCKED(s->lock);
    bool *seen = calloc(s->n_keys + json_array_size(arr) + 1, sizeof(bool));
    if (!seen) {
        json_decref(arr);
        return -ENOMEM;
    }
    size_t i;
    json_t *o;
    r = 0;
    json_array_foreach(arr, i, o) {
        const char *name = json_string_value(json_object_get(o, "name"));
        const char *type = json_string_value(json_object_get(o, "type"));
        if (!name || !type)
            continue;
        int idx =
            slot_key_upsert_locked(s, name, type, json_string_value(json_object_get(o, "label")),
                                   json_string_value(json_object_get(o, "origin")), o);
        if (idx == -ENOMEM) {
            r = idx;
            break;
        }
        if (idx >= 0)
            seen[idx] = true;
    }
    if (r == 0)
        for (size_t j = 0; j < s->n_keys; j++)
            if (!seen[j])
                s->keys[j]->alive = false;
    free(seen);
    json_decref(arr);
    return r;
}

/* The key behind an object handle of slot id, or NULL. */
static P11Key *object_key(CK_SLOT_ID id, CK_OBJECT_HANDLE h, unsigned *ret_role) {
    P11Slot *s = slot_get(id);
    unsigned role = HANDLE_ROLE(h);
    if (!s || HANDLE_SLOT(h) != id || (role != ROLE_PRIV && role != ROLE_PUB) || (h >> 8) == 0)
        return NULL;
    LOCKED(s->lock);
    size_t idx = HANDLE_IDX(h);
    if (idx >= s->n_keys)
        return NULL;
    P11Key *k = s->keys[idx];
    if (!k->alive || (role == ROLE_PUB && (kind_is_secret(k->kind) || kind_is_nonkey(k->kind))) ||
        (role == ROLE_PRIV && k->pub_only))
        return NULL;
    *ret_role = role;
    return k;
}

/* The session-object connection closed (vhsmd went away, or the module's connection failed):
 * the session objects are gone. */
static void sobj_lost(P11Slot *s) {
    LOCKED(s->lock);
    for (size_t i = 0; i < s->n_keys; i++)
        if (s->keys[i]->session)
            s->keys[i]->alive = false;
}

/* The public key of k, fetched from vhsmd once. Returns a borrowed pointer or NULL (*ret_r). */
static EVP_PKEY *key_pub(P11Slot *s, P11Key *k, int *ret_r) {
    {
        LOCKED(s->lock);
        if (k->pub)
            return k->pub;
    }
    _cleanup_conn_ Conn x = {.slot = s};
    _cleanup_free_ char *pem = NULL;
    x.r = conn_get_for(s, k, &x);
    if (x.r >= 0)
        x.r = vhsm_pubkey(x.c, k->name, "pem", 0, &pem);
    if (x.r < 0) {
        *ret_r = x.r;
        return NULL;
    }
    _cleanup_(BIO_free_allp) BIO *bio = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *pk = bio ? PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL) : NULL;
    if (!pk) {
        *ret_r = -EPROTO;
        return NULL;
    }
    LOCKED(s->lock);
    if (k->pub)
        EVP_PKEY_free(pk);
    else
        k->pub = pk;
    return k->pub;
}

/* ---- sessions ------------------------------------------------------------------------------ */

static void op_reset(P11Op *op) {
    EVP_MD_CTX_free(op->mdctx);
    free(op->aad);
    p11_par_done(&op->par);
    if (op->buf) {
        OPENSSL_cleanse(op->buf, op->cap);
        free(op->buf);
    }
    *op = (P11Op){0};
}

/* The spec's output convention (PKCS#11 v2.40 5.2): no buffer asks for the length (*len = need,
 * CKR_OK); a short buffer gets CKR_BUFFER_TOO_SMALL (*len = need). Returns true when buf has room
 * for need bytes and the caller fills it; otherwise *ret is what the caller returns. */
static bool out_room(const void *buf, CK_ULONG_PTR len, CK_ULONG need, CK_RV *ret) {
    if (buf && *len >= need)
        return true;
    *ret = buf ? CKR_BUFFER_TOO_SMALL : CKR_OK;
    *len = need;
    return false;
}

/* out_room for an operation's final call: a length query and a short buffer leave the operation
 * active, remembering whether it was the single-part call. */
static bool op_out_room(P11Op *op, bool single, const void *buf, CK_ULONG_PTR len, CK_ULONG need,
                        CK_RV *ret) {
    if (out_room(buf, len, need, ret))
        return true;
    op->single = single;
    return false;
}

/* The argument checks every final call shares: data given for a single-part call, no
 * single-part call in the middle of a multi-part one. */
static CK_RV finish_args(const P11Op *op, bool single, const void *data, size_t len, bool out_ok) {
    if (!out_ok || (single && !data && len))
        return CKR_ARGUMENTS_BAD;
    if (single && op->multi)
        return CKR_OPERATION_ACTIVE;
    return CKR_OK;
}

/* An error ends the operation (the spec's rule for every code but CKR_BUFFER_TOO_SMALL). */
static CK_RV op_fail(P11Op *op, CK_RV rv) {
    op_reset(op);
    return rv;
}

static void session_free(P11Session *s) {
    if (!s)
        return;
    for (int i = 0; i < _OP_MAX; i++)
        op_reset(&s->op[i]);
    free(s->found);
    mtx_free(s->lock);
    free(s);
}

/* Looks the session up, takes a reference and its lock. CKR_SESSION_HANDLE_INVALID, or
 * CKR_DEVICE_REMOVED when vhsmd went away since the session was opened. */
static CK_RV session_get(CK_SESSION_HANDLE h, P11Session **ret) {
    if (!initialized())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    P11Session *s = NULL;
    {
        LOCKED(G.lock);
        size_t idx = (size_t)(h & 0xffffff) - 1;
        if (h == CK_INVALID_HANDLE || idx >= G.n_sessions_cap || !G.sessions[idx] ||
            G.sessions[idx]->handle != h)
            return CKR_SESSION_HANDLE_INVALID;
        s = G.sessions[idx];
        s->refs++;
    }
    mtx_lock(s->lock);
    *ret = s;
    P11Slot *slot = slot_get(s->slot);
    uint64_t epoch;
    {
        LOCKED(slot->lock);
        epoch = slot->epoch;
    }
    return epoch == s->epoch ? CKR_OK : CKR_DEVICE_REMOVED;
}

static void session_put(P11Session *s) {
    if (!s)
        return;
    mtx_unlock(s->lock);
    bool last;
    {
        LOCKED(G.lock);
        last = --s->refs == 0 && s->closed;
    }
    if (last)
        session_free(s);
}

typedef struct SessionRef {
    P11Session *s;
} SessionRef;
static void session_ref_release(SessionRef *r) {
    session_put(r->s);
}
/* Declares P11Session *sess and returns from the calling function on failure. */
#define SESSION_OR_RETURN(h)                                                                       \
    _cleanup_(session_ref_release) SessionRef sref_ = {NULL};                                      \
    P11Session *sess = NULL;                                                                       \
    do {                                                                                           \
        CK_RV rv_ = session_get((h), &sref_.s);                                                    \
        sess = sref_.s;                                                                            \
        (void)sess;                                                                                \
        if (rv_ != CKR_OK)                                                                         \
            return rv_;                                                                            \
    } while (0)

/* Removes s from the table (module lock held). */
static void session_unlink_locked(P11Session *s) {
    size_t idx = (size_t)(s->handle & 0xffffff) - 1;
    if (idx < G.n_sessions_cap && G.sessions[idx] == s)
        G.sessions[idx] = NULL;
    P11Slot *slot = slot_get(s->slot);
    LOCKED(slot->lock);
    slot->n_sessions--;
    if (s->flags & CKF_RW_SESSION)
        slot->n_rw_sessions--;
}

/* ---- general-purpose functions ------------------------------------------------------------- */

static CK_RV finalize_locked(void) {
    atomic_store(&G.initialized, false);
    for (size_t i = 0; i < G.n_sessions_cap; i++)
        session_free(G.sessions[i]);
    free(G.sessions);
    for (size_t i = 0; i < G.n_slots; i++) {
        P11Slot *s = &G.slots[i];
        for (size_t j = 0; j < s->n_idle; j++)
            vhsm_disconnect(s->idle[j].c);
        vhsm_disconnect(s->sobj); /* vhsmd destroys the session objects */
        mtx_free(s->sobj_lock);
        secret_free(s->ticket);
        free(s->idle);
        for (size_t j = 0; j < s->n_keys; j++)
            key_free(s->keys[j]);
        free(s->keys);
        free(s->socket);
        mtx_free(s->lock);
    }
    mtx_free(G.lock);
    memset(&G, 0, sizeof(G));
    return CKR_OK;
}

CK_RV C_Initialize(CK_VOID_PTR pInitArgs) {
    (void)pthread_once(&atfork_once, atfork_register);
    pthread_mutex_lock(&init_mutex);
    CK_RV rv = CKR_OK;
    if (initialized()) {
        rv = CKR_CRYPTOKI_ALREADY_INITIALIZED;
        goto out;
    }
    lock_mode = LOCK_OS;
    if (pInitArgs) {
        CK_C_INITIALIZE_ARGS *a = pInitArgs;
        if (a->pReserved) {
            rv = CKR_ARGUMENTS_BAD;
            goto out;
        }
        int n_cb = !!a->CreateMutex + !!a->DestroyMutex + !!a->LockMutex + !!a->UnlockMutex;
        if (n_cb != 0 && n_cb != 4) {
            rv = CKR_ARGUMENTS_BAD;
            goto out;
        }
        /* Callbacks without CKF_OS_LOCKING_OK: we must use the application's mutexes. With
         * the flag, either is allowed: the OS's are cheaper. */
        if (n_cb == 4 && !(a->flags & CKF_OS_LOCKING_OK)) {
            lock_mode = LOCK_APP;
            app_locks = *a;
        }
    }
    memset(&G, 0, sizeof(G));
    G.lock = mtx_new();
    if (!G.lock) {
        rv = CKR_HOST_MEMORY;
        goto out;
    }
    rv = config_load();
    if (rv != CKR_OK) {
        finalize_locked();
        goto out;
    }
    atomic_store(&G.initialized, true);
out:
    pthread_mutex_unlock(&init_mutex);
    return rv;
}

CK_RV C_Finalize(CK_VOID_PTR pReserved) {
    if (pReserved)
        return CKR_ARGUMENTS_BAD;
    pthread_mutex_lock(&init_mutex);
    CK_RV rv = initialized() ? finalize_locked() : CKR_CRYPTOKI_NOT_INITIALIZED;
    pthread_mutex_unlock(&init_mutex);
    return rv;
}

CK_RV C_GetInfo(CK_INFO_PTR pInfo) {
    if (!initialized())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    if (!pInfo)
        return CKR_ARGUMENTS_BAD;
    memset(pInfo, 0, sizeof(*pInfo));
    pInfo->cryptokiVersion = (CK_VERSION){3, 0};
    pad_copy(pInfo->manufacturerID, sizeof(pInfo->manufacturerID), MANUFACTURER);
    pad_copy(pInfo->libraryDescription, sizeof(pInfo->libraryDescription), LIBRARY_DESCRIPTION);
    pInfo->libraryVersion = (CK_VERSION){0, 1};
    return CKR_OK;
}

/* ---- slots and tokens ---------------------------------------------------------------------- */

CK_RV C_GetSlotList(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList, CK_ULONG_PTR pulCount) {
    if (!initialized())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    if (!pulCount)
        return CKR_ARGUMENTS_BAD;
    CK_SLOT_ID ids[P11_MAX_SLOTS];
    CK_ULONG n = 0;
    for (size_t i = 0; i < G.n_slots; i++)
        if (!tokenPresent || slot_present(&G.slots[i]))
            ids[n++] = i;
    CK_RV rv;
    if (!out_room(pSlotList, pulCount, n, &rv))
        return rv;
    memcpy(pSlotList, ids, n * sizeof(*ids));
    *pulCount = n;
    return CKR_OK;
}

CK_RV C_GetSlotInfo(CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo) {
    if (!initialized())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    P11Slot *s = slot_get(slotID);
    if (!s)
        return CKR_SLOT_ID_INVALID;
    if (!pInfo)
        return CKR_ARGUMENTS_BAD;
    memset(pInfo, 0, sizeof(*pInfo));
    char desc[160];
    snprintf(desc, sizeof(desc), "vhsmd at %s", s->socket);
    pad_copy(pInfo->slotDescription, sizeof(pInfo->slotDescription), desc);
    pad_copy(pInfo->manufacturerID, sizeof(pInfo->manufacturerID), MANUFACTURER);
    /* The daemon may come and go: a removable device whose token is present while it answers. */
    pInfo->flags = CKF_REMOVABLE_DEVICE | (slot_present(s) ? CKF_TOKEN_PRESENT : 0);
    pInfo->hardwareVersion = (CK_VERSION){0, 1};
    pInfo->firmwareVersion = (CK_VERSION){0, 1};
    return CKR_OK;
}

/* The token's state from vhsmd (revision 2); a revision-1 daemon has no PINs. Updates the
 * slot's login_required. */
static int slot_token_info(P11Slot *s, VhsmTokenInfo *ret) {
    _cleanup_conn_ Conn x = {.slot = s};
    x.r = conn_get(s, &x);
    if (x.r >= 0)
        x.r = vhsm_token_info(x.c, ret);
    if (x.r == -EBADRQC) { /* revision 1: initialised, no PINs */
        *ret = (VhsmTokenInfo){.uid = (uint32_t)geteuid(),
                               .flags = VHSM_TOKEN_INITIALIZED,
                               .pin_min = VHSM_PIN_MIN,
                               .pin_max = VHSM_PIN_MAX,
                               .login = VHSM_USER_NONE};
        snprintf(ret->serial, sizeof(ret->serial), "%u", (unsigned)geteuid());
        x.r = 0;
    }
    if (x.r >= 0) {
        LOCKED(s->lock);
        s->login_required = ret->flags & VHSM_TOKEN_LOGIN_REQUIRED;
    }
    return x.r;
}

CK_RV C_GetTokenInfo(CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo) {
    if (!initialized())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    P11Slot *s = slot_get(slotID);
    if (!s)
        return CKR_SLOT_ID_INVALID;
    if (!pInfo)
        return CKR_ARGUMENTS_BAD;
    VhsmTokenInfo ti;
    int r = slot_token_info(s, &ti);
    if (p11_errno_is_transport(r))
        return CKR_TOKEN_NOT_PRESENT;
    if (r < 0)
        return p11_rv_from_errno(r, P11_CTX_GENERIC);
    memset(pInfo, 0, sizeof(*pInfo));
    memset(pInfo->label, ' ', sizeof(pInfo->label));
    if (ti.label_len > 0)
        memcpy(pInfo->label, ti.label, MIN(ti.label_len, sizeof(pInfo->label)));
    else {
        char label[40];
        snprintf(label, sizeof(label), "vhsm uid %u", (unsigned)ti.uid);
        pad_copy(pInfo->label, sizeof(pInfo->label), label);
    }
    pad_copy(pInfo->manufacturerID, sizeof(pInfo->manufacturerID), MANUFACTURER);
    pad_copy(pInfo->model, sizeof(pInfo->model), "vHSM");
    pad_copy(pInfo->serialNumber, sizeof(pInfo->serialNumber), ti.serial);
    static const struct {
        uint32_t v;
        CK_FLAGS ck;
    } fl[] = {
        {VHSM_TOKEN_INITIALIZED, CKF_TOKEN_INITIALIZED},
        {VHSM_TOKEN_USER_PIN_INITIALIZED, CKF_USER_PIN_INITIALIZED},
        {VHSM_TOKEN_LOGIN_REQUIRED, CKF_LOGIN_REQUIRED},
        {VHSM_TOKEN_USER_PIN_COUNT_LOW, CKF_USER_PIN_COUNT_LOW},
        {VHSM_TOKEN_USER_PIN_FINAL_TRY, CKF_USER_PIN_FINAL_TRY},
        {VHSM_TOKEN_USER_PIN_LOCKED, CKF_USER_PIN_LOCKED},
        {VHSM_TOKEN_SO_PIN_COUNT_LOW, CKF_SO_PIN_COUNT_LOW},
        {VHSM_TOKEN_SO_PIN_FINAL_TRY, CKF_SO_PIN_FINAL_TRY},
        {VHSM_TOKEN_SO_PIN_LOCKED, CKF_SO_PIN_LOCKED},
    };
    pInfo->flags = CKF_RNG;
    for (size_t i = 0; i < ELEMENTSOF(fl); i++)
        if (ti.flags & fl[i].v)
            pInfo->flags |= fl[i].ck;
    {
        LOCKED(s->lock);
        pInfo->ulSessionCount = s->n_sessions;
        pInfo->ulRwSessionCount = s->n_rw_sessions;
    }
    pInfo->ulMaxSessionCount = CK_EFFECTIVELY_INFINITE;
    pInfo->ulMaxRwSessionCount = CK_EFFECTIVELY_INFINITE;
    pInfo->ulMaxPinLen = ti.pin_max;
    pInfo->ulMinPinLen = ti.pin_min;
    pInfo->ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
    pInfo->ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
    pInfo->ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
    pInfo->ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
    pInfo->hardwareVersion = (CK_VERSION){0, 1};
    pInfo->firmwareVersion = (CK_VERSION){0, 2};
    memset(pInfo->utcTime, ' ', sizeof(pInfo->utcTime));
    return CKR_OK;
}

CK_RV C_WaitForSlotEvent(CK_FLAGS flags, CK_SLOT_ID_PTR pSlot, CK_VOID_PTR pReserved) {
    if (!initialized())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    return CKR_FUNCTION_NOT_SUPPORTED;
}

/* ---- mechanisms ---------------------------------------------------------------------------- */

#define EC_FLAGS (CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS)
typedef struct MechInfo {
    CK_MECHANISM_TYPE type;
    CK_ULONG min, max;
    CK_FLAGS flags;
    uint32_t revision; /* the vhsmd protocol revision that has it */
} MechInfo;

/* What vhsmd does, exactly, by protocol revision. Key sizes: bits for RSA and EC, bytes for
 * AES and generic secrets, as the specification says. */
static const MechInfo mechs[] = {
    {CKM_EC_KEY_PAIR_GEN, 256, 384, CKF_HW | CKF_GENERATE_KEY_PAIR | EC_FLAGS, 1},
    {CKM_EC_EDWARDS_KEY_PAIR_GEN, 255, 255, CKF_HW | CKF_GENERATE_KEY_PAIR, 1},
    {CKM_RSA_PKCS_KEY_PAIR_GEN, 2048, 4096, CKF_HW | CKF_GENERATE_KEY_PAIR, 1},
    {CKM_AES_KEY_GEN, 16, 32, CKF_HW | CKF_GENERATE, 1}, /* 16, 24: hard-wrap's aes128/192 */
    {CKM_GENERIC_SECRET_KEY_GEN, 32, 48, CKF_HW | CKF_GENERATE, 1},
    {CKM_ECDSA, 256, 384, CKF_HW | CKF_SIGN | CKF_VERIFY | EC_FLAGS, 1},
    {CKM_ECDSA_SHA256, 256, 256, CKF_HW | CKF_SIGN | CKF_VERIFY | EC_FLAGS, 1},
    {CKM_ECDSA_SHA384, 384, 384, CKF_HW | CKF_SIGN | CKF_VERIFY | EC_FLAGS, 1},
    {CKM_EDDSA, 255, 255, CKF_HW | CKF_SIGN | CKF_VERIFY, 1},
    {CKM_RSA_PKCS, 2048, 4096, CKF_HW | CKF_SIGN | CKF_VERIFY, 1},
    {CKM_SHA256_RSA_PKCS, 2048, 4096, CKF_HW | CKF_SIGN | CKF_VERIFY, 1},
    {CKM_SHA384_RSA_PKCS, 2048, 4096, CKF_HW | CKF_SIGN | CKF_VERIFY, 1},
    {CKM_RSA_PKCS_PSS, 2048, 4096, CKF_HW | CKF_SIGN | CKF_VERIFY, 1},
    {CKM_SHA256_RSA_PKCS_PSS, 2048, 4096, CKF_HW | CKF_SIGN | CKF_VERIFY, 1},
    {CKM_SHA384_RSA_PKCS_PSS, 2048, 4096, CKF_HW | CKF_SIGN | CKF_VERIFY, 1},
    {CKM_RSA_PKCS_OAEP, 2048, 4096, CKF_HW | CKF_ENCRYPT | CKF_DECRYPT, 1},
    {CKM_SHA256_HMAC, 32, 32, CKF_HW | CKF_SIGN | CKF_VERIFY, 1},
    {CKM_SHA384_HMAC, 48, 48, CKF_HW | CKF_SIGN | CKF_VERIFY, 1},
    {CKM_SHA256, 0, 0, CKF_DIGEST, 1},
    {CKM_SHA384, 0, 0, CKF_DIGEST, 1},
    {CKM_SHA512, 0, 0, CKF_DIGEST, 1},
    {CKM_AES_GCM, 16, 32, CKF_HW | CKF_ENCRYPT | CKF_DECRYPT, 2},
    {CKM_AES_CBC, 16, 32, CKF_HW | CKF_ENCRYPT | CKF_DECRYPT, 2},
    {CKM_AES_CBC_PAD, 16, 32, CKF_HW | CKF_ENCRYPT | CKF_DECRYPT, 2},
    {CKM_AES_CTR, 16, 32, CKF_HW | CKF_ENCRYPT | CKF_DECRYPT, 2},
    /* hard-wrap */
    {CKM_AES_KEY_WRAP, 16, 32, CKF_HW | CKF_WRAP | CKF_UNWRAP, 2},
    {CKM_AES_KEY_WRAP_PAD, 16, 32, CKF_HW | CKF_WRAP | CKF_UNWRAP, 2},
    {CKM_ECDH1_DERIVE, 256, 384, CKF_HW | CKF_DERIVE | EC_FLAGS, 2},
};

/* Branch par: mechanisms that need a feature of vhsmd beyond its revision (VHSM_FEATURE_*),
 * looked up before the table above: where both have a mechanism, these rows describe it on a
 * daemon with the feature, the rows above on older ones. */
typedef struct ParMech {
    MechInfo m;
    uint32_t feature; /* VHSM_FEATURE_* it needs (0: none) */
} ParMech;
#define PAR VHSM_FEATURE_MECH_PARAMS
#define SV (CKF_HW | CKF_SIGN | CKF_VERIFY)
static const ParMech par_mechs[] = {
    {{CKM_RSA_PKCS_PSS, 2048, 4096, SV, 2}, PAR},
    {{CKM_SHA256_RSA_PKCS_PSS, 2048, 4096, SV, 2}, PAR},
    {{CKM_SHA384_RSA_PKCS_PSS, 2048, 4096, SV, 2}, PAR},
    {{CKM_SHA512_RSA_PKCS_PSS, 2048, 4096, SV, 2}, PAR},
    {{CKM_SHA224_RSA_PKCS_PSS, 2048, 4096, SV, 2}, PAR},
    {{CKM_RSA_PKCS_OAEP, 2048, 4096, CKF_HW | CKF_ENCRYPT | CKF_DECRYPT, 2}, PAR},
    {{CKM_SHA256_HMAC, 32, 48, SV, 2}, PAR},
    {{CKM_SHA384_HMAC, 32, 48, SV, 2}, PAR},
    {{CKM_SHA512_HMAC, 32, 48, SV, 2}, PAR},
    {{CKM_SHA224_HMAC, 32, 48, SV, 2}, PAR},
    {{CKM_SHA256_HMAC_GENERAL, 32, 48, SV, 2}, PAR},
    {{CKM_SHA384_HMAC_GENERAL, 32, 48, SV, 2}, PAR},
    {{CKM_SHA512_HMAC_GENERAL, 32, 48, SV, 2}, PAR},
    {{CKM_SHA224_HMAC_GENERAL, 32, 48, SV, 2}, PAR},
    {{CKM_ECDSA_SHA512, 256, 384, SV | EC_FLAGS, 2}, 0},
    {{CKM_ECDSA_SHA224, 256, 384, SV | EC_FLAGS, 2}, 0},
    {{CKM_SHA512_RSA_PKCS, 2048, 4096, SV, 2}, 0},
    {{CKM_SHA224_RSA_PKCS, 2048, 4096, SV, 2}, 0},
};

/* The slot's vhsmd protocol revision (asked once per daemon). 1 when it cannot be asked. */
static uint32_t slot_revision(P11Slot *s) {
    {
        LOCKED(s->lock);
        if (s->revision)
            return s->revision;
    }
    _cleanup_conn_ Conn x = {.slot = s};
    uint32_t rev = 1;
    x.r = conn_get(s, &x);
    uint32_t feat = 0;
    if (x.r >= 0)
        x.r = vhsm_revision(x.c, &rev);
    if (x.r < 0)
        return 1;
    if (rev >= 2 && vhsm_features(x.c, &feat) < 0)
        feat = 0;
    LOCKED(s->lock);
    s->revision = rev;
    s->features = feat;
    return rev;
}

/* The feature a row needs (0 for the rows of mechs[]). */
static uint32_t mech_feature(const MechInfo *m) {
    for (size_t i = 0; i < ELEMENTSOF(par_mechs); i++)
        if (m == &par_mechs[i].m)
            return par_mechs[i].feature;
    return 0;
}

/* Whether the slot's vhsmd has the protocol revision and features a mechanism row needs. */
static bool mech_available(P11Slot *s, const MechInfo *m) {
    uint32_t f = mech_feature(m);
    if (m->revision <= 1)
        return true;
    if (slot_revision(s) < m->revision)
        return false;
    if (!f)
        return true;
    LOCKED(s->lock);
    return (s->features & f) == f;
}

/* Row i of par_mechs[] then mechs[]. */
static const MechInfo *mech_row(size_t i) {
    return i < ELEMENTSOF(par_mechs) ? &par_mechs[i].m : &mechs[i - ELEMENTSOF(par_mechs)];
}
#define MECH_ROWS (ELEMENTSOF(par_mechs) + ELEMENTSOF(mechs))

/* The mechanism if the slot's vhsmd has it. */
static const MechInfo *mech_find(P11Slot *s, CK_MECHANISM_TYPE t) {
    for (size_t i = 0; i < MECH_ROWS; i++)
        if (mech_row(i)->type == t && mech_available(s, mech_row(i)))
            return mech_row(i);
    return NULL;
}

CK_RV C_GetMechanismList(CK_SLOT_ID slotID, CK_MECHANISM_TYPE_PTR pMechanismList,
                         CK_ULONG_PTR pulCount) {
    if (!initialized())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    if (!slot_get(slotID))
        return CKR_SLOT_ID_INVALID;
    if (!pulCount)
        return CKR_ARGUMENTS_BAD;
    CK_MECHANISM_TYPE list[MECH_ROWS];
    CK_ULONG n = 0;
    for (size_t i = 0; i < MECH_ROWS; i++) {
        bool dup = false;
        for (CK_ULONG j = 0; j < n; j++)
            dup = dup || list[j] == mech_row(i)->type;
        if (!dup && mech_available(slot_get(slotID), mech_row(i)))
            list[n++] = mech_row(i)->type;
    }
    CK_RV rv;
    if (!out_room(pMechanismList, pulCount, n, &rv))
        return rv;
    memcpy(pMechanismList, list, n * sizeof(*list));
    *pulCount = n;
    return CKR_OK;
}

CK_RV C_GetMechanismInfo(CK_SLOT_ID slotID, CK_MECHANISM_TYPE type, CK_MECHANISM_INFO_PTR pInfo) {
    if (!initialized())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    if (!slot_get(slotID))
        return CKR_SLOT_ID_INVALID;
    if (!pInfo)
        return CKR_ARGUMENTS_BAD;
    const MechInfo *m = mech_find(slot_get(slotID), type);
    if (!m)
        return CKR_MECHANISM_INVALID;
    pInfo->ulMinKeySize = m->min;
    pInfo->ulMaxKeySize = m->max;
    pInfo->flags = m->flags;
    return CKR_OK;
}

/* ---- token provisioning and login ---------------------------------------------------------- */

/* Logs the application out of the slot's token: vhsmd revokes the ticket, so every connection
 * attached to it is logged out; the module forgets it whatever vhsmd answered. */
static int slot_logout(P11Slot *s) {
    _cleanup_conn_ Conn x = {.slot = s};
    x.r = conn_get(s, &x);
    if (x.r >= 0)
        x.r = vhsm_logout(x.c);
    LOCKED(s->lock);
    s->user = NO_USER;
    s->ticket = secret_free(s->ticket);
    s->login_gen++;
    x.gen = s->login_gen;
    return x.r == -EBADR || p11_errno_is_transport(x.r) ? 0 : x.r;
}

static bool slot_has_sessions(CK_SLOT_ID id, bool ro_only) {
    LOCKED(G.lock);
    for (size_t i = 0; i < G.n_sessions_cap; i++)
        if (G.sessions[i] && G.sessions[i]->slot == id &&
            (!ro_only || !(G.sessions[i]->flags & CKF_RW_SESSION)))
            return true;
    return false;
}

CK_RV C_InitToken(CK_SLOT_ID slotID, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen,
                  CK_UTF8CHAR_PTR pLabel) {
    if (!initialized())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    P11Slot *s = slot_get(slotID);
    if (!s)
        return CKR_SLOT_ID_INVALID;
    if (!pLabel || !pPin)
        return CKR_ARGUMENTS_BAD;
    if (slot_has_sessions(slotID, false))
        return CKR_SESSION_EXISTS;
    /* the label: 32 bytes padded with blanks */
    size_t ll = 32;
    while (ll > 0 && pLabel[ll - 1] == ' ')
        ll--;
    _cleanup_conn_ Conn x = {.slot = s};
    x.r = conn_get(s, &x);
    if (x.r >= 0)
        x.r = vhsm_token_init(x.c, pPin, ulPinLen, pLabel, ll);
    if (p11_errno_is_transport(x.r))
        return CKR_TOKEN_NOT_PRESENT;
    if (x.r == -EBADRQC)
        return CKR_FUNCTION_NOT_SUPPORTED;
    return p11_rv_from_errno(x.r, P11_CTX_PIN);
}

CK_RV C_InitPIN(CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen) {
    SESSION_OR_RETURN(hSession);
    if (!pPin)
        return CKR_ARGUMENTS_BAD;
    P11Slot *s = slot_get(sess->slot);
    {
        LOCKED(s->lock);
        if (s->user != CKU_SO)
            return CKR_USER_NOT_LOGGED_IN;
    }
    if (!(sess->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY;
    _cleanup_conn_ Conn x = {.slot = s};
    x.r = conn_get(s, &x);
    if (x.r >= 0)
        x.r = vhsm_init_pin(x.c, pPin, ulPinLen);
    return p11_rv_from_errno(x.r, P11_CTX_PIN);
}

CK_RV C_SetPIN(CK_SESSION_HANDLE hSession, CK_UTF8CHAR_PTR pOldPin, CK_ULONG ulOldLen,
               CK_UTF8CHAR_PTR pNewPin, CK_ULONG ulNewLen) {
    SESSION_OR_RETURN(hSession);
    if (!pOldPin || !pNewPin)
        return CKR_ARGUMENTS_BAD;
    if (!(sess->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY;
    P11Slot *s = slot_get(sess->slot);
    _cleanup_conn_ Conn x = {.slot = s};
    x.r = conn_get(s, &x);
    if (x.r >= 0)
        x.r = vhsm_set_pin(x.c, pOldPin, ulOldLen, pNewPin, ulNewLen);
    return p11_rv_from_errno(x.r, P11_CTX_PIN);
}

CK_RV C_Login(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin,
              CK_ULONG ulPinLen) {
    SESSION_OR_RETURN(hSession);
    if (userType == CKU_CONTEXT_SPECIFIC)
        return CKR_OPERATION_NOT_INITIALIZED; /* no key needs CKA_ALWAYS_AUTHENTICATE */
    if (userType != CKU_SO && userType != CKU_USER)
        return CKR_USER_TYPE_INVALID;
    if (!pPin)
        return CKR_ARGUMENTS_BAD;
    P11Slot *s = slot_get(sess->slot);
    {
        LOCKED(s->lock);
        if (s->user == userType)
            return CKR_USER_ALREADY_LOGGED_IN;
        if (s->user != NO_USER)
            return CKR_USER_ANOTHER_ALREADY_LOGGED_IN;
    }
    if (userType == CKU_SO && slot_has_sessions(sess->slot, true))
        return CKR_SESSION_READ_ONLY_EXISTS;
    _cleanup_(secret_freep) Secret *ticket = NULL;
    if (secret_new(VHSM_TICKET_SIZE, &ticket) < 0)
        return CKR_HOST_MEMORY;
    _cleanup_conn_ Conn x = {.slot = s};
    x.r = conn_get(s, &x);
    if (x.r >= 0)
        x.r = vhsm_login(x.c, userType == CKU_SO ? VHSM_USER_SO : VHSM_USER_USER, pPin, ulPinLen,
                         secret_data(ticket));
    if (x.r == -EBADRQC)
        return CKR_USER_PIN_NOT_INITIALIZED; /* revision 1: a token without PINs */
    if (x.r < 0)
        return p11_rv_from_errno(x.r, P11_CTX_PIN);
    LOCKED(s->lock);
    secret_free(s->ticket);
    s->ticket = TAKE_PTR(ticket);
    s->user = userType;
    s->login_gen++;
    x.gen = s->login_gen; /* this connection is the one logged in */
    return CKR_OK;
}

CK_RV C_Logout(CK_SESSION_HANDLE hSession) {
    SESSION_OR_RETURN(hSession);
    P11Slot *s = slot_get(sess->slot);
    {
        LOCKED(s->lock);
        if (s->user == NO_USER)
            return CKR_USER_NOT_LOGGED_IN;
    }
    return p11_rv_from_errno(slot_logout(s), P11_CTX_PIN);
}

/* ---- sessions ------------------------------------------------------------------------------ */

CK_RV C_OpenSession(CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication, CK_NOTIFY Notify,
                    CK_SESSION_HANDLE_PTR phSession) {
    if (!initialized())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    P11Slot *slot = slot_get(slotID);
    if (!slot)
        return CKR_SLOT_ID_INVALID;
    if (!(flags & CKF_SERIAL_SESSION))
        return CKR_SESSION_PARALLEL_NOT_SUPPORTED;
    if (!phSession)
        return CKR_ARGUMENTS_BAD;
    {
        LOCKED(slot->lock);
        if (slot->user == CKU_SO && !(flags & CKF_RW_SESSION))
            return CKR_SESSION_READ_WRITE_SO_EXISTS;
    }
    if (!slot_present(slot))
        return CKR_TOKEN_NOT_PRESENT;
    P11Session *s = calloc(1, sizeof(*s));
    if (!s)
        return CKR_HOST_MEMORY;
    s->lock = mtx_new();
    if (!s->lock) {
        free(s);
        return CKR_HOST_MEMORY;
    }
    s->slot = slotID;
    s->flags = flags & (CKF_SERIAL_SESSION | CKF_RW_SESSION);
    LOCKED(G.lock);
    size_t idx = 0;
    while (idx < G.n_sessions_cap && G.sessions[idx])
        idx++;
    if (idx == G.n_sessions_cap) {
        size_t cap = G.n_sessions_cap ? G.n_sessions_cap * 2 : 16;
        P11Session **n = cap <= 0xffffff ? realloc(G.sessions, cap * sizeof(*n)) : NULL;
        if (!n) {
            session_free(s);
            return CKR_HOST_MEMORY;
        }
        memset(n + G.n_sessions_cap, 0, (cap - G.n_sessions_cap) * sizeof(*n));
        G.sessions = n;
        G.n_sessions_cap = cap;
    }
    /* The handle carries a generation in its upper bits, so a closed session's handle stays
     * invalid when its table entry is reused. */
    G.session_gen = (G.session_gen + 1) & 0x7f;
    s->handle = ((CK_ULONG)(G.session_gen + 1) << 24) | (idx + 1);
    G.sessions[idx] = s;
    {
        LOCKED(slot->lock);
        s->epoch = slot->epoch;
        slot->n_sessions++;
        if (flags & CKF_RW_SESSION)
            slot->n_rw_sessions++;
    }
    *phSession = s->handle;
    return CKR_OK;
}

static void session_objects_destroy(CK_SLOT_ID slot, CK_SESSION_HANDLE h);

CK_RV C_CloseSession(CK_SESSION_HANDLE hSession) {
    if (!initialized())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    P11Session *s = NULL;
    CK_SLOT_ID slot_id = 0;
    {
        LOCKED(G.lock);
        size_t idx = (size_t)(hSession & 0xffffff) - 1;
        if (hSession == CK_INVALID_HANDLE || idx >= G.n_sessions_cap || !G.sessions[idx] ||
            G.sessions[idx]->handle != hSession)
            return CKR_SESSION_HANDLE_INVALID;
        s = G.sessions[idx];
        session_unlink_locked(s);
        s->closed = true;
        slot_id = s->slot;
        if (s->refs > 0)
            s = NULL; /* freed by the last user */
    }
    session_free(s);
    /* its session objects end with it (PKCS#11 4.4) */
    session_objects_destroy(slot_id, hSession);
    /* Closing the application's last session of a token logs it out (PKCS#11 5.6). */
    P11Slot *slot = slot_get(slot_id);
    bool logout;
    {
        LOCKED(slot->lock);
        logout = slot->n_sessions == 0 && slot->user != NO_USER;
    }
    if (logout)
        slot_logout(slot);
    return CKR_OK;
}

CK_RV C_CloseAllSessions(CK_SLOT_ID slotID) {
    if (!initialized())
        return CKR_CRYPTOKI_NOT_INITIALIZED;
    if (!slot_get(slotID))
        return CKR_SLOT_ID_INVALID;
    for (;;) {
        CK_SESSION_HANDLE h = CK_INVALID_HANDLE;
        {
            LOCKED(G.lock);
            for (size_t i = 0; i < G.n_sessions_cap && h == CK_INVALID_HANDLE; i++)
                if (G.sessions[i] && G.sessions[i]->slot == slotID)
                    h = G.sessions[i]->handle;
        }
        if (h == CK_INVALID_HANDLE)
            return CKR_OK;
        (void)C_CloseSession(h);
    }
}

CK_RV C_GetSessionInfo(CK_SESSION_HANDLE hSession, CK_SESSION_INFO_PTR pInfo) {
    SESSION_OR_RETURN(hSession);
    if (!pInfo)
        return CKR_ARGUMENTS_BAD;
    pInfo->slotID = sess->slot;
    pInfo->flags = sess->flags;
    P11Slot *s = slot_get(sess->slot);
    CK_USER_TYPE user;
    {
        LOCKED(s->lock);
        user = s->user;
    }
    bool rw = sess->flags & CKF_RW_SESSION;
    pInfo->state = user == CKU_SO     ? CKS_RW_SO_FUNCTIONS
                   : user == CKU_USER ? (rw ? CKS_RW_USER_FUNCTIONS : CKS_RO_USER_FUNCTIONS)
                                      : (rw ? CKS_RW_PUBLIC_SESSION : CKS_RO_PUBLIC_SESSION);
    pInfo->ulDeviceError = 0;
    return CKR_OK;
}

CK_RV C_GetOperationState(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState,
                          CK_ULONG_PTR pulOperationStateLen) {
    SESSION_OR_RETURN(hSession);
    return CKR_FUNCTION_NOT_SUPPORTED;
}

CK_RV C_SetOperationState(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pOperationState,
                          CK_ULONG ulOperationStateLen, CK_OBJECT_HANDLE hEncryptionKey,
                          CK_OBJECT_HANDLE hAuthenticationKey) {
    SESSION_OR_RETURN(hSession);
    return CKR_FUNCTION_NOT_SUPPORTED;
}

/* ---- attributes ---------------------------------------------------------------------------- */

/* An attribute value being produced: small values inline, larger ones allocated. */
typedef struct AttrVal {
    const void *p;
    size_t n;
    CK_ULONG ul;
    CK_BBOOL b;
    uint8_t *owned;
} AttrVal;

static void attr_val_done(AttrVal *v) {
    free(v->owned);
}

static CK_RV val_ulong(AttrVal *v, CK_ULONG x) {
    v->ul = x;
    v->p = &v->ul;
    v->n = sizeof(v->ul);
    return CKR_OK;
}

static CK_RV val_bool(AttrVal *v, bool x) {
    v->b = x ? CK_TRUE : CK_FALSE;
    v->p = &v->b;
    v->n = sizeof(v->b);
    return CKR_OK;
}

static CK_RV val_bytes(AttrVal *v, const void *p, size_t n) {
    v->p = n ? p : "";
    v->n = n;
    return CKR_OK;
}

static CK_RV val_own(AttrVal *v, uint8_t *p, size_t n) {
    v->owned = p;
    v->p = p;
    v->n = n;
    return CKR_OK;
}

/* Public values derived from the public key (fetched from vhsmd on first use). */
static CK_RV pub_value(P11Slot *s, P11Key *k, CK_ATTRIBUTE_TYPE t, AttrVal *v) {
    int r = 0;
    EVP_PKEY *pk = key_pub(s, k, &r);
    if (!pk)
        return p11_rv_from_errno(r, P11_CTX_OBJECT);
    if (t == CKA_PUBLIC_KEY_INFO) {
        uint8_t *der = NULL;
        int n = i2d_PUBKEY(pk, &der);
        if (n <= 0)
            return CKR_DEVICE_ERROR;
        uint8_t *copy = malloc((size_t)n);
        if (!copy) {
            OPENSSL_free(der);
            return CKR_HOST_MEMORY;
        }
        memcpy(copy, der, (size_t)n);
        OPENSSL_free(der);
        return val_own(v, copy, (size_t)n);
    }
    if (t == CKA_EC_POINT) {
        uint8_t pt[160];
        size_t n = 0;
        if (!EVP_PKEY_get_octet_string_param(pk, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, pt + 2,
                                             sizeof(pt) - 2, &n) ||
            n >= 128)
            return CKR_DEVICE_ERROR;
        /* DER OCTET STRING around the point, as OpenSC, OpenSSH and p11-kit expect */
        pt[0] = 0x04;
        pt[1] = (uint8_t)n;
        uint8_t *copy = malloc(n + 2);
        if (!copy)
            return CKR_HOST_MEMORY;
        memcpy(copy, pt, n + 2);
        return val_own(v, copy, n + 2);
    }
    /* RSA modulus / public exponent */
    _cleanup_(BN_clear_freep) BIGNUM *bn = NULL;
    if (!EVP_PKEY_get_bn_param(pk, t == CKA_MODULUS ? OSSL_PKEY_PARAM_RSA_N : OSSL_PKEY_PARAM_RSA_E,
                               &bn))
        return CKR_DEVICE_ERROR;
    int n = BN_num_bytes(bn);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (!b)
        return CKR_HOST_MEMORY;
    BN_bn2bin(bn, b);
    return val_own(v, b, (size_t)n);
}

static CK_MECHANISM_TYPE kind_gen_mech(KeyKind k) {
    switch (k) {
    case KK_EC_P256:
    case KK_EC_P384:
        return CKM_EC_KEY_PAIR_GEN;
    case KK_ED25519:
        return CKM_EC_EDWARDS_KEY_PAIR_GEN;
    case KK_RSA:
        return CKM_RSA_PKCS_KEY_PAIR_GEN;
    case KK_AES:
        return CKM_AES_KEY_GEN;
    default:
        return CKM_GENERIC_SECRET_KEY_GEN;
    }
}

/* Attributes of data objects and certificates the application did not store (those it did are
 * returned verbatim before this). Slot lock not held. */
static CK_RV nonkey_attr(P11Slot *s, P11Key *k, CK_ATTRIBUTE_TYPE t, AttrVal *v, uint32_t fl) {
    bool cert = k->kind == KK_CERT;
    switch (t) {
    case CKA_CLASS:
        return val_ulong(v, cert ? CKO_CERTIFICATE : CKO_DATA);
    case CKA_TOKEN:
        return val_bool(v, !(fl & VHSM_OBJ_SESSION));
    case CKA_PRIVATE:
        return val_bool(v, fl & VHSM_OBJ_PRIVATE);
    case CKA_MODIFIABLE:
        return val_bool(v, fl & VHSM_OBJ_MODIFIABLE);
    case CKA_COPYABLE:
        return val_bool(v, fl & VHSM_OBJ_COPYABLE);
    case CKA_DESTROYABLE:
        return val_bool(v, fl & VHSM_OBJ_DESTROYABLE);
    case CKA_LABEL:
    case CKA_APPLICATION:
    case CKA_OBJECT_ID:
        if (!cert || t == CKA_LABEL)
            return val_bytes(v, "", 0);
        return CKR_ATTRIBUTE_TYPE_INVALID;
    case CKA_VALUE: {
        LOCKED(s->lock);
        if (!k->value) /* a PRIVATE data object without the login */
            return CKR_ATTRIBUTE_SENSITIVE;
        uint8_t *c = malloc(k->value_len);
        if (!c)
            return CKR_HOST_MEMORY;
        memcpy(c, k->value, k->value_len);
        return val_own(v, c, k->value_len);
    }
    default:
        break;
    }
    if (!cert)
        return CKR_ATTRIBUTE_TYPE_INVALID;
    switch (t) {
    case CKA_CERTIFICATE_TYPE:
        return val_ulong(v, CKC_X_509);
    case CKA_TRUSTED:
        return val_bool(v, fl & VHSM_OBJ_TRUSTED);
    case CKA_CERTIFICATE_CATEGORY:
        return val_ulong(v, 0); /* unspecified */
    case CKA_JAVA_MIDP_SECURITY_DOMAIN:
        return val_ulong(v, 0);
    case CKA_ID:
    case CKA_SUBJECT:
    case CKA_ISSUER:
    case CKA_SERIAL_NUMBER:
    case CKA_START_DATE:
    case CKA_END_DATE:
    case CKA_URL:
    case CKA_HASH_OF_SUBJECT_PUBLIC_KEY:
    case CKA_HASH_OF_ISSUER_PUBLIC_KEY:
        return val_bytes(v, "", 0);
    case CKA_CHECK_VALUE: {
        /* the first 3 bytes of the SHA-1 of the certificate */
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned mdl = 0;
        LOCKED(s->lock);
        if (!k->value || !EVP_Digest(k->value, k->value_len, md, &mdl, EVP_sha1(), NULL))
            return CKR_DEVICE_ERROR;
        uint8_t *c = malloc(3);
        if (!c)
            return CKR_HOST_MEMORY;
        memcpy(c, md, 3);
        return val_own(v, c, 3);
    }
    default:
        return CKR_ATTRIBUTE_TYPE_INVALID;
    }
}

/* The value of attribute t of object (k, role). CKR_ATTRIBUTE_SENSITIVE for private and secret
 * values, CKR_ATTRIBUTE_TYPE_INVALID for attributes the object does not have. */
static CK_RV object_attr(P11Slot *s, P11Key *k, unsigned role, CK_ATTRIBUTE_TYPE t, AttrVal *v) {
    bool secret = kind_is_secret(k->kind), priv = role == ROLE_PRIV && !secret,
         pub = role == ROLE_PUB;
    KeyKind kk = k->kind;
    bool hf;
    uint32_t fl;
    {
        /* an attribute the application stored with the key (revision 2) is returned verbatim */
        LOCKED(s->lock);
        uint8_t *c = NULL;
        size_t n = 0;
        if (key_attr_copy_locked(k, t, &c, &n))
            return val_own(v, c, n);
        hf = k->has_flags;
        fl = k->flags;
    }
    if (kind_is_nonkey(kk))
        return nonkey_attr(s, k, t, v, fl);
        /* with revision 2 the policy flags vhsmd enforces, else the key type's defaults */
#define FLAG(bit, dflt) (hf ? !!(fl & (bit)) : (dflt))
    switch (t) {
    /* common storage and key attributes */
    case CKA_CLASS:
        return val_ulong(v, secret ? CKO_SECRET_KEY : priv ? CKO_PRIVATE_KEY : CKO_PUBLIC_KEY);
    case CKA_TOKEN:
        return val_bool(v, !FLAG(VHSM_OBJ_SESSION, false));
    case CKA_PRIVATE: /* a key pair's public half is public; a lone public key as created */
        return val_bool(v, (!pub || k->pub_only) && FLAG(VHSM_OBJ_PRIVATE, true));
    case CKA_MODIFIABLE:
        return val_bool(v, FLAG(VHSM_OBJ_MODIFIABLE, false));
    case CKA_COPYABLE:
        return val_bool(v, FLAG(VHSM_OBJ_COPYABLE, false));
    case CKA_DESTROYABLE:
        return val_bool(v, FLAG(VHSM_OBJ_DESTROYABLE, true));
    case CKA_LABEL: {
        /* copied under the lock: a refresh may replace the label meanwhile */
        LOCKED(s->lock);
        size_t n = strlen(k->label);
        uint8_t *copy = malloc(n + 1);
        if (!copy)
            return CKR_HOST_MEMORY;
        memcpy(copy, k->label, n + 1);
        return val_own(v, copy, n);
    }
    case CKA_ID:
        return val_bytes(v, k->name, strlen(k->name));
    case CKA_KEY_TYPE:
        return val_ulong(v, kind_key_type(kk));
    case CKA_START_DATE:
    case CKA_END_DATE:
        return val_bytes(v, "", 0);
    case CKA_DERIVE: /* ECDH (CKM_ECDH1_DERIVE with protocol revision 2) */
        return val_bool(v, !pub && FLAG(VHSM_OBJ_DERIVE, kk == KK_EC_P256 || kk == KK_EC_P384));
    case CKA_LOCAL:
        return val_bool(v, FLAG(VHSM_OBJ_LOCAL, k->local));
    case CKA_KEY_GEN_MECHANISM:
        return val_ulong(v, k->local ? kind_gen_mech(kk) : CK_UNAVAILABLE_INFORMATION);
    case CKA_ALLOWED_MECHANISMS:
        return CKR_ATTRIBUTE_TYPE_INVALID;
    default:
        break;
    }
    if (secret || priv) {
        switch (t) {
        case CKA_SENSITIVE:
            return val_bool(v, FLAG(VHSM_OBJ_SENSITIVE, true));
        case CKA_ALWAYS_SENSITIVE:
            return val_bool(v, FLAG(VHSM_OBJ_ALWAYS_SENSITIVE, true));
        case CKA_EXTRACTABLE:
            return val_bool(v, FLAG(VHSM_OBJ_EXTRACTABLE, false));
        case CKA_NEVER_EXTRACTABLE:
            return val_bool(v, FLAG(VHSM_OBJ_NEVER_EXTRACTABLE, true));
        case CKA_WRAP_WITH_TRUSTED:
            return val_bool(v, FLAG(VHSM_OBJ_WRAP_WITH_TRUSTED, false));
        case CKA_UNWRAP:
            return val_bool(v, FLAG(VHSM_OBJ_UNWRAP, false));
        case CKA_DECRYPT:
            return val_bool(v, FLAG(VHSM_OBJ_DECRYPT, kk == KK_AES || kk == KK_RSA));
        case CKA_SIGN:
            return val_bool(v, FLAG(VHSM_OBJ_SIGN, kk != KK_AES));
        default:
            break;
        }
    }
    if (secret) {
        switch (t) {
        case CKA_ENCRYPT:
            return val_bool(v, FLAG(VHSM_OBJ_ENCRYPT, kk == KK_AES));
        case CKA_VERIFY:
            return val_bool(v, FLAG(VHSM_OBJ_VERIFY, kk != KK_AES));
        case CKA_WRAP:
            return val_bool(v, FLAG(VHSM_OBJ_WRAP, false));
        case CKA_TRUSTED:
            return val_bool(v, FLAG(VHSM_OBJ_TRUSTED, false));
        case CKA_VALUE_LEN:
            return val_ulong(v, k->bits / 8);
        case CKA_VALUE:
        case CKA_CHECK_VALUE:
            return CKR_ATTRIBUTE_SENSITIVE;
        default:
            return CKR_ATTRIBUTE_TYPE_INVALID;
        }
    }
    /* asymmetric: shared public attributes */
    switch (t) {
    case CKA_SUBJECT:
        return val_bytes(v, "", 0);
    case CKA_PUBLIC_KEY_INFO:
        return pub_value(s, k, t, v);
    case CKA_EC_PARAMS: {
        if (!kind_is_ec(kk))
            return CKR_ATTRIBUTE_TYPE_INVALID;
        size_t n = 0;
        const uint8_t *p = p11_curve_ec_params(kind_curve(kk), &n);
        return val_bytes(v, p, n);
    }
    case CKA_MODULUS:
    case CKA_PUBLIC_EXPONENT:
        if (kk != KK_RSA)
            return CKR_ATTRIBUTE_TYPE_INVALID;
        return pub_value(s, k, t, v);
    default:
        break;
    }
    if (priv) {
        switch (t) {
        case CKA_SIGN_RECOVER:
        case CKA_ALWAYS_AUTHENTICATE:
            return val_bool(v, false);
        case CKA_VALUE:
            if (!kind_is_ec(kk))
                return CKR_ATTRIBUTE_TYPE_INVALID;
            return CKR_ATTRIBUTE_SENSITIVE;
        case CKA_PRIVATE_EXPONENT:
        case CKA_PRIME_1:
        case CKA_PRIME_2:
        case CKA_EXPONENT_1:
        case CKA_EXPONENT_2:
        case CKA_COEFFICIENT:
            if (kk != KK_RSA)
                return CKR_ATTRIBUTE_TYPE_INVALID;
            return CKR_ATTRIBUTE_SENSITIVE;
        default:
            return CKR_ATTRIBUTE_TYPE_INVALID;
        }
    }
    /* public key */
    switch (t) {
    case CKA_ENCRYPT:
        return val_bool(v, FLAG(VHSM_OBJ_ENCRYPT, kk == KK_RSA));
    case CKA_VERIFY:
        return val_bool(v, FLAG(VHSM_OBJ_VERIFY, true));
    case CKA_VERIFY_RECOVER:
        return val_bool(v, false);
    case CKA_WRAP:
        return val_bool(v, FLAG(VHSM_OBJ_WRAP, false));
    case CKA_TRUSTED:
        return val_bool(v, FLAG(VHSM_OBJ_TRUSTED, false));
    case CKA_EC_POINT:
        if (!kind_is_ec(kk))
            return CKR_ATTRIBUTE_TYPE_INVALID;
        return pub_value(s, k, t, v);
    case CKA_MODULUS_BITS:
        if (kk != KK_RSA)
            return CKR_ATTRIBUTE_TYPE_INVALID;
        return val_ulong(v, k->bits);
    default:
        return CKR_ATTRIBUTE_TYPE_INVALID;
    }
#undef FLAG
}

CK_RV C_GetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject,
                          CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount) {
    SESSION_OR_RETURN(hSession);
    if (!pTemplate && ulCount > 0)
        return CKR_ARGUMENTS_BAD;
    unsigned role = 0;
    P11Key *k = object_key(sess->slot, hObject, &role);
    if (!k)
        return CKR_OBJECT_HANDLE_INVALID;
    P11Slot *s = slot_get(sess->slot);
    /* Every attribute is processed; the result is the last of the three "soft" failures, and
     * failing attributes get CK_UNAVAILABLE_INFORMATION (PKCS#11 v2.40 5.7). */
    CK_RV result = CKR_OK;
    for (CK_ULONG i = 0; i < ulCount; i++) {
        CK_ATTRIBUTE *a = &pTemplate[i];
        _cleanup_(attr_val_done) AttrVal v = {0};
        CK_RV rv = object_attr(s, k, role, a->type, &v);
        if (rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID) {
            a->ulValueLen = CK_UNAVAILABLE_INFORMATION;
            result = rv;
            continue;
        }
        if (rv != CKR_OK)
            return rv; /* the device failed: nothing about the template can be trusted */
        if (!a->pValue) {
            a->ulValueLen = v.n;
        } else if (a->ulValueLen < v.n) {
            a->ulValueLen = CK_UNAVAILABLE_INFORMATION;
            result = CKR_BUFFER_TOO_SMALL;
        } else {
            memcpy(a->pValue, v.p, v.n);
            a->ulValueLen = v.n;
        }
    }
    return result;
}

/* Re-reads one key's description (flags, attributes) after a change. */
static void key_reload(P11Slot *s, VhsmClient *c, P11Key *k) {
    _cleanup_free_ char *text = NULL;
    if (vhsm_key_info(c, k->name, &text) < 0)
        return;
    json_t *desc = json_loads(text, 0, NULL);
    if (!desc)
        return;
    LOCKED(s->lock);
    (void)key_update_object_locked(k, desc);
    json_decref(desc);
}

CK_RV C_SetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject,
                          CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount) {
    SESSION_OR_RETURN(hSession);
    CK_RV rv = p11_template_check(pTemplate, ulCount);
    if (rv != CKR_OK)
        return rv;
    unsigned role = 0;
    P11Key *k = object_key(sess->slot, hObject, &role);
    if (!k)
        return CKR_OBJECT_HANDLE_INVALID;
    bool session_obj;
    {
        LOCKED(slot_get(sess->slot)->lock);
        session_obj = k->session;
    }
    if (!session_obj && !(sess->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY; /* session objects may change in an R/O session */
    if (ulCount > VHSM_ATTR_MAX)
        return CKR_TEMPLATE_INCONSISTENT;
    /* Application attributes are stored verbatim; the usage flags and the one-way changes
     * (CKA_SENSITIVE on, CKA_EXTRACTABLE off) become vhsmd's policy; the rest is fixed. */
    VhsmAttr attrs[VHSM_ATTR_MAX];
    size_t n_attrs = 0;
    uint32_t set = 0, clear = 0;
    for (CK_ULONG i = 0; i < ulCount; i++) {
        const CK_ATTRIBUTE *a = &pTemplate[i];
        static const struct {
            CK_ATTRIBUTE_TYPE t;
            uint32_t bit;
        } usage[] = {
            {CKA_SIGN, VHSM_OBJ_SIGN},
            {CKA_VERIFY, VHSM_OBJ_VERIFY},
            {CKA_ENCRYPT, VHSM_OBJ_ENCRYPT},
            {CKA_DECRYPT, VHSM_OBJ_DECRYPT},
            {CKA_WRAP, VHSM_OBJ_WRAP},
            {CKA_UNWRAP, VHSM_OBJ_UNWRAP},
            {CKA_DERIVE, VHSM_OBJ_DERIVE},
            {CKA_SENSITIVE, VHSM_OBJ_SENSITIVE},
            {CKA_EXTRACTABLE, VHSM_OBJ_EXTRACTABLE},
            {CKA_TRUSTED, VHSM_OBJ_TRUSTED},
            {CKA_WRAP_WITH_TRUSTED, VHSM_OBJ_WRAP_WITH_TRUSTED},
        };
        bool done = false;
        for (size_t j = 0; j < ELEMENTSOF(usage) && !done; j++) {
            if (usage[j].t != a->type)
                continue;
            if (a->ulValueLen != sizeof(CK_BBOOL))
                return CKR_ATTRIBUTE_VALUE_INVALID;
            CK_BBOOL b = *(const CK_BBOOL *)a->pValue;
            if ((a->type == CKA_SENSITIVE && !b) || (a->type == CKA_EXTRACTABLE && b))
                return CKR_ATTRIBUTE_READ_ONLY; /* one way only */
            if (b)
                set |= usage[j].bit;
            else
                clear |= usage[j].bit;
            done = true;
        }
        if (done)
            continue;
        switch (a->type) {
        case CKA_CLASS:
        case CKA_TOKEN:
        case CKA_PRIVATE:
        case CKA_MODIFIABLE:
        case CKA_COPYABLE:
        case CKA_DESTROYABLE:
        case CKA_KEY_TYPE:
        case CKA_LOCAL:
        case CKA_KEY_GEN_MECHANISM:
        case CKA_ALWAYS_SENSITIVE:
        case CKA_NEVER_EXTRACTABLE:
        case CKA_VALUE:
        case CKA_VALUE_LEN:
        case CKA_MODULUS:
        case CKA_MODULUS_BITS:
        case CKA_PUBLIC_EXPONENT:
        case CKA_PRIVATE_EXPONENT:
        case CKA_EC_PARAMS:
        case CKA_EC_POINT:
        case CKA_PUBLIC_KEY_INFO:
        case CKA_CERTIFICATE_TYPE:
        case CKA_CHECK_VALUE:
            return CKR_ATTRIBUTE_READ_ONLY;
        default:
            if (a->ulValueLen > VHSM_ATTR_VALUE_MAX)
                return CKR_ATTRIBUTE_VALUE_INVALID;
            attrs[n_attrs++] = (VhsmAttr){(uint32_t)a->type, a->pValue, a->ulValueLen};
        }
    }
    P11Slot *s = slot_get(sess->slot);
    _cleanup_conn_ Conn x = {.slot = s};
    x.r = conn_get_for(s, k, &x);
    if (x.r >= 0)
        x.r = vhsm_object_set(x.c, k->name, set, clear, attrs, n_attrs);
    if (x.r == -EBADRQC)
        return CKR_ACTION_PROHIBITED; /* revision 1: nothing can change */
    if (x.r < 0)
        return p11_rv_from_errno(x.r, P11_CTX_SETATTR);
    key_reload(s, x.c, k);
    return CKR_OK;
}

CK_RV C_GetObjectSize(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ULONG_PTR pulSize) {
    SESSION_OR_RETURN(hSession);
    unsigned role = 0;
    if (!object_key(sess->slot, hObject, &role))
        return CKR_OBJECT_HANDLE_INVALID;
    if (!pulSize)
        return CKR_ARGUMENTS_BAD;
    *pulSize = CK_UNAVAILABLE_INFORMATION;
    return CKR_OK;
}

/* ---- finding objects ----------------------------------------------------------------------- */

static bool object_matches(P11Slot *s, P11Key *k, unsigned role, const CK_ATTRIBUTE *t,
                           CK_ULONG n) {
    for (CK_ULONG i = 0; i < n; i++) {
        _cleanup_(attr_val_done) AttrVal v = {0};
        if (object_attr(s, k, role, t[i].type, &v) != CKR_OK || v.n != t[i].ulValueLen ||
            (v.n > 0 && memcmp(v.p, t[i].pValue, v.n) != 0))
            return false;
    }
    return true;
}

CK_RV C_FindObjectsInit(CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount) {
    SESSION_OR_RETURN(hSession);
    CK_RV rv = p11_template_check(pTemplate, ulCount);
    if (rv != CKR_OK)
        return rv;
    if (sess->find_active)
        return CKR_OPERATION_ACTIVE;
    P11Slot *s = slot_get(sess->slot);
    {
        _cleanup_conn_ Conn x = {.slot = s};
        /* the session-object connection, if any, sees the session objects as well */
        x.r = conn_get_sobj(s, &x, false);
        if (x.r == -ENOKEY)
            x.r = conn_get(s, &x);
        if (x.r >= 0)
            x.r = slot_refresh(s, x.c);
        if (x.r < 0)
            return p11_rv_from_errno(x.r, P11_CTX_GENERIC);
    }
    VhsmTokenInfo ti;
    int r = slot_token_info(s, &ti);
    if (r < 0)
        return p11_rv_from_errno(r, P11_CTX_GENERIC);
    /* Private objects (private and secret keys) are visible only to a logged-in user when the
     * token has a user PIN (PKCS#11 4.4); public keys always, as ssh-keygen -D expects. */
    bool show_private;
    {
        LOCKED(s->lock);
        show_private = !s->login_required || s->user == CKU_USER;
    }
    /* Snapshot of the candidates, then matched without the slot lock (matching may fetch
     * public keys from vhsmd). */
    size_t n;
    P11Key **keys;
    {
        LOCKED(s->lock);
        n = s->n_keys;
        keys = malloc((n + 1) * sizeof(*keys));
        if (!keys)
            return CKR_HOST_MEMORY;
        memcpy(keys, s->keys, n * sizeof(*keys));
    }
    CK_OBJECT_HANDLE *found = malloc((2 * n + 1) * sizeof(*found));
    if (!found) {
        free(keys);
        return CKR_HOST_MEMORY;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        bool nonkey, pub_only, priv;
        {
            LOCKED(s->lock);
            if (!keys[i]->alive)
                continue;
            nonkey = kind_is_nonkey(keys[i]->kind);
            pub_only = keys[i]->pub_only;
            priv = !keys[i]->has_flags || (keys[i]->flags & VHSM_OBJ_PRIVATE);
        }
        if (nonkey || pub_only) {
            /* data objects, certificates and lone public keys: private only if CKA_PRIVATE */
            unsigned role = pub_only ? ROLE_PUB : ROLE_PRIV;
            if ((show_private || !priv) && object_matches(s, keys[i], role, pTemplate, ulCount))
                found[m++] = HANDLE(sess->slot, i, role);
            continue;
        }
        if (show_private && object_matches(s, keys[i], ROLE_PRIV, pTemplate, ulCount))
            found[m++] = HANDLE(sess->slot, i, ROLE_PRIV);
        if (!kind_is_secret(keys[i]->kind) &&
            object_matches(s, keys[i], ROLE_PUB, pTemplate, ulCount))
            found[m++] = HANDLE(sess->slot, i, ROLE_PUB);
    }
    free(keys);
    free(sess->found);
    sess->found = found;
    sess->n_found = m;
    sess->found_pos = 0;
    sess->find_active = true;
    return CKR_OK;
}

CK_RV C_FindObjects(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE_PTR phObject,
                    CK_ULONG ulMaxObjectCount, CK_ULONG_PTR pulObjectCount) {
    SESSION_OR_RETURN(hSession);
    if (!phObject || !pulObjectCount)
        return CKR_ARGUMENTS_BAD;
    if (!sess->find_active)
        return CKR_OPERATION_NOT_INITIALIZED;
    CK_ULONG n = 0;
    while (n < ulMaxObjectCount && sess->found_pos < sess->n_found)
        phObject[n++] = sess->found[sess->found_pos++];
    *pulObjectCount = n;
    return CKR_OK;
}

CK_RV C_FindObjectsFinal(CK_SESSION_HANDLE hSession) {
    SESSION_OR_RETURN(hSession);
    if (!sess->find_active)
        return CKR_OPERATION_NOT_INITIALIZED;
    free(sess->found);
    sess->found = NULL;
    sess->n_found = sess->found_pos = 0;
    sess->find_active = false;
    return CKR_OK;
}

/* ---- object management --------------------------------------------------------------------- */

static CK_RV gen_template_check(const P11KeyTemplate *t, CK_OBJECT_CLASS cls, CK_KEY_TYPE type,
                                KeyKind kind);

/* RSA components in a template that must not have them: CKA_MODULUS is the token's to set
 * (CKR_ATTRIBUTE_READ_ONLY), private components do not belong (CKR_TEMPLATE_INCONSISTENT). The
 * public exponent is not a component here (generation templates may give it). */
static CK_RV no_components(const P11KeyTemplate *t) {
    if (t->rsa[0])
        return CKR_ATTRIBUTE_READ_ONLY;
    for (int i = 2; i < P11_RSA_N_COMPONENTS; i++)
        if (t->rsa[i])
            return CKR_TEMPLATE_INCONSISTENT;
    return CKR_OK;
}
static CK_RV gen_key(P11Session *sess, const char *vtype, KeyKind kind, const P11KeyTemplate *pt,
                     const P11KeyTemplate *vt, const void *value, size_t value_len, int *ret_idx);

/* A private key from its components as PKCS#8 PrivateKeyInfo DER (what vhsmd imports): EC
 * (curve, d) or Ed25519 (the 32-byte seed). *ret freed with OPENSSL_clear_free(). Returns
 * CKR_OK, CKR_ATTRIBUTE_VALUE_INVALID, CKR_HOST_MEMORY. */
static CK_RV private_key_pkcs8(KeyKind kind, const void *value, size_t len, uint8_t **ret,
                               int *ret_len) {
    EVP_PKEY *pk = NULL;
    CK_RV rv = CKR_ATTRIBUTE_VALUE_INVALID;
    if (kind == KK_ED25519) {
        if (len != 32)
            return CKR_ATTRIBUTE_VALUE_INVALID;
        pk = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, value, len);
    } else {
        size_t fs = kind == KK_EC_P256 ? 32 : 48;
        if (len == 0 || len > fs)
            return CKR_ATTRIBUTE_VALUE_INVALID;
        OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
        BIGNUM *d = BN_secure_new();
        OSSL_PARAM *params = NULL;
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        if (b && d && ctx && BN_bin2bn(value, (int)len, d) &&
            OSSL_PARAM_BLD_push_utf8_string(b, OSSL_PKEY_PARAM_GROUP_NAME,
                                            kind == KK_EC_P256 ? "prime256v1" : "secp384r1", 0) &&
            OSSL_PARAM_BLD_push_BN(b, OSSL_PKEY_PARAM_PRIV_KEY, d) &&
            OSSL_PARAM_BLD_push_int(b, OSSL_PKEY_PARAM_EC_INCLUDE_PUBLIC, 0) &&
            (params = OSSL_PARAM_BLD_to_param(b)) && EVP_PKEY_fromdata_init(ctx) == 1)
            (void)EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_KEYPAIR, params);
        OSSL_PARAM_free(params);
        EVP_PKEY_CTX_free(ctx);
        BN_clear_free(d);
        OSSL_PARAM_BLD_free(b);
    }
    if (!pk)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(pk);
    uint8_t *der = NULL;
    int n = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &der) : -1;
    if (n > 0) {
        *ret = der, *ret_len = n;
        rv = CKR_OK;
    } else
        rv = CKR_HOST_MEMORY;
    PKCS8_PRIV_KEY_INFO_free(p8);
    EVP_PKEY_free(pk);
    return rv;
}

/* An RSA private key from its eight components as PKCS#8 DER; *ret_bits the modulus size. */
static CK_RV rsa_pkcs8(const P11KeyTemplate *t, uint8_t **ret, int *ret_len, int *ret_bits) {
    static const char *const names[P11_RSA_N_COMPONENTS] = {
        OSSL_PKEY_PARAM_RSA_N,         OSSL_PKEY_PARAM_RSA_E,
        OSSL_PKEY_PARAM_RSA_D,         OSSL_PKEY_PARAM_RSA_FACTOR1,
        OSSL_PKEY_PARAM_RSA_FACTOR2,   OSSL_PKEY_PARAM_RSA_EXPONENT1,
        OSSL_PKEY_PARAM_RSA_EXPONENT2, OSSL_PKEY_PARAM_RSA_COEFFICIENT1};
    BIGNUM *bn[P11_RSA_N_COMPONENTS] = {0};
    OSSL_PARAM_BLD *b = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
    EVP_PKEY *pk = NULL;
    bool ok = b && ctx;
    for (int i = 0; ok && i < P11_RSA_N_COMPONENTS; i++) {
        bn[i] = i < 2 ? BN_new() : BN_secure_new();
        ok = bn[i] && BN_bin2bn(t->rsa[i]->pValue, (int)t->rsa[i]->ulValueLen, bn[i]) &&
             OSSL_PARAM_BLD_push_BN(b, names[i], bn[i]);
    }
    if (ok && (params = OSSL_PARAM_BLD_to_param(b)) && EVP_PKEY_fromdata_init(ctx) == 1)
        (void)EVP_PKEY_fromdata(ctx, &pk, EVP_PKEY_KEYPAIR, params);
    OSSL_PARAM_free(params);
    EVP_PKEY_CTX_free(ctx);
    for (int i = 0; i < P11_RSA_N_COMPONENTS; i++)
        BN_clear_free(bn[i]);
    OSSL_PARAM_BLD_free(b);
    if (!pk)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    *ret_bits = EVP_PKEY_get_bits(pk);
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(pk);
    uint8_t *der = NULL;
    int n = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &der) : -1;
    PKCS8_PRIV_KEY_INFO_free(p8);
    EVP_PKEY_free(pk);
    if (n <= 0)
        return CKR_HOST_MEMORY;
    *ret = der, *ret_len = n;
    return CKR_OK;
}

static CK_RV create_rsa_key(P11Session *sess, P11KeyTemplate *t, CK_OBJECT_HANDLE *ret) {
    CK_RV rv;
    if (t->value)
        return CKR_TEMPLATE_INCONSISTENT; /* RSA keys have no CKA_VALUE */
    for (int i = 0; i < P11_RSA_N_COMPONENTS; i++)
        if (!t->rsa[i])
            return CKR_TEMPLATE_INCOMPLETE;
    if ((rv = gen_template_check(t, CKO_PRIVATE_KEY, CKK_RSA, KK_RSA)) != CKR_OK)
        return rv;
    if (t->token != P11_TRI_FALSE && !(sess->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY;
    uint8_t *der = NULL;
    int n = 0, bits = 0;
    if ((rv = rsa_pkcs8(t, &der, &n, &bits)) != CKR_OK)
        return rv;
    const char *vtype = bits == 2048   ? "rsa2048"
                        : bits == 3072 ? "rsa3072"
                        : bits == 4096 ? "rsa4096"
                                       : NULL;
    int idx = 0;
    rv = vtype ? gen_key(sess, vtype, KK_RSA, NULL, t, der, (size_t)n, &idx)
               : CKR_ATTRIBUTE_VALUE_INVALID; /* vhsmd holds 2048, 3072, 4096-bit keys */
    OPENSSL_clear_free(der, (size_t)n);
    if (rv != CKR_OK)
        return rv;
    *ret = HANDLE(sess->slot, idx, ROLE_PRIV);
    return CKR_OK;
}

static CK_RV create_private_key(P11Session *sess, P11KeyTemplate *t, CK_OBJECT_HANDLE *ret) {
    const char *vtype;
    KeyKind kind;
    CK_RV rv;
    switch (t->key_type) {
    case CKK_EC:
        if (t->curve < 0)
            return CKR_TEMPLATE_INCOMPLETE;
        if (t->curve == P11_CURVE_ED25519)
            return CKR_TEMPLATE_INCONSISTENT;
        kind = t->curve == P11_CURVE_P256 ? KK_EC_P256 : KK_EC_P384;
        vtype = t->curve == P11_CURVE_P256 ? "ec-p256" : "ec-p384";
        break;
    case CKK_EC_EDWARDS:
        if (t->curve >= 0 && t->curve != P11_CURVE_ED25519)
            return CKR_CURVE_NOT_SUPPORTED;
        kind = KK_ED25519, vtype = "ed25519";
        break;
    default:
        return CKR_ATTRIBUTE_VALUE_INVALID;
    }
    if ((rv = no_components(t)) != CKR_OK)
        return rv == CKR_ATTRIBUTE_READ_ONLY ? CKR_TEMPLATE_INCONSISTENT : rv;
    if ((rv = gen_template_check(t, CKO_PRIVATE_KEY, t->key_type, kind)) != CKR_OK)
        return rv;
    if (t->token != P11_TRI_FALSE && !(sess->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY;
    uint8_t *der = NULL;
    int n = 0;
    if ((rv = private_key_pkcs8(kind, t->value, t->value_size, &der, &n)) != CKR_OK)
        return rv;
    int idx = 0;
    rv = gen_key(sess, vtype, kind, NULL, t, der, (size_t)n, &idx);
    OPENSSL_clear_free(der, (size_t)n);
    if (rv != CKR_OK)
        return rv;
    *ret = HANDLE(sess->slot, idx, ROLE_PRIV);
    return CKR_OK;
}

/* ---- data objects, certificates, public keys, copies (branch obj) ------------------------- */

static bool vhsm_name_ok(const char *s);

/* Attributes vhsmd owns (class, type, values, origin flags): not application attributes. */
static bool vault_like_reserved(CK_ATTRIBUTE_TYPE t) {
    switch (t) {
    case CKA_CLASS:
    case CKA_VALUE:
    case CKA_KEY_TYPE:
    case CKA_VALUE_LEN:
    case CKA_CERTIFICATE_TYPE:
    case CKA_CHECK_VALUE:
    case CKA_LOCAL:
    case CKA_KEY_GEN_MECHANISM:
    case CKA_ALWAYS_SENSITIVE:
    case CKA_NEVER_EXTRACTABLE:
    case CKA_WRAP_WITH_TRUSTED:
    case CKA_SIGN_RECOVER:
    case CKA_VERIFY_RECOVER:
    case CKA_MODULUS:
    case CKA_MODULUS_BITS:
    case CKA_PUBLIC_EXPONENT:
    case CKA_PRIVATE_EXPONENT:
    case CKA_PRIME_1:
    case CKA_PRIME_2:
    case CKA_EXPONENT_1:
    case CKA_EXPONENT_2:
    case CKA_COEFFICIENT:
    case CKA_PUBLIC_KEY_INFO:
    case CKA_EC_PARAMS:
    case CKA_EC_POINT:
        return true;
    default:
        return false;
    }
}

/* A free name for a new object: the label when it is a valid vhsmd name (first try), else
 * "p11-<16 hex digits>". */
static bool object_name(const char *label, int tries, char name[140]) {
    if (tries == 0 && label && vhsm_name_ok(label)) {
        snprintf(name, 140, "%s", label);
        return true;
    }
    uint8_t rnd[8];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1)
        return false;
    snprintf(name, 140, "p11-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1], rnd[2], rnd[3],
             rnd[4], rnd[5], rnd[6], rnd[7]);
    return true;
}

/* Adds the object vhsmd just made (its description read back on x) to the slot: *ret_idx. */
static CK_RV object_adopt(P11Session *sess, Conn *x, const char *name, const char *vtype,
                          bool session, int *ret_idx) {
    P11Slot *s = slot_get(sess->slot);
    char full[160];
    _cleanup_free_ char *text = NULL;
    snprintf(full, sizeof(full), "%u/%s", (unsigned)geteuid(), name);
    x->r = vhsm_key_info(x->c, full, &text);
    if (x->r < 0)
        return p11_rv_from_errno(x->r, P11_CTX_CREATE);
    json_t *desc = json_loads(text, 0, NULL);
    if (!desc)
        return CKR_DEVICE_ERROR;
    const char *type = json_string_value(json_object_get(desc, "type"));
    LOCKED(s->lock);
    int idx =
        slot_key_upsert_locked(s, full,
                               vtype  ? vtype
                               : type ? type
                                      : "",
                               NULL, json_string_value(json_object_get(desc, "origin")), desc);
    json_decref(desc);
    if (idx < 0)
        return idx == -ENOMEM ? CKR_HOST_MEMORY : CKR_DEVICE_ERROR;
    s->keys[idx]->session = session;
    s->keys[idx]->owner = session ? sess->handle : 0;
    *ret_idx = idx;
    return CKR_OK;
}

static CK_RV create_nonkey_parsed(P11Session *sess, const P11ObjTemplate *o,
                                  CK_OBJECT_HANDLE *ret) {
    P11Slot *s = slot_get(sess->slot);
    if (!o->session && !(sess->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY; /* session objects are allowed in R/O sessions */
    if (o->trusted) {
        LOCKED(s->lock);
        if (s->user != CKU_SO)
            return CKR_ATTRIBUTE_READ_ONLY; /* CKA_TRUSTED: the SO's to set */
    }
    VhsmAttr attrs[P11_OBJ_ATTRS_MAX];
    for (size_t i = 0; i < o->n_attrs; i++)
        attrs[i] = (VhsmAttr){(uint32_t)o->attrs[i].type, o->attrs[i].value, o->attrs[i].len};
    VhsmObjectSpec spec = {
        .type = o->vtype, .flags = o->flags, .attrs = attrs, .n_attrs = o->n_attrs};
    _cleanup_conn_ Conn x = {.slot = s};
    x.r = o->session ? conn_get_sobj(s, &x, true) : conn_get(s, &x);
    if (x.r < 0)
        return p11_rv_from_errno(x.r, P11_CTX_CREATE);
    char name[140];
    x.r = -EEXIST;
    for (int tries = 0; x.r == -EEXIST && tries < 5; tries++) {
        if (!object_name(o->label, tries, name))
            return CKR_FUNCTION_FAILED;
        x.r = vhsm_object_create(x.c, name, &spec, o->value, o->value_len);
    }
    if (x.r == -EBADRQC || x.r == -EOPNOTSUPP)
        return CKR_FUNCTION_NOT_SUPPORTED; /* a vhsmd without these objects */
    if (x.r == -EBADMSG || x.r == -E2BIG)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    if (x.r == -EPERM && o->trusted)
        return CKR_ATTRIBUTE_READ_ONLY;
    if (x.r < 0)
        return p11_rv_from_errno(x.r, P11_CTX_CREATE);
    int idx = 0;
    CK_RV rv = object_adopt(sess, &x, name, NULL, o->session, &idx);
    if (rv != CKR_OK)
        return rv;
    *ret = HANDLE(sess->slot, idx, o->cls == CKO_PUBLIC_KEY ? ROLE_PUB : ROLE_PRIV);
    return CKR_OK;
}

/* C_CreateObject of a data object, a certificate or a public key: stored by vhsmd with its
 * attributes (a certificate checked by OpenSSL there and here). */
static CK_RV create_nonkey(P11Session *sess, CK_ATTRIBUTE_PTR tmpl, CK_ULONG n,
                           CK_OBJECT_HANDLE *ret) {
    P11ObjTemplate o;
    CK_RV rv = p11_obj_template_parse(tmpl, n, &o);
    if (rv != CKR_OK)
        return rv;
    rv = create_nonkey_parsed(sess, &o, ret);
    p11_obj_template_done(&o);
    return rv;
}

/* C_CopyObject: vhsmd copies the object (a key stays inside it, with the same material and
 * origin flags). The template may change CKA_TOKEN, CKA_PRIVATE, CKA_MODIFIABLE,
 * CKA_DESTROYABLE, CKA_COPYABLE, the usage flags, CKA_SENSITIVE (to true), CKA_EXTRACTABLE (to
 * false) and the application's attributes (CKA_LABEL, CKA_ID, ...). */
static CK_RV copy_object(P11Session *sess, P11Key *k, unsigned role, const CK_ATTRIBUTE *t,
                         CK_ULONG n, CK_OBJECT_HANDLE *ret) {
    static const struct {
        CK_ATTRIBUTE_TYPE t;
        uint32_t bit;
    } bools[] = {
        {CKA_PRIVATE, VHSM_OBJ_PRIVATE},
        {CKA_MODIFIABLE, VHSM_OBJ_MODIFIABLE},
        {CKA_DESTROYABLE, VHSM_OBJ_DESTROYABLE},
        {CKA_COPYABLE, VHSM_OBJ_COPYABLE},
        {CKA_SIGN, VHSM_OBJ_SIGN},
        {CKA_VERIFY, VHSM_OBJ_VERIFY},
        {CKA_ENCRYPT, VHSM_OBJ_ENCRYPT},
        {CKA_DECRYPT, VHSM_OBJ_DECRYPT},
        {CKA_WRAP, VHSM_OBJ_WRAP},
        {CKA_UNWRAP, VHSM_OBJ_UNWRAP},
        {CKA_DERIVE, VHSM_OBJ_DERIVE},
        {CKA_SENSITIVE, VHSM_OBJ_SENSITIVE},
        {CKA_EXTRACTABLE, VHSM_OBJ_EXTRACTABLE},
    };
    P11Slot *s = slot_get(sess->slot);
    /* one half of a key pair cannot be copied alone (vhsmd holds the pair as one object) */
    if (role == ROLE_PUB && !k->pub_only)
        return CKR_ACTION_PROHIBITED;
    VhsmAttr attrs[VHSM_ATTR_MAX];
    size_t n_attrs = 0;
    uint32_t set = 0, clear = 0;
    P11Tri token = P11_TRI_ABSENT;
    char label[P11_LABEL_MAX + 1] = "";
    for (CK_ULONG i = 0; i < n; i++) {
        const CK_ATTRIBUTE *a = &t[i];
        bool done = false;
        if (a->type == CKA_TOKEN || a->type == CKA_TRUSTED) {
            if (a->ulValueLen != sizeof(CK_BBOOL))
                return CKR_ATTRIBUTE_VALUE_INVALID;
            bool b = *(const CK_BBOOL *)a->pValue;
            if (a->type == CKA_TRUSTED)
                return CKR_ATTRIBUTE_READ_ONLY;
            if (token != P11_TRI_ABSENT && token != (b ? P11_TRI_TRUE : P11_TRI_FALSE))
                return CKR_TEMPLATE_INCONSISTENT;
            token = b ? P11_TRI_TRUE : P11_TRI_FALSE;
            continue;
        }
        for (size_t j = 0; j < ELEMENTSOF(bools) && !done; j++) {
            if (bools[j].t != a->type)
                continue;
            if (a->ulValueLen != sizeof(CK_BBOOL))
                return CKR_ATTRIBUTE_VALUE_INVALID;
            CK_BBOOL b = *(const CK_BBOOL *)a->pValue;
            if ((a->type == CKA_SENSITIVE && !b) || (a->type == CKA_EXTRACTABLE && b))
                return CKR_ATTRIBUTE_READ_ONLY; /* one way only */
            if (b)
                set |= bools[j].bit;
            else
                clear |= bools[j].bit;
            if (set & clear)
                return CKR_TEMPLATE_INCONSISTENT;
            done = true;
        }
        if (done)
            continue;
        if (vault_like_reserved(a->type))
            return CKR_ATTRIBUTE_READ_ONLY;
        if (n_attrs == VHSM_ATTR_MAX || a->ulValueLen > VHSM_ATTR_VALUE_MAX)
            return CKR_TEMPLATE_INCONSISTENT;
        if (a->type == CKA_LABEL && a->ulValueLen <= P11_LABEL_MAX) {
            memcpy(label, a->pValue, a->ulValueLen);
            label[a->ulValueLen] = 0;
        }
        attrs[n_attrs++] = (VhsmAttr){(uint32_t)a->type, a->pValue, a->ulValueLen};
    }
    bool src_session;
    {
        LOCKED(s->lock);
        src_session = k->session;
    }
    bool session = token == P11_TRI_ABSENT ? src_session : token == P11_TRI_FALSE;
    if (!session && !(sess->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY;
    if (session != src_session)
        *(session ? &set : &clear) |= VHSM_OBJ_SESSION;
    _cleanup_conn_ Conn x = {.slot = s};
    x.r = session || src_session ? conn_get_sobj(s, &x, session) : conn_get(s, &x);
    if (x.r == -ENOKEY)
        return CKR_OBJECT_HANDLE_INVALID; /* its session objects are gone */
    if (x.r < 0)
        return p11_rv_from_errno(x.r, P11_CTX_CREATE);
    char name[140];
    x.r = -EEXIST;
    for (int tries = 0; x.r == -EEXIST && tries < 5; tries++) {
        if (!object_name(label[0] ? label : NULL, tries, name))
            return CKR_FUNCTION_FAILED;
        x.r = vhsm_object_copy(x.c, k->name, name, set, clear, attrs, n_attrs);
    }
    if (x.r == -EBADRQC)
        return CKR_ACTION_PROHIBITED; /* a vhsmd without copies */
    if (x.r == -EPERM)
        return CKR_ACTION_PROHIBITED; /* not copyable, or a change the copy may not make */
    if (x.r == -ENOKEY)
        return CKR_OBJECT_HANDLE_INVALID;
    if (x.r < 0)
        return p11_rv_from_errno(x.r, P11_CTX_CREATE);
    int idx = 0;
    CK_RV rv = object_adopt(sess, &x, name, NULL, session, &idx);
    if (rv != CKR_OK)
        return rv;
    *ret = HANDLE(sess->slot, idx, role);
    return CKR_OK;
}

/* Destroys the session objects session h made (C_CloseSession): vhsmd forgets them. */
static void session_objects_destroy(CK_SLOT_ID slot, CK_SESSION_HANDLE h) {
    P11Slot *s = slot_get(slot);
    for (;;) {
        char *name = NULL;
        P11Key *k = NULL;
        {
            LOCKED(s->lock);
            for (size_t i = 0; i < s->n_keys && !k; i++)
                if (s->keys[i]->alive && s->keys[i]->session && s->keys[i]->owner == h)
                    k = s->keys[i];
            if (!k)
                return;
            k->alive = false;
            name = strdup(k->name);
        }
        if (!name)
            return;
        _cleanup_conn_ Conn x = {.slot = s};
        x.r = conn_get_sobj(s, &x, false);
        if (x.r >= 0)
            x.r = vhsm_key_delete(x.c, name);
        free(name);
    }
}

/* Imports a secret key from its plaintext CKA_VALUE (vhsmd stores it marked imported: no
 * CKA_LOCAL, ALWAYS_SENSITIVE or NEVER_EXTRACTABLE). The value goes to vhsmd in the request
 * buffer, which libvhsm wipes after the call; the module keeps no copy. */
CK_RV C_CreateObject(CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount,
                     CK_OBJECT_HANDLE_PTR phObject) {
    SESSION_OR_RETURN(hSession);
    if ((!pTemplate && ulCount > 0) || !phObject)
        return CKR_ARGUMENTS_BAD;
    CK_OBJECT_CLASS cls;
    CK_RV rv = p11_template_class(pTemplate, ulCount, &cls);
    if (rv != CKR_OK)
        return rv;
    if (cls == CKO_DATA || cls == CKO_CERTIFICATE || cls == CKO_PUBLIC_KEY)
        return create_nonkey(sess, pTemplate, ulCount, phObject);
    P11KeyTemplate t;
    rv = p11_key_template_parse(pTemplate, ulCount, &t);
    if (rv != CKR_OK)
        return rv;
    if (!t.has_class)
        return CKR_TEMPLATE_INCOMPLETE;
    if (t.cls != CKO_SECRET_KEY && t.cls != CKO_PRIVATE_KEY)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    if (t.cls == CKO_PRIVATE_KEY && t.has_key_type && t.key_type == CKK_RSA)
        return create_rsa_key(sess, &t, phObject);
    if (!t.has_key_type || !t.value)
        return CKR_TEMPLATE_INCOMPLETE;
    if (t.cls == CKO_PRIVATE_KEY)
        return create_private_key(sess, &t, phObject);
    if (t.rsa[0] || (rv = no_components(&t)) != CKR_OK)
        return CKR_TEMPLATE_INCONSISTENT;
    if (t.value_len && t.value_len != t.value_size)
        return CKR_TEMPLATE_INCONSISTENT;
    const char *vtype;
    KeyKind kind;
    switch (t.key_type) {
    case CKK_AES:
        if (t.value_size != 16 && t.value_size != 24 && t.value_size != 32)
            return CKR_ATTRIBUTE_VALUE_INVALID;
        vtype = t.value_size == 16 ? "aes128" : t.value_size == 24 ? "aes192" : "aes256";
        kind = KK_AES;
        break;
    case CKK_GENERIC_SECRET:
        if (t.value_size != 32 && t.value_size != 48)
            return CKR_ATTRIBUTE_VALUE_INVALID; /* HMAC keys of 32 or 48 bytes */
        vtype = t.value_size == 32 ? "hmac-sha256" : "hmac-sha384";
        kind = t.value_size == 32 ? KK_HMAC_SHA256 : KK_HMAC_SHA384;
        break;
    default:
        return CKR_ATTRIBUTE_VALUE_INVALID;
    }
    if ((rv = gen_template_check(&t, CKO_SECRET_KEY, t.key_type, kind)) != CKR_OK)
        return rv;
    if (t.token != P11_TRI_FALSE && !(sess->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY; /* session objects are allowed in R/O sessions */
    int idx = 0;
    rv = gen_key(sess, vtype, kind, NULL, &t, t.value, t.value_size, &idx);
    if (rv != CKR_OK)
        return rv;
    *phObject = HANDLE(sess->slot, idx, ROLE_PRIV);
    return CKR_OK;
}

CK_RV C_CopyObject(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject, CK_ATTRIBUTE_PTR pTemplate,
                   CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phNewObject) {
    SESSION_OR_RETURN(hSession);
    unsigned role = 0;
    P11Key *k = object_key(sess->slot, hObject, &role);
    if (!k)
        return CKR_OBJECT_HANDLE_INVALID;
    if ((!pTemplate && ulCount > 0) || !phNewObject)
        return CKR_ARGUMENTS_BAD;
    CK_RV rv = p11_template_check(pTemplate, ulCount);
    if (rv != CKR_OK)
        return rv;
    return copy_object(sess, k, role, pTemplate, ulCount, phNewObject);
}

CK_RV C_DestroyObject(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject) {
    SESSION_OR_RETURN(hSession);
    unsigned role = 0;
    P11Key *k = object_key(sess->slot, hObject, &role);
    if (!k)
        return CKR_OBJECT_HANDLE_INVALID;
    P11Slot *s = slot_get(sess->slot);
    bool session_obj;
    {
        LOCKED(s->lock);
        session_obj = k->session;
    }
    /* session objects may be destroyed in a read-only session (PKCS#11 4.1) */
    if (!session_obj && !(sess->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY;
    /* A key pair's public key object is a view of its key pair: destroying it alone is not
     * possible (a lone public key object is). */
    if (role == ROLE_PUB && !k->pub_only)
        return CKR_ACTION_PROHIBITED;
    _cleanup_conn_ Conn x = {.slot = s};
    x.r = conn_get_for(s, k, &x);
    if (x.r >= 0)
        x.r = vhsm_key_delete(x.c, k->name);
    if (x.r == -EPERM && !p11_errno_is_transport(x.r))
        return CKR_ACTION_PROHIBITED; /* CKA_DESTROYABLE false (or the ACL) */
    if (x.r < 0 && x.r != -ENOKEY)
        return p11_rv_from_errno(x.r, P11_CTX_OBJECT);
    LOCKED(s->lock);
    k->alive = false;
    return x.r == -ENOKEY ? CKR_OBJECT_HANDLE_INVALID : CKR_OK;
}

/* ---- key generation ------------------------------------------------------------------------ */

/* Template policy: token keys only (session objects are not in vhsmd yet); always sensitive
 * (whatever CKA_SENSITIVE asks: vhsmd never gives out a key's value, so a "non-sensitive" key
 * could not show it either); a usage the key type cannot do is refused. With revision 2 the
 * usages asked for, CKA_EXTRACTABLE, CKA_PRIVATE and CKA_MODIFIABLE become vhsmd's enforced
 * policy (gen_flags); a revision-1 daemon cannot store them (gen_key). */
static CK_RV gen_template_check(const P11KeyTemplate *t, CK_OBJECT_CLASS cls, CK_KEY_TYPE type,
                                KeyKind kind) {
    if (t->has_class && t->cls != cls)
        return CKR_TEMPLATE_INCONSISTENT;
    if (t->has_key_type && t->key_type != type)
        return CKR_TEMPLATE_INCONSISTENT;
    /* CKA_SENSITIVE false is accepted and ignored: secret values never leave vhsmd, so every
     * key is sensitive (as on most hardware HSMs); pkcs11-tool asks for false by default. */
    bool can_sign = kind != KK_AES, can_crypt = kind == KK_AES || kind == KK_RSA;
    if (cls == CKO_PUBLIC_KEY) {
        if (t->sign == P11_TRI_TRUE || t->decrypt == P11_TRI_TRUE || t->unwrap == P11_TRI_TRUE)
            return CKR_TEMPLATE_INCONSISTENT;
    } else if (cls == CKO_PRIVATE_KEY) {
        if (t->verify == P11_TRI_TRUE || t->encrypt == P11_TRI_TRUE || t->wrap == P11_TRI_TRUE)
            return CKR_TEMPLATE_INCONSISTENT;
    }
    if (((t->sign == P11_TRI_TRUE || t->verify == P11_TRI_TRUE) && !can_sign) ||
        ((t->encrypt == P11_TRI_TRUE || t->decrypt == P11_TRI_TRUE) && !can_crypt) ||
        ((t->wrap == P11_TRI_TRUE || t->unwrap == P11_TRI_TRUE) && kind != KK_AES) ||
        (t->derive == P11_TRI_TRUE && kind != KK_EC_P256 && kind != KK_EC_P384))
        return CKR_ATTRIBUTE_VALUE_INVALID;
    return CKR_OK;
}

static bool vhsm_name_ok(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 128 || s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:@-", s[i]))
            return false;
    return true;
}

/* Creates a key of vhsm type vtype named after the label when it is a valid, free name, else
 * "p11-<random>" (with the label kept as the vault label). Adds it to the slot; *ret_idx. */
static uint32_t tri_apply(uint32_t f, P11Tri t, uint32_t bit) {
    return t == P11_TRI_TRUE ? f | bit : t == P11_TRI_FALSE ? f & ~bit : f;
}

/* vhsmd's policy flags for a new key (revision 2): the usages the key type can do, sensitive,
 * private, modifiable, destroyable, then what the templates ask. vt: the secret or private
 * key's template; pt: the public key's (NULL for a secret key). CKA_SENSITIVE false is not
 * honoured (see gen_template_check). */
static uint32_t gen_flags(KeyKind kind, const P11KeyTemplate *pt, const P11KeyTemplate *vt) {
    uint32_t f = VHSM_OBJ_SENSITIVE | VHSM_OBJ_PRIVATE | VHSM_OBJ_MODIFIABLE | VHSM_OBJ_DESTROYABLE;
    if (kind != KK_AES)
        f |= VHSM_OBJ_SIGN | VHSM_OBJ_VERIFY;
    if (kind == KK_AES || kind == KK_RSA)
        f |= VHSM_OBJ_ENCRYPT | VHSM_OBJ_DECRYPT;
    if (kind == KK_EC_P256 || kind == KK_EC_P384)
        f |= VHSM_OBJ_DERIVE;
    const P11KeyTemplate *ps = pt ? pt : vt;
    /* An AES key either wraps keys or encrypts data: asked to wrap or unwrap, it does not
     * encrypt or decrypt unless asked to as well (and then vhsmd never lets it wrap: a key that
     * has been a data cipher could decrypt what it wraps). */
    if (kind == KK_AES && (ps->wrap == P11_TRI_TRUE || vt->unwrap == P11_TRI_TRUE))
        f &= ~(VHSM_OBJ_ENCRYPT | VHSM_OBJ_DECRYPT);
    f = tri_apply(f, vt->sign, VHSM_OBJ_SIGN);
    f = tri_apply(f, vt->decrypt, VHSM_OBJ_DECRYPT);
    f = tri_apply(f, vt->unwrap, VHSM_OBJ_UNWRAP);
    f = tri_apply(f, vt->derive, VHSM_OBJ_DERIVE);
    f = tri_apply(f, ps->verify, VHSM_OBJ_VERIFY);
    f = tri_apply(f, ps->encrypt, VHSM_OBJ_ENCRYPT);
    f = tri_apply(f, ps->wrap, VHSM_OBJ_WRAP);
    f = tri_apply(f, vt->extractable, VHSM_OBJ_EXTRACTABLE);
    f = tri_apply(f, vt->private_, VHSM_OBJ_PRIVATE);
    f = tri_apply(f, vt->modifiable, VHSM_OBJ_MODIFIABLE);
    f = tri_apply(f | VHSM_OBJ_COPYABLE, vt->copyable, VHSM_OBJ_COPYABLE); /* default true */
    f = tri_apply(f, vt->trusted, VHSM_OBJ_TRUSTED);
    f = tri_apply(f, vt->wrap_with_trusted, VHSM_OBJ_WRAP_WITH_TRUSTED);
    return f;
}

/* Creates a key of vhsm type vtype, named after the label when it is a valid, free name, else
 * "p11-<random>". With revision 2 the templates' policy flags and CKA_LABEL / CKA_ID are stored
 * in vhsmd; a revision-1 daemon gets a plain key (the label as its vault label), and templates
 * asking for what only revision 2 can do are refused. Adds the key to the slot; *ret_idx. */
static CK_RV gen_key(P11Session *sess, const char *vtype, KeyKind kind, const P11KeyTemplate *pt,
                     const P11KeyTemplate *vt, const void *value, size_t value_len, int *ret_idx) {
    P11Slot *s = slot_get(sess->slot);
    if (vt->trusted == P11_TRI_TRUE) {
        LOCKED(s->lock);
        if (s->user != CKU_SO)
            return CKR_ATTRIBUTE_READ_ONLY; /* CKA_TRUSTED: the SO's to set (vhsmd checks too) */
    }
    _cleanup_conn_ Conn x = {.slot = s};
    bool session = vt->token == P11_TRI_FALSE; /* a session object lives on the sobj connection */
    x.r = session ? conn_get_sobj(s, &x, true) : conn_get(s, &x);
    if (x.r < 0)
        return p11_rv_from_errno(x.r, P11_CTX_CREATE);
    const P11KeyTemplate *lt = vt->has_label || !pt ? vt : pt;
    const P11KeyTemplate *it = vt->has_id || !pt ? vt : pt;
    const char *label = lt->has_label ? lt->label : NULL;
    VhsmAttr attrs[2];
    size_t n_attrs = 0;
    if (lt->has_label)
        attrs[n_attrs++] = (VhsmAttr){CKA_LABEL, lt->label, strlen(lt->label)};
    if (it->has_id)
        attrs[n_attrs++] = (VhsmAttr){CKA_ID, it->id, it->id_len};
    VhsmObjectSpec ospec = {.type = vtype,
                            .flags = gen_flags(kind, pt, vt) | (session ? VHSM_OBJ_SESSION : 0),
                            .attrs = attrs,
                            .n_attrs = n_attrs};
    VhsmKeySpec spec = {.type = vtype, .label = label && *label ? label : NULL};
    bool rev1 = false;
    char name[140];
    x.r = -EEXIST;
    for (int tries = 0; x.r == -EEXIST && tries < 5; tries++) {
        if (tries == 0 && label && vhsm_name_ok(label))
            snprintf(name, sizeof(name), "%s", label);
        else {
            uint8_t rnd[8];
            if (RAND_bytes(rnd, sizeof(rnd)) != 1)
                return CKR_FUNCTION_FAILED;
            snprintf(name, sizeof(name), "p11-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
                     rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
        }
        if (!rev1) {
            x.r = vhsm_object_create(x.c, name, &ospec, value, value_len);
            if (x.r == -EBADRQC && value)
                return CKR_FUNCTION_NOT_SUPPORTED; /* revision 1: no plaintext import */
            if (x.r == -EBADRQC) {
                rev1 = true;
                if (vt->extractable == P11_TRI_TRUE || vt->modifiable == P11_TRI_TRUE ||
                    it->has_id || session)
                    return CKR_ATTRIBUTE_VALUE_INVALID; /* needs revision 2 */
            }
        }
        if (rev1)
            x.r = vhsm_key_create(x.c, name, &spec);
    }
    if (x.r == -EPERM && value)
        return CKR_ACTION_PROHIBITED; /* vhsmd --no-plaintext-import */
    if (x.r == -EBADMSG && value)
        return CKR_ATTRIBUTE_VALUE_INVALID;
    if (x.r < 0)
        return p11_rv_from_errno(x.r, P11_CTX_CREATE);
    char full[160];
    snprintf(full, sizeof(full), "%u/%s", (unsigned)geteuid(), name);
    /* the new key's flags, attributes and public key, as vhsmd stored them */
    _cleanup_free_ char *desc_text = NULL;
    json_t *desc = NULL;
    if (!rev1 && vhsm_key_info(x.c, full, &desc_text) >= 0)
        desc = json_loads(desc_text, 0, NULL);
    LOCKED(s->lock);
    int idx = slot_key_upsert_locked(s, full, vtype, rev1 ? label : NULL,
                                     value ? "imported" : "generated", desc);
    json_decref(desc);
    if (idx < 0)
        return CKR_HOST_MEMORY;
    if (session) {
        s->keys[idx]->session = true;
        s->keys[idx]->owner = sess->handle;
    }
    *ret_idx = idx;
    return CKR_OK;
}

CK_RV C_GenerateKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                    CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount, CK_OBJECT_HANDLE_PTR phKey) {
    SESSION_OR_RETURN(hSession);
    if (!pMechanism || !phKey)
        return CKR_ARGUMENTS_BAD;
    P11KeyTemplate t;
    CK_RV rv = p11_key_template_parse(pTemplate, ulCount, &t);
    if (rv != CKR_OK)
        return rv;
    if (t.value) /* generated keys have no value to give */
        return CKR_TEMPLATE_INCONSISTENT;
    if ((rv = no_components(&t)) != CKR_OK)
        return rv;
    const char *vtype;
    KeyKind kind;
    CK_KEY_TYPE type;
    switch (pMechanism->mechanism) {
    case CKM_AES_KEY_GEN:
        if (t.value_len != 16 && t.value_len != 24 && t.value_len != 32)
            return t.value_len == 0 ? CKR_TEMPLATE_INCOMPLETE : CKR_KEY_SIZE_RANGE;
        vtype = t.value_len == 16 ? "aes128" : t.value_len == 24 ? "aes192" : "aes256";
        kind = KK_AES, type = CKK_AES;
        break;
    case CKM_GENERIC_SECRET_KEY_GEN:
        if (t.value_len == 0)
            return CKR_TEMPLATE_INCOMPLETE;
        if (t.value_len != 32 && t.value_len != 48)
            return CKR_KEY_SIZE_RANGE;
        vtype = t.value_len == 32 ? "hmac-sha256" : "hmac-sha384";
        kind = t.value_len == 32 ? KK_HMAC_SHA256 : KK_HMAC_SHA384;
        type = CKK_GENERIC_SECRET;
        break;
    default:
        return CKR_MECHANISM_INVALID;
    }
    if (pMechanism->pParameter || pMechanism->ulParameterLen)
        return CKR_MECHANISM_PARAM_INVALID;
    if ((rv = gen_template_check(&t, CKO_SECRET_KEY, type, kind)) != CKR_OK)
        return rv;
    if (t.token != P11_TRI_FALSE && !(sess->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY;
    int idx = 0;
    rv = gen_key(sess, vtype, kind, NULL, &t, NULL, 0, &idx);
    if (rv != CKR_OK)
        return rv;
    *phKey = HANDLE(sess->slot, idx, ROLE_PRIV);
    return CKR_OK;
}

CK_RV C_GenerateKeyPair(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                        CK_ATTRIBUTE_PTR pPublicKeyTemplate, CK_ULONG ulPublicKeyAttributeCount,
                        CK_ATTRIBUTE_PTR pPrivateKeyTemplate, CK_ULONG ulPrivateKeyAttributeCount,
                        CK_OBJECT_HANDLE_PTR phPublicKey, CK_OBJECT_HANDLE_PTR phPrivateKey) {
    SESSION_OR_RETURN(hSession);
    if (!pMechanism || !phPublicKey || !phPrivateKey)
        return CKR_ARGUMENTS_BAD;
    P11KeyTemplate pt, vt;
    CK_RV rv = p11_key_template_parse(pPublicKeyTemplate, ulPublicKeyAttributeCount, &pt);
    if (rv != CKR_OK)
        return rv;
    if ((rv = p11_key_template_parse(pPrivateKeyTemplate, ulPrivateKeyAttributeCount, &vt)) !=
        CKR_OK)
        return rv;
    if (pMechanism->pParameter || pMechanism->ulParameterLen)
        return CKR_MECHANISM_PARAM_INVALID;
    if (pt.value || vt.value)
        return CKR_TEMPLATE_INCONSISTENT;
    if ((rv = no_components(&pt)) != CKR_OK || (rv = no_components(&vt)) != CKR_OK)
        return rv;
    int curve = pt.curve >= 0 ? pt.curve : vt.curve;
    if (pt.curve >= 0 && vt.curve >= 0 && pt.curve != vt.curve)
        return CKR_TEMPLATE_INCONSISTENT;
    const char *vtype;
    KeyKind kind;
    CK_KEY_TYPE type;
    switch (pMechanism->mechanism) {
    case CKM_EC_KEY_PAIR_GEN:
        if (curve < 0)
            return CKR_TEMPLATE_INCOMPLETE;
        if (curve == P11_CURVE_ED25519)
            return CKR_CURVE_NOT_SUPPORTED;
        kind = curve == P11_CURVE_P256 ? KK_EC_P256 : KK_EC_P384;
        vtype = curve == P11_CURVE_P256 ? "ec-p256" : "ec-p384";
        type = CKK_EC;
        break;
    case CKM_EC_EDWARDS_KEY_PAIR_GEN:
        if (curve >= 0 && curve != P11_CURVE_ED25519)
            return CKR_CURVE_NOT_SUPPORTED;
        kind = KK_ED25519, vtype = "ed25519", type = CKK_EC_EDWARDS;
        break;
    case CKM_RSA_PKCS_KEY_PAIR_GEN: {
        CK_ULONG bits = pt.modulus_bits ? pt.modulus_bits : vt.modulus_bits;
        if (bits == 0)
            return CKR_TEMPLATE_INCOMPLETE;
        if (bits != 2048 && bits != 3072 && bits != 4096)
            return CKR_KEY_SIZE_RANGE;
        if ((pt.has_public_exponent && !pt.public_exponent_f4) ||
            (vt.has_public_exponent && !vt.public_exponent_f4))
            return CKR_ATTRIBUTE_VALUE_INVALID;
        kind = KK_RSA, type = CKK_RSA;
        vtype = bits == 2048 ? "rsa2048" : bits == 3072 ? "rsa3072" : "rsa4096";
        break;
    }
    default:
        return CKR_MECHANISM_INVALID;
    }
    if ((rv = gen_template_check(&pt, CKO_PUBLIC_KEY, type, kind)) != CKR_OK ||
        (rv = gen_template_check(&vt, CKO_PRIVATE_KEY, type, kind)) != CKR_OK)
        return rv;
    /* one vhsmd object per pair: a session pair when the private key's CKA_TOKEN is false */
    if (pt.token == P11_TRI_FALSE && vt.token != P11_TRI_FALSE)
        return CKR_TEMPLATE_INCONSISTENT;
    if (vt.token != P11_TRI_FALSE && !(sess->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY;
    int idx = 0;
    rv = gen_key(sess, vtype, kind, &pt, &vt, NULL, 0, &idx);
    if (rv != CKR_OK)
        return rv;
    *phPublicKey = HANDLE(sess->slot, idx, ROLE_PUB);
    *phPrivateKey = HANDLE(sess->slot, idx, ROLE_PRIV);
    return CKR_OK;
}

/* ---- hard-wrap: wrapping and derivation (src/pkcs11/wrap.c has the parameter parsing) ------ */

/* The rules of C_WrapKey / C_UnwrapKey / C_DeriveKey that the errno table cannot know (which
 * key a permission or a length is about). */
static CK_RV wrap_rv(int r, P11Ctx ctx) {
    if (r == -ERANGE)
        return ctx == P11_CTX_UNWRAP   ? CKR_WRAPPED_KEY_LEN_RANGE
               : ctx == P11_CTX_CREATE ? CKR_TEMPLATE_INCONSISTENT
                                       : CKR_KEY_SIZE_RANGE;
    if (r == -EPERM)
        return CKR_KEY_FUNCTION_NOT_PERMITTED; /* a usage flag or the ACL of the key used */
    if (r == -EBADRQC)
        return CKR_FUNCTION_NOT_SUPPORTED; /* a vhsmd without hard-wrap's operations */
    return p11_rv_from_errno(r, ctx);
}

CK_RV C_WrapKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                CK_OBJECT_HANDLE hWrappingKey, CK_OBJECT_HANDLE hKey, CK_BYTE_PTR pWrappedKey,
                CK_ULONG_PTR pulWrappedKeyLen) {
    SESSION_OR_RETURN(hSession);
    if (!pMechanism || !pulWrappedKeyLen)
        return CKR_ARGUMENTS_BAD;
    P11Slot *s = slot_get(sess->slot);
    const char *alg = p11_kw_alg(pMechanism->mechanism);
    if (!alg || !mech_find(s, pMechanism->mechanism))
        return CKR_MECHANISM_INVALID;
    CK_RV rv = p11_kw_params_check(pMechanism);
    if (rv != CKR_OK)
        return rv;
    unsigned wrole = 0, trole = 0;
    P11Key *wk = object_key(sess->slot, hWrappingKey, &wrole);
    if (!wk)
        return CKR_WRAPPING_KEY_HANDLE_INVALID;
    P11Key *tk = object_key(sess->slot, hKey, &trole);
    if (!tk)
        return CKR_KEY_HANDLE_INVALID;
    if (wk->kind != KK_AES)
        return CKR_WRAPPING_KEY_TYPE_INCONSISTENT;
    if (trole == ROLE_PUB)
        return CKR_KEY_NOT_WRAPPABLE; /* a public key is not wrapped: it is public */
    bool pad = pMechanism->mechanism == CKM_AES_KEY_WRAP_PAD;
    size_t need = 0;
    {
        LOCKED(s->lock);
        if (wk->has_flags && !(wk->flags & VHSM_OBJ_WRAP))
            return CKR_KEY_FUNCTION_NOT_PERMITTED;
        if (tk->has_flags && !(tk->flags & VHSM_OBJ_EXTRACTABLE))
            return CKR_KEY_UNEXTRACTABLE;
        if (tk->has_flags && wk->has_flags && (tk->flags & VHSM_OBJ_WRAP_WITH_TRUSTED) &&
            !(wk->flags & VHSM_OBJ_TRUSTED))
            return CKR_KEY_NOT_WRAPPABLE;
        /* A secret key's wrapped length is known here: no round trip for a length query. */
        if (kind_is_secret(tk->kind) && !(need = p11_kw_wrapped_len(pad, tk->bits / 8)))
            return CKR_KEY_SIZE_RANGE;
    }
    _cleanup_conn_ Conn x = {.slot = s};
    x.r = conn_get(s, &x);
    if (x.r < 0)
        return wrap_rv(x.r, P11_CTX_KEY);
    if (need == 0 && !pWrappedKey) { /* a private key: PKCS#8 of a length vhsmd knows */
        size_t n = 0;
        x.r = vhsm_wrap_key(x.c, wk->name, alg, tk->name, NULL, &n);
        if (x.r < 0)
            return wrap_rv(x.r, P11_CTX_KEY);
        need = n;
    }
    if (!pWrappedKey) {
        *pulWrappedKeyLen = need;
        return CKR_OK;
    }
    if (need && *pulWrappedKeyLen < need) {
        *pulWrappedKeyLen = need;
        return CKR_BUFFER_TOO_SMALL;
    }
    uint8_t *out = NULL;
    size_t n = 0;
    x.r = vhsm_wrap_key(x.c, wk->name, alg, tk->name, &out, &n);
    if (x.r < 0)
        return wrap_rv(x.r, P11_CTX_KEY);
    if (n > *pulWrappedKeyLen) { /* a private key's PKCS#8 longer than the buffer: its length */
        *pulWrappedKeyLen = n;
        free(out);
        return CKR_BUFFER_TOO_SMALL;
    }
    memcpy(pWrappedKey, out, n);
    *pulWrappedKeyLen = n;
    free(out);
    return CKR_OK;
}

/* A new key made by vhsmd (unwrap, derive) under a name from the label, as gen_key names keys;
 * make() runs the request for one candidate name and returns 0 or a negative errno. */
typedef int (*MakeKeyFn)(VhsmClient *c, const char *name, void *userdata);
static int make_named_key(VhsmClient *c, const P11KeyTemplate *t, MakeKeyFn make, void *userdata,
                          char full[static 160]) {
    const char *label = t->has_label ? t->label : NULL;
    char name[140];
    int r = -EEXIST;
    for (int tries = 0; r == -EEXIST && tries < 5; tries++) {
        if (tries == 0 && label && vhsm_name_ok(label))
            snprintf(name, sizeof(name), "%s", label);
        else {
            uint8_t rnd[8];
            if (RAND_bytes(rnd, sizeof(rnd)) != 1)
                return -EIO;
            snprintf(name, sizeof(name), "p11-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
                     rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
        }
        r = make(c, name, userdata);
    }
    if (r >= 0)
        snprintf(full, 160, "%u/%s", (unsigned)geteuid(), name);
    return r;
}

/* Adds the key vhsmd just made to the slot's table, with its flags and attributes. */
static CK_RV adopt_new_key(P11Slot *s, VhsmClient *c, const char *full, const char *vtype,
                           const char *origin, CK_OBJECT_HANDLE *ret, CK_SLOT_ID slot) {
    _cleanup_free_ char *desc_text = NULL;
    json_t *desc = NULL;
    if (vhsm_key_info(c, full, &desc_text) >= 0)
        desc = json_loads(desc_text, 0, NULL);
    LOCKED(s->lock);
    int idx = slot_key_upsert_locked(s, full, vtype, NULL, origin, desc);
    json_decref(desc);
    if (idx < 0)
        return CKR_HOST_MEMORY;
    *ret = HANDLE(slot, idx, ROLE_PRIV);
    return CKR_OK;
}

/* The object spec of a new key from its template (flags, CKA_LABEL, CKA_ID). */
static void new_key_spec(KeyKind kind, const P11KeyTemplate *t, const char *vtype,
                         VhsmAttr attrs[2], VhsmObjectSpec *ret) {
    size_t n = 0;
    if (t->has_label)
        attrs[n++] = (VhsmAttr){CKA_LABEL, t->label, strlen(t->label)};
    if (t->has_id)
        attrs[n++] = (VhsmAttr){CKA_ID, t->id, t->id_len};
    *ret = (VhsmObjectSpec){
        .type = vtype, .flags = gen_flags(kind, NULL, t), .attrs = attrs, .n_attrs = n};
}

/* What the template of an unwrapped or derived key asks for: vhsmd's type (or family) and the
 * kind its checks use. */
static CK_RV new_key_type(const P11KeyTemplate *t, const char **ret_vtype, KeyKind *ret_kind) {
    if (!t->has_class || !t->has_key_type)
        return CKR_TEMPLATE_INCOMPLETE;
    if (t->value || t->rsa[0] || no_components(t) != CKR_OK)
        return CKR_TEMPLATE_INCONSISTENT; /* the value comes from the wrapped key */
    if (t->cls == CKO_SECRET_KEY) {
        if (t->key_type == CKK_AES)
            *ret_vtype = "aes", *ret_kind = KK_AES;
        else if (t->key_type == CKK_GENERIC_SECRET)
            *ret_vtype = "generic-secret",
            *ret_kind = t->value_len == 48 ? KK_HMAC_SHA384 : KK_HMAC_SHA256;
        else
            return CKR_TEMPLATE_INCONSISTENT;
        return CKR_OK;
    }
    if (t->cls != CKO_PRIVATE_KEY || t->value_len)
        return CKR_TEMPLATE_INCONSISTENT;
    switch (t->key_type) {
    case CKK_EC:
        if (t->curve == P11_CURVE_ED25519)
            return CKR_TEMPLATE_INCONSISTENT;
        *ret_vtype = t->curve == P11_CURVE_P256   ? "ec-p256"
                     : t->curve == P11_CURVE_P384 ? "ec-p384"
                                                  : "ec";
        *ret_kind = t->curve == P11_CURVE_P384 ? KK_EC_P384 : KK_EC_P256;
        return CKR_OK;
    case CKK_EC_EDWARDS:
        *ret_vtype = "ed25519", *ret_kind = KK_ED25519;
        return CKR_OK;
    case CKK_RSA:
        *ret_vtype = "rsa", *ret_kind = KK_RSA;
        return CKR_OK;
    default:
        return CKR_TEMPLATE_INCONSISTENT;
    }
}

/* Checks shared by unwrap and derive: the template's policy, the SO's CKA_TRUSTED, a
 * read-write session. */
static CK_RV new_key_check(P11Session *sess, const P11KeyTemplate *t, KeyKind kind) {
    CK_RV rv = gen_template_check(t, t->cls, t->key_type, kind);
    if (rv != CKR_OK)
        return rv;
    if (t->trusted == P11_TRI_TRUE) {
        P11Slot *s = slot_get(sess->slot);
        LOCKED(s->lock);
        if (s->user != CKU_SO)
            return CKR_ATTRIBUTE_READ_ONLY; /* CKA_TRUSTED: the SO's to set */
    }
    if (t->token != P11_TRI_FALSE && !(sess->flags & CKF_RW_SESSION))
        return CKR_SESSION_READ_ONLY; /* session objects may be made in a read-only session */
    return CKR_OK;
}

/* The connection for a new unwrapped or derived key: a session object (CKA_TOKEN false) lives on
 * the slot's session-object connection, which also sees a session key used to make it. */
static int conn_for_new_key(P11Slot *s, const P11KeyTemplate *t, const P11Key *from, Conn *x) {
    if (t->token == P11_TRI_FALSE || from->session)
        return conn_get_sobj(s, x, true);
    return conn_get(s, x);
}

typedef struct UnwrapReq {
    const char *ukey, *alg;
    const void *wrapped;
    size_t wrapped_len, value_len;
    const VhsmObjectSpec *spec;
    char got[24];
} UnwrapReq;

static int unwrap_make(VhsmClient *c, const char *name, void *userdata) {
    UnwrapReq *u = userdata;
    return vhsm_unwrap_key(c, u->ukey, u->alg, u->wrapped, u->wrapped_len, name, u->spec,
                           u->value_len, u->got, sizeof u->got);
}

CK_RV C_UnwrapKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                  CK_OBJECT_HANDLE hUnwrappingKey, CK_BYTE_PTR pWrappedKey,
                  CK_ULONG ulWrappedKeyLen, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulAttributeCount,
                  CK_OBJECT_HANDLE_PTR phKey) {
    SESSION_OR_RETURN(hSession);
    if (!pMechanism || !phKey || !pWrappedKey || (!pTemplate && ulAttributeCount))
        return CKR_ARGUMENTS_BAD;
    P11Slot *s = slot_get(sess->slot);
    const char *alg = p11_kw_alg(pMechanism->mechanism);
    if (!alg || !mech_find(s, pMechanism->mechanism))
        return CKR_MECHANISM_INVALID;
    CK_RV rv = p11_kw_params_check(pMechanism);
    if (rv != CKR_OK)
        return rv;
    unsigned role = 0;
    P11Key *uk = object_key(sess->slot, hUnwrappingKey, &role);
    if (!uk)
        return CKR_UNWRAPPING_KEY_HANDLE_INVALID;
    if (uk->kind != KK_AES)
        return CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT;
    {
        LOCKED(s->lock);
        if (uk->has_flags && !(uk->flags & VHSM_OBJ_UNWRAP))
            return CKR_KEY_FUNCTION_NOT_PERMITTED;
    }
    if (ulWrappedKeyLen < 16 || ulWrappedKeyLen % 8 != 0 || ulWrappedKeyLen > 16384)
        return CKR_WRAPPED_KEY_LEN_RANGE;
    P11KeyTemplate t;
    if ((rv = p11_key_template_parse(pTemplate, ulAttributeCount, &t)) != CKR_OK)
        return rv;
    const char *vtype = NULL;
    KeyKind kind;
    if ((rv = new_key_type(&t, &vtype, &kind)) != CKR_OK ||
        (rv = new_key_check(sess, &t, kind)) != CKR_OK)
        return rv;
    VhsmAttr attrs[2];
    VhsmObjectSpec spec;
    new_key_spec(kind, &t, vtype, attrs, &spec);
    if (t.token == P11_TRI_FALSE)
        spec.flags |= VHSM_OBJ_SESSION;
    UnwrapReq u = {.ukey = uk->name,
                   .alg = alg,
                   .wrapped = pWrappedKey,
                   .wrapped_len = ulWrappedKeyLen,
                   .value_len = t.value_len,
                   .spec = &spec};
    _cleanup_conn_ Conn x = {.slot = s};
    char full[160];
    x.r = conn_for_new_key(s, &t, uk, &x);
    if (x.r >= 0)
        x.r = make_named_key(x.c, &t, unwrap_make, &u, full);
    if (x.r == -EKEYREJECTED)
        return CKR_WRAPPED_KEY_INVALID;
    if (x.r < 0)
        return wrap_rv(x.r, x.r == -EEXIST || x.r == -EDQUOT || x.r == -EMEDIUMTYPE
                                ? P11_CTX_CREATE
                                : P11_CTX_UNWRAP);
    return adopt_new_key(s, x.c, full, u.got, "imported", phKey, sess->slot);
}

typedef struct DeriveReq {
    const char *base;
    const P11EcdhParams *p;
    size_t value_len;
    const VhsmObjectSpec *spec;
    char got[24];
} DeriveReq;

static int derive_make(VhsmClient *c, const char *name, void *userdata) {
    DeriveReq *d = userdata;
    return vhsm_derive_key(c, d->base, d->p->point, d->p->point_len, d->p->kdf, d->p->shared,
                           d->p->shared_len, name, d->spec, d->value_len, d->got, sizeof d->got);
}

CK_RV C_DeriveKey(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                  CK_OBJECT_HANDLE hBaseKey, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulAttributeCount,
                  CK_OBJECT_HANDLE_PTR phKey) {
    SESSION_OR_RETURN(hSession);
    if (!pMechanism || !phKey || (!pTemplate && ulAttributeCount))
        return CKR_ARGUMENTS_BAD;
    P11Slot *s = slot_get(sess->slot);
    if (pMechanism->mechanism != CKM_ECDH1_DERIVE || !mech_find(s, pMechanism->mechanism))
        return CKR_MECHANISM_INVALID;
    unsigned role = 0;
    P11Key *bk = object_key(sess->slot, hBaseKey, &role);
    if (!bk)
        return CKR_KEY_HANDLE_INVALID;
    if (role != ROLE_PRIV || (bk->kind != KK_EC_P256 && bk->kind != KK_EC_P384))
        return CKR_KEY_TYPE_INCONSISTENT;
    P11EcdhParams p;
    CK_RV rv = p11_ecdh_params_parse(pMechanism, bk->kind == KK_EC_P256 ? 32 : 48, &p);
    if (rv != CKR_OK)
        return rv;
    {
        LOCKED(s->lock);
        if (bk->has_flags && !(bk->flags & VHSM_OBJ_DERIVE))
            return CKR_KEY_FUNCTION_NOT_PERMITTED;
    }
    P11KeyTemplate t;
    if ((rv = p11_key_template_parse(pTemplate, ulAttributeCount, &t)) != CKR_OK)
        return rv;
    if (!t.has_class) /* CKO_SECRET_KEY is implied by the mechanism */
        t.has_class = true, t.cls = CKO_SECRET_KEY;
    if (t.cls != CKO_SECRET_KEY)
        return CKR_TEMPLATE_INCONSISTENT;
    const char *vtype = NULL;
    KeyKind kind;
    if ((rv = new_key_type(&t, &vtype, &kind)) != CKR_OK)
        return rv;
    size_t value_len = t.value_len;
    if (value_len == 0) {
        if (t.key_type == CKK_AES)
            return CKR_TEMPLATE_INCOMPLETE; /* AES keys come in three lengths: say which */
        value_len = bk->kind == KK_EC_P256 ? 32 : 48; /* a generic secret: the field size */
        kind = value_len == 48 ? KK_HMAC_SHA384 : KK_HMAC_SHA256;
    }
    if ((t.key_type == CKK_AES && value_len != 16 && value_len != 24 && value_len != 32) ||
        (t.key_type == CKK_GENERIC_SECRET && value_len != 32 && value_len != 48))
        return CKR_TEMPLATE_INCONSISTENT; /* lengths vhsmd holds as keys it can use */
    if ((rv = new_key_check(sess, &t, kind)) != CKR_OK)
        return rv;
    VhsmAttr attrs[2];
    VhsmObjectSpec spec;
    new_key_spec(kind, &t, vtype, attrs, &spec);
    if (t.token == P11_TRI_FALSE)
        spec.flags |= VHSM_OBJ_SESSION;
    DeriveReq d = {.base = bk->name, .p = &p, .value_len = value_len, .spec = &spec};
    _cleanup_conn_ Conn x = {.slot = s};
    char full[160];
    x.r = conn_for_new_key(s, &t, bk, &x);
    if (x.r >= 0)
        x.r = make_named_key(x.c, &t, derive_make, &d, full);
    if (x.r == -EBADMSG || x.r == -EINVAL)
        return CKR_MECHANISM_PARAM_INVALID; /* the peer's point, or the KDF's parameters */
    if (x.r < 0)
        return wrap_rv(x.r,
                       x.r == -EEXIST || x.r == -EDQUOT || x.r == -ERANGE || x.r == -EMEDIUMTYPE
                           ? P11_CTX_CREATE
                           : P11_CTX_KEY);
    return adopt_new_key(s, x.c, full, d.got, "derived", phKey, sess->slot);
}

CK_RV C_SeedRandom(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSeed, CK_ULONG ulSeedLen) {
    SESSION_OR_RETURN(hSession);
    if (!pSeed && ulSeedLen)
        return CKR_ARGUMENTS_BAD;
    /* vhsmd's generator (OpenSSL's DRBG inside the VM) takes no seed from applications. */
    return CKR_RANDOM_SEED_NOT_SUPPORTED;
}

CK_RV C_GenerateRandom(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pRandomData, CK_ULONG ulRandomLen) {
    SESSION_OR_RETURN(hSession);
    if (!pRandomData && ulRandomLen)
        return CKR_ARGUMENTS_BAD;
    P11Slot *s = slot_get(sess->slot);
    _cleanup_conn_ Conn x = {.slot = s};
    x.r = conn_get(s, &x);
    for (CK_ULONG done = 0; x.r >= 0 && done < ulRandomLen;) {
        size_t n = MIN((size_t)(ulRandomLen - done), (size_t)P11_RANDOM_CHUNK);
        x.r = vhsm_random(x.c, pRandomData + done, n);
        done += n;
    }
    return p11_rv_from_errno(x.r, P11_CTX_GENERIC);
}

/* ---- cryptographic operations -------------------------------------------------------------- */

static CK_RV md_from_mech(CK_MECHANISM_TYPE m, const EVP_MD **ret) {
    switch (m) {
    case CKM_SHA_1:
        *ret = EVP_sha1();
        return CKR_OK;
    case CKM_SHA256:
        *ret = EVP_sha256();
        return CKR_OK;
    case CKM_SHA384:
        *ret = EVP_sha384();
        return CKR_OK;
    case CKM_SHA512:
        *ret = EVP_sha512();
        return CKR_OK;
    default:
        return CKR_MECHANISM_PARAM_INVALID;
    }
}

static CK_RV mgf_md(CK_RSA_PKCS_MGF_TYPE mgf, const EVP_MD **ret) {
    switch (mgf) {
    case CKG_MGF1_SHA1:
        *ret = EVP_sha1();
        return CKR_OK;
    case CKG_MGF1_SHA256:
        *ret = EVP_sha256();
        return CKR_OK;
    case CKG_MGF1_SHA384:
        *ret = EVP_sha384();
        return CKR_OK;
    case CKG_MGF1_SHA512:
        *ret = EVP_sha512();
        return CKR_OK;
    default:
        return CKR_MECHANISM_PARAM_INVALID;
    }
}

/* PSS parameters vhsmd can honour: SHA-256/384, MGF1 with the same hash, salt = hash length.
 * want: the hash the mechanism implies (NULL for CKM_RSA_PKCS_PSS). */
static CK_RV pss_params(const CK_MECHANISM *m, const EVP_MD *want, P11Op *op) {
    if (!m->pParameter || m->ulParameterLen != sizeof(CK_RSA_PKCS_PSS_PARAMS))
        return CKR_MECHANISM_PARAM_INVALID;
    const CK_RSA_PKCS_PSS_PARAMS *p = m->pParameter;
    const EVP_MD *md = NULL, *mgf = NULL;
    if (md_from_mech(p->hashAlg, &md) != CKR_OK || mgf_md(p->mgf, &mgf) != CKR_OK)
        return CKR_MECHANISM_PARAM_INVALID;
    if ((want && md != want) || mgf != md || (md != EVP_sha256() && md != EVP_sha384()) ||
        p->sLen != (CK_ULONG)EVP_MD_get_size(md))
        return CKR_MECHANISM_PARAM_INVALID;
    op->alg = md == EVP_sha256() ? "rsa-pss-sha256" : "rsa-pss-sha384";
    op->rsa_padding = RSA_PKCS1_PSS_PADDING;
    op->mgf1 = mgf;
    op->salt_len = (int)p->sLen;
    if (!want)
        op->md = NULL;
    return CKR_OK;
}

/* The hash a raw-digest mechanism's input must be (PSS without hashing, ECDSA): sets op->md to
 * NULL and remembers the expected length in op->len via the returned size. */
static size_t op_prehash_len(const P11Op *op) {
    if (op->mech == CKM_ECDSA)
        return op->key->kind == KK_EC_P256 ? 32 : 48;
    if (op->mech == CKM_RSA_PKCS_PSS)
        return op->alg[11] == '2' ? 32 : 48; /* "rsa-pss-sha256" / "rsa-pss-sha384" */
    return 0;
}

static CK_ULONG rsa_bytes(const P11Key *k) {
    return (k->bits + 7) / 8;
}

static CK_RV op_init(P11Session *sess, OpKind kind, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE hKey) {
    P11Op *op = &sess->op[kind];
    if (op->active)
        return CKR_OPERATION_ACTIVE;
    if (!m)
        return CKR_ARGUMENTS_BAD;
    const MechInfo *mi = mech_find(slot_get(sess->slot), m->mechanism);
    CK_FLAGS need = kind == OP_SIGN      ? CKF_SIGN
                    : kind == OP_VERIFY  ? CKF_VERIFY
                    : kind == OP_ENCRYPT ? CKF_ENCRYPT
                                         : CKF_DECRYPT;
    if (!mi || !(mi->flags & need))
        return CKR_MECHANISM_INVALID;
    unsigned role = 0;
    P11Key *k = object_key(sess->slot, hKey, &role);
    if (!k)
        return CKR_KEY_HANDLE_INVALID;
    bool secret = kind_is_secret(k->kind);
    /* The usage attributes: sign/decrypt with the private (or secret) key, verify/encrypt with
     * the public (or secret) key. */
    if (!secret && (role == ROLE_PRIV) != (kind == OP_SIGN || kind == OP_DECRYPT))
        return CKR_KEY_FUNCTION_NOT_PERMITTED;
    P11Op n = {.mech = m->mechanism, .key = k, .rsa_padding = RSA_PKCS1_PADDING};
    bool no_params = !m->pParameter && m->ulParameterLen == 0;
    CK_RV rv;
    switch (m->mechanism) {
    case CKM_ECDSA_SHA512:
    case CKM_ECDSA_SHA224:
        /* revision 2: hashed here, signed by vhsmd's ecdsa-raw (any hash length) */
        n.raw_ex = true;
        /* fall through */
    case CKM_ECDSA:
    case CKM_ECDSA_SHA256:
    case CKM_ECDSA_SHA384:
        if (k->kind != KK_EC_P256 && k->kind != KK_EC_P384)
            return CKR_KEY_TYPE_INCONSISTENT;
        if (k->bits < mi->min || k->bits > mi->max)
            return CKR_KEY_SIZE_RANGE;
        if (!no_params)
            return CKR_MECHANISM_PARAM_INVALID;
        n.alg = "ecdsa";
        n.flags = VHSM_OP_PREHASHED | VHSM_OP_RAW_RS;
        n.md = m->mechanism == CKM_ECDSA_SHA256   ? EVP_sha256()
               : m->mechanism == CKM_ECDSA_SHA384 ? EVP_sha384()
               : m->mechanism == CKM_ECDSA_SHA512 ? EVP_sha512()
               : m->mechanism == CKM_ECDSA_SHA224 ? EVP_sha224()
                                                  : NULL;
        n.out_len = k->kind == KK_EC_P256 ? 64 : 96;
        break;
    case CKM_EDDSA:
        if (k->kind != KK_ED25519)
            return CKR_KEY_TYPE_INCONSISTENT;
        /* CK_EDDSA_PARAMS {phFlag, ulContextDataLen, pContextData}: only pure Ed25519 */
        if (!no_params) {
            struct {
                CK_BBOOL ph;
                CK_ULONG ctx_len;
                CK_BYTE_PTR ctx;
            } p;
            if (!m->pParameter || m->ulParameterLen != sizeof(p))
                return CKR_MECHANISM_PARAM_INVALID;
            memcpy(&p, m->pParameter, sizeof(p));
            if (p.ph || p.ctx_len)
                return CKR_MECHANISM_PARAM_INVALID;
        }
        n.alg = "ed25519";
        n.flags = VHSM_OP_RAW;
        n.out_len = 64;
        break;
    case CKM_SHA512_RSA_PKCS:
    case CKM_SHA224_RSA_PKCS:
        /* revision 2: hashed here, the DigestInfo signed by vhsmd's rsa-pkcs1-raw */
        n.raw_ex = true;
        n.digestinfo = true;
        /* fall through */
    case CKM_RSA_PKCS:
    case CKM_SHA256_RSA_PKCS:
    case CKM_SHA384_RSA_PKCS:
        if (k->kind != KK_RSA)
            return CKR_KEY_TYPE_INCONSISTENT;
        if (!no_params)
            return CKR_MECHANISM_PARAM_INVALID;
        n.md = m->mechanism == CKM_SHA256_RSA_PKCS   ? EVP_sha256()
               : m->mechanism == CKM_SHA384_RSA_PKCS ? EVP_sha384()
               : m->mechanism == CKM_SHA512_RSA_PKCS ? EVP_sha512()
               : m->mechanism == CKM_SHA224_RSA_PKCS ? EVP_sha224()
                                                     : NULL;
        n.alg = n.md == EVP_sha384() ? "rsa-pkcs1-sha384" : "rsa-pkcs1-sha256";
        n.flags = VHSM_OP_PREHASHED | VHSM_OP_RAW;
        n.out_len = rsa_bytes(k);
        break;
    case CKM_RSA_PKCS_PSS:
    case CKM_SHA256_RSA_PKCS_PSS:
    case CKM_SHA384_RSA_PKCS_PSS:
    case CKM_SHA512_RSA_PKCS_PSS:
    case CKM_SHA224_RSA_PKCS_PSS:
        if (k->kind != KK_RSA)
            return CKR_KEY_TYPE_INCONSISTENT;
        n.md = m->mechanism == CKM_SHA256_RSA_PKCS_PSS   ? EVP_sha256()
               : m->mechanism == CKM_SHA384_RSA_PKCS_PSS ? EVP_sha384()
               : m->mechanism == CKM_SHA512_RSA_PKCS_PSS ? EVP_sha512()
               : m->mechanism == CKM_SHA224_RSA_PKCS_PSS ? EVP_sha224()
                                                         : NULL;
        if (mech_feature(mi) & VHSM_FEATURE_MECH_PARAMS) {
            /* free parameters, applied by vhsmd's rsa-pss */
            if ((rv = p11_pss_params(m, n.md, k->bits, &n.par)) != CKR_OK)
                return rv;
            n.alg = "rsa-pss";
            n.rsa_padding = RSA_PKCS1_PSS_PADDING;
            n.mgf1 = n.par.mgf;
            n.salt_len = (int)n.par.salt_len;
        } else if ((rv = pss_params(m, n.md, &n)) != CKR_OK)
            return rv;
        n.flags = VHSM_OP_PREHASHED | VHSM_OP_RAW;
        n.out_len = rsa_bytes(k);
        break;
    case CKM_SHA224_HMAC:
    case CKM_SHA512_HMAC:
    case CKM_SHA224_HMAC_GENERAL:
    case CKM_SHA256_HMAC_GENERAL:
    case CKM_SHA384_HMAC_GENERAL:
    case CKM_SHA512_HMAC_GENERAL:
    case CKM_SHA256_HMAC:
    case CKM_SHA384_HMAC:
        if (k->kind != KK_HMAC_SHA256 && k->kind != KK_HMAC_SHA384)
            return CKR_KEY_TYPE_INCONSISTENT;
        if (mech_feature(mi) & VHSM_FEATURE_MECH_PARAMS) {
            /* any hash with either key size, tag length chosen: vhsmd's hmac with parameters */
            if ((rv = p11_hmac_params(m, &n.par)) != CKR_OK)
                return rv;
            n.alg = "hmac";
            n.out_len = n.par.mac_len;
            break;
        }
        if ((m->mechanism == CKM_SHA256_HMAC) != (k->kind == KK_HMAC_SHA256))
            return CKR_KEY_SIZE_RANGE;
        if (!no_params)
            return CKR_MECHANISM_PARAM_INVALID;
        n.alg = "hmac";
        n.flags = VHSM_OP_RAW; /* the bare tag, as PKCS#11 wants */
        n.out_len = k->kind == KK_HMAC_SHA256 ? 32 : 48;
        break;
    case CKM_RSA_PKCS_OAEP: {
        if (k->kind != KK_RSA)
            return CKR_KEY_TYPE_INCONSISTENT;
        if (mech_feature(mi) & VHSM_FEATURE_MECH_PARAMS) {
            /* any hash and MGF1 hash, a label: vhsmd's rsa-oaep decrypts (and checks it) */
            if ((rv = p11_oaep_params(m, &n.par)) != CKR_OK)
                return rv;
            n.alg = "rsa-oaep";
            n.mgf1 = n.par.mgf;
            n.rsa_padding = RSA_PKCS1_OAEP_PADDING;
            n.salt_len = EVP_MD_get_size(n.par.md); /* hLen, for the plaintext bound */
            n.out_len = rsa_bytes(k);
            break;
        }
        if (!m->pParameter || m->ulParameterLen != sizeof(CK_RSA_PKCS_OAEP_PARAMS))
            return CKR_MECHANISM_PARAM_INVALID;
        const CK_RSA_PKCS_OAEP_PARAMS *p = m->pParameter;
        const EVP_MD *md = NULL, *mgf = NULL;
        if (md_from_mech(p->hashAlg, &md) != CKR_OK || mgf_md(p->mgf, &mgf) != CKR_OK ||
            md != mgf || (md != EVP_sha1() && md != EVP_sha256()))
            return CKR_MECHANISM_PARAM_INVALID;
        /* vhsmd revision 1 supports the empty label only */
        if ((p->source != 0 && p->source != CKZ_DATA_SPECIFIED) || p->ulSourceDataLen != 0)
            return CKR_MECHANISM_PARAM_INVALID;
        n.alg = md == EVP_sha1() ? "rsa-oaep-sha1" : "rsa-oaep-sha256";
        n.flags = VHSM_OP_RAW;
        n.mgf1 = md;
        n.md = NULL;
        n.rsa_padding = RSA_PKCS1_OAEP_PADDING;
        n.salt_len = EVP_MD_get_size(md); /* hLen, for the plaintext bound */
        n.out_len = rsa_bytes(k);
        break;
    }
    case CKM_AES_GCM: {
        if (k->kind != KK_AES)
            return CKR_KEY_TYPE_INCONSISTENT;
        if (!m->pParameter || m->ulParameterLen != sizeof(CK_GCM_PARAMS))
            return CKR_MECHANISM_PARAM_INVALID;
        const CK_GCM_PARAMS *p = m->pParameter;
        if (!p->pIv || p->ulIvLen == 0 || p->ulIvLen > sizeof(n.iv) || (p->ulAADLen && !p->pAAD) ||
            p->ulAADLen > P11_BUF_MAX || p->ulTagBits < 96 || p->ulTagBits > 128 ||
            p->ulTagBits % 8)
            return CKR_MECHANISM_PARAM_INVALID;
        memcpy(n.iv, p->pIv, p->ulIvLen);
        n.iv_len = p->ulIvLen;
        if (p->ulAADLen) {
            n.aad = malloc(p->ulAADLen);
            if (!n.aad)
                return CKR_HOST_MEMORY;
            memcpy(n.aad, p->pAAD, p->ulAADLen);
            n.aad_len = p->ulAADLen;
        }
        n.tag_bits = (uint32_t)p->ulTagBits;
        n.alg = "aes-gcm";
        break;
    }
    case CKM_AES_CBC:
    case CKM_AES_CBC_PAD:
        if (k->kind != KK_AES)
            return CKR_KEY_TYPE_INCONSISTENT;
        if (!m->pParameter || m->ulParameterLen != 16)
            return CKR_MECHANISM_PARAM_INVALID;
        memcpy(n.iv, m->pParameter, 16);
        n.iv_len = 16;
        n.alg = m->mechanism == CKM_AES_CBC ? "aes-cbc" : "aes-cbc-pad";
        break;
    case CKM_AES_CTR: {
        if (k->kind != KK_AES)
            return CKR_KEY_TYPE_INCONSISTENT;
        if (!m->pParameter || m->ulParameterLen != sizeof(CK_AES_CTR_PARAMS))
            return CKR_MECHANISM_PARAM_INVALID;
        const CK_AES_CTR_PARAMS *p = m->pParameter;
        if (p->ulCounterBits == 0 || p->ulCounterBits > 128)
            return CKR_MECHANISM_PARAM_INVALID;
        memcpy(n.iv, p->cb, 16);
        n.iv_len = 16;
        n.counter_bits = (uint32_t)p->ulCounterBits;
        n.alg = "aes-ctr";
        break;
    }
    default:
        return CKR_MECHANISM_INVALID;
    }
    if ((n.mech == CKM_ECDSA || n.mech == CKM_RSA_PKCS) && slot_revision(slot_get(sess->slot)) >= 2)
        n.raw_ex = true;
    {
        /* revision 2: the usage flags vhsmd enforces (CKA_SIGN, ...), checked up front,
         * after the mechanism fits the key */
        static const uint32_t need_flag[] = {[OP_SIGN] = VHSM_OBJ_SIGN,
                                             [OP_VERIFY] = VHSM_OBJ_VERIFY,
                                             [OP_ENCRYPT] = VHSM_OBJ_ENCRYPT,
                                             [OP_DECRYPT] = VHSM_OBJ_DECRYPT};
        P11Slot *s = slot_get(sess->slot);
        LOCKED(s->lock);
        if (k->has_flags && !(k->flags & need_flag[kind])) {
            free(n.aad);
            p11_par_done(&n.par);
            return CKR_KEY_FUNCTION_NOT_PERMITTED;
        }
    }
    if (n.md) {
        n.mdctx = EVP_MD_CTX_new();
        if (!n.mdctx || EVP_DigestInit_ex(n.mdctx, n.md, NULL) != 1) {
            EVP_MD_CTX_free(n.mdctx);
            p11_par_done(&n.par);
            return CKR_HOST_MEMORY;
        }
    }
    n.active = true;
    *op = n;
    return CKR_OK;
}

/* Mechanisms that hash or buffer in the module may be multi-part; the others are single-part
 * only (PKCS#11 mechanism table). */
static bool op_is_aes(const P11Op *op) {
    return op->mech == CKM_AES_GCM || op->mech == CKM_AES_CBC || op->mech == CKM_AES_CBC_PAD ||
           op->mech == CKM_AES_CTR;
}

static bool op_multipart(const P11Op *op) {
    return op->md || op->mech == CKM_EDDSA || p11_mech_is_hmac(op->mech) || op_is_aes(op);
}

static CK_RV op_update(P11Op *op, CK_BYTE_PTR data, CK_ULONG len) {
    if (!op->active)
        return CKR_OPERATION_NOT_INITIALIZED;
    CK_RV rv = CKR_OK;
    if (!data && len)
        rv = CKR_ARGUMENTS_BAD;
    else if (op->single)
        rv = CKR_OPERATION_ACTIVE;
    else if (!op_multipart(op))
        rv = CKR_FUNCTION_NOT_SUPPORTED;
    if (rv != CKR_OK) {
        op_reset(op);
        return rv;
    }
    op->multi = true;
    if (op->md) {
        if (len && EVP_DigestUpdate(op->mdctx, data, len) != 1) {
            op_reset(op);
            return CKR_FUNCTION_FAILED;
        }
        return CKR_OK;
    }
    if (len > P11_BUF_MAX - op->len) {
        op_reset(op);
        return CKR_DATA_LEN_RANGE;
    }
    if (op->len + len > op->cap) {
        size_t cap = MAX(op->cap * 2, op->len + len);
        cap = MIN(cap, (size_t)P11_BUF_MAX);
        uint8_t *b = malloc(cap); /* never realloc: the old buffer is wiped */
        if (!b) {
            op_reset(op);
            return CKR_HOST_MEMORY;
        }
        if (op->buf) {
            memcpy(b, op->buf, op->len);
            OPENSSL_cleanse(op->buf, op->cap);
            free(op->buf);
        }
        op->buf = b;
        op->cap = cap;
    }
    if (len)
        memcpy(op->buf + op->len, data, len);
    op->len += len;
    return CKR_OK;
}

/* The bytes to send for a sign/verify: the digest (hashed here), or the data. */
typedef struct OpInput {
    uint8_t md[EVP_MAX_MD_SIZE];
    const uint8_t *p;
    size_t n;
} OpInput;

static CK_RV op_input(P11Op *op, bool single, const uint8_t *data, size_t len, OpInput *in) {
    if (op->md) {
        unsigned n = 0;
        if ((single && len && EVP_DigestUpdate(op->mdctx, data, len) != 1) ||
            EVP_DigestFinal_ex(op->mdctx, in->md, &n) != 1)
            return CKR_FUNCTION_FAILED;
        in->p = in->md;
        in->n = n;
        return CKR_OK;
    }
    in->p = single ? data : op->buf;
    in->n = single ? len : op->len;
    if (!in->p)
        in->p = (const uint8_t *)"";
    if (op->raw_ex && !op->md) {
        /* ECDSA: a hash of 1..64 bytes (truncated as FIPS 186 says); PKCS#1 v1.5: at most
         * k - 11 bytes */
        size_t max = op->mech == CKM_ECDSA ? 64 : rsa_bytes(op->key) - 11;
        return in->n >= 1 && in->n <= max ? CKR_OK : CKR_DATA_LEN_RANGE;
    }
    size_t want = op->par.on && op->mech == CKM_RSA_PKCS_PSS ? (size_t)EVP_MD_get_size(op->par.md)
                                                             : op_prehash_len(op);
    if (want && in->n != want)
        return CKR_DATA_LEN_RANGE;
    return CKR_OK;
}

/* CKM_RSA_PKCS signing with revision 1: the input must be a DigestInfo of SHA-256 or SHA-384,
 * which vhsmd signs as a prehash. Returns the algorithm and points at the digest. */
static CK_RV rsa_pkcs_digestinfo(OpInput *in, const char **ret_alg) {
    static const uint8_t p256[] = {0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                   0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20};
    static const uint8_t p384[] = {0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01,
                                   0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30};
    if (in->n == sizeof(p256) + 32 && memcmp(in->p, p256, sizeof(p256)) == 0) {
        in->p += sizeof(p256);
        in->n = 32;
        *ret_alg = "rsa-pkcs1-sha256";
        return CKR_OK;
    }
    if (in->n == sizeof(p384) + 48 && memcmp(in->p, p384, sizeof(p384)) == 0) {
        in->p += sizeof(p384);
        in->n = 48;
        *ret_alg = "rsa-pkcs1-sha384";
        return CKR_OK;
    }
    return CKR_DATA_INVALID;
}

static CK_RV sign_finish(P11Session *sess, P11Op *op, bool single, const uint8_t *data, size_t len,
                         CK_BYTE_PTR sig, CK_ULONG_PTR siglen) {
    if (!op->active)
        return CKR_OPERATION_NOT_INITIALIZED;
    CK_RV rv = finish_args(op, single, data, len, siglen);
    if (rv != CKR_OK)
        return op_fail(op, rv);
    if (!op_out_room(op, single, sig, siglen, op->out_len, &rv))
        return rv;
    OpInput in = {0};
    rv = op_input(op, single, data, len, &in);
    const char *alg = op->alg;
    if (rv == CKR_OK && op->mech == CKM_RSA_PKCS && !op->raw_ex)
        rv = rsa_pkcs_digestinfo(&in, &alg);
    if (rv != CKR_OK) {
        op_reset(op);
        return rv;
    }
    P11Slot *s = slot_get(sess->slot);
    _cleanup_conn_ Conn x = {.slot = s};
    _cleanup_free_ uint8_t *out = NULL;
    size_t out_len = 0;
    uint8_t di[19 + EVP_MAX_MD_SIZE];
    if (op->digestinfo) {
        /* CKM_SHA224/512_RSA_PKCS: vhsmd pads the DigestInfo built here */
        size_t pl = 0;
        const uint8_t *pre = p11_digestinfo_prefix(op->md, &pl);
        if (!pre || pl + in.n > sizeof(di)) {
            op_reset(op);
            return CKR_GENERAL_ERROR;
        }
        memcpy(di, pre, pl);
        memcpy(di + pl, in.p, in.n);
        in.p = di;
        in.n += pl;
    }
    VhsmParams vp = {.hash = op->par.hash,
                     .mgf_hash = op->par.mgf_hash,
                     .salt_len = op->par.salt_len,
                     .tag_bits = op->par.mac_len * 8};
    x.r = conn_get_for(s, op->key, &x);
    if (x.r >= 0 && op->par.on)
        x.r = vhsm_sign_ex(x.c, op->key->name, op->alg, 0, &vp, in.p, in.n, &out, &out_len);
    else if (x.r >= 0 && op->raw_ex)
        x.r = vhsm_sign_ex(x.c, op->key->name,
                           kind_is_ec(op->key->kind) ? "ecdsa-raw" : "rsa-pkcs1-raw", 0, NULL, in.p,
                           in.n, &out, &out_len);
    else if (x.r >= 0)
        x.r = vhsm_sign(x.c, op->key->name, alg, op->flags, in.p, in.n, &out, &out_len);
    OPENSSL_cleanse(&in, sizeof(in));
    op_reset(op);
    if (x.r < 0)
        return p11_rv_from_errno(x.r, P11_CTX_KEY);
    if (out_len > *siglen)
        return CKR_DEVICE_ERROR;
    memcpy(sig, out, out_len);
    *siglen = out_len;
    return CKR_OK;
}

/* Verification of an asymmetric signature with the public key, here (public values only). */
static CK_RV verify_local(P11Slot *s, P11Op *op, const OpInput *in, const uint8_t *sig,
                          size_t siglen) {
    int r = 0;
    EVP_PKEY *pk = key_pub(s, op->key, &r);
    if (!pk)
        return p11_rv_from_errno(r, P11_CTX_KEY);
    if (siglen != op->out_len)
        return CKR_SIGNATURE_LEN_RANGE;
    if (op->mech == CKM_EDDSA) {
        _cleanup_(EVP_MD_CTX_freep) EVP_MD_CTX *c = EVP_MD_CTX_new();
        if (!c || EVP_DigestVerifyInit(c, NULL, NULL, NULL, pk) != 1)
            return CKR_HOST_MEMORY;
        return EVP_DigestVerify(c, sig, siglen, in->p, in->n) == 1 ? CKR_OK : CKR_SIGNATURE_INVALID;
    }
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    if (!c || EVP_PKEY_verify_init(c) != 1)
        return CKR_HOST_MEMORY;
    _cleanup_free_ uint8_t *der = NULL;
    const uint8_t *vsig = sig;
    size_t vlen = siglen;
    if (op->key->kind == KK_EC_P256 || op->key->kind == KK_EC_P384) {
        _cleanup_(ECDSA_SIG_freep) ECDSA_SIG *es = ECDSA_SIG_new();
        BIGNUM *br = BN_bin2bn(sig, (int)siglen / 2, NULL);
        BIGNUM *bs = BN_bin2bn(sig + siglen / 2, (int)siglen / 2, NULL);
        if (!es || !br || !bs || ECDSA_SIG_set0(es, br, bs) != 1) {
            BN_free(br);
            BN_free(bs);
            return CKR_HOST_MEMORY;
        }
        uint8_t *p = NULL;
        int n = i2d_ECDSA_SIG(es, &p);
        if (n <= 0)
            return CKR_HOST_MEMORY;
        der = malloc((size_t)n);
        if (!der) {
            OPENSSL_free(p);
            return CKR_HOST_MEMORY;
        }
        memcpy(der, p, (size_t)n);
        OPENSSL_free(p);
        vsig = der;
        vlen = (size_t)n;
    } else {
        if (EVP_PKEY_CTX_set_rsa_padding(c, op->rsa_padding) != 1)
            return CKR_FUNCTION_FAILED;
        const EVP_MD *md = op->md;
        if (!md && op->mech == CKM_RSA_PKCS_PSS)
            md = op->par.on ? op->par.md : op->mgf1;
        if (md && EVP_PKEY_CTX_set_signature_md(c, md) != 1)
            return CKR_FUNCTION_FAILED;
        if (op->rsa_padding == RSA_PKCS1_PSS_PADDING &&
            (EVP_PKEY_CTX_set_rsa_mgf1_md(c, op->mgf1) != 1 ||
             EVP_PKEY_CTX_set_rsa_pss_saltlen(c, op->salt_len) != 1))
            return CKR_FUNCTION_FAILED;
    }
    return EVP_PKEY_verify(c, vsig, vlen, in->p, in->n) == 1 ? CKR_OK : CKR_SIGNATURE_INVALID;
}

static CK_RV verify_finish(P11Session *sess, P11Op *op, bool single, const uint8_t *data,
                           size_t len, CK_BYTE_PTR sig, CK_ULONG siglen) {
    if (!op->active)
        return CKR_OPERATION_NOT_INITIALIZED;
    CK_RV rv = finish_args(op, single, data, len, sig || !siglen);
    OpInput in = {0};
    if (rv == CKR_OK)
        rv = op_input(op, single, data, len, &in);
    P11Slot *s = slot_get(sess->slot);
    if (rv == CKR_OK) {
        if (p11_mech_is_hmac(op->mech)) {
            if (siglen != op->out_len)
                rv = CKR_SIGNATURE_LEN_RANGE;
            else {
                _cleanup_conn_ Conn x = {.slot = s};
                VhsmParams vp = {.hash = op->par.hash, .tag_bits = op->par.mac_len * 8};
                x.r = conn_get_for(s, op->key, &x);
                if (x.r >= 0 && op->par.on) /* compared in constant time inside vhsmd */
                    x.r =
                        vhsm_verify_ex(x.c, op->key->name, "hmac", 0, &vp, in.p, in.n, sig, siglen);
                else if (x.r >= 0)
                    x.r = vhsm_verify(x.c, op->key->name, op->alg, op->flags, 0, in.p, in.n, sig,
                                      siglen);
                rv = p11_rv_from_errno(x.r, P11_CTX_VERIFY);
            }
        } else
            rv = verify_local(s, op, &in, sig, siglen);
    }
    OPENSSL_cleanse(&in, sizeof(in));
    op_reset(op);
    return rv;
}

CK_RV C_SignInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
    SESSION_OR_RETURN(hSession);
    return op_init(sess, OP_SIGN, pMechanism, hKey);
}

CK_RV C_Sign(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
             CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen) {
    SESSION_OR_RETURN(hSession);
    return sign_finish(sess, &sess->op[OP_SIGN], true, pData, ulDataLen, pSignature,
                       pulSignatureLen);
}

CK_RV C_SignUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen) {
    SESSION_OR_RETURN(hSession);
    return op_update(&sess->op[OP_SIGN], pPart, ulPartLen);
}

CK_RV C_SignFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature,
                  CK_ULONG_PTR pulSignatureLen) {
    SESSION_OR_RETURN(hSession);
    return sign_finish(sess, &sess->op[OP_SIGN], false, NULL, 0, pSignature, pulSignatureLen);
}

CK_RV C_SignRecoverInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                        CK_OBJECT_HANDLE hKey) {
    SESSION_OR_RETURN(hSession);
    return pMechanism ? CKR_MECHANISM_INVALID : CKR_ARGUMENTS_BAD;
}

CK_RV C_SignRecover(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                    CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen) {
    SESSION_OR_RETURN(hSession);
    return CKR_OPERATION_NOT_INITIALIZED;
}

CK_RV C_VerifyInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey) {
    SESSION_OR_RETURN(hSession);
    return op_init(sess, OP_VERIFY, pMechanism, hKey);
}

CK_RV C_Verify(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
               CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen) {
    SESSION_OR_RETURN(hSession);
    return verify_finish(sess, &sess->op[OP_VERIFY], true, pData, ulDataLen, pSignature,
                         ulSignatureLen);
}

CK_RV C_VerifyUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen) {
    SESSION_OR_RETURN(hSession);
    return op_update(&sess->op[OP_VERIFY], pPart, ulPartLen);
}

CK_RV C_VerifyFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen) {
    SESSION_OR_RETURN(hSession);
    return verify_finish(sess, &sess->op[OP_VERIFY], false, NULL, 0, pSignature, ulSignatureLen);
}

CK_RV C_VerifyRecoverInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                          CK_OBJECT_HANDLE hKey) {
    SESSION_OR_RETURN(hSession);
    return pMechanism ? CKR_MECHANISM_INVALID : CKR_ARGUMENTS_BAD;
}

CK_RV C_VerifyRecover(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature, CK_ULONG ulSignatureLen,
                      CK_BYTE_PTR pData, CK_ULONG_PTR pulDataLen) {
    SESSION_OR_RETURN(hSession);
    return CKR_OPERATION_NOT_INITIALIZED;
}

/* ---- encryption ---------------------------------------------------------------------------- */

/* ---- AES (revision 2): the whole input is collected, one request at the end ----------------- */

/* The output size of an AES operation over n input bytes: exact, except for CBC-PAD decryption
 * (a bound: the padding is known only once decrypted). */
static CK_RV aes_out_len(const P11Op *op, bool encrypt, size_t n, CK_ULONG *ret) {
    size_t tag = op->tag_bits / 8;
    switch (op->mech) {
    case CKM_AES_GCM:
        if (!encrypt && n < tag)
            return CKR_ENCRYPTED_DATA_LEN_RANGE;
        *ret = encrypt ? n + tag : n - tag;
        return CKR_OK;
    case CKM_AES_CBC:
        if (n % 16)
            return encrypt ? CKR_DATA_LEN_RANGE : CKR_ENCRYPTED_DATA_LEN_RANGE;
        *ret = n;
        return CKR_OK;
    case CKM_AES_CBC_PAD:
        if (!encrypt && (n == 0 || n % 16))
            return CKR_ENCRYPTED_DATA_LEN_RANGE;
        *ret = encrypt ? (n / 16 + 1) * 16 : n;
        return CKR_OK;
    default: /* CTR */
        *ret = n;
        return CKR_OK;
    }
}

/* Ends an AES operation: single-part (data given) or the collected parts. Length queries and a
 * short buffer keep it active. */
static CK_RV aes_finish(P11Session *sess, P11Op *op, bool encrypt, bool single, const uint8_t *data,
                        size_t len, CK_BYTE_PTR out, CK_ULONG_PTR out_len) {
    if (!op->active)
        return CKR_OPERATION_NOT_INITIALIZED;
    CK_RV rv = finish_args(op, single, data, len, out_len);
    const uint8_t *in = single ? data : op->buf;
    size_t n = single ? len : op->len;
    CK_ULONG need = 0;
    if (rv == CKR_OK && n > P11_BUF_MAX)
        rv = encrypt ? CKR_DATA_LEN_RANGE : CKR_ENCRYPTED_DATA_LEN_RANGE;
    if (rv == CKR_OK)
        rv = aes_out_len(op, encrypt, n, &need);
    if (rv != CKR_OK)
        return op_fail(op, rv);
    if (!op_out_room(op, single, out, out_len, need, &rv))
        return rv;
    VhsmParams p = {.iv = op->iv,
                    .iv_len = op->iv_len,
                    .aad = op->aad,
                    .aad_len = op->aad_len,
                    .tag_bits = op->tag_bits,
                    .counter_bits = op->counter_bits};
    P11Slot *s = slot_get(sess->slot);
    _cleanup_conn_ Conn x = {.slot = s};
    uint8_t *res = NULL;
    size_t res_len = 0;
    x.r = conn_get_for(s, op->key, &x);
    if (x.r >= 0)
        x.r = (encrypt ? vhsm_encrypt_ex : vhsm_decrypt_ex)(
            x.c, op->key->name, op->alg, &p, in ? in : (const uint8_t *)"", n, &res, &res_len);
    op_reset(op);
    if (x.r < 0)
        return p11_rv_from_errno(x.r, encrypt ? P11_CTX_KEY : P11_CTX_DECRYPT);
    if (res_len > *out_len) {
        vhsm_free_secret(res, res_len);
        return CKR_DEVICE_ERROR;
    }
    if (res_len)
        memcpy(out, res, res_len);
    *out_len = res_len;
    vhsm_free_secret(res, res_len);
    return CKR_OK;
}

/* An update of a collecting operation: no output yet. */
static CK_RV aes_update(P11Op *op, CK_BYTE_PTR in, CK_ULONG len, CK_ULONG_PTR out_len) {
    if (!op->active)
        return CKR_OPERATION_NOT_INITIALIZED;
    if (!out_len) {
        op_reset(op);
        return CKR_ARGUMENTS_BAD;
    }
    CK_RV rv = op_update(op, in, len);
    if (rv == CKR_OK)
        *out_len = 0;
    return rv;
}

CK_RV C_EncryptInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                    CK_OBJECT_HANDLE hKey) {
    SESSION_OR_RETURN(hSession);
    return op_init(sess, OP_ENCRYPT, pMechanism, hKey);
}

/* The largest OAEP plaintext: k - 2 hLen - 2. */
static CK_ULONG oaep_max(const P11Op *op) {
    return op->out_len - 2 * (CK_ULONG)op->salt_len - 2;
}

CK_RV C_Encrypt(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
                CK_BYTE_PTR pEncryptedData, CK_ULONG_PTR pulEncryptedDataLen) {
    SESSION_OR_RETURN(hSession);
    P11Op *op = &sess->op[OP_ENCRYPT];
    if (!op->active)
        return CKR_OPERATION_NOT_INITIALIZED;
    if (op_is_aes(op))
        return aes_finish(sess, op, true, true, pData, ulDataLen, pEncryptedData,
                          pulEncryptedDataLen);
    CK_RV rv = CKR_OK;
    if (!pulEncryptedDataLen || (!pData && ulDataLen))
        rv = CKR_ARGUMENTS_BAD;
    else if (ulDataLen > oaep_max(op))
        rv = CKR_DATA_LEN_RANGE;
    if (rv != CKR_OK)
        return op_fail(op, rv);
    if (!out_room(pEncryptedData, pulEncryptedDataLen, op->out_len, &rv))
        return rv;
    /* RSA-OAEP encryption needs only the public key: done here. */
    int r = 0;
    EVP_PKEY *pk = key_pub(slot_get(sess->slot), op->key, &r);
    if (!pk) {
        op_reset(op);
        return p11_rv_from_errno(r, P11_CTX_KEY);
    }
    _cleanup_(EVP_PKEY_CTX_freep) EVP_PKEY_CTX *c = EVP_PKEY_CTX_new_from_pkey(NULL, pk, NULL);
    size_t outlen = *pulEncryptedDataLen;
    bool ok = c && EVP_PKEY_encrypt_init(c) == 1 &&
              EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) == 1 &&
              EVP_PKEY_CTX_set_rsa_oaep_md(c, op->par.on ? op->par.md : op->mgf1) == 1 &&
              EVP_PKEY_CTX_set_rsa_mgf1_md(c, op->mgf1) == 1;
    if (ok && op->par.label_len) {
        /* the context owns the label once set0 succeeded */
        void *label = OPENSSL_memdup(op->par.label, op->par.label_len);
        ok = label && EVP_PKEY_CTX_set0_rsa_oaep_label(c, label, (int)op->par.label_len) == 1;
        if (!ok)
            OPENSSL_free(label);
    }
    if (!ok || EVP_PKEY_encrypt(c, pEncryptedData, &outlen, pData ? pData : (CK_BYTE_PTR) "",
                                ulDataLen) != 1)
        rv = CKR_FUNCTION_FAILED;
    else
        *pulEncryptedDataLen = outlen;
    op_reset(op);
    return rv;
}

CK_RV C_EncryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                      CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen) {
    SESSION_OR_RETURN(hSession);
    P11Op *op = &sess->op[OP_ENCRYPT];
    if (!op->active)
        return CKR_OPERATION_NOT_INITIALIZED;
    if (op_is_aes(op))
        return aes_update(op, pPart, ulPartLen, pulEncryptedPartLen);
    op_reset(op);
    return CKR_FUNCTION_NOT_SUPPORTED; /* RSA-OAEP is single-part */
}

CK_RV C_EncryptFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastEncryptedPart,
                     CK_ULONG_PTR pulLastEncryptedPartLen) {
    SESSION_OR_RETURN(hSession);
    P11Op *op = &sess->op[OP_ENCRYPT];
    if (!op->active)
        return CKR_OPERATION_NOT_INITIALIZED;
    if (op_is_aes(op))
        return aes_finish(sess, op, true, false, NULL, 0, pLastEncryptedPart,
                          pulLastEncryptedPartLen);
    op_reset(op);
    return CKR_FUNCTION_NOT_SUPPORTED;
}

CK_RV C_DecryptInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism,
                    CK_OBJECT_HANDLE hKey) {
    SESSION_OR_RETURN(hSession);
    return op_init(sess, OP_DECRYPT, pMechanism, hKey);
}

CK_RV C_Decrypt(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedData, CK_ULONG ulEncryptedDataLen,
                CK_BYTE_PTR pData, CK_ULONG_PTR pulDataLen) {
    SESSION_OR_RETURN(hSession);
    P11Op *op = &sess->op[OP_DECRYPT];
    if (!op->active)
        return CKR_OPERATION_NOT_INITIALIZED;
    if (op_is_aes(op))
        return aes_finish(sess, op, false, true, pEncryptedData, ulEncryptedDataLen, pData,
                          pulDataLen);
    CK_RV rv = CKR_OK;
    if (!pulDataLen || (!pEncryptedData && ulEncryptedDataLen))
        rv = CKR_ARGUMENTS_BAD;
    else if (ulEncryptedDataLen != op->out_len)
        rv = CKR_ENCRYPTED_DATA_LEN_RANGE;
    if (rv != CKR_OK)
        return op_fail(op, rv);
    /* The plaintext's length is known only after decryption: ask for room for the largest,
     * so that no plaintext ever waits in the module for a second call. */
    if (!out_room(pData, pulDataLen, oaep_max(op), &rv))
        return rv;
    P11Slot *s = slot_get(sess->slot);
    _cleanup_conn_ Conn x = {.slot = s};
    uint8_t *out = NULL;
    size_t out_len = 0;
    VhsmParams vp = {.hash = op->par.hash,
                     .mgf_hash = op->par.mgf_hash,
                     .label = op->par.label,
                     .label_len = op->par.label_len};
    x.r = conn_get_for(s, op->key, &x);
    if (x.r >= 0 && op->par.on) /* vhsmd checks the label */
        x.r = vhsm_decrypt_ex(x.c, op->key->name, "rsa-oaep", &vp, pEncryptedData,
                              ulEncryptedDataLen, &out, &out_len);
    else if (x.r >= 0)
        x.r = vhsm_decrypt(x.c, op->key->name, op->alg, op->flags, 0, pEncryptedData,
                           ulEncryptedDataLen, NULL, 0, &out, &out_len);
    op_reset(op);
    if (x.r < 0)
        return p11_rv_from_errno(x.r, P11_CTX_DECRYPT);
    if (out_len > *pulDataLen) {
        vhsm_free_secret(out, out_len);
        return CKR_DEVICE_ERROR;
    }
    if (out_len)
        memcpy(pData, out, out_len);
    *pulDataLen = out_len;
    vhsm_free_secret(out, out_len);
    return CKR_OK;
}

CK_RV C_DecryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart,
                      CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart, CK_ULONG_PTR pulPartLen) {
    SESSION_OR_RETURN(hSession);
    P11Op *op = &sess->op[OP_DECRYPT];
    if (!op->active)
        return CKR_OPERATION_NOT_INITIALIZED;
    if (op_is_aes(op))
        return aes_update(op, pEncryptedPart, ulEncryptedPartLen, pulPartLen);
    op_reset(op);
    return CKR_FUNCTION_NOT_SUPPORTED;
}

CK_RV C_DecryptFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pLastPart,
                     CK_ULONG_PTR pulLastPartLen) {
    SESSION_OR_RETURN(hSession);
    P11Op *op = &sess->op[OP_DECRYPT];
    if (!op->active)
        return CKR_OPERATION_NOT_INITIALIZED;
    if (op_is_aes(op))
        return aes_finish(sess, op, false, false, NULL, 0, pLastPart, pulLastPartLen);
    op_reset(op);
    return CKR_FUNCTION_NOT_SUPPORTED;
}

/* ---- digests (in the module: no key involved) --------------------------------------------- */

CK_RV C_DigestInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism) {
    SESSION_OR_RETURN(hSession);
    P11Op *op = &sess->op[OP_DIGEST];
    if (op->active)
        return CKR_OPERATION_ACTIVE;
    if (!pMechanism)
        return CKR_ARGUMENTS_BAD;
    const MechInfo *mi = mech_find(slot_get(sess->slot), pMechanism->mechanism);
    const EVP_MD *md = NULL;
    if (!mi || !(mi->flags & CKF_DIGEST) || md_from_mech(pMechanism->mechanism, &md) != CKR_OK)
        return CKR_MECHANISM_INVALID;
    if (pMechanism->pParameter || pMechanism->ulParameterLen)
        return CKR_MECHANISM_PARAM_INVALID;
    P11Op n = {.mech = pMechanism->mechanism, .md = md, .out_len = EVP_MD_get_size(md)};
    n.mdctx = EVP_MD_CTX_new();
    if (!n.mdctx || EVP_DigestInit_ex(n.mdctx, md, NULL) != 1) {
        EVP_MD_CTX_free(n.mdctx);
        return CKR_HOST_MEMORY;
    }
    n.active = true;
    *op = n;
    return CKR_OK;
}

static CK_RV digest_finish(P11Op *op, bool single, CK_BYTE_PTR data, CK_ULONG len, CK_BYTE_PTR out,
                           CK_ULONG_PTR outlen) {
    if (!op->active)
        return CKR_OPERATION_NOT_INITIALIZED;
    CK_RV rv = finish_args(op, single, data, len, outlen);
    if (rv != CKR_OK)
        return op_fail(op, rv);
    if (!op_out_room(op, single, out, outlen, op->out_len, &rv))
        return rv;
    unsigned n = 0;
    if ((single && len && EVP_DigestUpdate(op->mdctx, data, len) != 1) ||
        EVP_DigestFinal_ex(op->mdctx, out, &n) != 1)
        rv = CKR_FUNCTION_FAILED;
    else
        *outlen = n;
    op_reset(op);
    return rv;
}

CK_RV C_Digest(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
               CK_BYTE_PTR pDigest, CK_ULONG_PTR pulDigestLen) {
    SESSION_OR_RETURN(hSession);
    return digest_finish(&sess->op[OP_DIGEST], true, pData, ulDataLen, pDigest, pulDigestLen);
}

CK_RV C_DigestUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen) {
    SESSION_OR_RETURN(hSession);
    return op_update(&sess->op[OP_DIGEST], pPart, ulPartLen);
}

CK_RV C_DigestKey(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hKey) {
    SESSION_OR_RETURN(hSession);
    P11Op *op = &sess->op[OP_DIGEST];
    if (!op->active)
        return CKR_OPERATION_NOT_INITIALIZED;
    unsigned role = 0;
    if (!object_key(sess->slot, hKey, &role)) {
        op_reset(op);
        return CKR_KEY_HANDLE_INVALID;
    }
    op_reset(op);
    return CKR_KEY_INDIGESTIBLE; /* key values never leave vhsmd */
}

CK_RV C_DigestFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pDigest, CK_ULONG_PTR pulDigestLen) {
    SESSION_OR_RETURN(hSession);
    return digest_finish(&sess->op[OP_DIGEST], false, NULL, 0, pDigest, pulDigestLen);
}

/* Dual-function operations: not offered (no mechanism here supports them). */
CK_RV C_DigestEncryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                            CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen) {
    SESSION_OR_RETURN(hSession);
    return CKR_FUNCTION_NOT_SUPPORTED;
}
CK_RV C_DecryptDigestUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart,
                            CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart,
                            CK_ULONG_PTR pulPartLen) {
    SESSION_OR_RETURN(hSession);
    return CKR_FUNCTION_NOT_SUPPORTED;
}
CK_RV C_SignEncryptUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen,
                          CK_BYTE_PTR pEncryptedPart, CK_ULONG_PTR pulEncryptedPartLen) {
    SESSION_OR_RETURN(hSession);
    return CKR_FUNCTION_NOT_SUPPORTED;
}
CK_RV C_DecryptVerifyUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pEncryptedPart,
                            CK_ULONG ulEncryptedPartLen, CK_BYTE_PTR pPart,
                            CK_ULONG_PTR pulPartLen) {
    SESSION_OR_RETURN(hSession);
    return CKR_FUNCTION_NOT_SUPPORTED;
}

CK_RV C_GetFunctionStatus(CK_SESSION_HANDLE hSession) {
    SESSION_OR_RETURN(hSession);
    return CKR_FUNCTION_NOT_PARALLEL;
}

CK_RV C_CancelFunction(CK_SESSION_HANDLE hSession) {
    SESSION_OR_RETURN(hSession);
    return CKR_FUNCTION_NOT_PARALLEL;
}

/* ---- PKCS#11 3.0 additions ----------------------------------------------------------------- */

static CK_RV C_LoginUser(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType, CK_UTF8CHAR_PTR pPin,
                         CK_ULONG ulPinLen, CK_UTF8CHAR_PTR pUsername, CK_ULONG ulUsernameLen) {
    if (pUsername || ulUsernameLen) {
        SESSION_OR_RETURN(hSession);
        return CKR_ARGUMENTS_BAD; /* tokens have no named users */
    }
    return C_Login(hSession, userType, pPin, ulPinLen);
}

static CK_RV C_SessionCancel(CK_SESSION_HANDLE hSession, CK_FLAGS flags) {
    SESSION_OR_RETURN(hSession);
    static const struct {
        CK_FLAGS f;
        OpKind k;
    } map[] = {{CKF_SIGN, OP_SIGN},
               {CKF_VERIFY, OP_VERIFY},
               {CKF_ENCRYPT, OP_ENCRYPT},
               {CKF_DECRYPT, OP_DECRYPT},
               {CKF_DIGEST, OP_DIGEST}};
    for (size_t i = 0; i < ELEMENTSOF(map); i++)
        if (flags & map[i].f)
            op_reset(&sess->op[map[i].k]);
    if (flags & CKF_FIND_OBJECTS) {
        free(sess->found);
        sess->found = NULL;
        sess->n_found = sess->found_pos = 0;
        sess->find_active = false;
    }
    return CKR_OK;
}

/* Message-based functions: no message mechanism is offered. */
#define MSG_STUB(name, ...)                                                                        \
    static CK_RV name(CK_SESSION_HANDLE hSession, __VA_ARGS__) {                                   \
        SESSION_OR_RETURN(hSession);                                                               \
        return CKR_FUNCTION_NOT_SUPPORTED;                                                         \
    }
#define MSG_STUB0(name)                                                                            \
    static CK_RV name(CK_SESSION_HANDLE hSession) {                                                \
        SESSION_OR_RETURN(hSession);                                                               \
        return CKR_FUNCTION_NOT_SUPPORTED;                                                         \
    }
MSG_STUB(C_MessageEncryptInit, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
MSG_STUB(C_EncryptMessage, CK_VOID_PTR p, CK_ULONG pl, CK_BYTE_PTR a, CK_ULONG al, CK_BYTE_PTR pt,
         CK_ULONG ptl, CK_BYTE_PTR ct, CK_ULONG_PTR ctl)
MSG_STUB(C_EncryptMessageBegin, CK_VOID_PTR p, CK_ULONG pl, CK_BYTE_PTR a, CK_ULONG al)
MSG_STUB(C_EncryptMessageNext, CK_VOID_PTR p, CK_ULONG pl, CK_BYTE_PTR pt, CK_ULONG ptl,
         CK_BYTE_PTR ct, CK_ULONG_PTR ctl, CK_FLAGS f)
MSG_STUB0(C_MessageEncryptFinal)
MSG_STUB(C_MessageDecryptInit, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
MSG_STUB(C_DecryptMessage, CK_VOID_PTR p, CK_ULONG pl, CK_BYTE_PTR a, CK_ULONG al, CK_BYTE_PTR ct,
         CK_ULONG ctl, CK_BYTE_PTR pt, CK_ULONG_PTR ptl)
MSG_STUB(C_DecryptMessageBegin, CK_VOID_PTR p, CK_ULONG pl, CK_BYTE_PTR a, CK_ULONG al)
MSG_STUB(C_DecryptMessageNext, CK_VOID_PTR p, CK_ULONG pl, CK_BYTE_PTR ct, CK_ULONG ctl,
         CK_BYTE_PTR pt, CK_ULONG_PTR ptl, CK_FLAGS f)
MSG_STUB0(C_MessageDecryptFinal)
MSG_STUB(C_MessageSignInit, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
MSG_STUB(C_SignMessage, CK_VOID_PTR p, CK_ULONG pl, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s,
         CK_ULONG_PTR sl)
MSG_STUB(C_SignMessageBegin, CK_VOID_PTR p, CK_ULONG pl)
MSG_STUB(C_SignMessageNext, CK_VOID_PTR p, CK_ULONG pl, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s,
         CK_ULONG_PTR sl)
MSG_STUB0(C_MessageSignFinal)
MSG_STUB(C_MessageVerifyInit, CK_MECHANISM_PTR m, CK_OBJECT_HANDLE k)
MSG_STUB(C_VerifyMessage, CK_VOID_PTR p, CK_ULONG pl, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s,
         CK_ULONG sl)
MSG_STUB(C_VerifyMessageBegin, CK_VOID_PTR p, CK_ULONG pl)
MSG_STUB(C_VerifyMessageNext, CK_VOID_PTR p, CK_ULONG pl, CK_BYTE_PTR d, CK_ULONG dl, CK_BYTE_PTR s,
         CK_ULONG sl)
MSG_STUB0(C_MessageVerifyFinal)

/* ---- function lists and interfaces --------------------------------------------------------- */

static CK_RV C_GetFunctionList_(CK_FUNCTION_LIST_PTR_PTR ppFunctionList);
static CK_RV C_GetInterfaceList_(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount);
static CK_RV C_GetInterface_(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
                             CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags);

#define FUNCTIONS_2_40                                                                             \
    C_Initialize, C_Finalize, C_GetInfo, C_GetFunctionList_, C_GetSlotList, C_GetSlotInfo,         \
        C_GetTokenInfo, C_GetMechanismList, C_GetMechanismInfo, C_InitToken, C_InitPIN, C_SetPIN,  \
        C_OpenSession, C_CloseSession, C_CloseAllSessions, C_GetSessionInfo, C_GetOperationState,  \
        C_SetOperationState, C_Login, C_Logout, C_CreateObject, C_CopyObject, C_DestroyObject,     \
        C_GetObjectSize, C_GetAttributeValue, C_SetAttributeValue, C_FindObjectsInit,              \
        C_FindObjects, C_FindObjectsFinal, C_EncryptInit, C_Encrypt, C_EncryptUpdate,              \
        C_EncryptFinal, C_DecryptInit, C_Decrypt, C_DecryptUpdate, C_DecryptFinal, C_DigestInit,   \
        C_Digest, C_DigestUpdate, C_DigestKey, C_DigestFinal, C_SignInit, C_Sign, C_SignUpdate,    \
        C_SignFinal, C_SignRecoverInit, C_SignRecover, C_VerifyInit, C_Verify, C_VerifyUpdate,     \
        C_VerifyFinal, C_VerifyRecoverInit, C_VerifyRecover, C_DigestEncryptUpdate,                \
        C_DecryptDigestUpdate, C_SignEncryptUpdate, C_DecryptVerifyUpdate, C_GenerateKey,          \
        C_GenerateKeyPair, C_WrapKey, C_UnwrapKey, C_DeriveKey, C_SeedRandom, C_GenerateRandom,    \
        C_GetFunctionStatus, C_CancelFunction, C_WaitForSlotEvent

static CK_FUNCTION_LIST function_list_2_40 = {{2, 40}, FUNCTIONS_2_40};

/* CK_FUNCTION_LIST_3_0 (PKCS#11 3.0 section 5.13): the 2.40 list followed by these. */
typedef struct FunctionList30 {
    CK_VERSION version;
    CK_C_Initialize f240[68];
    CK_RV (*C_GetInterfaceList)(CK_INTERFACE_PTR, CK_ULONG_PTR);
    CK_RV (*C_GetInterface)(CK_UTF8CHAR_PTR, CK_VERSION_PTR, CK_INTERFACE_PTR_PTR, CK_FLAGS);
    CK_RV(*C_LoginUser)
    (CK_SESSION_HANDLE, CK_USER_TYPE, CK_UTF8CHAR_PTR, CK_ULONG, CK_UTF8CHAR_PTR, CK_ULONG);
    CK_RV (*C_SessionCancel)(CK_SESSION_HANDLE, CK_FLAGS);
    void *message[20];
} FunctionList30;

_Static_assert(sizeof(CK_FUNCTION_LIST) == offsetof(FunctionList30, C_GetInterfaceList),
               "the 3.0 list extends the 2.40 list");

static FunctionList30 function_list_3_0;

static void function_list_3_0_fill(void) {
    /* The 2.40 part is the same table (same order, same functions). */
    memcpy(&function_list_3_0, &function_list_2_40, sizeof(function_list_2_40));
    function_list_3_0.version = (CK_VERSION){3, 0};
    function_list_3_0.C_GetInterfaceList = C_GetInterfaceList;
    function_list_3_0.C_GetInterface = C_GetInterface;
    function_list_3_0.C_LoginUser = C_LoginUser;
    function_list_3_0.C_SessionCancel = C_SessionCancel;
    void *msg[20] = {
        (void *)C_MessageEncryptInit,  (void *)C_EncryptMessage,      (void *)C_EncryptMessageBegin,
        (void *)C_EncryptMessageNext,  (void *)C_MessageEncryptFinal, (void *)C_MessageDecryptInit,
        (void *)C_DecryptMessage,      (void *)C_DecryptMessageBegin, (void *)C_DecryptMessageNext,
        (void *)C_MessageDecryptFinal, (void *)C_MessageSignInit,     (void *)C_SignMessage,
        (void *)C_SignMessageBegin,    (void *)C_SignMessageNext,     (void *)C_MessageSignFinal,
        (void *)C_MessageVerifyInit,   (void *)C_VerifyMessage,       (void *)C_VerifyMessageBegin,
        (void *)C_VerifyMessageNext,   (void *)C_MessageVerifyFinal,
    };
    memcpy(function_list_3_0.message, msg, sizeof(msg));
}

static pthread_once_t lists_once = PTHREAD_ONCE_INIT;

static CK_INTERFACE interfaces[2] = {
    {(CK_CHAR *)"PKCS 11", &function_list_3_0, CKF_INTERFACE_FORK_SAFE},
    {(CK_CHAR *)"PKCS 11", &function_list_2_40, CKF_INTERFACE_FORK_SAFE},
};

static CK_RV C_GetFunctionList_(CK_FUNCTION_LIST_PTR_PTR ppFunctionList) {
    if (!ppFunctionList)
        return CKR_ARGUMENTS_BAD;
    *ppFunctionList = &function_list_2_40;
    return CKR_OK;
}

static CK_RV C_GetInterfaceList_(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount) {
    (void)pthread_once(&lists_once, function_list_3_0_fill);
    if (!pulCount)
        return CKR_ARGUMENTS_BAD;
    if (!pInterfacesList) {
        *pulCount = ELEMENTSOF(interfaces);
        return CKR_OK;
    }
    if (*pulCount < ELEMENTSOF(interfaces)) {
        *pulCount = ELEMENTSOF(interfaces);
        return CKR_BUFFER_TOO_SMALL;
    }
    memcpy(pInterfacesList, interfaces, sizeof(interfaces));
    *pulCount = ELEMENTSOF(interfaces);
    return CKR_OK;
}

static CK_RV C_GetInterface_(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
                             CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags) {
    (void)pthread_once(&lists_once, function_list_3_0_fill);
    if (!ppInterface)
        return CKR_ARGUMENTS_BAD;
    for (size_t i = 0; i < ELEMENTSOF(interfaces); i++) {
        const CK_VERSION *v = interfaces[i].pFunctionList;
        if (pInterfaceName && strcmp((const char *)pInterfaceName, "PKCS 11") != 0)
            continue;
        if (pVersion && (pVersion->major != v->major || pVersion->minor != v->minor))
            continue;
        if ((interfaces[i].flags & flags) != flags)
            continue;
        *ppInterface = &interfaces[i];
        return CKR_OK;
    }
    return CKR_ARGUMENTS_BAD;
}

/* The exported entry points (libvhsm-pkcs11.map). */
EXPORT CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList) {
    return C_GetFunctionList_(ppFunctionList);
}

EXPORT CK_RV C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount) {
    return C_GetInterfaceList_(pInterfacesList, pulCount);
}

EXPORT CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
                            CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags) {
    return C_GetInterface_(pInterfaceName, pVersion, ppInterface, flags);
}
