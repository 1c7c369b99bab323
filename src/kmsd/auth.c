/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Admin credentials. The bearer token is never kept in memory after start: only its SHA-256 (in
 * a Secret), and a presented token is hashed and compared with CRYPTO_memcmp, so the comparison
 * takes the same time whatever the token's length or content. A certificate is checked by the
 * web layer (chain to the client CA, purpose TLS client, validity) and then its subject against
 * the allowed list.
 */
#include "kmsd/auth.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "core/fileio.h"
#include "core/log.h"
#include "web/svc-conf.h"

struct KmsdAuth {
    Secret *token_sha256; /* NULL: no bearer auth */
    bool client_certs;
    char **subjects;
    size_t n_subjects;
};

int kmsd_read_secret_file(const char *path, const char *what, size_t min, size_t max, Secret **ret,
                          char **ret_error) {
    _cleanup_close_ int fd = -EBADF;
    _cleanup_(secret_freep) Secret *s = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    struct stat st;
    int r;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0)
        return svc_errf(ret_error, -errno, "%s %s: %s", what, path, strerror(errno));
    if (fstat(fd, &st) < 0)
        return svc_errf(ret_error, -errno, "%s %s: %s", what, path, strerror(errno));
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077))
        return svc_errf(ret_error, -EPERM,
                        "%s %s: must be a regular file of mode 0600 or stricter (is %04o)", what,
                        path, (unsigned)(st.st_mode & 07777));
    r = read_full_fd(fd, max, &data, &len);
    if (r == -EFBIG)
        return svc_errf(ret_error, r, "%s %s: larger than %zu bytes", what, path, max);
    if (r < 0)
        return svc_errf(ret_error, r, "%s %s: %s", what, path, strerror(-r));
    if (len >= min)
        r = secret_new_copy(data, len, &s);
    explicit_bzero(data, len);
    free(data);
    if (len < min)
        return svc_errf(ret_error, -EBADMSG, "%s %s: %zu bytes, at least %zu needed", what, path,
                        len, min);
    if (r < 0)
        return svc_errf(ret_error, r, "%s %s: %s", what, path, strerror(-r));
    *ret = TAKE_PTR(s);
    return 0;
}

static int sha256(const void *p, size_t n, uint8_t out[32]) {
    unsigned len = 0;
    if (EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) != 1 || len != 32)
        return -EIO;
    return 0;
}

int kmsd_auth_new(const char *token_file, bool client_certs, char *const *subjects, size_t n,
                  KmsdAuth **ret, char **ret_error) {
    _cleanup_(kmsd_auth_freep) KmsdAuth *a = NULL;
    int r;

    a = calloc(1, sizeof *a);
    if (!a)
        return -ENOMEM;
    a->client_certs = client_certs;
    if (token_file) {
        _cleanup_(secret_freep) Secret *tok = NULL;
        size_t len;
        r = kmsd_read_secret_file(token_file, "admin bearer token file", 32, 4096, &tok, ret_error);
        if (r < 0)
            return r;
        len = secret_size(tok);
        while (len > 0 && strchr(" \t\r\n", secret_const_data(tok)[len - 1]))
            len--;
        if (len < 32 || len > 1024)
            return svc_errf(ret_error, -EBADMSG,
                            "admin bearer token file %s: the token must be 32..1024 characters",
                            token_file);
        for (size_t i = 0; i < len; i++) {
            uint8_t c = secret_const_data(tok)[i];
            if (c <= 0x20 || c >= 0x7f)
                return svc_errf(ret_error, -EBADMSG,
                                "admin bearer token file %s: the token must be printable ASCII "
                                "without spaces",
                                token_file);
        }
        r = secret_new(32, &a->token_sha256);
        if (r < 0)
            return r;
        r = sha256(secret_const_data(tok), len, secret_data(a->token_sha256));
        if (r < 0)
            return r;
    }
    if (n > 0) {
        a->subjects = calloc(n, sizeof(char *));
        if (!a->subjects)
            return -ENOMEM;
        for (; a->n_subjects < n; a->n_subjects++) {
            a->subjects[a->n_subjects] = strdup(subjects[a->n_subjects]);
            if (!a->subjects[a->n_subjects])
                return -ENOMEM;
        }
    }
    *ret = TAKE_PTR(a);
    return 0;
}

