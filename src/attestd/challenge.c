/* SPDX-License-Identifier: Apache-2.0 */
#include "attestd/challenge.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/encoding.h"
#include "core/fileio.h"
#include "core/secret.h"

#define CHALLENGE_LABEL "nitride-challenge-v1"
/* Linear probing never runs further than this: a full neighbourhood means "busy". */
#define REPLAY_PROBES 64

typedef struct ReplayEntry {
    uint8_t tag[16]; /* first 16 bytes of the nonce's MAC */
    int64_t expires; /* 0: never used */
} ReplayEntry;

struct NtChallenger {
    Secret *secret;
    int64_t lifetime;
    pthread_mutex_t lock;
    ReplayEntry *table;
    size_t n_slots; /* power of two */
    EVP_MAC *mac;
};

const char *nt_challenge_result_to_string(NtChallengeResult r) {
    switch (r) {
    case NT_CHALLENGE_OK:
        return "ok";
    case NT_CHALLENGE_MALFORMED:
        return "malformed";
    case NT_CHALLENGE_FORGED:
        return "forged";
    case NT_CHALLENGE_EXPIRED:
        return "expired";
    case NT_CHALLENGE_REPLAYED:
        return "replayed";
    case NT_CHALLENGE_BUSY:
        return "busy";
    }
    return "unknown";
}

int nt_challenger_new(const uint8_t *secret, size_t secret_len, int64_t lifetime_s,
                      size_t replay_capacity, NtChallenger **ret) {
    _cleanup_(nt_challenger_freep) NtChallenger *c = NULL;
    int r;

    if (!secret || secret_len < NT_CHALLENGE_SECRET_MIN || lifetime_s < 1 || lifetime_s > 3600 ||
        replay_capacity < 16 || replay_capacity > ((size_t)1 << 26))
        return -EINVAL;
    c = calloc(1, sizeof *c);
    if (!c)
        return -ENOMEM;
    pthread_mutex_init(&c->lock, NULL);
    r = secret_new_copy(secret, secret_len, &c->secret);
    if (r < 0)
        return r;
    c->lifetime = lifetime_s;
    c->n_slots = 16;
    while (c->n_slots < replay_capacity * 2)
        c->n_slots <<= 1;
    c->table = calloc(c->n_slots, sizeof(ReplayEntry));
    if (!c->table)
        return -ENOMEM;
    c->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!c->mac)
        return -ENOMEM;
    *ret = TAKE_PTR(c);
    return 0;
}

NtChallenger *nt_challenger_free(NtChallenger *c) {
    if (!c)
        return NULL;
    secret_free(c->secret);
    free(c->table);
    EVP_MAC_free(c->mac);
    pthread_mutex_destroy(&c->lock);
    free(c);
    return NULL;
}

int nt_challenger_new_from_file(const char *path, int64_t lifetime_s, size_t replay_capacity,
                                NtChallenger **ret, char **ret_error) {
    _cleanup_close_ int fd = -EBADF;
    _cleanup_free_ uint8_t *data = NULL;
    size_t len = 0;
    struct stat st;
    int r;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        r = -errno;
        if (ret_error && asprintf(ret_error, "challenge secret %s: %s", path, strerror(-r)) < 0)
            *ret_error = NULL;
        return r;
    }
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
        if (ret_error && asprintf(ret_error,
                                  "challenge secret %s: must be a regular file of mode 0600 or "
                                  "stricter (is %04o)",
                                  path, (unsigned)(st.st_mode & 07777)) < 0)
            *ret_error = NULL;
        return -EPERM;
    }
    r = read_full_fd(fd, 4096, &data, &len);
    if (r < 0) {
        if (ret_error && asprintf(ret_error, "challenge secret %s: %s", path, strerror(-r)) < 0)
            *ret_error = NULL;
        return r;
    }
    if (len < NT_CHALLENGE_SECRET_MIN) {
        explicit_bzero(data, len);
        if (ret_error && asprintf(ret_error, "challenge secret %s: %zu bytes, need at least %d",
                                  path, len, NT_CHALLENGE_SECRET_MIN) < 0)
            *ret_error = NULL;
        return -EINVAL;
    }
    r = nt_challenger_new(data, len, lifetime_s, replay_capacity, ret);
    explicit_bzero(data, len);
    return r;
}

