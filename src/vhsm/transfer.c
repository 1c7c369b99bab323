/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Transfer keys (ephemeral P-384 or P-256 ECDH pairs with an expiry) and the sealed import of a
 * compact JWE (ECDH-ES+A256KW / A256GCM) encrypted to one of them. The protected header is checked
 * strictly before libjose sees the JWE; libjose unwraps the CEK with a private JWK that exists
 * only inside vault_transfer_import() (wiped by the zeroising jansson allocator of vault_init());
 * the plaintext is decrypted straight into a Secret through a jose_io_t sink, never into heap
 * buffers that libjose would realloc. A transfer key is removed from the table before it is
 * used (one-shot), so it cannot serve as a decryption oracle.
 */
#include "transfer.h"

#include <jose/jose.h>
#include <openssl/evp.h>
#include <string.h>

#include "core/alloc.h"
#include "core/encoding.h"
#include "core/jwe.h"
#include "core/log.h"
#include "core/openssl-util.h"
#include "vhsm/vault-private.h"

struct TransferKey {
    char kid[VAULT_THUMBPRINT_LEN + 1];
    const char *curve; /* "P-384" or "P-256" */
    EVP_PKEY *pkey;
    time_t expires;
};

static TransferKey *transfer_key_free(TransferKey *t) {
    if (!t)
        return NULL;
    EVP_PKEY_free(t->pkey);
    explicit_bzero(t, sizeof(*t));
    free(t);
    return NULL;
}
DEFINE_TRIVIAL_CLEANUP_FUNC(TransferKey *, transfer_key_free);

static void transfer_lock(pthread_mutex_t **m) {
    if (*m)
        (void)pthread_mutex_unlock(*m);
}
#define TRANSFER_LOCKED(v)                                                                         \
    _cleanup_(transfer_lock) _unused_ pthread_mutex_t *tl_guard_ =                                 \
        (pthread_mutex_lock(&(v)->transfer_lock), &(v)->transfer_lock)

void vault_transfer_free_all(Vault *v) {
    for (size_t i = 0; i < v->n_transfer; i++)
        transfer_key_free(v->transfer[i]);
    free(v->transfer);
    v->transfer = NULL;
    v->n_transfer = 0;
}

/* Drops expired keys; transfer_lock held. */
static void purge_expired_locked(Vault *v, time_t now) {
    size_t j = 0;
    for (size_t i = 0; i < v->n_transfer; i++) {
        if (v->transfer[i]->expires <= now)
            transfer_key_free(v->transfer[i]);
        else
            v->transfer[j++] = v->transfer[i];
    }
    v->n_transfer = j;
}

size_t vault_transfer_key_count(Vault *v) {
    TRANSFER_LOCKED(v);
    purge_expired_locked(v, vault_now(v));
    return v->n_transfer;
}

int vault_set_transfer_curve(Vault *v, const char *curve) {
    if (!v || !curve || (!streq(curve, "P-384") && !streq(curve, "P-256")))
        return -EINVAL;
    TRANSFER_LOCKED(v);
    v->transfer_curve = streq(curve, "P-256") ? "P-256" : "P-384";
    return 0;
}

