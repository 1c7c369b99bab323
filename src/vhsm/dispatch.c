/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Request dispatch (see dispatch.h). Each handler parses its fields strictly (a required field
 * missing or of the wrong size is -EBADMSG, unknown tags are ignored for forward compatibility),
 * calls the vault, and appends its result TLVs to the response frame begun by
 * dispatch_request(). On failure the half-built frame is dropped (wiped) and an error frame
 * naming the key and the reason is appended instead.
 */
#include <errno.h>
#include <pthread.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jose/jwk.h>

#include "core/log.h"
#include "dispatch.h"
#include "token/ear.h"
#include "token/release.h"
#include "vhsm/transfer.h"
#include "vhsm/vault-par.h"
#include "vhsm/vault-wrap.h"
#include "vlog.h"

struct Dispatch {
    Vault *vault;
    _Atomic int64_t verdict_time;    /* 0 = none */
    _Atomic int64_t verdict_expires; /* the token's exp */
    /* Trust (dispatch_set_trust(), before serving; read-only afterwards). */
    json_t *kms_jwks;         /* pinned kmsd release keys, or NULL: IMPORT_RELEASE unsupported */
    json_t *attestd_jwks;     /* pinned attestd token keys, or NULL: ATTESTATION_SET unsupported */
    char *attestd_issuer;     /* required iss, or NULL */
    bool no_plaintext_import; /* OBJECT_CREATE with a VALUE refused */
    /* Key changes are serialised (the vault's mutation lock, held across the keystore's fsync):
     * a worker waiting for it serves nobody. Non-root key changes may occupy at most
     * max_mutating workers (all but one), so that key use by everyone else never waits for
     * other users' writes; beyond that they are refused as busy (libvhsm retries). */
    pthread_mutex_t gate_lock;
    unsigned mutating, max_mutating;
    struct {
        uid_t uid;
        unsigned n;
    } gate_uids[64]; /* non-root uids with a key change in flight (n > 0), at most one each */
    /* uids refused as busy, in the order of their first refusal: a free slot goes to the first
     * of them that asks again, so that the slot is shared in turn rather than won by whoever
     * retries fastest. An entry lapses when its uid has not asked for GATE_LAPSE_MS. */
    struct {
        uid_t uid;
        int64_t last_ms;
    } gate_queue[64];
    size_t gate_queued;
    DispatchKeyEventFn key_event; /* the agent channel: a key imported, a verdict recorded */
    void *key_event_userdata;
};

#define GATE_LAPSE_MS 500

int dispatch_new(Vault *vault, Dispatch **ret) {
    Dispatch *d = calloc(1, sizeof *d);
    if (!d)
        return -ENOMEM;
    d->vault = vault;
    atomic_init(&d->verdict_time, 0);
    atomic_init(&d->verdict_expires, 0);
    (void)pthread_mutex_init(&d->gate_lock, NULL);
    d->max_mutating = 1;
    *ret = d;
    return 0;
}

void dispatch_set_key_event(Dispatch *d, DispatchKeyEventFn fn, void *userdata) {
    d->key_event = fn;
    d->key_event_userdata = userdata;
}

static void key_event(Dispatch *d, const char *key, bool verdict) {
    if (d->key_event)
        d->key_event(d->key_event_userdata, key, verdict);
}

void dispatch_set_no_plaintext_import(Dispatch *d, bool refuse) {
    d->no_plaintext_import = refuse;
}

void dispatch_conn_closed(Dispatch *d, const Peer *peer) {
    if (d && peer && peer->conn_id)
        vault_session_objects_drop(d->vault, peer->conn_id);
}

void dispatch_set_workers(Dispatch *d, unsigned workers) {
    d->max_mutating = workers > 3 ? workers - 2 : workers > 1 ? workers - 1 : 1;
}

/* Admits a non-root key change: one in flight per uid (so that one user cannot hold every
 * changing slot, nor generate keys on several connections at once), and at most max_mutating in
 * all (workers left for key use). Returns NULL or the reason to answer busy. */
static int64_t gate_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void gate_queue_remove(Dispatch *d, size_t i) {
    memmove(&d->gate_queue[i], &d->gate_queue[i + 1],
            (d->gate_queued - i - 1) * sizeof d->gate_queue[0]);
    d->gate_queued--;
}

/* Whether uid may take a free slot now: nobody is waiting ahead of it. Refreshes uid's entry
 * and forgets lapsed ones. Lock held. */
static bool gate_turn(Dispatch *d, uid_t uid, int64_t now) {
    size_t i = 0;
    bool first = true;
    while (i < d->gate_queued) {
        if (d->gate_queue[i].uid == uid) {
            d->gate_queue[i].last_ms = now;
            return first;
        }
        if (now - d->gate_queue[i].last_ms > GATE_LAPSE_MS) {
            gate_queue_remove(d, i);
            continue;
        }
        first = false;
        i++;
    }
    return first;
}

static void gate_queue_add(Dispatch *d, uid_t uid, int64_t now) {
    for (size_t i = 0; i < d->gate_queued; i++)
        if (d->gate_queue[i].uid == uid)
            return;
    if (d->gate_queued < ELEMENTSOF(d->gate_queue))
        d->gate_queue[d->gate_queued++] = (typeof(d->gate_queue[0])){.uid = uid, .last_ms = now};
}

static const char *gate_enter(Dispatch *d, uid_t uid) {
    const char *why = NULL;
    int64_t now = gate_now_ms();
    int slot = -1;
    (void)pthread_mutex_lock(&d->gate_lock);
    for (size_t i = 0; i < ELEMENTSOF(d->gate_uids); i++) {
        if (d->gate_uids[i].n > 0 && d->gate_uids[i].uid == uid) {
            why = "busy: your previous key change is still being written, try again";
            break;
        }
        if (d->gate_uids[i].n == 0 && slot < 0)
            slot = (int)i;
    }
    if (!why && (d->mutating >= d->max_mutating || slot < 0 || !gate_turn(d, uid, now))) {
        why = "busy: other users' key changes are being written, try again";
        gate_queue_add(d, uid, now);
    }
    if (!why) {
        for (size_t i = 0; i < d->gate_queued; i++)
            if (d->gate_queue[i].uid == uid) {
                gate_queue_remove(d, i);
                break;
            }
        d->gate_uids[slot].uid = uid;
        d->gate_uids[slot].n = 1;
        d->mutating++;
    }
    (void)pthread_mutex_unlock(&d->gate_lock);
    return why;
}

static void gate_leave(Dispatch *d, uid_t uid) {
    (void)pthread_mutex_lock(&d->gate_lock);
    for (size_t i = 0; i < ELEMENTSOF(d->gate_uids); i++)
        if (d->gate_uids[i].n > 0 && d->gate_uids[i].uid == uid) {
            d->gate_uids[i].n = 0;
            d->mutating--;
            break;
        }
    (void)pthread_mutex_unlock(&d->gate_lock);
}

int dispatch_set_trust(Dispatch *d, const json_t *kms_jwks, const json_t *attestd_jwks,
                       const char *attestd_issuer) {
    char *iss = NULL;
    if (attestd_issuer && !(iss = strdup(attestd_issuer)))
        return -ENOMEM;
    json_decref(d->kms_jwks);
    json_decref(d->attestd_jwks);
    free(d->attestd_issuer);
    d->kms_jwks = kms_jwks ? json_deep_copy(kms_jwks) : NULL;
    d->attestd_jwks = attestd_jwks ? json_deep_copy(attestd_jwks) : NULL;
    d->attestd_issuer = iss;
    if ((kms_jwks && !d->kms_jwks) || (attestd_jwks && !d->attestd_jwks))
        return -ENOMEM;
    return 0;
}

Dispatch *dispatch_free(Dispatch *d) {
    if (!d)
        return NULL;
    json_decref(d->kms_jwks);
    json_decref(d->attestd_jwks);
    free(d->attestd_issuer);
    (void)pthread_mutex_destroy(&d->gate_lock);
    free(d);
    return NULL;
}

/* One request being handled. */
typedef struct Req {
    Dispatch *d;
    const VaultPeer *peer;
    Peer *conn; /* the connection (its login session) */
    const uint8_t *body;
    size_t len;
    VhsmBuf *out;
    char name[VHSM_MAX_NAME + 1];
    char msg[512]; /* error detail for the reply; empty = generic */
} Req;

static int req_fail(Req *q, int r, const char *fmt, ...) _printf_(3, 4);
static int req_fail(Req *q, int r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(q->msg, sizeof q->msg, fmt, ap);
    va_end(ap);
    return r;
}

static const char *tag_name(uint16_t tag) {
    switch (tag) {
    case VHSM_TAG_KEY_NAME:
        return "key name";
    case VHSM_TAG_KEY_TYPE:
        return "key type";
    case VHSM_TAG_DATA:
        return "data";
    case VHSM_TAG_SIGNATURE:
        return "signature";
    case VHSM_TAG_LENGTH:
        return "length";
    case VHSM_TAG_FORMAT:
        return "format";
    case VHSM_TAG_RELEASE:
        return "release";
    case VHSM_TAG_TOKEN:
        return "token";
    case VHSM_TAG_PEER_KEY:
        return "peer public key";
    case VHSM_TAG_NEW_KEY_NAME:
        return "new key name";
    case VHSM_TAG_MIN_VERSION:
        return "minimum version";
    case VHSM_TAG_TIMESTAMP:
        return "timestamp";
    case VHSM_TAG_PIN:
        return "PIN";
    case VHSM_TAG_NEW_PIN:
        return "new PIN";
    case VHSM_TAG_USER_TYPE:
        return "user type";
    case VHSM_TAG_TICKET:
        return "ticket";
    case VHSM_TAG_TOKEN_LABEL:
        return "token label";
    case VHSM_TAG_VALUE:
        return "value";
    default:
        return "field";
    }
}

/* Field access. `required` fields missing give -EBADMSG with a message naming the field. */
static int get_bytes(Req *q, uint16_t tag, bool required, const uint8_t **ret, size_t *ret_len) {
    int r = vhsm_body_get(q->body, q->len, tag, ret, ret_len);
    if (r == -ENOENT && !required) {
        *ret = NULL;
        *ret_len = 0;
        return 0;
    }
    if (r < 0)
        return req_fail(q, -EBADMSG, "missing %s", tag_name(tag));
    return 0;
}

static int get_u32(Req *q, uint16_t tag, bool required, uint32_t def, uint32_t *ret) {
    int r = vhsm_body_get_u32(q->body, q->len, tag, ret);
    if (r == -ENOENT && !required) {
        *ret = def;
        return 0;
    }
    if (r == -ENOENT)
        return req_fail(q, -EBADMSG, "missing %s", tag_name(tag));
    if (r < 0)
        return req_fail(q, -EBADMSG, "malformed %s (expected 4 bytes)", tag_name(tag));
    return 0;
}

static int get_str(Req *q, uint16_t tag, bool required, size_t max, char *out, size_t size) {
    int r = vhsm_body_get_str(q->body, q->len, tag, max, out, size);
    if (r == -ENOENT && !required) {
        out[0] = 0;
        return 0;
    }
    if (r == -ENOENT)
        return req_fail(q, -EBADMSG, "missing %s", tag_name(tag));
    if (r == -ENAMETOOLONG)
        return req_fail(q, -EMSGSIZE, "%s longer than %zu bytes", tag_name(tag), max);
    if (r < 0)
        return req_fail(q, -EBADMSG, "malformed %s", tag_name(tag));
    return 0;
}

#define NAME_RULE                                                                                  \
    "1-128 chars of A-Z a-z 0-9 . _ : @ -, not starting with . or -, optionally after a "          \
    "namespace \"<uid>/\" or \"kms/\""

/* Reads a key name field and resolves it for the peer: a plain name lies in the peer's own
 * namespace. out gets the full name ("<namespace>/<name>"), which the vault, the log and every
 * message use. */
static int get_key_name(Req *q, uint16_t tag, char out[static VAULT_FULL_NAME_MAX + 1]) {
    char raw[VHSM_MAX_NAME + 1];
    int r = get_str(q, tag, true, VHSM_MAX_NAME, raw, sizeof raw);
    if (r < 0)
        return r;
    if (vault_name_resolve(q->peer, raw, out) < 0)
        return req_fail(q, -EINVAL, "invalid %s '%s' (" NAME_RULE ")", tag_name(tag), raw);
    return 0;
}

