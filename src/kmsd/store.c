/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The backend-neutral half of kmsd's store (store.h): argument and metadata checks, the KEK file,
 * value encryption (AES-256-GCM under the KEK, AAD "nitride-kms-v1|<id>|<version>") and the KEK
 * check value, then dispatch to the backend's vtable (store-private.h).
 * Invariant: a plaintext value is only ever in a Secret: encryption reads from one, decryption
 * writes into one; OpenSSL's cipher context (key schedule) is cleansed on free.
 */
#include "kmsd/store.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "core/alloc.h"
#include "core/openssl-util.h"
#include "kmsd/store-private.h"

#define GCM_NONCE 12u
#define GCM_TAG 16u
#define VALUE_AAD_PREFIX "nitride-kms-v1|"
#define KEK_CHECK_AAD "nitride-kms-kek-check"
/* Not secret: it only proves that the KEK is the one the database was made with. */
#define KEK_CHECK_PLAINTEXT "nitride kmsd key-encryption key check v1"
#define RAW_MAX 4096u
#define MAX_AGE_MAX 604800
#define LABEL_MAX 128u
#define ACL_MAX_ENTRIES 64u
#define CGROUP_MAX 511u

/* ---- metadata ---- */

void kms_secret_meta_clear(KmsSecretMeta *m) {
    if (!m)
        return;
    free(m->id);
    free(m->name);
    free(m->type);
    json_decref(m->attributes);
    json_decref(m->policy);
    *m = (KmsSecretMeta){};
}

void kms_secret_meta_array_free(KmsSecretMeta *a, size_t n) {
    if (!a)
        return;
    for (size_t i = 0; i < n; i++)
        kms_secret_meta_clear(&a[i]);
    free(a);
}

bool kms_secret_id_is_valid(const char *id) {
    size_t n;
    if (!id || !((id[0] >= 'a' && id[0] <= 'z') || (id[0] >= '0' && id[0] <= '9')))
        return false;
    n = strlen(id);
    if (n > KMS_SECRET_ID_MAX)
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* The rule of vhsmd's plain key names (vault.c), since the name becomes kms/<name> there. */
bool kms_secret_name_is_valid(const char *name) {
    size_t n;
    if (!name)
        return false;
    n = strlen(name);
    if (n == 0 || n > KMS_SECRET_NAME_MAX || name[0] == '.' || name[0] == '-')
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (!(isascii(c) && isalnum(c)) && !strchr("._:@-", c))
            return false;
    }
    return true;
}

static const char *const secret_types[] = {
    "aes256",  "hmac-sha256", "hmac-sha384", "ec-p256", "ec-p384",
    "rsa2048", "rsa3072",     "rsa4096",     "ed25519", "raw",
};

bool kms_secret_type_is_valid(const char *type) {
    if (!type)
        return false;
    for (size_t i = 0; i < ELEMENTSOF(secret_types); i++)
        if (streq(type, secret_types[i]))
            return true;
    return false;
}

DEFINE_TRIVIAL_CLEANUP_FUNC(PKCS8_PRIV_KEY_INFO *, PKCS8_PRIV_KEY_INFO_free);

/* The PKCS#8 DER parses completely as a private key of the type. */
static int pkcs8_check(const char *type, const uint8_t *der, size_t len, char err[static 256]) {
    _cleanup_(PKCS8_PRIV_KEY_INFO_freep) PKCS8_PRIV_KEY_INFO *p8 = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pk = NULL;
    const unsigned char *p = der;
    char group[64] = "";
    bool ok;

    if (len > LONG_MAX)
        return -EBADMSG;
    p8 = d2i_PKCS8_PRIV_KEY_INFO(NULL, &p, (long)len);
    if (!p8 || p != der + len) {
        ERR_clear_error();
        snprintf(err, 256, "the value of a %s secret must be one PKCS#8 PrivateKeyInfo (DER)",
                 type);
        return -EBADMSG;
    }
    pk = EVP_PKCS82PKEY(p8);
    if (!pk) {
        ERR_clear_error();
        snprintf(err, 256, "the PKCS#8 value does not hold a usable private key");
        return -EBADMSG;
    }
    if (streq(type, "ec-p256") || streq(type, "ec-p384"))
        ok = EVP_PKEY_is_a(pk, "EC") &&
             EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group,
                                            NULL) == 1 &&
             streq(group, streq(type, "ec-p256") ? "prime256v1" : "secp384r1");
    else if (streq(type, "ed25519"))
        ok = EVP_PKEY_is_a(pk, "ED25519");
    else
        ok = EVP_PKEY_is_a(pk, "RSA") && EVP_PKEY_get_bits(pk) == (streq(type, "rsa2048")   ? 2048
                                                                   : streq(type, "rsa3072") ? 3072
                                                                                            : 4096);
    ERR_clear_error();
    if (!ok) {
        snprintf(err, 256, "the PKCS#8 value is not a %s private key", type);
        return -EBADMSG;
    }
    return 0;
}

