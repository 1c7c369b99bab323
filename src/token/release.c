/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Signed key releases (release.h). Every input of nt_release_verify() is untrusted: the release
 * is split and decoded strictly (bounded size, base64url parts, JSON objects without duplicate
 * members), the algorithm is fixed by the pinned key the kid names (ES256/ES384 only), the
 * signature is checked by libjose before the payload is looked at, and only then is the inner
 * JWE's protected header parsed, member by member: anything not in the format is refused, so a
 * release can never carry an attribute the vault would ignore.
 *
 * Seal and verify share one header parser (h_parse): nt_release_seal() builds H, parses it back
 * and checks its own JWE header with the verifier's checks, so it cannot produce a release that
 * the vault refuses for its shape.
 */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jose/b64.h>
#include <jose/jwe.h>
#include <jose/jwk.h>
#include <jose/jws.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "core/fileio.h"
#include "core/jose-openssl.h"
#include "core/openssl-util.h"
#include "token/jose-util.h"
#include "token/release.h"

#define THUMBPRINT_LEN 43 /* base64url of SHA-256, unpadded */
#define NAME_PLAIN_MAX 128
#define LABEL_MAX 128
#define ACL_LIST_MAX 64
#define CGROUP_MAX 512
#define PKCS8_MAX 16384
#define PINNED_FILE_MAX (1024 * 1024)

static const char *const key_types[] = {
    "aes256",  "hmac-sha256", "hmac-sha384", "ec-p256", "ec-p384",
    "ed25519", "rsa2048",     "rsa3072",     "rsa4096", "raw",
};

static const char *const acl_members[] = {
    "use_uid", "use_gid", "use_cgroup", "admin_uid", "admin_gid", "admin_cgroup",
};

void nt_release_info_clear(NtReleaseInfo *i) {
    if (!i)
        return;
    free(i->name);
    free(i->type);
    free(i->policy);
    free(i->label);
    json_decref(i->acl);
    free(i->secret_id);
    free(i->jti);
    free(i->token_jti);
    free(i->recipient_kid);
    *i = (NtReleaseInfo){};
}

static bool b64url_string(const char *s, size_t min, size_t max) {
    size_t n = strlen(s);
    return n >= min && n <= max && nt_jose_b64url_chars(s, n);
}

static bool in_list(const char *s, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (streq(s, list[i]))
            return true;
    return false;
}

int nt_release_value_size(const char *type, size_t *ret_min, size_t *ret_max) {
    size_t lo, hi;
    if (!type || !in_list(type, key_types, ELEMENTSOF(key_types)))
        return -EINVAL;
    if (streq(type, "aes256") || streq(type, "hmac-sha256"))
        lo = hi = 32;
    else if (streq(type, "hmac-sha384"))
        lo = hi = 48;
    else if (streq(type, "raw"))
        lo = 1, hi = NT_RELEASE_RAW_MAX;
    else
        lo = 1, hi = PKCS8_MAX;
    if (ret_min)
        *ret_min = lo;
    if (ret_max)
        *ret_max = hi;
    return 0;
}

/* "kms/<plain>": the plain name rule of the vault (1..128 of [A-Za-z0-9._:@-], not starting
 * with '.' or '-'). */
static bool kms_name_valid(const char *s) {
    size_t n;
    if (strncmp(s, "kms/", 4) != 0)
        return false;
    s += 4;
    n = strlen(s);
    if (n == 0 || n > NAME_PLAIN_MAX || s[0] == '.' || s[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(isascii((unsigned char)s[i]) && isalnum((unsigned char)s[i])) &&
            !strchr("._:@-", s[i]))
            return false;
    return true;
}

static bool label_valid(const char *s) {
    size_t n = strlen(s);
    if (n > LABEL_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] >= 0x7f)
            return false;
    return true;
}

/* [a-z0-9][a-z0-9._-]{0,63} */
static bool secret_id_valid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return false;
    for (size_t i = 1; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '.' ||
              s[i] == '_' || s[i] == '-'))
            return false;
    return true;
}

/* An absolute cgroup path: no empty, "." or ".." component, no control characters. */
static bool cgroup_valid(const char *p) {
    size_t n = strlen(p);
    if (n == 0 || n >= CGROUP_MAX || p[0] != '/')
        return false;
    if (strstr(p, "//") || strstr(p, "/./") || strstr(p, "/../") ||
        (n >= 2 && streq(p + n - 2, "/.")) || (n >= 3 && streq(p + n - 3, "/..")))
        return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
            return false;
    return true;
}

