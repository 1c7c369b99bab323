/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helper for tests/integration/release-jwcrypto.sh (and the vhsm-release integration test):
 *   release-tool seal DIR [RECIPIENT_JWK_FILE]
 *       a signing key in DIR/keys (ES384, created if needed), a recipient (the given public JWK
 *       or a fresh P-384 key written to DIR/recipient.json), a random 32-byte aes256 value
 *       (DIR/value.hex) sealed as kms/interop v2 (attested, max_age 600, an ACL);
 *       writes DIR/release and DIR/jwks.json (the JWKS to pin).
 *   release-tool sign KEYDIR RECIPIENT_JWK_FILE HEADER_JSON_FILE VALUE_HEX [NOW]
 *       seals VALUE (hex) to the recipient with the header fields of HEADER_JSON_FILE
 * (NtReleaseInfo members: name, type, version, policy, max_age, label, acl, secret_id, token_jti,
 * iat, exp) signed by the ES384 key in KEYDIR (created if needed); prints the release; writes
 *       KEYDIR/jwks.json. This plays kmsd in the vhsmd integration test.
 *   release-tool verify JWKS_FILE RELEASE_FILE [RECIPIENT_PRIVATE_JWK_FILE]
 *       nt_release_verify() at now; prints {"info": H, "jwe": inner JWE[, "value": hex]}
 *       (value: the JWE decrypted by libjose), or the error and exit 1.
 *   release-tool keys KEYDIR
 *       creates the ES384 key of KEYDIR if needed and writes KEYDIR/jwks.json (to pin).
 *   release-tool token KEYDIR CHIPDIR TEE_JWK_FILE [LIFETIME [IAT [contraindicated]]]
 *       plays attestd: an EAR token (iss https://attestd.test) whose cnf.jwk is the public JWK
 *       in TEE_JWK_FILE (e.g. a vhsmd transfer key), from a verdict of the simulated chip in
 *       CHIPDIR (created if needed), signed by KEYDIR's key; LIFETIME seconds (default 300),
 *       issued at IAT (default now); "contraindicated": a policy the report fails. Prints it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jose/jose.h>
#include <openssl/rand.h>

#include "core/encoding.h"
#include "core/fileio.h"
#include "token/ear.h"
#include "token/release.h"
#include "tt-util.h"

static int die(const char *what, int r) {
    fprintf(stderr, "release-tool: %s: %s\n", what, strerror(r < 0 ? -r : r));
    return 1;
}

static int write_json(const char *dir, const char *name, const json_t *j) {
    char path[4096];
    char *s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    int r;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!s)
        return -ENOMEM;
    r = write_file_atomic(path, s, strlen(s), 0600);
    free(s);
    return r;
}

static json_t *load_json(const char *path) {
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
    if (!j)
        fprintf(stderr, "release-tool: cannot read JSON from %s\n", path);
    return j;
}

/* The ES384 signing key of dir (dir/signing.jwk, made at first use): loaded as an operator's key
 * file, so it signs at any time (tokens and releases issued in the past, for the time checks). */
static NtSigningKeys *open_keys(const char *dir) {
    NtSigningKeys *k = NULL;
    char path[4096], *paths[1] = {path}, *error = NULL;
    int r;
    snprintf(path, sizeof path, "%s/signing.jwk", dir);
    if (mkdir_p(dir, 0700) < 0)
        return NULL;
    if (access(path, F_OK) < 0) {
        json_auto_t *jwk = json_pack("{s:s,s:s}", "kty", "EC", "crv", "P-384");
        char *text;
        if (!jwk || !jose_jwk_gen(NULL, jwk))
            return NULL;
        (void)json_object_del(jwk, "key_ops");
        (void)json_object_del(jwk, "alg");
        text = json_dumps(jwk, JSON_COMPACT);
        r = text ? write_file_atomic(path, text, strlen(text), 0600) : -ENOMEM;
        free(text);
        if (r < 0)
            return NULL;
    }
    if (nt_signing_keys_load_files(paths, 1, NT_JWS_ES384, &k, &error) < 0) {
        fprintf(stderr, "release-tool: %s: %s\n", dir, error ? error : "cannot open keys");
        free(error);
        return NULL;
    }
    return k;
}