int kms_secret_value_check(const char *type, const Secret *value, char err[static 256]) {
    size_t n;
    err[0] = 0;
    if (!kms_secret_type_is_valid(type)) {
        snprintf(err, 256, "unknown secret type");
        return -EINVAL;
    }
    if (!value) {
        snprintf(err, 256, "no value");
        return -EINVAL;
    }
    n = secret_size(value);
    if (streq(type, "aes256") || streq(type, "hmac-sha256") || streq(type, "hmac-sha384")) {
        size_t want = streq(type, "hmac-sha384") ? 48 : 32;
        if (n != want) {
            snprintf(err, 256, "a %s value must be %zu bytes, not %zu", type, want, n);
            return -EBADMSG;
        }
        return 0;
    }
    if (streq(type, "raw")) {
        if (n < 1 || n > RAW_MAX) {
            snprintf(err, 256, "a raw value must be 1..%u bytes, not %zu", RAW_MAX, n);
            return -EBADMSG;
        }
        return 0;
    }
    if (n < 1 || n > KMS_VALUE_MAX) {
        snprintf(err, 256, "a %s value must be 1..%u bytes of PKCS#8, not %zu", type, KMS_VALUE_MAX,
                 n);
        return -EBADMSG;
    }
    return pkcs8_check(type, secret_const_data(value), n, err);
}

static bool printable_ascii(const char *s) {
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s >= 0x7f)
            return false;
    return true;
}

static bool cgroup_is_valid(const char *p) {
    size_t n = p ? strlen(p) : 0;
    if (n == 0 || p[0] != '/' || n > CGROUP_MAX || !printable_ascii(p))
        return false;
    if (strstr(p, "/../") || strstr(p, "/./") || strstr(p, "//"))
        return false;
    if ((n >= 3 && streq(p + n - 3, "/..")) || (n >= 2 && streq(p + n - 2, "/.")))
        return false;
    return true;
}

static int acl_check(const json_t *acl, char err[static 256]) {
    static const char *const id_lists[] = {"use_uid", "use_gid", "admin_uid", "admin_gid"};
    static const char *const cg_lists[] = {"use_cgroup", "admin_cgroup"};
    size_t total = 0;
    const char *key;
    json_t *list;

    if (!json_is_object(acl)) {
        snprintf(err, 256, "attributes.acl must be an object");
        return -EINVAL;
    }
    json_object_foreach((json_t *)acl, key, list) {
        bool ids = false, cgroups = false;
        size_t i;
        json_t *e;
        for (i = 0; i < ELEMENTSOF(id_lists); i++)
            ids = ids || streq(key, id_lists[i]);
        for (i = 0; i < ELEMENTSOF(cg_lists); i++)
            cgroups = cgroups || streq(key, cg_lists[i]);
        if (!ids && !cgroups) {
            snprintf(err, 256, "attributes.acl: unknown member \"%.40s\"", key);
            return -EINVAL;
        }
        if (!json_is_array(list)) {
            snprintf(err, 256, "attributes.acl.%s must be an array", key);
            return -EINVAL;
        }
        json_array_foreach(list, i, e) {
            bool ok = ids ? json_is_integer(e) && json_integer_value(e) >= 0 &&
                                json_integer_value(e) < (json_int_t)UINT32_MAX
                          : cgroup_is_valid(json_string_value(e));
            if (!ok) {
                snprintf(err, 256, "attributes.acl.%s[%zu] is not %s", key, i,
                         ids ? "an id 0..4294967294" : "an absolute cgroup path");
                return -EINVAL;
            }
        }
        total += json_array_size(list);
    }
    if (total > ACL_MAX_ENTRIES) {
        snprintf(err, 256, "attributes.acl has %zu entries (at most %u)", total, ACL_MAX_ENTRIES);
        return -EINVAL;
    }
    return 0;
}