static int get_name(Req *q) {
    return get_key_name(q, VHSM_TAG_KEY_NAME, q->name);
}

/* Wire key type names: the vault's, plus the short forms p256/p384 of the CLI. */
static VaultKeyType parse_key_type(const char *s) {
    if (streq(s, "p256"))
        return VAULT_KEY_EC_P256;
    if (streq(s, "p384"))
        return VAULT_KEY_EC_P384;
    return vault_key_type_from_string(s);
}

static VaultAlg parse_alg(const char *s) {
    static const struct {
        const char *alias, *name;
    } aliases[] = {
        {"aes-gcm", "aes256-gcm"},         {"aes-kw", "aes256-kw"},
        {"aes-kwp", "aes256-kwp"},         {"rsa-pss", "rsa-pss-sha256"},
        {"rsa-pkcs1", "rsa-pkcs1-sha256"}, {"rsa-oaep", "rsa-oaep-sha256"},
    };
    for (size_t i = 0; i < ELEMENTSOF(aliases); i++)
        if (streq(s, aliases[i].alias))
            return vault_alg_from_string(aliases[i].name);
    return vault_alg_from_string(s);
}

typedef enum AlgUse {
    ALG_FOR_CRYPT,
    ALG_FOR_SIGN,
    ALG_FOR_MAC,
    ALG_FOR_WRAP,
} AlgUse;

/* The algorithm of the request, or the key type's default (needs a describe, so clients that
 * care about speed name the algorithm). */
static int get_alg(Req *q, AlgUse use, VaultAlg *ret) {
    char s[64];
    VaultKeyType t;
    int r;

    r = get_str(q, VHSM_TAG_ALGORITHM, false, sizeof s - 1, s, sizeof s);
    if (r < 0)
        return r;
    if (s[0]) {
        VaultAlg a = parse_alg(s);
        if (a < 0)
            return req_fail(q, -EOPNOTSUPP, "unknown algorithm '%s'", s);
        *ret = a;
        return 0;
    }
    if (use == ALG_FOR_MAC) {
        *ret = VAULT_ALG_HMAC;
        return 0;
    }
    if (use == ALG_FOR_WRAP) {
        *ret = VAULT_ALG_AES256_KWP;
        return 0;
    }
    r = vault_key_type(q->d->vault, q->peer, q->name, &t);
    if (r < 0)
        return r;
    switch (t) {
    case VAULT_KEY_AES256:
        if (use == ALG_FOR_CRYPT)
            *ret = VAULT_ALG_AES256_GCM;
        else
            return req_fail(q, -EOPNOTSUPP, "key '%s' is an AES key: it cannot sign", q->name);
        return 0;
    case VAULT_KEY_HMAC_SHA256:
    case VAULT_KEY_HMAC_SHA384:
        if (use == ALG_FOR_SIGN)
            *ret = VAULT_ALG_HMAC;
        else
            return req_fail(q, -EOPNOTSUPP, "key '%s' is an HMAC key: it cannot encrypt", q->name);
        return 0;
    case VAULT_KEY_EC_P256:
    case VAULT_KEY_EC_P384:
    case VAULT_KEY_ED25519:
        if (use != ALG_FOR_SIGN)
            return req_fail(q, -EOPNOTSUPP, "key '%s' (%s) cannot encrypt", q->name,
                            vault_key_type_to_string(t));
        *ret = t == VAULT_KEY_ED25519 ? VAULT_ALG_ED25519 : VAULT_ALG_ECDSA;
        return 0;
    case VAULT_KEY_RSA2048:
    case VAULT_KEY_RSA3072:
    case VAULT_KEY_RSA4096:
        *ret = use == ALG_FOR_SIGN ? VAULT_ALG_RSA_PSS_SHA256 : VAULT_ALG_RSA_OAEP_SHA256;
        return 0;
    case VAULT_KEY_RAW:
        return req_fail(q, -EOPNOTSUPP,
                        "key '%s' is a raw key (opaque bytes): it has no cryptographic operation",
                        q->name);
    case VAULT_KEY_DATA:
    case VAULT_KEY_CERT:
    case VAULT_KEY_PUBLIC:
        return req_fail(q, -EOPNOTSUPP,
                        "object '%s' is a %s object: vhsmd has no operation with it", q->name,
                        vault_key_type_to_string(t));
    case VAULT_KEY_GENERIC_SECRET:
        return req_fail(q, -EOPNOTSUPP,
                        "key '%s' is a generic secret: it has no cryptographic operation", q->name);
    default:
        return req_fail(q, -EIO, "key '%s' has an unknown type", q->name);
    }
}

static int get_flags(Req *q, unsigned *ret) {
    uint32_t f;
    unsigned vf = 0;
    int r = get_u32(q, VHSM_TAG_FLAGS, false, 0, &f);
    if (r < 0)
        return r;
    if (f & ~VHSM_FLAGS_ALL)
        return req_fail(q, -EINVAL, "unknown flags 0x%x", f & ~VHSM_FLAGS_ALL);
    if (f & VHSM_FLAG_RAW)
        vf |= VAULT_OP_RAW;
    if (f & VHSM_FLAG_PREHASHED)
        vf |= VAULT_OP_PREHASHED;
    if (f & VHSM_FLAG_SIG_RAW_RS)
        vf |= VAULT_OP_SIG_RAW_RS | VAULT_OP_RAW;
    *ret = vf;
    return 0;
}

/* Collects the repeated ACL tags. *ret_present tells whether any ACL tag was sent. */
static int get_acl(Req *q, VaultAcl *acl, bool *ret_present) {
    size_t off = 0;
    VhsmTlv t;
    bool present = false;
    int r;

    while ((r = vhsm_tlv_next(q->body, q->len, &off, &t)) > 0) {
        VaultAclList *l = NULL;
        bool is_cgroup = false;
        switch (t.tag) {
        case VHSM_TAG_USE_UID:
        case VHSM_TAG_USE_GID:
        case VHSM_TAG_USE_CGROUP:
            l = &acl->use;
            break;
        case VHSM_TAG_ADMIN_UID:
        case VHSM_TAG_ADMIN_GID:
        case VHSM_TAG_ADMIN_CGROUP:
            l = &acl->admin;
            break;
        default:
            continue;
        }
        present = true;
        is_cgroup = t.tag == VHSM_TAG_USE_CGROUP || t.tag == VHSM_TAG_ADMIN_CGROUP;
        if (is_cgroup) {
            char cg[VAULT_CGROUP_MAX];
            if (t.len == 0 || t.len >= sizeof cg || memchr(t.value, 0, t.len))
                return req_fail(q, -EINVAL, "invalid cgroup in ACL");
            memcpy(cg, t.value, t.len);
            cg[t.len] = 0;
            r = vault_acl_list_add_cgroup(l, cg);
            if (r < 0)
                return req_fail(q, r, "invalid cgroup '%s' in ACL", cg);
        } else {
            uint32_t id;
            if (t.len != 4)
                return req_fail(q, -EBADMSG, "malformed uid/gid in ACL");
            id = (uint32_t)t.value[0] << 24 | (uint32_t)t.value[1] << 16 |
                 (uint32_t)t.value[2] << 8 | t.value[3];
            if (id == (uint32_t)-1)
                return req_fail(q, -EINVAL, "invalid uid/gid in ACL");
            if (t.tag == VHSM_TAG_USE_UID || t.tag == VHSM_TAG_ADMIN_UID)
                r = vault_acl_list_add_uid(l, (uid_t)id);
            else
                r = vault_acl_list_add_gid(l, (gid_t)id);
            if (r < 0)
                return req_fail(q, r, "too many ACL entries");
        }
    }
    if (r < 0)
        return req_fail(q, -EBADMSG, "malformed body");
    *ret_present = present;
    return 0;
}

static bool acl_list_empty(const VaultAclList *l) {
    return l->n_uids == 0 && l->n_gids == 0 && l->n_cgroups == 0;
}

/* Key spec of create / import / derive. type_required: the KEY_TYPE tag must be present. */
/* The vault's whole-ACL caps, checked early for a message that says which rule refused. */
static int check_acl_caps(Req *q, const VaultAcl *acl) {
    int r = vault_acl_check_caps(acl, q->peer);
    if (r == -E2BIG)
        return req_fail(q, r,
                        "ACL too large: at most %u entries and %u bytes of cgroup paths in all "
                        "(use and admin lists together)",
                        VAULT_ACL_MAX_TOTAL, VAULT_ACL_MAX_CGROUP_BYTES);
    if (r == -EPERM)
        return req_fail(q, r,
                        "only root may list the cgroup root \"/\" (every process on the machine) "
                        "in an ACL");
    return r;
}

static int get_spec(Req *q, bool type_required, VaultAcl *acl, VaultKeySpec *spec, char *label,
                    size_t label_size) {
    char type[32], policy[32];
    uint64_t max_age = 0;
    bool acl_present = false;
    int r;

    *spec = (VaultKeySpec){.type = VAULT_KEY_AES256, .policy = {.kind = VAULT_POLICY_LOCAL}};
    r = get_str(q, VHSM_TAG_KEY_TYPE, type_required, sizeof type - 1, type, sizeof type);
    if (r < 0)
        return r;
    if (type[0]) {
        spec->type = parse_key_type(type);
        if (spec->type < 0)
            return req_fail(q, -EOPNOTSUPP, "unknown key type '%s'", type);
    }
    r = get_str(q, VHSM_TAG_POLICY, false, sizeof policy - 1, policy, sizeof policy);
    if (r < 0)
        return r;
    if (policy[0]) {
        spec->policy.kind = vault_policy_kind_from_string(policy);
        if (spec->policy.kind < 0)
            return req_fail(q, -EINVAL, "unknown policy '%s' (local or attested)", policy);
    }
    r = vhsm_body_get_u64(q->body, q->len, VHSM_TAG_MAX_AGE, &max_age);
    if (r < 0 && r != -ENOENT)
        return req_fail(q, -EBADMSG, "malformed max age");
    if (spec->policy.kind == VAULT_POLICY_ATTESTED) {
        if (max_age == 0 || max_age > VAULT_MAX_ATTESTATION_AGE)
            return req_fail(q, -EINVAL, "attested policy needs a max age of 1..%u seconds",
                            VAULT_MAX_ATTESTATION_AGE);
        spec->policy.max_age_sec = (uint32_t)max_age;
    } else if (max_age != 0)
        return req_fail(q, -EINVAL, "max age applies only to the attested policy");
    r = get_str(q, VHSM_TAG_LABEL, false, label_size - 1, label, label_size);
    if (r < 0)
        return r;
    if (label[0])
        spec->label = label;

    r = get_acl(q, acl, &acl_present);
    if (r < 0)
        return r;
    if (acl_present) {
        /* An empty half of a given ACL means "the creator", like the default. */
        if (acl_list_empty(&acl->use) && (r = vault_acl_list_add_uid(&acl->use, q->peer->uid)) < 0)
            return r;
        if (acl_list_empty(&acl->admin) &&
            (r = vault_acl_list_add_uid(&acl->admin, q->peer->uid)) < 0)
            return r;
        if ((r = check_acl_caps(q, acl)) < 0)
            return r;
        spec->acl = acl;
    }
    return 0;
}

static int op_ping(Req *q) {
    vhsm_buf_put_u32(q->out, VHSM_TAG_REVISION, VHSM_PROTO_REVISION);
    vhsm_buf_put_u32(q->out, VHSM_TAG_FEATURES, VHSM_FEATURES_PAR);
    return 0;
}

/* ---- tokens and PINs (docs/protocol.md "Tokens and PINs") ---- */

/* A PIN field: 4..64 bytes (-ERANGE), required. */
static int get_pin(Req *q, uint16_t tag, const uint8_t **ret, size_t *ret_len) {
    int r = get_bytes(q, tag, true, ret, ret_len);
    if (r < 0)
        return r;
    if (*ret_len < VHSM_PIN_LEN_MIN || *ret_len > VHSM_PIN_LEN_MAX)
        return req_fail(q, -ERANGE, "a PIN has %u to %u bytes", VHSM_PIN_LEN_MIN, VHSM_PIN_LEN_MAX);
    return 0;
}