static int cmd_seal(const char *dir, const char *rcpt_file) {
    char kd[4096], path[4096], hex[65];
    uint8_t value[32];
    json_auto_t *rcpt = NULL, *pub = NULL, *jwks = NULL;
    json_auto_t *acl = json_pack("{s:[i,i],s:[s],s:[i]}", "use_uid", 0, 1000, "use_cgroup",
                                 "/system.slice/app.service", "admin_uid", 0);
    NtReleaseInfo h = {
        .name = (char *)"kms/interop",
        .type = (char *)"aes256",
        .version = 2,
        .policy = (char *)"attested",
        .max_age = 600,
        .label = (char *)"interop test",
        .acl = acl,
        .secret_id = (char *)"interop",
        .token_jti = (char *)"dG9rZW4tanRp",
    };
    char *rel = NULL;
    int r;

    snprintf(kd, sizeof kd, "%s/keys", dir);
    _cleanup_(nt_signing_keys_freep) NtSigningKeys *k = open_keys(kd);
    if (!k)
        return 1;
    if (rcpt_file) {
        pub = load_json(rcpt_file);
        if (!pub)
            return 1;
    } else {
        rcpt = json_pack("{s:s,s:s}", "kty", "EC", "crv", "P-384");
        if (!rcpt || !jose_jwk_gen(NULL, rcpt))
            return die("jose_jwk_gen", EIO);
        (void)json_object_del(rcpt, "key_ops");
        (void)json_object_del(rcpt, "alg");
        pub = json_deep_copy(rcpt);
        if (!pub || !jose_jwk_pub(NULL, pub))
            return die("jose_jwk_pub", EIO);
        if ((r = write_json(dir, "recipient.json", rcpt)) < 0)
            return die("recipient.json", r);
    }
    if (RAND_bytes(value, sizeof value) != 1)
        return die("RAND_bytes", EIO);
    hex_encode(value, sizeof value, hex);
    snprintf(path, sizeof path, "%s/value.hex", dir);
    if ((r = write_file_atomic(path, hex, 64, 0600)) < 0)
        return die(path, r);
    r = nt_release_seal(k, pub, &h, value, sizeof value, 0, &rel);
    if (r < 0)
        return die("nt_release_seal", r);
    snprintf(path, sizeof path, "%s/release", dir);
    r = write_file_atomic(path, rel, strlen(rel), 0600);
    free(rel);
    if (r < 0)
        return die(path, r);
    jwks = nt_signing_keys_jwks(k, 0);
    if (!jwks || (r = write_json(dir, "jwks.json", jwks)) < 0)
        return die("jwks.json", -ENOMEM);
    return 0;
}

static char *str_or_null(const json_t *o, const char *k) {
    return (char *)json_string_value(json_object_get(o, k));
}

static int cmd_sign(const char *kd, const char *rcpt_file, const char *hdr_file, const char *vhex,
                    const char *now_s) {
    json_auto_t *pub = load_json(rcpt_file), *hj = load_json(hdr_file), *jwks = NULL;
    _cleanup_free_ uint8_t *value = NULL;
    size_t vlen = 0;
    char *rel = NULL;
    int r;

    _cleanup_(nt_signing_keys_freep) NtSigningKeys *k = open_keys(kd);
    if (!k || !pub || !hj)
        return 1;
    if (hex_decode_alloc(vhex, &value, &vlen) < 0)
        return die("value hex", EINVAL);
    NtReleaseInfo h = {
        .name = str_or_null(hj, "name"),
        .type = str_or_null(hj, "type"),
        .version = (uint32_t)json_integer_value(json_object_get(hj, "version")),
        .policy = str_or_null(hj, "policy"),
        .max_age = (uint32_t)json_integer_value(json_object_get(hj, "max_age")),
        .label = str_or_null(hj, "label"),
        .acl = json_object_get(hj, "acl"),
        .secret_id = str_or_null(hj, "secret_id"),
        .token_jti = str_or_null(hj, "token_jti"),
        .iat = json_integer_value(json_object_get(hj, "iat")),
        .exp = json_integer_value(json_object_get(hj, "exp")),
    };
    r = nt_release_seal(k, pub, &h, value, vlen, now_s ? (time_t)strtoll(now_s, NULL, 10) : 0,
                        &rel);
    if (r < 0)
        return die("nt_release_seal", r);
    printf("%s\n", rel);
    free(rel);
    jwks = nt_signing_keys_jwks(k, 0);
    if (!jwks || (r = write_json(kd, "jwks.json", jwks)) < 0)
        return die("jwks.json", -ENOMEM);
    return 0;
}