int kms_secret_attributes_check(const json_t *a, char err[static 256]) {
    const char *key, *policy;
    json_t *v;

    err[0] = 0;
    if (!json_is_object(a)) {
        snprintf(err, 256, "attributes must be a JSON object");
        return -EINVAL;
    }
    json_object_foreach((json_t *)a, key, v) {
        if (!streq(key, "policy") && !streq(key, "max_age") && !streq(key, "label") &&
            !streq(key, "acl")) {
            snprintf(err, 256, "attributes: unknown member \"%.40s\"", key);
            return -EINVAL;
        }
    }
    policy = json_string_value(json_object_get(a, "policy"));
    if (!policy || (!streq(policy, "local") && !streq(policy, "attested"))) {
        snprintf(err, 256, "attributes.policy must be \"local\" or \"attested\"");
        return -EINVAL;
    }
    v = json_object_get(a, "max_age");
    if (streq(policy, "attested")) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > MAX_AGE_MAX) {
            snprintf(err, 256, "attributes.max_age must be 1..%d seconds for an attested key",
                     MAX_AGE_MAX);
            return -EINVAL;
        }
    } else if (v) {
        snprintf(err, 256, "attributes.max_age applies only to policy \"attested\"");
        return -EINVAL;
    }
    v = json_object_get(a, "label");
    if (v && (!json_is_string(v) || json_string_length(v) > LABEL_MAX ||
              !printable_ascii(json_string_value(v)))) {
        snprintf(err, 256, "attributes.label must be printable ASCII of at most %u bytes",
                 LABEL_MAX);
        return -EINVAL;
    }
    v = json_object_get(a, "acl");
    if (v)
        return acl_check(v, err);
    return 0;
}

/* Compact JSON text of an object, bounded. Member order is kept (no JSON_SORT_KEYS): a release
 * policy's rules are evaluated in document order, and the first that fails is the one named. */
static int json_text(const json_t *o, const char *what, char **ret, char err[static 256]) {
    char *t;
    if (!json_is_object(o)) {
        snprintf(err, 256, "%s must be a JSON object", what);
        return -EINVAL;
    }
    t = json_dumps(o, JSON_COMPACT);
    if (!t)
        return -ENOMEM;
    if (strlen(t) > KMS_JSON_MAX) {
        free(t);
        snprintf(err, 256, "%s is larger than %u bytes", what, KMS_JSON_MAX);
        return -EINVAL;
    }
    *ret = t;
    return 0;
}

int kms_secret_meta_check(const KmsSecretMeta *m, char err[static 256]) {
    _cleanup_free_ char *t = NULL;
    int r;
    err[0] = 0;
    if (!m) {
        snprintf(err, 256, "no metadata");
        return -EINVAL;
    }
    if (!kms_secret_id_is_valid(m->id)) {
        snprintf(err, 256, "secret id must match [a-z0-9][a-z0-9._-]{0,63}");
        return -EINVAL;
    }
    if (!kms_secret_name_is_valid(m->name)) {
        snprintf(err, 256,
                 "secret name must be 1..128 of [A-Za-z0-9._:@-], not starting with . or -");
        return -EINVAL;
    }
    if (!kms_secret_type_is_valid(m->type)) {
        snprintf(err, 256, "unknown secret type");
        return -EINVAL;
    }
    if ((r = kms_secret_attributes_check(m->attributes, err)) < 0)
        return r;
    if ((r = json_text(m->attributes, "attributes", &t, err)) < 0)
        return r;
    free(TAKE_PTR(t));
    return json_text(m->policy, "policy", &t, err);
}

int kms_store_json_object_parse(const char *text, json_t **ret) {
    json_t *o = text ? json_loads(text, JSON_REJECT_DUPLICATES, NULL) : NULL;
    if (!json_is_object(o)) {
        json_decref(o);
        return -EBADMSG;
    }
    *ret = o;
    return 0;
}

/* ---- the KEK file ---- */

static int set_error(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);
static int set_error(char **ret_error, int r, const char *fmt, ...) {
    va_list ap;
    if (!ret_error)
        return r;
    va_start(ap, fmt);
    if (vasprintf(ret_error, fmt, ap) < 0)
        *ret_error = NULL;
    va_end(ap);
    return r;
}