static int acl_check(const json_t *acl, char *err) {
    const char *k;
    json_t *v, *e;
    size_t i;
    if (!json_is_object(acl))
        return nt_jose_fail(err, -EBADMSG, "release header: acl is not an object");
    json_object_foreach((json_t *)acl, k, v) {
        bool cg = strstr(k, "cgroup") != NULL;
        if (!in_list(k, acl_members, ELEMENTSOF(acl_members)))
            return nt_jose_fail(err, -EBADMSG, "release header: unknown acl member '%.32s'", k);
        if (!json_is_array(v) || json_array_size(v) > ACL_LIST_MAX)
            return nt_jose_fail(err, -EBADMSG,
                                "release header: acl.%s is not an array of at most %d", k,
                                ACL_LIST_MAX);
        json_array_foreach(v, i, e) {
            if (cg ? !json_is_string(e) || !cgroup_valid(json_string_value(e))
                   : !json_is_integer(e) || json_integer_value(e) < 0 ||
                         json_integer_value(e) >= (json_int_t)UINT32_MAX)
                return nt_jose_fail(err, -EBADMSG, "release header: invalid entry in acl.%s", k);
        }
    }
    return 0;
}

static int dup_string(const json_t *o, const char *k, char **ret) {
    const char *s = json_string_value(json_object_get(o, k));
    if (!s) {
        *ret = NULL;
        return 0;
    }
    *ret = strdup(s);
    return *ret ? 0 : -ENOMEM;
}

/* Parses and validates H strictly. */
static int h_parse(const json_t *h, NtReleaseInfo *ret, char *err) {
    static const char *const known[] = {
        "v",   "name", "type",      "version", "policy", "max_age",   "label",
        "acl", "jti",  "secret_id", "iat",     "exp",    "token_jti",
    };
    _cleanup_(nt_release_info_clear) NtReleaseInfo i = {};
    const char *k, *policy, *type;
    json_t *v;
    json_int_t iat, exp, ver;

    if (!json_is_object(h))
        return nt_jose_fail(err, -EBADMSG, "release header: \"nitride\" is not an object");
    json_object_foreach(
        (json_t *)h, k,
        v) if (!in_list(k, known,
                        ELEMENTSOF(
                            known))) return nt_jose_fail(err, -EBADMSG,
                                                         "release header: unknown member '%.32s'",
                                                         k);
    v = json_object_get(h, "v");
    if (!json_is_integer(v) || json_integer_value(v) != 1)
        return nt_jose_fail(err, -EBADMSG, "release header: \"v\" is not 1");
#define STR(name) json_string_value(json_object_get(h, name))
#define REQ_STR(name)                                                                              \
    do {                                                                                           \
        if (!json_is_string(json_object_get(h, name)))                                             \
            return nt_jose_fail(err, -EBADMSG, "release header: \"%s\" missing or not a string",   \
                                name);                                                             \
    } while (0)
    REQ_STR("name");
    REQ_STR("type");
    REQ_STR("policy");
    REQ_STR("secret_id");
    REQ_STR("jti");
    REQ_STR("token_jti");
    if (!kms_name_valid(STR("name")))
        return nt_jose_fail(err, -EBADMSG, "release header: name '%.140s' is not kms/<name>",
                            STR("name"));
    type = STR("type");
    if (!in_list(type, key_types, ELEMENTSOF(key_types)))
        return nt_jose_fail(err, -EBADMSG, "release header: unknown key type '%.32s'", type);
    v = json_object_get(h, "version");
    ver = json_is_integer(v) ? json_integer_value(v) : 0;
    if (ver < 1 || ver > (json_int_t)UINT32_MAX)
        return nt_jose_fail(err, -EBADMSG, "release header: version is not an integer 1..%u",
                            UINT32_MAX);
    policy = STR("policy");
    v = json_object_get(h, "max_age");
    if (streq(policy, "attested")) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > NT_RELEASE_MAX_AGE_MAX)
            return nt_jose_fail(err, -EBADMSG,
                                "release header: attested policy needs max_age 1..%d",
                                NT_RELEASE_MAX_AGE_MAX);
        i.max_age = (uint32_t)json_integer_value(v);
    } else if (streq(policy, "local")) {
        if (v)
            return nt_jose_fail(err, -EBADMSG, "release header: max_age given with policy local");
    } else
        return nt_jose_fail(err, -EBADMSG, "release header: unknown policy '%.32s'", policy);
    v = json_object_get(h, "label");
    if (v && (!json_is_string(v) || !label_valid(json_string_value(v))))
        return nt_jose_fail(
            err, -EBADMSG,
            "release header: label is not a string of at most %d printable characters", LABEL_MAX);
    v = json_object_get(h, "acl");
    if (v) {
        int r = acl_check(v, err);
        if (r < 0)
            return r;
    }
    if (!secret_id_valid(STR("secret_id")))
        return nt_jose_fail(err, -EBADMSG, "release header: invalid secret_id");
    if (!b64url_string(STR("jti"), 22, 22))
        return nt_jose_fail(err, -EBADMSG, "release header: jti is not base64url of 16 bytes");
    if (!b64url_string(STR("token_jti"), 1, 128))
        return nt_jose_fail(err, -EBADMSG, "release header: invalid token_jti");
    if (!json_is_integer(json_object_get(h, "iat")) || !json_is_integer(json_object_get(h, "exp")))
        return nt_jose_fail(err, -EBADMSG, "release header: iat or exp missing or not an integer");
    iat = json_integer_value(json_object_get(h, "iat"));
    exp = json_integer_value(json_object_get(h, "exp"));
    if (iat < 0 || exp <= iat || exp > ((json_int_t)1 << 40))
        return nt_jose_fail(err, -EBADMSG,
                            "release header: iat/exp out of range (exp must follow iat)");
