/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for EAR token verification (nt_ear_verify: tokens presented to kmsd and vhsmd by
 * anyone). Two input modes, so that the claim checks behind the signature are reached too:
 *  - 'T' + token: the token as received, verified against a fixed JWKS;
 *  - 'S' + header JSON + '\n' + payload JSON: the harness signs them with the fixed key (a test
 *    key, public here, never used elsewhere) with libjose, then verifies the compact token.
 * Contract checked: the result is 0 or one of the documented errors; a failure has a message and
 * writes no claims; a success returns a claims object and only for ES256/ES384 tokens.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jose/b64.h>
#include <jose/jws.h>

#include "token/ear.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_JWK                                                                                   \
    "{\"kty\":\"EC\",\"crv\":\"P-384\",\"kid\":\"zDx68p3Dn2rmVY5v8xnhzeLT-R5ZMTeYLH9BHQXPAX4\","   \
    "\"x\":\"doCq0jNPSE4AtSSxZk14N1xlZrv6BDav6XUjS4oD0SbX78l0IfTpkGDoHoK4MdJo\","                  \
    "\"y\":\"Qk4eR1JYjm3-Umuipbt5b9DHhTs7vjVjGxE5fP46mWrTxqTNlxaxhxm4LmQ9y0Za\""
#define FUZZ_D "\"d\":\"NfQ_AXQyeu4Tb2a5jM2uwZd923fbH5z8xffBLHMK6R1ZHMxkmJhDV5As8XrkW_vM\""

static json_t *jwks, *priv;

static void init(void) {
    if (jwks)
        return;
    jwks = json_loads("{\"keys\":[" FUZZ_JWK ",\"alg\":\"ES384\",\"use\":\"sig\"}]}", 0, NULL);
    priv = json_loads(FUZZ_JWK "," FUZZ_D "}", 0, NULL);
    if (!jwks || !priv)
        abort();
}

/* Signs header.payload given as JSON texts; NULL if libjose refuses them. */
static char *sign(const char *h, size_t hl, const char *p, size_t pl) {
    json_auto_t *hdr = json_loadb(h, hl, 0, NULL);
    json_auto_t *jws = json_pack("{s:o}", "payload", jose_b64_enc(p, pl));
    json_auto_t *sig = NULL;
    const char *ph = NULL, *pp = NULL, *ps = NULL;
    char *out = NULL;
    if (!json_is_object(hdr) || !jws)
        return NULL;
    sig = json_pack("{s:O}", "protected", hdr);
    if (!sig || !jose_jws_sig(NULL, jws, sig, priv))
        return NULL;
    if (json_unpack(jws, "{s:s,s:s,s:s}", "protected", &ph, "payload", &pp, "signature", &ps) < 0)
        return NULL;
    if (asprintf(&out, "%s.%s.%s", ph, pp, ps) < 0)
        return NULL;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    NtEarVerifyOptions o = NT_EAR_VERIFY_OPTIONS_INIT;
    json_t *claims = (json_t *)0x1;
    char err[256], *token = NULL;
    int r;

    if (size < 1 || size > 64 * 1024)
        return 0;
    init();
    if (data[0] == 'S') {
        const char *nl = memchr(data + 1, '\n', size - 1);
        if (!nl)
            return 0;
        size_t hl = (size_t)((const uint8_t *)nl - data - 1);
        token = sign((const char *)data + 1, hl, nl + 1, size - 2 - hl);
        if (!token)
            return 0;
    } else {
        token = strndup((const char *)data + 1, size - 1);
        if (!token)
            return 0;
    }
    o.now = 1900000000;
    o.issuer = (size & 1) ? "https://attestd.test" : NULL;
    o.audience = (size & 2) ? "kmsd" : NULL;
    o.min_status = (int)(size % 4) - 1;
    r = nt_ear_verify(token, jwks, &o, &claims, err);
    if (r < 0) {
        if (claims != (json_t *)0x1)
            abort(); /* written on failure */
        if (r != -EKEYREJECTED && r != -EKEYEXPIRED && r != -EBADMSG && r != -EACCES &&
            r != -ENOMEM && r != -EINVAL)
            abort();
        if (!err[0] || strnlen(err, 256) == 256)
            abort();
    } else {
        if (!json_is_object(claims))
            abort();
        json_decref(claims);
    }
    free(token);
    return 0;
}
