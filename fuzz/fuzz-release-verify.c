/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz target for signed release verification (nt_release_verify: releases handed to vhsmd by
 * the agent, from the network). Three input modes, so that the checks behind the signature are
 * reached too:
 *  - 'R' + release: as received, verified against a fixed pinned JWKS;
 *  - 'S' + payload: the harness signs the payload (meant to be a compact JWE) as a release with
 *    the fixed key (a test key, public here, never used elsewhere), then verifies it;
 *  - 'H' + JSON: the harness wraps the JSON as the JWE protected header ("alg", "enc", "kid",
 *    "epk", "cty", "nitride" are whatever the input says) of a five-part JWE with fixed other
 *    parts, signs it and verifies it: the header and H parsers get arbitrary JSON.
 * Contract checked: the result is 0 or one of the documented errors; a failure has a message and
 * writes nothing; a success returns H (name in kms/, a known type, version >= 1, exp > iat) and
 * the inner JWE, which equals the signed payload.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jose/b64.h>
#include <jose/jws.h>

#include "token/release.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_JWK                                                                                   \
    "{\"kty\":\"EC\",\"crv\":\"P-384\",\"kid\":\"zDx68p3Dn2rmVY5v8xnhzeLT-R5ZMTeYLH9BHQXPAX4\","   \
    "\"x\":\"doCq0jNPSE4AtSSxZk14N1xlZrv6BDav6XUjS4oD0SbX78l0IfTpkGDoHoK4MdJo\","                  \
    "\"y\":\"Qk4eR1JYjm3-Umuipbt5b9DHhTs7vjVjGxE5fP46mWrTxqTNlxaxhxm4LmQ9y0Za\""
#define FUZZ_D "\"d\":\"NfQ_AXQyeu4Tb2a5jM2uwZd923fbH5z8xffBLHMK6R1ZHMxkmJhDV5As8XrkW_vM\""
#define FUZZ_KID "zDx68p3Dn2rmVY5v8xnhzeLT-R5ZMTeYLH9BHQXPAX4"
#define FUZZ_NOW 1900000000

static json_t *jwks, *priv;

static void init(void) {
    if (jwks)
        return;
    jwks = json_loads("{\"keys\":[" FUZZ_JWK ",\"alg\":\"ES384\",\"use\":\"sig\"}]}", 0, NULL);
    priv = json_loads(FUZZ_JWK "," FUZZ_D "}", 0, NULL);
    if (!jwks || !priv)
        abort();
}

/* The payload bytes signed as a release; NULL if libjose refuses. */
static char *sign(const void *p, size_t pl) {
    json_auto_t *jws = json_pack("{s:o}", "payload", jose_b64_enc(p, pl));
    json_auto_t *sig = json_pack("{s:{s:s,s:s,s:s}}", "protected", "alg", "ES384", "kid", FUZZ_KID,
                                 "typ", NT_RELEASE_TYP);
    const char *ph = NULL, *pp = NULL, *ps = NULL;
    char *out = NULL;
    if (!jws || !sig || !jose_jws_sig(NULL, jws, sig, priv))
        return NULL;
    if (json_unpack(jws, "{s:s,s:s,s:s}", "protected", &ph, "payload", &pp, "signature", &ps) < 0)
        return NULL;
    if (asprintf(&out, "%s.%s.%s", ph, pp, ps) < 0)
        return NULL;
    return out;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    NtReleaseInfo info = {.name = (char *)0x1};
    char err[256], *rel = NULL, *jwe = (char *)0x1, *signed_payload = NULL;
    int r;

    if (size < 1 || size > NT_RELEASE_MAX_SIZE)
        return 0;
    init();
    if (data[0] == 'S') {
        signed_payload = strndup((const char *)data + 1, size - 1);
        rel = signed_payload ? sign(data + 1, size - 1) : NULL;
    } else if (data[0] == 'H') {
        json_auto_t *h64 = jose_b64_enc(data + 1, size - 1);
        if (h64 &&
            asprintf(&signed_payload, "%s.QUFBQQ.QUFBQUFBQUFBQUFB.QUFBQQ.QUFBQUFBQUFBQUFBQUFBQQ",
                     json_string_value(h64)) >= 0)
            rel = sign(signed_payload, strlen(signed_payload));
    } else
        rel = strndup((const char *)data + 1, size - 1);
    if (!rel) {
        free(signed_payload);
        return 0;
    }
    r = nt_release_verify(rel, jwks, FUZZ_NOW, (int64_t)(size % 3) - 1, &info, &jwe, err);
    if (r < 0) {
        if (info.name != (char *)0x1 || jwe != (char *)0x1)
            abort(); /* written on failure */
        if (r != -EKEYREJECTED && r != -EKEYEXPIRED && r != -EBADMSG && r != -EMSGSIZE &&
            r != -ENOMEM && r != -EINVAL)
            abort();
        if (!err[0] || strnlen(err, 256) == 256)
            abort();
    } else {
        if (!info.name || strncmp(info.name, "kms/", 4) != 0 || !info.type || info.version < 1 ||
            info.exp <= info.iat || !info.recipient_kid || !jwe)
            abort();
        if (nt_release_value_size(info.type, NULL, NULL) < 0)
            abort();
        if (signed_payload && strcmp(signed_payload, jwe) != 0)
            abort(); /* the inner JWE must be exactly what was signed */
        nt_release_info_clear(&info);
        free(jwe);
    }
    free(rel);
    free(signed_payload);
    return 0;
}