static int get_user_type(Req *q, uint32_t *ret) {
    int r = get_u32(q, VHSM_TAG_USER_TYPE, true, 0, ret);
    if (r < 0)
        return r;
    if (*ret != VAULT_USER_SO && *ret != VAULT_USER_USER)
        return req_fail(q, -EINVAL, "user type must be 0 (SO) or 1 (user)");
    return 0;
}

static int op_token_info(Req *q) {
    VaultTokenInfo ti;
    char serial[17];
    int r = vault_token_info(q->d->vault, q->peer, &ti);
    if (r < 0)
        return r;
    memcpy(serial, ti.serial, sizeof serial);
    vhsm_buf_put_u32(q->out, VHSM_TAG_UID, (uint32_t)ti.uid);
    vhsm_buf_put(q->out, VHSM_TAG_TOKEN_LABEL, ti.label, ti.label_len);
    vhsm_buf_put_str(q->out, VHSM_TAG_SERIAL, serial);
    vhsm_buf_put_u32(q->out, VHSM_TAG_TOKEN_FLAGS, ti.flags);
    vhsm_buf_put_u32(q->out, VHSM_TAG_USER_FAILURES, ti.user_failures);
    vhsm_buf_put_u32(q->out, VHSM_TAG_SO_FAILURES, ti.so_failures);
    vhsm_buf_put_u32(q->out, VHSM_TAG_MAX_TRIES, ti.max_tries);
    vhsm_buf_put_u32(q->out, VHSM_TAG_USER_TYPE, ti.login);
    return 0;
}

static int token_fail(Req *q, int r, const char *what) {
    const char *why;
    switch (-r) {
    case EBADE:
        why = "PIN incorrect";
        break;
    case ENOLCK:
        why = "PIN locked after too many failures";
        break;
    case ENOMEDIUM:
        why = "token not initialised";
        break;
    case ENODATA:
        why = "user PIN not initialised";
        break;
    case ENOTEMPTY:
        why = "the token still holds objects: delete them before re-initialising it";
        break;
    case EBADR:
        why = "not logged in (as the SO)";
        break;
    case EALREADY:
        why = "already logged in";
        break;
    case EISCONN:
        why = "another user type is logged in on this connection";
        break;
    case EBUSY:
        why = "the token changed during the check; try again";
        break;
    default:
        return r;
    }
    return req_fail(q, r, "%s: token of uid %u: %s", what, (unsigned)q->peer->uid, why);
}

static int op_token_init(Req *q) {
    const uint8_t *pin, *label = NULL;
    size_t pin_len, label_len = 0;
    int r;
    if ((r = get_pin(q, VHSM_TAG_PIN, &pin, &pin_len)) < 0 ||
        (r = get_bytes(q, VHSM_TAG_TOKEN_LABEL, false, &label, &label_len)) < 0)
        return r;
    if (label_len > VHSM_LABEL_LEN_MAX || (label && memchr(label, 0, label_len)))
        return req_fail(q, -EINVAL, "token label: at most %u bytes, no NUL", VHSM_LABEL_LEN_MAX);
    r = vault_token_init(q->d->vault, q->peer, pin, pin_len, label, label_len);
    return r < 0 ? token_fail(q, r, "token-init") : 0;
}

/* Replaces the connection's session by s (a new login). */
static void conn_set_session(Req *q, VaultSession *s) {
    vault_session_unref(q->conn->session);
    q->conn->session = s;
}

static int op_login(Req *q) {
    uint8_t ticket[VAULT_TICKET_SIZE];
    VaultSession *s = NULL;
    const uint8_t *pin;
    size_t pin_len;
    uint32_t user;
    int r;
    if ((r = get_user_type(q, &user)) < 0 || (r = get_pin(q, VHSM_TAG_PIN, &pin, &pin_len)) < 0)
        return r;
    r = vault_login(q->d->vault, q->peer, user, pin, pin_len, &s, ticket);
    if (r < 0)
        return token_fail(q, r, "login");
    conn_set_session(q, s);
    vhsm_buf_mark_secret(q->out);
    vhsm_buf_put(q->out, VHSM_TAG_TICKET, ticket, sizeof ticket);
    explicit_bzero(ticket, sizeof ticket);
    return 0;
}

static int op_login_ticket(Req *q) {
    VaultSession *s = NULL;
    const uint8_t *t;
    size_t n;
    int r;
    if ((r = get_bytes(q, VHSM_TAG_TICKET, true, &t, &n)) < 0)
        return r;
    if (n != VAULT_TICKET_SIZE)
        return req_fail(q, -EBADMSG, "a ticket has %u bytes", VAULT_TICKET_SIZE);
    r = vault_login_ticket(q->d->vault, q->peer, t, &s);
    if (r == -EBADE)
        return req_fail(q, r, "login-ticket: no such login of this process");
    if (r < 0)
        return token_fail(q, r, "login-ticket");
    conn_set_session(q, s);
    return 0;
}

static int op_logout(Req *q) {
    if (!vault_session_live(q->conn->session, NULL))
        return req_fail(q, -EBADR, "logout: not logged in");
    vault_logout(q->conn->session);
    conn_set_session(q, NULL);
    return 0;
}

static int op_init_pin(Req *q) {
    const uint8_t *pin;
    size_t pin_len;
    int r;
    if ((r = get_pin(q, VHSM_TAG_PIN, &pin, &pin_len)) < 0)
        return r;
    r = vault_init_pin(q->d->vault, q->peer, pin, pin_len);
    return r < 0 ? token_fail(q, r, "init-pin") : 0;
}

static int op_set_pin(Req *q) {
    const uint8_t *old, *new;
    size_t old_len, new_len;
    int r;
    if ((r = get_pin(q, VHSM_TAG_PIN, &old, &old_len)) < 0 ||
        (r = get_pin(q, VHSM_TAG_NEW_PIN, &new, &new_len)) < 0)
        return r;
    r = vault_set_pin(q->d->vault, q->peer, old, old_len, new, new_len);
    return r < 0 ? token_fail(q, r, "set-pin") : 0;
}

static int op_attestation_status(Req *q) {
    json_auto_t *j = NULL;
    _cleanup_free_ char *s = NULL;
    int64_t t = atomic_load(&q->d->verdict_time), e = atomic_load(&q->d->verdict_expires);

    j = json_pack("{s:o, s:o, s:I}", "verdict_time", t > 0 ? json_integer(t) : json_null(),
                  "verdict_expires", t > 0 && e > 0 ? json_integer(e) : json_null(), "now",
                  (json_int_t)time(NULL));
    if (!j)
        return -ENOMEM;
    s = json_dumps(j, JSON_COMPACT);
    if (!s)
        return -ENOMEM;
    vhsm_buf_put_str(q->out, VHSM_TAG_JSON, s);
    return 0;
}

/* A verified attestation token, as vhsmd records it. */
typedef struct TokenVerdict {
    int64_t iat, exp;
    char kid[64]; /* the thumbprint of cnf.jwk: one of our transfer keys */
    char jti[64];
} TokenVerdict;

/* Reads the TOKEN field and checks it as ATTESTATION_SET does: signature against the pinned
 * attestd JWKS, issuer (if configured), exp/iat, status at least affirming, and cnf.jwk a
 * transfer key this vault created and still holds or spent recently. required: a missing
 * TOKEN is invalid-argument; otherwise *ret_present tells. */
static int get_token_verdict(Req *q, bool required, bool *ret_present, TokenVerdict *ret) {
    NtEarVerifyOptions o = NT_EAR_VERIFY_OPTIONS_INIT;
    _cleanup_free_ char *token = NULL;
    json_auto_t *claims = NULL, *thp = NULL;
    const json_t *cnf;
    const char *jti;
    char err[256];
    int r;

    r = vhsm_body_get_str_alloc(q->body, q->len, VHSM_TAG_TOKEN, VHSM_MAX_TOKEN, &token);
    if (r == -ENOENT) {
        *ret_present = false;
        return required ? req_fail(q, -EINVAL,
                                   "an attestation token is required (TOKEN): vhsmd records a "
                                   "verdict only from attestd's signed token, not on anyone's word")
                        : 0;
    }
    if (r == -ENAMETOOLONG)
        return req_fail(q, -EMSGSIZE, "token larger than %u bytes", VHSM_MAX_TOKEN);
    if (r < 0)
        return req_fail(q, -EBADMSG, "malformed token field");
    *ret_present = true;
    if (!q->d->attestd_jwks)
        return req_fail(q, -EOPNOTSUPP,
                        "vhsmd has no pinned attestation service keys: start it with "
                        "--attestd-jwks FILE (and --attestd-issuer ISS) to accept tokens");
    o.now = time(NULL);
    o.issuer = q->d->attestd_issuer;
    o.min_status = NT_EAR_AFFIRMING;
    r = nt_ear_verify(token, q->d->attestd_jwks, &o, &claims, err);
    if (r == -EKEYEXPIRED)
        return req_fail(q, r, "attestation token refused: %s", err);
    if (r == -EACCES || r == -EKEYREJECTED)
        return req_fail(q, -EKEYREJECTED, "attestation token refused: %s", err);
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        return req_fail(q, -EBADMSG, "attestation token refused: %s", err);
    cnf = json_object_get(json_object_get(claims, "cnf"), "jwk");
    thp = json_is_object(cnf) ? jose_jwk_thp(NULL, cnf, "S256") : NULL;
    if (!json_is_string(thp) || json_string_length(thp) >= sizeof ret->kid)
        return req_fail(q, -EKEYREJECTED, "attestation token refused: no usable cnf.jwk");
    if (!vault_transfer_key_known(q->d->vault, json_string_value(thp)))
        return req_fail(q, -EKEYREJECTED,
                        "attestation token refused: its cnf.jwk (%s) is not a transfer key of this "
                        "vault (a token of another VM, or a transfer key long gone)",
                        json_string_value(thp));
    jti = json_string_value(json_object_get(claims, "jti"));
    *ret = (TokenVerdict){
        .iat = json_integer_value(json_object_get(claims, "iat")),
        .exp = json_integer_value(json_object_get(claims, "exp")),
    };
    snprintf(ret->kid, sizeof ret->kid, "%s", json_string_value(thp));
    snprintf(ret->jti, sizeof ret->jti, "%s", jti ? jti : "");
    return 0;
}

/* Records a verified token as the verdict: made at its iat (at most now), valid until its exp;
 * attested keys are usable until min(exp, iat + max_age). */
static void record_verdict(Req *q, const TokenVerdict *t) {
    int64_t now = (int64_t)time(NULL), at = MIN(t->iat, now);
    vault_set_attestation(q->d->vault, (time_t)at, (time_t)t->exp);
    atomic_store(&q->d->verdict_expires, t->exp);
    atomic_store(&q->d->verdict_time, at);
    log_audit("Attestation verdict recorded from token jti '%s' (cnf %s): made %" PRId64
              ", valid until %" PRId64 ", by pid %d.",
              t->jti, t->kid, at, t->exp, (int)q->peer->pid);
}

static int op_attestation_set(Req *q) {
    TokenVerdict t;
    uint64_t ts;
    bool present;
    int r;

    if (q->peer->uid != 0)
        return req_fail(q, -EPERM, "only root (the nitride agent) may record attestation verdicts");
    if (vhsm_body_get_u64(q->body, q->len, VHSM_TAG_TIMESTAMP, &ts) != -ENOENT)
        return req_fail(q, -EINVAL,
                        "TIMESTAMP is no longer accepted: ATTESTATION_SET takes an attestation "
                        "token (TOKEN), whose signed times decide the verdict");
    if (!q->d->attestd_jwks)
        return req_fail(q, -EOPNOTSUPP,
                        "vhsmd has no pinned attestation service keys: start it with "
                        "--attestd-jwks FILE (and --attestd-issuer ISS) to accept verdicts");
    if ((r = get_token_verdict(q, true, &present, &t)) < 0)
        return r;
    record_verdict(q, &t);
    key_event(q->d, NULL, true);
    return 0;
}

static int op_key_create(Req *q) {
    _cleanup_(vault_acl_done) VaultAcl acl = {0};
    VaultKeySpec spec;
    char label[VHSM_MAX_NAME + 1];
    int r;

    if ((r = get_name(q)) < 0 || (r = get_spec(q, true, &acl, &spec, label, sizeof label)) < 0)
        return r;
    r = vault_key_generate(q->d->vault, q->peer, q->name, &spec);
    if (r < 0)
        return r;
    log_audit_uid(q->peer->uid, "Key '%s' (%s) created by uid %u.", q->name,
                  vault_key_type_to_string(spec.type), (unsigned)q->peer->uid);
    return 0;
}