int vault_transfer_key_create(Vault *v, uint32_t lifetime_sec, json_t **ret_jwk) {
    _cleanup_(transfer_key_freep) TransferKey *t = NULL;
    json_auto_t *jwk = NULL;
    TransferKey **a;
    const char *kid;
    int r;

    if (!v || !ret_jwk || lifetime_sec == 0 || lifetime_sec > VAULT_TRANSFER_MAX_LIFETIME)
        return -EINVAL;
    t = nt_calloc(1, sizeof(TransferKey));
    if (!t)
        return -ENOMEM;
    {
        TRANSFER_LOCKED(v);
        t->curve = v->transfer_curve ? v->transfer_curve : VAULT_TRANSFER_DEFAULT_CURVE;
    }
    t->pkey = EVP_PKEY_Q_keygen(NULL, NULL, "EC", t->curve);
    if (!t->pkey)
        return nt_openssl_error(-EIO, "EVP_PKEY_Q_keygen");
    if ((r = vault_pkey_to_jwk(t->pkey, false, &jwk)) < 0)
        return r;
    kid = json_string_value(json_object_get(jwk, "kid"));
    if (!kid || strlen(kid) != VAULT_THUMBPRINT_LEN)
        return -EIO;
    memcpy(t->kid, kid, VAULT_THUMBPRINT_LEN + 1);
    if (json_object_set_new(jwk, "alg", json_string("ECDH-ES+A256KW")) < 0 ||
        json_object_set_new(jwk, "use", json_string("enc")) < 0)
        return -ENOMEM;

    TRANSFER_LOCKED(v);
    t->expires = vault_now(v) + (time_t)lifetime_sec;
    purge_expired_locked(v, vault_now(v));
    if (v->n_transfer >= VAULT_TRANSFER_MAX_KEYS)
        return -EUSERS;
    if (nt_alloc_should_fail())
        return -ENOMEM;
    a = reallocarray(v->transfer, v->n_transfer + 1, sizeof(TransferKey *));
    if (!a)
        return -ENOMEM;
    v->transfer = a;
    v->transfer[v->n_transfer++] = TAKE_PTR(t);
    *ret_jwk = TAKE_PTR(jwk);
    return 0;
}

/* Remembers a spent transfer key's kid until it would have expired (a ring: the oldest entry
 * goes first); transfer_lock held. */
static void remember_spent_locked(Vault *v, const TransferKey *t) {
    TransferSpent *e = &v->transfer_spent[v->n_transfer_spent++ % VAULT_TRANSFER_RECENT];
    memcpy(e->kid, t->kid, sizeof e->kid);
    e->expires = t->expires;
}

bool vault_transfer_key_known(Vault *v, const char *kid) {
    time_t now = vault_now(v);
    if (!v || !kid || strlen(kid) != VAULT_THUMBPRINT_LEN)
        return false;
    TRANSFER_LOCKED(v);
    purge_expired_locked(v, now);
    for (size_t i = 0; i < v->n_transfer; i++)
        if (streq(v->transfer[i]->kid, kid))
            return true;
    for (size_t i = 0; i < MIN(v->n_transfer_spent, (size_t)VAULT_TRANSFER_RECENT); i++)
        if (v->transfer_spent[i].expires > now && streq(v->transfer_spent[i].kid, kid))
            return true;
    return false;
}

/* Removes the transfer key named kid from the table and hands it to the caller. A JWE whose
 * epk is on another curve than the key's is refused (-EBADMSG) like a bad header: the key is
 * not spent. */
static int take_transfer_key(Vault *v, const char *kid, const char *curve, TransferKey **ret) {
    time_t now = vault_now(v);
    TRANSFER_LOCKED(v);
    for (size_t i = 0; i < v->n_transfer; i++) {
        TransferKey *t = v->transfer[i];
        if (!streq(t->kid, kid))
            continue;
        if (!streq(t->curve, curve))
            return -EBADMSG;
        memmove(v->transfer + i, v->transfer + i + 1,
                (v->n_transfer - i - 1) * sizeof(TransferKey *));
        v->n_transfer--;
        remember_spent_locked(v, t);
        if (t->expires <= now) {
            transfer_key_free(t);
            purge_expired_locked(v, now);
            return -EKEYEXPIRED;
        }
        *ret = t;
        return 0;
    }
    purge_expired_locked(v, now);
    return -ENOKEY;
}