static int unhex(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int kms_kek_load(const char *path, Secret **ret, char **ret_error) {
    _cleanup_(secret_freep) Secret *buf = NULL, *kek = NULL;
    _cleanup_close_ int fd = -EBADF;
    struct stat st;
    size_t n = 0;
    uint8_t *b;
    int r;

    if (!path || !ret)
        return -EINVAL;
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        r = negative_errno();
        return set_error(ret_error, r, "key-encryption key file %s: %s", path, strerror(-r));
    }
    if (fstat(fd, &st) < 0) {
        r = negative_errno();
        return set_error(ret_error, r, "key-encryption key file %s: %s", path, strerror(-r));
    }
    if (!S_ISREG(st.st_mode))
        return set_error(ret_error, -EINVAL, "key-encryption key file %s is not a regular file",
                         path);
    if (st.st_mode & 077)
        return set_error(ret_error, -EPERM,
                         "key-encryption key file %s has mode %04o: group and others must have "
                         "no access (chmod 0600 %s)",
                         path, (unsigned)(st.st_mode & 07777), path);
    if (st.st_uid != geteuid() && st.st_uid != 0)
        return set_error(ret_error, -EPERM,
                         "key-encryption key file %s is owned by uid %u, neither this user nor "
                         "root",
                         path, (unsigned)st.st_uid);
    /* Read one byte more than the longest accepted form, to see a file that is too long. */
    if ((r = secret_new(2 * KMS_KEK_SIZE + 2, &buf)) < 0)
        return set_error(ret_error, r, "key-encryption key: cannot allocate secure memory");
    b = secret_data(buf);
    while (n < secret_size(buf)) {
        ssize_t k = read(fd, b + n, secret_size(buf) - n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            r = negative_errno();
            return set_error(ret_error, r, "key-encryption key file %s: %s", path, strerror(-r));
        }
        if (k == 0)
            break;
        n += (size_t)k;
    }
    if ((r = secret_new(KMS_KEK_SIZE, &kek)) < 0)
        return set_error(ret_error, r, "key-encryption key: cannot allocate secure memory");
    if (n == KMS_KEK_SIZE)
        memcpy(secret_data(kek), b, KMS_KEK_SIZE);
    else if (n == 2 * KMS_KEK_SIZE || (n == 2 * KMS_KEK_SIZE + 1 && b[n - 1] == '\n')) {
        for (size_t i = 0; i < KMS_KEK_SIZE; i++) {
            int hi = unhex((char)b[2 * i]), lo = unhex((char)b[2 * i + 1]);
            if (hi < 0 || lo < 0)
                return set_error(ret_error, -EBADMSG,
                                 "key-encryption key file %s: 64 bytes but not hex", path);
            secret_data(kek)[i] = (uint8_t)(hi << 4 | lo);
        }
    } else
        return set_error(ret_error, -EBADMSG,
                         "key-encryption key file %s must hold exactly 32 bytes (or 64 hex "
                         "characters), not %s%zu bytes",
                         path, n > 2 * KMS_KEK_SIZE + 1 ? "more than " : "",
                         MIN(n, (size_t)2 * KMS_KEK_SIZE + 1));
    *ret = TAKE_PTR(kek);
    return 0;
}

/* ---- AES-256-GCM ---- */

static int gcm_seal(const Secret *key, const void *aad, size_t aad_len, const uint8_t *in,
                    size_t len, uint8_t **ret, size_t *ret_len) {
    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
    _cleanup_free_ uint8_t *out = NULL;
    int n = 0;

    if (secret_size(key) != KMS_KEK_SIZE || len > KMS_VALUE_MAX || aad_len > INT32_MAX)
        return -EINVAL;
    out = nt_malloc(KMS_SEALED_OVERHEAD + len);
    ctx = EVP_CIPHER_CTX_new();
    if (!out || !ctx)
        return -ENOMEM;
    if (RAND_bytes(out, GCM_NONCE) != 1)
        return nt_openssl_error(-EIO, "RAND_bytes");
    if (EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, GCM_NONCE, NULL) != 1 ||
        EVP_EncryptInit_ex(ctx, NULL, NULL, secret_const_data(key), out) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &n, aad, (int)aad_len) != 1 ||
        (len > 0 && EVP_EncryptUpdate(ctx, out + GCM_NONCE, &n, in, (int)len) != 1) ||
        EVP_EncryptFinal_ex(ctx, out + GCM_NONCE + len, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, GCM_TAG, out + GCM_NONCE + len) != 1)
        return nt_openssl_error(-EIO, "kms value AES-GCM");
    *ret_len = KMS_SEALED_OVERHEAD + len;
    *ret = TAKE_PTR(out);
    return 0;
}

