/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vhsm: the command line client of vhsmd, over libvhsm. Binary safe: data is read from stdin or
 * --in FILE and written to stdout or --out FILE unchanged (files written with --out are created
 * mode 0600, atomically). Exit codes are stable for scripts (see help() and docs/protocol.md);
 * errors name the key and the reason, on stderr (and as a JSON object on stdout with --json).
 */
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/vhsm-client.h"
#include "config.h"
#include "core/encoding.h"
#include "core/fileio.h"
#include "core/log.h"

enum {
    EXIT_OK = 0,
    EXIT_FAIL = 1,          /* any other failure */
    EXIT_USAGE = 2,         /* bad command line */
    EXIT_UNREACHABLE = 3,   /* cannot reach vhsmd */
    EXIT_NOT_FOUND = 4,     /* no such key / version */
    EXIT_DENIED = 5,        /* permission denied */
    EXIT_ATTESTATION = 6,   /* attestation required */
    EXIT_VERIFY_FAILED = 7, /* signature, MAC, tag or JWE did not verify */
    EXIT_EXISTS = 8,        /* key exists */
    EXIT_INVALID = 9,       /* request refused as invalid / unsupported for the key */
    EXIT_RETIRED = 10,      /* key version retired (below the key's minimum version) */
    EXIT_QUOTA = 11,        /* quota exceeded */
    EXIT_NOT_OWNER = 12,    /* name in another owner's namespace */
    EXIT_REFUSED = 13,      /* a service's policy refused (the message says why) */
    EXIT_UNAVAILABLE = 14,  /* a service vhsmd needed cannot be reached */
    EXIT_TIMEOUT = 15,      /* vhsmd gave up waiting (for the agent) */
};

#define MAX_ACL 64

typedef struct Args {
    const char *socket;
    bool json;
    const char *type, *policy, *label, *alg, *format, *in, *out, *aad, *sig, *token, *peer_key,
        *new_name, *info;
    uint64_t max_age;
    uint32_t key_version, lifetime, wait_ms;
    const char *patterns[256];
    size_t n_patterns;
    int agent_status; /* agent done: 0 or a negative errno */
    const char *message;
    bool prehashed, raw, raw_rs;
    uint32_t use_uids[MAX_ACL], use_gids[MAX_ACL], admin_uids[MAX_ACL], admin_gids[MAX_ACL];
    size_t n_use_uids, n_use_gids, n_admin_uids, n_admin_gids;
    const char *use_cgroups[MAX_ACL], *admin_cgroups[MAX_ACL];
    size_t n_use_cgroups, n_admin_cgroups;
    bool acl_given;
    uint32_t uid; /* token reset-so-pin --uid */
    bool uid_given;
    char **pos; /* positional arguments after the command words */
    int n_pos;
} Args;

static void help(void) {
    printf(
        "Usage: vhsm [--socket PATH] [--json] COMMAND ...\n"
        "Talks to vhsmd, the vHSM daemon (socket: --socket, $VHSM_SOCKET or %s).\n\n"
        "Keys (NAME: a plain name is yours, \"UID/name\" another owner's, \"kms/name\" the "
        "KMS's):\n"
        "  key create NAME --type TYPE [--policy local|attested --max-age S] [--label TEXT]\n"
        "             [--allow-uid U] [--allow-gid G] [--allow-cgroup PATH]\n"
        "             [--admin-uid U] [--admin-gid G] [--admin-cgroup PATH]\n"
        "      TYPE: aes256 hmac-sha256 hmac-sha384 p256 p384 ed25519 rsa2048 rsa3072 rsa4096\n"
        "      (raw keys and kms/ names come only from KMS releases: import-release)\n"
        "      (no ACL options: only you may use and administer the key; root may administer)\n"
        "  key list | key info NAME | key rotate NAME | key delete NAME\n"
        "  key acl NAME [ACL options]      replace the key's ACL\n"
        "  key min-version NAME N          retire (wipe) every version below N\n"
        "Operations (data from stdin or --in FILE, result to stdout or --out FILE):\n"
        "  encrypt NAME [--aad FILE] [--alg aes256-gcm|rsa-oaep-sha256|rsa-oaep-sha1] [--raw]\n"
        "  decrypt NAME [--aad FILE] [--alg ...] [--raw --key-version N]\n"
        "  sign NAME [--alg ALG] [--prehashed] [--raw] [--raw-rs]\n"
        "      ALG: ecdsa ed25519 hmac rsa-pss-sha256 rsa-pss-sha384 rsa-pkcs1-sha256 "
        "rsa-pkcs1-sha384\n"
        "      --raw: bare signature (no vault envelope); --raw-rs: ECDSA r||s\n"
        "  verify NAME --signature FILE [--alg ALG] [--prehashed] [--raw] [--key-version N]\n"
        "  mac NAME | mac-verify NAME --signature FILE\n"
        "  wrap NAME [--alg aes256-kwp|aes256-kw] [--raw] | unwrap NAME [--alg ...] [--raw]\n"
        "  random N                        N random bytes\n"
        "  pubkey NAME [--format pem|jwk] [--key-version N]\n"
        "  ecdh-derive NAME --peer-key FILE --new-name NEW [--info TEXT] [ACL options]\n"
        "Transfer and attestation (root):\n"
        "  transfer-key create [--lifetime S]   prints the transfer public JWK\n"
        "  import-release FILE [--token FILE]   a release signed by the KMS (name, type, version\n"
        "                                       and policy come from it); with the token it\n"
        "                                       was made for, also recorded as the verdict\n"
        "  attestation status | attestation set --token FILE   (attestd's EAR token)\n"
        "Agent channel (root; the nitride agent does this):\n"
        "  agent wait [--pattern P]... [--wait-ms N]   wait for a job (prints its JSON, or {})\n"
        "  agent done ID [--refused|--unavailable|--timeout] [--message M]\n"
        "Tokens (root):\n"
        "  token reset-so-pin --uid N [--in FILE]   set a new SO PIN (first line of stdin or\n"
        "                                       FILE) on uid N's token and unlock it; keys and\n"
        "                                       the user PIN stay (audited)\n"
        "  ping\n\n"
        "Exit codes: 0 ok, 1 other failure, 2 usage, 3 daemon unreachable, 4 not found,\n"
        "  5 permission denied, 6 attestation required, 7 verification failed, 8 key exists,\n"
        "  9 invalid request or operation not supported by the key, 10 key version retired,\n"
        "  11 quota exceeded, 12 name in another owner's namespace, 13 refused by a service's\n"
        "  policy, 14 a service is unavailable, 15 vhsmd gave up waiting (for the agent).\n",
        VHSM_DEFAULT_SOCKET);
}

