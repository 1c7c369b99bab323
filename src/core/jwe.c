/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JWE to Secret (jwe.h): libjose's CEK unwrap and streaming decryption into a sink that writes
 * into the Secret's locked pages.
 */
#include "core/jwe.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include <jose/jose.h>

#include "core/macro.h"

/* A jose_io_t sink writing the plaintext into a preallocated Secret. */
typedef struct SecretSink {
    jose_io_t io;
    Secret *s;
    size_t off;
} SecretSink;

static bool sink_feed(jose_io_t *io, const void *in, size_t len) {
    SecretSink *k = (SecretSink *)io;
    if (len > secret_size(k->s) - k->off)
        return false;
    memcpy(secret_data(k->s) + k->off, in, len);
    k->off += len;
    return true;
}

static bool sink_done(jose_io_t *io) {
    return true;
}

static void sink_free(jose_io_t *io) {
}

/* The CEK's "k" wiped in place before the object goes: jansson's allocator does not wipe. */
static void cek_wipe_free(json_t *cek) {
    json_t *k = json_object_get(cek, "k");
    if (json_is_string(k))
        explicit_bzero((char *)json_string_value(k), json_string_length(k));
    json_decref(cek);
}

int nt_jwe_decrypt_secret(const json_t *jwe, const json_t *jwk, const uint8_t *ct, size_t ct_len,
                          Secret **ret) {
    _cleanup_(secret_freep) Secret *pt = NULL;
    SecretSink sink = {.io = {.refs = 1, .feed = sink_feed, .done = sink_done, .free = sink_free}};
    json_t *cek;
    jose_io_t *io;
    bool ok;
    int r;

    if (!jwe || !jwk || !ct || !ret)
        return -EINVAL;
    cek = jose_jwe_dec_jwk(NULL, jwe, NULL, jwk);
    if (!cek)
        return -EKEYREJECTED;
    if ((r = secret_new(ct_len, &pt)) < 0) {
        cek_wipe_free(cek);
        return r;
    }
    sink.s = pt;
    io = jose_jwe_dec_cek_io(NULL, jwe, cek, &sink.io);
    cek_wipe_free(cek);
    if (!io)
        return -EKEYREJECTED;
    ok = io->feed(io, ct, ct_len) && io->done(io);
    jose_io_decref(io);
    if (!ok || sink.off != ct_len)
        return -EKEYREJECTED; /* the partial plaintext of a forged JWE is wiped with pt */
    *ret = TAKE_PTR(pt);
    return 0;
}
