/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The remote slot (docs/luks.md "The remote flow"): the volume key comes from nitride-kmsd by the
 * attested release of `nitride fetch` (src/agent/attest-flow.c, fetch-flow.c), sealed to a
 * one-shot P-384 transfer key that THIS process (root, the one that calls libcryptsetup) makes
 * and binds into the report's REPORT_DATA. The release is opened here, into a Secret: the key
 * never passes through vhsmd, the agent or any other process, is never logged, and is wiped
 * when the Secret is freed. The release's signature is checked against kmsd's published release
 * keys (GET /v1/release-keys) with nt_release_verify (structure, exp, secret id, type); the key
 * itself is authenticated by the LUKS keyslot it must open (luks_unlock checks it).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <jose/jose.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "agent/agent.h"
#include "agent/attest-flow.h"
#include "agent/fetch-flow.h"
#include "core/encoding.h"
#include "core/jwe.h"
#include "core/jose-openssl.h"
#include "core/log.h"
#include "core/macro.h"
#include "core/openssl-util.h"
#include "luks/luks-private.h"
#include "luks/luks.h"
#include "token/jose-util.h"
#include "token/release.h"

/* The one-shot transfer key: the private key stays in this process; the public JWK (kid = RFC
 * 7638 thumbprint, as vhsmd's) goes into the report's runtime data and the token's cnf.jwk. */
static int transfer_key(EVP_PKEY **ret_key, json_t **ret_pub) {
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = NULL, *pub = NULL;
    _cleanup_free_ unsigned char *spki = NULL;
    json_auto_t *jwk = NULL, *thp = NULL;
    const unsigned char *p;
    int len;

    key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    if (!key)
        return nt_openssl_error(-EIO, "EVP_PKEY_Q_keygen");
    len = i2d_PUBKEY(key, &spki);
    if (len <= 0) {
        spki = NULL;
        return nt_openssl_error(-EIO, "i2d_PUBKEY");
    }
    p = spki;
    pub = d2i_PUBKEY(NULL, &p, len);
    if (!pub)
        return nt_openssl_error(-EIO, "d2i_PUBKEY");
    jwk = jose_openssl_jwk_from_EVP_PKEY(NULL, pub);
    if (!jwk || json_object_get(jwk, "d"))
        return -EIO;
    thp = jose_jwk_thp(NULL, jwk, "S256");
    if (!json_is_string(thp) || json_object_set(jwk, "kid", thp) < 0 ||
        json_object_set_new(jwk, "alg", json_string("ECDH-ES")) < 0 ||
        json_object_set_new(jwk, "use", json_string("enc")) < 0)
        return -ENOMEM;
    *ret_key = TAKE_PTR(key);
    *ret_pub = TAKE_PTR(jwk);
    return 0;
}

/* Decrypts the compact JWE (ECDH-ES+A256KW, A256GCM) with key into a Secret of exactly
 * LUKS_KEY_SIZE bytes. -EKEYREJECTED when it does not decrypt, -EBADMSG when malformed or of
 * another size. */
static int jwe_open(const char *compact, EVP_PKEY *key, Secret **ret) {
    _cleanup_free_ uint8_t *ct = NULL;
    _cleanup_(nt_jose_jwk_wipe_freep) json_t *jwk = NULL; /* "d" wiped */
    json_auto_t *jwe = NULL;
    const char *seg[5];
    size_t seg_len[5], ct_len = 0, len = strlen(compact), start = 0;

    for (size_t i = 0; i < 5; i++) {
        const char *dot = i < 4 ? memchr(compact + start, '.', len - start) : NULL;
        size_t end = dot ? (size_t)(dot - compact) : len;
        if ((i < 4 && !dot) || end == start)
            return -EBADMSG;
        seg[i] = compact + start;
        seg_len[i] = end - start;
        start = end + 1;
    }
    if (memchr(seg[4], '.', seg_len[4]))
        return -EBADMSG;
    if (base64url_decode_alloc(seg[3], seg_len[3], &ct, &ct_len) < 0 || ct_len != LUKS_KEY_SIZE)
        return -EBADMSG;
    jwe = json_pack("{s:s%,s:s%,s:s%,s:s%,s:s%}", "protected", seg[0], seg_len[0], "encrypted_key",
                    seg[1], seg_len[1], "iv", seg[2], seg_len[2], "ciphertext", seg[3], seg_len[3],
                    "tag", seg[4], seg_len[4]);
    if (!jwe)
        return -EBADMSG;
    jwk = jose_openssl_jwk_from_EVP_PKEY(NULL, key);
    if (!jwk)
        return -EIO;
    return nt_jwe_decrypt_secret(jwe, jwk, ct, ct_len, ret);
}

