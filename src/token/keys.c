/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Token signing keys. Invariants: a key set is immutable once built; refresh builds a new set and
 * swaps it in under the write lock, so signers (read lock) never see a key freed under them. In a
 * state directory, creation and rotation hold an flock on DIR/.lock so that two processes never
 * both generate a first key or interleave a rotation. Files are only ever replaced by rename.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jose/b64.h>
#include <jose/jwk.h>
#include <jose/jws.h>
#include <openssl/ecdsa.h>
#include <openssl/pem.h>
#include "core/jose-openssl.h"

#include "core/encoding.h"
#include "core/fileio.h"
#include "core/openssl-util.h"
#include "token/jose-util.h"
#include "token/keys.h"

#define KEY_FILE_MAX (64 * 1024)

typedef struct Key {
    char *kid;
    json_t *jwk;                               /* private, with "alg" */
    json_t *pub;                               /* public, with kid, alg, use */
    EVP_PKEY *pkey;                            /* the same private key, for signing */
    int64_t created, activate, retire, expire; /* retire/expire 0: open-ended */
} Key;

typedef struct KeySet {
    Key *keys;
    size_t n;
} KeySet;

struct NtSigningKeys {
    pthread_rwlock_t lock;
    NtJwsAlg alg;
    char *dir; /* NULL in file mode */
    KeySet set;
};

static const char *const alg_names[_NT_JWS_ALG_MAX] = {
    [NT_JWS_ES256] = "ES256",
    [NT_JWS_ES384] = "ES384",
};
static const char *const alg_curves[_NT_JWS_ALG_MAX] = {
    [NT_JWS_ES256] = "P-256",
    [NT_JWS_ES384] = "P-384",
};

const char *nt_jws_alg_to_string(NtJwsAlg a) {
    return a >= 0 && a < _NT_JWS_ALG_MAX ? alg_names[a] : NULL;
}

NtJwsAlg nt_jws_alg_from_string(const char *s) {
    for (int i = 0; s && i < _NT_JWS_ALG_MAX; i++)
        if (streq(s, alg_names[i]))
            return (NtJwsAlg)i;
    return _NT_JWS_ALG_INVALID;
}

static void wipe_free(char *p, size_t n) {
    if (p) {
        explicit_bzero(p, n);
        free(p);
    }
}

static void key_done(Key *k) {
    free(k->kid);
    nt_jose_jwk_wipe_free(k->jwk);
    json_decref(k->pub);
    EVP_PKEY_free(k->pkey);
    *k = (Key){};
}

static void keyset_done(KeySet *s) {
    for (size_t i = 0; i < s->n; i++)
        key_done(&s->keys[i]);
    free(s->keys);
    *s = (KeySet){};
}

static int keyset_add(KeySet *s, Key *k) {
    Key *n = realloc(s->keys, (s->n + 1) * sizeof *n);
    if (!n)
        return -ENOMEM;
    s->keys = n;
    s->keys[s->n++] = *k;
    *k = (Key){};
    return 0;
}

/* Checks a private EC JWK for alg's curve, sets "alg", derives kid and the public JWK. Takes
 * ownership of jwk (wiped on failure). */