/* ATTR fields (repeatable): u32 type | value, at most VAULT_ATTR_MAX, pointing into the body. */
static int get_attrs(Req *q, VaultAttr attrs[static VAULT_ATTR_MAX], size_t *ret_n) {
    size_t off = 0, n = 0;
    VhsmTlv t;
    while (vhsm_tlv_next(q->body, q->len, &off, &t) > 0) {
        if (t.tag != VHSM_TAG_ATTR)
            continue;
        if (t.len < 4)
            return req_fail(q, -EBADMSG, "malformed attribute (a 4-byte type, then the value)");
        if (n == VAULT_ATTR_MAX)
            return req_fail(q, -E2BIG, "more than %d attributes", VAULT_ATTR_MAX);
        attrs[n].type = (uint32_t)t.value[0] << 24 | (uint32_t)t.value[1] << 16 |
                        (uint32_t)t.value[2] << 8 | t.value[3];
        attrs[n].value = t.len > 4 ? t.value + 4 : NULL;
        attrs[n].len = t.len - 4;
        n++;
    }
    *ret_n = n;
    return 0;
}

static int attrs_fail(Req *q, const char *op, int r) {
    if (r == -EINVAL)
        return req_fail(q, r,
                        "%s: key '%s': invalid object attributes (a type vhsmd owns, a duplicate "
                        "type, or a read-only flag)",
                        op, q->name);
    if (r == -E2BIG)
        return req_fail(q, r,
                        "%s: key '%s': attributes over their caps (%d per object, %u bytes each, "
                        "%u in all)",
                        op, q->name, VAULT_ATTR_MAX, VAULT_ATTR_VALUE_MAX, VAULT_ATTR_TOTAL_MAX);
    return r;
}

/* OBJECT_CREATE of a data object, a certificate or a lone public key (branch obj): the value is
 * required and checked; not a plaintext key import (--no-plaintext-import does not apply). */
static int object_create_value(Req *q, const VaultKeySpec *spec, const uint8_t *value,
                               size_t value_len) {
    const char *what = vault_key_type_to_string(spec->type);
    int r;
    if (!value)
        return req_fail(q, -EBADMSG, "object-create: %s object '%s' needs its value", what,
                        q->name);
    r = vault_object_create(q->d->vault, q->peer, q->name, spec, value, value_len);
    if (r == -EBADMSG)
        return req_fail(q, r, "object-create: '%s': the value is not %s", q->name,
                        spec->type == VAULT_KEY_CERT     ? "one DER X.509 certificate"
                        : spec->type == VAULT_KEY_PUBLIC ? "a SubjectPublicKeyInfo (DER) of an EC "
                                                           "P-256/P-384, Ed25519 or RSA key"
                                                         : "valid");
    if (r == -E2BIG && value_len > 0)
        return req_fail(q, r, "object-create: '%s': a %s object holds at most %u bytes", q->name,
                        what,
                        spec->type == VAULT_KEY_DATA   ? VAULT_DATA_MAX
                        : spec->type == VAULT_KEY_CERT ? VAULT_CERT_MAX
                                                       : VAULT_PUBLIC_MAX);
    if (r == -EPERM && (spec->obj_flags & VAULT_OBJ_TRUSTED))
        return req_fail(q, r, "object-create: '%s': only the SO may mark an object trusted",
                        q->name);
    if (r < 0)
        return attrs_fail(q, "object-create", r);
    log_audit_uid(q->peer->uid, "Object '%s' (%s%s) created by uid %u.", q->name, what,
                  spec->obj_flags & VAULT_OBJ_SESSION ? ", session" : "", (unsigned)q->peer->uid);
    return 0;
}

/* OBJECT_COPY (branch obj): KEY_NAME the source, NEW_KEY_NAME the copy, OBJ_FLAGS /
 * OBJ_FLAGS_CLEAR and ATTR the changes. */
static int op_object_copy(Req *q) {
    VaultAttr attrs[VAULT_ATTR_MAX];
    char new_name[VAULT_FULL_NAME_MAX + 1];
    uint32_t set, clear;
    size_t n;
    int r;
    if ((r = get_name(q)) < 0 || (r = get_key_name(q, VHSM_TAG_NEW_KEY_NAME, new_name)) < 0 ||
        (r = get_u32(q, VHSM_TAG_OBJ_FLAGS, false, 0, &set)) < 0 ||
        (r = get_u32(q, VHSM_TAG_OBJ_FLAGS_CLEAR, false, 0, &clear)) < 0 ||
        (r = get_attrs(q, attrs, &n)) < 0)
        return r;
    if (((set | clear) & VAULT_OBJ_SESSION) && q->peer->conn_id == 0)
        return req_fail(q, -EINVAL, "object-copy: no connection for a session object");
    r = vault_object_copy(q->d->vault, q->peer, q->name, new_name, set, clear, attrs, n);
    if (r == -EPERM)
        return req_fail(q, r,
                        "object-copy: '%s': not copyable, or a change the copy may not make "
                        "(sensitive only on, extractable only off, trusted never)",
                        q->name);
    if (r < 0)
        return attrs_fail(q, "object-copy", r);
    log_audit_uid(q->peer->uid, "Object '%s' copied to '%s' by uid %u.", q->name, new_name,
                  (unsigned)q->peer->uid);
    return 0;
}

/* OBJECT_CREATE: KEY_CREATE with object flags and attributes; with a VALUE, a plaintext import. */
static int op_object_create(Req *q) {
    _cleanup_(vault_acl_done) VaultAcl acl = {0};
    VaultAttr attrs[VAULT_ATTR_MAX];
    VaultKeySpec spec;
    char label[VHSM_MAX_NAME + 1];
    const uint8_t *value;
    size_t value_len;
    int r;

    if ((r = get_name(q)) < 0 || (r = get_spec(q, true, &acl, &spec, label, sizeof label)) < 0 ||
        (r = get_u32(q, VHSM_TAG_OBJ_FLAGS, false, 0, &spec.obj_flags)) < 0 ||
        (r = get_attrs(q, attrs, &spec.n_attrs)) < 0 ||
        (r = get_bytes(q, VHSM_TAG_VALUE, false, &value, &value_len)) < 0)
        return r;
    spec.attrs = attrs;
    if (spec.obj_flags & ~VAULT_OBJ_SETTABLE)
        return req_fail(q, -EINVAL,
                        "object-create: key '%s': flags 0x%x: only bits 0..15 may be chosen",
                        q->name, spec.obj_flags);
    if (vault_key_type_is_object(spec.type))
        return object_create_value(q, &spec, value, value_len);
    if ((spec.obj_flags & VAULT_OBJ_SESSION) && q->peer->conn_id == 0)
        return req_fail(q, -EINVAL, "object-create: key '%s': no connection for a session object",
                        q->name);
    if (value) {
        if (q->d->no_plaintext_import)
            return req_fail(q, -EPERM,
                            "object-create: key '%s': plaintext key import is disabled "
                            "(vhsmd --no-plaintext-import)",
                            q->name);
        r = vault_key_import_plain(q->d->vault, q->peer, q->name, &spec, value, value_len);
        if (r == -EBADMSG)
            return req_fail(q, r,
                            "object-create: key '%s': the value is not a %s key (raw bytes of "
                            "its size, or PKCS#8 of that type)",
                            q->name, vault_key_type_to_string(spec.type));
        if (r < 0)
            return attrs_fail(q, "object-create", r);
        log_audit_uid(q->peer->uid, "Key '%s' (%s) imported in plaintext by uid %u.", q->name,
                      vault_key_type_to_string(spec.type), (unsigned)q->peer->uid);
        return 0;
    }
    r = vault_key_generate(q->d->vault, q->peer, q->name, &spec);
    if (r < 0)
        return attrs_fail(q, "object-create", r);
    log_audit_uid(q->peer->uid, "Key '%s' (%s) created by uid %u.", q->name,
                  vault_key_type_to_string(spec.type), (unsigned)q->peer->uid);
    return 0;
}

static int op_object_set(Req *q) {
    VaultAttr attrs[VAULT_ATTR_MAX];
    uint32_t set, clear;
    size_t n;
    int r;
    if ((r = get_name(q)) < 0 || (r = get_u32(q, VHSM_TAG_OBJ_FLAGS, false, 0, &set)) < 0 ||
        (r = get_u32(q, VHSM_TAG_OBJ_FLAGS_CLEAR, false, 0, &clear)) < 0 ||
        (r = get_attrs(q, attrs, &n)) < 0)
        return r;
    r = vault_key_set_object(q->d->vault, q->peer, q->name, set, clear, attrs, n);
    return r < 0 ? attrs_fail(q, "object-set", r) : 0;
}

/* Branch par (below): RSA-OAEP / RSA-PSS / HMAC with parameters, SO PIN reset. */
static int par_oaep(Req *q, bool encrypt);
static int par_sign(Req *q, bool sign, const char *alg, const uint8_t *data, size_t data_len,
                    const uint8_t *sig, size_t sig_len);

/* ENCRYPT_EX / DECRYPT_EX: AES modes with the caller's IV, AAD and tag length (raw output). */
static int op_crypt_ex(Req *q, bool encrypt) {
    static const char *const modes[_VAULT_AES_MODE_MAX] = {
        [VAULT_AES_CBC] = "aes-cbc",
        [VAULT_AES_CBC_PAD] = "aes-cbc-pad",
        [VAULT_AES_CTR] = "aes-ctr",
        [VAULT_AES_GCM] = "aes-gcm",
    };
    VaultAesParams p = {.mode = _VAULT_AES_MODE_INVALID};
    const uint8_t *data;
    size_t data_len, out_len = 0;
    char alg[32];
    uint8_t *out;
    int r;

    if ((r = get_name(q)) < 0 ||
        (r = get_str(q, VHSM_TAG_ALGORITHM, true, 31, alg, sizeof alg)) < 0)
        return r;
    if (strcmp(alg, "rsa-oaep") == 0)
        return par_oaep(q, encrypt);
    if ((r = get_bytes(q, VHSM_TAG_DATA, true, &data, &data_len)) < 0 ||
        (r = get_bytes(q, VHSM_TAG_IV, true, &p.iv, &p.iv_len)) < 0 ||
        (r = get_bytes(q, VHSM_TAG_AAD, false, &p.aad, &p.aad_len)) < 0 ||
        (r = get_u32(q, VHSM_TAG_TAG_BITS, false, 0, &p.tag_bits)) < 0 ||
        (r = get_u32(q, VHSM_TAG_COUNTER_BITS, false, 0, &p.counter_bits)) < 0)
        return r;
    for (int m = 0; m < _VAULT_AES_MODE_MAX; m++)
        if (strcmp(alg, modes[m]) == 0)
            p.mode = (VaultAesMode)m;
    if (p.mode < 0)
        return req_fail(q, -EOPNOTSUPP,
                        "%s: unknown algorithm '%s' (aes-cbc, aes-cbc-pad, aes-ctr, aes-gcm)",
                        encrypt ? "encrypt-ex" : "decrypt-ex", alg);
    if (p.mode != VAULT_AES_GCM && p.aad_len > 0)
        return req_fail(q, -EINVAL, "AAD is for aes-gcm only");
    if (!encrypt)
        vhsm_buf_mark_secret(q->out);
    out = vhsm_buf_put_reserve(q->out, VHSM_TAG_OUTPUT, data_len + 16);
    if (!out)
        return -ENOMEM;
    r = vault_aes_crypt(q->d->vault, q->peer, q->name, &p, encrypt, data, data_len, out,
                        data_len + 16, &out_len);
    if (r == -EINVAL)
        return req_fail(q, r,
                        "%s: key '%s': invalid parameters for %s (IV length, data length, tag "
                        "bits 96..128, or a CTR counter that would wrap)",
                        encrypt ? "encrypt-ex" : "decrypt-ex", q->name, alg);
    if (r < 0)
        return r;
    vhsm_buf_commit(q->out, out_len);
    return 0;
}

static int put_owned(Req *q, uint16_t tag, uint8_t *p, size_t n);