/* kmsd's release keys, fetched over the same TLS trust as the release itself. */
static int get_release_keys(AttestRun *run, const char *kms_base, json_t **ret) {
    json_t *reply = NULL;
    long status = 0;
    int r;
    do
        r = attest_exchange_at(run, kms_base, NULL, "Release keys", "GET", "/v1/release-keys", NULL,
                               &status, &reply);
    while (attest_again(run, &r, false));
    if (r != STEP_OK)
        return r < 0 ? NT_EXIT_IO : r;
    if (status != 200 || !json_is_array(json_object_get(reply, "keys"))) {
        json_decref(reply);
        log_error("kmsd's /v1/release-keys answered HTTP %ld without a JWKS.", status);
        return NT_EXIT_INVALID;
    }
    *ret = reply;
    return NT_EXIT_OK;
}

/* An attest/fetch exit code as luks_unlock's errno, with the refusal. */
static int exit_to_errno(const AttestRun *run, int x, const char *stage, LuksRefusal *refusal) {
    const AttestRefusal *ar = attest_last_refusal();
    switch (x) {
    case NT_EXIT_OK:
        return 0;
    case NT_EXIT_POLICY:
    case NT_EXIT_REFUSED:
        if (ar->service[0])
            luks_refuse(refusal,
                        ar->rule[0]    ? ar->rule
                        : ar->check[0] ? ar->check
                                       : stage,
                        "%s refused the %s: %s%s%s%s%s", ar->service, stage, ar->error,
                        ar->expected[0] ? "; expected " : "", ar->expected,
                        ar->found[0] ? ", found " : "", ar->found);
        else
            luks_refuse(refusal, stage, "the %s was refused", stage);
        return -EPERM;
    case NT_EXIT_NO_PROVIDER:
        luks_refuse(refusal, "provider", "no evidence provider usable for the attestation");
        return -EAGAIN;
    case NT_EXIT_UNAVAILABLE:
        if (run->refused_out) {
            luks_refuse(refusal, "connect", "%s is down: %s",
                        streq(stage, "attestation") ? "attestd" : "kmsd", run->last_error);
            return -ECONNREFUSED;
        }
        luks_refuse(refusal, "unavailable", "the %s did not complete%s%s", stage,
                    run->last_error[0] ? ": " : "", run->last_error);
        return -EAGAIN;
    case NT_EXIT_INVALID:
        luks_refuse(refusal, "kms", "invalid answer or unknown secret during the %s%s%s", stage,
                    run->last_error[0] ? ": " : "", run->last_error);
        return -EBADMSG;
    default:
        luks_refuse(refusal, "unavailable", "the %s did not complete%s%s", stage,
                    run->last_error[0] ? ": " : "", run->last_error);
        return -EAGAIN;
    }
}