#undef STR
#undef REQ_STR

    i.version = (uint32_t)ver;
    i.iat = iat;
    i.exp = exp;
    if (dup_string(h, "name", &i.name) < 0 || dup_string(h, "type", &i.type) < 0 ||
        dup_string(h, "policy", &i.policy) < 0 || dup_string(h, "label", &i.label) < 0 ||
        dup_string(h, "secret_id", &i.secret_id) < 0 || dup_string(h, "jti", &i.jti) < 0 ||
        dup_string(h, "token_jti", &i.token_jti) < 0)
        return nt_jose_fail(err, -ENOMEM, "out of memory");
    if (json_object_get(h, "acl") && !(i.acl = json_deep_copy(json_object_get(h, "acl"))))
        return nt_jose_fail(err, -ENOMEM, "out of memory");
    *ret = i;
    i = (NtReleaseInfo){};
    return 0;
}

/* The JWE protected header: exactly alg, enc, kid, epk, cty, nitride. */
static int jwe_header_check(const json_t *hdr, NtReleaseInfo *ret, char *err) {
    static const char *const known[] = {"alg", "enc", "kid", "epk", "cty", "nitride"};
    const char *k, *alg, *enc, *kid, *cty, *crv, *x, *y, *kty;
    json_t *v, *epk;
    size_t coord;
    int r;

    if (!json_is_object(hdr))
        return nt_jose_fail(err, -EBADMSG, "JWE protected header is not a JSON object");
    json_object_foreach(
        (json_t *)hdr, k,
        v) if (!in_list(k, known,
                        ELEMENTSOF(known))) return nt_jose_fail(err, -EBADMSG,
                                                                "JWE protected header: member "
                                                                "'%.32s' not allowed",
                                                                k);
    if (json_unpack((json_t *)hdr, "{s:s,s:s,s:s,s:s,s:o}", "alg", &alg, "enc", &enc, "kid", &kid,
                    "cty", &cty, "epk", &epk) < 0)
        return nt_jose_fail(err, -EBADMSG,
                            "JWE protected header: alg, enc, kid, cty or epk missing");
    if (!streq(alg, "ECDH-ES+A256KW"))
        return nt_jose_fail(err, -EBADMSG, "JWE alg '%.32s' is not ECDH-ES+A256KW", alg);
    if (!streq(enc, "A256GCM"))
        return nt_jose_fail(err, -EBADMSG, "JWE enc '%.32s' is not A256GCM", enc);
    if (!streq(cty, NT_RELEASE_CTY))
        return nt_jose_fail(err, -EBADMSG, "JWE cty '%.32s' is not " NT_RELEASE_CTY, cty);
    if (!b64url_string(kid, THUMBPRINT_LEN, THUMBPRINT_LEN))
        return nt_jose_fail(err, -EBADMSG, "JWE kid is not an RFC 7638 thumbprint");
    if (!json_is_object(epk) || json_object_size(epk) != 4 ||
        json_unpack(epk, "{s:s,s:s,s:s,s:s}", "kty", &kty, "crv", &crv, "x", &x, "y", &y) < 0 ||
        !streq(kty, "EC"))
        return nt_jose_fail(err, -EBADMSG, "JWE epk is not exactly an EC public key {kty,crv,x,y}");
    if (streq(crv, "P-384"))
        coord = 64; /* base64url of 48 bytes */
    else if (streq(crv, "P-256"))
        coord = 43;
    else
        return nt_jose_fail(err, -EBADMSG, "JWE epk curve '%.16s' is not P-384 or P-256", crv);
    if (!b64url_string(x, coord, coord) || !b64url_string(y, coord, coord))
        return nt_jose_fail(err, -EBADMSG, "JWE epk coordinates have the wrong size");
    r = h_parse(json_object_get(hdr, "nitride"), ret, err);
    if (r < 0)
        return r;
    ret->recipient_kid = strdup(kid);
    if (!ret->recipient_kid) {
        nt_release_info_clear(ret);
        return nt_jose_fail(err, -ENOMEM, "out of memory");
    }
    return 0;
}