static bool connected;
static VhsmClient *the_client;
#define VHSM_REASON_MAX 1024

static int exit_code_for(int r) {
    if (r < 0 && !connected)
        return EXIT_UNREACHABLE;
    switch (-r) {
    case 0:
        return EXIT_OK;
    case ENOENT:
        return EXIT_NOT_FOUND;
    case ECONNREFUSED:
    case ENOTCONN:
    case ECONNRESET:
    case EPIPE:
    case ETIMEDOUT:
    case EPROTO:
        return EXIT_UNREACHABLE;
    case ENOKEY:
        return EXIT_NOT_FOUND;
    case EPERM:
    case EACCES:
        return EXIT_DENIED;
    case EKEYEXPIRED:
        return EXIT_ATTESTATION;
    case EKEYREJECTED:
        return EXIT_VERIFY_FAILED;
    case EEXIST:
    case ESTALE:
        return EXIT_EXISTS;
    case EINVAL:
    case EBADMSG:
    case EOPNOTSUPP:
    case EMSGSIZE:
        return EXIT_INVALID;
    case EKEYREVOKED:
        return EXIT_RETIRED;
    case EDQUOT:
        return EXIT_QUOTA;
    case ENOTUNIQ:
        return EXIT_NOT_OWNER;
    case EREMOTEIO:
        return EXIT_REFUSED;
    case EHOSTUNREACH:
        return EXIT_UNAVAILABLE;
    default:
        return EXIT_FAIL;
    }
}

/* Reports a failure once: names what failed and the daemon's reason. */
static int fail(const Args *a, int r, const char *what, const char *name) {
    char saved[VHSM_REASON_MAX];
    const char *reason = saved;
    int code = exit_code_for(r);
    (void)snprintf(saved, sizeof saved, "%s", vhsm_last_error());
    /* -ETIMEDOUT: the daemon's timeout status (it waited for the agent), or no answer at all (the
     * connection is then broken: a ping fails at once, without I/O). */
    if (r == -ETIMEDOUT && connected && the_client && vhsm_ping(the_client) != -ENOTCONN)
        code = EXIT_TIMEOUT;
    if (!reason || !*reason)
        reason = strerror(-r);
    if (!connected)
        fprintf(stderr, "vhsm: %s\n", reason);
    else if (name && strstr(reason, name))
        fprintf(stderr, "vhsm: %s\n", reason); /* the daemon's message names the key already */
    else if (name)
        fprintf(stderr, "vhsm: %s '%s' failed: %s\n", what, name, reason);
    else
        fprintf(stderr, "vhsm: %s failed: %s\n", what, reason);
    if (a->json) {
        json_auto_t *j =
            json_pack("{s:s, s:s, s:i}", "error", reason, "operation", what, "exit", code);
        if (j && name)
            (void)json_object_set_new(j, "key", json_string(name));
        if (j)
            (void)json_dumpf(j, stdout, JSON_COMPACT), (void)putchar('\n');
    }
    return code;
}

static int usage(const char *fmt, ...) _printf_(1, 2);
static int usage(const char *fmt, ...) {
    va_list ap;
    fprintf(stderr, "vhsm: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nTry 'vhsm --help'.\n");
    return EXIT_USAGE;
}

