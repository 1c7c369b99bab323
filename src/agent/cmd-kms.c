/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nitride kms: the admin CLI of nitride-kmsd (docs/kmsd.md), over its admin API.
 *
 *   nitride kms [--url URL] [--ca FILE] [--admin-token-file FILE | --cert FILE --key FILE]
 *               [--json] [--timeout S] COMMAND ...
 *     secret create ID --type T [--name N] (--value-file F | --generate [--length N])
 *                      --policy-file F [--vhsm-policy local|attested] [--max-age S]
 *                      [--label L] [--acl-file F]
 *     secret replace ID (--value-file F | --generate [--length N])
 *     secret list | secret show ID | secret delete ID
 *     policy set ID FILE
 *     policy test ID --token FILE [--volume-uuid U]
 *     audit show [--after SEQ]
 *     audit verify [--release-keys FILE] [--head-file FILE]
 *
 * Secret values: for aes256, hmac-sha256/384 and raw the file's bytes; for EC/RSA/Ed25519 keys a
 * PEM or DER private key, sent as unencrypted PKCS#8 DER. They are read into locked memory (Secret)
 * and the request body that carries them is wiped after the call (jansson's strings too: a
 * zeroising free is installed).
 *
 * audit verify: fetches the signed chain head, then every row up to it, checks the head's
 * signature (ES256/ES384, typ nitride-audit-head+jws) against the release keys (a pinned JWKS
 * file, or kmsd's /v1/release-keys, which only proves consistency with what kmsd says now), and
 * the hash chain (an edited row, a deleted row, a truncated tail). With --head-file, the head of
 * the previous run must still be in the chain (a rewritten or truncated history is detected even
 * when kmsd re-signs it), and the new head is saved there.
 *
 * Exit codes: 0 ok; 1 audit verification failed; 2 refused by a policy (policy test); 3 usage;
 * 4 I/O, network, TLS, authentication or service error.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <jansson.h>
#include <jose/jose.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "agent.h"
#include "core/fileio.h"
#include "core/log.h"
#include "core/macro.h"
#include "core/openssl-util.h"
#include "core/secret.h"
#include "kmsd/audit.h"
#include "web/client.h"

#define KMS_DEFAULT_TIMEOUT_S 30
#define KMS_MAX_RESPONSE (64u * 1024u * 1024u)
#define KMS_AUDIT_PAGE 1000
#define KMS_VALUE_MAX (64u * 1024u)
#define AUDIT_HEAD_TYP "nitride-audit-head+jws"

typedef struct KmsArgs {
    char *base;
    const char *ca_file, *token_file, *cert, *key;
    Secret *token; /* the admin bearer token, NUL-terminated */
    bool json;
    unsigned timeout_s;
} KmsArgs;

static void help(FILE *f) {
    fprintf(f,
            "Usage: nitride kms [OPTIONS] COMMAND ...\n"
            "Administer nitride-kmsd: secrets, release policies, the audit chain.\n\n"
            "Connection:\n"
            "  --url URL                 kmsd (default $NITRIDE_KMS_URL); https://, or http://\n"
            "                            to a loopback address\n"
            "  --ca FILE                 CA certificates for kmsd's TLS (default: system store)\n"
            "  --admin-token-file FILE   admin bearer token (default $NITRIDE_KMS_TOKEN_FILE)\n"
            "  --cert FILE --key FILE    admin TLS client certificate and key\n"
            "  --timeout S               per request (default %d)\n"
            "  --json                    machine-readable output\n\n"
            "Commands:\n"
            "  secret create ID --type T [--name N] (--value-file F | --generate [--length N])\n"
            "                --policy-file F [--vhsm-policy local|attested] [--max-age S]\n"
            "                [--label L] [--acl-file F]\n"
            "      types: aes256 hmac-sha256 hmac-sha384 raw ec-p256 ec-p384 ed25519 rsa2048\n"
            "             rsa3072 rsa4096 (keys as PEM/DER files, sent as PKCS#8)\n"
            "  secret replace ID (--value-file F | --generate [--length N])\n"
            "  secret list | secret show ID | secret delete ID\n"
            "  policy set ID FILE\n"
            "  policy test ID --token FILE [--volume-uuid U]\n"
            "  audit show [--after SEQ]\n"
            "  audit verify [--release-keys JWKS] [--head-file FILE]\n\n"
            "Exit codes: 0 ok, 1 audit verification failed, 2 refused by the policy (policy\n"
            "test), 3 usage, 4 I/O, network, authentication or service error.\n",
            KMS_DEFAULT_TIMEOUT_S);
}

/* jansson strings may hold secret values (the base64url of a value): wiped when freed. */
static void *zero_malloc(size_t n) {
    return malloc(n);
}

static void zero_free(void *p) {
    if (!p)
        return;
    explicit_bzero(p, malloc_usable_size(p));
    free(p);
}

static const char *jstr(const json_t *o, const char *key) {
    return json_string_value(json_object_get(o, key));
}

/* https://, or http:// to a loopback host. Stores the URL without trailing '/'. */
static int check_url(const char *url, char **ret) {
    const char *host;
    char *base;
    size_t n;

    if (strncmp(url, "https://", 8) == 0)
        host = url + 8;
    else if (strncmp(url, "http://", 7) == 0) {
        host = url + 7;
        if (strncmp(host, "127.", 4) != 0 && strncmp(host, "localhost", 9) != 0 &&
            strncmp(host, "[::1]", 5) != 0) {
            log_error("Refusing plain http:// to '%s': the admin credentials and secret values "
                      "would cross the network unprotected (http:// only to loopback).",
                      url);
            return NT_EXIT_USAGE;
        }
    } else {
        log_error("Invalid --url '%s': expected https://HOST[:PORT].", url);
        return NT_EXIT_USAGE;
    }
    if (!host[0] || strpbrk(url, " \t\r\n?#@")) {
        log_error("Invalid --url '%s'.", url);
        return NT_EXIT_USAGE;
    }
    base = strdup(url);
    if (!base) {
        log_oom();
        return NT_EXIT_IO;
    }
    n = strlen(base);
    while (n > 0 && base[n - 1] == '/')
        base[--n] = 0;
    *ret = base;
    return NT_EXIT_OK;
}

static int load_token(KmsArgs *a) {
    _cleanup_free_ uint8_t *data = NULL;
    size_t len = 0;
    int r;

    r = read_full_file(a->token_file, 4096, &data, &len);
    if (r < 0) {
        log_error_errno(r, "Failed to read the admin token file '%s': %m", a->token_file);
        return NT_EXIT_IO;
    }
    while (len > 0 && strchr(" \t\r\n", data[len - 1]))
        len--;
    if (len == 0) {
        log_error("The admin token file '%s' is empty.", a->token_file);
        return NT_EXIT_USAGE;
    }
    r = secret_new(len + 1, &a->token);
    if (r >= 0) {
        memcpy(secret_data(a->token), data, len);
        secret_data(a->token)[len] = 0;
    }
    explicit_bzero(data, len);
    if (r < 0) {
        log_error_errno(r, "Failed to hold the admin token: %m");
        return NT_EXIT_IO;
    }
    return NT_EXIT_OK;
}

/* One request. Returns NT_EXIT_OK with *ret_status and the JSON object reply (or NULL when the
 * body is not one), or an exit code (transport failure, logged). The body text is wiped. */
static int call(const KmsArgs *a, const char *method, const char *path, const json_t *body,
                long *ret_status, json_t **ret_reply) {
    _cleanup_free_ char *url = NULL;
    char *text = NULL;
    NtHttpResponse resp = {};
    NtHttpOptions o = {
        .ca_file = a->ca_file,
        .client_cert = a->cert,
        .client_key = a->key,
        .bearer_token = a->token ? (const char *)secret_const_data(a->token) : NULL,
        .timeout_ms = (long)a->timeout_s * 1000,
        .max_response = KMS_MAX_RESPONSE,
    };
    int r;

    if (asprintf(&url, "%s%s", a->base, path) < 0) {
        url = NULL;
        log_oom();
        return NT_EXIT_IO;
    }
    if (body) {
        text = json_dumps(body, JSON_COMPACT);
        if (!text) {
            log_oom();
            return NT_EXIT_IO;
        }
    }
    r = nt_http_request(&o, method, url, body ? "application/json" : NULL, text,
                        text ? strlen(text) : 0, &resp);
    if (text) {
        explicit_bzero(text, strlen(text));
        free(text);
    }
    if (r < 0) {
        log_error_errno(r, "%s %s failed: %s", method, url, resp.error[0] ? resp.error : "%m");
        nt_http_response_clear(&resp);
        return NT_EXIT_IO;
    }
    *ret_status = resp.status;
    *ret_reply = NULL;
    if (resp.body && resp.body_len > 0) {
        json_t *j =
            json_loadb((const char *)resp.body, resp.body_len, JSON_REJECT_DUPLICATES, NULL);
        if (json_is_object(j))
            *ret_reply = j;
        else
            json_decref(j);
    }
    nt_http_response_clear(&resp);
    return NT_EXIT_OK;
}

/* Prints kmsd's error reply and maps it to an exit code. */
static int failure(const char *what, long status, const json_t *reply) {
    const char *error = jstr(reply, "error"), *check = jstr(reply, "check"),
               *rule = jstr(reply, "rule"), *expected = jstr(reply, "expected"),
               *found = jstr(reply, "found");
    if (status == 403 && error && streq(error, "policy")) {
        log_error("%s refused by the release policy: rule %s", what, rule ? rule : "?");
        if (expected)
            log_error("  expected: %s", expected);
        if (found)
            log_error("  found:    %s", found);
        return NT_EXIT_POLICY;
    }
    log_error("%s failed (HTTP %ld): %s%s%s%s", what, status, error ? error : "(no reason)",
              check ? " [" : "", check ? check : "", check ? "]" : "");
    if (status == 401)
        log_error("  (admin credentials: --admin-token-file, or --cert and --key)");
    return NT_EXIT_IO;
}

/* GET/PUT/... expecting want_status with a JSON object reply. */
static int call_ok(const KmsArgs *a, const char *what, const char *method, const char *path,
                   const json_t *body, long want_status, json_t **ret_reply) {
    json_auto_t *reply = NULL;
    long status = 0;
    int r = call(a, method, path, body, &status, &reply);
    if (r != NT_EXIT_OK)
        return r;
    if (status != want_status)
        return failure(what, status, reply);
    if (!reply) {
        log_error("%s: kmsd's reply is not a JSON object.", what);
        return NT_EXIT_IO;
    }
    *ret_reply = TAKE_PTR(reply);
    return NT_EXIT_OK;
}

static int print_json(const json_t *j) {
    if (json_dumpf(j, stdout, JSON_INDENT(2) | JSON_SORT_KEYS) < 0)
        return NT_EXIT_IO;
    fputc('\n', stdout);
    return NT_EXIT_OK;
}

static void fmt_time(json_int_t t, char out[static 32]) {
    time_t tt = (time_t)t;
    struct tm tm;
    if (t <= 0 || !gmtime_r(&tt, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        snprintf(out, 32, "-");
}

static void print_meta(const json_t *m) {
    char c[32], u[32];
    char *attrs = json_dumps(json_object_get(m, "attributes"), JSON_COMPACT | JSON_SORT_KEYS);
    char *policy = json_dumps(json_object_get(m, "policy"), JSON_COMPACT | JSON_SORT_KEYS);
    fmt_time(json_integer_value(json_object_get(m, "created")), c);
    fmt_time(json_integer_value(json_object_get(m, "updated")), u);
    printf("id:          %s\n", jstr(m, "id") ?: "-");
    printf("vhsm name:   %s\n", jstr(m, "vhsm_name") ?: "-");
    printf("type:        %s\n", jstr(m, "type") ?: "-");
    printf("version:     %" JSON_INTEGER_FORMAT "\n",
           json_integer_value(json_object_get(m, "version")));
    printf("attributes:  %s\n", attrs ? attrs : "-");
    printf("policy:      %s\n", policy ? policy : "-");
    printf("created:     %s\n", c);
    printf("updated:     %s\n", u);
    free(attrs);
    free(policy);
}

/* ---- values ---- */

/* A key file (PEM or DER, any private key format OpenSSL reads) as PKCS#8 DER in a Secret. */
static int key_file_pkcs8(const char *path, Secret **ret) {
    _cleanup_(secret_freep) Secret *raw = NULL, *out = NULL;
    _cleanup_(EVP_PKEY_freep) EVP_PKEY *pk = NULL;
    _cleanup_(BIO_free_allp) BIO *bio = NULL;
    _cleanup_free_ uint8_t *data = NULL;
    PKCS8_PRIV_KEY_INFO *p8 = NULL;
    size_t len = 0;
    unsigned char *o;
    int r, n;

    r = read_full_file(path, KMS_VALUE_MAX, &data, &len);
    if (r < 0)
        return log_error_errno(r, "Failed to read '%s': %m", path);
    r = secret_new_copy(data, len, &raw);
    explicit_bzero(data, len);
    if (r < 0)
        return r;
    bio = BIO_new_mem_buf(secret_const_data(raw), (int)secret_size(raw));
    if (!bio)
        return -ENOMEM;
    pk = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    if (!pk) {
        const unsigned char *p = secret_const_data(raw);
        ERR_clear_error();
        pk = d2i_AutoPrivateKey(NULL, &p, (long)secret_size(raw));
    }
    if (!pk) {
        ERR_clear_error();
        log_error("'%s' is not an unencrypted PEM or DER private key.", path);
        return -EBADMSG;
    }
    p8 = EVP_PKEY2PKCS8(pk);
    n = p8 ? i2d_PKCS8_PRIV_KEY_INFO(p8, NULL) : -1;
    r = n > 0 ? secret_new((size_t)n, &out) : -EIO;
    if (r >= 0) {
        o = secret_data(out);
        if (i2d_PKCS8_PRIV_KEY_INFO(p8, &o) != n)
            r = -EIO;
    }
    PKCS8_PRIV_KEY_INFO_free(p8);
    if (r < 0)
        return nt_openssl_error(r, "PKCS#8");
    *ret = TAKE_PTR(out);
    return 0;
}

static bool type_is_key(const char *t) {
    return strncmp(t, "ec-", 3) == 0 || strncmp(t, "rsa", 3) == 0 || streq(t, "ed25519");
}

/* Adds "value" (base64url of the file or key) or "generate"/"length" to body. */
static int add_value(json_t *body, const char *type, const char *value_file, bool generate,
                     long length) {
    _cleanup_(secret_freep) Secret *v = NULL, *enc = NULL;
    int r;

    if (generate) {
        if (json_object_set_new(body, "generate", json_true()) < 0 ||
            (length > 0 && json_object_set_new(body, "length", json_integer(length)) < 0))
            return log_oom();
        return 0;
    }
    if (type && type_is_key(type))
        r = key_file_pkcs8(value_file, &v);
    else {
        _cleanup_free_ uint8_t *data = NULL;
        size_t len = 0;
        r = read_full_file(value_file, KMS_VALUE_MAX, &data, &len);
        if (r < 0)
            return log_error_errno(r, "Failed to read '%s': %m", value_file);
        r = secret_new_copy(data, len, &v);
        explicit_bzero(data, len);
    }
    if (r < 0)
        return r;
    size_t n = jose_b64_enc_buf(NULL, secret_size(v), NULL, 0);
    r = secret_new(n + 1, &enc);
    if (r < 0)
        return r;
    if (jose_b64_enc_buf(secret_const_data(v), secret_size(v), secret_data(enc), n) != n)
        return -EIO;
    secret_data(enc)[n] = 0;
    if (json_object_set_new(body, "value", json_stringn((const char *)secret_const_data(enc), n)) <
        0)
        return log_oom();
    return 0;
}

static int load_json_file(const char *path, const char *what, json_t **ret) {
    json_error_t e;
    json_t *j = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    if (!j) {
        log_error("%s '%s': line %d: %s", what, path, e.line, e.text);
        return NT_EXIT_USAGE;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        log_error("%s '%s': expected a JSON object.", what, path);
        return NT_EXIT_USAGE;
    }
    *ret = j;
    return NT_EXIT_OK;
}

static bool valid_id_arg(const char *id) {
    size_t n = strlen(id);
    if (n < 1 || n > 64 || strspn(id, "abcdefghijklmnopqrstuvwxyz0123456789._-") != n ||
        id[0] == '.' || id[0] == '-' || id[0] == '_') {
        log_error("Invalid secret id '%.64s': 1..64 of [a-z0-9._-], starting with a letter or "
                  "digit.",
                  id);
        return false;
    }
    return true;
}

/* ---- secret ---- */

static int secret_create(const KmsArgs *a, int argc, char **argv) {
    enum {
        ARG_TYPE = 0x100,
        ARG_NAME,
        ARG_VALUE_FILE,
        ARG_GENERATE,
        ARG_LENGTH,
        ARG_POLICY_FILE,
        ARG_VHSM_POLICY,
        ARG_MAX_AGE,
        ARG_LABEL,
        ARG_ACL_FILE,
    };
    static const struct option options[] = {
        {"type", required_argument, NULL, ARG_TYPE},
        {"name", required_argument, NULL, ARG_NAME},
        {"value-file", required_argument, NULL, ARG_VALUE_FILE},
        {"generate", no_argument, NULL, ARG_GENERATE},
        {"length", required_argument, NULL, ARG_LENGTH},
        {"policy-file", required_argument, NULL, ARG_POLICY_FILE},
        {"vhsm-policy", required_argument, NULL, ARG_VHSM_POLICY},
        {"max-age", required_argument, NULL, ARG_MAX_AGE},
        {"label", required_argument, NULL, ARG_LABEL},
        {"acl-file", required_argument, NULL, ARG_ACL_FILE},
        {},
    };
    const char *type = NULL, *name = NULL, *value_file = NULL, *policy_file = NULL,
               *vhsm_policy = NULL, *label = NULL, *acl_file = NULL;
    long length = 0, max_age = 0;
    bool generate = false;
    json_auto_t *body = NULL, *policy = NULL, *attrs = NULL, *reply = NULL, *acl = NULL;
    int c, r;

    optind = 0;
    while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
        switch (c) {
        case ARG_TYPE:
            type = optarg;
            break;
        case ARG_NAME:
            name = optarg;
            break;
        case ARG_VALUE_FILE:
            value_file = optarg;
            break;
        case ARG_GENERATE:
            generate = true;
            break;
        case ARG_LENGTH:
            length = strtol(optarg, NULL, 10);
            if (length < 1 || length > 4096) {
                log_error("--length: 1..4096 bytes.");
                return NT_EXIT_USAGE;
            }
            break;
        case ARG_POLICY_FILE:
            policy_file = optarg;
            break;
        case ARG_VHSM_POLICY:
            vhsm_policy = optarg;
            break;
        case ARG_MAX_AGE:
            max_age = strtol(optarg, NULL, 10);
            if (max_age < 1 || max_age > 604800) {
                log_error("--max-age: 1..604800 seconds.");
                return NT_EXIT_USAGE;
            }
            break;
        case ARG_LABEL:
            label = optarg;
            break;
        case ARG_ACL_FILE:
            acl_file = optarg;
            break;
        default:
            return NT_EXIT_USAGE;
        }
    if (optind + 1 != argc) {
        log_error("Usage: nitride kms secret create ID --type T ...");
        return NT_EXIT_USAGE;
    }
    if (!valid_id_arg(argv[optind]))
        return NT_EXIT_USAGE;
    if (!type || !policy_file || !value_file == !generate) {
        log_error("secret create needs --type, --policy-file, and one of --value-file or "
                  "--generate.");
        return NT_EXIT_USAGE;
    }
    r = load_json_file(policy_file, "Policy file", &policy);
    if (r != NT_EXIT_OK)
        return r;
    attrs = json_object();
    body = json_pack("{ss ss sO}", "id", argv[optind], "type", type, "policy", policy);
    if (!attrs || !body)
        return log_oom(), NT_EXIT_IO;
    if (name && json_object_set_new(body, "name", json_string(name)) < 0)
        return NT_EXIT_IO;
    if (vhsm_policy && json_object_set_new(attrs, "policy", json_string(vhsm_policy)) < 0)
        return NT_EXIT_IO;
    if (max_age && json_object_set_new(attrs, "max_age", json_integer(max_age)) < 0)
        return NT_EXIT_IO;
    if (label && json_object_set_new(attrs, "label", json_string(label)) < 0)
        return NT_EXIT_IO;
    if (acl_file) {
        r = load_json_file(acl_file, "ACL file", &acl);
        if (r != NT_EXIT_OK)
            return r;
        if (json_object_set(attrs, "acl", acl) < 0)
            return NT_EXIT_IO;
    }
    if (json_object_size(attrs) > 0 && json_object_set(body, "attributes", attrs) < 0)
        return NT_EXIT_IO;
    r = add_value(body, type, value_file, generate, length);
    if (r < 0)
        return r == -EBADMSG ? NT_EXIT_USAGE : NT_EXIT_IO;
    r = call_ok(a, "secret create", "POST", "/v1/secrets", body, 201, &reply);
    if (r != NT_EXIT_OK)
        return r;
    if (a->json)
        return print_json(reply);
    printf("created secret %s (%s, version %" JSON_INTEGER_FORMAT ")\n", jstr(reply, "id"),
           jstr(reply, "vhsm_name"), json_integer_value(json_object_get(reply, "version")));
    return NT_EXIT_OK;
}

static int secret_replace(const KmsArgs *a, int argc, char **argv) {
    enum { ARG_VALUE_FILE = 0x100, ARG_GENERATE, ARG_LENGTH };
    static const struct option options[] = {
        {"value-file", required_argument, NULL, ARG_VALUE_FILE},
        {"generate", no_argument, NULL, ARG_GENERATE},
        {"length", required_argument, NULL, ARG_LENGTH},
        {},
    };
    const char *value_file = NULL;
    long length = 0;
    bool generate = false;
    json_auto_t *body = NULL, *meta = NULL, *reply = NULL;
    _cleanup_free_ char *path = NULL;
    int c, r;

    optind = 0;
    while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
        switch (c) {
        case ARG_VALUE_FILE:
            value_file = optarg;
            break;
        case ARG_GENERATE:
            generate = true;
            break;
        case ARG_LENGTH:
            length = strtol(optarg, NULL, 10);
            if (length < 1 || length > 4096) {
                log_error("--length: 1..4096 bytes.");
                return NT_EXIT_USAGE;
            }
            break;
        default:
            return NT_EXIT_USAGE;
        }
    if (optind + 1 != argc || !value_file == !generate) {
        log_error("Usage: nitride kms secret replace ID (--value-file F | --generate)");
        return NT_EXIT_USAGE;
    }
    if (!valid_id_arg(argv[optind]))
        return NT_EXIT_USAGE;
    if (asprintf(&path, "/v1/secrets/%s", argv[optind]) < 0)
        return NT_EXIT_IO;
    /* The type decides how the file is read (a key file becomes PKCS#8). */
    if (value_file) {
        r = call_ok(a, "secret show", "GET", path, NULL, 200, &meta);
        if (r != NT_EXIT_OK)
            return r;
    }
    body = json_object();
    if (!body)
        return NT_EXIT_IO;
    r = add_value(body, jstr(meta, "type"), value_file, generate, length);
    if (r < 0)
        return r == -EBADMSG ? NT_EXIT_USAGE : NT_EXIT_IO;
    free(path);
    if (asprintf(&path, "/v1/secrets/%s/value", argv[optind]) < 0) {
        path = NULL;
        return NT_EXIT_IO;
    }
    r = call_ok(a, "secret replace", "PUT", path, body, 200, &reply);
    if (r != NT_EXIT_OK)
        return r;
    if (a->json)
        return print_json(reply);
    printf("replaced secret %s: version %" JSON_INTEGER_FORMAT "\n", argv[optind],
           json_integer_value(json_object_get(reply, "version")));
    return NT_EXIT_OK;
}

static int secret_list(const KmsArgs *a) {
    json_auto_t *all = json_array();
    _cleanup_free_ char *after = NULL;
    int r;

    if (!all)
        return NT_EXIT_IO;
    for (;;) {
        _cleanup_free_ char *path = NULL;
        json_auto_t *reply = NULL;
        const json_t *arr, *m;
        size_t i;
        if (asprintf(&path, "/v1/secrets?limit=1000%s%s", after ? "&after=" : "",
                     after ? after : "") < 0) {
            path = NULL;
            return NT_EXIT_IO;
        }
        r = call_ok(a, "secret list", "GET", path, NULL, 200, &reply);
        if (r != NT_EXIT_OK)
            return r;
        arr = json_object_get(reply, "secrets");
        json_array_foreach(arr, i, m) json_array_append(all, (json_t *)m);
        free(after);
        after = jstr(reply, "next") ? strdup(jstr(reply, "next")) : NULL;
        if (!after)
            break;
    }
    if (a->json)
        return print_json(all);
    {
        const json_t *m;
        size_t i;
        printf("%-24s %-28s %-12s %-8s %s\n", "ID", "VHSM NAME", "TYPE", "VERSION", "UPDATED");
        json_array_foreach(all, i, m) {
            char u[32];
            fmt_time(json_integer_value(json_object_get(m, "updated")), u);
            printf("%-24s %-28s %-12s %-8" JSON_INTEGER_FORMAT " %s\n", jstr(m, "id"),
                   jstr(m, "vhsm_name"), jstr(m, "type"),
                   json_integer_value(json_object_get(m, "version")), u);
        }
    }
    return NT_EXIT_OK;
}

static int secret_simple(const KmsArgs *a, const char *sub, int argc, char **argv) {
    _cleanup_free_ char *path = NULL;
    json_auto_t *reply = NULL;
    bool del = streq(sub, "delete");
    int r;

    if (argc != 2) {
        log_error("Usage: nitride kms secret %s ID", sub);
        return NT_EXIT_USAGE;
    }
    if (!valid_id_arg(argv[1]))
        return NT_EXIT_USAGE;
    if (asprintf(&path, "/v1/secrets/%s", argv[1]) < 0)
        return NT_EXIT_IO;
    r = call_ok(a, del ? "secret delete" : "secret show", del ? "DELETE" : "GET", path, NULL, 200,
                &reply);
    if (r != NT_EXIT_OK)
        return r;
    if (a->json)
        return print_json(reply);
    if (del)
        printf("deleted secret %s\n", argv[1]);
    else
        print_meta(reply);
    return NT_EXIT_OK;
}

static int cmd_secret(const KmsArgs *a, int argc, char **argv) {
    if (argc < 2) {
        log_error("Usage: nitride kms secret create|replace|list|show|delete ...");
        return NT_EXIT_USAGE;
    }
    if (streq(argv[1], "create"))
        return secret_create(a, argc - 1, argv + 1);
    if (streq(argv[1], "replace"))
        return secret_replace(a, argc - 1, argv + 1);
    if (streq(argv[1], "list")) {
        if (argc != 2) {
            log_error("Usage: nitride kms secret list");
            return NT_EXIT_USAGE;
        }
        return secret_list(a);
    }
    if (streq(argv[1], "show") || streq(argv[1], "delete"))
        return secret_simple(a, argv[1], argc - 1, argv + 1);
    log_error("Unknown 'secret %s' (create, replace, list, show, delete).", argv[1]);
    return NT_EXIT_USAGE;
}

/* ---- policy ---- */

static int cmd_policy(const KmsArgs *a, int argc, char **argv) {
    _cleanup_free_ char *path = NULL;
    json_auto_t *body = NULL, *reply = NULL;
    int r;

    if (argc >= 4 && streq(argv[1], "set") && argc == 4) {
        if (!valid_id_arg(argv[2]))
            return NT_EXIT_USAGE;
        r = load_json_file(argv[3], "Policy file", &body);
        if (r != NT_EXIT_OK)
            return r;
        if (asprintf(&path, "/v1/secrets/%s/policy", argv[2]) < 0)
            return NT_EXIT_IO;
        r = call_ok(a, "policy set", "PUT", path, body, 200, &reply);
        if (r != NT_EXIT_OK)
            return r;
        if (a->json)
            return print_json(reply);
        printf("policy of %s set\n", argv[2]);
        return NT_EXIT_OK;
    }
    if (argc >= 3 && streq(argv[1], "test")) {
        enum { ARG_TOKEN = 0x100, ARG_VOLUME };
        static const struct option options[] = {
            {"token", required_argument, NULL, ARG_TOKEN},
            {"volume-uuid", required_argument, NULL, ARG_VOLUME},
            {},
        };
        const char *token_file = NULL, *volume = NULL;
        _cleanup_free_ uint8_t *token = NULL;
        size_t len = 0;
        int c;

        optind = 0;
        while ((c = getopt_long(argc - 1, argv + 1, "", options, NULL)) >= 0)
            switch (c) {
            case ARG_TOKEN:
                token_file = optarg;
                break;
            case ARG_VOLUME:
                volume = optarg;
                break;
            default:
                return NT_EXIT_USAGE;
            }
        if (optind + 1 != argc - 1 || !token_file) {
            log_error("Usage: nitride kms policy test ID --token FILE [--volume-uuid U]");
            return NT_EXIT_USAGE;
        }
        const char *id = argv[1 + optind];
        if (!valid_id_arg(id))
            return NT_EXIT_USAGE;
        r = read_full_file(token_file, 65536, &token, &len);
        if (r < 0) {
            log_error_errno(r, "Failed to read the token file '%s': %m", token_file);
            return NT_EXIT_IO;
        }
        while (len > 0 && strchr(" \t\r\n", token[len - 1]))
            token[--len] = 0;
        body = json_pack("{ss}", "token", (const char *)token);
        if (!body || (volume && json_object_set_new(body, "volume_uuid", json_string(volume)) < 0))
            return NT_EXIT_IO;
        if (asprintf(&path, "/v1/secrets/%s/policy/test", id) < 0)
            return NT_EXIT_IO;
        r = call_ok(a, "policy test", "POST", path, body, 200, &reply);
        if (r != NT_EXIT_OK)
            return r;
        bool allowed = json_is_true(json_object_get(reply, "allowed"));
        if (a->json)
            (void)print_json(reply);
        else if (allowed)
            printf("allowed: the policy of %s would release it to this token\n", id);
        else if (jstr(reply, "rule"))
            printf("refused: rule %s\n  expected: %s\n  found:    %s\n", jstr(reply, "rule"),
                   jstr(reply, "expected") ?: "-", jstr(reply, "found") ?: "-");
        else
            printf("refused: the token does not verify (%s): %s\n", jstr(reply, "check") ?: "?",
                   jstr(reply, "error") ?: "-");
        return allowed ? NT_EXIT_OK : NT_EXIT_POLICY;
    }
    log_error("Usage: nitride kms policy set ID FILE | policy test ID --token FILE");
    return NT_EXIT_USAGE;
}

/* ---- audit ---- */

/* Every row with seq > after (paged). */
static int fetch_rows(const KmsArgs *a, int64_t after, json_t **ret) {
    json_auto_t *all = json_array();
    int r;

    if (!all)
        return NT_EXIT_IO;
    for (;;) {
        _cleanup_free_ char *path = NULL;
        json_auto_t *reply = NULL;
        const json_t *rows, *row;
        size_t i;
        if (asprintf(&path, "/v1/audit?after=%" PRId64 "&limit=%d", after, KMS_AUDIT_PAGE) < 0) {
            path = NULL;
            return NT_EXIT_IO;
        }
        r = call_ok(a, "audit", "GET", path, NULL, 200, &reply);
        if (r != NT_EXIT_OK)
            return r;
        rows = json_object_get(reply, "rows");
        if (!json_is_array(rows)) {
            log_error("audit: kmsd's reply has no rows.");
            return NT_EXIT_IO;
        }
        json_array_foreach(rows, i, row) {
            json_int_t seq = json_integer_value(json_object_get(row, "seq"));
            if (seq <= after) {
                log_error("audit: kmsd returned rows out of order (seq %" JSON_INTEGER_FORMAT
                          " after %" PRId64 ").",
                          seq, after);
                return NT_EXIT_INVALID;
            }
            after = seq;
            json_array_append(all, (json_t *)row);
        }
        if (json_array_size(rows) < KMS_AUDIT_PAGE)
            break;
    }
    *ret = TAKE_PTR(all);
    return NT_EXIT_OK;
}

static int audit_show(const KmsArgs *a, int argc, char **argv) {
    enum { ARG_AFTER = 0x100 };
    static const struct option options[] = {
        {"after", required_argument, NULL, ARG_AFTER},
        {},
    };
    json_auto_t *rows = NULL;
    long long after = 0;
    const json_t *row;
    size_t i;
    int c, r;

    optind = 0;
    while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
        switch (c) {
        case ARG_AFTER:
            after = strtoll(optarg, NULL, 10);
            if (after < 0) {
                log_error("--after: a sequence number >= 0.");
                return NT_EXIT_USAGE;
            }
            break;
        default:
            return NT_EXIT_USAGE;
        }
    if (optind != argc) {
        log_error("Usage: nitride kms audit show [--after SEQ]");
        return NT_EXIT_USAGE;
    }
    r = fetch_rows(a, after, &rows);
    if (r != NT_EXIT_OK)
        return r;
    if (a->json)
        return print_json(rows);
    printf("%-6s %-20s %-12s %-28s %-16s %-4s %-8s %-14s %s\n", "SEQ", "TIME", "ACTION", "ACTOR",
           "SECRET", "VER", "RESULT", "RULE", "DETAIL");
    json_array_foreach(rows, i, row) {
        char t[32];
        fmt_time(json_integer_value(json_object_get(row, "time")), t);
        printf("%-6" JSON_INTEGER_FORMAT " %-20s %-12s %-28.28s %-16.16s %-4" JSON_INTEGER_FORMAT
               " %-8s %-14s %s\n",
               json_integer_value(json_object_get(row, "seq")), t, jstr(row, "action") ?: "-",
               jstr(row, "actor") ?: "-", jstr(row, "secret_id") ?: "-",
               json_integer_value(json_object_get(row, "version")), jstr(row, "result") ?: "-",
               jstr(row, "rule") ?: "-", jstr(row, "detail") ?: "");
    }
    return NT_EXIT_OK;
}

/* Checks a compact JWS of typ against a JWKS ({"keys": [...]}: kid selects, ES256/ES384 only,
 * the key's curve must match). Returns 0 with the payload (a JSON object) and the kid, or
 * -EKEYREJECTED / -EBADMSG with the reason in err. */
static int jws_verify(const char *jws, const json_t *jwks, const char *typ, json_t **ret_payload,
                      char **ret_kid, char err[static 256]) {
    const char *d1 = strchr(jws, '.'), *d2 = d1 ? strchr(d1 + 1, '.') : NULL;
    json_auto_t *hdr = NULL, *payload = NULL, *obj = NULL, *enc = NULL;
    const json_t *keys = json_object_get(jwks, "keys"), *key = NULL, *k;
    const char *alg, *kid, *htyp;
    size_t i;

    if (!d1 || !d2 || strchr(d2 + 1, '.')) {
        snprintf(err, 256, "not a JWS compact serialisation");
        return -EBADMSG;
    }
    enc = json_stringn(jws, (size_t)(d1 - jws));
    hdr = enc ? jose_b64_dec_load(enc) : NULL;
    alg = jstr(hdr, "alg");
    kid = jstr(hdr, "kid");
    htyp = jstr(hdr, "typ");
    if (!json_is_object(hdr) || !alg || !kid) {
        snprintf(err, 256, "protected header without alg or kid");
        return -EBADMSG;
    }
    if (!htyp || !streq(htyp, typ)) {
        snprintf(err, 256, "typ '%.64s' is not %s", htyp ? htyp : "(none)", typ);
        return -EBADMSG;
    }
    if (json_object_get(hdr, "crit")) {
        snprintf(err, 256, "critical header parameters are not supported");
        return -EBADMSG;
    }
    if (!streq(alg, "ES256") && !streq(alg, "ES384")) {
        snprintf(err, 256, "algorithm '%.32s' refused (ES256 or ES384)", alg);
        return -EKEYREJECTED;
    }
    json_array_foreach(keys, i, k) if (jstr(k, "kid") && streq(jstr(k, "kid"), kid)) key = k;
    if (!key) {
        snprintf(err, 256, "signed by key '%.64s', which is not among the release keys", kid);
        return -EKEYREJECTED;
    }
    if (!jstr(key, "kty") || !streq(jstr(key, "kty"), "EC") || !jstr(key, "crv") ||
        !streq(jstr(key, "crv"), streq(alg, "ES256") ? "P-256" : "P-384") ||
        json_object_get(key, "d")) {
        snprintf(err, 256, "key '%.64s' does not fit algorithm %s", kid, alg);
        return -EKEYREJECTED;
    }
    obj = json_pack("{s:s%,s:s%,s:s}", "protected", jws, (size_t)(d1 - jws), "payload", d1 + 1,
                    (size_t)(d2 - d1 - 1), "signature", d2 + 1);
    if (!obj || !jose_jws_ver(NULL, obj, NULL, key, false)) {
        snprintf(err, 256, "the signature does not verify with key '%.64s'", kid);
        return -EKEYREJECTED;
    }
    json_decref(enc);
    enc = json_stringn(d1 + 1, (size_t)(d2 - d1 - 1));
    payload = enc ? jose_b64_dec_load(enc) : NULL;
    if (!json_is_object(payload)) {
        snprintf(err, 256, "the payload is not a JSON object");
        return -EBADMSG;
    }
    *ret_kid = strdup(kid);
    if (!*ret_kid)
        return -ENOMEM;
    *ret_payload = TAKE_PTR(payload);
    return 0;
}

static int audit_verify(const KmsArgs *a, int argc, char **argv) {
    enum { ARG_KEYS = 0x100, ARG_HEAD_FILE };
    static const struct option options[] = {
        {"release-keys", required_argument, NULL, ARG_KEYS},
        {"head-file", required_argument, NULL, ARG_HEAD_FILE},
        {},
    };
    const char *keys_file = NULL, *head_file = NULL;
    json_auto_t *jwks = NULL, *head_reply = NULL, *head = NULL, *rows = NULL, *chain = NULL,
                *prev = NULL;
    _cleanup_free_ char *kid = NULL;
    const char *hash, *jws;
    json_int_t seq, t;
    char err[256], when[32];
    const json_t *row;
    size_t i;
    int c, r;

    optind = 0;
    while ((c = getopt_long(argc, argv, "", options, NULL)) >= 0)
        switch (c) {
        case ARG_KEYS:
            keys_file = optarg;
            break;
        case ARG_HEAD_FILE:
            head_file = optarg;
            break;
        default:
            return NT_EXIT_USAGE;
        }
    if (optind != argc) {
        log_error("Usage: nitride kms audit verify [--release-keys JWKS] [--head-file FILE]");
        return NT_EXIT_USAGE;
    }
    if (keys_file) {
        r = load_json_file(keys_file, "Release keys", &jwks);
        if (r != NT_EXIT_OK)
            return r;
    } else {
        r = call_ok(a, "release keys", "GET", "/v1/release-keys", NULL, 200, &jwks);
        if (r != NT_EXIT_OK)
            return r;
        if (!a->json)
            log_warning("Checking the head against the release keys kmsd publishes now; pin "
                        "them with --release-keys for an independent check.");
    }
    if (head_file && access(head_file, F_OK) == 0) {
        r = load_json_file(head_file, "Previous head", &prev);
        if (r != NT_EXIT_OK)
            return r;
    }

    /* The head first, then the rows: every row it covers exists by then. */
    r = call_ok(a, "audit head", "GET", "/v1/audit/head", NULL, 200, &head_reply);
    if (r != NT_EXIT_OK)
        return r;
    jws = jstr(head_reply, "jws");
    if (!jws) {
        log_error("audit head: kmsd's reply has no jws.");
        return NT_EXIT_IO;
    }
    r = jws_verify(jws, jwks, AUDIT_HEAD_TYP, &head, &kid, err);
    if (r < 0) {
        log_error("audit verify FAILED: the signed head does not verify: %s", err);
        return NT_EXIT_INVALID;
    }
    hash = jstr(head, "hash");
    seq = json_integer_value(json_object_get(head, "seq"));
    t = json_integer_value(json_object_get(head, "time"));
    if (!hash || !json_is_integer(json_object_get(head, "seq")) || seq < 0) {
        log_error("audit verify FAILED: the signed head lacks seq or hash.");
        return NT_EXIT_INVALID;
    }
    r = fetch_rows(a, 0, &rows);
    if (r != NT_EXIT_OK)
        return r;
    chain = json_array();
    if (!chain)
        return NT_EXIT_IO;
    json_array_foreach(rows, i, row) if (json_integer_value(json_object_get(row, "seq")) <= seq)
        json_array_append(chain, (json_t *)row);

    r = kms_audit_chain_verify(chain, hash, err);
    if (r < 0) {
        log_error("audit verify FAILED: %s", err);
        return NT_EXIT_INVALID;
    }
    if (prev) {
        json_int_t pseq = json_integer_value(json_object_get(prev, "seq"));
        const char *phash = jstr(prev, "hash");
        bool found = pseq == 0;
        if (pseq > seq) {
            log_error("audit verify FAILED: the chain ends at seq %" JSON_INTEGER_FORMAT
                      ", before the head seen earlier (seq %" JSON_INTEGER_FORMAT
                      ", %s): rows were removed",
                      seq, pseq, head_file);
            return NT_EXIT_INVALID;
        }
        json_array_foreach(chain, i,
                           row) if (json_integer_value(json_object_get(row, "seq")) == pseq) found =
            phash && jstr(row, "hash") && streq(phash, jstr(row, "hash"));
        if (!found) {
            log_error("audit verify FAILED: the row at seq %" JSON_INTEGER_FORMAT
                      " is not the one seen earlier (%s): the history was rewritten",
                      pseq, head_file);
            return NT_EXIT_INVALID;
        }
    }
    if (head_file) {
        json_auto_t *save =
            json_pack("{sI ss sI ss}", "seq", seq, "hash", hash, "time", t, "jws", jws);
        _cleanup_free_ char *text = save ? json_dumps(save, JSON_COMPACT) : NULL;
        if (!text || write_file_atomic(head_file, text, strlen(text), 0600) < 0) {
            log_error("Failed to save the head to '%s'.", head_file);
            return NT_EXIT_IO;
        }
    }
    fmt_time(t, when);
    if (a->json) {
        json_auto_t *out =
            json_pack("{sb sI ss ss ss sI}", "ok", 1, "seq", seq, "hash", hash, "kid", kid, "time",
                      when, "rows", (json_int_t)json_array_size(chain));
        return out ? print_json(out) : NT_EXIT_IO;
    }
    printf("audit chain ok: %zu rows, head seq %" JSON_INTEGER_FORMAT " hash %s\n"
           "  signed by release key %s at %s%s\n",
           json_array_size(chain), seq, hash, kid, when,
           prev ? "; extends the head saved earlier" : "");
    return NT_EXIT_OK;
}

static int cmd_audit(const KmsArgs *a, int argc, char **argv) {
    if (argc >= 2 && streq(argv[1], "show"))
        return audit_show(a, argc - 1, argv + 1);
    if (argc >= 2 && streq(argv[1], "verify"))
        return audit_verify(a, argc - 1, argv + 1);
    log_error("Usage: nitride kms audit show|verify ...");
    return NT_EXIT_USAGE;
}

int cmd_kms(int argc, char **argv) {
    enum {
        ARG_URL = 0x100,
        ARG_CA,
        ARG_TOKEN_FILE,
        ARG_CERT,
        ARG_KEY,
        ARG_JSON,
        ARG_TIMEOUT,
    };
    static const struct option options[] = {
        {"url", required_argument, NULL, ARG_URL},
        {"ca", required_argument, NULL, ARG_CA},
        {"admin-token-file", required_argument, NULL, ARG_TOKEN_FILE},
        {"cert", required_argument, NULL, ARG_CERT},
        {"key", required_argument, NULL, ARG_KEY},
        {"json", no_argument, NULL, ARG_JSON},
        {"timeout", required_argument, NULL, ARG_TIMEOUT},
        {"help", no_argument, NULL, 'h'},
        {},
    };
    KmsArgs a = {.timeout_s = KMS_DEFAULT_TIMEOUT_S};
    const char *url = getenv("NITRIDE_KMS_URL");
    int c, r;

    json_set_alloc_funcs(zero_malloc, zero_free);
    a.token_file = getenv("NITRIDE_KMS_TOKEN_FILE");
    optind = 0;
    /* "+": options of `kms` come before the command; the command parses its own. */
    while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0)
        switch (c) {
        case ARG_URL:
            url = optarg;
            break;
        case ARG_CA:
            a.ca_file = optarg;
            break;
        case ARG_TOKEN_FILE:
            a.token_file = optarg;
            break;
        case ARG_CERT:
            a.cert = optarg;
            break;
        case ARG_KEY:
            a.key = optarg;
            break;
        case ARG_JSON:
            a.json = true;
            break;
        case ARG_TIMEOUT: {
            char *end = NULL;
            unsigned long v = strtoul(optarg, &end, 10);
            if (!*optarg || *end || v < 1 || v > 3600) {
                log_error("--timeout: 1..3600 seconds.");
                return NT_EXIT_USAGE;
            }
            a.timeout_s = (unsigned)v;
            break;
        }
        case 'h':
            help(stdout);
            return NT_EXIT_OK;
        default:
            help(stderr);
            return NT_EXIT_USAGE;
        }
    if (optind >= argc) {
        help(stderr);
        return NT_EXIT_USAGE;
    }
    if (!url || !url[0]) {
        log_error("nitride kms needs --url URL (or $NITRIDE_KMS_URL).");
        return NT_EXIT_USAGE;
    }
    if (!a.cert != !a.key) {
        log_error("--cert and --key go together.");
        return NT_EXIT_USAGE;
    }
    r = check_url(url, &a.base);
    if (r != NT_EXIT_OK)
        return r;
    if (a.token_file && a.token_file[0]) {
        r = load_token(&a);
        if (r != NT_EXIT_OK) {
            free(a.base);
            return r;
        }
    }
    argc -= optind;
    argv += optind;
    if (streq(argv[0], "secret"))
        r = cmd_secret(&a, argc, argv);
    else if (streq(argv[0], "policy"))
        r = cmd_policy(&a, argc, argv);
    else if (streq(argv[0], "audit"))
        r = cmd_audit(&a, argc, argv);
    else {
        log_error("Unknown 'kms %s' (secret, policy, audit). Try 'nitride kms --help'.", argv[0]);
        r = NT_EXIT_USAGE;
    }
    secret_free(a.token);
    free(a.base);
    return r < 0 ? NT_EXIT_IO : r;
}