static int cmd_verify(const char *jwks_file, const char *rel_file, const char *priv_file) {
    _cleanup_(nt_release_info_clear) NtReleaseInfo info = {};
    _cleanup_free_ uint8_t *rel = NULL;
    _cleanup_free_ char *jwe = NULL, *out = NULL, *error = NULL;
    json_auto_t *jwks = NULL, *o = NULL;
    size_t len = 0;
    char err[256];
    int r;

    r = nt_jwks_load_public_file(jwks_file, &jwks, &error);
    if (r < 0) {
        fprintf(stderr, "release-tool: %s\n", error ? error : strerror(-r));
        return 1;
    }
    r = read_full_file(rel_file, NT_RELEASE_MAX_SIZE + 16, &rel, &len);
    if (r < 0)
        return die(rel_file, r);
    while (len > 0 && (rel[len - 1] == '\n' || rel[len - 1] == '\r'))
        rel[--len] = 0;
    r = nt_release_verify((const char *)rel, jwks, 0, 0, &info, &jwe, err);
    if (r < 0) {
        fprintf(stderr, "release-tool: refused (%s): %s\n", strerror(-r), err);
        return 1;
    }
    o = json_pack("{s:{s:s,s:s,s:I,s:s,s:I,s:s?,s:O?,s:s,s:s,s:s,s:I,s:I,s:s},s:s}", "info", "name",
                  info.name, "type", info.type, "version", (json_int_t)info.version, "policy",
                  info.policy, "max_age", (json_int_t)info.max_age, "label", info.label, "acl",
                  info.acl, "secret_id", info.secret_id, "jti", info.jti, "token_jti",
                  info.token_jti, "iat", (json_int_t)info.iat, "exp", (json_int_t)info.exp,
                  "recipient_kid", info.recipient_kid, "jwe", jwe);
    if (!o)
        return die("json", ENOMEM);
    if (priv_file) {
        json_auto_t *priv = load_json(priv_file), *j = NULL;
        const char *parts[5];
        char *copy = strdup(jwe), *save = NULL, *t;
        size_t n = 0, i = 0;
        if (!priv || !copy)
            return 1;
        for (t = strtok_r(copy, ".", &save); t && i < 5; t = strtok_r(NULL, ".", &save))
            parts[i++] = t;
        j = i == 5 ? json_pack("{s:s,s:s,s:s,s:s,s:s}", "protected", parts[0], "encrypted_key",
                               parts[1], "iv", parts[2], "ciphertext", parts[3], "tag", parts[4])
                   : NULL;
        uint8_t *pt = j ? jose_jwe_dec(NULL, j, NULL, priv, &n) : NULL;
        free(copy);
        if (!pt) {
            fprintf(stderr, "release-tool: libjose cannot decrypt the inner JWE\n");
            return 1;
        }
        char *hex = hex_encode_alloc(pt, n);
        free(pt);
        if (!hex || json_object_set_new(o, "value", json_string(hex)) < 0)
            return die("json", ENOMEM);
        free(hex);
    }
    out = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    if (!out)
        return die("json", ENOMEM);
    printf("%s\n", out);
    return 0;
}