/* The five parts of a compact JWE: all present, non-empty, base64url. Returns the protected
 * header (decoded object) or an error. */
static int jwe_split_header(const char *jwe, size_t len, json_t **ret_hdr, char *err) {
    const char *p = jwe;
    size_t parts = 0, hl = 0;
    for (size_t i = 0, start = 0; i <= len; i++) {
        if (i < len && jwe[i] != '.')
            continue;
        if (i == start)
            return nt_jose_fail(err, -EBADMSG, "inner JWE: empty part");
        if (!nt_jose_b64url_chars(jwe + start, i - start))
            return nt_jose_fail(err, -EBADMSG, "inner JWE: character outside base64url");
        if (parts == 0)
            hl = i;
        parts++;
        start = i + 1;
    }
    if (parts != 5)
        return nt_jose_fail(err, -EBADMSG, "inner JWE is not a compact serialisation (five parts)");
    *ret_hdr = nt_jose_decode_object(p, hl, NT_RELEASE_MAX_SIZE);
    if (!*ret_hdr)
        return nt_jose_fail(err, -EBADMSG,
                            "inner JWE protected header is not a base64url JSON object");
    return 0;
}

int nt_release_verify(const char *release, const json_t *pinned_jwks, time_t now, int64_t skew_s,
                      NtReleaseInfo *ret_info, char **ret_jwe, char err[static 256]) {
    _cleanup_(nt_release_info_clear) NtReleaseInfo info = {};
    json_auto_t *hdr = NULL, *jwe_hdr = NULL;
    _cleanup_free_ char *jwe = NULL;
    const char *alg = NULL, *kid = NULL, *typ = NULL, *k;
    const json_t *key;
    json_t *v;
    size_t len, jwe_len = 0;
    int r;

    err[0] = 0;
    if (!release || !json_is_object(pinned_jwks))
        return nt_jose_fail(err, -EINVAL, "no release or no pinned keys");
    len = strnlen(release, NT_RELEASE_MAX_SIZE + 1);
    if (len > NT_RELEASE_MAX_SIZE)
        return nt_jose_fail(err, -EMSGSIZE, "release larger than %d bytes", NT_RELEASE_MAX_SIZE);
    NtJoseJwsParts parts;
    r = nt_jose_split_jws(release, len, &parts);
    if (r == -EBADMSG)
        return nt_jose_fail(err, -EBADMSG,
                            "release is not a JWS compact serialisation (three parts)");
    if (r < 0)
        return nt_jose_fail(err, -EBADMSG, "release: empty part or character outside base64url");

    hdr = nt_jose_decode_object(parts.header, parts.header_len, 4096);
    if (!hdr)
        return nt_jose_fail(err, -EBADMSG,
                            "release: JWS protected header is not a base64url JSON object");
    json_object_foreach(
        hdr, k,
        v) if (!streq(k, "alg") && !streq(k, "kid") &&
               !streq(k,
                      "typ")) return nt_jose_fail(err, -EBADMSG,
                                                  "release: JWS header member '%.32s' not allowed",
                                                  k);
    if (json_unpack(hdr, "{s:s,s?s,s?s}", "alg", &alg, "kid", &kid, "typ", &typ) < 0)
        return nt_jose_fail(err, -EBADMSG, "release: JWS header without a string alg");
    if (!streq(alg, "ES256") && !streq(alg, "ES384"))
        return nt_jose_fail(err, -EKEYREJECTED,
                            "release: algorithm '%.32s' refused (ES256 or ES384 only)", alg);
    if (!kid)
        return nt_jose_fail(err, -EKEYREJECTED, "release: JWS header without kid");
    if (!typ || !streq(typ, NT_RELEASE_TYP))
        return nt_jose_fail(err, -EBADMSG, "release: typ '%.40s' is not " NT_RELEASE_TYP,
                            typ ? typ : "(none)");
    key = nt_jose_find_kid(pinned_jwks, kid);
    if (!key)
        return nt_jose_fail(err, -EKEYREJECTED,
                            "release signed by key '%.64s', which is not pinned", kid);
    if (!nt_jose_key_fits_alg(key, alg))
        return nt_jose_fail(err, -EKEYREJECTED, "release: algorithm %s does not match key '%.64s'",
                            alg, kid);
    if (json_object_get(key, "d"))
        return nt_jose_fail(err, -EKEYREJECTED, "pinned keys hold a private key");
    r = nt_jose_jws_verify(&parts, key);
    if (r == -ENOMEM)
        return nt_jose_fail(err, -ENOMEM, "out of memory");
    if (r < 0)
        return nt_jose_fail(err, -EKEYREJECTED,
                            "release signature does not verify with key '%.64s'", kid);

    r = nt_jose_b64_decode(parts.payload, parts.payload_len, NT_RELEASE_MAX_SIZE, &jwe, &jwe_len);
    if (r == -ENOMEM)
        return nt_jose_fail(err, r, "out of memory");
    if (r < 0 || strlen(jwe) != jwe_len)
        return nt_jose_fail(err, -EBADMSG, "release payload is not a compact JWE");
    r = jwe_split_header(jwe, jwe_len, &jwe_hdr, err);
    if (r < 0)
        return r;
    r = jwe_header_check(jwe_hdr, &info, err);
    if (r < 0)
        return r;

    if (now == 0)
        now = time(NULL);
    int64_t skew = skew_s == 0 ? NT_RELEASE_DEFAULT_SKEW_S : MAX(skew_s, (int64_t)0);
    if ((int64_t)now >= info.exp + skew)
        return nt_jose_fail(err, -EKEYEXPIRED, "release expired at %lld (now %lld)",
                            (long long)info.exp, (long long)now);
    if (info.iat - skew > (int64_t)now)
        return nt_jose_fail(err, -EBADMSG, "release issued in the future (iat %lld, now %lld)",
                            (long long)info.iat, (long long)now);
    if (ret_info) {
        *ret_info = info;
        info = (NtReleaseInfo){};
    }
    if (ret_jwe)
        *ret_jwe = TAKE_PTR(jwe);
    return 0;
}