/* Decrypts into a new Secret; -EBADMSG if the blob does not authenticate. */
static int gcm_open(const Secret *key, const void *aad, size_t aad_len, const uint8_t *blob,
                    size_t len, Secret **ret) {
    _cleanup_(EVP_CIPHER_CTX_freep) EVP_CIPHER_CTX *ctx = NULL;
    _cleanup_(secret_freep) Secret *pt = NULL;
    size_t n;
    int k = 0, r;

    if (secret_size(key) != KMS_KEK_SIZE || aad_len > INT32_MAX)
        return -EINVAL;
    if (!blob || len < KMS_SEALED_OVERHEAD || len - KMS_SEALED_OVERHEAD > KMS_VALUE_MAX)
        return -EBADMSG;
    n = len - KMS_SEALED_OVERHEAD;
    if ((r = secret_new(n, &pt)) < 0)
        return r;
    ctx = EVP_CIPHER_CTX_new();
    if (!ctx)
        return -ENOMEM;
    if (EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, GCM_NONCE, NULL) != 1 ||
        EVP_DecryptInit_ex(ctx, NULL, NULL, secret_const_data(key), blob) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &k, aad, (int)aad_len) != 1 ||
        (n > 0 && EVP_DecryptUpdate(ctx, secret_data(pt), &k, blob + GCM_NONCE, (int)n) != 1) ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, GCM_TAG, (void *)(blob + GCM_NONCE + n)) !=
            1)
        return nt_openssl_error(-EIO, "kms value AES-GCM");
    if (EVP_DecryptFinal_ex(ctx, secret_data(pt) + n, &k) != 1) {
        ERR_clear_error();
        return -EBADMSG; /* pt (unauthenticated plaintext) is wiped by its cleanup */
    }
    *ret = TAKE_PTR(pt);
    return 0;
}

static int value_aad(const char *id, uint32_t version, char aad[static 128]) {
    int n = snprintf(aad, 128, VALUE_AAD_PREFIX "%s|%" PRIu32, id, version);
    return n > 0 && n < 128 ? n : -EINVAL;
}

int kms_store_seal_value(const KmsStore *s, const char *id, uint32_t version, const Secret *value,
                         uint8_t **ret, size_t *ret_len) {
    char aad[128];
    int n = value_aad(id, version, aad);
    if (n < 0)
        return n;
    return gcm_seal(s->kek, aad, (size_t)n, secret_const_data(value), secret_size(value), ret,
                    ret_len);
}

int kms_store_open_value(const KmsStore *s, const char *id, uint32_t version, const uint8_t *blob,
                         size_t len, Secret **ret) {
    char aad[128];
    int n = value_aad(id, version, aad);
    if (n < 0)
        return n;
    return gcm_open(s->kek, aad, (size_t)n, blob, len, ret);
}

int kms_store_kek_check_make(const Secret *kek, uint8_t **ret, size_t *ret_len) {
    _cleanup_(secret_freep) Secret *pt = NULL;
    int r;
    if ((r = secret_new_copy(KEK_CHECK_PLAINTEXT, STRLEN(KEK_CHECK_PLAINTEXT), &pt)) < 0)
        return r;
    return gcm_seal(kek, KEK_CHECK_AAD, STRLEN(KEK_CHECK_AAD), secret_const_data(pt),
                    secret_size(pt), ret, ret_len);
}

int kms_store_kek_check_verify(const Secret *kek, const uint8_t *blob, size_t len) {
    _cleanup_(secret_freep) Secret *pt = NULL;
    int r = gcm_open(kek, KEK_CHECK_AAD, STRLEN(KEK_CHECK_AAD), blob, len, &pt);
    if (r == -EBADMSG)
        return -EKEYREJECTED;
    if (r < 0)
        return r;
    if (secret_size(pt) != STRLEN(KEK_CHECK_PLAINTEXT) ||
        memcmp(secret_const_data(pt), KEK_CHECK_PLAINTEXT, STRLEN(KEK_CHECK_PLAINTEXT)) != 0)
        return -EKEYREJECTED;
    return 0;
}