static int key_from_jwk(json_t *jwk, NtJwsAlg alg, Key *ret, const char **ret_why) {
    const char *kty = NULL, *crv = NULL, *a = NULL;
    Key k = {.jwk = jwk};
    int r;

    if (json_unpack(jwk, "{s:s,s?s,s?s}", "kty", &kty, "crv", &crv, "alg", &a) < 0 ||
        !json_is_string(json_object_get(jwk, "d"))) {
        *ret_why = "not a private JWK";
        r = -EBADMSG;
        goto fail;
    }
    if (!streq(kty, "EC") || !crv || !streq(crv, alg_curves[alg]) ||
        (a && !streq(a, alg_names[alg]))) {
        *ret_why = "key type, curve or alg does not match the configured algorithm (ES256: P-256, "
                   "ES384: P-384; ES256 is the default since issue 10)";
        r = -EOPNOTSUPP;
        goto fail;
    }
    if (json_object_set_new(jwk, "alg", json_string(alg_names[alg])) < 0) {
        r = -ENOMEM;
        goto fail;
    }
    (void)json_object_del(jwk, "kid");
    {
        json_auto_t *thp = jose_jwk_thp(NULL, jwk, "S256");
        if (!thp || !json_is_string(thp)) {
            *ret_why = "cannot compute the JWK thumbprint (invalid key)";
            r = -EBADMSG;
            goto fail;
        }
        k.kid = strdup(json_string_value(thp));
    }
    /* Built from the public members (not a copy with "d" removed: no private bytes to free). */
    k.pub = json_pack("{s:s,s:s,s:O,s:O}", "kty", "EC", "crv", crv, "x", json_object_get(jwk, "x"),
                      "y", json_object_get(jwk, "y"));
    if (!k.kid || !k.pub || !json_is_string(json_object_get(k.pub, "x")) ||
        !json_is_string(json_object_get(k.pub, "y"))) {
        r = k.kid && k.pub ? -EBADMSG : -ENOMEM;
        *ret_why = "invalid EC key";
        goto fail;
    }
    if (json_object_set_new(k.pub, "kid", json_string(k.kid)) < 0 ||
        json_object_set_new(k.pub, "use", json_string("sig")) < 0 ||
        json_object_set_new(k.pub, "alg", json_string(alg_names[alg])) < 0) {
        r = -ENOMEM;
        goto fail;
    }
    /* The key must be usable: a JWK whose d does not match x/y is caught here. The OpenSSL key
     * is kept: libjose converts the JWK again on every signature (1.3 ms for P-384, twice the
     * signature itself). */
    k.pkey = jose_openssl_jwk_to_EVP_PKEY(NULL, jwk);
    if (!k.pkey) {
        *ret_why = "invalid EC private key";
        r = -EBADMSG;
        goto fail;
    }
    *ret = k;
    return 0;
fail:
    key_done(&k);
    return r;
}

static int64_t get_time(const json_t *o, const char *name, bool *ok) {
    json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        *ok = false;
        return 0;
    }
    return json_integer_value(v);
}