static int cmd_keys(const char *kd) {
    json_auto_t *jwks = NULL;
    int r;
    _cleanup_(nt_signing_keys_freep) NtSigningKeys *k = open_keys(kd);
    if (!k)
        return 1;
    jwks = nt_signing_keys_jwks(k, 0);
    if (!jwks || (r = write_json(kd, "jwks.json", jwks)) < 0)
        return die("jwks.json", -ENOMEM);
    return 0;
}

static int cmd_token(int argc, char **argv) {
    const char *kd = argv[0], *chipdir = argv[1];
    json_auto_t *tee = load_json(argv[2]), *rd = NULL, *pub = NULL;
    _cleanup_(nt_verdict_freep) NtVerdict *v = NULL;
    _cleanup_free_ char *token = NULL;
    char path[PATH_MAX + 16];
    TtChip chip = {.name = "", .product = SNP_PRODUCT_MILAN};
    bool bad = argc > 5 && streq(argv[5], "contraindicated");
    static const char bad_policy[] =
        "{\"measurements\":[\"ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"
        "ffffffffffffffffffffffffffffffffffff\"]}";
    int r;

    _cleanup_(nt_signing_keys_freep) NtSigningKeys *k = open_keys(kd);
    if (!k || !tee)
        return 1;
    /* cnf.jwk: the public members (vhsmd's transfer key JWK also has alg/use). */
    pub = json_pack("{s:O,s:O,s:O,s:O}", "kty", json_object_get(tee, "kty"), "crv",
                    json_object_get(tee, "crv"), "x", json_object_get(tee, "x"), "y",
                    json_object_get(tee, "y"));
    if (!pub)
        return die("TEE JWK", EINVAL);
    if (json_object_get(tee, "kid") && json_object_set(pub, "kid", json_object_get(tee, "kid")) < 0)
        return die("TEE JWK", ENOMEM);
    snprintf(chip.dir, sizeof chip.dir, "%s", chipdir);
    snprintf(path, sizeof path, "%s/ark.pem", chipdir);
    if (access(path, F_OK) < 0) {
        SimInitOptions o = {.product = chip.product};
        if ((r = sim_chip_init(chipdir, &o)) < 0)
            return die("sim_chip_init", r);
    }
    rd = json_pack("{s:s,s:O}", "nonce", "release-tool", "tee-pubkey", pub);
    if (!rd)
        return die("runtime data", ENOMEM);
    if ((r = tt_verdict(&chip, rd, bad ? bad_policy : NULL, true, &v)) < 0)
        return die("verdict", r);
    NtEarInput in = {.verdict = v,
                     .runtime_data = rd,
                     .policy_id = "default",
                     .issuer = "https://attestd.test",
                     .lifetime_s = argc > 3 ? strtoll(argv[3], NULL, 10) : 0,
                     .now = argc > 4 ? (time_t)strtoll(argv[4], NULL, 10) : 0};
    if ((r = nt_ear_issue(k, &in, &token, NULL)) < 0)
        return die("nt_ear_issue", r);
    printf("%s\n", token);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "keys") == 0)
        return cmd_keys(argv[2]);
    if (argc >= 5 && strcmp(argv[1], "token") == 0)
        return cmd_token(argc - 2, argv + 2);
    if (argc >= 3 && strcmp(argv[1], "seal") == 0)
        return cmd_seal(argv[2], argc > 3 ? argv[3] : NULL);
    if (argc >= 6 && strcmp(argv[1], "sign") == 0)
        return cmd_sign(argv[2], argv[3], argv[4], argv[5], argc > 6 ? argv[6] : NULL);
    if (argc >= 4 && strcmp(argv[1], "verify") == 0)
        return cmd_verify(argv[2], argv[3], argc > 4 ? argv[4] : NULL);
    fprintf(stderr, "usage: release-tool seal DIR [RCPT] | sign KEYDIR RCPT HDR VALUE_HEX [NOW] | "
                    "verify JWKS RELEASE [PRIV] | keys KEYDIR | token KEYDIR CHIPDIR TEE_JWK "
                    "[LIFETIME [IAT [contraindicated]]]\n");
    return 2;
}