/* SIGN_EX / VERIFY_EX: CKM_ECDSA ("ecdsa-raw") and CKM_RSA_PKCS ("rsa-pkcs1-raw"). */
static int op_sign_ex(Req *q, bool sign) {
    const uint8_t *data, *sig = NULL;
    size_t data_len, sig_len = 0, out_len = 0;
    uint8_t *out = NULL;
    VaultRawSig alg;
    char name[32];
    int r;

    if ((r = get_name(q)) < 0 ||
        (r = get_str(q, VHSM_TAG_ALGORITHM, true, 31, name, sizeof name)) < 0 ||
        (r = get_bytes(q, VHSM_TAG_DATA, true, &data, &data_len)) < 0 ||
        (!sign && (r = get_bytes(q, VHSM_TAG_SIGNATURE, true, &sig, &sig_len)) < 0))
        return r;
    if (strcmp(name, "rsa-pss") == 0 || strcmp(name, "hmac") == 0)
        return par_sign(q, sign, name, data, data_len, sig, sig_len);
    if (strcmp(name, "ecdsa-raw") == 0)
        alg = VAULT_RAW_SIG_ECDSA;
    else if (strcmp(name, "rsa-pkcs1-raw") == 0)
        alg = VAULT_RAW_SIG_RSA_PKCS1;
    else
        return req_fail(q, -EOPNOTSUPP, "%s: unknown algorithm '%s' (ecdsa-raw, rsa-pkcs1-raw)",
                        sign ? "sign-ex" : "verify-ex", name);
    if (!sign)
        return vault_verify_raw(q->d->vault, q->peer, q->name, alg, data, data_len, sig, sig_len);
    r = vault_sign_raw(q->d->vault, q->peer, q->name, alg, data, data_len, &out, &out_len);
    if (r == -EINVAL)
        return req_fail(
            q, r,
            "sign-ex: key '%s': data length %zu not allowed (ecdsa-raw: a hash of 1..64 "
            "bytes; rsa-pkcs1-raw: at most the modulus size - 11)",
            q->name, data_len);
    if (r < 0)
        return r;
    return put_owned(q, VHSM_TAG_SIGNATURE, out, out_len);
}

/* ---- branch par: mechanisms with parameters, SO PIN reset (docs/protocol.md) ---- */

/* HASH (required) and MGF_HASH (optional) as names; unknown names are refused by the vault. */
static int par_hashes(Req *q, char hash[static 16], char mgf[static 16]) {
    int r;
    if ((r = get_str(q, VHSM_TAG_HASH, true, 15, hash, 16)) < 0 ||
        (r = get_str(q, VHSM_TAG_MGF_HASH, false, 15, mgf, 16)) < 0)
        return r;
    return 0;
}

/* ENCRYPT_EX / DECRYPT_EX "rsa-oaep": HASH, MGF_HASH, OAEP_LABEL. */
static int par_oaep(Req *q, bool encrypt) {
    const uint8_t *data, *label;
    size_t data_len, label_len, out_len = 0;
    char hash[16], mgf[16];
    uint8_t *out;
    int r;

    if ((r = get_bytes(q, VHSM_TAG_DATA, true, &data, &data_len)) < 0 ||
        (r = par_hashes(q, hash, mgf)) < 0 ||
        (r = get_bytes(q, VHSM_TAG_OAEP_LABEL, false, &label, &label_len)) < 0)
        return r;
    if (label_len > VHSM_OAEP_LABEL_MAX)
        return req_fail(q, -EMSGSIZE, "OAEP label longer than %u bytes", VHSM_OAEP_LABEL_MAX);
    if (!encrypt)
        vhsm_buf_mark_secret(q->out);
    out = vhsm_buf_put_reserve(q->out, VHSM_TAG_OUTPUT, 512); /* k <= 512 (RSA-4096) */
    if (!out)
        return -ENOMEM;
    r = vault_rsa_oaep(q->d->vault, q->peer, q->name, encrypt, hash, mgf[0] ? mgf : NULL, label,
                       label_len, data, data_len, out, 512, &out_len);
    if (r == -EINVAL)
        return req_fail(q, r,
                        "%s: key '%s': rsa-oaep: unknown hash '%s' or MGF1 hash '%s' (sha1, "
                        "sha224, sha256, sha384, sha512), or a data length the key cannot take",
                        encrypt ? "encrypt-ex" : "decrypt-ex", q->name, hash, mgf);
    if (r == -EKEYREJECTED)
        return req_fail(q, r, "decrypt-ex: key '%s': rsa-oaep: decryption failed", q->name);
    if (r < 0)
        return r;
    vhsm_buf_commit(q->out, out_len);
    return 0;
}

/* SIGN_EX / VERIFY_EX "rsa-pss" (HASH, MGF_HASH, SALT_LEN; DATA the digest) and "hmac" (HASH,
 * MAC_LEN; DATA the message). */
static int par_sign(Req *q, bool sign, const char *alg, const uint8_t *data, size_t data_len,
                    const uint8_t *sig, size_t sig_len) {
    char hash[16], mgf[16];
    uint8_t *out = NULL;
    size_t out_len = 0;
    uint32_t n;
    int r;

    if ((r = par_hashes(q, hash, mgf)) < 0)
        return r;
    if (strcmp(alg, "hmac") == 0) {
        uint8_t tag[64];
        if ((r = get_u32(q, VHSM_TAG_MAC_LEN, false, 0, &n)) < 0)
            return r;
        r = vault_hmac_ex(q->d->vault, q->peer, q->name, hash, n, data, data_len, sign ? NULL : sig,
                          sig_len, tag, &out_len);
        if (r == -EINVAL)
            return req_fail(q, r,
                            "%s: key '%s': hmac: unknown hash '%s' (sha1, sha224, sha256, "
                            "sha384, sha512) or a tag length over its size",
                            sign ? "sign-ex" : "verify-ex", q->name, hash);
        if (r < 0 || !sign)
            return r;
        vhsm_buf_put(q->out, VHSM_TAG_SIGNATURE, tag, out_len);
        explicit_bzero(tag, sizeof tag);
        return 0;
    }
    if ((r = get_u32(q, VHSM_TAG_SALT_LEN, true, 0, &n)) < 0)
        return r;
    r = vault_rsa_pss(q->d->vault, q->peer, q->name, sign, hash, mgf[0] ? mgf : NULL, n, data,
                      data_len, sig, sig_len, sign ? &out : NULL, sign ? &out_len : NULL);
    if (r == -EINVAL)
        return req_fail(q, r,
                        "%s: key '%s': rsa-pss: unknown hash '%s' or MGF1 hash '%s', a digest "
                        "that is not %s's size, or a salt of %u bytes over the key's maximum",
                        sign ? "sign-ex" : "verify-ex", q->name, hash, mgf, hash, n);
    if (r < 0 || !sign)
        return r;
    return put_owned(q, VHSM_TAG_SIGNATURE, out, out_len);
}

/* TOKEN_RESET_SO_PIN: root only. UID (the token), NEW_PIN. */
static int par_reset_so_pin(Req *q) {
    const uint8_t *pin;
    size_t pin_len;
    uint32_t uid;
    int r;
    if (q->peer->uid != 0)
        return req_fail(q, -EPERM, "token-reset-so-pin: only root may reset an SO PIN");
    if ((r = get_u32(q, VHSM_TAG_UID, true, 0, &uid)) < 0 ||
        (r = get_pin(q, VHSM_TAG_NEW_PIN, &pin, &pin_len)) < 0)
        return r;
    r = vault_token_reset_so_pin(q->d->vault, q->peer, (uid_t)uid, pin, pin_len);
    if (r == -ENOMEDIUM)
        return req_fail(q, r, "token-reset-so-pin: the token of uid %u is not initialised",
                        (unsigned)uid);
    if (r < 0)
        return r;
    log_audit_uid((uid_t)uid, "SO PIN of the token of uid %u reset by root (pid %d).",
                  (unsigned)uid, (int)q->peer->pid);
    return 0;
}

static int put_json(Req *q, json_t *j) {
    _cleanup_free_ char *s = json_dumps(j, JSON_COMPACT);
    if (!s)
        return -ENOMEM;
    vhsm_buf_put_str(q->out, VHSM_TAG_JSON, s);
    return 0;
}

/* KEY_LIST pages: at most this many keys, and a page stops once its JSON reaches this size
 * (every key's description is bounded by the ACL caps, so a page stays well under the frame). */
#define KEY_LIST_PAGE_DEFAULT 256u
#define KEY_LIST_PAGE_MAX 1000u
#define KEY_LIST_PAGE_BYTES (512u * 1024u)

static int op_key_list(Req *q) {
    json_auto_t *page = NULL;
    char after[VHSM_MAX_NAME + 1];
    uint32_t limit;
    int r;

    /* O: KEY_NAME = the cursor ("next" of the previous page), LENGTH = page size. */
    if ((r = get_str(q, VHSM_TAG_KEY_NAME, false, VHSM_MAX_NAME, after, sizeof after)) < 0 ||
        (r = get_u32(q, VHSM_TAG_LENGTH, false, KEY_LIST_PAGE_DEFAULT, &limit)) < 0)
        return r;
    if (limit == 0 || limit > KEY_LIST_PAGE_MAX)
        return req_fail(q, -EINVAL, "page size must be 1..%u keys", KEY_LIST_PAGE_MAX);
    if (after[0] && !vault_key_name_is_valid(after))
        return req_fail(q, -EINVAL, "invalid list cursor '%s' (a full key name)", after);
    r = vault_key_list_page(q->d->vault, q->peer, after, limit, KEY_LIST_PAGE_BYTES, &page);
    if (r < 0)
        return r;
    return put_json(q, page);
}

static int op_key_info(Req *q) {
    json_auto_t *info = NULL;
    int r;
    if ((r = get_name(q)) < 0)
        return r;
    r = vault_key_describe(q->d->vault, q->peer, q->name, &info);
    if (r < 0)
        return r;
    return put_json(q, info);
}

static int op_key_rotate(Req *q) {
    uint32_t v = 0;
    int r;
    if ((r = get_name(q)) < 0)
        return r;
    r = vault_key_rotate(q->d->vault, q->peer, q->name, &v);
    if (r < 0)
        return r;
    log_audit_uid(q->peer->uid, "Key '%s' rotated to version %u by uid %u.", q->name, v,
                  (unsigned)q->peer->uid);
    vhsm_buf_put_u32(q->out, VHSM_TAG_KEY_VERSION, v);
    return 0;
}

static int op_key_delete(Req *q) {
    int r;
    if ((r = get_name(q)) < 0)
        return r;
    r = vault_key_delete(q->d->vault, q->peer, q->name);
    if (r < 0)
        return r;
    log_audit_uid(q->peer->uid, "Key '%s' deleted by uid %u.", q->name, (unsigned)q->peer->uid);
    return 0;
}

static int op_key_set_acl(Req *q) {
    _cleanup_(vault_acl_done) VaultAcl acl = {0};
    bool present;
    int r;
    if ((r = get_name(q)) < 0 || (r = get_acl(q, &acl, &present)) < 0 ||
        (r = check_acl_caps(q, &acl)) < 0)
        return r;
    r = vault_key_set_acl(q->d->vault, q->peer, q->name, &acl);
    if (r < 0)
        return r;
    log_audit_uid(q->peer->uid, "ACL of key '%s' replaced by uid %u.", q->name,
                  (unsigned)q->peer->uid);
    return 0;
}

static int op_key_set_min_version(Req *q) {
    uint32_t v;
    int r;
    if ((r = get_name(q)) < 0 || (r = get_u32(q, VHSM_TAG_MIN_VERSION, true, 0, &v)) < 0)
        return r;
    r = vault_key_set_min_version(q->d->vault, q->peer, q->name, v);
    if (r < 0)
        return r;
    log_audit_uid(q->peer->uid, "Key '%s': minimum version set to %u by uid %u.", q->name, v,
                  (unsigned)q->peer->uid);
    return 0;
}

/* The common front of data operations. */
static int get_op(Req *q, AlgUse use, VaultOp *op, const uint8_t **data, size_t *data_len) {
    int r;
    *op = (VaultOp){0};
    if ((r = get_name(q)) < 0 || (r = get_alg(q, use, &op->alg)) < 0 ||
        (r = get_flags(q, &op->flags)) < 0 ||
        (r = get_u32(q, VHSM_TAG_KEY_VERSION, false, 0, &op->version)) < 0 ||
        (r = get_bytes(q, VHSM_TAG_DATA, true, data, data_len)) < 0 ||
        (r = get_bytes(q, VHSM_TAG_AAD, false, &op->aad, &op->aad_len)) < 0)
        return r;
    return 0;
}