KmsdAuth *kmsd_auth_free(KmsdAuth *a) {
    if (!a)
        return NULL;
    secret_free(a->token_sha256);
    for (size_t i = 0; i < a->n_subjects; i++)
        free(a->subjects[i]);
    free(a->subjects);
    free(a);
    return NULL;
}

const char *kmsd_bearer_token(const NtWebRequest *req) {
    const char *h = nt_web_request_header(req, "Authorization");
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return NULL;
    h += 7;
    while (*h == ' ')
        h++;
    return *h ? h : NULL;
}

/* Printable and short enough to go into the audit chain. */
static void sanitize(const char *in, char *out, size_t size) {
    size_t j = 0;
    for (size_t i = 0; in[i] && j + 1 < size; i++)
        out[j++] = (unsigned char)in[i] >= 0x20 && (unsigned char)in[i] < 0x7f ? in[i] : '?';
    out[j] = 0;
}

int kmsd_auth_admin(const KmsdAuth *a, const NtWebRequest *req, char actor[static KMSD_ACTOR_MAX],
                    char reason[static KMSD_AUTH_REASON_MAX]) {
    const char *bearer = kmsd_bearer_token(req);
    char subject[256], clean[256];
    bool cert_tried = false;
    int r;

    snprintf(actor, KMSD_ACTOR_MAX, "anonymous");
    snprintf(reason, KMSD_AUTH_REASON_MAX, "admin credentials required (%s%s%s)",
             a->token_sha256 ? "Authorization: Bearer" : "",
             a->token_sha256 && a->client_certs ? " or " : "",
             a->client_certs ? "a TLS client certificate" : "");

    if (a->client_certs) {
        r = nt_web_request_client_cert(req, subject, sizeof subject);
        if (r == 0) {
            bool allowed = a->n_subjects == 0;
            for (size_t i = 0; i < a->n_subjects && !allowed; i++)
                allowed = streq(a->subjects[i], subject);
            sanitize(subject, clean, sizeof clean);
            if (allowed) {
                snprintf(actor, KMSD_ACTOR_MAX, "admin:cert:%s", clean);
                return 0;
            }
            cert_tried = true;
            snprintf(actor, KMSD_ACTOR_MAX, "cert:%s", clean);
            snprintf(reason, KMSD_AUTH_REASON_MAX,
                     "client certificate subject '%.120s' is not an allowed admin", clean);
        } else if (r == -EKEYREJECTED || r == -ENOBUFS) {
            cert_tried = true;
            snprintf(actor, KMSD_ACTOR_MAX, "cert:unverified");
            snprintf(reason, KMSD_AUTH_REASON_MAX,
                     "client certificate does not verify against the admin client CA");
        } else if (r != -ENOENT && r != -EOPNOTSUPP)
            log_warning_errno(r, "Checking a client certificate from %s failed: %m",
                              req->client_addr);
    }
    if (bearer && a->token_sha256) {
        uint8_t got[32];
        CLEANUP_ERASE(got);
        if (sha256(bearer, strnlen(bearer, 8192), got) < 0)
            return -EIO;
        if (CRYPTO_memcmp(got, secret_const_data(a->token_sha256), 32) == 0) {
            snprintf(actor, KMSD_ACTOR_MAX, "admin:bearer");
            return 0;
        }
        if (!cert_tried) {
            snprintf(actor, KMSD_ACTOR_MAX, "bearer:wrong");
            snprintf(reason, KMSD_AUTH_REASON_MAX, "wrong admin bearer token");
        }
    } else if (bearer && !cert_tried) {
        snprintf(actor, KMSD_ACTOR_MAX, "bearer:unconfigured");
        snprintf(reason, KMSD_AUTH_REASON_MAX,
                 "bearer tokens are not accepted for admin requests here (use a TLS client "
                 "certificate)");
    }
    return -EACCES;
}