/* Opens a private key file, refusing group/other access and non-regular files; reads it. */
static int read_private_file(int dirfd, const char *path, char **ret, size_t *ret_len) {
    _cleanup_close_ int fd = -EBADF;
    struct stat st;
    uint8_t *data = NULL;
    size_t len = 0;
    int r;

    fd = openat(dirfd, path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EBADMSG;
    if (st.st_mode & 077)
        return -EPERM;
    r = read_full_fd(fd, KEY_FILE_MAX, &data, &len);
    if (r < 0)
        return r;
    *ret = (char *)data;
    *ret_len = len;
    return 0;
}

/* A state-directory key file: {"jwk", "created", "activate", "retire", "expire"}. */
static int load_key_file(int dirfd, const char *name, NtJwsAlg alg, Key *ret, char **ret_error,
                         const char *dir) {
    char *data = NULL;
    size_t len = 0;
    const char *why = "malformed key file";
    bool ok = true;
    Key k = {};
    int r;

    r = read_private_file(dirfd, name, &data, &len);
    if (r == -EPERM) {
        nt_jose_set_error(ret_error, "%s/%s: private key file is accessible by group or others",
                          dir, name);
        return r;
    }
    if (r < 0) {
        nt_jose_set_error(ret_error, "%s/%s: cannot read: %s", dir, name, strerror(-r));
        return r;
    }
    json_t *o = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
    wipe_free(data, len);
    json_t *jwk = o ? json_incref(json_object_get(o, "jwk")) : NULL;
    if (o) {
        k.created = get_time(o, "created", &ok);
        k.activate = get_time(o, "activate", &ok);
        k.retire = get_time(o, "retire", &ok);
        k.expire = get_time(o, "expire", &ok);
        /* The file's own reference to jwk is dropped here; the jwk's bytes are wiped later. */
        (void)json_object_del(o, "jwk");
        json_decref(o);
    }
    if (!jwk || !ok || !json_is_object(jwk)) {
        nt_jose_jwk_wipe_free(jwk);
        nt_jose_set_error(ret_error, "%s/%s: %s", dir, name, why);
        return -EBADMSG;
    }
    Key times = k;
    r = key_from_jwk(jwk, alg, &k, &why); /* sets kid, jwk, pub only */
    if (r < 0) {
        nt_jose_set_error(ret_error, "%s/%s: %s", dir, name, why);
        return r;
    }
    k.created = times.created;
    k.activate = times.activate;
    k.retire = times.retire;
    k.expire = times.expire;
    /* The name must be the thumbprint: a renamed or edited file is refused. */
    if (strlen(name) != strlen("key-") + strlen(k.kid) + strlen(".json") ||
        strncmp(name + 4, k.kid, strlen(k.kid)) != 0) {
        nt_jose_set_error(ret_error, "%s/%s: file name does not match the key's thumbprint %s", dir,
                          name, k.kid);
        key_done(&k);
        return -EBADMSG;
    }
    *ret = k;
    return 0;
}

static bool is_key_file_name(const char *n) {
    size_t l = strlen(n);
    return l > 9 && strncmp(n, "key-", 4) == 0 && streq(n + l - 5, ".json");
}

static int load_dir(const char *dir, NtJwsAlg alg, KeySet *ret, char **ret_error) {
    _cleanup_close_ int dfd = -EBADF;
    KeySet s = {};
    DIR *d;
    struct dirent *de;
    int r = 0;

    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) {
        r = -errno;
        nt_jose_set_error(ret_error, "%s: cannot open: %s", dir, strerror(-r));
        return r;
    }
    d = fdopendir(fcntl(dfd, F_DUPFD_CLOEXEC, 3));
    if (!d)
        return -errno;
    while ((de = readdir(d))) {
        Key k = {};
        if (!is_key_file_name(de->d_name))
            continue;
        r = load_key_file(dfd, de->d_name, alg, &k, ret_error, dir);
        if (r == -ENOENT) /* removed by another process meanwhile */
            continue;
        if (r >= 0)
            r = keyset_add(&s, &k);
        key_done(&k);
        if (r < 0)
            break;
    }
    closedir(d);
    if (r < 0 && r != -ENOENT) {
        keyset_done(&s);
        return r;
    }
    *ret = s;
    return 0;
}

int nt_signing_keys_dir_alg(const char *dir, NtJwsAlg *ret) {
    _cleanup_close_ int dfd = -EBADF;
    NtJwsAlg found = _NT_JWS_ALG_INVALID;
    struct dirent *de;
    DIR *d;
    int r = 0;

    if (!dir || !ret)
        return -EINVAL;
    dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return errno == ENOENT ? 0 : -errno;
    d = fdopendir(fcntl(dfd, F_DUPFD_CLOEXEC, 3));
    if (!d)
        return -errno;
    while (r == 0 && (de = readdir(d))) {
        char *data = NULL;
        size_t len = 0;
        json_t *o, *jwk;
        const char *crv;

        if (!is_key_file_name(de->d_name))
            continue;
        if (read_private_file(dfd, de->d_name, &data, &len) < 0)
            continue; /* reported by the load that follows */
        o = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
        wipe_free(data, len);
        jwk = o ? json_incref(json_object_get(o, "jwk")) : NULL;
        if (o) {
            (void)json_object_del(o, "jwk");
            json_decref(o);
        }
        crv = json_string_value(json_object_get(jwk, "crv"));
        for (int i = 0; crv && i < _NT_JWS_ALG_MAX; i++)
            if (streq(crv, alg_curves[i])) {
                if (found != _NT_JWS_ALG_INVALID && found != (NtJwsAlg)i)
                    r = -EOPNOTSUPP; /* mixed: the load names the odd file */
                found = (NtJwsAlg)i;
            }
        nt_jose_jwk_wipe_free(jwk);
    }
    closedir(d);
    if (r < 0)
        return r;
    if (found == _NT_JWS_ALG_INVALID)
        return 0;
    *ret = found;
    return 1;
}