static int put_owned(Req *q, uint16_t tag, uint8_t *p, size_t n) {
    vhsm_buf_put(q->out, tag, p, n);
    explicit_bzero(p, n);
    free(p);
    return 0;
}

/* Encrypt, wrap, sign and MAC share one shape: parse the op, call the vault, put its output. */
typedef int (*VaultProduceFn)(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
                              const uint8_t *in, size_t in_len, uint8_t **ret_out,
                              size_t *ret_out_len);

static int op_produce(Req *q, AlgUse use, VaultProduceFn fn, uint16_t tag) {
    const uint8_t *in;
    size_t in_len, n = 0;
    uint8_t *o = NULL;
    VaultOp op;
    int r;
    if ((r = get_op(q, use, &op, &in, &in_len)) < 0)
        return r;
    r = fn(q->d->vault, q->peer, q->name, &op, in, in_len, &o, &n);
    if (r < 0)
        return r;
    return put_owned(q, tag, o, n);
}

/* Encrypt and decrypt write straight into the reply buffer, which lives in the daemon's locked
 * memory and is wiped when sent or aborted: no per-request allocation (for decrypt: no Secret, an
 * mmap, mlock and munmap each) and no copy. */
typedef int (*VaultIntoFn)(Vault *v, const VaultPeer *peer, const char *name, const VaultOp *op,
                           const uint8_t *in, size_t in_len, uint8_t *out, size_t out_size,
                           size_t *ret_len);

static int op_into(Req *q, AlgUse use, VaultIntoFn fn, size_t (*max_of)(size_t)) {
    const uint8_t *in;
    size_t in_len, max, n = 0;
    uint8_t *p;
    VaultOp op;
    int r;
    if ((r = get_op(q, use, &op, &in, &in_len)) < 0)
        return r;
    if (in_len > VAULT_MAX_INPUT)
        return -EINVAL;
    max = max_of(in_len);
    p = vhsm_buf_put_reserve(q->out, VHSM_TAG_OUTPUT, max);
    if (!p)
        return q->out->error < 0 ? q->out->error : -ENOMEM;
    r = fn(q->d->vault, q->peer, q->name, &op, in, in_len, p, max, &n);
    if (r < 0)
        return r; /* the caller aborts (wipes) the reply */
    explicit_bzero(p + n, max - n);
    vhsm_buf_commit(q->out, n);
    return 0;
}

static size_t encrypt_max(size_t in_len) {
    return VAULT_ENCRYPT_MAX(in_len);
}

static size_t decrypt_max(size_t in_len) {
    return VAULT_DECRYPT_MAX(in_len);
}

static int op_encrypt(Req *q, AlgUse use) {
    return op_into(q, use, vault_encrypt_into, encrypt_max);
}

static int op_decrypt(Req *q, AlgUse use) {
    vhsm_buf_mark_secret(q->out); /* plaintext (or an unwrapped key) */
    return op_into(q, use, vault_decrypt_into, decrypt_max);
}

static int op_sign(Req *q, AlgUse use) {
    return op_produce(q, use, vault_sign, VHSM_TAG_SIGNATURE);
}

static int op_verify(Req *q, AlgUse use) {
    const uint8_t *in, *sig;
    size_t in_len, sig_len;
    VaultOp op;
    int r;
    if ((r = get_op(q, use, &op, &in, &in_len)) < 0 ||
        (r = get_bytes(q, VHSM_TAG_SIGNATURE, true, &sig, &sig_len)) < 0)
        return r;
    return vault_verify(q->d->vault, q->peer, q->name, &op, in, in_len, sig, sig_len);
}

static int op_random(Req *q) {
    uint32_t n;
    uint8_t *p = NULL;
    int r;
    if ((r = get_u32(q, VHSM_TAG_LENGTH, true, 0, &n)) < 0)
        return r;
    if (n == 0 || n > VAULT_RANDOM_MAX)
        return req_fail(q, -EINVAL, "random length must be 1..%u", VAULT_RANDOM_MAX);
    r = vault_random(n, &p);
    if (r < 0)
        return r;
    vhsm_buf_mark_secret(q->out);
    return put_owned(q, VHSM_TAG_OUTPUT, p, n);
}

static int op_pubkey(Req *q) {
    _cleanup_free_ char *s = NULL;
    char fmt[16];
    VaultPubFormat f;
    uint32_t v;
    int r;
    if ((r = get_name(q)) < 0 ||
        (r = get_str(q, VHSM_TAG_FORMAT, false, 15, fmt, sizeof fmt)) < 0 ||
        (r = get_u32(q, VHSM_TAG_KEY_VERSION, false, 0, &v)) < 0)
        return r;
    if (!fmt[0] || streq(fmt, "pem"))
        f = VAULT_PUB_PEM;
    else if (streq(fmt, "jwk"))
        f = VAULT_PUB_JWK;
    else
        return req_fail(q, -EINVAL, "unknown public key format '%s' (pem or jwk)", fmt);
    r = vault_key_export_public(q->d->vault, q->peer, q->name, v, f, &s);
    if (r < 0)
        return r;
    vhsm_buf_put_str(q->out, VHSM_TAG_OUTPUT, s);
    return 0;
}

static int op_ecdh_derive(Req *q) {
    _cleanup_(vault_acl_done) VaultAcl acl = {0};
    char new_name[VAULT_FULL_NAME_MAX + 1], label[VHSM_MAX_NAME + 1];
    const uint8_t *pub, *info;
    size_t pub_len, info_len;
    VaultKeySpec spec;
    int r;

    if ((r = get_name(q)) < 0 || (r = get_bytes(q, VHSM_TAG_PEER_KEY, true, &pub, &pub_len)) < 0 ||
        (r = get_bytes(q, VHSM_TAG_INFO, false, &info, &info_len)) < 0 ||
        (r = get_key_name(q, VHSM_TAG_NEW_KEY_NAME, new_name)) < 0 ||
        (r = get_spec(q, false, &acl, &spec, label, sizeof label)) < 0)
        return r;
    if (spec.type != VAULT_KEY_AES256)
        return req_fail(q, -EINVAL, "ECDH derives AES-256 keys only");
    r = vault_key_derive_ecdh(q->d->vault, q->peer, q->name, pub, pub_len, info, info_len, new_name,
                              &spec);
    if (r == -EEXIST)
        return req_fail(q, r, "key '%s' already exists", new_name);
    if (r < 0)
        return r;
    log_audit_uid(q->peer->uid, "Key '%s' derived by ECDH from '%s' by uid %u.", new_name, q->name,
                  (unsigned)q->peer->uid);
    return 0;
}

static int op_transfer_key_create(Req *q) {
    json_auto_t *jwk = NULL;
    uint32_t life;
    int r;
    if (q->peer->uid != 0)
        return req_fail(q, -EPERM, "only root (the nitride agent) may create transfer keys");
    if ((r = get_u32(q, VHSM_TAG_LIFETIME, false, 300, &life)) < 0)
        return r;
    if (life == 0 || life > VAULT_TRANSFER_MAX_LIFETIME)
        return req_fail(q, -EINVAL, "transfer key lifetime must be 1..%u seconds",
                        VAULT_TRANSFER_MAX_LIFETIME);
    r = vault_transfer_key_create(q->d->vault, life, &jwk);
    if (r == -EUSERS)
        return req_fail(q, -EBUSY, "too many live transfer keys");
    if (r < 0)
        return r;
    return put_json(q, jwk);
}

/* The release header's ACL ({"use_uid":[..], "use_gid", "use_cgroup", "admin_uid",
 * "admin_gid", "admin_cgroup"}, validated by the release's verifier) as a vault ACL; an empty
 * half means the importer (root), as for KEY_CREATE. */
static int release_acl(Req *q, const json_t *j, VaultAcl *acl) {
    static const struct {
        const char *name;
        bool admin;
        char kind; /* u, g, c */
    } members[] = {
        {"use_uid", false, 'u'},  {"use_gid", false, 'g'},  {"use_cgroup", false, 'c'},
        {"admin_uid", true, 'u'}, {"admin_gid", true, 'g'}, {"admin_cgroup", true, 'c'},
    };
    int r = 0;
    for (size_t m = 0; m < ELEMENTSOF(members); m++) {
        VaultAclList *l = members[m].admin ? &acl->admin : &acl->use;
        const json_t *a = json_object_get(j, members[m].name), *e;
        size_t i;
        json_array_foreach(a, i, e) {
            if (members[m].kind == 'c')
                r = vault_acl_list_add_cgroup(l, json_string_value(e));
            else if (members[m].kind == 'u')
                r = vault_acl_list_add_uid(l, (uid_t)json_integer_value(e));
            else
                r = vault_acl_list_add_gid(l, (gid_t)json_integer_value(e));
            if (r < 0)
                return req_fail(q, r, "the release's ACL (%s) is not valid here", members[m].name);
        }
    }
    if (acl_list_empty(&acl->use) && (r = vault_acl_list_add_uid(&acl->use, q->peer->uid)) < 0)
        return r;
    if (acl_list_empty(&acl->admin) && (r = vault_acl_list_add_uid(&acl->admin, q->peer->uid)) < 0)
        return r;
    return check_acl_caps(q, acl);
}

static int op_import_release(Req *q) {
    _cleanup_(nt_release_info_clear) NtReleaseInfo h = {};
    _cleanup_(vault_acl_done) VaultAcl acl = {0};
    _cleanup_free_ char *release = NULL, *jwe = NULL;
    json_auto_t *reply = NULL;
    TokenVerdict tv;
    bool have_token = false;
    char err[256];
    VaultRelease rel;
    int r;

    if (q->peer->uid != 0)
        return req_fail(q, -EPERM, "only root (the nitride agent) may import keys");
    if (!q->d->kms_jwks)
        return req_fail(q, -EOPNOTSUPP,
                        "vhsmd has no pinned KMS release keys: start it with --kms-keys FILE "
                        "(kmsd's GET /v1/release-keys, or its PEM public keys)");
    r = vhsm_body_get_str_alloc(q->body, q->len, VHSM_TAG_RELEASE, VHSM_MAX_RELEASE, &release);
    if (r == -ENOENT)
        return req_fail(q, -EBADMSG, "missing release");
    if (r == -ENAMETOOLONG)
        return req_fail(q, -EMSGSIZE, "release larger than %u bytes", VHSM_MAX_RELEASE);
    if (r < 0)
        return req_fail(q, -EBADMSG, "malformed release field");
    r = nt_release_verify(release, q->d->kms_jwks, time(NULL), 0, &h, &jwe, err);
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        return req_fail(q, r, "release refused: %s", err);
    snprintf(q->name, sizeof q->name, "%s", h.name);

    /* The token (optional): checked before anything is spent, and bound to this release: it
     * must confirm the transfer key the release is encrypted to. */
    if ((r = get_token_verdict(q, false, &have_token, &tv)) < 0)
        return r;
    if (have_token && !streq(tv.kid, h.recipient_kid))
        return req_fail(q, -EKEYREJECTED,
                        "key '%s': the token confirms transfer key %s, the release is for %s",
                        q->name, tv.kid, h.recipient_kid);

    rel = (VaultRelease){
        .name = h.name,
        .spec = {.type = vault_key_type_from_string(h.type),
                 .policy = {.kind = vault_policy_kind_from_string(h.policy),
                            .max_age_sec = h.max_age},
                 .label = h.label,
                 .acl = &acl},
        .version = h.version,
        .recipient_kid = h.recipient_kid,
    };
    if (rel.spec.type < 0 || rel.spec.policy.kind < 0)
        return req_fail(q, -EINVAL, "key '%s': type or policy not known to this vault", q->name);
    if ((r = release_acl(q, h.acl, &acl)) < 0)
        return r;
    r = vault_transfer_import_release(q->d->vault, q->peer, jwe, &rel);
    switch (r) {
    case 0:
        break;
    case -EEXIST:
        return req_fail(q, r, "key '%s': version %u already imported (a replayed release)", q->name,
                        h.version);
    case -ESTALE:
        return req_fail(q, r, "key '%s': version %u is older than the version imported already",
                        q->name, h.version);
    case -EMEDIUMTYPE:
        return req_fail(q, -EINVAL, "key '%s' exists with another type than the release's %s",
                        q->name, h.type);
    case -E2BIG:
        return req_fail(q, -EINVAL, "key '%s': version %u is above this vault's limit of versions",
                        q->name, h.version);
    case -EKEYEXPIRED:
        return req_fail(q, r, "key '%s': the transfer key expired: attest again", q->name);
    case -ENOKEY:
        return req_fail(q, r,
                        "key '%s': the release is for transfer key %s, which this vault does not "
                        "hold (never created here, or already used)",
                        q->name, h.recipient_kid);
    case -EKEYREJECTED:
        return req_fail(q, r, "key '%s': the JWE does not decrypt with its transfer key", q->name);
    case -EBADMSG:
        return req_fail(q, r, "key '%s': the JWE or the key material in it is malformed", q->name);
    default:
        return r;
    }
    log_audit("Key '%s' version %u (%s, policy %s) imported from KMS release '%s' (secret '%s') "
              "by pid %d.",
              h.name, h.version, h.type, h.policy, h.jti, h.secret_id, (int)q->peer->pid);
    if (have_token)
        record_verdict(q, &tv);
    key_event(q->d, h.name, have_token);
    reply = json_pack("{s:s,s:I}", "name", h.name, "version", (json_int_t)h.version);
    if (!reply)
        return -ENOMEM;
    return put_json(q, reply);
}