int nt_release_peek_name(const char *release, char **ret_name) {
    json_auto_t *jwe_hdr = NULL;
    _cleanup_free_ char *jwe = NULL;
    char err[256];
    const char *name;
    NtJoseJwsParts parts;
    size_t len, jwe_len = 0;
    int r;

    if (!release)
        return -EINVAL;
    len = strnlen(release, NT_RELEASE_MAX_SIZE + 1);
    if (len > NT_RELEASE_MAX_SIZE)
        return -EMSGSIZE;
    if (nt_jose_split_jws(release, len, &parts) < 0)
        return -EBADMSG;
    r = nt_jose_b64_decode(parts.payload, parts.payload_len, NT_RELEASE_MAX_SIZE, &jwe, &jwe_len);
    if (r == -ENOMEM)
        return r;
    if (r < 0 || strlen(jwe) != jwe_len)
        return -EBADMSG;
    r = jwe_split_header(jwe, jwe_len, &jwe_hdr, err);
    if (r < 0)
        return r;
    name = json_string_value(json_object_get(json_object_get(jwe_hdr, "nitride"), "name"));
    if (!name || !kms_name_valid(name))
        return -EBADMSG;
    *ret_name = strdup(name);
    return *ret_name ? 0 : -ENOMEM;
}

/* ---- seal ---- */