static int write_key_file(const char *dir, const Key *k) {
    _cleanup_free_ char *path = NULL;
    json_t *o;
    char *data;
    int r;

    if (asprintf(&path, "%s/key-%s.json", dir, k->kid) < 0)
        return -ENOMEM;
    o = json_pack("{s:O,s:I,s:I}", "jwk", k->jwk, "created", (json_int_t)k->created, "activate",
                  (json_int_t)k->activate);
    if (!o)
        return -ENOMEM;
    if ((k->retire && json_object_set_new(o, "retire", json_integer(k->retire)) < 0) ||
        (k->expire && json_object_set_new(o, "expire", json_integer(k->expire)) < 0)) {
        json_decref(o);
        return -ENOMEM;
    }
    data = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o); /* k->jwk keeps its own reference */
    if (!data)
        return -ENOMEM;
    r = write_file_atomic(path, data, strlen(data), 0600);
    wipe_free(data, strlen(data));
    return r;
}

static int generate_key(NtJwsAlg alg, Key *ret) {
    json_t *jwk = json_pack("{s:s}", "alg", alg_names[alg]);
    const char *why = NULL;
    if (!jwk)
        return -ENOMEM;
    if (!jose_jwk_gen(NULL, jwk)) {
        json_decref(jwk);
        return -EIO;
    }
    (void)json_object_del(jwk, "key_ops");
    return key_from_jwk(jwk, alg, ret, &why);
}

/* Exclusive lock on DIR/.lock for creation and rotation across processes. */
static int lock_dir(const char *dir) {
    _cleanup_free_ char *p = NULL;
    int fd;
    if (asprintf(&p, "%s/.lock", dir) < 0)
        return -ENOMEM;
    fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    while (flock(fd, LOCK_EX) < 0)
        if (errno != EINTR) {
            int r = -errno;
            close(fd);
            return r;
        }
    return fd;
}