/* -EDQUOT: whose quota, what it holds, what the limits are. */
static void quota_message(Req *q, uint16_t opcode) {
    VaultQuota lim;
    VaultUsage u;
    /* A non-root peer creates only in its own namespace: it is shown its own usage, never
     * another's (ECDH derive names a source key that may be someone else's). */
    uid_t owner = q->peer->uid;
    vault_get_quota(q->d->vault, &lim);
    vault_usage(q->d->vault, owner, &u);
    if (q->peer->uid == 0)
        (void)snprintf(q->msg, sizeof q->msg,
                       "%s: key '%s': quota exceeded: the vault holds all it may (%" PRIu64
                       " bytes charged to all owners, root's reserve included)",
                       vhsm_opcode_to_string(opcode), q->name, u.bytes);
    else
        (void)snprintf(q->msg, sizeof q->msg,
                       "%s: key '%s': quota exceeded: uid %u holds %u keys, %u versions, %" PRIu64
                       " bytes (limits %u, %u, %" PRIu64
                       " bytes per uid; the vault's shared limit may also be reached)",
                       vhsm_opcode_to_string(opcode), q->name, (unsigned)owner, u.keys, u.versions,
                       u.bytes, lim.max_keys, lim.max_versions, lim.max_bytes);
}

/* The message of a failed request when the handler gave none: names the key and the reason. */
static void default_message(Req *q, uint16_t opcode, int r) {
    const char *reason;
    switch (-r) {
    case EPERM:
    case EACCES:
        reason = "permission denied";
        break;
    case ENOKEY:
        reason = "no such key or key version";
        break;
    case EKEYEXPIRED:
        reason = "attestation required: the key's policy needs a fresh attestation verdict";
        break;
    case EKEYREJECTED:
        reason = "verification failed";
        break;
    case EKEYREVOKED:
        reason = "key version retired";
        break;
    case EOPNOTSUPP:
        reason = "operation not supported by this key type";
        break;
    case EEXIST:
        reason = "a key with this name exists";
        break;
    case ENOTUNIQ:
        reason = "the name lies in another owner's namespace: create keys under your own "
                 "(a plain name), address others' keys by their full name";
        break;
    case EDQUOT:
        quota_message(q, opcode);
        return;
    case E2BIG:
        reason = "ACL too large";
        break;
    case EBADMSG:
        reason = "malformed input";
        break;
    case EBADR:
        reason = "not logged in: this uid's token has a user PIN, log in first (C_Login)";
        break;
    case EINVAL:
        reason = "invalid argument";
        break;
    case ENOMEM:
        reason = "out of memory, or the key version is not loaded (the secure heap was full at "
                 "start: see vhsmd's log)";
        break;
    default:
        reason = strerror(-r);
    }
    if (q->name[0])
        (void)snprintf(q->msg, sizeof q->msg, "%s: key '%s': %s", vhsm_opcode_to_string(opcode),
                       q->name, reason);
    else
        (void)snprintf(q->msg, sizeof q->msg, "%s: %s", vhsm_opcode_to_string(opcode), reason);
}

/* ---- hard-wrap: key wrapping and derivation into objects (docs/protocol.md) ---- */

static int get_kw_alg(Req *q, bool *ret_pad) {
    char alg[32];
    int r = get_str(q, VHSM_TAG_ALGORITHM, true, 31, alg, sizeof alg);
    if (r < 0)
        return r;
    if (streq(alg, "aes-kw"))
        *ret_pad = false;
    else if (streq(alg, "aes-kwp"))
        *ret_pad = true;
    else
        return req_fail(q, -EOPNOTSUPP, "unknown key wrap algorithm '%s' (aes-kw, aes-kwp)", alg);
    return 0;
}

static int wrap_fail(Req *q, const char *op, int r) {
    switch (r) {
    case -ENOEXEC:
        return req_fail(q, r, "%s: the key to wrap is not extractable", op);
    case -EBADSLT:
        return req_fail(q, r,
                        "%s: the key to wrap may be wrapped only with a trusted key, and key '%s' "
                        "is not trusted",
                        op, q->name);
    case -ERANGE:
        return req_fail(q, r, "%s: length out of range for the algorithm", op);
    case -EKEYREJECTED:
        return req_fail(q, r,
                        "%s: the wrapped key does not unwrap under key '%s', or holds no "
                        "valid key",
                        op, q->name);
    case -EMEDIUMTYPE:
        return req_fail(q, r, "%s: the key is not of the type or length asked for", op);
    case -EOPNOTSUPP:
        return req_fail(q, r, "%s: a key of the wrong type (AES wrapping keys, EC base keys)", op);
    case -EINVAL:
        return req_fail(q, r,
                        "%s: invalid arguments (the new key's type or family, its flags, or "
                        "attributes vhsmd owns or gives twice)",
                        op);
    default:
        return attrs_fail(q, op, r);
    }
}

/* WRAP_KEY: KEY_NAME (wrapping key), ALGORITHM, TARGET_NAME, LENGTH_ONLY? -> OUTPUT or LENGTH. */
static int op_wrap_key(Req *q) {
    char target[VAULT_FULL_NAME_MAX + 1];
    uint8_t *out = NULL, only = 0;
    size_t n = 0;
    bool pad = false;
    int r = vhsm_body_get_u8(q->body, q->len, VHSM_TAG_LENGTH_ONLY, &only);
    if (r < 0 && r != -ENOENT)
        return req_fail(q, -EBADMSG, "malformed length-only flag");
    if ((r = get_name(q)) < 0 || (r = get_kw_alg(q, &pad)) < 0 ||
        (r = get_key_name(q, VHSM_TAG_TARGET_NAME, target)) < 0)
        return r;
    r = vault_key_wrap(q->d->vault, q->peer, q->name, pad, target, only == 1, &out, &n);
    if (r == -EPERM)
        return req_fail(q, r,
                        "wrap-key: key '%s' refused: the ACL, no WRAP usage, or it has been a data "
                        "cipher (ENCRYPT/DECRYPT): a key that can decrypt data never wraps keys",
                        q->name);
    if (r < 0)
        return wrap_fail(q, "wrap-key", r);
    if (only == 1) {
        vhsm_buf_put_u32(q->out, VHSM_TAG_LENGTH, (uint32_t)n);
        return 0;
    }
    log_audit_uid(q->peer->uid, "Key '%s' wrapped under '%s' by uid %u.", target, q->name,
                  (unsigned)q->peer->uid);
    return put_owned(q, VHSM_TAG_OUTPUT, out, n);
}

/* The spec of a new object (flags, attributes, ACL, label) for unwrap and derive; the type is
 * a family or an exact type given apart (KEY_TYPE). */
static int get_new_object(Req *q, VaultAcl *acl, VaultKeySpec *spec, char *label, size_t label_size,
                          VaultAttr attrs[static VAULT_ATTR_MAX],
                          char new_name[static VAULT_FULL_NAME_MAX + 1], char type[32],
                          uint32_t *value_len) {
    int r;
    if ((r = get_key_name(q, VHSM_TAG_NEW_KEY_NAME, new_name)) < 0 ||
        (r = get_str(q, VHSM_TAG_KEY_TYPE, true, 31, type, 32)) < 0 ||
        (r = get_u32(q, VHSM_TAG_VALUE_LEN, false, 0, value_len)) < 0 ||
        (r = get_u32(q, VHSM_TAG_OBJ_FLAGS, false, 0, &spec->obj_flags)) < 0)
        return r;
    uint32_t flags = spec->obj_flags;
    VhsmTlv t;
    size_t off = 0;
    while (vhsm_tlv_next(q->body, q->len, &off, &t) > 0)
        if (t.tag == VHSM_TAG_POLICY || t.tag == VHSM_TAG_MAX_AGE)
            return req_fail(q, -EINVAL, "a policy is not chosen here: local keys only");
    *spec = (VaultKeySpec){.type = VAULT_KEY_AES256, .policy = {.kind = VAULT_POLICY_LOCAL}};
    r = get_str(q, VHSM_TAG_LABEL, false, label_size - 1, label, label_size);
    if (r < 0)
        return r;
    if (label[0])
        spec->label = label;
    bool acl_present = false;
    if ((r = get_acl(q, acl, &acl_present)) < 0)
        return r;
    if (acl_present) {
        if (acl_list_empty(&acl->use) && (r = vault_acl_list_add_uid(&acl->use, q->peer->uid)) < 0)
            return r;
        if (acl_list_empty(&acl->admin) &&
            (r = vault_acl_list_add_uid(&acl->admin, q->peer->uid)) < 0)
            return r;
        if ((r = check_acl_caps(q, acl)) < 0)
            return r;
        spec->acl = acl;
    }
    spec->obj_flags = flags;
    if (flags & ~VAULT_OBJ_SETTABLE)
        return req_fail(q, -EINVAL, "flags 0x%x: only bits 0..14 may be chosen", flags);
    if ((r = get_attrs(q, attrs, &spec->n_attrs)) < 0)
        return r;
    spec->attrs = attrs;
    return 0;
}

/* UNWRAP_KEY: KEY_NAME (unwrapping key), ALGORITHM, DATA (wrapped), NEW_KEY_NAME, KEY_TYPE, and
 * the new object's VALUE_LEN? OBJ_FLAGS? ATTR* LABEL? ACL -> KEY_TYPE (the type it got). */
static int op_unwrap_key(Req *q) {
    _cleanup_(vault_acl_done) VaultAcl acl = {0};
    char new_name[VAULT_FULL_NAME_MAX + 1], label[VHSM_MAX_NAME + 1], type[32];
    VaultAttr attrs[VAULT_ATTR_MAX];
    VaultKeySpec spec = {0};
    VaultKeyType got;
    const uint8_t *in;
    size_t in_len;
    uint32_t value_len;
    bool pad = false;
    int r;

    if ((r = get_name(q)) < 0 || (r = get_kw_alg(q, &pad)) < 0 ||
        (r = get_bytes(q, VHSM_TAG_DATA, true, &in, &in_len)) < 0 ||
        (r = get_new_object(q, &acl, &spec, label, sizeof label, attrs, new_name, type,
                            &value_len)) < 0)
        return r;
    r = vault_key_unwrap(q->d->vault, q->peer, q->name, pad, in, in_len, type, value_len, new_name,
                         &spec, q->d->no_plaintext_import, &got);
    if (r == -EPERM && q->d->no_plaintext_import)
        return req_fail(q, r,
                        "unwrap-key: key '%s': refused (ACL or usage), or not a key generated in "
                        "vhsmd, never extractable and never a data cipher (vhsmd "
                        "--no-plaintext-import)",
                        q->name);
    if (r == -EEXIST)
        return req_fail(q, r, "key '%s' already exists", new_name);
    if (r < 0)
        return wrap_fail(q, "unwrap-key", r);
    vhsm_buf_put_str(q->out, VHSM_TAG_KEY_TYPE, vault_key_type_to_string(got));
    log_audit_uid(q->peer->uid, "Key '%s' (%s) unwrapped with '%s' by uid %u.", new_name,
                  vault_key_type_to_string(got), q->name, (unsigned)q->peer->uid);
    return 0;
}

