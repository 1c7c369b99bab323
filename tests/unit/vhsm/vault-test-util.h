/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers shared by the vault engine tests: peers, public key import from PEM/JWK, and an
 * independent compact JWE encrypter (ECDH-ES+A256KW / A256GCM written directly against OpenSSL,
 * RFC 7518 section 4.6), so the vault's libjose-based import is checked against a second
 * implementation.
 */
#pragma once

#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <string.h>

#include "core/encoding.h"
#include "core/openssl-util.h"
#include "vhsm/transfer.h"
#include "vhsm/vault.h"

_unused_ static const VaultPeer alice = {
    .uid = 1000, .gid = 1000, .pid = 1, .cgroup = "/user.slice/a"};
_unused_ static const VaultPeer bob = {
    .uid = 1001, .gid = 1001, .pid = 2, .cgroup = "/user.slice/b"};
_unused_ static const VaultPeer root_peer = {
    .uid = 0, .gid = 0, .pid = 3, .cgroup = "/system.slice/x"};

static inline EVP_PKEY *pem_to_pkey(const char *pem) {
    BIO *b = BIO_new_mem_buf(pem, -1);
    EVP_PKEY *k = b ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return k;
}

static inline int b64u_json(const json_t *o, const char *k, uint8_t **ret, size_t *ret_len) {
    const char *s = json_string_value(json_object_get(o, k));
    return s ? base64url_decode_alloc(s, strlen(s), ret, ret_len) : -EBADMSG;
}

/* Public EC P-384 / P-256 JWK -> EVP_PKEY. */
static inline EVP_PKEY *ec_jwk_to_pkey(const json_t *jwk) {
    uint8_t *x = NULL, *y = NULL, pt[1 + 2 * 48];
    size_t xl = 0, yl = 0;
    const char *crv = json_string_value(json_object_get(jwk, "crv"));
    EVP_PKEY *pkey = NULL;
    if (b64u_json(jwk, "x", &x, &xl) < 0 || b64u_json(jwk, "y", &y, &yl) < 0 || xl != yl ||
        xl > 48 || !crv) {
        free(x);
        free(y);
        return NULL;
    }
    pt[0] = 4;
    memcpy(pt + 1, x, xl);
    memcpy(pt + 1 + xl, y, yl);
    {
        EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        OSSL_PARAM params[3] = {
            OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME,
                                             (char *)(streq(crv, "P-384") ? "P-384" : "P-256"), 0),
            OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, 1 + 2 * xl),
            OSSL_PARAM_construct_end()};
        if (ctx && EVP_PKEY_fromdata_init(ctx) == 1)
            (void)EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params);
        EVP_PKEY_CTX_free(ctx);
    }
    free(x);
    free(y);
    return pkey;
}

static inline char *b64u(const void *p, size_t n) {
    char *s = NULL;
    return base64url_encode_alloc(p, n, &s) < 0 ? NULL : s;
}

/* Concat KDF (NIST SP 800-56A, as RFC 7518 4.6.2) with SHA-256, one round: 256-bit output. */
static inline void concat_kdf(const uint8_t *z, size_t zl, const char *alg, uint8_t out[32]) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    uint8_t cnt[4] = {0, 0, 0, 1}, l[4], zero[4] = {0}, bits[4] = {0, 0, 1, 0};
    size_t al = strlen(alg);
    unsigned n = 32;
    l[0] = 0;
    l[1] = 0;
    l[2] = (uint8_t)(al >> 8);
    l[3] = (uint8_t)al;
    EVP_DigestInit_ex(c, EVP_sha256(), NULL);
    EVP_DigestUpdate(c, cnt, 4);
    EVP_DigestUpdate(c, z, zl);
    EVP_DigestUpdate(c, l, 4);
    EVP_DigestUpdate(c, alg, al);
    EVP_DigestUpdate(c, zero, 4); /* apu: empty */
    EVP_DigestUpdate(c, zero, 4); /* apv: empty */
    EVP_DigestUpdate(c, bits, 4);
    EVP_DigestFinal_ex(c, out, &n);
    EVP_MD_CTX_free(c);
}

/* Encrypts pt to the P-384 or P-256 recipient JWK as a compact JWE (epk on its curve). extra:
 * members merged into the protected header (may override alg/enc/kid); kid NULL = the JWK's kid.
 * Returns malloc'd. */