/* {kty, crv, x, y} of a public EC P-256/P-384 JWK, and its RFC 7638 thumbprint. */
static int recipient_public(const json_t *jwk, json_t **ret_pub, char **ret_kid) {
    static const char *const priv[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
    const char *kty = NULL, *crv = NULL, *x = NULL, *y = NULL;
    json_auto_t *pub = NULL, *thp = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pk = NULL;

    if (!json_is_object(jwk))
        return -EINVAL;
    for (size_t i = 0; i < ELEMENTSOF(priv); i++)
        if (json_object_get(jwk, priv[i]))
            return -EINVAL;
    if (json_unpack((json_t *)jwk, "{s:s,s:s,s:s,s:s}", "kty", &kty, "crv", &crv, "x", &x, "y",
                    &y) < 0 ||
        !streq(kty, "EC") || (!streq(crv, "P-384") && !streq(crv, "P-256")))
        return -EINVAL;
    pub = json_pack("{s:s,s:s,s:s,s:s}", "kty", "EC", "crv", crv, "x", x, "y", y);
    if (!pub)
        return -ENOMEM;
    pk = jose_openssl_jwk_to_EVP_PKEY(NULL, pub); /* on the curve */
    ERR_clear_error();
    if (!pk)
        return -EINVAL;
    thp = jose_jwk_thp(NULL, pub, "S256");
    if (!json_is_string(thp))
        return -EINVAL;
    *ret_kid = strdup(json_string_value(thp));
    if (!*ret_kid)
        return -ENOMEM;
    *ret_pub = TAKE_PTR(pub);
    return 0;
}

static int h_build(const NtReleaseInfo *h, time_t now, json_t **ret) {
    uint8_t rnd[16];
    char jti[32];
    int64_t iat = h->iat ? h->iat : (int64_t)now;
    int64_t exp = h->exp ? h->exp : iat + NT_RELEASE_DEFAULT_LIFETIME_S;
    json_auto_t *o = NULL;

    if (!h->name || !h->type || !h->policy || !h->secret_id || !h->token_jti)
        return -EINVAL;
    if (!h->jti) {
        if (RAND_bytes(rnd, sizeof rnd) != 1)
            return -EIO;
        if (jose_b64_enc_buf(rnd, sizeof rnd, jti, sizeof jti - 1) != 22)
            return -EIO;
        jti[22] = 0;
    }
    o = json_pack("{s:i,s:s,s:s,s:I,s:s,s:s,s:s,s:I,s:I,s:s}", "v", 1, "name", h->name, "type",
                  h->type, "version", (json_int_t)h->version, "policy", h->policy, "secret_id",
                  h->secret_id, "jti", h->jti ? h->jti : jti, "iat", (json_int_t)iat, "exp",
                  (json_int_t)exp, "token_jti", h->token_jti);
    if (!o)
        return -ENOMEM;
    if (streq(h->policy, "attested") &&
        json_object_set_new(o, "max_age", json_integer(h->max_age)) < 0)
        return -ENOMEM;
    if (!streq(h->policy, "attested") && h->max_age != 0)
        return -EINVAL;
    if (h->label && json_object_set_new(o, "label", json_string(h->label)) < 0)
        return -EINVAL; /* json_string refuses invalid UTF-8 */
    if (h->acl && json_object_set_new(o, "acl", json_deep_copy(h->acl)) < 0)
        return -ENOMEM;
    *ret = TAKE_PTR(o);
    return 0;
}

int nt_release_seal(NtSigningKeys *signer, const json_t *recipient_jwk, const NtReleaseInfo *h,
                    const uint8_t *value, size_t value_len, time_t now, char **ret_release) {
    _cleanup_(nt_release_info_clear) NtReleaseInfo check = {};
    _cleanup_(nt_jose_jwk_wipe_freep) json_t *cek = NULL;
    json_auto_t *pub = NULL, *hj = NULL, *jwe = NULL, *prot = NULL;
    _cleanup_free_ char *kid = NULL, *compact = NULL;
    const char *p64, *ek, *iv, *ct, *tag;
    char err[256], *jws = NULL;
    size_t lo, hi;
    int r;

    if (!signer || !h || !value || !ret_release)
        return -EINVAL;
    if (now == 0)
        now = time(NULL);
    if ((r = recipient_public(recipient_jwk, &pub, &kid)) < 0)
        return r;
    if ((r = h_build(h, now, &hj)) < 0)
        return r;
    if (h_parse(hj, &check, err) < 0)
        return -EINVAL;
    if (nt_release_value_size(h->type, &lo, &hi) < 0 || value_len < lo || value_len > hi)
        return -EINVAL;

    jwe = json_pack("{s:{s:s,s:s,s:s,s:s,s:O}}", "protected", "alg", "ECDH-ES+A256KW", "enc",
                    "A256GCM", "kid", kid, "cty", NT_RELEASE_CTY, "nitride", hj);
    cek = json_object();
    if (!jwe || !cek)
        return -ENOMEM;
    /* Wrap first (libjose puts the epk in the recipient's unprotected header), then move the
     * epk into the protected header: compact serialisation has no unprotected header, and the
     * protected header becomes the content encryption's AAD only in jose_jwe_enc_cek(). */
    if (!jose_jwe_enc_jwk(NULL, jwe, NULL, pub, cek))
        return -EIO;
    prot = json_incref(json_object_get(jwe, "protected"));
    if (!json_is_object(prot) || !json_is_object(json_object_get(jwe, "header")) ||
        json_object_update(prot, json_object_get(jwe, "header")) < 0 ||
        json_object_del(jwe, "header") < 0)
        return -EIO;
    {
        /* The verifier's check of what libjose wrote (it cannot fail unless libjose changes). */
        NtReleaseInfo tmp = {};
        r = jwe_header_check(prot, &tmp, err);
        nt_release_info_clear(&tmp);
        if (r < 0)
            return -EIO;
    }
    if (!jose_jwe_enc_cek(NULL, jwe, cek, value, value_len))
        return -EIO;
    if (json_unpack(jwe, "{s:s,s:s,s:s,s:s,s:s}", "protected", &p64, "encrypted_key", &ek, "iv",
                    &iv, "ciphertext", &ct, "tag", &tag) < 0)
        return -EIO;
    if (asprintf(&compact, "%s.%s.%s.%s.%s", p64, ek, iv, ct, tag) < 0) {
        compact = NULL;
        return -ENOMEM;
    }
    r = nt_signing_keys_sign_typ(signer, now, NT_RELEASE_TYP, compact, strlen(compact), &jws, NULL);
    if (r < 0)
        return r;
    if (strlen(jws) > NT_RELEASE_MAX_SIZE) {
        free(jws);
        return -EINVAL;
    }
    *ret_release = jws;
    return 0;
}

/* ---- pinned public keys ---- */

/* A normalised public key {kty, crv, x, y, kid, alg} from a JWK, or an error message. */
static int pinned_key(const json_t *jwk, json_t **ret, const char **ret_why) {
    static const char *const priv[] = {"d", "p", "q", "dp", "dq", "qi", "oth", "k"};
    const char *kty = NULL, *crv = NULL, *x = NULL, *y = NULL, *kid = NULL, *alg = NULL, *want;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pk = NULL;
    json_auto_t *o = NULL, *thp = NULL;

    if (!json_is_object(jwk)) {
        *ret_why = "a key is not a JSON object";
        return -EBADMSG;
    }
    for (size_t i = 0; i < ELEMENTSOF(priv); i++)
        if (json_object_get(jwk, priv[i])) {
            *ret_why = "a private key: pin public keys only";
            return -EBADMSG;
        }
    if (json_unpack((json_t *)jwk, "{s:s,s?s,s?s,s?s,s?s,s?s}", "kty", &kty, "crv", &crv, "x", &x,
                    "y", &y, "kid", &kid, "alg", &alg) < 0 ||
        !streq(kty, "EC") || !crv || !x || !y) {
        *ret_why = "not an EC public key";
        return -EBADMSG;
    }
    if (streq(crv, "P-256"))
        want = "ES256";
    else if (streq(crv, "P-384"))
        want = "ES384";
    else {
        *ret_why = "curve is not P-256 or P-384";
        return -EBADMSG;
    }
    if (alg && !streq(alg, want)) {
        *ret_why = "alg does not match the key's curve";
        return -EBADMSG;
    }
    o = json_pack("{s:s,s:s,s:s,s:s,s:s}", "kty", "EC", "crv", crv, "x", x, "y", y, "alg", want);
    if (!o)
        return -ENOMEM;
    pk = jose_openssl_jwk_to_EVP_PKEY(NULL, o);
    ERR_clear_error();
    if (!pk) {
        *ret_why = "invalid EC public key (not on the curve)";
        return -EBADMSG;
    }
    if (!kid) {
        thp = jose_jwk_thp(NULL, o, "S256");
        if (!json_is_string(thp))
            return -ENOMEM;
        kid = json_string_value(thp);
    }
    if (json_object_set_new(o, "kid", json_string(kid)) < 0)
        return -ENOMEM;
    *ret = TAKE_PTR(o);
    return 0;
}

static int add_pinned(json_t *keys, json_t *k, char **ret_error, const char *path) {
    const char *kid = json_string_value(json_object_get(k, "kid"));
    const json_t *e;
    size_t i;
    json_array_foreach(keys, i, e) {
        if (streq(json_string_value(json_object_get(e, "kid")), kid)) {
            nt_jose_set_error(ret_error, "%s: two keys with kid '%s'", path, kid);
            return -EBADMSG;
        }
    }
    return json_array_append(keys, k) < 0 ? -ENOMEM : 0;
}

int nt_jwks_load_public_file(const char *path, json_t **ret_jwks, char **ret_error) {
    _cleanup_free_ uint8_t *data = NULL;
    json_auto_t *keys = json_array();
    const char *why = NULL;
    size_t len = 0, i = 0;
    int r;

    if (!path || !ret_jwks)
        return -EINVAL;
    if (!keys)
        return -ENOMEM;
    r = read_full_file(path, PINNED_FILE_MAX, &data, &len);
    if (r < 0) {
        nt_jose_set_error(ret_error, "%s: cannot read: %s", path, strerror(-r));
        return r;
    }
    while (i < len && isspace(data[i]))
        i++;
    if (i < len && data[i] == '{') {
        json_auto_t *o = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, NULL);
        json_t *arr = o ? json_object_get(o, "keys") : NULL, *k;
        size_t n;
        if (!json_is_array(arr)) {
            nt_jose_set_error(ret_error, "%s: not a JWKS (a JSON object with a \"keys\" array)",
                              path);
            return -EBADMSG;
        }
        json_array_foreach(arr, n, k) {
            json_auto_t *pk = NULL;
            r = pinned_key(k, &pk, &why);
            if (r == -EBADMSG)
                nt_jose_set_error(ret_error, "%s: key %zu: %s", path, n + 1, why);
            if (r >= 0)
                r = add_pinned(keys, pk, ret_error, path);
            if (r < 0)
                return r;
        }
    } else {
        _cleanup_(BIO_free_allp) BIO *b = NULL;
        if (memmem(data, len, "PRIVATE KEY", 11)) {
            nt_jose_set_error(ret_error, "%s: holds a private key: pin public keys only", path);
            return -EBADMSG;
        }
        b = BIO_new_mem_buf(data, (int)len);
        if (!b)
            return -ENOMEM;
        for (size_t n = 1;; n++) {
            _cleanup_(EVP_PKEY_freep) EVP_PKEY *p = PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
            json_auto_t *jwk = NULL, *pk = NULL;
            if (!p)
                break;
            jwk = jose_openssl_jwk_from_EVP_PKEY(NULL, p);
            if (!jwk) {
                nt_jose_set_error(ret_error, "%s: PEM key %zu: not an EC P-256/P-384 key", path, n);
                ERR_clear_error();
                return -EBADMSG;
            }
            r = pinned_key(jwk, &pk, &why);
            if (r == -EBADMSG)
                nt_jose_set_error(ret_error, "%s: PEM key %zu: %s", path, n, why);
            if (r >= 0)
                r = add_pinned(keys, pk, ret_error, path);
            if (r < 0)
                return r;
        }
        ERR_clear_error();
    }
    if (json_array_size(keys) == 0) {
        nt_jose_set_error(ret_error, "%s: no public key found (a JWKS or PEM public keys)", path);
        return -EBADMSG;
    }
    *ret_jwks = json_pack("{s:O}", "keys", keys);
    return *ret_jwks ? 0 : -ENOMEM;
}