int luks_remote_fetch(const LuksRemoteRequest *rq, const LuksUnlockOptions *o, int64_t deadline_ms,
                      SnpProvider **prov, Secret **ret_key, LuksRefusal *refusal) {
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *tkey = NULL;
    _cleanup_free_ char *token = NULL, *release = NULL, *name = NULL, *jwe = NULL;
    _cleanup_(secret_freep) Secret *key = NULL;
    json_auto_t *claims = NULL, *jwks = NULL;
    NtReleaseInfo info = {0};
    AttestArgs a = {.attestd_url = rq->attestd_url,
                    .ca_file = o->ca_file,
                    .quiet = true,
                    .timeout_s = MAX(1u, (o->timeout_ms + 999) / 1000)};
    AttestRun run = ATTEST_RUN_INIT(&a);
    FetchArgs f = {
        .secret_id = rq->secret_id, .volume_uuid = rq->volume_uuid, .purpose = rq->purpose};
    char err[256] = "";
    int64_t version = 0;
    int r, x;

    if (!rq->kms_url || !rq->attestd_url || !rq->secret_id || !ret_key)
        return -EINVAL;
    attest_clear_refusal();
    if ((r = luks_provider_ensure(o, prov, refusal)) < 0)
        return r;
    if (attest_check_url(rq->attestd_url, "attestd", &a.base) != NT_EXIT_OK ||
        attest_check_url(rq->kms_url, "kms", &f.kms_base) != NT_EXIT_OK) {
        free(a.base);
        free(f.kms_base);
        luks_refuse(refusal, "token", "the token's kms or attestd URL is not usable");
        return -EBADMSG;
    }
    run.deadline_ms = deadline_ms;
    run.max_refused = LUKS_REMOTE_MAX_REFUSED;
    run.provider = *prov; /* borrowed */
    if ((r = transfer_key(&tkey, &run.tee_pubkey)) < 0)
        goto done;
    x = attest_obtain_token(&run, &token, &claims);
    if ((r = exit_to_errno(&run, x, "attestation", refusal)) < 0)
        goto done;
    x = fetch_release(&run, &f, token, &release, &name, &version);
    if ((r = exit_to_errno(&run, x, "release", refusal)) < 0)
        goto done;
    x = get_release_keys(&run, f.kms_base, &jwks);
    if ((r = exit_to_errno(&run, x, "release keys", refusal)) < 0)
        goto done;
    r = nt_release_verify(release, jwks, 0, 0, &info, &jwe, err);
    if (r < 0) {
        luks_refuse(refusal, "release", "kmsd's release does not verify: %s", err);
        r = -EBADMSG;
        goto done;
    }
    if (!streq(info.secret_id, rq->secret_id) ||
        (!streq(info.type, "raw") && !streq(info.type, "aes256"))) {
        luks_refuse(refusal, "release",
                    "kmsd released secret '%.64s' of type %.16s, expected '%.64s' (raw or aes256, "
                    "%u bytes)",
                    info.secret_id, info.type, rq->secret_id, LUKS_KEY_SIZE);
        r = -EBADMSG;
        goto done;
    }
    r = jwe_open(jwe, tkey, &key);
    if (r == -EBADMSG)
        luks_refuse(refusal, "release", "the released value is not a %u-byte key", LUKS_KEY_SIZE);
    else if (r < 0)
        luks_refuse(refusal, "release", "the release does not open with this unlock's key");
    if (r < 0)
        goto done;
    log_info("kmsd released %s version %" PRId64 " (%s) to this unlock.", name, version,
             rq->purpose ? rq->purpose : "luks");
    *ret_key = TAKE_PTR(key);
    r = 0;
done:
    nt_release_info_clear(&info);
    run.provider = NULL;
    attest_run_done(&run, &a);
    free(f.kms_base);
    return r;
}

int luks_unlock_remote(struct crypt_device *cd, const LuksToken *t, const LuksUnlockOptions *o,
                       int64_t deadline_ms, SnpProvider **prov, const char *purpose,
                       Secret **ret_key, LuksRefusal *refusal) {
    LuksRemoteRequest rq = {
        .kms_url = t->kms_url,
        .attestd_url = t->attestd_url,
        .secret_id = t->secret_id,
        .volume_uuid = t->volume,
        .purpose = purpose,
    };
    if (!luks_flow_has_kms(t->flow))
        return -EINVAL;
    if (!t->attestd_url) {
        luks_refuse(refusal, "token", "the token's kms slot names no attestd");
        return -EBADMSG;
    }
    return luks_remote_fetch(&rq, o, deadline_ms, prov, ret_key, refusal);
}