static bool is_b64url(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

/* The protected header of a release's JWE must be exactly: alg ECDH-ES+A256KW, enc A256GCM,
 * kid (string), epk (public EC P-384 or P-256 JWK: *ret_curve; it must be the transfer key's),
 * cty "nitride-key", nitride (an object: the signed header, whose contents the release's
 * verifier checked). Everything else, zip and crit included, is refused. */
static int check_header(const json_t *h, const char **ret_kid, const char **ret_curve) {
    const char *k, *kid = NULL, *curve = NULL;
    json_t *val;
    bool have_alg = false, have_enc = false, have_epk = false, have_cty = false, have_h = false;

    if (!json_is_object(h))
        return -EBADMSG;
    json_object_foreach((json_t *)h, k, val) {
        if (streq(k, "alg")) {
            if (!json_is_string(val) || !streq(json_string_value(val), "ECDH-ES+A256KW"))
                return -EBADMSG;
            have_alg = true;
        } else if (streq(k, "enc")) {
            if (!json_is_string(val) || !streq(json_string_value(val), "A256GCM"))
                return -EBADMSG;
            have_enc = true;
        } else if (streq(k, "kid")) {
            if (!json_is_string(val))
                return -EBADMSG;
            kid = json_string_value(val);
        } else if (streq(k, "epk")) {
            const char *ek;
            json_t *ev;
            if (!json_is_object(val) || json_object_size(val) != 4)
                return -EBADMSG;
            json_object_foreach(val, ek, ev) {
                if (!json_is_string(ev))
                    return -EBADMSG;
                if (streq(ek, "kty")) {
                    if (!streq(json_string_value(ev), "EC"))
                        return -EBADMSG;
                } else if (streq(ek, "crv")) {
                    curve = json_string_value(ev);
                    if (!streq(curve, "P-384") && !streq(curve, "P-256"))
                        return -EBADMSG;
                } else if (!streq(ek, "x") && !streq(ek, "y"))
                    return -EBADMSG;
            }
            have_epk = true;
        } else if (streq(k, "cty")) {
            if (!json_is_string(val) || !streq(json_string_value(val), "nitride-key"))
                return -EBADMSG;
            have_cty = true;
        } else if (streq(k, "nitride")) {
            if (!json_is_object(val))
                return -EBADMSG;
            have_h = true;
        } else
            return -EBADMSG; /* zip, crit, jku, x5u, apu, ... */
    }
    if (!have_alg || !have_enc || !have_epk || !have_cty || !have_h || !kid || !curve ||
        strlen(kid) != VAULT_THUMBPRINT_LEN)
        return -EBADMSG;
    *ret_kid = kid;
    *ret_curve = curve;
    return 0;
}

static int jwe_decrypt(EVP_PKEY *pkey, const json_t *jwe, const uint8_t *ct, size_t ct_len,
                       Secret **ret) {
    json_auto_t *jwk = NULL;
    int r;

    if ((r = vault_pkey_to_jwk(pkey, true, &jwk)) < 0)
        return r;
    return nt_jwe_decrypt_secret(jwe, jwk, ct, ct_len, ret);
}

static int material_from_payload(VaultKeyType type, Secret *pt, KeyVersion *kv) {
    size_t n = vault_key_type_secret_size(type);
    if (type == VAULT_KEY_RAW) {
        if (secret_size(pt) == 0 || secret_size(pt) > VAULT_RAW_MAX)
            return -EBADMSG;
        return secret_new_packed_copy(secret_const_data(pt), secret_size(pt), &kv->secret);
    }
    if (n > 0) {
        if (secret_size(pt) != n)
            return -EBADMSG;
        return secret_new_packed_copy(secret_const_data(pt), n, &kv->secret);
    }
    int r = vault_pkey_from_pkcs8(type, secret_const_data(pt), secret_size(pt), true, &kv->pkey);
    if (r < 0)
        return r;
    return key_version_set_thumbprint(kv);
}

int vault_transfer_import_release(Vault *v, const VaultPeer *peer, const char *jwe_compact,
                                  const VaultRelease *rel) {
    _cleanup_(vault_key_freep) VaultKey *k = NULL;
    _cleanup_(transfer_key_freep) TransferKey *t = NULL;
    _cleanup_(key_version_unrefp) KeyVersion *kv = NULL;
    _cleanup_(secret_freep) Secret *pt = NULL;
    _cleanup_free_ uint8_t *hdr_raw = NULL, *ct = NULL;
    json_auto_t *hdr = NULL, *jwe = NULL;
    const char *seg[5], *kid, *curve;
    size_t seg_len[5], hdr_len = 0, ct_len = 0, len;
    uid_t owner;
    int r;

    if (!v || !peer || !jwe_compact || !rel || !rel->name || !rel->recipient_kid)
        return -EINVAL;
    if (!vault_key_name_is_valid(rel->name) || vault_name_owner(rel->name, &owner) < 0 ||
        strncmp(rel->name, VAULT_NS_KMS "/", strlen(VAULT_NS_KMS) + 1) != 0)
        return -EINVAL;
    if ((r = vault_key_new(rel->name, &rel->spec, peer, VAULT_ORIGIN_IMPORTED, &k)) < 0 ||
        (r = vault_acl_check_caps(&k->acl, peer)) < 0)
        return r;
    /* A replayed or older release, another type, the quota: refused before the transfer key is
     * spent. */
    if ((r = vault_import_check(v, peer, rel->name, rel->spec.type, rel->version)) < 0)
        return r;

    len = strnlen(jwe_compact, VAULT_TRANSFER_MAX_JWE + 1);
    if (len > VAULT_TRANSFER_MAX_JWE)
        return -EBADMSG;
    for (size_t i = 0, start = 0; i < 5; i++) {
        const char *dot = i < 4 ? memchr(jwe_compact + start, '.', len - start) : NULL;
        size_t end = dot ? (size_t)(dot - jwe_compact) : len;
        if (i < 4 && !dot)
            return -EBADMSG;
        seg[i] = jwe_compact + start;
        seg_len[i] = end - start;
        if (!is_b64url(seg[i], seg_len[i]))
            return -EBADMSG; /* also catches a sixth segment */
        start = end + 1;
    }
    for (size_t i = 0; i < 5; i++)
        if (seg_len[i] == 0)
            return -EBADMSG; /* compact ECDH-ES+A256KW has every part; empty plaintext refused */

    if ((r = base64url_decode_alloc(seg[0], seg_len[0], &hdr_raw, &hdr_len)) < 0)
        return -EBADMSG;
    hdr = json_loadb((const char *)hdr_raw, hdr_len, JSON_REJECT_DUPLICATES, NULL);
    if ((r = check_header(hdr, &kid, &curve)) < 0)
        return r;
    if (!streq(kid, rel->recipient_kid))
        return -EBADMSG;
    if ((r = base64url_decode_alloc(seg[3], seg_len[3], &ct, &ct_len)) < 0)
        return -EBADMSG;
    jwe = json_pack("{s:s%,s:s%,s:s%,s:s%,s:s%}", "protected", seg[0], seg_len[0], "encrypted_key",
                    seg[1], seg_len[1], "iv", seg[2], seg_len[2], "ciphertext", seg[3], seg_len[3],
                    "tag", seg[4], seg_len[4]);
    if (!jwe)
        return -ENOMEM;

    /* From here on the transfer key is spent, whatever happens. */
    if ((r = take_transfer_key(v, kid, curve, &t)) < 0)
        return r;
    if ((r = jwe_decrypt(t->pkey, jwe, ct, ct_len, &pt)) < 0)
        return r;
    t = transfer_key_free(t);

    kv = key_version_new(rel->version, (uint64_t)vault_now(v));
    if (!kv)
        return -ENOMEM;
    if ((r = material_from_payload(rel->spec.type, pt, kv)) < 0)
        return r;
    return vault_import_version(v, peer, &k, &kv);
}
