/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Compact-serialisation helpers shared by the token library (jose-util.h). They check shape
 * only; signatures and decryption are libjose's.
 */
#include "token/jose-util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jose/b64.h>
#include <jose/jws.h>

int nt_jose_fail(char *err, int r, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, 256, fmt, ap);
    va_end(ap);
    return r;
}

void nt_jose_set_error(char **ret_error, const char *fmt, ...) {
    va_list ap;
    if (!ret_error)
        return;
    free(*ret_error);
    *ret_error = NULL;
    va_start(ap, fmt);
    if (vasprintf(ret_error, fmt, ap) < 0)
        *ret_error = NULL;
    va_end(ap);
}

bool nt_jose_b64url_chars(const char *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_'))
            return false;
    }
    return true;
}

int nt_jose_split_jws(const char *s, size_t len, NtJoseJwsParts *ret) {
    const char *d1 = memchr(s, '.', len);
    const char *d2 = d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - s)) : NULL;
    if (!d1 || !d2 || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - s)))
        return -EBADMSG;
    NtJoseJwsParts p = {
        .header = s,
        .header_len = (size_t)(d1 - s),
        .payload = d1 + 1,
        .payload_len = (size_t)(d2 - d1 - 1),
        .signature = d2 + 1,
        .signature_len = len - (size_t)(d2 + 1 - s),
    };
    if (p.header_len == 0 || p.payload_len == 0 || p.signature_len == 0 ||
        !nt_jose_b64url_chars(p.header, p.header_len) ||
        !nt_jose_b64url_chars(p.payload, p.payload_len) ||
        !nt_jose_b64url_chars(p.signature, p.signature_len))
        return -EILSEQ;
    *ret = p;
    return 0;
}

json_t *nt_jose_jws_object(const NtJoseJwsParts *p) {
    return json_pack("{s:s%,s:s%,s:s%}", "protected", p->header, p->header_len, "payload",
                     p->payload, p->payload_len, "signature", p->signature, p->signature_len);
}

int nt_jose_b64_decode(const char *s, size_t n, size_t max, char **ret, size_t *ret_len) {
    size_t len = jose_b64_dec_buf(s, n, NULL, 0);
    char *buf;
    if (len == SIZE_MAX || len > max)
        return -EBADMSG;
    buf = malloc(len + 1);
    if (!buf)
        return -ENOMEM;
    if (jose_b64_dec_buf(s, n, buf, len) != len) {
        free(buf);
        return -EBADMSG;
    }
    buf[len] = 0;
    *ret = buf;
    *ret_len = len;
    return 0;
}

json_t *nt_jose_decode_object(const char *s, size_t n, size_t max) {
    _cleanup_free_ char *buf = NULL;
    size_t len = 0;
    json_t *o;
    if (nt_jose_b64_decode(s, n, max, &buf, &len) < 0)
        return NULL;
    o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, NULL);
    if (o && !json_is_object(o)) {
        json_decref(o);
        return NULL;
    }
    return o;
}

const json_t *nt_jose_find_kid(const json_t *jwks, const char *kid) {
    const json_t *keys = json_object_get(jwks, "keys"), *k;
    size_t i;
    json_array_foreach(keys, i, k) {
        const char *kk = json_string_value(json_object_get(k, "kid"));
        if (kk && streq(kk, kid))
            return k;
    }
    return NULL;
}

bool nt_jose_key_fits_alg(const json_t *key, const char *alg) {
    const char *kty = json_string_value(json_object_get(key, "kty"));
    const char *crv = json_string_value(json_object_get(key, "crv"));
    const char *kalg = json_string_value(json_object_get(key, "alg"));
    const char *want_crv = streq(alg, "ES256") ? "P-256" : streq(alg, "ES384") ? "P-384" : NULL;
    return want_crv && kty && streq(kty, "EC") && crv && streq(crv, want_crv) &&
           (!kalg || streq(kalg, alg));
}

int nt_jose_jws_verify(const NtJoseJwsParts *p, const json_t *key) {
    json_auto_t *jws = nt_jose_jws_object(p);
    if (!jws)
        return -ENOMEM;
    return jose_jws_ver(NULL, jws, NULL, key, false) ? 0 : -EKEYREJECTED;
}

void nt_jose_jwk_wipe_free(json_t *jwk) {
    static const char *const priv[] = {"d", "p", "q", "dp", "dq", "qi", "k"};
    if (!jwk)
        return;
    if (json_is_object(jwk) && jwk->refcount == 1)
        for (size_t i = 0; i < ELEMENTSOF(priv); i++) {
            json_t *m = json_object_get(jwk, priv[i]);
            if (json_is_string(m))
                explicit_bzero((char *)json_string_value(m), json_string_length(m));
        }
    json_decref(jwk);
}