/* ---- metadata MAC ---- */

#define META_MAC_INFO "nitride-kms-v1 metadata mac"
#define META_MAC_DOMAIN "nitride-kms-meta-v1"

int kms_store_base_init(KmsStore *base, const KmsStoreOps *ops, const Secret *kek) {
    int r;

    if (!base || !ops || !kek || secret_size(kek) != KMS_KEK_SIZE)
        return -EINVAL;
    base->ops = ops;
    if ((r = secret_new_copy(secret_const_data(kek), KMS_KEK_SIZE, &base->kek)) < 0 ||
        (r = secret_new(KMS_META_MAC_SIZE, &base->mac_key)) < 0)
        return r;
    return nt_hkdf_sha256(secret_const_data(base->kek), KMS_KEK_SIZE, META_MAC_INFO,
                          secret_data(base->mac_key), KMS_META_MAC_SIZE);
}

static int mac_update_str(EVP_MAC_CTX *ctx, const char *s) {
    size_t n = s ? strlen(s) : 0;
    uint8_t len[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    if (n > UINT32_MAX)
        return 0;
    return EVP_MAC_update(ctx, len, sizeof len) == 1 &&
           (n == 0 || EVP_MAC_update(ctx, (const uint8_t *)s, n) == 1);
}

static int mac_update_u64(EVP_MAC_CTX *ctx, uint64_t v) {
    uint8_t b[8];
    for (size_t i = 0; i < 8; i++)
        b[i] = (uint8_t)(v >> (56 - 8 * i));
    return EVP_MAC_update(ctx, b, sizeof b) == 1;
}

int kms_store_meta_mac(const KmsStore *s, const KmsMetaRecord *r,
                       uint8_t ret[static KMS_META_MAC_SIZE]) {
    _cleanup_(EVP_MAC_freep) EVP_MAC *mac = NULL;
    _cleanup_(EVP_MAC_CTX_freep) EVP_MAC_CTX *ctx = NULL;
    OSSL_PARAM params[2];
    size_t n = 0;

    if (!s || !r || !s->mac_key)
        return -EINVAL;
    mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    ctx = mac ? EVP_MAC_CTX_new(mac) : NULL;
    if (!ctx)
        return nt_openssl_error(-EIO, "HMAC");
    params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0);
    params[1] = OSSL_PARAM_construct_end();
    if (EVP_MAC_init(ctx, secret_const_data(s->mac_key), secret_size(s->mac_key), params) != 1 ||
        !mac_update_str(ctx, META_MAC_DOMAIN) || !mac_update_str(ctx, r->id) ||
        !mac_update_str(ctx, r->name) || !mac_update_str(ctx, r->type) ||
        !mac_update_u64(ctx, r->version) || !mac_update_str(ctx, r->attributes) ||
        !mac_update_str(ctx, r->policy) || !mac_update_u64(ctx, (uint64_t)r->created) ||
        !mac_update_u64(ctx, (uint64_t)r->updated) ||
        EVP_MAC_final(ctx, ret, &n, KMS_META_MAC_SIZE) != 1 || n != KMS_META_MAC_SIZE)
        return nt_openssl_error(-EIO, "HMAC");
    return 0;
}

int kms_store_meta_mac_verify(const KmsStore *s, const KmsMetaRecord *r, const void *mac,
                              size_t mac_len) {
    uint8_t want[KMS_META_MAC_SIZE];
    int k;
    if (!mac || mac_len != KMS_META_MAC_SIZE)
        return -EBADMSG;
    if ((k = kms_store_meta_mac(s, r, want)) < 0)
        return k;
    return CRYPTO_memcmp(want, mac, KMS_META_MAC_SIZE) == 0 ? 0 : -EBADMSG;
}

/* ---- dispatch ---- */

KmsStore *kms_store_free(KmsStore *s) {
    if (!s)
        return NULL;
    s->kek = secret_free(s->kek);
    s->mac_key = secret_free(s->mac_key);
    s->ops->free(s);
    return NULL;
}

const char *kms_store_backend(const KmsStore *s) {
    return s ? s->ops->name : NULL;
}