/* DERIVE_KEY: KEY_NAME (base), ALGORITHM "ecdh1", EC_POINT, KDF, SHARED_DATA?, NEW_KEY_NAME,
 * KEY_TYPE, VALUE_LEN, OBJ_FLAGS? ATTR* LABEL? ACL -> KEY_TYPE. Never returns key material. */
static int op_derive_key(Req *q) {
    _cleanup_(vault_acl_done) VaultAcl acl = {0};
    char new_name[VAULT_FULL_NAME_MAX + 1], label[VHSM_MAX_NAME + 1], type[32], alg[32], kdf[16];
    VaultAttr attrs[VAULT_ATTR_MAX];
    VaultKeySpec spec = {0};
    VaultKeyType got;
    const uint8_t *point, *shared;
    size_t point_len, shared_len;
    uint32_t value_len;
    int r;

    if ((r = get_name(q)) < 0 ||
        (r = get_str(q, VHSM_TAG_ALGORITHM, true, 31, alg, sizeof alg)) < 0 ||
        (r = get_bytes(q, VHSM_TAG_EC_POINT, true, &point, &point_len)) < 0 ||
        (r = get_str(q, VHSM_TAG_KDF, true, sizeof kdf - 1, kdf, sizeof kdf)) < 0 ||
        (r = get_bytes(q, VHSM_TAG_SHARED_DATA, false, &shared, &shared_len)) < 0 ||
        (r = get_new_object(q, &acl, &spec, label, sizeof label, attrs, new_name, type,
                            &value_len)) < 0)
        return r;
    if (!streq(alg, "ecdh1"))
        return req_fail(q, -EOPNOTSUPP, "unknown derivation '%s' (ecdh1)", alg);
    r = vault_key_derive_ecdh1(q->d->vault, q->peer, q->name, point, point_len, kdf, shared,
                               shared_len, type, value_len, new_name, &spec, &got);
    if (r == -EBADMSG)
        return req_fail(q, r,
                        "derive-key: the peer's EC point is malformed or not on the curve "
                        "of key '%s'",
                        q->name);
    if (r == -EINVAL)
        return req_fail(q, r,
                        "derive-key: invalid parameters (kdf null or sha1..sha512; shared data "
                        "<= 1024 bytes, none with kdf null; value length 1..64)");
    if (r == -EEXIST)
        return req_fail(q, r, "key '%s' already exists", new_name);
    if (r < 0)
        return wrap_fail(q, "derive-key", r);
    vhsm_buf_put_str(q->out, VHSM_TAG_KEY_TYPE, vault_key_type_to_string(got));
    log_audit_uid(q->peer->uid, "Key '%s' (%s) derived by ECDH from '%s' by uid %u.", new_name,
                  vault_key_type_to_string(got), q->name, (unsigned)q->peer->uid);
    return 0;
}

int dispatch_reply_error(VhsmBuf *out, uint32_t id, int error, const char *message) {
    VhsmStatus st = vhsm_status_from_errno(error < 0 ? error : -EIO);
    vhsm_buf_begin(out, VHSM_KIND_RESPONSE, (uint16_t)st, id);
    vhsm_buf_put_u32(out, VHSM_TAG_ERRNO, (uint32_t)(error < 0 ? -error : EIO));
    if (message)
        vhsm_buf_put(out, VHSM_TAG_MESSAGE, message, MIN(strlen(message), VHSM_MAX_STRING));
    return vhsm_buf_end(out);
}

/* Operations whose missing or stale key an agent may provide (docs/protocol.md "Agent
 * channel"): the uses of a key. */
static bool opcode_parks(uint16_t opcode) {
    switch (opcode) {
    case VHSM_OP_ENCRYPT:
    case VHSM_OP_DECRYPT:
    case VHSM_OP_SIGN:
    case VHSM_OP_VERIFY:
    case VHSM_OP_MAC:
    case VHSM_OP_MAC_VERIFY:
    case VHSM_OP_WRAP:
    case VHSM_OP_UNWRAP:
    case VHSM_OP_PUBKEY:
        return true;
    default:
        return false;
    }
}

int dispatch_request(Dispatch *d, Peer *peer, const VhsmHeader *h, const uint8_t *body,
                     VhsmBuf *out) {
    return dispatch_request_park(d, peer, h, body, out, NULL);
}

int dispatch_request_park(Dispatch *d, Peer *peer, const VhsmHeader *h, const uint8_t *body,
                          VhsmBuf *out, const DispatchPark *park) {
    char why_not[160] = "";
    int park_error = 0;
    VaultPeer vp = {.uid = peer->uid,
                    .gid = peer->gid,
                    .groups = peer->groups,
                    .n_groups = peer->n_groups,
                    .pid = peer->pid,
                    .cgroup = peer->cgroup,
                    .session = peer->session,
                    .conn_id = peer->conn_id};
    Req q = {.d = d, .peer = &vp, .conn = peer, .body = body, .len = h->body_len, .out = out};
    bool denied, gated;
    int r;

    r = vhsm_body_validate(body, h->body_len);
    if (r < 0)
        return dispatch_reply_error(out, h->id, r == -E2BIG ? -E2BIG : -EBADMSG,
                                    r == -E2BIG ? "too many fields" : "malformed TLV body");

    log_debug("Request %s (id %u) from uid %u pid %d.", vhsm_opcode_to_string(h->code), h->id,
              (unsigned)peer->uid, (int)peer->pid);
    gated = peer->uid != 0 && vhsm_opcode_changes_keys(h->code);
    if (gated) {
        const char *why = gate_enter(d, peer->uid);
        if (why)
            return dispatch_reply_error(out, h->id, -EBUSY, why);
    }
    vhsm_buf_begin(out, VHSM_KIND_RESPONSE, VHSM_STATUS_OK, h->id);
    switch (h->code) {
    case VHSM_OP_PING:
        r = op_ping(&q);
        break;
    case VHSM_OP_ATTESTATION_STATUS:
        r = op_attestation_status(&q);
        break;
    case VHSM_OP_ATTESTATION_SET:
        r = op_attestation_set(&q);
        break;
    case VHSM_OP_KEY_CREATE:
        r = op_key_create(&q);
        break;
    case VHSM_OP_KEY_LIST:
        r = op_key_list(&q);
        break;
    case VHSM_OP_KEY_INFO:
        r = op_key_info(&q);
        break;
    case VHSM_OP_KEY_ROTATE:
        r = op_key_rotate(&q);
        break;
    case VHSM_OP_KEY_DELETE:
        r = op_key_delete(&q);
        break;
    case VHSM_OP_KEY_SET_ACL:
        r = op_key_set_acl(&q);
        break;
    case VHSM_OP_KEY_SET_MIN_VERSION:
        r = op_key_set_min_version(&q);
        break;
    case VHSM_OP_ENCRYPT:
        r = op_encrypt(&q, ALG_FOR_CRYPT);
        break;
    case VHSM_OP_DECRYPT:
        r = op_decrypt(&q, ALG_FOR_CRYPT);
        break;
    case VHSM_OP_SIGN:
        r = op_sign(&q, ALG_FOR_SIGN);
        break;
    case VHSM_OP_VERIFY:
        r = op_verify(&q, ALG_FOR_SIGN);
        break;
    case VHSM_OP_MAC:
        r = op_sign(&q, ALG_FOR_MAC);
        break;
    case VHSM_OP_MAC_VERIFY:
        r = op_verify(&q, ALG_FOR_MAC);
        break;
    case VHSM_OP_WRAP:
        r = op_encrypt(&q, ALG_FOR_WRAP);
        break;
    case VHSM_OP_UNWRAP:
        r = op_decrypt(&q, ALG_FOR_WRAP);
        break;
    case VHSM_OP_RANDOM:
        r = op_random(&q);
        break;
    case VHSM_OP_PUBKEY:
        r = op_pubkey(&q);
        break;
    case VHSM_OP_ECDH_DERIVE:
        r = op_ecdh_derive(&q);
        break;
    case VHSM_OP_TRANSFER_KEY_CREATE:
        r = op_transfer_key_create(&q);
        break;
    case VHSM_OP_IMPORT_RELEASE:
        r = op_import_release(&q);
        break;
    case VHSM_OP_TOKEN_INFO:
        r = op_token_info(&q);
        break;
    case VHSM_OP_TOKEN_INIT:
        r = op_token_init(&q);
        break;
    case VHSM_OP_LOGIN:
        r = op_login(&q);
        break;
    case VHSM_OP_LOGIN_TICKET:
        r = op_login_ticket(&q);
        break;
    case VHSM_OP_LOGOUT:
        r = op_logout(&q);
        break;
    case VHSM_OP_INIT_PIN:
        r = op_init_pin(&q);
        break;
    case VHSM_OP_SET_PIN:
        r = op_set_pin(&q);
        break;
    case VHSM_OP_OBJECT_CREATE:
        r = op_object_create(&q);
        break;
    case VHSM_OP_OBJECT_SET:
        r = op_object_set(&q);
        break;
    case VHSM_OP_OBJECT_COPY:
        r = op_object_copy(&q);
        break;
    case VHSM_OP_ENCRYPT_EX:
        r = op_crypt_ex(&q, true);
        break;
    case VHSM_OP_DECRYPT_EX:
        r = op_crypt_ex(&q, false);
        break;
    case VHSM_OP_SIGN_EX:
        r = op_sign_ex(&q, true);
        break;
    case VHSM_OP_VERIFY_EX:
        r = op_sign_ex(&q, false);
        break;
    case VHSM_OP_TOKEN_RESET_SO_PIN:
        r = par_reset_so_pin(&q);
        break;
    case VHSM_OP_WRAP_KEY:
        r = op_wrap_key(&q);
        break;
    case VHSM_OP_UNWRAP_KEY:
        r = op_unwrap_key(&q);
        break;
    case VHSM_OP_DERIVE_KEY:
        r = op_derive_key(&q);
        break;
    default:
        r = req_fail(&q, -EBADRQC, "unknown opcode 0x%04x", h->code);
    }
    if (gated)
        gate_leave(d, peer->uid);
    if (r >= 0) {
        r = vhsm_buf_end(out);
        if (r >= 0)
            return 0;
        if (r == -EMSGSIZE)
            (void)req_fail(&q, r, "reply larger than %u bytes", VHSM_MAX_BODY);
    } else
        vhsm_buf_abort(out);

    /* A non-root peer is told -EPERM for an absent kms/ key (as for one it may not use): it
     * waits for the agent too, which may bring it (the re-run then applies the key's ACL). */
    if (park && r == -EPERM && peer->uid != 0 && q.name[0] && opcode_parks(h->code) &&
        strncmp(q.name, "kms/", 4) == 0 && !vault_kms_key_exists(d->vault, q.name))
        park_error = -ENOKEY;
    else if (r == -ENOKEY || r == -EKEYEXPIRED)
        park_error = r;
    if (park && park_error && q.name[0] && opcode_parks(h->code)) {
        int p = park->park(park->userdata, q.name, park_error, why_not, sizeof why_not);
        if (p == 1) {
            log_debug("Request %s (id %u) of uid %u waits for the agent: key '%s' %s.",
                      vhsm_opcode_to_string(h->code), h->id, (unsigned)peer->uid, q.name,
                      park_error == -ENOKEY ? "missing" : "stale");
            return DISPATCH_PARKED;
        }
        if (p != -EBUSY)
            why_not[0] = 0;
    }
    if (!q.msg[0])
        default_message(&q, h->code, r);
    if (why_not[0]) {
        size_t n = strlen(q.msg);
        (void)snprintf(q.msg + n, sizeof q.msg - n, " (not waiting for the agent: %s)", why_not);
    }
    if (r == -EPERM || r == -EACCES)
        log_uid_notice(peer->uid, "Denied %s on key '%s' to uid %u gid %u pid %d: %s",
                       vhsm_opcode_to_string(h->code), q.name, (unsigned)peer->uid,
                       (unsigned)peer->gid, (int)peer->pid, q.msg);
    else
        log_debug("Request %s failed: %s", vhsm_opcode_to_string(h->code), q.msg);
    denied = r == -EPERM || r == -EACCES;
    r = dispatch_reply_error(out, h->id, r, q.msg);
    return r < 0 ? r : denied; /* 1: denied, the server counts it against the connection */
}