static int check_dir(const char *dir, char **ret_error) {
    struct stat st;
    int r = mkdir_p(dir, 0700);
    if (r < 0) {
        nt_jose_set_error(ret_error, "%s: cannot create: %s", dir, strerror(-r));
        return r;
    }
    if (stat(dir, &st) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    if (st.st_mode & 022) {
        nt_jose_set_error(ret_error, "%s: key directory is writable by group or others", dir);
        return -EPERM;
    }
    return 0;
}

static int signing_keys_new(NtJwsAlg alg, const char *dir, KeySet *set, NtSigningKeys **ret) {
    NtSigningKeys *k = calloc(1, sizeof *k);
    if (!k)
        return -ENOMEM;
    if (dir && !(k->dir = strdup(dir))) {
        free(k);
        return -ENOMEM;
    }
    if (pthread_rwlock_init(&k->lock, NULL) != 0) {
        free(k->dir);
        free(k);
        return -ENOMEM;
    }
    k->alg = alg;
    k->set = *set;
    *set = (KeySet){};
    *ret = k;
    return 0;
}

int nt_signing_keys_open_dir(const char *dir, NtJwsAlg alg, NtSigningKeys **ret, char **ret_error) {
    _cleanup_close_ int lock = -EBADF;
    KeySet s = {};
    int r;

    if (!dir || !ret || alg < 0 || alg >= _NT_JWS_ALG_MAX)
        return -EINVAL;
    r = check_dir(dir, ret_error);
    if (r < 0)
        return r;
    lock = lock_dir(dir);
    if (lock < 0) {
        nt_jose_set_error(ret_error, "%s: cannot lock: %s", dir, strerror(-lock));
        return lock;
    }
    r = load_dir(dir, alg, &s, ret_error);
    if (r < 0)
        return r;
    if (s.n == 0) {
        Key k = {};
        time_t now = time(NULL);
        r = generate_key(alg, &k);
        if (r >= 0) {
            k.created = k.activate = now;
            r = write_key_file(dir, &k);
            if (r < 0)
                nt_jose_set_error(ret_error, "%s: cannot write the first key: %s", dir,
                                  strerror(-r));
        }
        if (r >= 0)
            r = keyset_add(&s, &k);
        key_done(&k);
        if (r < 0) {
            keyset_done(&s);
            return r;
        }
    }
    r = signing_keys_new(alg, dir, &s, ret);
    keyset_done(&s);
    return r;
}

static int load_operator_file(const char *path, NtJwsAlg alg, Key *ret, char **ret_error) {
    char *data = NULL;
    size_t len = 0;
    const char *why = "neither a PEM private key nor a private JWK";
    json_t *jwk = NULL;
    int r;

    r = read_private_file(AT_FDCWD, path, &data, &len);
    if (r == -EPERM) {
        nt_jose_set_error(ret_error, "%s: private key file is accessible by group or others", path);
        return r;
    }
    if (r < 0) {
        nt_jose_set_error(ret_error, "%s: cannot read: %s", path, strerror(-r));
        return r;
    }
    size_t i = 0;
    while (i < len && (data[i] == ' ' || data[i] == '\n' || data[i] == '\t' || data[i] == '\r'))
        i++;
    if (i < len && data[i] == '{')
        jwk = json_loadb(data, len, JSON_REJECT_DUPLICATES, NULL);
    else {
        _cleanup_(BIO_free_allp) BIO *b = BIO_new_mem_buf(data, (int)len);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *pk =
            b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
        if (pk)
            jwk = jose_openssl_jwk_from_EVP_PKEY(NULL, pk);
        ERR_clear_error();
    }
    wipe_free(data, len);
    if (!jwk || !json_is_object(jwk)) {
        nt_jose_jwk_wipe_free(jwk);
        nt_jose_set_error(ret_error, "%s: %s", path, why);
        return -EBADMSG;
    }
    r = key_from_jwk(jwk, alg, ret, &why);
    if (r < 0)
        nt_jose_set_error(ret_error, "%s: %s", path, why);
    return r;
}

int nt_signing_keys_load_files(char *const *paths, size_t n, NtJwsAlg alg, NtSigningKeys **ret,
                               char **ret_error) {
    KeySet s = {};
    int r = 0;

    if (!paths || n == 0 || !ret || alg < 0 || alg >= _NT_JWS_ALG_MAX)
        return -EINVAL;
    for (size_t i = 0; i < n && r >= 0; i++) {
        Key k = {};
        r = load_operator_file(paths[i], alg, &k, ret_error);
        if (r >= 0) {
            /* The first signs from the beginning of time, the others never (published only). */
            k.activate = i == 0 ? 0 : INT64_MAX;
            r = keyset_add(&s, &k);
        }
        key_done(&k);
    }
    if (r >= 0)
        r = signing_keys_new(alg, NULL, &s, ret);
    keyset_done(&s);
    return r;
}

static bool key_published(const Key *k, time_t now) {
    return k->expire == 0 || (int64_t)now < k->expire;
}

static const Key *signer(const KeySet *s, time_t now) {
    const Key *best = NULL;
    for (size_t i = 0; i < s->n; i++) {
        const Key *k = &s->keys[i];
        if (!key_published(k, now) || k->activate > (int64_t)now ||
            (k->retire != 0 && (int64_t)now >= k->retire))
            continue;
        if (!best || k->activate > best->activate ||
            (k->activate == best->activate &&
             (k->created > best->created ||
              (k->created == best->created && strcmp(k->kid, best->kid) > 0))))
            best = k;
    }
    return best;
}

int nt_signing_keys_rotate_at(const char *dir, NtJwsAlg alg, int64_t publish_lead_s,
                              int64_t max_token_lifetime_s, time_t now, char **ret_kid) {
    _cleanup_close_ int lock = -EBADF;
    KeySet s = {};
    Key k = {};
    int r;

    if (!dir || alg < 0 || alg >= _NT_JWS_ALG_MAX || publish_lead_s < 0 ||
        max_token_lifetime_s < 0 || publish_lead_s > INT32_MAX || max_token_lifetime_s > INT32_MAX)
        return -EINVAL;
    if (now == 0)
        now = time(NULL);
    r = check_dir(dir, NULL);
    if (r < 0)
        return r;
    lock = lock_dir(dir);
    if (lock < 0)
        return lock;
    r = load_dir(dir, alg, &s, NULL);
    if (r < 0)
        return r;
    int64_t switch_at = (int64_t)now + publish_lead_s;
    r = generate_key(alg, &k);
    if (r >= 0) {
        k.created = now;
        /* With nothing signing now there is no old key to wait for: sign at once. */
        k.activate = signer(&s, now) ? switch_at : (int64_t)now;
        /* Published first, so that the JWKS has it before anyone could retire the old key. */
        r = write_key_file(dir, &k);
    }
    for (size_t i = 0; r >= 0 && i < s.n; i++) {
        Key *o = &s.keys[i];
        if (o->retire != 0 && o->retire <= switch_at)
            continue;
        o->retire = switch_at;
        o->expire = switch_at + max_token_lifetime_s;
        r = write_key_file(dir, o);
    }
    if (r >= 0 && ret_kid) {
        *ret_kid = strdup(k.kid);
        if (!*ret_kid)
            r = -ENOMEM;
    }
    key_done(&k);
    keyset_done(&s);
    return r;
}

int nt_signing_keys_rotate(const char *dir, NtJwsAlg alg, int64_t publish_lead_s,
                           int64_t max_token_lifetime_s, char **ret_kid) {
    return nt_signing_keys_rotate_at(dir, alg, publish_lead_s, max_token_lifetime_s, time(NULL),
                                     ret_kid);
}

int nt_signing_keys_refresh(NtSigningKeys *k, time_t now) {
    KeySet s = {}, old;
    int r;

    if (!k)
        return -EINVAL;
    if (!k->dir)
        return 0;
    if (now == 0)
        now = time(NULL);
    r = load_dir(k->dir, k->alg, &s, NULL);
    if (r < 0)
        return r;
    for (size_t i = 0; i < s.n;) {
        if (key_published(&s.keys[i], now)) {
            i++;
            continue;
        }
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/key-%s.json", k->dir, s.keys[i].kid) >= 0)
            (void)unlink(path);
        key_done(&s.keys[i]);
        s.keys[i] = s.keys[--s.n];
    }
    pthread_rwlock_wrlock(&k->lock);
    old = k->set;
    k->set = s;
    pthread_rwlock_unlock(&k->lock);
    keyset_done(&old);
    return 0;
}

json_t *nt_signing_keys_jwks(NtSigningKeys *k, time_t now) {
    json_t *keys = json_array(), *o;
    if (!k || !keys) {
        json_decref(keys);
        return NULL;
    }
    if (now == 0)
        now = time(NULL);
    pthread_rwlock_rdlock(&k->lock);
    for (size_t i = 0; i < k->set.n; i++)
        if (key_published(&k->set.keys[i], now) &&
            json_array_append_new(keys, json_deep_copy(k->set.keys[i].pub)) < 0) {
            pthread_rwlock_unlock(&k->lock);
            json_decref(keys);
            return NULL;
        }
    pthread_rwlock_unlock(&k->lock);
    o = json_pack("{s:o}", "keys", keys);
    return o;
}

char *nt_signing_keys_current_kid(NtSigningKeys *k, time_t now) {
    char *kid = NULL;
    if (!k)
        return NULL;
    if (now == 0)
        now = time(NULL);
    pthread_rwlock_rdlock(&k->lock);
    const Key *s = signer(&k->set, now);
    if (s)
        kid = strdup(s->kid);
    pthread_rwlock_unlock(&k->lock);
    return kid;
}

NtJwsAlg nt_signing_keys_alg(const NtSigningKeys *k) {
    return k ? k->alg : _NT_JWS_ALG_INVALID;
}

/* JWS compact serialisation (RFC 7515 7.1) with ECDSA (RFC 7518 3.4): the signature is R || S,
 * each left-padded to the curve's size. Signed with the key's cached OpenSSL key; every token is
 * checked by libjose's verifier in the tests (and by python-jwcrypto). */
static int sign_with(const Key *key, NtJwsAlg alg, const char *typ, const char *payload,
                     size_t payload_len, char **ret_jws) {
    _cleanup_free_ char *header = NULL, *h64 = NULL, *p64 = NULL, *s64 = NULL, *input = NULL;
    _cleanup_free_ uint8_t *der = NULL;
    json_auto_t *hdr = NULL;
    EVP_MD_CTX *ctx = NULL;
    ECDSA_SIG *sig = NULL;
    const uint8_t *dp;
    uint8_t raw[132];
    size_t half = alg == NT_JWS_ES384 ? 48 : 32, der_len = 0, in_len;
    int r = -EIO;

    hdr = json_pack("{s:s,s:s,s:s}", "alg", alg_names[alg], "kid", key->kid, "typ", typ);
    header = hdr ? json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    if (!header || base64url_encode_alloc((const uint8_t *)header, strlen(header), &h64) < 0 ||
        base64url_encode_alloc((const uint8_t *)payload, payload_len, &p64) < 0 ||
        asprintf(&input, "%s.%s", h64, p64) < 0) {
        input = NULL;
        return -ENOMEM;
    }
    in_len = strlen(input);
    ctx = EVP_MD_CTX_new();
    if (!ctx)
        return -ENOMEM;
    if (EVP_DigestSignInit(ctx, NULL, alg == NT_JWS_ES384 ? EVP_sha384() : EVP_sha256(), NULL,
                           key->pkey) != 1 ||
        EVP_DigestSign(ctx, NULL, &der_len, (const uint8_t *)input, in_len) != 1)
        goto out;
    der = malloc(der_len);
    if (!der) {
        r = -ENOMEM;
        goto out;
    }
    if (EVP_DigestSign(ctx, der, &der_len, (const uint8_t *)input, in_len) != 1)
        goto out;
    dp = der;
    sig = d2i_ECDSA_SIG(NULL, &dp, (long)der_len);
    if (!sig || BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, (int)half) != (int)half ||
        BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + half, (int)half) != (int)half)
        goto out;
    if (base64url_encode_alloc(raw, 2 * half, &s64) < 0) {
        r = -ENOMEM;
        goto out;
    }
    if (asprintf(ret_jws, "%s.%s", input, s64) < 0) {
        r = -ENOMEM;
        goto out;
    }
    r = 0;