static int read_input(const char *path, size_t max, uint8_t **ret, size_t *ret_len) {
    int r = read_full_file(path ? path : "-", max, ret, ret_len);
    if (r < 0)
        fprintf(stderr, "vhsm: cannot read '%s': %s\n", path ? path : "(stdin)",
                r == -EFBIG ? "too large" : strerror(-r));
    return r;
}

/* Writes binary output (or, with --json, a JSON object {field: base64}). */
static int write_output(const Args *a, const char *field, const uint8_t *p, size_t n) {
    int r;
    if (a->json && !a->out) {
        _cleanup_free_ char *b64 = NULL;
        json_auto_t *j = NULL;
        r = base64_encode_alloc(p, n, &b64);
        if (r < 0)
            return EXIT_FAIL;
        j = json_pack("{s:s}", field, b64);
        if (!j || json_dumpf(j, stdout, JSON_COMPACT) < 0)
            return EXIT_FAIL;
        (void)putchar('\n');
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
    }
    if (a->out)
        r = write_file_atomic(a->out, p, n, 0600);
    else {
        r = write_all(STDOUT_FILENO, p, n);
    }
    if (r < 0) {
        fprintf(stderr, "vhsm: cannot write '%s': %s\n", a->out ? a->out : "(stdout)",
                strerror(-r));
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static int write_text(const Args *a, const char *text) {
    _cleanup_free_ char *s = NULL;
    size_t n = strlen(text);
    if (n == 0 || text[n - 1] != '\n') {
        if (asprintf(&s, "%s\n", text) < 0)
            return EXIT_FAIL;
        text = s;
        n++;
    }
    Args b = *a;
    b.json = false;
    return write_output(&b, "", (const uint8_t *)text, n);
}

static void fill_acl(const Args *a, VhsmAcl *acl) {
    *acl = (VhsmAcl){
        .use_uids = a->use_uids,
        .n_use_uids = a->n_use_uids,
        .use_gids = a->use_gids,
        .n_use_gids = a->n_use_gids,
        .use_cgroups = a->use_cgroups,
        .n_use_cgroups = a->n_use_cgroups,
        .admin_uids = a->admin_uids,
        .n_admin_uids = a->n_admin_uids,
        .admin_gids = a->admin_gids,
        .n_admin_gids = a->n_admin_gids,
        .admin_cgroups = a->admin_cgroups,
        .n_admin_cgroups = a->n_admin_cgroups,
    };
}

static int print_json_text(const Args *a, const char *json) {
    json_auto_t *j = NULL;
    _cleanup_free_ char *pretty = NULL;
    if (a->json)
        return write_text(a, json);
    j = json_loads(json, 0, NULL);
    if (!j)
        return write_text(a, json);
    pretty = json_dumps(j, JSON_INDENT(2));
    return write_text(a, pretty ? pretty : json);
}

static int need_pos(const Args *a, int n, const char *what) {
    if (a->n_pos < n)
        return usage("missing %s", what);
    if (a->n_pos > n)
        return usage("unexpected argument '%s'", a->pos[n]);
    return 0;
}

static int parse_u32(const char *s, uint32_t *ret) {
    char *end;
    unsigned long long v;
    errno = 0;
    if (!s || *s == '-')
        return -EINVAL;
    v = strtoull(s, &end, 10);
    if (errno || end == s || *end || v > UINT32_MAX)
        return -EINVAL;
    *ret = (uint32_t)v;
    return 0;
}

static int cmd_key(VhsmClient *c, const Args *a, const char *sub) {
    const char *name = a->n_pos > 0 ? a->pos[0] : NULL;
    VhsmAcl acl;
    int r;

    fill_acl(a, &acl);
    if (streq(sub, "create")) {
        VhsmKeySpec spec = {.type = a->type,
                            .policy = a->policy,
                            .max_age = a->max_age,
                            .label = a->label,
                            .acl = a->acl_given ? &acl : NULL};
        if ((r = need_pos(a, 1, "key name")) != 0)
            return r;
        if (!a->type)
            return usage("key create needs --type");
        r = vhsm_key_create(c, name, &spec);
        if (r < 0)
            return fail(a, r, "create key", name);
        if (a->json)
            return write_text(a, "{\"created\":true}");
        return EXIT_OK;
    }
    if (streq(sub, "list")) {
        _cleanup_free_ char *j = NULL;
        json_auto_t *arr = NULL;
        size_t i;
        json_t *k;
        if ((r = need_pos(a, 0, "")) != 0)
            return r;
        r = vhsm_key_list(c, &j);
        if (r < 0)
            return fail(a, r, "list keys", NULL);
        if (a->json)
            return write_text(a, j);
        arr = json_loads(j, 0, NULL);
        if (!json_is_array(arr))
            return fail(a, -EPROTO, "list keys", NULL);
        json_array_foreach(arr, i, k) {
            printf("%s\t%s\tv%" JSON_INTEGER_FORMAT "\t%s\n",
                   json_string_value(json_object_get(k, "name")) ?: "?",
                   json_string_value(json_object_get(k, "type")) ?: "?",
                   json_integer_value(json_object_get(k, "latest_version")),
                   json_string_value(json_object_get(json_object_get(k, "policy"), "kind")) ?: "");
        }
        return fflush(stdout) == 0 ? EXIT_OK : EXIT_FAIL;
    }
    if (streq(sub, "info")) {
        _cleanup_free_ char *j = NULL;
        if ((r = need_pos(a, 1, "key name")) != 0)
            return r;
        r = vhsm_key_info(c, name, &j);
        if (r < 0)
            return fail(a, r, "describe key", name);
        return print_json_text(a, j);
    }
    if (streq(sub, "rotate")) {
        uint32_t v;
        char buf[64];
        if ((r = need_pos(a, 1, "key name")) != 0)
            return r;
        r = vhsm_key_rotate(c, name, &v);
        if (r < 0)
            return fail(a, r, "rotate key", name);
        (void)snprintf(buf, sizeof buf, a->json ? "{\"version\":%u}" : "%u", v);
        return write_text(a, buf);
    }
    if (streq(sub, "delete")) {
        if ((r = need_pos(a, 1, "key name")) != 0)
            return r;
        r = vhsm_key_delete(c, name);
        if (r < 0)
            return fail(a, r, "delete key", name);
        return a->json ? write_text(a, "{\"deleted\":true}") : EXIT_OK;
    }
    if (streq(sub, "acl")) {
        if ((r = need_pos(a, 1, "key name")) != 0)
            return r;
        if (!a->acl_given)
            return usage("key acl needs ACL options (--allow-uid ...)");
        r = vhsm_key_set_acl(c, name, &acl);
        if (r < 0)
            return fail(a, r, "set ACL of key", name);
        return a->json ? write_text(a, "{\"updated\":true}") : EXIT_OK;
    }
    if (streq(sub, "min-version")) {
        uint32_t v;
        if ((r = need_pos(a, 2, "key name and version")) != 0)
            return r;
        if (parse_u32(a->pos[1], &v) < 0 || v == 0)
            return usage("invalid version '%s'", a->pos[1]);
        r = vhsm_key_set_min_version(c, name, v);
        if (r < 0)
            return fail(a, r, "set minimum version of key", name);
        return a->json ? write_text(a, "{\"updated\":true}") : EXIT_OK;
    }
    return usage("unknown key command '%s'", sub);
}

static unsigned sign_flags(const Args *a) {
    return (a->prehashed ? VHSM_SIGN_PREHASHED : 0) | (a->raw ? VHSM_SIGN_RAW : 0) |
           (a->raw_rs ? VHSM_SIGN_RAW_RS : 0);
}

static int cmd_data(VhsmClient *c, const Args *a, const char *cmd) {
    _cleanup_free_ uint8_t *in = NULL, *aad = NULL, *sig = NULL;
    size_t in_len = 0, aad_len = 0, sig_len = 0, out_len = 0;
    uint8_t *out = NULL;
    const char *name;
    int r, ex;

    if ((r = need_pos(a, 1, "key name")) != 0)
        return r;
    name = a->pos[0];
    if (read_input(a->in, 1024 * 1024 - 4096, &in, &in_len) < 0)
        return EXIT_FAIL;
    if (a->aad && read_input(a->aad, 64 * 1024, &aad, &aad_len) < 0)
        return EXIT_FAIL;

    if (streq(cmd, "encrypt")) {
        r = vhsm_encrypt(c, name, a->alg, sign_flags(a), in, in_len, aad, aad_len, &out, &out_len);
        if (r < 0)
            return fail(a, r, "encrypt with key", name);
        ex = write_output(a, "ciphertext", out, out_len);
    } else if (streq(cmd, "decrypt")) {
        r = vhsm_decrypt(c, name, a->alg, sign_flags(a), a->key_version, in, in_len, aad, aad_len,
                         &out, &out_len);
        if (r < 0)
            return fail(a, r, "decrypt with key", name);
        ex = write_output(a, "plaintext", out, out_len);
    } else if (streq(cmd, "sign")) {
        r = vhsm_sign(c, name, a->alg, sign_flags(a), in, in_len, &out, &out_len);
        if (r < 0)
            return fail(a, r, "sign with key", name);
        ex = write_output(a, "signature", out, out_len);
    } else if (streq(cmd, "mac")) {
        r = vhsm_mac(c, name, in, in_len, &out, &out_len);
        if (r < 0)
            return fail(a, r, "MAC with key", name);
        ex = write_output(a, "mac", out, out_len);
    } else if (streq(cmd, "verify") || streq(cmd, "mac-verify")) {
        bool mac = streq(cmd, "mac-verify");
        if (!a->sig)
            return usage("%s needs --signature FILE", cmd);
        if (read_input(a->sig, 64 * 1024, &sig, &sig_len) < 0)
            return EXIT_FAIL;
        if (mac)
            r = vhsm_mac_verify(c, name, in, in_len, sig, sig_len);
        else
            r = vhsm_verify(c, name, a->alg, sign_flags(a), a->key_version, in, in_len, sig,
                            sig_len);
        if (r < 0)
            return fail(a, r, mac ? "verify MAC with key" : "verify signature with key", name);
        return write_text(a, a->json ? "{\"valid\":true}" : "valid");
    } else if (streq(cmd, "wrap")) {
        r = vhsm_wrap(c, name, a->alg, sign_flags(a), in, in_len, &out, &out_len);
        if (r < 0)
            return fail(a, r, "wrap with key", name);
        ex = write_output(a, "wrapped", out, out_len);
    } else if (streq(cmd, "unwrap")) {
        r = vhsm_unwrap(c, name, a->alg, sign_flags(a), a->key_version, in, in_len, &out, &out_len);
        if (r < 0)
            return fail(a, r, "unwrap with key", name);
        ex = write_output(a, "unwrapped", out, out_len);
    } else
        return usage("unknown command '%s'", cmd);
    vhsm_free_secret(out, out_len);
    explicit_bzero(in, in_len);
    return ex;
}

static int cmd_pubkey(VhsmClient *c, const Args *a) {
    _cleanup_free_ char *s = NULL;
    int r;
    if ((r = need_pos(a, 1, "key name")) != 0)
        return r;
    r = vhsm_pubkey(c, a->pos[0], a->format, a->key_version, &s);
    if (r < 0)
        return fail(a, r, "export public key of", a->pos[0]);
    return write_text(a, s);
}

static int cmd_random(VhsmClient *c, const Args *a) {
    uint8_t *buf;
    uint32_t n;
    int r, ex;
    if ((r = need_pos(a, 1, "byte count")) != 0)
        return r;
    if (parse_u32(a->pos[0], &n) < 0 || n == 0 || n > 65536)
        return usage("invalid byte count '%s' (1..65536)", a->pos[0]);
    buf = malloc(n);
    if (!buf)
        return EXIT_FAIL;
    r = vhsm_random(c, buf, n);
    if (r < 0) {
        free(buf);
        return fail(a, r, "random", NULL);
    }
    ex = write_output(a, "random", buf, n);
    vhsm_free_secret(buf, n);
    return ex;
}

static int cmd_ecdh(VhsmClient *c, const Args *a) {
    _cleanup_free_ uint8_t *pub = NULL;
    size_t pub_len = 0;
    VhsmAcl acl;
    VhsmKeySpec spec;
    int r;
    if ((r = need_pos(a, 1, "key name")) != 0)
        return r;
    if (!a->peer_key || !a->new_name)
        return usage("ecdh-derive needs --peer-key FILE and --new-name NAME");
    if (read_input(a->peer_key, 64 * 1024, &pub, &pub_len) < 0)
        return EXIT_FAIL;
    fill_acl(a, &acl);
    spec = (VhsmKeySpec){.policy = a->policy,
                         .max_age = a->max_age,
                         .label = a->label,
                         .acl = a->acl_given ? &acl : NULL};
    r = vhsm_ecdh_derive(c, a->pos[0], pub, pub_len, a->info, a->info ? strlen(a->info) : 0,
                         a->new_name, &spec);
    if (r < 0)
        return fail(a, r, "ECDH derive with key", a->pos[0]);
    return a->json ? write_text(a, "{\"created\":true}") : EXIT_OK;
}

static int cmd_transfer(VhsmClient *c, const Args *a, const char *sub) {
    _cleanup_free_ char *jwk = NULL;
    int r;
    if (!streq(sub, "create"))
        return usage("unknown transfer-key command '%s'", sub);
    if ((r = need_pos(a, 0, "")) != 0)
        return r;
    r = vhsm_transfer_key_create(c, a->lifetime, &jwk);
    if (r < 0)
        return fail(a, r, "create transfer key", NULL);
    return write_text(a, jwk);
}

/* A JWS/JWT text file: one line of base64url and dots (trailing newline allowed). */
static int read_compact(const char *path, size_t max, const char *what, char **ret) {
    _cleanup_free_ uint8_t *data = NULL;
    size_t len = 0;
    if (read_input(path, max + 2, &data, &len) < 0)
        return EXIT_FAIL;
    while (len > 0 && (data[len - 1] == '\n' || data[len - 1] == '\r'))
        data[--len] = 0;
    if (len == 0 || len > max || memchr(data, 0, len))
        return usage("%s '%s' is empty, too large or holds a NUL byte", what, path);
    *ret = (char *)TAKE_PTR(data);
    return 0;
}

static int cmd_import_release(VhsmClient *c, const Args *a) {
    _cleanup_free_ char *release = NULL, *token = NULL, *reply = NULL;
    int r;
    if ((r = need_pos(a, 1, "release file")) != 0)
        return r;
    if ((r = read_compact(a->pos[0], 65536, "release", &release)) != 0)
        return r;
    if (a->token && (r = read_compact(a->token, 16384, "token", &token)) != 0)
        return r;
    r = vhsm_import_release(c, release, token, &reply);
    if (r < 0)
        return fail(a, r, "import release", NULL);
    if (a->json)
        return write_text(a, reply);
    {
        json_auto_t *j = json_loads(reply, 0, NULL);
        _cleanup_free_ char *line = NULL;
        if (asprintf(&line, "imported %s version %lld%s",
                     json_string_value(json_object_get(j, "name")) ?: "?",
                     (long long)json_integer_value(json_object_get(j, "version")),
                     token ? "; attestation verdict recorded" : "") < 0)
            return EXIT_FAIL;
        return write_text(a, line);
    }
}

static int cmd_attestation(VhsmClient *c, const Args *a, const char *sub) {
    _cleanup_free_ char *token = NULL;
    int r;
    if (streq(sub, "status")) {
        _cleanup_free_ char *j = NULL;
        r = vhsm_attestation_status(c, &j);
        if (r < 0)
            return fail(a, r, "attestation status", NULL);
        return print_json_text(a, j);
    }
    if (streq(sub, "set")) {
        if (!a->token)
            return usage("attestation set needs --token FILE (an EAR token from attestd)");
        if ((r = read_compact(a->token, 16384, "token", &token)) != 0)
            return r;
        r = vhsm_attestation_set_token(c, token);
        if (r < 0)
            return fail(a, r, "record attestation verdict", NULL);
        return EXIT_OK;
    }
    return usage("unknown attestation command '%s'", sub);
}

/* token reset-so-pin --uid N: the new SO PIN is the first line of stdin (or --in FILE). */
static int cmd_token(VhsmClient *c, const Args *a, const char *sub) {
    _cleanup_free_ uint8_t *in = NULL;
    size_t n = 0;
    int r;
    if (!streq(sub, "reset-so-pin"))
        return usage("unknown token command '%s'", sub);
    if (!a->uid_given)
        return usage("token reset-so-pin needs --uid N (the token's owner)");
    if (read_input(a->in, 4096, &in, &n) < 0)
        return EXIT_FAIL;
    for (size_t i = 0; i < n; i++)
        if (in[i] == '\n' || in[i] == '\r') {
            n = i;
            break;
        }
    r = vhsm_token_reset_so_pin(c, a->uid, in ? in : (const uint8_t *)"", n);
    if (in)
        explicit_bzero(in, n);
    if (r == -ERANGE) {
        fprintf(stderr, "vhsm: an SO PIN has %d to %d bytes\n", VHSM_PIN_MIN, VHSM_PIN_MAX);
        return EXIT_INVALID;
    }
    if (r < 0)
        return fail(a, r, "token reset-so-pin", NULL);
    return EXIT_OK;
}

static int cmd_agent(VhsmClient *c, const Args *a, const char *sub) {
    int r;
    if (streq(sub, "wait")) {
        VhsmAgentJob job;
        if ((r = need_pos(a, 0, "")) != 0)
            return r;
        r = vhsm_agent_wait(c, a->patterns, a->n_patterns, a->wait_ms, &job);
        if (r < 0)
            return fail(a, r, "agent wait", NULL);
        if (r == 0)
            return write_text(a, "{}");
        {
            json_auto_t *j =
                json_pack("{s:I,s:s,s:s,s:I}", "id", (json_int_t)job.id, "key", job.key, "reason",
                          job.reason, "parked", (json_int_t)job.parked);
            _cleanup_free_ char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
            if (!text)
                return EXIT_FAIL;
            return write_text(a, text);
        }
    }
    if (streq(sub, "done")) {
        unsigned long long id;
        char *end;
        if ((r = need_pos(a, 1, "job id")) != 0)
            return r;
        errno = 0;
        id = strtoull(a->pos[0], &end, 10);
        if (errno || end == a->pos[0] || *end || id == 0 || a->pos[0][0] == '-')
            return usage("invalid job id '%s'", a->pos[0]);
        r = vhsm_agent_done(c, (uint64_t)id, a->agent_status, a->message);
        if (r < 0)
            return fail(a, r, "agent done", NULL);
        return EXIT_OK;
    }
    return usage("unknown agent command '%s'", sub);
}

static int add_id(uint32_t *arr, size_t *n, const char *s) {
    if (*n >= MAX_ACL || parse_u32(s, &arr[*n]) < 0)
        return -EINVAL;
    (*n)++;
    return 0;
}

static int parse_cmd_args(int argc, char **argv, Args *a) {
    enum {
        O_TYPE = 0x100,
        O_POLICY,
        O_MAX_AGE,
        O_LABEL,
        O_ALLOW_UID,
        O_ALLOW_GID,
        O_ALLOW_CGROUP,
        O_ADMIN_UID,
        O_ADMIN_GID,
        O_ADMIN_CGROUP,
        O_ALG,
        O_FORMAT,
        O_IN,
        O_OUT,
        O_AAD,
        O_SIG,
        O_TOKEN,
        O_PEER_KEY,
        O_NEW_NAME,
        O_INFO,
        O_KEY_VERSION,
        O_LIFETIME,
        O_PREHASHED,
        O_RAW,
        O_RAW_RS,
        O_PATTERN,
        O_WAIT_MS,
        O_REFUSED,
        O_UNAVAILABLE,
        O_TIMEOUT,
        O_MESSAGE,
        O_UID,
    };
    static const struct option opts[] = {
        {"type", required_argument, NULL, O_TYPE},
        {"policy", required_argument, NULL, O_POLICY},
        {"max-age", required_argument, NULL, O_MAX_AGE},
        {"label", required_argument, NULL, O_LABEL},
        {"allow-uid", required_argument, NULL, O_ALLOW_UID},
        {"allow-gid", required_argument, NULL, O_ALLOW_GID},
        {"allow-cgroup", required_argument, NULL, O_ALLOW_CGROUP},
        {"admin-uid", required_argument, NULL, O_ADMIN_UID},
        {"admin-gid", required_argument, NULL, O_ADMIN_GID},
        {"admin-cgroup", required_argument, NULL, O_ADMIN_CGROUP},
        {"alg", required_argument, NULL, O_ALG},
        {"format", required_argument, NULL, O_FORMAT},
        {"in", required_argument, NULL, O_IN},
        {"out", required_argument, NULL, O_OUT},
        {"aad", required_argument, NULL, O_AAD},
        {"signature", required_argument, NULL, O_SIG},
        {"token", required_argument, NULL, O_TOKEN},
        {"peer-key", required_argument, NULL, O_PEER_KEY},
        {"new-name", required_argument, NULL, O_NEW_NAME},
        {"info", required_argument, NULL, O_INFO},
        {"key-version", required_argument, NULL, O_KEY_VERSION},
        {"lifetime", required_argument, NULL, O_LIFETIME},
        {"prehashed", no_argument, NULL, O_PREHASHED},
        {"raw", no_argument, NULL, O_RAW},
        {"raw-rs", no_argument, NULL, O_RAW_RS},
        {"pattern", required_argument, NULL, O_PATTERN},
        {"wait-ms", required_argument, NULL, O_WAIT_MS},
        {"refused", no_argument, NULL, O_REFUSED},
        {"unavailable", no_argument, NULL, O_UNAVAILABLE},
        {"timeout", no_argument, NULL, O_TIMEOUT},
        {"message", required_argument, NULL, O_MESSAGE},
        {"uid", required_argument, NULL, O_UID},
        {},
    };
    int c;
    uint32_t v;

    optind = 0; /* 0: full re-initialisation of glibc getopt (permutation mode) */
    while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
        switch (c) {
        case O_TYPE:
            a->type = optarg;
            break;
        case O_POLICY:
            a->policy = optarg;
            break;
        case O_MAX_AGE:
            if (parse_u32(optarg, &v) < 0)
                return usage("invalid --max-age '%s'", optarg);
            a->max_age = v;
            break;
        case O_LABEL:
            a->label = optarg;
            break;
        case O_ALLOW_UID:
            if (add_id(a->use_uids, &a->n_use_uids, optarg) < 0)
                return usage("invalid --allow-uid '%s'", optarg);
            a->acl_given = true;
            break;
        case O_ALLOW_GID:
            if (add_id(a->use_gids, &a->n_use_gids, optarg) < 0)
                return usage("invalid --allow-gid '%s'", optarg);
            a->acl_given = true;
            break;
        case O_ADMIN_UID:
            if (add_id(a->admin_uids, &a->n_admin_uids, optarg) < 0)
                return usage("invalid --admin-uid '%s'", optarg);
            a->acl_given = true;
            break;
        case O_ADMIN_GID:
            if (add_id(a->admin_gids, &a->n_admin_gids, optarg) < 0)
                return usage("invalid --admin-gid '%s'", optarg);
            a->acl_given = true;
            break;
        case O_ALLOW_CGROUP:
            if (a->n_use_cgroups >= MAX_ACL)
                return usage("too many --allow-cgroup");
            a->use_cgroups[a->n_use_cgroups++] = optarg;
            a->acl_given = true;
            break;
        case O_ADMIN_CGROUP:
            if (a->n_admin_cgroups >= MAX_ACL)
                return usage("too many --admin-cgroup");
            a->admin_cgroups[a->n_admin_cgroups++] = optarg;
            a->acl_given = true;
            break;
        case O_ALG:
            a->alg = optarg;
            break;
        case O_FORMAT:
            if (!streq(optarg, "pem") && !streq(optarg, "jwk"))
                return usage("invalid --format '%s' (pem or jwk)", optarg);
            a->format = optarg;
            break;
        case O_IN:
            a->in = optarg;
            break;
        case O_OUT:
            a->out = optarg;
            break;
        case O_AAD:
            a->aad = optarg;
            break;
        case O_SIG:
            a->sig = optarg;
            break;
        case O_TOKEN:
            a->token = optarg;
            break;
        case O_PEER_KEY:
            a->peer_key = optarg;
            break;
        case O_NEW_NAME:
            a->new_name = optarg;
            break;
        case O_INFO:
            a->info = optarg;
            break;
        case O_KEY_VERSION:
            if (parse_u32(optarg, &a->key_version) < 0)
                return usage("invalid --key-version '%s'", optarg);
            break;
        case O_LIFETIME:
            if (parse_u32(optarg, &a->lifetime) < 0)
                return usage("invalid --lifetime '%s'", optarg);
            break;
        case O_PREHASHED:
            a->prehashed = true;
            break;
        case O_RAW:
            a->raw = true;
            break;
        case O_RAW_RS:
            a->raw_rs = true;
            break;
        case O_PATTERN:
            if (a->n_patterns >= ELEMENTSOF(a->patterns))
                return usage("too many --pattern (at most 256)");
            a->patterns[a->n_patterns++] = optarg;
            break;
        case O_WAIT_MS:
            if (parse_u32(optarg, &a->wait_ms) < 0 || a->wait_ms > 60000)
                return usage("invalid --wait-ms '%s' (0..60000)", optarg);
            break;
        case O_REFUSED:
        case O_UNAVAILABLE:
        case O_TIMEOUT:
            if (a->agent_status != 0)
                return usage("--refused, --unavailable and --timeout exclude each other");
            a->agent_status = c == O_REFUSED       ? -EREMOTEIO
                              : c == O_UNAVAILABLE ? -EHOSTUNREACH
                                                   : -ETIMEDOUT;
            break;
        case O_MESSAGE:
            a->message = optarg;
            break;
        case O_UID:
            if (parse_u32(optarg, &a->uid) < 0)
                return usage("invalid uid '%s'", optarg);
            a->uid_given = true;
            break;
        default:
            return EXIT_USAGE;
        }
    }
    a->pos = argv + optind;
    a->n_pos = argc - optind;
    return 0;
}

int main(int argc, char **argv) {
    static const struct option global[] = {
        {"socket", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {},
    };
    VhsmClient *client = NULL;
    Args a = {0};
    const char *cmd, *sub = NULL;
    int c, r, first;

    log_set_prefix("vhsm");
    /* Global options stop at the first non-option (the command). */
    while ((c = getopt_long(argc, argv, "+h", global, NULL)) >= 0) {
        switch (c) {
        case 's':
            a.socket = optarg;
            break;
        case 'j':
            a.json = true;
            break;
        case 'h':
            help();
            return EXIT_OK;
        case 'V':
            printf("vhsm %s\n", NT_VERSION);
            return EXIT_OK;
        default:
            return EXIT_USAGE;
        }
    }
    if (optind >= argc)
        return usage("missing command");
    cmd = argv[optind];
    first = optind + 1;
    if (streq(cmd, "help")) {
        help();
        return EXIT_OK;
    }
    if (streq(cmd, "key") || streq(cmd, "transfer-key") || streq(cmd, "attestation") ||
        streq(cmd, "agent") || streq(cmd, "token")) {
        if (first >= argc)
            return usage("missing %s subcommand", cmd);
        sub = argv[first++];
    }
    /* Parse the rest: argv[first-1] plays argv[0] for getopt. */
    r = parse_cmd_args(argc - first + 1, argv + first - 1, &a);
    if (r != 0)
        return r;

    {
        static const char *const known[] = {
            "key",    "transfer-key", "attestation",    "encrypt", "decrypt", "sign",
            "verify", "mac",          "mac-verify",     "wrap",    "unwrap",  "pubkey",
            "random", "ecdh-derive",  "import-release", "ping",    "agent",   "token",
        };
        bool found = false;
        for (size_t i = 0; i < ELEMENTSOF(known); i++)
            found = found || streq(cmd, known[i]);
        if (!found)
            return usage("unknown command '%s'", cmd);
    }

    r = vhsm_connect(a.socket, &client);
    if (r < 0)
        return fail(&a, r, "connect", NULL);
    connected = true;
    the_client = client;

    if (sub && streq(cmd, "key"))
        r = cmd_key(client, &a, sub);
    else if (sub && streq(cmd, "transfer-key"))
        r = cmd_transfer(client, &a, sub);
    else if (sub && streq(cmd, "attestation"))
        r = cmd_attestation(client, &a, sub);
    else if (sub && streq(cmd, "agent"))
        r = cmd_agent(client, &a, sub);
    else if (sub && streq(cmd, "token"))
        r = cmd_token(client, &a, sub);
    else if (streq(cmd, "encrypt") || streq(cmd, "decrypt") || streq(cmd, "sign") ||
             streq(cmd, "verify") || streq(cmd, "mac") || streq(cmd, "mac-verify") ||
             streq(cmd, "wrap") || streq(cmd, "unwrap"))
        r = cmd_data(client, &a, cmd);
    else if (streq(cmd, "pubkey"))
        r = cmd_pubkey(client, &a);
    else if (streq(cmd, "random"))
        r = cmd_random(client, &a);
    else if (streq(cmd, "ecdh-derive"))
        r = cmd_ecdh(client, &a);
    else if (streq(cmd, "import-release"))
        r = cmd_import_release(client, &a);
    else if (streq(cmd, "ping")) {
        r = vhsm_ping(client);
        r = r < 0 ? fail(&a, r, "ping", NULL) : EXIT_OK;
    } else
        r = usage("unknown command '%s'", cmd);
    (void)vhsm_disconnect(client);
    return r;
}