static inline char *make_jwe(const json_t *rcpt_jwk, const char *kid, const json_t *extra,
                             const uint8_t *pt, size_t pt_len) {
    const char *crv = json_string_value(json_object_get(rcpt_jwk, "crv"));
    bool p256 = crv && strcmp(crv, "P-256") == 0;
    size_t cs = p256 ? 32 : 48; /* coordinate size */
    EVP_PKEY *rcpt = ec_jwk_to_pkey(rcpt_jwk),
             *eph = EVP_PKEY_Q_keygen(NULL, NULL, "EC", p256 ? "P-256" : "P-384");
    EVP_PKEY_CTX *dctx = NULL;
    EVP_CIPHER_CTX *c = NULL;
    uint8_t z[48], kek[32], cek[32], ek[40], iv[12], tag[16], epk_pt[97];
    uint8_t *ct = malloc(pt_len + 16);
    size_t zl = sizeof z, epl = 0;
    int n = 0, fin = 0;
    json_t *hdr = NULL;
    char *hs = NULL, *s[5] = {0}, *out = NULL;

    if (!rcpt || !eph || !ct)
        goto done;
    dctx = EVP_PKEY_CTX_new_from_pkey(NULL, eph, NULL);
    if (!dctx || EVP_PKEY_derive_init(dctx) != 1 || EVP_PKEY_derive_set_peer(dctx, rcpt) != 1 ||
        EVP_PKEY_derive(dctx, z, &zl) != 1)
        goto done;
    concat_kdf(z, zl, "ECDH-ES+A256KW", kek);
    RAND_bytes(cek, sizeof cek);
    RAND_bytes(iv, sizeof iv);
    c = EVP_CIPHER_CTX_new();
    EVP_CIPHER_CTX_set_flags(c, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
    if (EVP_EncryptInit_ex(c, EVP_aes_256_wrap(), NULL, kek, NULL) != 1 ||
        EVP_EncryptUpdate(c, ek, &n, cek, 32) != 1 || EVP_EncryptFinal_ex(c, ek + n, &fin) != 1)
        goto done;
    EVP_CIPHER_CTX_free(c);
    c = NULL;

    EVP_PKEY_get_octet_string_param(eph, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, epk_pt, sizeof epk_pt,
                                    &epl);
    s[0] = b64u(epk_pt + 1, cs);
    s[1] = b64u(epk_pt + 1 + cs, cs);
    hdr = json_pack("{s:s,s:s,s:s,s:{s:s,s:s,s:s,s:s}}", "alg", "ECDH-ES+A256KW", "enc", "A256GCM",
                    "kid", kid ? kid : json_string_value(json_object_get(rcpt_jwk, "kid")), "epk",
                    "kty", "EC", "crv", p256 ? "P-256" : "P-384", "x", s[0], "y", s[1]);
    free(s[0]);
    free(s[1]);
    s[0] = s[1] = NULL;
    if (extra)
        json_object_update(hdr, (json_t *)extra);
    hs = json_dumps(hdr, JSON_COMPACT);
    s[0] = b64u(hs, strlen(hs));

    c = EVP_CIPHER_CTX_new();
    if (EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, cek, iv) != 1 ||
        EVP_EncryptUpdate(c, NULL, &n, (const uint8_t *)s[0], (int)strlen(s[0])) != 1 ||
        EVP_EncryptUpdate(c, ct, &n, pt, (int)pt_len) != 1 ||
        EVP_EncryptFinal_ex(c, ct + n, &fin) != 1 ||
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, tag) != 1)
        goto done;
    s[1] = b64u(ek, sizeof ek);
    s[2] = b64u(iv, sizeof iv);
    s[3] = b64u(ct, pt_len);
    s[4] = b64u(tag, sizeof tag);
    if (asprintf(&out, "%s.%s.%s.%s.%s", s[0], s[1], s[2], s[3], s[4]) < 0)
        out = NULL;
done:
    for (int i = 0; i < 5; i++)
        free(s[i]);
    free(hs);
    free(ct);
    json_decref(hdr);
    EVP_CIPHER_CTX_free(c);
    EVP_PKEY_CTX_free(dctx);
    EVP_PKEY_free(rcpt);
    EVP_PKEY_free(eph);
    return out;
}

/* The members a release's JWE header has beside alg/enc/kid/epk (the signed header H is opaque
 * to the vault: vhsmd's release verifier checks it). */
static inline json_t *release_extra(void) {
    return json_pack("{s:s,s:{s:i}}", "cty", "nitride-key", "nitride", "v", 1);
}

/* A release's JWE (make_jwe with release_extra()) to the transfer key jwk. */
static inline char *make_release_jwe(const json_t *jwk, const uint8_t *pt, size_t pt_len) {
    json_t *x = release_extra();
    char *j = make_jwe(jwk, NULL, x, pt, pt_len);
    json_decref(x);
    return j;
}

static const VaultPeer test_root = {.uid = 0, .gid = 0, .pid = 1};

/* Imports raw material (symmetric bytes or PKCS#8 DER) as version `version` of key
 * "kms/<name>" (name may already be "kms/...") through the release path, as root; spec->acl
 * NULL: peer may use and administer it. */
static inline int import_version(Vault *v, const VaultPeer *peer, const char *name,
                                 const VaultKeySpec *spec, uint32_t version, const uint8_t *mat,
                                 size_t len) {
    json_t *jwk = NULL;
    VaultAcl acl = {0};
    char full[VAULT_FULL_NAME_MAX + 1], *jwe;
    int r = vault_transfer_key_create(v, 60, &jwk);
    if (r < 0)
        return r;
    snprintf(full, sizeof full, "%s%s", strchr(name, '/') ? "" : "kms/", name);
    jwe = make_release_jwe(jwk, mat, len);
    if (!jwe) {
        json_decref(jwk);
        return -EIO;
    }
    VaultRelease rel = {.name = full,
                        .spec = *spec,
                        .version = version,
                        .recipient_kid = json_string_value(json_object_get(jwk, "kid"))};
    if (!spec->acl) {
        (void)vault_acl_list_add_uid(&acl.use, peer->uid);
        (void)vault_acl_list_add_uid(&acl.admin, peer->uid);
        rel.spec.acl = &acl;
    }
    r = vault_transfer_import_release(v, &test_root, jwe, &rel);
    vault_acl_done(&acl);
    json_decref(jwk);
    free(jwe);
    return r;
}

static inline int import_material(Vault *v, const VaultPeer *peer, const char *name,
                                  const VaultKeySpec *spec, const uint8_t *mat, size_t len) {
    return import_version(v, peer, name, spec, 1, mat, len);
}

static inline int pkey_to_pkcs8_der(EVP_PKEY *k, uint8_t **ret, size_t *ret_len) {
    PKCS8_PRIV_KEY_INFO *p8 = EVP_PKEY2PKCS8(k);
    uint8_t *der = NULL;
    int n = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, &der) : -1;
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (n <= 0)
        return -EIO;
    *ret = der;
    *ret_len = (size_t)n;
    return 0;
}