out:
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(ctx);
    return r;
}

int nt_signing_keys_sign(NtSigningKeys *k, time_t now, const char *payload, size_t payload_len,
                         char **ret_jws, char **ret_kid) {
    return nt_signing_keys_sign_typ(k, now, "JWT", payload, payload_len, ret_jws, ret_kid);
}

int nt_signing_keys_sign_typ(NtSigningKeys *k, time_t now, const char *typ, const char *payload,
                             size_t payload_len, char **ret_jws, char **ret_kid) {
    char *kid = NULL, *jws = NULL;
    int r;

    if (!k || !typ || !typ[0] || !payload || !ret_jws)
        return -EINVAL;
    if (now == 0)
        now = time(NULL);
    pthread_rwlock_rdlock(&k->lock);
    const Key *key = signer(&k->set, now);
    if (!key)
        r = -ENOKEY;
    else {
        r = sign_with(key, k->alg, typ, payload, payload_len, &jws);
        if (r >= 0 && ret_kid && !(kid = strdup(key->kid)))
            r = -ENOMEM;
    }
    pthread_rwlock_unlock(&k->lock);
    if (r < 0) {
        free(jws);
        return r;
    }
    *ret_jws = jws;
    if (ret_kid)
        *ret_kid = kid;
    return 0;
}

NtSigningKeys *nt_signing_keys_free(NtSigningKeys *k) {
    if (!k)
        return NULL;
    keyset_done(&k->set);
    pthread_rwlock_destroy(&k->lock);
    free(k->dir);
    free(k);
    return NULL;
}