static int64_t now_s(void) {
    return (int64_t)time(NULL);
}

int kms_store_create(KmsStore *s, const KmsSecretMeta *m, const Secret *value,
                     const KmsAuditEvent *ev) {
    return kms_store_create_version(s, m, value, ev, NULL);
}

int kms_store_create_version(KmsStore *s, const KmsSecretMeta *m, const Secret *value,
                             const KmsAuditEvent *ev, uint32_t *ret_version) {
    _cleanup_free_ char *attributes = NULL, *policy = NULL;
    char err[256];
    int r;

    if (!s || !m || !value || kms_audit_event_check(ev) < 0)
        return -EINVAL;
    if ((r = kms_secret_meta_check(m, err)) < 0)
        return r;
    if ((r = kms_secret_value_check(m->type, value, err)) < 0)
        return r;
    if ((r = json_text(m->attributes, "attributes", &attributes, err)) < 0 ||
        (r = json_text(m->policy, "policy", &policy, err)) < 0)
        return r;
    return s->ops->create(s, m, attributes, policy, value, ev, now_s(), ret_version);
}

int kms_store_replace(KmsStore *s, const char *id, const Secret *value, const KmsAuditEvent *ev,
                      uint32_t *ret_version) {
    if (!s || !kms_secret_id_is_valid(id) || !value || kms_audit_event_check(ev) < 0)
        return -EINVAL;
    /* The value is checked against the type by the backend, inside the transaction. */
    return s->ops->replace(s, id, value, ev, now_s(), ret_version);
}

int kms_store_set_policy(KmsStore *s, const char *id, const json_t *policy,
                         const KmsAuditEvent *ev) {
    _cleanup_free_ char *text = NULL;
    char err[256];
    int r;
    if (!s || !kms_secret_id_is_valid(id) || kms_audit_event_check(ev) < 0)
        return -EINVAL;
    if ((r = json_text(policy, "policy", &text, err)) < 0)
        return r;
    return s->ops->set_policy(s, id, text, ev, now_s());
}

int kms_store_delete(KmsStore *s, const char *id, const KmsAuditEvent *ev) {
    if (!s || !kms_secret_id_is_valid(id) || kms_audit_event_check(ev) < 0)
        return -EINVAL;
    return s->ops->delete_secret(s, id, ev, now_s());
}

int kms_store_get(KmsStore *s, const char *id, KmsSecretMeta *ret_meta, Secret **ret_value) {
    if (!s || !kms_secret_id_is_valid(id) || (!ret_meta && !ret_value))
        return -EINVAL;
    return s->ops->get(s, id, 0, ret_meta, ret_value);
}

int kms_store_get_version(KmsStore *s, const char *id, uint32_t version, Secret **ret_value) {
    if (!s || !kms_secret_id_is_valid(id) || version == 0 || !ret_value)
        return -EINVAL;
    return s->ops->get(s, id, version, NULL, ret_value);
}

int kms_store_list(KmsStore *s, const char *after_id, size_t limit, KmsSecretMeta **ret,
                   size_t *ret_n) {
    if (!s || !ret || !ret_n || (after_id && strlen(after_id) > KMS_SECRET_ID_MAX))
        return -EINVAL;
    if (limit == 0 || limit > KMS_STORE_LIST_MAX)
        limit = KMS_STORE_LIST_MAX;
    return s->ops->list(s, after_id, limit, ret, ret_n);
}

int kms_store_audit(KmsStore *s, const KmsAuditEvent *ev) {
    if (!s || kms_audit_event_check(ev) < 0)
        return -EINVAL;
    return s->ops->audit(s, ev, now_s());
}

int kms_store_audit_rows(KmsStore *s, int64_t after_seq, size_t limit, json_t **ret_rows) {
    if (!s || after_seq < 0 || !ret_rows)
        return -EINVAL;
    if (limit == 0 || limit > KMS_STORE_LIST_MAX)
        limit = KMS_STORE_LIST_MAX;
    return s->ops->audit_rows(s, after_seq, limit, ret_rows);
}

int kms_store_audit_head(KmsStore *s, int64_t *ret_seq, char ret_hash_hex[65]) {
    if (!s || !ret_seq || !ret_hash_hex)
        return -EINVAL;
    return s->ops->audit_head(s, ret_seq, ret_hash_hex);
}
