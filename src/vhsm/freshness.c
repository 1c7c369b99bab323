/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The keystore's freshness anchor file (freshness.h, docs/vault.md "Freshness and rollback").
 * Only the file and its MAC live here; when to read and write it, and what a stale keystore
 * means, is decided by keystore.c at load and save.
 */
#include "freshness.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#include "core/alloc.h"
#include "core/bytes.h"
#include "core/fileio.h"
#include "core/openssl-util.h"

#define ANCHOR_MAGIC "NTFA"
#define ANCHOR_FORMAT 1u
#define ANCHOR_MAC_OFFSET 16u
#define ANCHOR_MAC_SIZE 32u

struct FreshnessAnchor {
    char *path;
    Secret *key;
};

int freshness_anchor_spec_parse(const char *spec, char **ret_path) {
    char *p;
    if (!spec || !ret_path)
        return -EINVAL;
    if (streq(spec, "none")) {
        *ret_path = NULL;
        return 0;
    }
    if (strncmp(spec, "file:", 5) != 0 || spec[5] != '/')
        return -EINVAL;
    p = nt_strdup(spec + 5);
    if (!p)
        return -ENOMEM;
    *ret_path = p;
    return 0;
}

int freshness_anchor_new(const char *path, FreshnessAnchor **ret) {
    FreshnessAnchor *a;
    if (!path || !path[0] || !ret)
        return -EINVAL;
    a = nt_calloc(1, sizeof(FreshnessAnchor));
    if (!a)
        return -ENOMEM;
    a->path = nt_strdup(path);
    if (!a->path) {
        free(a);
        return -ENOMEM;
    }
    *ret = a;
    return 0;
}

FreshnessAnchor *freshness_anchor_free(FreshnessAnchor *a) {
    if (!a)
        return NULL;
    secret_free(a->key);
    free(a->path);
    free(a);
    return NULL;
}

const char *freshness_anchor_path(const FreshnessAnchor *a) {
    return a ? a->path : NULL;
}

bool freshness_anchor_has_key(const FreshnessAnchor *a) {
    return a && a->key;
}

int freshness_anchor_set_key(FreshnessAnchor *a, Secret **key) {
    if (!a || !key || !*key || secret_size(*key) != FRESHNESS_KEY_SIZE)
        return -EINVAL;
    secret_free(a->key);
    a->key = TAKE_PTR(*key);
    return 0;
}

static int anchor_mac(const Secret *key, const uint8_t *data, size_t len,
                      uint8_t mac[ANCHOR_MAC_SIZE]) {
    _cleanup_(EVP_MAC_freep) EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
    _cleanup_(EVP_MAC_CTX_freep) EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    size_t n = 0;

    ctx = m ? EVP_MAC_CTX_new(m) : NULL;
    if (!ctx)
        return nt_openssl_error(-EIO, "HMAC");
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(ctx, secret_const_data(key), secret_size(key), params) != 1 ||
        EVP_MAC_update(ctx, data, len) != 1 || EVP_MAC_final(ctx, mac, &n, ANCHOR_MAC_SIZE) != 1 ||
        n != ANCHOR_MAC_SIZE)
        return nt_openssl_error(-EIO, "HMAC");
    return 0;
}

int freshness_anchor_encode(const Secret *key, uint64_t generation,
                            uint8_t ret[FRESHNESS_ANCHOR_SIZE]) {
    uint8_t buf[FRESHNESS_ANCHOR_SIZE];
    int r;
    if (!key || !ret)
        return -EINVAL;
    memcpy(buf, ANCHOR_MAGIC, 4);
    bytes_put_be16(buf + 4, ANCHOR_FORMAT);
    bytes_put_be16(buf + 6, FRESHNESS_ANCHOR_SIZE);
    bytes_put_be64(buf + 8, generation);
    if ((r = anchor_mac(key, buf, ANCHOR_MAC_OFFSET, buf + ANCHOR_MAC_OFFSET)) < 0)
        return r;
    memcpy(ret, buf, sizeof buf);
    return 0;
}

int freshness_anchor_decode(const Secret *key, const uint8_t *data, size_t len,
                            uint64_t *ret_generation) {
    uint8_t mac[ANCHOR_MAC_SIZE];
    int r;
    if (!key || (!data && len > 0) || !ret_generation)
        return -EINVAL;
    if (len < 8 || memcmp(data, ANCHOR_MAGIC, 4) != 0)
        return -EBADMSG;
    if (bytes_get_be16(data + 4) != ANCHOR_FORMAT)
        return -EOPNOTSUPP;
    if (bytes_get_be16(data + 6) != FRESHNESS_ANCHOR_SIZE || len != FRESHNESS_ANCHOR_SIZE)
        return -EBADMSG;
    if ((r = anchor_mac(key, data, ANCHOR_MAC_OFFSET, mac)) < 0)
        return r;
    if (CRYPTO_memcmp(mac, data + ANCHOR_MAC_OFFSET, ANCHOR_MAC_SIZE) != 0)
        return -EKEYREJECTED;
    *ret_generation = bytes_get_be64(data + 8);
    return 0;
}

int freshness_anchor_read(FreshnessAnchor *a, uint64_t *ret_generation) {
    _cleanup_free_ uint8_t *data = NULL;
    size_t len = 0;
    int r;
    if (!a || !ret_generation)
        return -EINVAL;
    if (!a->key)
        return -ENOKEY;
    /* A little more than the size, so that a longer file is refused as malformed. */
    r = read_full_file(a->path, FRESHNESS_ANCHOR_SIZE + 1, &data, &len);
    if (r == -EFBIG)
        return -EBADMSG;
    if (r < 0)
        return r;
    return freshness_anchor_decode(a->key, data, len, ret_generation);
}

int freshness_anchor_write(FreshnessAnchor *a, uint64_t generation) {
    _cleanup_free_ char *dir = NULL;
    uint8_t buf[FRESHNESS_ANCHOR_SIZE];
    char *slash;
    int r;
    if (!a)
        return -EINVAL;
    if (!a->key)
        return -ENOKEY;
    if ((r = freshness_anchor_encode(a->key, generation, buf)) < 0)
        return r;
    /* The directory exists after the first write: only a missing one is created (no mkdir
     * per component at every save). */
    r = write_file_atomic(a->path, buf, sizeof buf, 0600);
    if (r != -ENOENT)
        return r;
    dir = nt_strdup(a->path);
    if (!dir)
        return -ENOMEM;
    slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = 0;
        if ((r = mkdir_p(dir, 0700)) < 0)
            return r;
    }
    return write_file_atomic(a->path, buf, sizeof buf, 0600);
}