static int compute_mac(NtChallenger *c, const uint8_t *msg, size_t len, uint8_t out[32]) {
    EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(c->mac);
    OSSL_PARAM params[2] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    size_t outl = 0;
    int ok;

    if (!ctx)
        return -ENOMEM;
    ok = EVP_MAC_init(ctx, secret_const_data(c->secret), secret_size(c->secret), params) &&
         EVP_MAC_update(ctx, (const uint8_t *)CHALLENGE_LABEL, STRLEN(CHALLENGE_LABEL)) &&
         EVP_MAC_update(ctx, msg, len) && EVP_MAC_final(ctx, out, &outl, 32) && outl == 32;
    EVP_MAC_CTX_free(ctx);
    return ok ? 0 : -EIO;
}

int nt_challenge_issue(NtChallenger *c, time_t now, char **ret_nonce, time_t *ret_expires) {
    uint8_t raw[NT_CHALLENGE_RAW_SIZE];
    int64_t exp = (int64_t)now + c->lifetime;
    int r;

    if (RAND_bytes(raw, NT_CHALLENGE_RANDOM_SIZE) != 1)
        return -EIO;
    for (int i = 0; i < 8; i++)
        raw[NT_CHALLENGE_RANDOM_SIZE + i] = (uint8_t)((uint64_t)exp >> (56 - 8 * i));
    r = compute_mac(c, raw, NT_CHALLENGE_RANDOM_SIZE + 8, raw + NT_CHALLENGE_RANDOM_SIZE + 8);
    if (r < 0)
        return r;
    r = base64url_encode_alloc(raw, sizeof raw, ret_nonce);
    if (r < 0)
        return r;
    if (ret_expires)
        *ret_expires = (time_t)exp;
    return 0;
}

static size_t slot_of(const NtChallenger *c, const uint8_t tag[16]) {
    uint64_t h;
    memcpy(&h, tag, sizeof h); /* the MAC is uniformly distributed */
    return (size_t)h & (c->n_slots - 1);
}

NtChallengeResult nt_challenge_check(NtChallenger *c, const char *nonce, time_t now, bool consume,
                                     time_t *ret_expires) {
    _cleanup_free_ uint8_t *raw = NULL;
    uint8_t mac[32];
    size_t len = 0;
    int64_t exp = 0;

    if (!nonce || strlen(nonce) > 128 ||
        base64url_decode_alloc(nonce, strlen(nonce), &raw, &len) < 0 ||
        len != NT_CHALLENGE_RAW_SIZE)
        return NT_CHALLENGE_MALFORMED;
    if (compute_mac(c, raw, NT_CHALLENGE_RANDOM_SIZE + 8, mac) < 0)
        return NT_CHALLENGE_BUSY;
    if (CRYPTO_memcmp(mac, raw + NT_CHALLENGE_RANDOM_SIZE + 8, 32) != 0)
        return NT_CHALLENGE_FORGED;
    for (int i = 0; i < 8; i++)
        exp = (int64_t)(((uint64_t)exp << 8) | raw[NT_CHALLENGE_RANDOM_SIZE + i]);
    if (ret_expires)
        *ret_expires = (time_t)exp;
    /* A nonce from the future beyond its lifetime was issued by a replica with a broken clock
     * or a different lifetime; accept it only within this replica's own lifetime. */
    if ((int64_t)now >= exp || exp - (int64_t)now > c->lifetime + 60)
        return NT_CHALLENGE_EXPIRED;

    const uint8_t *tag = mac;
    size_t s = slot_of(c, tag), free_slot = SIZE_MAX;
    NtChallengeResult res = NT_CHALLENGE_OK;

    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < REPLAY_PROBES && i < c->n_slots; i++) {
        ReplayEntry *e = &c->table[(s + i) & (c->n_slots - 1)];
        if (e->expires > (int64_t)now && memcmp(e->tag, tag, 16) == 0) {
            res = NT_CHALLENGE_REPLAYED;
            break;
        }
        if (e->expires <= (int64_t)now && free_slot == SIZE_MAX)
            free_slot = (s + i) & (c->n_slots - 1);
        if (e->expires == 0)
            break; /* never used: nothing beyond was placed by this probe sequence */
    }
    if (res == NT_CHALLENGE_OK && consume) {
        if (free_slot == SIZE_MAX)
            res = NT_CHALLENGE_BUSY;
        else {
            memcpy(c->table[free_slot].tag, tag, 16);
            c->table[free_slot].expires = exp;
        }
    }
    pthread_mutex_unlock(&c->lock);
    return res;
}

size_t nt_challenger_replay_size(NtChallenger *c, time_t now) {
    size_t n = 0;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n_slots; i++)
        n += c->table[i].expires > (int64_t)now;
    pthread_mutex_unlock(&c->lock);
    return n;
}
